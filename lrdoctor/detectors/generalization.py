"""Overfitting: validation loss turns up while training loss keeps falling."""

from __future__ import annotations

import numpy as np

from ..model import Series
from .base import Evidence, finite_part, noise_sigma, odd_window, param_ranges, rolling_median


@param_ranges(smooth_window=">=1", min_rise=">=0", rise_sigmas=">=0", min_points_after_best=">=0",
              min_val_points=">=0", train_fall_sigmas=">=0",
              min_train_fall=">=0", gap_train_fall="(0..1]", gap_min_share=">=0")
def overfitting(
    val_loss: Series,
    train_loss: Series,
    *,
    smooth_window: int = 3,
    min_rise: float = 0.05,
    rise_sigmas: float = 3.0,
    min_points_after_best: int = 3,
    min_val_points: int = 5,
    train_fall_sigmas: float = 1.0,
    min_train_fall: float = 0.01,
    gap_train_fall: float = 0.1,
    gap_min_share: float = 0.3,
    instability_explains: bool = True,
) -> Evidence | None:
    """Validation loss rises from its best while the training loss keeps falling.

    The validation curve is smoothed with a running median of ``smooth_window`` points (eval is
    often sparse: every epoch or every N steps). Fires when, after the best smoothed value, there
    are at least ``min_points_after_best`` evaluations, their late level (the median of the second
    half of them) is at least ``min_rise`` (relative) and ``rise_sigmas`` noise units above the
    best -- a sustained rise, not one bad evaluation; a val loss that rises and then levels off
    counts -- and the training loss over the same stretch falls (its median over the stretch's
    second half is below its median over the first half). The onset is the best-validation
    step: the raw best evaluation within the smoothing window of the smoothed best. Evidence has that raw best value, the latest value
    (``rise_pct`` is from one to the other), and ``gap`` = latest val loss - the train loss at (or
    just before) the latest evaluation.

    Not memorisation, so not reported: a training loss that does not really fall over the stretch
    (by less than ``min_train_fall`` of its level, or ``train_fall_sigmas`` of its robust noise
    over the stretch: a run stuck at chance level whose
    val loss blows up is unstable, not overfitting), and, with ``instability_explains``, a val
    rise that follows a spike of the training loss after the best evaluation (the spike damaged
    the model; loss-spike reports it).

    *The gap opens* (an overfitting onset, reported too): the val loss has not improved on its
    best for at least ``min_points_after_best`` evaluations and ``gap_min_share`` of them all,
    while the training loss fell by ``gap_train_fall`` (relative) or more over that stretch: the
    model keeps fitting the training set and no longer generalises better.
    """
    vs, v = finite_part(val_loss)
    ts, t = finite_part(train_loss)
    if len(v) < min_val_points or len(t) < 3:
        return None
    w = odd_window(len(v), smooth_window, fraction=0.34, minimum=1)
    sv = rolling_median(v, w) if w > 1 else v
    best_i = int(np.argmin(sv))
    after = v[best_i + 1 :]
    if len(after) < min_points_after_best:
        return None
    best = float(sv[best_i])
    final = float(sv[-1])
    late = float(np.median(after[len(after) // 2 :]))
    rise = late - best
    sigma = noise_sigma(v, max(3, w)) if len(v) >= 5 else 0.0
    rel = rise / abs(best) if best != 0 else float("inf")
    kind = "rise"
    if rel < min_rise or rise < rise_sigmas * sigma:
        if rise < 0 or len(after) < gap_min_share * len(v):
            return None
        kind = "gap_opens"  # judged below, once the training loss over the stretch is known
    # the smoothed curve finds *where* the best is (one lucky eval does not move it); the
    # evidence reports the raw best value at its own step, near the smoothed best
    half = w // 2
    lo, hi = max(0, best_i - half), min(len(v), best_i + half + 1)
    raw_i = lo + int(np.argmin(v[lo:hi]))
    best_step = int(vs[raw_i])
    raw_best = float(v[raw_i])
    stretch = t[ts >= int(vs[best_i])]
    if len(stretch) < 2:
        return None
    h = len(stretch) // 2
    train_then = float(np.median(stretch[: max(h, 1)]))
    train_end = float(np.median(stretch[h:]))
    # noise of the stretch itself: the early noise of a loss that fell decades is not its scale
    if train_then - train_end < min_train_fall * abs(train_then):
        return None
    if kind == "gap_opens" and not train_then - train_end >= gap_train_fall * abs(train_then):
        return None
    if not train_then - train_end > train_fall_sigmas * noise_sigma(stretch, odd_window(len(stretch), 9, minimum=3)):
        return None
    if instability_explains and _spiked_after(train_loss, int(vs[best_i])):
        return None
    latest_step = int(vs[-1])
    latest_val = float(v[-1])
    # the train loss at (or just before) the last evaluation: the gap compares the same step
    j = max(0, int(np.searchsorted(ts, latest_step, side="right")) - 1)
    train_final = float(t[j])
    rel_raw = (latest_val - raw_best) / abs(raw_best) if raw_best != 0 else float("inf")
    return Evidence(
        start_step=best_step,
        end_step=int(vs[-1]),
        steps=(best_step,),
        values={
            "best_val": raw_best,
            "best_step": best_step,
            "smoothed_best_val": best,
            "latest_val": latest_val,
            "latest_step": latest_step,
            "final_val": final,
            "late_val": late,
            "rise": latest_val - raw_best,
            "rise_pct": 100.0 * rel_raw,
            "late_rise_pct": 100.0 * rel,
            "train_at_best": train_then,
            "train_final": train_final,
            "train_final_step": int(ts[j]),
            "gap": latest_val - train_final,
            "val_noise_sigma": sigma,
            "kind": kind,
        },
    )


def _spiked_after(train_loss: Series, step: int) -> bool:
    """Did the training loss spike at or after ``step`` (loss-spike's detector, its defaults)?"""
    from .spikes import loss_spike

    ev = loss_spike(train_loss, attribute_to_gradients=False)
    return ev is not None and any(s >= step for s in ev.steps)
