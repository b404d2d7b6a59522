"""Replay a finished log through the live engine, point by point, as a training would feed it.

Used to check that streaming gives offline answers (tests, ``benchmarks/live_equivalence.py``):
every point is fed in the order it was logged and the rules are checked each time the step
passes another ``check_every`` steps, then once more when the log ends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..model import Finding, Run
from .engine import EventKind, LiveEngine, LiveEvent


@dataclass(frozen=True)
class Replay:
    events: tuple[LiveEvent, ...]
    final: dict[str, Finding]  # the findings held after the log ended, by rule
    checks: int

    def reported(self) -> dict[str, LiveEvent]:
        """The event that reported each final finding (its last ``new``: an earlier one may have
        been withdrawn in between)."""
        out: dict[str, LiveEvent] = {}
        for e in self.events:
            if e.kind is EventKind.NEW and e.finding.rule in self.final:
                out[e.finding.rule] = e
        return out


def replay(run: Run, check_every: int, *, rules: Sequence[Any] | None = None,
           overrides: Mapping[str, Mapping[str, Any]] | None = None,
           role_overrides: Mapping[str, str] | None = None) -> Replay:
    engine = LiveEngine(name=run.name, source=run.source, rules=rules, overrides=overrides,
                        role_overrides=role_overrides, step_axis=run.step_axis, hparams=dict(run.hparams),
                        origin=run.origin, proposals=False)
    sc = run.scalars
    tags = sc["tag"].astype(str).to_numpy()
    steps = sc["step"].to_numpy(dtype=np.int64)
    values = sc["value"].to_numpy(dtype=np.float64)
    events: list[LiveEvent] = []
    checks = 0
    next_check = int(steps[0]) + check_every if len(steps) else 0
    for tag, step, value in zip(tags, steps, values, strict=True):
        if step >= next_check:  # the points of steps before this one are all in
            events.extend(engine.check())
            checks += 1
            next_check = int(step) + check_every
        engine.add(int(step), {tag: float(value)})
    events.extend(engine.finish())
    return Replay(tuple(events), dict(engine.current), checks + 1)
