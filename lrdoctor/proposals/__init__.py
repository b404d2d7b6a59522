"""Findings -> ranked, concrete proposals (config patch + PyTorch code), computed from the run.

``propose(finding, view, rule)`` reads the run's own numbers (:mod:`.context`), plans the proposal
kinds the rule's file lists (:mod:`.kinds`, a builder per kind), ranks them by the rule's
``proposal_policy`` (:mod:`.policy`), and returns :class:`~lrdoctor.model.Proposal` objects
best-first (``rank`` 1 = best). Ids are ``"{rule}:{kind}"`` (``":{variant}"`` appended for the
decay-schedule family), stable across runs and unique per finding. No torch is imported here.
"""

from __future__ import annotations

import functools
import logging

from ..engine.spec import RuleSpec, load_rules, suggest
from ..errors import RuleSpecError
from ..model import Finding, Proposal
from ..roles import RoleView
from .codegen import snippet
from .common import Draft
from .context import build_context
from .kinds import KINDS, Situation, default_options
from .policy import PLAIN, POLICIES
from .units import epochs_to_steps

__all__ = ["propose", "propose_with_errors", "KINDS", "POLICIES", "check_rules"]

log = logging.getLogger(__name__)


def check_rules(rules: list[RuleSpec]) -> None:
    """Every rule's proposal kinds and policy exist (a RuleSpecError naming the file otherwise)."""
    for rule in rules:
        for kind in rule.proposals:
            if kind not in KINDS:
                raise RuleSpecError(f"unknown proposal kind {kind!r}{suggest(kind, KINDS)} (kinds: {', '.join(KINDS)})",
                                    path=rule.path)
        policy = rule.proposal_policy
        if policy is not None and policy not in POLICIES:
            raise RuleSpecError(f"unknown proposal_policy {policy!r}{suggest(policy, POLICIES)} "
                                f"(policies: {', '.join(POLICIES)})", path=rule.path)


@functools.cache
def _builtin_rules() -> dict[str, RuleSpec]:
    return {r.name: r for r in load_rules()}


def propose(finding: Finding, view: RoleView, rule: RuleSpec | None = None) -> list[Proposal]:
    """Ranked proposals for one finding, best first. ``rule`` is the finding's rule (which kinds
    it offers and its policy); by default the built-in rule of that name (none: no proposals).
    A kind whose planner fails is left out with a warning (:func:`propose_with_errors` returns
    why)."""
    proposals, errors = propose_with_errors(finding, view, rule)
    for e in errors:
        log.warning("proposal for %s failed: %s", finding.rule, e)
    return proposals


def propose_with_errors(finding: Finding, view: RoleView,
                        rule: RuleSpec | None = None) -> tuple[list[Proposal], list[str]]:
    """:func:`propose`, and one "kind: Error: message" line per planner that failed: the engine
    shows them with the finding, the way a broken detector becomes a skipped rule."""
    rule = rule if rule is not None else _builtin_rules().get(finding.rule)
    if rule is None or not rule.proposals:
        return [], []
    if finding.evidence.get("kind") == "skipped_steps":
        # Non-finite grad norms that mixed precision's GradScaler skipped: the scaler already
        # handled them, and clipping or a lower LR would only slow a healthy run.
        return [], []
    policy = POLICIES.get(rule.proposal_policy or "", PLAIN)
    ctx = build_context(finding, view, policy.needs)
    situation = Situation(finding, ctx, view, rule.symptom)
    drafts: list[tuple[float, int, Draft]] = []
    errors: list[str] = []
    i = 0
    for kind in rule.proposals:
        if kind not in KINDS:
            errors.append(f"{kind}: unknown proposal kind (rule file {rule.path})")
            continue
        ranker = policy.ranks.get(kind)
        try:
            options = ranker(situation) if ranker is not None else default_options(kind, situation)
        except Exception as exc:  # noqa: BLE001 -- one bad planner must not cost the finding the others
            log.debug("proposal planner %s failed", kind, exc_info=True)
            errors.append(f"{kind}: {type(exc).__name__}: {exc}")
            continue
        for build, score in options:
            try:
                d = build()
            except Exception as exc:  # noqa: BLE001 -- one bad builder must not cost the finding the others
                log.debug("proposal builder %s failed", kind, exc_info=True)
                errors.append(f"{kind}: {type(exc).__name__}: {exc}")
                d = None
            if d is not None:
                drafts.append((score, i, d))
            i += 1
    drafts.sort(key=lambda t: (-t[0], t[1]))
    out: list[Proposal] = []
    seen: set[str] = set()
    for rank, (_, _, d) in enumerate(drafts, start=1):
        pid = f"{finding.rule}:{d.kind}" + (f":{d.variant}" if d.variant else "")
        if pid in seen:
            continue
        seen.add(pid)
        config, summary, rationale, unit, every = d.config, d.summary, d.rationale, ctx.unit, ctx.eval_every
        if ctx.unit == "epoch":
            if ctx.steps_per_epoch:
                spe = ctx.steps_per_epoch
                converted = epochs_to_steps(config, spe)
                if converted != config:
                    config = converted
                    rationale += f" Counts in the patch are optimizer steps ({spe} per epoch of the log)."
                unit = "step"
            else:
                rationale += (" The log counts epochs and its steps per epoch are unknown, so the patch's "
                              "counts are epochs: step the scheduler once per epoch.")
        header = summary + (f"\n{d.header}" if d.header else "")
        if ctx.unit == "epoch" and unit == "step" and config != d.config:
            header += f"\nCounts below are optimizer steps: {ctx.steps_per_epoch} per epoch of the log."
        code = snippet(config, header=header, unit=unit, eval_every=every, axis=ctx.unit,
                       steps_per_epoch=ctx.steps_per_epoch, epoch_base=ctx.epoch_base)
        out.append(Proposal(id=pid, kind=d.kind, summary=summary, rationale=rationale,
                            config=config, code=code, rank=rank))
    return out, errors
