"""Divergence: the loss (or the gradient norm) becomes NaN/inf, or blows up and stays up."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..model import Series
from .base import (
    Evidence,
    early_points,
    finite_part,
    listed,
    median_of,
    noise_sigma,
    odd_window,
    param_ranges,
    rolling_median,
    spearman_trend,
)
from .nonfinite import nonfinite_counts, persistent_nonfinite, times, value_word
from .screens import BlowUpScreen, screened_by
from .unstable import Unstable, unstable_epoch_means


def _nonfinite(series: Series | None) -> tuple[np.ndarray, np.ndarray]:
    if series is None:
        return np.array([], dtype=np.int64), np.array([], dtype=np.float64)
    v = np.asarray(series.values, dtype=np.float64)
    bad = ~np.isfinite(v)
    return np.asarray(series.steps, dtype=np.int64)[bad], v[bad]


def _nonfinite_evidence(train_loss, grad_norm, steps, x, bad_steps, bad_vals, g_bad_steps, g_bad_vals, g_from,
                        min_points, min_sustain_fraction, params) -> Evidence:
    run_end = int(max(s[-1] for s in (train_loss.steps, getattr(grad_norm, "steps", ())) if len(s)))
    if len(bad_steps):
        what, first_bad, vals, bsteps = "train loss", int(bad_steps[0]), bad_vals, bad_steps
        listed_steps = bad_steps
    else:
        gsteps = np.asarray(grad_norm.steps, dtype=np.int64)
        first_bad = int(gsteps[g_from])
        tail = g_bad_steps >= first_bad
        what, vals, bsteps = "grad norm", g_bad_vals[tail], g_bad_steps[tail]
        listed_steps = bsteps
    last_bad = int(bsteps[-1])
    # the loss came back when it has finite points after its last non-finite one
    later = steps[steps > last_bad] if what == "train loss" else np.array([], dtype=np.int64)
    recovered = len(later) > 0
    word = value_word(vals)
    k = len(vals)
    series = train_loss if what == "train loss" else grad_norm
    all_steps = np.asarray(series.steps, dtype=np.int64)
    to_end = not recovered and last_bad == int(all_steps[-1])
    contiguous = k == int((all_steps >= first_bad).sum())
    counts = f"{k} points" if word != "non-finite" else nonfinite_counts(vals)
    if k == 1:
        detail = f"{what} is {word} at {{axis}} {first_bad}"
    elif to_end and contiguous:
        detail = f"{what} is {word} from {{axis}} {first_bad} to the end ({counts})"
    else:
        detail = f"{what} is {word} at {k} points from {{axis}} {first_bad}" + (
            f" ({nonfinite_counts(vals)})" if word == "non-finite" else "")
        if to_end:
            detail += ", and still at the end"
    if recovered:
        detail += f"; the loss is finite again from {{axis}} {int(later[0])}"
    elif what == "grad norm":
        detail += " while the logged loss stays finite (HF's Trainer hides NaN losses)"
    onset = first_bad
    before = steps < first_bad
    nb = int(before.sum())
    if nb >= min_points:
        # the loss may have been blowing up before it overflowed: the last points before the
        # NaN far above the best (two at least: a blow-up that ends in NaN is short)
        sustain = max(2, int(np.ceil(min_sustain_fraction * nb)))
        bu = _blow_up(x[before], sustain=sustain, **params)
        if bu is not None:
            onset = int(steps[bu.onset])
            rest = detail.removeprefix("train loss") if what == "train loss" else " " + detail
            detail = f"train loss blew up from {{axis}} {onset}, then" + rest
    return Evidence(
        start_step=onset,
        end_step=last_bad if recovered else run_end,
        steps=listed(listed_steps),
        values={
            "kind": "nonfinite",
            "step": onset,
            "first_nonfinite_step": first_bad,
            "last_nonfinite_step": last_bad,
            "what": what,
            "value": word,
            "recovered": recovered,
            "nonfinite_loss_points": int(len(bad_steps)),
            "nonfinite_loss_nan": int(np.isnan(bad_vals).sum()),
            "nonfinite_loss_inf": int(np.isinf(bad_vals).sum()),
            "nonfinite_grad_norm_points": int(len(g_bad_steps)),
            "detail": detail,
        },
    )


@dataclass(frozen=True)
class _BlowUp:
    onset: int  # index from which the smoothed loss stays far above its best
    best: int  # index of the best smoothed value before it
    peak: int  # index of the highest raw value in the blown-up tail
    positive: bool
    smooth_best: float
    #: for how many points the loss has stayed blown up, and the rank trend of its last (up to
    #: 20) points (-1: falling steadily): what tells a live check, before the future is known,
    #: a divergence from a spike that is coming back down
    sustained: int = 0
    tail_trend: float = 0.0


def _blow_up(x: np.ndarray, *, smooth_window: int, ratio_over_best: float, linear_rise_over_range: float,
             sustain: int, min_rise_to_start: float, recovered_share: float = 1.0) -> _BlowUp | None:
    """The tail of ``x`` that stays far above its running best, if it lasts ``sustain`` points
    and has not come back down ``recovered_share`` of the way from its peak to its best (log
    scale for a positive loss): a jump that decays most of the way back is a spike that damaged
    the model, not a loss that "rose and stayed there"."""
    n = len(x)
    w = odd_window(n, smooth_window, fraction=0.1)
    s = rolling_median(x, w)
    positive = bool(np.all(x > 0))
    best_so_far = np.minimum.accumulate(s)
    if positive:
        excess = np.log(s) - np.log(best_so_far)
        threshold = float(np.log(ratio_over_best))
    else:
        excess = s - best_so_far
        span = np.maximum.accumulate(s) - best_so_far
        threshold = float(linear_rise_over_range * max(float(np.median(span)), 1e-12))
    above = excess > threshold
    if not above[-1]:
        return None
    below = np.nonzero(~above)[0]
    tail = int(below[-1] + 1) if len(below) else 0
    if n - tail < sustain or tail == 0:
        return None
    start_level = float(np.median(s[: max(3, n // 20)]))
    best_level = float(np.min(s[:tail]))
    if float(np.median(s[tail:])) - best_level < min_rise_to_start * (start_level - best_level):
        return None
    onset = tail
    best = int(np.argmin(s[: max(onset, 1)]))
    peak = tail + int(np.argmax(x[tail:]))
    level = (np.log(s) if positive else s)
    top, end, low = float(np.max(level[tail:])), float(np.median(level[n - sustain:])), float(level[best])
    if top > low and end - low < (1.0 - recovered_share) * (top - low):
        return None
    return _BlowUp(onset, best, peak, positive, float(s[best]), int(n - tail),
                   spearman_trend(x[max(tail, n - 20):]) if n - tail >= 3 else 0.0)


#: a collapse stands for this many smoothed points at least: on a short noisy run three points
#: above the level happen by chance (about 1% of 20-point lognormal losses with 30% noise)
COLLAPSE_MIN_POINTS = 5


@dataclass(frozen=True)
class _Collapse:
    onset: int  # index from which the smoothed loss stays back near its starting level
    best: int  # index of the smoothed minimum before it
    start_level: float
    best_level: float
    level: float  # what "back near the start" means: best + collapse_return x (start - best)
    end_level: float  # the smoothed loss's median over the sustained tail


def _collapse(x: np.ndarray, *, smooth_window: int, sustain: int, min_drop: float, back: float,
              min_drop_sigmas: float) -> _Collapse | None:
    """A positive loss that learned (its smoothed minimum after its first 2.5% at most
    ``1 - min_drop`` of its early level, the median of that first 2.5%, one point at least, and
    below it by ``min_drop_sigmas`` noise units at least) and then went back at least ``back`` of
    the way to that level for good (the last ``sustain`` points at least): a network that lost
    what it had learned, often to chance level (ln k), which a 5x blow-up test misses when the
    loss never fell 5x in the first place. The noise test keeps a flat noisy loss, whose smoothed
    minimum can lie a third below its level, from "falling"."""
    n = len(x)
    k = early_points(n)
    if n <= k or not bool(np.all(x > 0)):
        return None  # "fell by a share" needs the loss's own zero
    w = odd_window(n, smooth_window, fraction=0.1)
    s = rolling_median(x, w)
    # the raw values, not the smoothed ones: the first smoothed point of a padded window is the
    # first value itself, noise and all; the minimum is looked for after them, for the same reason
    start = median_of(x[:k])
    b = k + int(np.argmin(s[k:]))
    best = float(s[b])
    if not best <= (1.0 - min_drop) * start or start - best < min_drop_sigmas * noise_sigma(x, w, s):
        return None
    level = best + back * (start - best)
    up = s >= level
    up[: b + 1] = False
    if not up[-1]:
        return None
    down = np.nonzero(~up)[0]
    onset = int(down[-1]) + 1  # down is never empty: the minimum is below the level
    if n - onset < max(sustain, COLLAPSE_MIN_POINTS):
        return None
    return _Collapse(onset, b, start, best, level, float(np.median(s[onset:])))


def _sustained_evidence(kind: str, onset: int, steps: np.ndarray, x: np.ndarray, best: int, best_level: float,
                        start_level: float, end_level: float, detail: str, **extra: float) -> Evidence:
    """A loss that has stayed up from ``steps[onset]`` to the end (collapse, unstable epoch means)."""
    step = int(steps[onset])
    return Evidence(
        start_step=step,
        end_step=int(steps[-1]),
        steps=(step,),
        values={
            "kind": kind,
            "step": step,
            "what": "train loss",
            "best": best_level,
            "best_step": int(steps[best]),
            "start_level": start_level,
            "final": float(x[-1]),
            "end_level": end_level,
            **extra,
            "ratio": end_level / best_level,
            "sustained_points": int(len(x) - onset),
            "detail": detail,
        },
    )


def _collapse_evidence(col: _Collapse, steps: np.ndarray, x: np.ndarray) -> Evidence:
    share = (col.end_level - col.best_level) / (col.start_level - col.best_level)
    detail = (f"train loss fell to {col.best_level:.4g} at {{axis}} {int(steps[col.best])}, then went back to "
              f"~{col.end_level:.4g} from {{axis}} {int(steps[col.onset])} ({share:.0%} of the way back to its "
              f"early level {col.start_level:.4g}) and stayed there: the model lost what it had learned")
    return _sustained_evidence("collapse", col.onset, steps, x, col.best, col.best_level, col.start_level,
                               col.end_level, detail, returned_share=share)


def _unstable_evidence(u: Unstable, steps: np.ndarray, x: np.ndarray, swing: float) -> Evidence:
    best, m = float(x[u.best]), len(x) - u.best - 1
    detail = (f"train loss (epoch means) fell from {float(x[0]):.4g} to {best:.4g} by {{axis}} {int(steps[u.best])}, "
              f"then never got back down: over the {m} epochs after, it bounced between {u.low:.4g} and "
              f"{u.high:.4g} (median {u.level:.4g}, {times(u.level / best)} its best), turning {u.turns} times "
              f"between moves of {swing:.0%} or more, where a stable run lowers its epoch means")
    return _sustained_evidence("unstable", u.best + 1, steps, x, u.best, best, float(x[0]), u.level, detail,
                               turns=u.turns, trend_after=u.trend)


@screened_by(BlowUpScreen)
@param_ranges(smooth_window=">=1", ratio_over_best=">0", linear_rise_over_range=">0", min_sustain_fraction="0..1",
              min_sustain_points=">=1", min_rise_to_start=">=0", recovered_share="(0..1]", grad_skip_start_points=">=0",
              grad_max_skipped_run=">=0", grad_end_points=">=1", min_points=">=0",
              collapse_min_drop="[0..1)", collapse_return="(0..1]", collapse_min_drop_sigmas=">=0",
              unstable_best_within="0..1", unstable_min_drop="[0..1)", unstable_ratio=">=1", unstable_swing=">0",
              unstable_min_turns="0..1", unstable_max_trend="-1..1")
def divergence(
    train_loss: Series,
    grad_norm: Series | None = None,
    *,
    smooth_window: int = 9,
    ratio_over_best: float = 5.0,
    linear_rise_over_range: float = 1.0,
    min_sustain_fraction: float = 0.05,
    min_sustain_points: int = 3,
    min_rise_to_start: float = 0.5,
    recovered_share: float = 0.5,
    collapse_min_drop: float = 0.3,
    collapse_return: float = 0.8,
    collapse_min_drop_sigmas: float = 10.0,
    unstable_best_within: float = 0.25,
    unstable_min_drop: float = 0.3,
    unstable_ratio: float = 1.5,
    unstable_swing: float = 0.1,
    unstable_min_turns: float = 0.25,
    unstable_max_trend: float = -0.5,
    grad_skip_start_points: int = 25,
    grad_max_skipped_run: int = 10,
    grad_end_points: int = 3,
    min_points: int = 8,
) -> Evidence | None:
    """NaN/inf anywhere in the loss, non-finite grad norms that persist, or a sustained blow-up.

    A non-finite loss fires at any length (it is never noise); when the finite loss before the
    first one was already blowing up, the onset is where that started. The message counts the
    nan/inf points honestly and says whether the loss came back (then the finding ends at the
    last non-finite point). Non-finite *grad norms* with a finite loss fire only when they
    persist (see :func:`persistent_nonfinite`: to the last ``grad_end_points`` points, or a run
    of more than ``grad_max_skipped_run`` after the first ``grad_skip_start_points``): a
    mixed-precision GradScaler logs inf grad norms for the steps it skips, while HF's Trainer
    hides NaN losses behind finite ones, so NaN grad norms to the end are divergence.
    A blow-up needs the smoothed loss (running median over ``smooth_window`` points) to stay above
    ``ratio_over_best`` x its running best for the last ``min_sustain_fraction`` of the run (at
    least ``min_sustain_points`` points) -- compared in log space, so losses spanning many orders
    of magnitude work. Losses that go <= 0 are compared linearly: the rise must exceed
    ``linear_rise_over_range`` x the range the curve covered before it. Either way the sustained
    level must also climb back at least ``min_rise_to_start`` of the way from the best to the
    starting level (linear): a memorising run whose loss wobbles from 1e-7 up to 1e-2 is far above
    its best in ratio but nowhere near diverging. The onset is where the smoothed loss crossed
    ``ratio_over_best`` x its best for good. A blow-up whose smoothed loss has since come back
    ``recovered_share`` of the way from its peak to its best (log scale for a positive loss; the
    median of the last sustained points) is a spike that recovers, reported by loss-spike: a loss
    that jumps x7000 and decays back over 200 steps did not "stay there".

    A *collapse* is the other way a too-high LR ends a run: a positive loss that learned (its
    smoothed minimum after its first 2.5% at most ``1 - collapse_min_drop`` of its early level, the
    median of that first 2.5%, and ``collapse_min_drop_sigmas`` noise units below it) and then went back at least ``collapse_return`` of the way to that level
    and stayed there (the same sustained tail): the network lost what it had learned, typically
    to the cross-entropy of a constant guess (ln k), which is rarely 5x the best loss (a 4-class
    CNN at lr 0.5 falls from 1.39 to 0.39 and returns to 1.40: 3.6x).

    *Unstable* epoch means are the quietest way: a loss whose points are epoch means
    (``train_loss.epoch_means``: its tag or the run's epoch axis says so, :mod:`lrdoctor.averaging`)
    that reached its lowest point in the first ``unstable_best_within`` of the run, at most
    ``1 - unstable_min_drop`` of its first epoch's mean, and then stayed with a median
    ``unstable_ratio`` x that point or more for the rest of the run, *bouncing*: at least
    ``unstable_min_turns`` of its epoch-to-epoch moves from the best on change direction between
    two moves of ``unstable_swing`` or more, and no downward rank trend after the best (above
    ``unstable_max_trend``). An LR too high to descend swings (Keras, SGD at a far too high LR:
    1.91, 0.40, then 0.47-2.16 for 23 epochs, 8 turns, never NaN); a curriculum, a ramped loss term
    or progressive resizing lifts the epoch means on purpose at a few epochs, then falls smoothly
    (:mod:`.unstable`). Per-step logs are not judged so: a single step's loss is noisy enough that
    its lowest point says little.
    The live engine never screens an epoch-mean loss (lrdoctor.detectors.screens), so this test
    needs no screen of its own.
    """
    params = dict(smooth_window=smooth_window, ratio_over_best=ratio_over_best,
                  linear_rise_over_range=linear_rise_over_range, min_rise_to_start=min_rise_to_start,
                  recovered_share=recovered_share)
    bad_steps, bad_vals = _nonfinite(train_loss)
    g_bad_steps, g_bad_vals = _nonfinite(grad_norm)
    steps, x = finite_part(train_loss)
    g_from = persistent_nonfinite(grad_norm, start_points=grad_skip_start_points,
                                  max_skipped_run=grad_max_skipped_run, end_points=grad_end_points)
    if len(bad_steps) or g_from is not None:
        return _nonfinite_evidence(train_loss, grad_norm, steps, x, bad_steps, bad_vals, g_bad_steps, g_bad_vals,
                                   g_from, min_points, min_sustain_fraction, params)

    n = len(x)
    if n < min_points:
        return None
    sustain = max(min_sustain_points, int(np.ceil(min_sustain_fraction * n)))
    bu = _blow_up(x, sustain=sustain, **params)
    if bu is None:
        col = _collapse(x, smooth_window=smooth_window, sustain=sustain, min_drop=collapse_min_drop,
                        back=collapse_return, min_drop_sigmas=collapse_min_drop_sigmas)
        if col is not None:
            return _collapse_evidence(col, steps, x)
        if not train_loss.epoch_means:
            return None
        un = unstable_epoch_means(x, best_within=unstable_best_within, min_drop=unstable_min_drop,
                                  ratio=unstable_ratio, min_after=max(sustain, COLLAPSE_MIN_POINTS),
                                  swing=unstable_swing, min_turns=unstable_min_turns, max_trend=unstable_max_trend)
        return None if un is None else _unstable_evidence(un, steps, x, unstable_swing)
    best, peak = bu.smooth_best, float(x[bu.peak])
    ratio = peak / best if bu.positive and best > 0 else float("nan")
    onset = int(steps[bu.onset])
    return Evidence(
        start_step=onset,
        end_step=int(steps[-1]),
        steps=(onset,),
        values={
            "kind": "blow_up",
            "step": onset,
            "what": "train loss",
            "best": best,
            "best_step": int(steps[bu.best]),
            "peak": peak,
            "peak_step": int(steps[bu.peak]),
            "ratio": ratio,
            "final": float(x[-1]),
            "sustained_points": bu.sustained,
            "tail_trend": bu.tail_trend,
            "detail": (
                f"train loss rose from {{axis}} {onset} to {peak:.4g} at {{axis}} {int(steps[bu.peak])}"
                + (f" ({times(ratio)} its best {best:.4g})" if bu.positive else f" from its best {best:.4g}")
                + " and stayed there"
            ),
        },
    )
