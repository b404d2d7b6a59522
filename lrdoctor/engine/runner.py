"""Run rules on one run's RoleView -> Diagnosis.

A rule whose required role is missing is skipped ("missing role: val_loss"), never a false
alarm; a detector that raises is logged and listed as skipped with its error, never a crash.
"""

from __future__ import annotations

import logging
import math
import string
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ..averaging import with_averaging
from ..detectors.base import Evidence
from ..model import Diagnosis, Finding, Series, SeriesFamily, Severity, SkippedRule
from ..roles import FAMILY_ROLES, RoleView
from .registry import get_detector
from .spec import RuleSpec

log = logging.getLogger(__name__)


class _Lenient(string.Formatter):
    """Fills a message template; a NaN/inf/None value prints as such whatever the format spec."""

    def format_field(self, value: Any, format_spec: str) -> str:
        if value is None:
            return "n/a"
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        return super().format_field(value, format_spec)


def format_message(template: str, values: Mapping[str, Any]) -> str:
    return _Lenient().vformat(template, (), dict(values))


def _plain(value: Any) -> Any:
    """numpy scalars -> Python numbers, so evidence serialises and compares plainly."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class _SeriesCache:
    """Each role's series extracted once per run (from the view's shared tag index), with
    repeated steps resolved, for every rule that asks for it."""

    def __init__(self, view: RoleView):
        self.view = view
        self._cache: dict[str, Series | SeriesFamily | None] = {}

    def get(self, role: str) -> Series | SeriesFamily | None:
        if role not in self._cache:
            if role in FAMILY_ROLES:
                # a multi-tag role (per-layer grad norms): every member, one point per step each
                fam = self.view.family(role)
                self._cache[role] = fam if fam is not None and any(len(m) for m in fam.members) else None
                return self._cache[role]
            s = self.view.deduped(role)
            self._cache[role] = with_averaging(self.view, s) if s is not None and len(s) else None
        return self._cache[role]


def _axis_filled(value: Any, axis: str) -> Any:
    return value.replace("{axis}", axis) if isinstance(value, str) else value


def make_finding(rule: RuleSpec, ev: Evidence, view: RoleView) -> Finding:
    axis = view.run.step_axis
    # a detector's prose (e.g. evidence "detail") may name the step axis as {axis}: steps, or
    # epochs; fill it in the evidence itself, which JSON and the HTML page show as it is
    values = {k: _axis_filled(_plain(v), axis) for k, v in ev.values.items()}
    fill = {
        **values,
        "start_step": ev.start_step,
        "end_step": ev.end_step,
        "n_steps": len(ev.steps),
        "axis": axis,
        **{f"{role}_tag": tag for role, tag in view.roles.items()},
    }
    try:
        message = format_message(rule.message, fill)
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        log.warning("rule %s: message template failed (%s); using the title", rule.name, exc)
        message = rule.title
    severity = rule.severity
    if ev.severity is not None and Severity(ev.severity).rank < severity.rank:
        severity = Severity(ev.severity)
    return Finding(
        rule=rule.name,
        severity=severity,
        start_step=None if ev.start_step is None else int(ev.start_step),
        end_step=None if ev.end_step is None else int(ev.end_step),
        steps=tuple(int(s) for s in ev.steps),
        message=message,
        evidence=values,
        code=rule.code,
        title=rule.title,
        symptom_role=rule.symptom,
        unstable_in_sweep=rule.unstable_in_sweep,
        markers=rule.markers,
        judged=rule.judged,
        raises_lr=rule.raises_lr,
    )


def run_rule(rule: RuleSpec, view: RoleView, cache: _SeriesCache | None = None) -> Finding | SkippedRule | None:
    """One rule on one run: a Finding, a SkippedRule, or None (checked, nothing found)."""
    cache = cache or _SeriesCache(view)
    missing = [r for r in rule.requires if r not in view]
    if missing:
        return SkippedRule(rule.name, f"missing role: {', '.join(missing)}")
    args: dict[str, Series | SeriesFamily | None] = {}
    for role in rule.requires:
        s = cache.get(role)
        if s is None:
            return SkippedRule(rule.name, f"no points for role: {role}")
        args[role] = s
    for role in rule.optional:
        args[role] = cache.get(role)
    try:
        ev = get_detector(rule.kind)(**args, **rule.params)
    except Exception as exc:  # noqa: BLE001 -- one broken detector must not sink the diagnosis
        log.warning("rule %s failed on run %s: %s: %s", rule.name, view.run.name, type(exc).__name__, exc)
        log.debug("rule %s traceback", rule.name, exc_info=True)
        return SkippedRule(rule.name, f"detector error: {type(exc).__name__}: {exc}")
    if ev is None:
        return None
    return make_finding(rule, ev, view)


def run_rules(
    view: RoleView, rules: Iterable[RuleSpec], *, proposer: Any = None
) -> Diagnosis:
    """Every rule on one run. ``proposer(finding, view, rule)`` attaches proposals: it returns
    them, or ``(proposals, errors)`` with one line per planner that failed (``rule`` is the
    finding's RuleSpec: which proposal kinds it offers and how they are ranked)."""
    rules = list(rules)
    findings: list[Finding] = []
    skipped: list[SkippedRule] = []
    cache = _SeriesCache(view)
    for rule in rules:
        out = run_rule(rule, view, cache)
        if isinstance(out, Finding):
            findings.append(out)
        elif isinstance(out, SkippedRule):
            skipped.append(out)
    fired = {f.rule for f in findings}
    by_name = {r.name: r for r in rules}
    findings = [f for f in findings if not (set(by_name[f.rule].superseded_by) & fired)]
    if proposer is not None:
        findings = [_with_proposals(f, view, proposer, by_name[f.rule]) for f in findings]
    findings.sort(key=lambda f: (-f.severity.rank, f.start_step if f.start_step is not None else -1, f.rule))
    return Diagnosis(run=view.run, findings=tuple(findings), skipped_rules=tuple(skipped), roles=dict(view.roles))


def _with_proposals(finding: Finding, view: RoleView, proposer: Any, rule: RuleSpec) -> Finding:
    from dataclasses import replace

    if not rule.proposals:
        return finding
    try:
        out = proposer(finding, view, rule)
    except Exception as exc:  # noqa: BLE001 -- proposals are an extra; the finding stands alone
        log.debug("proposals for %s failed", finding.rule, exc_info=True)
        # shown with the finding (terminal, JSON, HTML), as a broken detector becomes a skipped rule
        return replace(finding, proposal_errors=(f"{type(exc).__name__}: {exc}",))
    proposals, errors = out if isinstance(out, tuple) else (out, ())
    return replace(finding, proposals=tuple(proposals or ()), proposal_errors=tuple(errors))
