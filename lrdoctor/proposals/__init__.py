"""Findings -> ranked, concrete proposals (config patch + PyTorch code), computed from the run.

``propose(finding, view)`` reads the run's own numbers (:mod:`.context`), asks the builders that
fit the finding's rule for drafts, scores each by how strongly the run backs it, and returns
:class:`~lrdoctor.model.Proposal` objects best-first (``rank`` 1 = best). Ids are
``"{rule}:{kind}"`` (``":{variant}"`` appended for the decay-schedule family), stable across runs
and unique per finding. Unknown rules get no proposals. No torch is imported here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from ..model import Finding, Proposal
from ..roles import RoleView
from . import lr as lr_kinds
from . import regularise, restarts, schedules
from .codegen import snippet
from .common import Draft, relative_drop
from .context import RunContext, build_context
from .spikes import recovered, spike_pattern
from .units import epochs_to_steps

__all__ = ["propose", "RULES", "KINDS"]

log = logging.getLogger(__name__)

#: Every proposal kind this package produces.
KINDS = ("lower_peak_lr", "add_warmup", "add_decay_schedule", "clip_grad_norm", "weight_decay", "adamw",
         "early_stop", "rollback_skip", "raise_lr", "rescale_lr_for_batch", "restore_scheduler_state", "rewarmup",
         "lower_restart_lr", "longer_restart_period")

Plan = list[tuple[Callable[[], Draft | None], float]]


def _early(ctx: RunContext, share: float = 0.2) -> bool:
    """Whether the finding falls in the phase a warmup acts on: the first ``share`` of the run
    and, for Adam-type (or unknown) optimizers, within ten times the 2/(1-beta2) steps their
    second-moment estimate needs to settle (beta2 0.999 assumed when unknown)."""
    since = ctx.onset - ctx.first_step
    if since >= share * ctx.total_steps:
        return False
    if ctx.optimizer is None or ctx.adaptive:
        b2 = ctx.beta2 if ctx.beta2 is not None and ctx.beta2 < 1 else 0.999
        return since < 10 * 2 / (1 - b2)
    return True


def _grad_jump(ctx: RunContext, over: float) -> bool | None:
    """Whether the grad norm at the finding exceeded ``over`` times the stable p99."""
    if ctx.grad_stable is None or ctx.grad_at_onset is None:
        return None
    return ctx.grad_at_onset > over * ctx.grad_stable.p99


def _divergence(f: Finding, ctx: RunContext, view: RoleView) -> Plan:
    jump = _grad_jump(ctx, 3.0)
    return [
        (lambda: lr_kinds.lower_peak_lr(f, ctx, lr_kinds.EDGE_SAFETY), 0.9),
        (lambda: lr_kinds.add_warmup(f, ctx), 0.8 if _early(ctx) and not ctx.existing_warmup else 0.45),
        (lambda: regularise.clip_grad_norm(f, ctx), 0.75 if jump else 0.5 if jump is not None else 0.3),
        (lambda: lr_kinds.rescale_lr_for_batch(f, ctx, lr_kinds.EDGE_SAFETY), 0.2),
    ]


def _loss_spike(f: Finding, ctx: RunContext, view: RoleView) -> Plan:
    count = f.evidence.get("count")
    n = int(count) if isinstance(count, (int, float)) and count > 0 else (len(set(f.steps)) or 1)
    jump = _grad_jump(ctx, 2.0)
    pat = spike_pattern(f, ctx, view)
    if pat.isolated:
        # Bad batches: their loss is logged before any update, so only skipping them removes it.
        clip, skip = 0.6, 0.92
    elif pat.unstable_updates:
        clip, skip = 0.92, 0.7
    else:
        clip, skip = (0.9 if jump else 0.65 if jump is not None else 0.4), 0.75
    plan: Plan = [
        (lambda: _why(regularise.clip_grad_norm(f, ctx), pat.why_clip(ctx) if clip > skip and
                      pat.unstable_updates else ""), clip),
        (lambda: _why(regularise.rollback_skip(f, ctx), pat.why_rollback(ctx) if skip > clip else ""), skip),
        (lambda: lr_kinds.lower_peak_lr(f, ctx, 0.5), 0.85 if n >= 5 else 0.5),
    ]
    if _early(ctx):
        plan.append((lambda: lr_kinds.add_warmup(f, ctx), 0.8))
    return plan


def _why(d: Draft | None, note: str) -> Draft | None:
    return replace(d, rationale=d.rationale + note) if d is not None and note else d


def _plateau(f: Finding, ctx: RunContext, view: RoleView) -> Plan:
    # The detector's own verdict when it gives one (evidence kind "never_moves" vs a stall).
    kind = f.evidence.get("kind")
    never = (kind == "never_moves") if isinstance(kind, str) and kind else None
    if never is None:
        end = f.end_step if f.end_step is not None else ctx.last_step
        drop = relative_drop(view, ctx.first_step, ctx.onset, end)
        never = drop is not None and drop < 0.05
    if never:
        moved = "the train loss never moved"
        factor, why = lr_kinds.never_moved_raise(ctx)
        return [
            (lambda: lr_kinds.raise_lr(f, ctx, factor, f"{moved} (plateau from {ctx.unit} {ctx.onset})", why), 0.9),
            (lambda: schedules.one_cycle(f, ctx, factor), 0.6),
        ]
    if ctx.lr_decayed:
        return [
            (lambda: schedules.warm_restarts(f, ctx), 0.8),
            (lambda: schedules.cosine(f, ctx), 0.5),
        ]
    return [
        (lambda: schedules.reduce_on_plateau(f, ctx), 0.9 if ctx.eval_every else 0.75),
        (lambda: schedules.cosine(f, ctx), 0.85),
        (lambda: schedules.multistep(f, ctx), 0.7),
        (lambda: schedules.warm_restarts(f, ctx), 0.4),
    ]


def _overfitting(f: Finding, ctx: RunContext, view: RoleView) -> Plan:
    return [
        (lambda: regularise.early_stop(f, ctx, view), 0.9),
        (lambda: regularise.adamw(f, ctx), 0.8),
        (lambda: regularise.weight_decay(f, ctx), 0.7),
    ]


def _exploding(f: Finding, ctx: RunContext, view: RoleView) -> Plan:
    plan: Plan = [
        (lambda: regularise.clip_grad_norm(f, ctx), 0.9),
        (lambda: lr_kinds.lower_peak_lr(f, ctx, 0.5), 0.7),
        (lambda: lr_kinds.rescale_lr_for_batch(f, ctx, 0.5), 0.2),
    ]
    bursts = sorted(set(f.steps))
    if 0 < len(bursts) <= 3 and bool(np.all(np.diff(bursts) >= 10)) and recovered(view, ctx, f):
        # A few separate bursts the run recovered from: bad batches, as for loss spikes.
        plan.append((lambda: regularise.rollback_skip(f, ctx), 0.55))
    if _early(ctx):
        plan.append((lambda: lr_kinds.add_warmup(f, ctx), 0.6))
    return plan


def _vanishing(f: Finding, ctx: RunContext, view: RoleView) -> Plan:
    note = (" Vanishing gradients usually come from the model (saturating activations, depth without "
            "residuals or normalisation, initialisation), which no LR change fixes; a larger LR only "
            "compensates" + (", and little for an adaptive optimizer, which already rescales small "
                             "gradients." if ctx.adaptive else "."))
    g = ctx.grad_stable
    med = ctx.grad_median_in_finding
    # A "before" needs grad norms logged strictly before the onset; at the run's first step the
    # stable-window statistics fall back to the finding's own steps, which are no baseline.
    before = g is not None and ctx.onset > ctx.first_step and not g.whole_run and g.last_step < ctx.onset
    if before:
        ev = f"gradients vanished from {ctx.unit} {ctx.onset}"
        if med is not None:
            ev += f" (median grad norm {med:.2g} there vs {g.p50:.2g} before)"
    else:
        ev = f"gradients were small from the run's first {ctx.unit} ({ctx.onset}), so there is no healthy stretch to compare with"
        thr = f.evidence.get("threshold")
        if med is not None:
            below = f", below the rule's threshold {thr:.2g}" if isinstance(thr, (int, float)) else ""
            ev = (f"gradients were small from the run's first {ctx.unit} ({ctx.onset}): median grad norm "
                  f"{med:.2g} over the finding{below}; there is no healthy stretch before it to compare with")
    return [(lambda: lr_kinds.raise_lr(f, ctx, 3.0, ev, note), 0.4 if ctx.adaptive else 0.6)]


def _no_lr_decay(f: Finding, ctx: RunContext, view: RoleView) -> Plan:
    # The loss stalled at an LR that never decayed: a decay schedule is the fix itself.
    return [
        (lambda: schedules.cosine(f, ctx), 0.9),
        (lambda: schedules.reduce_on_plateau(f, ctx), 0.8 if ctx.eval_every else 0.6),
        (lambda: schedules.multistep(f, ctx), 0.7),
    ]


def _lr_restart(f: Finding, ctx: RunContext, view: RoleView) -> Plan:
    # An accidental restart (a resume): restoring the state is the fix, a re-warmup the fallback
    # when the restart is wanted. A periodic schedule: first the peak, then the cycle length.
    return [
        (lambda: restarts.restore_scheduler_state(f, ctx), 0.9),
        (lambda: restarts.rewarmup(f, ctx), 0.8),
        (lambda: restarts.lower_restart_lr(f, ctx), 0.85),
        (lambda: restarts.longer_restart_period(f, ctx), 0.75),
    ]


#: rule name -> planner (which builders, and how strongly the run's evidence backs each).
RULES: dict[str, Callable[[Finding, RunContext, RoleView], Plan]] = {
    "divergence": _divergence,
    "loss-spike": _loss_spike,
    "plateau": _plateau,
    "overfitting": _overfitting,
    "exploding-gradients": _exploding,
    "vanishing-gradients": _vanishing,
    "no-lr-decay": _no_lr_decay,
    "lr-restart": _lr_restart,
}


def propose(finding: Finding, view: RoleView) -> list[Proposal]:
    """Ranked proposals for one finding, best first (empty for rules it has none for)."""
    planner = RULES.get(finding.rule)
    if planner is None:
        return []
    if finding.evidence.get("kind") == "skipped_steps":
        # Non-finite grad norms that mixed precision's GradScaler skipped: the scaler already
        # handled them, and clipping or a lower LR would only slow a healthy run.
        return []
    ctx = build_context(finding, view)
    drafts: list[tuple[float, int, Draft]] = []
    for i, (build, score) in enumerate(planner(finding, ctx, view)):
        try:
            d = build()
        except Exception:  # one bad builder must not cost the finding its other proposals
            log.warning("proposal builder failed for %s", finding.rule, exc_info=True)
            continue
        if d is not None:
            drafts.append((score, i, d))
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
    return out
