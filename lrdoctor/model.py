"""Frozen data types that flow between lrdoctor's stages.

readers -> :class:`Run` -> roles (:class:`RoleView`) -> rules -> :class:`Finding`
-> :class:`Proposal` -> verification (:class:`Verdict`) -> output.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .origin import RunOrigin
from .patch import ConfigPatch

#: Columns (and dtypes) of the canonical tidy scalar table held by every Run.
SCALAR_COLUMNS = ("tag", "step", "wall_time", "value")


def empty_scalars() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "tag": pd.Series([], dtype=object),
            "step": pd.Series([], dtype=np.int64),
            "wall_time": pd.Series([], dtype=np.float64),
            "value": pd.Series([], dtype=np.float64),
        }
    )


def make_scalars(tag, step, wall_time, value) -> pd.DataFrame:
    """Build a canonical scalar table from array-likes (no reordering, NaN/inf kept as is).

    ``wall_time`` may be None (formats that do not log time): the column is then all NaN.
    """
    step = np.asarray(step, dtype=np.int64)
    value = np.asarray(value, dtype=np.float64)
    if wall_time is None:
        wall_time = np.full(len(step), np.nan)
    wall_time = np.asarray(wall_time, dtype=np.float64)
    if np.isscalar(tag) or isinstance(tag, str):
        tag = np.full(len(step), tag, dtype=object)
    return pd.DataFrame(
        {
            "tag": np.asarray(tag, dtype=object),
            "step": step,
            "wall_time": wall_time,
            "value": value,
        }
    )


class Severity(str, enum.Enum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def rank(self) -> int:
        return {"info": 0, "warning": 1, "error": 2}[self.value]


@dataclass(frozen=True)
class Annotation:
    """Something a reader noticed and kept (never by deleting data): a restart, repeated steps,
    a skipped corrupt record, a non-numeric cell, a Git LFS pointer instead of an event file."""

    kind: str  # e.g. "restart", "duplicate_steps", "corrupt_record", "truncated", "non_numeric"
    message: str
    path: str | None = None
    location: str | None = None  # "byte 1234", "row 17", "step 5000"


@dataclass(frozen=True)
class Run:
    """One training run: its scalars as a tidy table plus what is known about it.

    ``scalars`` has exactly the columns ``tag`` (str, or a pandas categorical of str: readers
    use one to avoid a Python string per point), ``step`` (int64), ``wall_time`` (float64,
    seconds since the epoch; NaN when the format has none) and ``value`` (float64, NaN and +-inf
    exactly as logged). Rows keep the order the points were logged in, merged across files by
    step (stable), so repeated steps of a resumed run stay visible.
    """

    name: str
    source: str
    format: str
    scalars: pd.DataFrame = field(default_factory=empty_scalars, compare=False)
    hparams: dict[str, Any] = field(default_factory=dict, compare=False)
    step_axis: str = "step"  # "step", or "epoch" for Keras-style logs
    annotations: tuple[Annotation, ...] = ()
    #: What produced the run when known, e.g. the parsed ``lrdoctor-run.json`` of a built-in
    #: workload (workload name, config, labels); used by verification to rerun it.
    origin: RunOrigin | None = field(default=None, compare=False)  # a mapping is parsed into one

    def __post_init__(self) -> None:
        if self.origin is not None and not isinstance(self.origin, RunOrigin):
            object.__setattr__(self, "origin", RunOrigin.parse(self.origin))
    #: The tracker's own run summary when the format keeps one (W&B: the last value of each
    #: key, and what the script set in ``run.summary``); never used to diagnose, only shown. A
    #: mapping: the W&B reader decodes it when first used.
    summary: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def tags(self) -> list[str]:
        return list(pd.unique(self.scalars["tag"]))

    def series(self, tag: str) -> pd.DataFrame:
        """The rows of one tag, in logged order."""
        return self.scalars[self.scalars["tag"] == tag]


@dataclass(frozen=True)
class Series:
    """One metric as plain arrays, steps ascending (stable sort; repeats kept)."""

    tag: str
    steps: np.ndarray  # int64
    values: np.ndarray  # float64
    wall_time: np.ndarray | None = None
    #: optimizer steps each point averages (an epoch mean: lrdoctor.averaging); 1 = one step's value
    averages: float = 1.0
    #: its tag or the run's step axis says its points are epoch means, even when how many steps
    #: each averages is unknown (a Keras log: ``averages`` stays 1); lrdoctor.averaging
    epoch_means: bool = False

    def __len__(self) -> int:
        return len(self.steps)


@dataclass(frozen=True)
class SeriesFamily:
    """A multi-tag role: one series per member (e.g. per-layer grad norms), in model order.

    ``names`` are the members' own names (the parameter name a tag was logged under);
    ``order`` says how the model order was taken: "logged" (the writer kept the order the
    script logged them in) or "natural" (the writer sorted its keys: names sorted with their
    numbers compared as numbers, so ``layers.10`` follows ``layers.9``).
    """

    role: str
    names: tuple[str, ...]
    members: tuple[Series, ...]
    order: str = "logged"

    def __len__(self) -> int:
        return len(self.members)


@dataclass(frozen=True)
class Proposal:
    id: str
    kind: str
    summary: str
    rationale: str
    config: ConfigPatch  # a mapping is accepted and validated into one
    code: str
    rank: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "config", ConfigPatch.of(self.config))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "summary": self.summary,
            "rationale": self.rationale,
            "config": self.config.to_dict(),
            "code": self.code,
            "rank": self.rank,
        }


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: Severity
    start_step: int | None
    end_step: int | None
    steps: tuple[int, ...]
    message: str
    evidence: dict[str, Any]
    proposals: tuple[Proposal, ...] = ()
    code: str | None = None  # the rule's code, e.g. LRD001
    title: str | None = None
    # What the rule's file declares for the later stages (see lrdoctor.engine.spec.RuleSpec), so
    # the report and verify need no knowledge of particular rules. Not part of to_dict().
    symptom_role: str | None = None  # the role whose curve shows the symptom
    unstable_in_sweep: bool = False  # the run trained unstably (left out of an LR sweep's stable range)
    markers: str = "points"  # how the marked steps are drawn ("points", "best-and-latest")
    judged: str = "trend"  # how its rule judges the symptom: "event", "onset", "trend" (verify's fork)
    raises_lr: bool = False  # a higher LR may cure it (verify's LR ladder may climb upwards)
    #: why a proposal could not be made ("clip_grad_norm: ValueError: ..."), shown like a skipped rule
    proposal_errors: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity.value,
            "start_step": self.start_step,
            "end_step": self.end_step,
            "steps": list(self.steps),
            "message": self.message,
            "evidence": self.evidence,
            "proposals": [p.to_dict() for p in self.proposals],
            # only when a planner failed, so the shape of an ordinary finding stays as it was
            **({"proposal_errors": list(self.proposal_errors)} if self.proposal_errors else {}),
        }


@dataclass(frozen=True)
class SkippedRule:
    rule: str
    reason: str  # e.g. "missing role: val_loss"


@dataclass(frozen=True)
class Diagnosis:
    """The result of diagnosing one run."""

    run: Run
    findings: tuple[Finding, ...]
    skipped_rules: tuple[SkippedRule, ...]
    roles: dict[str, str]  # role -> tag used

    @property
    def worst(self) -> Severity | None:
        if not self.findings:
            return None
        return max((f.severity for f in self.findings), key=lambda s: s.rank)


class VerdictKind(str, enum.Enum):
    CONFIRMED = "CONFIRMED"
    REJECTED = "REJECTED"
    INCONCLUSIVE = "INCONCLUSIVE"
    ERROR = "ERROR"


@dataclass(frozen=True)
class SeedCurve:
    """One rerun's curve of one metric, downsampled for display (NaN/inf kept)."""

    seed: int
    steps: tuple[float, ...]
    values: tuple[float, ...]


@dataclass(frozen=True)
class RerunCurves:
    """What verify hands the report to draw: one metric of a verdict's reruns, per arm and seed.
    Its JSON form (``to_json``) is what ``verify --json`` writes under ``details["curves"]``."""

    metric: str
    baseline: tuple[SeedCurve, ...] = ()
    candidate: tuple[SeedCurve, ...] = ()

    def to_json(self) -> dict[str, Any]:
        def arm(curves: tuple[SeedCurve, ...]) -> dict[str, Any]:
            return {str(c.seed): {"steps": list(c.steps), "values": list(c.values)} for c in curves}

        return {"metric": self.metric, "baseline": arm(self.baseline), "candidate": arm(self.candidate)}

    @classmethod
    def from_json(cls, d: Any) -> RerunCurves | None:
        """The record back from its JSON form (None when ``d`` is not that shape; a verdicts file
        is checked against it before, see lrdoctor.report.untrusted)."""
        if not isinstance(d, dict):
            return None

        def arm(x: Any) -> tuple[SeedCurve, ...]:
            if not isinstance(x, dict):
                return ()
            return tuple(SeedCurve(int(seed), tuple(float(s) for s in c["steps"]), tuple(float(v) for v in c["values"]))
                         for seed, c in x.items() if isinstance(c, dict) and "steps" in c and "values" in c)

        return cls(str(d.get("metric") or "loss"), arm(d.get("baseline")), arm(d.get("candidate")))


@dataclass(frozen=True)
class Verdict:
    rule: str
    proposal_id: str
    kind: str
    verdict: VerdictKind
    seeds: tuple[int, ...]
    p_value: float | None
    ci: tuple[float, float] | None
    p_better: float | None
    reason: str
    details: dict[str, Any] = field(default_factory=dict, compare=False)  # statistics per seed, rerun paths
    #: the target metric's reruns, and the symptom's series when that is another one (for the report)
    curves: RerunCurves | None = field(default=None, compare=False)
    symptom_curves: RerunCurves | None = field(default=None, compare=False)

    def details_json(self) -> dict[str, Any]:
        """``details`` with the curves in their JSON form, as ``verify --json`` writes them."""
        out = dict(self.details)
        for key, c in (("curves", self.curves), ("symptom_curves", self.symptom_curves)):
            if c is not None:
                out[key] = c.to_json()
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "proposal_id": self.proposal_id,
            "kind": self.kind,
            "verdict": self.verdict.value,
            "seeds": list(self.seeds),
            "p_value": self.p_value,
            "ci": list(self.ci) if self.ci is not None else None,
            "p_better": self.p_better,
            "reason": self.reason,
        }
