"""Min/max-per-bucket downsampling for display.

A plain stride (or TensorBoard's reservoir sample) drops exactly the points a diagnosis is about:
a one-step loss spike or the first NaN. Here each bucket of consecutive points keeps its smallest
and largest finite value and the first NaN, +inf and -inf it holds, so the drawn envelope is the
true one and every non-finite stretch still gets a marker.
"""

from __future__ import annotations

import numpy as np


def minmax_indices(values: np.ndarray, max_points: int = 1000) -> np.ndarray:
    """Indices (ascending) of the points to draw out of ``values``.

    With ``n <= max_points`` every index is returned. Otherwise the points are cut into
    ``max_points // 2`` buckets of equal count; per bucket the argmin and argmax of the finite
    values are kept, plus the first NaN / +inf / -inf, plus the first and last point overall.
    The result can exceed ``max_points`` only by those non-finite markers.
    """
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if n <= max(max_points, 2):
        return np.arange(n)
    buckets = max(1, max_points // 2)
    width = -(-n // buckets)  # ceil
    buckets = -(-n // width)
    padded = np.full(buckets * width, np.nan)
    padded[:n] = values
    real = np.zeros(buckets * width, dtype=bool)
    real[:n] = True
    grid = padded.reshape(buckets, width)
    real = real.reshape(buckets, width)
    finite = np.isfinite(grid)
    base = np.arange(buckets) * width

    keep = [np.array([0, n - 1])]
    has_finite = finite.any(axis=1)
    lo = np.argmin(np.where(finite, grid, np.inf), axis=1)
    hi = np.argmax(np.where(finite, grid, -np.inf), axis=1)
    keep.append((base + lo)[has_finite])
    keep.append((base + hi)[has_finite])
    for mask in (np.isnan(grid) & real, grid == np.inf, grid == -np.inf):
        any_ = mask.any(axis=1)
        keep.append((base + np.argmax(mask, axis=1))[any_])
    return np.unique(np.concatenate(keep))


def downsample(steps: np.ndarray, values: np.ndarray, max_points: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, values)`` reduced with :func:`minmax_indices`; order and non-finite values kept."""
    steps = np.asarray(steps)
    values = np.asarray(values, dtype=np.float64)
    idx = minmax_indices(values, max_points)
    return steps[idx], values[idx]
