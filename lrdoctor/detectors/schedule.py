"""LR jumps: a schedule that restarts (a resume that lost the scheduler state, or a periodic
schedule such as CosineAnnealingWarmRestarts / CyclicLR), and whether the restarts destabilise."""

from __future__ import annotations

import numpy as np

from ..model import Series
from .base import Evidence, finite_part, listed, noise_sigma, odd_window, param_ranges, rolling_median
from .nonfinite import times, true_runs


def _rises(lr: np.ndarray, min_jump_ratio: float, min_share_of_peak: float) -> list[tuple[int, int]]:
    """(first, last) index of each rise of the LR that is a restart: a run of increasing points
    that multiplies the LR by ``min_jump_ratio`` or more and ends at ``min_share_of_peak`` of the
    peak reached before it, after the LR had fallen from that peak by ``min_jump_ratio``.
    A warmup rises too, but never from below an earlier, higher peak."""
    up = np.diff(lr) > 0
    starts, lengths = true_runs(up)
    peak_before = np.maximum.accumulate(lr)
    out = []
    for s, k in zip(starts.tolist(), lengths.tolist(), strict=True):  # one pass per rise, not per step
        lo, hi = s, s + k  # lr[lo] is the bottom, lr[hi] the top of the rise
        earlier = float(peak_before[lo])
        if lr[lo] <= 0 or earlier < min_jump_ratio * lr[lo]:
            continue  # not after a decay: a warmup, or a small wiggle
        if lr[hi] < min_jump_ratio * lr[lo] or lr[hi] < min_share_of_peak * earlier:
            continue
        out.append((lo, hi))
    return out


def _periodic(tops: np.ndarray, first_peak: int, tolerance: float) -> bool:
    """Whether restart times (indices of the tops, after the schedule's first peak) follow a
    period: equal cycles (CyclicLR, T_mult=1) or cycles growing by a constant factor (T_mult>1)."""
    if len(tops) < 2:
        return False
    cycles = np.diff(np.concatenate([[first_peak], tops])).astype(np.float64)
    if np.any(cycles <= 0):
        return False
    growth = cycles[1:] / cycles[:-1]
    return bool(np.all(np.abs(np.log(growth / np.median(growth))) <= np.log1p(tolerance)))


@param_ranges(min_jump_ratio=">=1", min_share_of_peak="(0..1]", period_tolerance=">=0",
              loss_rise_sigmas=">=0", min_loss_rise=">=0", grad_ratio=">=1", window=">=1", min_points=">=0")
def lr_jump(
    lr: Series,
    train_loss: Series,
    grad_norm: Series | None = None,
    *,
    min_jump_ratio: float = 2.0,
    min_share_of_peak: float = 0.5,
    period_tolerance: float = 0.25,
    loss_rise_sigmas: float = 3.0,
    min_loss_rise: float = 0.02,
    grad_ratio: float = 5.0,
    window: int = 9,
    min_points: int = 8,
) -> Evidence | None:
    """The logged LR jumps back up after it had decayed: a schedule that restarted.

    A restart is a rise of the LR (consecutive increasing points) by ``min_jump_ratio`` or more,
    from below the schedule's earlier peak by that ratio, back to at least ``min_share_of_peak``
    of that peak (a warmup is never a restart: nothing higher came before it).

    Restarts whose times follow a period -- equal cycles, or cycles growing by a constant factor
    (CosineAnnealingWarmRestarts with T_mult >= 1, CyclicLR), within ``period_tolerance`` -- are
    intended; a loss bump at each is expected. Only *destabilising* ones are reported: the
    training loss has not come back to its level before the restart by the next restart (or the
    end), by more than ``loss_rise_sigmas`` of its noise and ``min_loss_rise`` of its level
    (medians of ``window`` points on each side), or the grad norm after it exceeds ``grad_ratio``
    x its median before it. A single restart, or irregular ones, is an accident (a run resumed
    from a checkpoint without its scheduler state restarts its warmup/decay from the top) and is
    reported whatever followed; evidence says whether the loss or the grad norm blew up after it.
    """
    s, v = finite_part(lr)
    if len(v) < min_points or not bool(np.any(v > 0)):
        return None
    rises = _rises(v, min_jump_ratio, min_share_of_peak)
    if not rises:
        return None
    tops = np.asarray([hi for _, hi in rises])
    first_peak = int(np.argmax(v[: rises[0][0] + 1]))
    periodic = _periodic(tops, first_peak, period_tolerance)
    ls, lv = finite_part(train_loss)
    gs, gv = finite_part(grad_norm) if grad_norm is not None else (np.zeros(0, np.int64), np.zeros(0))
    sigma = noise_sigma(lv, odd_window(len(lv), 21, minimum=5)) if len(lv) >= 5 else 0.0
    smooth = rolling_median(lv, odd_window(len(lv), window, minimum=1)) if len(lv) else lv
    # a restart's step: the first one trained at a raised LR
    bounds = np.concatenate([s[[lo + 1 for lo, _ in rises]], [np.iinfo(np.int64).max]])
    flagged, details = [], []
    for k, (lo, _) in enumerate(rises):  # one pass per restart
        at, nxt = int(bounds[k]), int(bounds[k + 1])
        before = lv[(ls < at)][-window:]
        cycle = smooth[(ls >= at) & (ls < nxt)]
        unrecovered = False
        if len(before) and len(cycle):
            ref = float(np.median(before))
            end = float(np.median(cycle[-max(1, min(window, len(cycle) // 4)):]))
            rise = end - ref
            unrecovered = rise > loss_rise_sigmas * sigma and rise > min_loss_rise * abs(ref)
        inside = (ls >= at) & (ls < nxt)
        peak_loss = float(np.max(lv[inside])) if np.any(inside) else float("nan")
        g_before = gv[gs < at][-4 * window:]
        g_after = gv[(gs >= at) & (gs < nxt)]
        g_ratio = float(np.max(g_after) / np.median(g_before)) if len(g_before) and len(g_after) and np.median(
            g_before) > 0 else float("nan")
        exploded = bool(g_ratio >= grad_ratio)
        if periodic and not (unrecovered or exploded):
            continue
        flagged.append(k)
        details.append({"step": at, "lr_before": float(v[lo]), "lr_after": float(v[rises[k][1]]),
                        "loss_unrecovered": unrecovered, "grad_exploded": exploded, "grad_ratio": g_ratio,
                        "loss_peak_after": peak_loss})
    if not flagged:
        return None
    first = details[0]
    at_steps = np.asarray([d["step"] for d in details], dtype=np.int64)
    harm = []
    if any(d["grad_exploded"] for d in details):
        worst = max((d for d in details if d["grad_exploded"]), key=lambda d: d["grad_ratio"])
        harm.append(f"the grad norm reached {times(worst['grad_ratio'], 0)} its level before")
    if any(d["loss_unrecovered"] for d in details):
        harm.append("the loss did not come back to its level before the " +
                    ("next restart" if periodic else "jump"))
    if periodic:
        cycles = np.diff(np.concatenate([[first_peak], tops]))
        detail = (f"periodic LR restarts (every ~{int(np.median(np.diff(s[np.concatenate([[first_peak], tops])])))} "
                  f"{{axis}}s, {len(tops)} restarts); {len(flagged)} destabilised the run: " + "; ".join(harm)
                  + f" (first at {{axis}} {first['step']})")
    else:
        detail = (f"LR jumped from {first['lr_before']:.3g} to {first['lr_after']:.3g} at {{axis}} {first['step']}"
                  f" ({times(first['lr_after'] / first['lr_before'], 0)}, back to "
                  f"{first['lr_after'] / float(np.max(v[: rises[0][0] + 1])):.0%} of its earlier peak): "
                  "the schedule restarted, as when a run resumes from a checkpoint without its scheduler state"
                  + ("; after it " + " and ".join(harm) if harm else ""))
        cycles = np.zeros(0)
    return Evidence(
        start_step=int(at_steps[0]),
        end_step=int(s[-1]),
        steps=listed(at_steps),
        values={
            "kind": "periodic" if periodic else "jump",
            "count": len(flagged),
            "restarts": len(rises),
            "first_step": int(at_steps[0]),
            "lr_before": first["lr_before"],
            "lr_after": first["lr_after"],
            "lr_peak": float(np.max(v)),
            "cycle_points": [int(c) for c in cycles],
            "cycle_steps": [int(c) for c in np.diff(s[np.concatenate([[first_peak], tops])])] if periodic else [],
            "grad_exploded": any(d["grad_exploded"] for d in details),
            "loss_unrecovered": any(d["loss_unrecovered"] for d in details),
            "detail": detail,
        },
    )
