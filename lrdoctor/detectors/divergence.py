"""Divergence: the loss (or the gradient norm) becomes NaN/inf, or blows up and stays up."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..model import Series
from .base import Evidence, finite_part, listed, odd_window, rolling_median


def _nonfinite(series: Series | None) -> tuple[np.ndarray, np.ndarray]:
    if series is None:
        return np.array([], dtype=np.int64), np.array([], dtype=np.float64)
    v = np.asarray(series.values, dtype=np.float64)
    bad = ~np.isfinite(v)
    return np.asarray(series.steps, dtype=np.int64)[bad], v[bad]


@dataclass(frozen=True)
class _BlowUp:
    onset: int  # index from which the smoothed loss stays far above its best
    best: int  # index of the best smoothed value before it
    peak: int  # index of the highest raw value in the blown-up tail
    positive: bool
    smooth_best: float


def _blow_up(x: np.ndarray, *, smooth_window: int, ratio_over_best: float, linear_rise_over_range: float,
             sustain: int, min_rise_to_start: float) -> _BlowUp | None:
    """The tail of ``x`` that stays far above its running best, if it lasts ``sustain`` points."""
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
    return _BlowUp(onset, best, peak, positive, float(s[best]))


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
    min_points: int = 8,
) -> Evidence | None:
    """NaN/inf anywhere in the loss or the gradient norm, or a sustained blow-up.

    Non-finite values fire at any length (they are never noise); when the finite loss before
    the first NaN was already blowing up, the onset is where that started. A blow-up needs the
    smoothed loss (running median over ``smooth_window`` points) to stay above
    ``ratio_over_best`` x its running best for the last ``min_sustain_fraction`` of the run (at
    least ``min_sustain_points`` points) -- compared in log space, so losses spanning many orders
    of magnitude work. Losses that go <= 0 are compared linearly: the rise must exceed
    ``linear_rise_over_range`` x the range the curve covered before it. Either way the sustained
    level must also climb back at least ``min_rise_to_start`` of the way from the best to the
    starting level (linear): a memorising run whose loss wobbles from 1e-7 up to 1e-2 is far above
    its best in ratio but nowhere near diverging. The onset is where the smoothed loss crossed
    ``ratio_over_best`` x its best for good.
    """
    params = dict(smooth_window=smooth_window, ratio_over_best=ratio_over_best,
                  linear_rise_over_range=linear_rise_over_range, min_rise_to_start=min_rise_to_start)
    bad_steps, bad_vals = _nonfinite(train_loss)
    g_bad_steps, _ = _nonfinite(grad_norm)
    steps, x = finite_part(train_loss)
    if len(bad_steps) or len(g_bad_steps):
        first_loss = int(bad_steps[0]) if len(bad_steps) else None
        first_grad = int(g_bad_steps[0]) if len(g_bad_steps) else None
        first_bad = min(s for s in (first_loss, first_grad) if s is not None)
        what = "train loss" if first_loss == first_bad else "grad norm"
        value = "nan"
        if first_loss == first_bad and len(bad_vals):
            value = "nan" if np.isnan(bad_vals[0]) else ("inf" if bad_vals[0] > 0 else "-inf")
        onset = first_bad
        detail = f"{what} is {value} from {{axis}} {first_bad}"
        before = steps < first_bad
        nb = int(before.sum())
        if nb >= min_points:
            # the loss may have been blowing up before it overflowed: the last points before the
            # NaN far above the best (two at least: a blow-up that ends in NaN is short)
            sustain = max(2, int(np.ceil(min_sustain_fraction * nb)))
            bu = _blow_up(x[before], sustain=sustain, **params)
            if bu is not None:
                onset = int(steps[bu.onset])
                detail = f"train loss blew up from {{axis}} {onset} and is {value} from {{axis}} {first_bad}"
        steps_all = np.union1d(bad_steps, g_bad_steps)
        last = int(max(train_loss.steps[-1] if len(train_loss) else onset, steps_all[-1]))
        return Evidence(
            start_step=onset,
            end_step=last,
            steps=listed(steps_all),
            values={
                "kind": "nonfinite",
                "step": onset,
                "first_nonfinite_step": first_bad,
                "what": what,
                "value": value,
                "nonfinite_loss_points": int(len(bad_steps)),
                "nonfinite_grad_norm_points": int(len(g_bad_steps)),
                "detail": detail,
            },
        )

    n = len(x)
    if n < min_points:
        return None
    sustain = max(min_sustain_points, int(np.ceil(min_sustain_fraction * n)))
    bu = _blow_up(x, sustain=sustain, **params)
    if bu is None:
        return None
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
            "detail": (
                f"train loss rose from {{axis}} {onset} to {peak:.4g} at {{axis}} {int(steps[bu.peak])}"
                + (f" ({ratio:.1f}x its best {best:.4g})" if bu.positive else f" from its best {best:.4g}")
                + " and stayed there"
            ),
        },
    )
