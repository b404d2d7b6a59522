"""Shared pieces of the detectors: the Evidence they return and robust, vectorised statistics.

Every detector is a pure function ``(series..., *, params...) -> Evidence | None``: role series
(:class:`lrdoctor.model.Series`, steps ascending, one point per step) as positional-or-keyword
arguments named after their roles, tuning parameters as keyword-only arguments with documented
defaults. Windows are counted in logged *points*, not steps, so one rule works on per-step,
every-N-steps (HF) and per-epoch (Keras) logs alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from ..model import Series

#: MAD -> standard deviation for a normal distribution.
MAD_TO_SIGMA = 1.4826
#: At most this many point events are listed in a finding's ``steps``; the count is in evidence.
MAX_LISTED_STEPS = 200


@dataclass(frozen=True)
class Evidence:
    """What a detector found: where, and the numbers that made it fire.

    ``values`` fills the rule's message template and becomes the finding's ``evidence``. A
    prose ``detail`` value may write ``{axis}`` for the step-axis word (step, or epoch).
    """

    start_step: int | None
    end_step: int | None
    steps: tuple[int, ...] = ()
    values: dict[str, Any] = field(default_factory=dict)
    #: at most this severity ("info", "warning"): a detector may say its finding is weaker than
    #: the rule's severity (e.g. skipped mixed-precision steps); never raises it
    severity: str | None = None


_F = TypeVar("_F", bound=Callable)


#: Allowed ranges of tuning parameters: form -> (low, high, low open, high open, text).
RANGES: dict[str, tuple[float, float, bool, bool, str]] = {
    ">0": (0.0, float("inf"), True, False, "> 0"),
    ">=0": (0.0, float("inf"), False, False, ">= 0"),
    ">=1": (1.0, float("inf"), False, False, ">= 1"),
    "0..1": (0.0, 1.0, False, False, "between 0 and 1"),
    "(0..1]": (0.0, 1.0, True, False, "in (0, 1]"),
    "[0..1)": (0.0, 1.0, False, True, "in [0, 1)"),
    "-1..1": (-1.0, 1.0, False, False, "between -1 and 1"),
}


def param_ranges(**ranges: str) -> Callable[[_F], _F]:
    """Declare the allowed range of a detector's tuning parameters next to their defaults, e.g.
    ``@param_ranges(window=">=1", z_threshold=">0", recover_fraction="0..1")`` (forms: the keys
    of RANGES; brackets mark an open end). Rule files and ``--set`` are checked against them
    (lrdoctor.engine.spec); NaN is never in range."""
    for name, form in ranges.items():
        if form not in RANGES:
            raise ValueError(f"range {form!r} of {name!r} is not one of {tuple(RANGES)}")

    def mark(fn: _F) -> _F:
        fn.__lrdoctor_ranges__ = dict(ranges)  # type: ignore[attr-defined]
        return fn

    return mark


def in_range(value: float, form: str) -> bool:
    lo, hi, lo_open, hi_open, _ = RANGES[form]
    if value != value:  # NaN
        return False
    if value < lo or value > hi:
        return False
    return not ((lo_open and value == lo) or (hi_open and value == hi))


def range_text(form: str) -> str:
    return RANGES[form][4]


def finite_part(series: Series) -> tuple[np.ndarray, np.ndarray]:
    """Steps and values of the finite points."""
    v = np.asarray(series.values, dtype=np.float64)
    ok = np.isfinite(v)
    return np.asarray(series.steps, dtype=np.int64)[ok], v[ok]


def early_points(n: int) -> int:
    """How many first points of an ``n``-point curve give its early level (the first 2.5%, one
    at least): what the divergence rule's collapse test, and its live screen, call the start."""
    return max(1, n // 40)


def odd_window(n: int, window: int, *, fraction: float = 0.2, minimum: int = 3) -> int:
    """``window`` points, shrunk to ``fraction`` of a short series, odd so it can be centred."""
    w = int(min(window, max(minimum, int(n * fraction))))
    return max(minimum, w | 1)


def rolling_median(x: np.ndarray, window: int) -> np.ndarray:
    """Centred running median; the ends are padded with the edge values."""
    from scipy.ndimage import median_filter

    if len(x) == 0:
        return np.asarray(x, dtype=np.float64)
    return median_filter(np.asarray(x, dtype=np.float64), size=max(1, window), mode="nearest")


def trailing_median(x: np.ndarray, window: int) -> np.ndarray:
    """Median of the ``window`` points *before* each point (NaN for the first point; the start is
    padded with the first value)."""
    from scipy.ndimage import median_filter

    x = np.asarray(x, dtype=np.float64)
    out = np.full(len(x), np.nan)
    if len(x) < 2:
        return out
    w = max(1, window)
    # origin (w - 1) // 2 puts the window at [i - w + 1, i]; shifting by one excludes point i
    m = median_filter(x, size=w, mode="nearest", origin=(w - 1) // 2)
    out[1:] = m[:-1]
    return out


def median_of(x: np.ndarray) -> float:
    """``float(np.median(x))`` of a 1-D array, bit for bit (the mean of the two middle values of
    an even count; NaN if any value is NaN or ``x`` is empty), by one partition.

    Hand-written because the detectors take many medians of short windows and a live check runs
    them every few steps: on a few hundred points ``np.median``'s general-axis machinery costs
    about ten times the partition itself.
    """
    n = len(x)
    if n == 0:
        return float("nan")
    k = n // 2
    # NaN sorts last: partitioning at n - 1 too tells whether there is one, as np.median does
    part = np.partition(x, (k - 1, k, n - 1) if n % 2 == 0 else (k, n - 1))
    if part[n - 1] != part[n - 1]:
        return float("nan")
    return float(part[k]) if n % 2 else float((part[k - 1] + part[k]) / 2)


#: window_medians sorts one padded matrix up to this many cells; above it, a partition per window
#: is cheaper (a sort of long windows costs log(length) times their partitions)
_MATRIX_CELLS = 1 << 16


def window_medians(x: np.ndarray, starts: np.ndarray, lengths: np.ndarray, *,
                   max_cells: int = _MATRIX_CELLS) -> np.ndarray:
    """``np.median(x[s:s + k])`` for every pair of ``starts`` and ``lengths`` (k >= 1, windows
    inside ``x``, values not NaN), bit for bit: the windows are the rows of one matrix padded
    with +inf and sorted once (up to ``max_cells`` cells), so many short windows cost one numpy
    call instead of one each."""
    starts = np.asarray(starts, dtype=np.intp)
    lengths = np.asarray(lengths, dtype=np.intp)
    if len(starts) == 0:
        return np.zeros(0)
    width = int(lengths.max())
    if len(starts) * width > max_cells:
        return np.array([median_of(x[s:s + k]) for s, k in zip(starts, lengths, strict=True)])
    cols = np.arange(width)
    inside = cols < lengths[:, None]
    m = np.where(inside, x[np.where(inside, starts[:, None] + cols, 0)], np.inf)
    m.sort(axis=1)
    rows = np.arange(len(starts))
    lo, hi = m[rows, (lengths - 1) // 2], m[rows, lengths // 2]
    return np.where(lengths % 2 == 1, hi, (lo + hi) / 2)


def mad_sigma(x: np.ndarray) -> float:
    """Robust standard deviation (scaled median absolute deviation); 0.0 for empty input."""
    if len(x) == 0:
        return 0.0
    return float(MAD_TO_SIGMA * median_of(np.abs(x - median_of(x))))


def noise_sigma(x: np.ndarray, window: int, median: np.ndarray | None = None) -> float:
    """Robust noise level of a curve: MAD of its residuals around a running median.

    Shift-invariant and scales with the curve, so thresholds in units of it are affine-invariant.
    ``median`` is that running median when the caller already has it.
    """
    r = x - (rolling_median(x, window) if median is None else median)
    sigma = mad_sigma(r)
    if sigma > 0:
        return sigma
    # a perfectly smooth (or quantised) curve: fall back to the typical step-to-step change
    d = np.abs(np.diff(x))
    d = d[d > 0]
    return median_of(d) if len(d) else 0.0


def local_noise(x: np.ndarray, window: int, median: np.ndarray, floor: float = 0.0) -> np.ndarray:
    """Per-point robust noise level: the scaled running median (centred, ``window`` points) of
    the absolute residuals around ``median`` (a running median of the curve).

    Minibatch noise scales with the loss level, so one global level (dominated by a long, quiet
    converged tail) makes early ordinary noise look like spikes. Like :func:`noise_sigma` it is
    shift-invariant and scales with the curve; a few spike points cannot lift the median of
    their window much. ``floor`` is a lower bound (e.g. the global level, so a quantised
    stretch with zero residuals does not make every wobble infinitely significant).
    """
    if len(x) == 0:
        return np.zeros(0)
    r = np.abs(np.asarray(x, dtype=np.float64) - median)
    return np.maximum(MAD_TO_SIGMA * rolling_median(r, window), floor)


#: Rank trends of longer series are taken over this many block medians (same sign, far cheaper).
TREND_POINTS = 2048


def block_medians(y: np.ndarray, blocks: int) -> np.ndarray:
    """Medians of ``blocks`` consecutive equal blocks (the remainder joins the last block's
    neighbours by being dropped from the front, so the end of the series is always kept)."""
    size = len(y) // blocks
    if size <= 1:
        return y
    tail = y[len(y) - size * blocks :]
    return np.median(tail.reshape(blocks, size), axis=1)


def spearman_trend(y: np.ndarray) -> float:
    """Spearman rank correlation of ``y`` with its index: -1 steadily falling, +1 rising."""
    from scipy.stats import rankdata

    if len(y) > 2 * TREND_POINTS:
        y = block_medians(y, TREND_POINTS)
    n = len(y)
    if n < 3:
        return 0.0
    ranks = rankdata(y)
    idx = np.arange(n, dtype=np.float64)
    ranks = ranks - ranks.mean()
    idx = idx - idx.mean()
    denom = float(np.sqrt((ranks**2).sum() * (idx**2).sum()))
    return float((ranks * idx).sum() / denom) if denom > 0 else 0.0


def group_events(idx: np.ndarray, max_gap: int = 1) -> list[np.ndarray]:
    """Split sorted indices into runs whose neighbours are at most ``max_gap`` apart."""
    if len(idx) == 0:
        return []
    breaks = np.nonzero(np.diff(idx) > max_gap)[0] + 1
    return np.split(idx, breaks)


def listed(steps: np.ndarray) -> tuple[int, ...]:
    return tuple(int(s) for s in steps[:MAX_LISTED_STEPS])


