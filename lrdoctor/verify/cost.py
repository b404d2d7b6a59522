"""What a verification cost, in optimizer steps: per verdict (each arm, every rung) and per run
(distinct reruns, a baseline shared by several proposals counted once), against the steps the
original run trained."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..model import Verdict


@dataclass(frozen=True)
class RunCost:
    """What verifying one run cost: distinct reruns (a baseline shared by proposals counts once)
    and the optimizer steps they ran, against the steps the original run trained."""

    reruns: int
    steps: int
    original_steps: int | None

    @property
    def ratio(self) -> float | None:
        return self.steps / self.original_steps if self.original_steps else None

    def to_dict(self) -> dict[str, Any]:
        return {"reruns": self.reruns, "steps": self.steps, "original_steps": self.original_steps,
                "ratio": self.ratio}


def verdict_cost(rungs: Sequence[Verdict], original_steps: int | None) -> dict[str, Any]:
    """``Verdict.details["cost"]``: steps rerun per arm (the candidate arm of every rung tried),
    the total and its ratio to the original run's steps."""
    n = len(rungs[0].seeds) if rungs else 0
    base = int(rungs[0].details.get("steps", {}).get("baseline", 0)) if rungs else 0
    cand = sum(int(v.details.get("steps", {}).get("candidate", 0)) for v in rungs)
    total = base + cand
    return {"baseline_steps": base, "candidate_steps": cand, "total_steps": total,
            "reruns": n * (1 + len(rungs)), "original_steps": original_steps,
            "ratio": total / original_steps if original_steps else None}


def distinct_steps(keys: Iterable[str], steps: Mapping[str, int]) -> int:
    return sum(int(steps.get(k, 0)) for k in set(keys))


def summary_line(costs: Sequence[Any]) -> str | None:
    """The last line of ``lrdoctor verify``'s output (None when nothing was rerun)."""
    costs = [c for c in costs if c is not None]
    if not costs:
        return None
    reruns = sum(c.reruns for c in costs)
    steps = sum(c.steps for c in costs)
    orig = [c.original_steps for c in costs]
    noun = "run" if len(costs) == 1 else "runs"
    if all(orig):
        pct = 100.0 * steps / sum(orig)
        return f"verification: {reruns} reruns, {steps:,} steps = {pct:.1f}% of the original {noun}"
    return f"verification: {reruns} reruns, {steps:,} steps (the original {noun}' length is unknown)"
