"""Streaming screens: cheap, exact tests that a detector would find nothing, kept up to date point
by point.

A live check runs the rules every few steps on everything logged so far. On a healthy run that
is the same work over and over for the same answer, and inside a training loop, whose step has
just pushed lrdoctor's code and data out of the CPU caches, even the numpy calls on a few hundred
points cost several times what they cost alone. A screen is fed only the points logged since the
last check (plain Python, no numpy) and answers one question: *can* the detector fire on
everything fed so far? It must never answer "no" when the detector would fire (each test below
says why it cannot), so the live engine may skip the detector when it does and the answers are
exactly the detector's. "Yes" only means: run the detector.

A screen assumes the points arrive in strictly ascending steps, one per step (what a training
feeds); the live engine uses it only then, and feeds it again from the start when that changes.
Screens are plain Python on purpose: one float comparison per point, where a numpy call costs
microseconds of fixed overhead per check.
"""

from __future__ import annotations

import math
import sys
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from .base import early_points, odd_window

#: a hair of margin on the comparisons: the detectors take logs and medians with numpy, whose
#: last-bit rounding may differ from Python's math module
_MARGIN = 1e-9


class Screen(Protocol):
    #: the roles it watches, fed in any order
    roles: tuple[str, ...]

    def feed(self, role: str, values: Iterable[float]) -> None: ...

    def quiet(self, averages: Mapping[str, float]) -> bool:
        """True only when the detector, given everything fed so far, would return None
        (``averages``: steps per point of each watched role, :mod:`lrdoctor.averaging`)."""
        ...


def _median(values: list[float]) -> float:
    """The median of an odd number of values (an element: what numpy's and scipy's give)."""
    return sorted(values)[len(values) // 2]


def screened_by(factory: Callable[[Mapping[str, Any]], Screen]) -> Callable:
    """Attach a screen to a detector: ``factory(params)`` builds one for a rule's parameters."""

    def mark(fn: Callable) -> Callable:
        fn.__lrdoctor_screen__ = factory  # type: ignore[attr-defined]
        return fn

    return mark


class BlowUpScreen:
    """For :func:`lrdoctor.detectors.divergence.divergence`.

    It fires on any non-finite loss or grad norm (the screen is not quiet after one), on a
    blow-up, or on a collapse.

    *Blow-up*: the last smoothed loss above ``ratio_over_best`` x its running best. The last
    smoothed point is the median of a window of the last ``w // 2 + 1`` values (padded past the
    end with the last one), so it is at most their maximum; the running best is a median of
    loss values, so at least their minimum. A loss whose recent maximum is within the ratio of
    its minimum cannot have blown up. A loss that is zero or negative somewhere is judged
    linearly by the detector: never quiet.

    *Collapse*: the last smoothed point back at least ``collapse_return`` of the way from the
    smoothed minimum to the early level (the median of the first values), the minimum at most
    ``1 - collapse_min_drop`` of that level. The screen computes the last smoothed point and the
    smoothed minimum exactly, in plain Python: it keeps the running median of the smoothing window
    the detector uses on long runs (``W``, once ``w`` has grown to it; before that it is never
    quiet) for every point whose window is complete, their minimum, and at a check the ``W // 2``
    last ones, whose windows are padded with the last value. The early level lies between the
    minimum and the maximum of those first values, kept up to date as their count grows.

    *Unstable* epoch means need no test here: the detector judges them only on a loss whose tag
    or step axis says its points are epoch means, and the live engine never consults a screen
    for such a tag (it runs the detector).
    """

    roles = ("train_loss", "grad_norm")

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.smooth_window = int(params["smooth_window"])
        self.ratio = float(params["ratio_over_best"])
        self.min_points = int(params["min_points"])
        self.min_drop = float(params["collapse_min_drop"])
        self.back = float(params["collapse_return"])
        self.n = 0
        self.low = math.inf
        self.nonfinite = False
        # the smoothing window of long runs, and the last 2 * (W // 2) + 1 values
        self.width = odd_window(1 << 62, self.smooth_window, fraction=0.1)
        self.half = self.width // 2
        self.recent: deque[float] = deque(maxlen=2 * self.half + 1)
        self.first = math.nan  # the first value: the padding of the first windows
        self.best = math.inf  # min of the smoothed values whose window is complete
        self.values = array("d")  # every finite value: the early level's are read as n grows
        self.head = 0  # how many first values the early bounds cover
        self.head_lo, self.head_hi = math.inf, -math.inf  # their min and max

    def feed(self, role: str, values: Iterable[float]) -> None:
        if role == "grad_norm":
            self.nonfinite = self.nonfinite or not all(math.isfinite(v) for v in values)
            return
        for v in values:
            if not math.isfinite(v):
                self.nonfinite = True
                continue
            if self.n == 0:
                self.first = v
            self.n += 1
            if v < self.low:
                self.low = v
            self.recent.append(v)
            self.values.append(v)
            i = self.n - 1 - self.half  # the point whose window this value completes
            if i >= self.half:  # the window is the last 2 * half + 1 values: the deque itself
                m = sorted(self.recent)[self.half]
            elif i >= 0:
                m = _median(self._window(i))
            else:
                continue
            if m < self.best:
                self.best = m

    def _window(self, i: int) -> list[float]:
        """The values of point i's window (its start padded with the first value), i's window
        complete: the last len(recent) values are points n - len(recent) .. n - 1."""
        lo, hi = i - self.half, i + self.half
        base = self.n - len(self.recent)
        return [self.first] * max(0, -lo) + list(self.recent)[max(lo, 0) - base:hi - base + 1]

    def _early_bounds(self) -> tuple[float, float]:
        """Bounds of the early level (the median of the first early_points(n) values): their
        min and max, kept up to date as that count grows with the run."""
        k = early_points(self.n)
        while self.head < k:
            v = self.values[self.head]
            self.head_lo, self.head_hi = min(self.head_lo, v), max(self.head_hi, v)
            self.head += 1
        return self.head_lo, self.head_hi

    def quiet(self, averages: Mapping[str, float]) -> bool:
        if self.nonfinite:
            return False
        if self.n < self.min_points:
            return True
        if not self.low >= sys.float_info.min:
            return False  # zero or negative: judged linearly; subnormal: the margins round away
        w = odd_window(self.n, self.smooth_window, fraction=0.1)
        tail = list(self.recent)  # the last 2 * half + 1 values (fewer early on)
        if max(tail[-(w // 2 + 1):]) > self.ratio * self.low * (1.0 - _MARGIN):
            return False  # a blow-up is not ruled out
        if w != self.width:
            return False
        # the last half-window of smoothed points, their windows padded past the end
        last = tail[-1]
        ends = [_median(tail[j:] + [last] * j) for j in range(1, self.half + 1)] if self.half else []
        end = ends[-1] if ends else last
        best = min(self.best, *ends) if ends else self.best
        lo, hi = self._early_bounds()
        if best > (1.0 - self.min_drop) * hi * (1.0 + _MARGIN):
            return True  # never learned enough to collapse
        return end < (best + self.back * (lo - best)) * (1.0 - _MARGIN)  # not back near the start


class BurstScreen:
    """For :func:`lrdoctor.detectors.spikes.gradient_bursts`.

    It fires on any non-finite grad norm (not quiet after one: skipped steps are reported), or on
    a burst: a positive grad norm, from the 4th on, more than ``ratio`` x the median of the ``w``
    positive ones before it, with ``ratio`` = ``max(1 + (ratio_over_baseline - 1) / k,
    min(min_ratio_averaged, ratio_over_baseline))`` for points that average ``k`` steps (and a
    z-score test on top). That median is at least the minimum of those ``w`` points, and ``w``
    never exceeds ``W = max(5, baseline_window | 1)``, so at least the minimum of the ``W``
    before: the screen keeps, over every point, the largest log-ratio of a point to that minimum
    (a sliding minimum, O(1) per point) and is quiet while it stays within ``log(ratio)``.
    """

    roles = ("grad_norm",)

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.width = max(5, int(params["baseline_window"]) | 1)
        self.ratio_over_baseline = float(params["ratio_over_baseline"])
        self.min_ratio_averaged = float(params["min_ratio_averaged"])
        self.min_points = int(params["min_points"])
        self.n = 0  # positive finite points seen
        self.nonfinite = False
        self.excess = -math.inf  # the largest log(point / minimum of the W before it), from the 4th
        self._mins: deque[tuple[int, float]] = deque()  # (index, log value), increasing values

    def feed(self, role: str, values: Iterable[float]) -> None:
        mins, width = self._mins, self.width
        for v in values:
            if not math.isfinite(v):
                self.nonfinite = True
                continue
            if v <= 0:
                continue  # the detector judges the positive ones only (in logs)
            lv = math.log(v)
            i = self.n
            while mins and mins[0][0] < i - width:
                mins.popleft()
            if i >= 3 and lv - mins[0][1] > self.excess:
                self.excess = lv - mins[0][1]
            while mins and mins[-1][1] >= lv:
                mins.pop()
            mins.append((i, lv))
            self.n = i + 1

    def quiet(self, averages: Mapping[str, float]) -> bool:
        if self.nonfinite:
            return False
        if self.n < self.min_points:
            return True
        k = max(float(averages.get("grad_norm", 1.0)), 1.0)
        ratio = max(1.0 + (self.ratio_over_baseline - 1.0) / k,
                    min(self.min_ratio_averaged, self.ratio_over_baseline))
        return ratio > 0 and self.excess <= math.log(ratio) - _MARGIN
