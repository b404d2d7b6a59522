"""How long a rerun may run before it is killed as hung.

The original run's logs usually say how fast it trained (``wall_time`` per point). A rerun of
``budget`` steps then gets ``FACTOR`` times the time the original took for that many steps, and
never less than ``FLOOR_S``: reruns share the machine (several per core group) and start cold
(imports, data generation), so a tight limit would kill healthy reruns. ``--rerun-timeout``
overrides it; without wall times and without the flag there is no limit.
"""

from __future__ import annotations

import numpy as np

from ..model import Run

FACTOR = 5.0
FLOOR_S = 120.0


def seconds_per_step(run: Run) -> float | None:
    """The original run's training speed from its logged wall times (None when it has none)."""
    df = run.scalars
    wall = df["wall_time"].to_numpy(dtype=np.float64)
    ok = np.isfinite(wall)
    if ok.sum() < 2:
        return None
    steps = df["step"].to_numpy()[ok]
    span_steps = int(steps.max() - steps.min())
    span_s = float(wall[ok].max() - wall[ok].min())
    if span_steps <= 0 or span_s <= 0:
        return None
    return span_s / span_steps


def rerun_timeout(run: Run, budget_steps: int, flag_s: float | None) -> float | None:
    """Seconds before a rerun of ``budget_steps`` is killed; None = no limit.

    ``flag_s`` (``--rerun-timeout``): a positive value is the limit, 0 means none, None derives it.
    """
    if flag_s is not None:
        return float(flag_s) if flag_s > 0 else None
    sps = seconds_per_step(run)
    if sps is None:
        return None
    return max(FLOOR_S, FACTOR * sps * budget_steps)
