"""NaN/inf helpers shared by the divergence and spike detectors: how to name non-finite points and
when non-finite grad norms persist (divergence) rather than mark steps mixed precision skipped."""

from __future__ import annotations

import numpy as np

from ..model import Series


def nonfinite_counts(values: np.ndarray) -> str:
    """'3 nan', '1 inf and 480 nan': what the non-finite points are, most common first."""
    v = np.asarray(values, dtype=np.float64)
    counts = {"nan": int(np.isnan(v).sum()), "inf": int(np.isposinf(v).sum()), "-inf": int(np.isneginf(v).sum())}
    parts = [f"{c} {k}" for k, c in sorted(counts.items(), key=lambda kv: -kv[1]) if c]
    return " and ".join(parts) if len(parts) <= 2 else f"{parts[0]}, {parts[1]} and {parts[2]}"


def value_word(values: np.ndarray) -> str:
    """'nan', 'inf', '-inf' when all the points are that, else 'non-finite'."""
    v = np.asarray(values, dtype=np.float64)
    for word, test in (("nan", np.isnan), ("inf", np.isposinf), ("-inf", np.isneginf)):
        if len(v) and bool(test(v).all()):
            return word
    return "non-finite"


def true_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start indices and lengths of the runs of consecutive True in ``mask``."""
    m = np.concatenate([[False], np.asarray(mask, dtype=bool), [False]])
    d = np.diff(m.astype(np.int8))
    starts = np.nonzero(d == 1)[0]
    ends = np.nonzero(d == -1)[0]
    return starts, ends - starts


def persistent_nonfinite(series: Series | None, *, start_points: int, max_skipped_run: int,
                         end_points: int) -> int | None:
    """Index where a grad norm's non-finite values *persist*, or None when they are skipped steps.

    A mixed-precision GradScaler logs inf/nan grad norms for the steps it skips (several in a row
    while it backs its initial scale off, then one now and then when it grows the scale again);
    the loss keeps falling and nothing diverged. Non-finite grad norms mean divergence when they
    last to the end of the run (the last ``end_points`` points, or all after the first one
    when fewer), or come in a run longer than ``max_skipped_run`` points outside the first
    ``start_points`` (HF's Trainer hides NaN losses, so the grad norm is the only tell).
    """
    if series is None or len(series) == 0:
        return None
    bad = ~np.isfinite(np.asarray(series.values, dtype=np.float64))
    if not bad.any():
        return None
    starts, lengths = true_runs(bad)
    n = len(bad)
    last_start, last_len = int(starts[-1]), int(lengths[-1])
    # a final stretch long enough, or the only non-finite stretch the run has ends it
    if last_start + last_len == n and last_len >= min(end_points, n - int(starts[0])):
        return last_start
    long = np.nonzero((lengths > max_skipped_run) & (starts + lengths > start_points))[0]
    return int(starts[long[0]]) if len(long) else None


def times(ratio: float, decimals: int = 1) -> str:
    """A ratio for a message: "40.3x", but "1.7e+35x" for a loss that blew up by 35 decades (a
    fixed-point 169228166345074186846874979698475008.0x reads as noise)."""
    return f"{ratio:.{decimals}f}x" if abs(ratio) < 1e4 else f"{ratio:.2g}x"
