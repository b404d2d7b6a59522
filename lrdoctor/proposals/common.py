"""What the proposal builders share: the draft they return and number formatting."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..patch import ConfigPatch
from ..roles import RoleView


@dataclass(frozen=True)
class Draft:
    """A proposal before ranking (the rule's policy gives its rank score)."""

    kind: str
    summary: str
    rationale: str
    config: ConfigPatch  # builders may pass a dict: it is validated into a ConfigPatch
    variant: str = ""  # tells apart several proposals of one kind (e.g. decay schedules)
    header: str = field(default="")  # extra comment lines for the snippet

    def __post_init__(self) -> None:
        object.__setattr__(self, "config", ConfigPatch.of(self.config))


def fmt(x: float | None) -> str:
    """Short human number: 0.0006 -> '6e-4', 0.05 -> '0.05', 1234.5 -> '1.23e+3'."""
    if x is None:
        return "?"
    if x == 0:
        return "0"
    if not math.isfinite(x):
        return str(x)
    a = abs(x)
    if 1e-3 <= a < 1e4:
        return f"{x:.3g}"
    m, e = f"{x:.2e}".split("e")
    m = m.rstrip("0").rstrip(".")
    return f"{m}e{int(e)}"


def as_logged(x: float | None) -> float | None:
    """A logged number at the precision it was logged with.

    torch's ``SummaryWriter`` (and tensorboardX, and torch tensors' default dtype) log float32:
    an LR of 0.01 reads back as 0.009999999776482582. Floored to 2 significant digits that is
    0.0099, and a proposal would say "0.03 -> 0.029" for an LR the user set to 0.03. A value
    that is exactly a float32 is taken as the shortest decimal that is that same float32 (0.01);
    any other value is returned as it is. A float64 that happens to be a float32 (0.5, 2**-20)
    moves by less than float32's precision (6e-8 relative), far below the 2 digits a proposal
    keeps.
    """
    if x is None or not math.isfinite(x) or x == 0:
        return x
    f32 = np.float32(x)
    if float(f32) != x:
        return x
    return float(str(f32))  # numpy prints a float32 as its shortest round-tripping decimal


def round_sig(x: float, sig: int = 2) -> float:
    if x == 0 or not math.isfinite(x):
        return float(x)
    return float(f"{x:.{sig - 1}e}")


def round_down(x: float, sig: int = 2) -> float:
    """Round towards zero to ``sig`` significant digits (a lowered LR stays below the target)."""
    if x <= 0 or not math.isfinite(x):
        return float(x)
    e = math.floor(math.log10(x)) - sig + 1
    return float(f"{math.floor(x / 10**e + 1e-9) * 10**e:.{sig}g}")


def nice_steps(n: float) -> int:
    """A step count rounded to 2 significant digits (at least 1): 1987 -> 2000, 137 -> 140."""
    n = max(int(round(n)), 1)
    if n < 100:
        return n
    return int(round_sig(float(n), 2))


#: Fewest points a median of a stretch (a loss level, a grad-norm baseline) is taken from: a median
#: of 5 ignores two outliers, one of 1-2 points is whatever those points were. Each statistic a
#: proposal uses has its guard and its fallback (proposals/grads.py: MIN_STATS_POINTS for
#: percentiles; README "Proposals": the table of guards).
MIN_LEVEL_POINTS = 5


def loss_at(view: RoleView, role: str, first: int, last: int, *, min_points: int = 1,
            widen: str = "") -> float | None:
    """Median of the finite values of a role between two steps (None when there are none). With
    ``min_points``, a stretch holding fewer is widened to the ``min_points`` finite values nearest
    it on the ``widen`` side ("after": from ``first`` on, "before": up to ``last``)."""
    s = view.deduped(role)
    if s is None:
        return None
    fin = np.isfinite(s.values)
    m = (s.steps >= first) & (s.steps <= last) & fin
    if m.sum() < min_points and widen:
        idx = np.flatnonzero(fin & ((s.steps >= first) if widen == "after" else (s.steps <= last)))
        idx = idx[:min_points] if widen == "after" else idx[-min_points:]
        m = np.zeros(len(s.values), dtype=bool)
        m[idx] = True
    return float(np.median(s.values[m])) if m.any() else None


def relative_drop(view: RoleView, first: int, start: int, end: int) -> float | None:
    """How much the train loss fell from the run's start to the stretch [start, end], as a
    fraction of its starting level (0: never moved, 1: went to zero). Each level is the median of
    at least MIN_LEVEL_POINTS losses (the first ones of the run; the last ones up to ``end``)."""
    span = max((end - first) // 20, 1)
    a = loss_at(view, "train_loss", first, first + span, min_points=MIN_LEVEL_POINTS, widen="after")
    b = loss_at(view, "train_loss", start, end, min_points=MIN_LEVEL_POINTS, widen="before")
    if a is None or b is None or a == 0:
        return None
    return (a - b) / abs(a)
