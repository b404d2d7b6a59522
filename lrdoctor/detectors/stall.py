"""Stalls: the loss stops improving (plateau), or the gradients vanish while it does."""

from __future__ import annotations

import numpy as np

from ..model import Series, SeriesFamily
from .base import (
    Evidence,
    finite_part,
    median_of,
    noise_sigma,
    odd_window,
    param_ranges,
    rolling_median,
    spearman_trend,
    window_medians,
)
from .layers import vanishing_layers

#: Candidate onsets are tried at this many evenly spaced points (a loop over candidates, not steps).
_CANDIDATES = 40


def _edge(x: np.ndarray, fraction: float) -> int:
    return max(3, int(len(x) * fraction))


def _drop(x: np.ndarray, fraction: float) -> float:
    """How far the curve fell from its start to its end (medians of its two edges)."""
    k = _edge(x, fraction)
    return median_of(x[:k]) - median_of(x[-k:])


def _transient(x: np.ndarray, max_points: int, fraction: float, noise_tol: float, rel_tol: float):
    """How many leading points (at most ``max_points``) are an initial transient: those before
    the first one within the flat tolerance of the level that follows them. Also returns the
    relative-change function for this curve (None where the loss is not positive throughout)."""
    positive = bool(np.all(x > 0))

    def rel(a: float, b: float) -> float | None:
        return abs(a - b) / max(abs(a), abs(b)) if positive and max(abs(a), abs(b)) > 0 else None

    m = min(max(0, max_points), len(x) // 10)
    if m == 0:
        return 0, rel
    after = x[m:]
    level = median_of(after[: _edge(after, fraction)])
    tol = max(noise_tol, rel_tol * abs(level) if positive else 0.0)
    near = np.nonzero(np.abs(x[: m + 1] - level) <= tol)[0]
    return (int(near[0]) if len(near) else m), rel


def _transient_moved(head: np.ndarray, level: float, max_rise: float, max_fall: float) -> bool:
    """Whether the transient ``head`` moved a positive loss a long way into its ``level``: rose
    into it by more than ``max_rise`` (of the level) or fell into it from more than
    ``1 / (1 - max_fall)`` x it (see :func:`plateau`)."""
    if len(head) == 0 or not level > 0 or not bool(np.all(head > 0)):
        return False
    return bool(level - float(np.min(head)) > max_rise * level or level < (1.0 - max_fall) * float(head[0]))


def _stall_onset(x: np.ndarray, min_len: int, edge_fraction: float, max_drop: float,
                 max_trend: float) -> int | None:
    """The first of _CANDIDATES evenly spaced onsets (leaving at least ``min_len`` points) from
    which the rest of the curve falls by less than ``max_drop`` (:func:`_drop`) and has no rank
    trend below ``max_trend``; None if there is none. Every candidate's edge medians are taken
    in one vectorised pass: a live check runs this every few steps."""
    n = len(x)
    cands = np.unique(np.linspace(0, n - min_len, _CANDIDATES).astype(int))
    rest_len = n - cands
    k = np.minimum(np.maximum(3, (rest_len * edge_fraction).astype(int)), rest_len)
    drops = window_medians(x, cands, k) - window_medians(x, n - k, k)
    return next((int(i) for i in cands[drops < max_drop] if spearman_trend(x[i:]) > max_trend), None)


def _chance_classes(level: float, max_classes: int, tolerance: float) -> int | None:
    """k when ``level`` is within ``tolerance`` (relative) of ln k, the cross-entropy of a uniform
    guess over k classes (k = 2 .. max_classes), else None."""
    if max_classes < 2 or not level > 0:
        return None
    k = np.arange(2, max_classes + 1)
    off = np.abs(level - np.log(k)) / np.log(k)
    i = int(np.argmin(off))
    return int(k[i]) if off[i] <= tolerance else None


#: No classifier guesses over more than a million classes: a loss above ln 1e6 is no chance level.
_LN_MAX_CLASSES = float(np.log(1e6))


def _chance_by_accuracy(level: float, accuracy: Series | None, max_classes: int, tolerance: float,
                        accuracy_tolerance: float) -> tuple[int, float] | None:
    """k > ``max_classes`` when ``level`` is within ``tolerance`` of ln k *and* the accuracy ends
    within ``accuracy_tolerance`` (relative) of 1/k: past ten classes ln k and ln (k+1) lie within
    the tolerance of each other, so the loss alone cannot say it is a guess; an accuracy of 1/k can."""
    if accuracy is None or "acc" not in accuracy.tag.lower() or not np.log(max_classes + 0.5) < level < _LN_MAX_CLASSES:
        return None
    _, a = finite_part(accuracy)
    if len(a) < 3:
        return None
    acc = float(np.median(a[len(a) // 2:]))
    acc = acc / 100.0 if 1.0 < acc <= 100.0 else acc  # accuracy logged in percent
    k = int(round(float(np.exp(level))))
    if k <= max_classes or not 0 < acc < 1:
        return None
    if abs(level - np.log(k)) / np.log(k) > tolerance or abs(acc * k - 1.0) > accuracy_tolerance:
        return None
    return k, acc


def _lr_decay(lr: Series | None, from_step: int) -> float | None:
    """LR at the end over LR at ``from_step`` (None when the LR is not logged there)."""
    if lr is None:
        return None
    s, v = finite_part(lr)
    if len(v) == 0:
        return None
    i = min(int(np.searchsorted(s, from_step)), len(v) - 1)
    ref = float(np.max(v[i:]))
    return float(v[-1] / ref) if ref > 0 else None


@param_ranges(window=">=1", edge_fraction="(0..1]", flat_drop_sigmas=">=0", max_transient_points=">=0",
              flat_relative_change=">=0", max_relative_change=">=0", stall_drop_sigmas=">=0",
              max_stall_trend="-1..1", min_stall_fraction="(0..1]", lr_decay_ratio=">=0", min_points=">=0",
              chance_max_classes=">=0", chance_tolerance=">=0", chance_relative_change=">=0",
              chance_accuracy_tolerance=">=0", dip_relative_change=">=0", transient_max_rise=">=0",
              transient_max_fall="0..1")
def plateau(
    train_loss: Series,
    lr: Series | None = None,
    val_metric: Series | None = None,
    *,
    window: int = 21,
    edge_fraction: float = 0.1,
    flat_drop_sigmas: float = 4.0,
    max_transient_points: int = 3,
    flat_relative_change: float = 0.01,
    max_relative_change: float = 0.1,
    stall_drop_sigmas: float = 1.0,
    max_stall_trend: float = -0.3,
    min_stall_fraction: float = 0.5,
    lr_decay_ratio: float = 0.5,
    flag_never_moves: bool = True,
    flag_stalls: bool = False,
    chance_max_classes: int = 10,
    chance_tolerance: float = 0.01,
    chance_relative_change: float = 0.05,
    chance_accuracy_tolerance: float = 0.3,
    dip_relative_change: float = 0.3,
    transient_max_rise: float = 0.1,
    transient_max_fall: float = 0.5,
    min_points: int = 8,
) -> Evidence | None:
    """The training loss never moves from where it started (``flag_never_moves``), or stops
    improving for a long stretch while the LR is not being decayed (``flag_stalls``).

    Distances are in units of the loss's own noise (MAD of residuals around a running median over
    ``window`` points). *Never moves*: after an initial transient of at most
    ``max_transient_points`` points (the first points that lie outside the flat tolerance of the
    level that follows: e.g. a Keras run's epoch 0 before it lands on ln 2), the change from the
    first to the last ``edge_fraction`` of the rest (medians) is small. For a loss that is
    positive throughout, small means below ``flat_relative_change`` of its level, or below
    ``flat_drop_sigmas`` noise units while also below ``max_relative_change`` of its level (a
    very noisy loss that fell 27% did move); otherwise (a loss that reaches 0 or below, where a
    relative change means nothing) only the noise units count. The onset is the first step after
    the transient. The relative test uses the loss's own zero (cross-entropy, MSE and the like
    are >= 0 with a meaningful zero), so it is scale-invariant but, deliberately, not
    shift-invariant; the noise-unit test is both. *Stalls*: from some point on,
    the rest of the run falls by less than ``stall_drop_sigmas`` noise units and has no clear
    downward rank trend (Spearman > ``max_stall_trend``), for at least ``min_stall_fraction`` of
    the run, while the LR (when logged) ends above ``lr_decay_ratio`` x its value at the onset.
    Without a logged LR the stall must cover twice ``min_stall_fraction`` (capped at 0.9).

    A loss whose running median (whole windows only) went below the start by ``flat_drop_sigmas``
    noise units and ``dip_relative_change`` of its level in between moved, whatever its ends say:
    it learned and lost it (a collapse, which divergence reports, or a loss oscillating under a
    far too high LR). A short shallower dip of a loss stuck at chance does not count.

    The transient itself must not have moved the loss a long way: a positive loss whose level
    after it is more than ``transient_max_rise`` above the transient's lowest point rose into
    its plateau, and one whose first point is more than ``1 / (1 - transient_max_fall)`` x that
    level (halved or more, by default; 1 turns this off) fell into it. An LR too low can do
    neither: it leaves the loss where it started, while an LR far too high lifts a model that learned in its first
    epoch back to chance level (a CNN's epoch means 1.13 -> 1.32 -> 1.40 = ln 4) or throws it
    onto the mean predictor within a few points (MSE 15.9 -> 3.9 -> 1.74, then flat). Raising
    the LR is the wrong advice for both, so neither is this rule's.

    *At chance level*: a loss that ends within ``chance_tolerance`` (relative) of ln k for
    k = 2 .. ``chance_max_classes`` -- the cross-entropy of a uniform guess over k classes -- and
    moved less than ``chance_relative_change`` of its level after the transient never learned,
    even when it crept down by more than ``flat_relative_change``: epoch-averaged logs are so
    smooth that a 1.5% fall over 20 epochs is many noise units, yet the model still guesses.
    Past ``chance_max_classes`` (ln 11 and ln 12 are within 4% of each other, every loss near 2.4
    to 7 is "near some ln k") the loss alone cannot tell: with a logged accuracy (``val_metric``
    whose tag names an accuracy) that ends within ``chance_accuracy_tolerance`` (relative) of
    1/k, a loss within ``chance_tolerance`` of ln k is chance level too (CIFAR-100 at ln 100).

    The two branches are separate switches because a long flat tail at a constant LR is as often
    a converged run (or a memorised training set) as a stuck one: the canonical ``plateau`` rule
    flags only a loss that never moves; the ``no-lr-decay`` rule (info) flags the stalls.
    """
    steps, x = finite_part(train_loss)
    n = len(x)
    if n < min_points:
        return None
    w = odd_window(n, window, fraction=0.2, minimum=5)
    sigma = noise_sigma(x, w)
    if sigma <= 0:
        sigma = float(np.finfo(np.float64).tiny)
    k, moved_rel = _transient(x, max_transient_points, edge_fraction, flat_drop_sigmas * sigma, flat_relative_change)
    rest = x[k:]
    start_value = median_of(rest[: _edge(rest, edge_fraction)])
    end_value = median_of(rest[-_edge(rest, edge_fraction) :])
    total_drop = start_value - end_value
    values = {
        "noise_sigma": sigma,
        "start_value": start_value,
        "end_value": end_value,
        "total_drop_sigmas": total_drop / sigma,
        "transient_points": k,
        "relative_change": moved_rel(start_value, end_value),
    }
    rel = values["relative_change"]
    # |drop|: a loss that climbs far above its start moves too (divergence territory, not a plateau)
    within_noise = abs(total_drop) < flat_drop_sigmas * sigma
    # and so does one that went far below both ends in between (learned, then lost it: a collapse)
    # the padded ends of a running median are the end points themselves: only whole windows count
    inner = rolling_median(rest, w)[w // 2: len(rest) - w // 2]
    low = float(np.min(inner)) if len(inner) else start_value
    dip_rel = moved_rel(start_value, low)
    dipped = start_value - low >= flat_drop_sigmas * sigma and (dip_rel is None or dip_rel >= dip_relative_change)
    if rel is None:
        never_moves = within_noise
    else:
        never_moves = rel < flat_relative_change or (within_noise and rel < max_relative_change)
    chance = _chance_classes(end_value, chance_max_classes, chance_tolerance) if rel is not None else None
    by_acc = (_chance_by_accuracy(end_value, val_metric, chance_max_classes, chance_tolerance,
                                  chance_accuracy_tolerance) if rel is not None and chance is None else None)
    if by_acc is not None:
        chance = by_acc[0]
    if not never_moves and chance is not None and rel < chance_relative_change:
        never_moves = True
    never_moves = never_moves and not dipped and not _transient_moved(x[:k], start_value, transient_max_rise,
                                                                       transient_max_fall)
    if never_moves and len(rest) >= min_points:
        if not flag_never_moves:
            return None
        values.update(kind="never_moves", stall_fraction=1.0, lr_ratio=_lr_decay(lr, int(steps[k])))
        change = f"{100 * rel:.2g}%, " if rel is not None else ""
        after = f" after a {k}-point initial transient ({float(x[0]):.4g} -> {float(x[k]):.4g})" if k else ""
        values["chance_classes"] = chance
        at_chance = f"; it sits at ln {chance} = {np.log(chance):.4g}, a uniform guess over {chance} classes" if chance else ""
        if by_acc is not None and val_metric is not None:
            # the level and the accuracy give k only to a few percent: "~k", not a class count
            values["chance_accuracy"] = by_acc[1]
            at_chance = (f"; it sits at the cross-entropy of a uniform guess over ~{chance} classes (ln {chance} = "
                         f"{np.log(chance):.4g}; {val_metric.tag} {by_acc[1]:.3g}, about 1/{chance})")
        values["detail"] = (
            f"train loss never moved from {start_value:.4g} to {end_value:.4g} "
            f"({change}{total_drop / sigma:.1f} noise units){after}{at_chance}"
        )
        return Evidence(int(steps[k]), int(steps[-1]), (int(steps[k]),), values)

    if not flag_stalls:
        return None
    min_len = max(min_points, int(np.ceil(min_stall_fraction * n)))
    onset = _stall_onset(x, min_len, edge_fraction, stall_drop_sigmas * sigma, max_stall_trend)
    if onset is None:
        return None
    stall_fraction = (n - onset) / n
    ratio = _lr_decay(lr, int(steps[onset]))
    if ratio is None:
        if stall_fraction < min(0.9, 2 * min_stall_fraction):
            return None
    elif ratio < lr_decay_ratio:
        return None  # the schedule is already decaying the LR through the stall
    values.update(
        kind="stalls",
        stall_fraction=stall_fraction,
        lr_ratio=ratio,
        stall_value=median_of(x[onset:]),
    )
    values["detail"] = (
        f"train loss stopped improving at {{axis}} {int(steps[onset])} (~{values['stall_value']:.4g}) for "
        f"the last {stall_fraction:.0%} of the run"
        + (" with the LR not decayed" if ratio is not None else "")
    )
    return Evidence(int(steps[onset]), int(steps[-1]), (int(steps[onset]),), values)


@param_ranges(max_norm=">0", collapse_norm=">0", max_ratio_to_start=">0", edge_fraction="(0..1]",
              flat_drop_sigmas=">=0", stall_drop_sigmas=">=0", min_points=">=0", max_layer_ratio=">0",
              early_layer_fraction="(0..1]", min_layers=">=1")
def vanishing_gradients(
    grad_norm: Series,
    train_loss: Series,
    layer_grad_norm: SeriesFamily | None = None,
    *,
    max_norm: float = 0.05,
    collapse_norm: float = 1e-3,
    max_ratio_to_start: float = 1e-2,
    edge_fraction: float = 0.1,
    flat_drop_sigmas: float = 2.0,
    stall_drop_sigmas: float = 3.0,
    min_points: int = 8,
    max_layer_ratio: float = 1e-3,
    early_layer_fraction: float = 0.25,
    min_layers: int = 3,
) -> Evidence | None:
    """Gradients vanish: per layer when per-layer norms are logged, else the total norm is tiny
    (absolute, and relative to its start or from the start) while the loss stalls.

    *Per layer* (``layer_grad_norm`` with at least ``min_layers`` layers that get a gradient):
    the early layers' gradients sit orders of magnitude below the late layers' over the stable
    part of the run (after its first ``edge_fraction``): the median over steps of (largest norm
    of the first ``early_layer_fraction`` of the layers, in model order) / (largest of the last
    as many) is below ``max_layer_ratio``. The loss need not stall (the last layers may still
    learn, and the total norm, theirs, looks normal); the evidence says whether it did. The
    total-norm tests below are then not used: they judge a run with no per-layer norms.

    *Total norm*: the loss must stall: over the second half it falls by less than ``stall_drop_sigmas`` noise
    units. Then, with ``late`` the median gradient norm of the second half, either
    - *collapse*: ``late`` < ``collapse_norm`` and < ``max_ratio_to_start`` x the early norm
      (median of the first ``edge_fraction``), or
    - *vanishing from the start* (a deep stack of saturating layers): ``late`` < ``max_norm``
      and the loss never moved from its start (start-to-end drop < ``flat_drop_sigmas`` noise
      units). Small norms alone are no evidence: a converged run has them too.
    The onset is the first step from which the norm stays below the threshold that applied.
    """
    gs, g = finite_part(grad_norm)
    ls, lv = finite_part(train_loss)
    if len(g) < min_points or len(lv) < min_points:
        return None
    w = odd_window(len(lv), 21, fraction=0.2, minimum=5)
    sigma = noise_sigma(lv, w)
    drop_late = _drop(lv[len(lv) // 2 :], edge_fraction)
    stalled = not (sigma > 0 and drop_late >= stall_drop_sigmas * sigma)
    layers = None if layer_grad_norm is None else vanishing_layers(
        layer_grad_norm, max_layer_ratio=max_layer_ratio, early_layer_fraction=early_layer_fraction,
        edge_fraction=edge_fraction, min_layers=min_layers, min_points=min_points)
    if layers is not None:
        return _layer_evidence(layers, g, stalled, drop_late / sigma if sigma > 0 else 0.0)
    if not stalled:
        return None
    late = median_of(g[len(g) // 2 :])
    early = median_of(g[: _edge(g, edge_fraction)])
    ratio = late / early if early > 0 else float("inf")
    never_moved = _drop(lv, edge_fraction) < flat_drop_sigmas * max(sigma, np.finfo(np.float64).tiny)
    if late < collapse_norm and ratio < max_ratio_to_start:
        kind, limit = "collapse", collapse_norm
    elif late < max_norm and never_moved:
        kind, limit = "from_start", max_norm
    else:
        return None
    above = np.nonzero(g >= limit)[0]
    onset_i = min(int(above[-1] + 1) if len(above) else 0, len(g) - 1)
    if kind == "from_start":
        onset_i = 0
    return Evidence(
        start_step=int(gs[onset_i]),
        end_step=int(gs[-1]),
        steps=(int(gs[onset_i]),),
        values={
            "kind": kind,
            "late_norm": late,
            "early_norm": early,
            "ratio_to_start": ratio,
            "threshold": limit,
            "loss_drop_sigmas": drop_late / sigma if sigma > 0 else 0.0,
            "detail": (
                f"grad norm fell to {late:.3g} ({ratio:.2g}x its start {early:.3g}) while the loss stalled"
                if kind == "collapse"
                else f"grad norm is {late:.3g} (below {limit:g}) and the loss never moved from its start"
            ),
        },
    )


def _layer_evidence(layers: dict, total: np.ndarray, stalled: bool, drop_sigmas: float) -> Evidence | None:
    """The per-layer vanishing finding (see :func:`vanishing_gradients`), or None when the early
    layers are not that far below the late ones."""
    if not layers.pop("vanishing"):
        return None
    norms = layers["layer_norms"]
    low = layers["vanishing_layers"]
    shown = ", ".join(f"{n} {norms[n]:.2g}" for n in low[:4]) + (f" and {len(low) - 4} more" if len(low) > 4 else "")
    late = ", ".join(f"{n} {norms[n]:.2g}" for n in layers["late_layers"])
    story = ("while the loss stalled" if stalled else
             "while the loss still falls: only the last layers learn")
    total_median = median_of(total)
    detail = (
        f"early layers' gradients are {layers['layer_ratio']:.1e}x the last layers' (median over {{axis}}s "
        f"{layers['first_step']}-{layers['last_step']}): {shown} vs {late}; the total grad norm "
        f"(median {total_median:.3g}) is the last layers', {story}"
    )
    onset = layers["onset_step"]
    return Evidence(
        start_step=onset,
        end_step=layers["last_step"],
        steps=(onset,),
        values={**layers, "kind": "layers", "loss_stalled": stalled, "loss_drop_sigmas": drop_sigmas,
                "total_norm": total_median, "detail": detail},
    )
