"""Overfitting: validation loss turns up while training loss keeps falling."""

from __future__ import annotations

import numpy as np

from ..model import Series
from .base import Evidence, finite_part, noise_sigma, odd_window, rolling_median


def overfitting(
    val_loss: Series,
    train_loss: Series,
    *,
    smooth_window: int = 3,
    min_rise: float = 0.05,
    rise_sigmas: float = 3.0,
    min_points_after_best: int = 3,
    min_val_points: int = 5,
) -> Evidence | None:
    """Validation loss rises from its best while the training loss keeps falling.

    The validation curve is smoothed with a running median of ``smooth_window`` points (eval is
    often sparse: every epoch or every N steps). Fires when, after the best smoothed value, there
    are at least ``min_points_after_best`` evaluations, their late level (the median of the second
    half of them) is at least ``min_rise`` (relative) and ``rise_sigmas`` noise units above the
    best -- a sustained rise, not one bad evaluation; a val loss that rises and then levels off
    counts -- and the training loss over the same stretch falls (its median over the stretch's
    second half is below its median over the first half). The onset is the best-validation step;
    evidence has the best value and the train/val gap at the end.
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
    if rel < min_rise or rise < rise_sigmas * sigma:
        return None
    best_step = int(vs[best_i])
    stretch = t[ts >= best_step]
    if len(stretch) < 2:
        return None
    h = len(stretch) // 2
    train_then = float(np.median(stretch[: max(h, 1)]))
    train_end = float(np.median(stretch[h:]))
    if not train_end < train_then:
        return None
    train_final = float(t[-1])
    return Evidence(
        start_step=best_step,
        end_step=int(vs[-1]),
        steps=(best_step,),
        values={
            "best_val": best,
            "best_step": best_step,
            "final_val": final,
            "late_val": late,
            "rise": rise,
            "rise_pct": 100.0 * rel,
            "train_at_best": train_then,
            "train_final": train_final,
            "gap": final - train_final,
            "val_noise_sigma": sigma,
        },
    )
