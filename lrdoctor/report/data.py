"""What the report shows, computed from diagnoses: plain frozen records, no HTML, no matplotlib.

Kept apart from drawing so figures can be rendered in worker processes from these records alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..downsample import downsample
from ..model import Diagnosis, Finding, Proposal, Severity, Verdict
from ..origin import ORIGIN_FILE
from ..roles import ROLES, TagIndex
from ..runfacts import flatten

#: Display order, label and colour of each role (one palette for every figure in the report).
ROLE_STYLE: dict[str, tuple[str, str]] = {
    "train_loss": ("train loss", "#2563eb"),
    "val_loss": ("val loss", "#ea580c"),
    "val_metric": ("val metric", "#16a34a"),
    "grad_norm": ("grad norm", "#7c3aed"),
    "lr": ("learning rate", "#0891b2"),
}
#: Points per curve in the all-runs overlay (hundreds of runs share one axes).
OVERLAY_POINTS = 300
SEVERITY_COLOR = {"error": "#dc2626", "warning": "#d97706", "info": "#2563eb"}



@dataclass(frozen=True)
class Curve:
    role: str
    tag: str
    steps: np.ndarray  # downsampled, ascending
    values: np.ndarray  # NaN / inf kept
    n_points: int  # before downsampling
    n_nonfinite: int


@dataclass(frozen=True)
class Mark:
    """One finding as drawn: a numbered span and its marker steps on one curve."""

    number: int
    rule: str
    severity: str
    start: float | None
    end: float | None
    steps: tuple[int, ...]
    role: str | None  # the curve the markers go on (the rule's symptom role); others get the span
    style: str = "points"  # the rule's marker style (RuleSpec.markers)


@dataclass(frozen=True)
class RunFigureSpec:
    key: str
    title: str
    step_axis: str
    curves: tuple[Curve, ...]
    marks: tuple[Mark, ...]


@dataclass(frozen=True)
class TagRow:
    tag: str
    role: str | None
    points: int
    first_step: int | None
    last_step: int | None
    last_value: float | None
    nonfinite: int


@dataclass(frozen=True)
class ProposalView:
    proposal: Proposal
    verdicts: tuple[Verdict, ...]


@dataclass(frozen=True)
class FindingView:
    number: int
    finding: Finding
    proposals: tuple[ProposalView, ...]


@dataclass(frozen=True)
class RunView:
    key: str  # html id
    diagnosis: Diagnosis
    severity_rank: int  # 0 none, 1 info, 2 warning, 3 error
    tags: tuple[TagRow, ...]
    hparams: tuple[tuple[str, str], ...]
    findings: tuple[FindingView, ...]
    verdicts: tuple[Verdict, ...] | None  # None: no verification results for this run
    counts: dict[str, int]
    max_step: int | None
    best_val_loss: float | None
    final_train_loss: float | None
    figure: RunFigureSpec | None = field(default=None, compare=False)
    figure_skipped: bool = False  # not drawn because of the report's figure cap
    overlay: tuple[Curve | None, Curve | None] = (None, None)  # train, val thinned for the sweep plot
    #: where ``hparams`` came from: "" for the log's own hparams, else a label such as the workload config
    hparams_origin: str = ""

    @property
    def run(self):
        return self.diagnosis.run


def short(value: Any, limit: int = 120) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def final_value(values: np.ndarray) -> float | None:
    """A robust 'where it ended': median of the last 5% of points (at least 5), NaN if it ended non-finite."""
    if len(values) == 0:
        return None
    tail = values[-max(5, len(values) // 20):]
    if not np.isfinite(tail[-1]):
        return float("nan")
    tail = tail[np.isfinite(tail)]
    return float(np.median(tail))


def best_value(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite.min()) if len(finite) else None


def tag_table(index: TagIndex, roles: Mapping[str, str]) -> tuple[TagRow, ...]:
    """One row per tag (points, step range, last value, non-finite count), role tags first."""
    role_of = {tag: role for role, tag in roles.items()}
    out = []
    for tag in index.tags:
        r = index.rows(tag)
        st, va = index.steps[r], index.values[r]
        out.append(TagRow(tag, role_of.get(tag), len(r), int(st.min()), int(st.max()), float(va[-1]),
                          int((~np.isfinite(va)).sum())))
    rank = {r: i for i, r in enumerate(ROLES)}
    out.sort(key=lambda t: rank.get(t.role, len(ROLES)))
    return tuple(out)


def _marks(findings: tuple[Finding, ...], roles: Mapping[str, str]) -> tuple[Mark, ...]:
    out = []
    for i, f in enumerate(findings, 1):
        role = f.symptom_role
        if role not in roles:
            role = "train_loss" if "train_loss" in roles else None
        # the rule's own marker style only on its symptom's curve, not on the fallback
        style = f.markers if role == f.symptom_role else "points"
        out.append(Mark(i, f.rule, f.severity.value, f.start_step, f.end_step, tuple(f.steps), role, style))
    return tuple(out)


def run_curves(diag: Diagnosis, max_points: int, roles=tuple(ROLE_STYLE), index: TagIndex | None = None) -> tuple[Curve, ...]:
    index = index or TagIndex(diag.run.scalars)
    curves = []
    for role in roles:
        tag = diag.roles.get(role)
        if tag is None:
            continue
        ser = index.series(tag)
        steps, values = ser.steps, ser.values
        if len(steps) == 0:
            continue
        ds, dv = downsample(steps, values, max_points)
        curves.append(Curve(role, tag, ds, dv, len(steps), int((~np.isfinite(values)).sum())))
    return tuple(curves)


def build_run_view(
    index: int,
    diag: Diagnosis,
    verdicts: Sequence[Verdict] | None,
    *,
    max_points: int,
    with_figure: bool,
) -> RunView:
    run = diag.run
    key = f"run-{index}"
    run_verdicts = None if verdicts is None else tuple(verdicts)
    by_proposal: dict[tuple[str, str], list[Verdict]] = {}
    for v in run_verdicts or ():
        by_proposal.setdefault((v.rule, v.proposal_id), []).append(v)
    findings = tuple(
        FindingView(
            i,
            f,
            tuple(ProposalView(p, tuple(by_proposal.get((f.rule, p.id), ()))) for p in sorted(f.proposals, key=lambda p: p.rank)),
        )
        for i, f in enumerate(diag.findings, 1)
    )
    counts = {s.value: sum(1 for f in diag.findings if f.severity == s) for s in Severity}
    worst = diag.worst
    index = TagIndex(run.scalars)
    curves = run_curves(diag, max_points if with_figure else OVERLAY_POINTS,
                        tuple(ROLE_STYLE) if with_figure else ("train_loss", "val_loss"), index)
    train = next((c for c in curves if c.role == "train_loss"), None)
    val = next((c for c in curves if c.role == "val_loss"), None)
    max_step = int(run.scalars["step"].max()) if not run.scalars.empty else None
    hparams, hparams_origin = run.hparams, ""
    config = run.origin.config if run.origin is not None else None
    if not hparams and config:
        # A built-in workload logs no hparams of its own; its config is what the user would look for.
        hparams, hparams_origin = config, f"workload config ({ORIGIN_FILE})"
    figure = None
    if with_figure and curves:
        figure = RunFigureSpec(key, run.name, run.step_axis, curves, _marks(diag.findings, diag.roles))
    return RunView(
        key=key,
        diagnosis=diag,
        severity_rank=0 if worst is None else worst.rank + 1,
        tags=tag_table(index, diag.roles),
        hparams=tuple((k, short(v)) for k, v in sorted(flatten(hparams).items())),
        hparams_origin=hparams_origin,
        findings=findings,
        verdicts=run_verdicts,
        counts=counts,
        max_step=max_step,
        best_val_loss=best_value(index.series(val.tag).values) if val is not None else None,
        final_train_loss=final_value(index.series(train.tag).values) if train is not None else None,
        figure=figure,
        figure_skipped=not with_figure,
        overlay=(_thin(train), _thin(val)),
    )


def _thin(c: Curve | None) -> Curve | None:
    if c is None or c.n_points <= OVERLAY_POINTS:
        return c
    steps, values = downsample(c.steps, c.values, OVERLAY_POINTS)
    return Curve(c.role, c.tag, steps, values, c.n_points, c.n_nonfinite)
