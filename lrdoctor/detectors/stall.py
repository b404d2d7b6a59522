"""Stalls: the loss stops improving (plateau), or the gradients vanish while it does."""

from __future__ import annotations

import numpy as np

from ..model import Series
from .base import Evidence, finite_part, noise_sigma, odd_window, spearman_trend

#: Candidate onsets are tried at this many evenly spaced points (a loop over candidates, not steps).
_CANDIDATES = 40


def _edge(x: np.ndarray, fraction: float) -> int:
    return max(3, int(len(x) * fraction))


def _drop(x: np.ndarray, fraction: float) -> float:
    """How far the curve fell from its start to its end (medians of its two edges)."""
    k = _edge(x, fraction)
    return float(np.median(x[:k]) - np.median(x[-k:]))


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


def plateau(
    train_loss: Series,
    lr: Series | None = None,
    *,
    window: int = 21,
    edge_fraction: float = 0.1,
    flat_drop_sigmas: float = 4.0,
    stall_drop_sigmas: float = 1.0,
    max_stall_trend: float = -0.3,
    min_stall_fraction: float = 0.5,
    lr_decay_ratio: float = 0.5,
    flag_never_moves: bool = True,
    flag_stalls: bool = False,
    min_points: int = 10,
) -> Evidence | None:
    """The training loss never moves from where it started (``flag_never_moves``), or stops
    improving for a long stretch while the LR is not being decayed (``flag_stalls``).

    Distances are in units of the loss's own noise (MAD of residuals around a running median over
    ``window`` points), so shifting or scaling the loss changes nothing. *Never moves*: the change
    from the first to the last ``edge_fraction`` of the run (medians) is smaller, either way,
    than ``flat_drop_sigmas`` noise units; the onset is the first step. *Stalls*: from some point on,
    the rest of the run falls by less than ``stall_drop_sigmas`` noise units and has no clear
    downward rank trend (Spearman > ``max_stall_trend``), for at least ``min_stall_fraction`` of
    the run, while the LR (when logged) ends above ``lr_decay_ratio`` x its value at the onset.
    Without a logged LR the stall must cover twice ``min_stall_fraction`` (capped at 0.9).

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
    total_drop = _drop(x, edge_fraction)
    values = {
        "noise_sigma": sigma,
        "start_value": float(np.median(x[: _edge(x, edge_fraction)])),
        "end_value": float(np.median(x[-_edge(x, edge_fraction) :])),
        "total_drop_sigmas": total_drop / sigma,
    }
    # |drop|: a loss that climbs far above its start moves too (divergence territory, not a plateau)
    if abs(total_drop) < flat_drop_sigmas * sigma:
        if not flag_never_moves:
            return None
        values.update(kind="never_moves", stall_fraction=1.0, lr_ratio=_lr_decay(lr, int(steps[0])))
        values["detail"] = (
            f"train loss never moved from its start ({values['start_value']:.4g} -> "
            f"{values['end_value']:.4g}, {total_drop / sigma:.1f} noise units)"
        )
        return Evidence(int(steps[0]), int(steps[-1]), (int(steps[0]),), values)

    if not flag_stalls:
        return None
    min_len = max(min_points, int(np.ceil(min_stall_fraction * n)))
    onset = None
    for i in np.unique(np.linspace(0, n - min_len, _CANDIDATES).astype(int)):
        seg = x[i:]
        if _drop(seg, edge_fraction) < stall_drop_sigmas * sigma and spearman_trend(seg) > max_stall_trend:
            onset = int(i)
            break
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
        stall_value=float(np.median(x[onset:])),
    )
    values["detail"] = (
        f"train loss stopped improving at {{axis}} {int(steps[onset])} (~{values['stall_value']:.4g}) for "
        f"the last {stall_fraction:.0%} of the run"
        + (" with the LR not decayed" if ratio is not None else "")
    )
    return Evidence(int(steps[onset]), int(steps[-1]), (int(steps[onset]),), values)


def vanishing_gradients(
    grad_norm: Series,
    train_loss: Series,
    *,
    max_norm: float = 0.05,
    collapse_norm: float = 1e-3,
    max_ratio_to_start: float = 1e-2,
    edge_fraction: float = 0.1,
    flat_drop_sigmas: float = 2.0,
    stall_drop_sigmas: float = 3.0,
    min_points: int = 8,
) -> Evidence | None:
    """Gradient norm tiny (absolute, and relative to its start or from the start) while the loss
    stalls.

    The loss must stall: over the second half it falls by less than ``stall_drop_sigmas`` noise
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
    if sigma > 0 and drop_late >= stall_drop_sigmas * sigma:
        return None
    late = float(np.median(g[len(g) // 2 :]))
    early = float(np.median(g[: _edge(g, edge_fraction)]))
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
