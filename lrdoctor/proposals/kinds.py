"""The proposal kinds, keyed by kind: what each builds when a rule lists it.

A rule file lists the kinds it offers (``proposals: [clip_grad_norm, ...]``); only those are
planned. Its ``proposal_policy`` (:mod:`.policy`) says how strongly the run's evidence backs each
kind and may give a kind its own arguments (the LR cut of a divergence, the schedule variants of a
plateau); a listed kind the policy does not rank is planned here with its default arguments, in
the order the rule lists it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property

from ..model import Finding
from ..roles import RoleView
from . import lr as lr_kinds
from . import regularise, restarts, schedules
from .common import Draft
from .context import RunContext
from .spikes import SpikePattern, spike_pattern

#: One candidate: how to build it (called inside the failure guard) and its rank score (0..1).
Option = tuple[Callable[[], Draft | None], float]


class Situation:
    """One finding with the run facts its proposals are planned from (computed once per finding)."""

    def __init__(self, finding: Finding, ctx: RunContext, view: RoleView, symptom: str | None):
        self.finding, self.ctx, self.view, self.symptom = finding, ctx, view, symptom

    @property
    def burst_noun(self) -> str:
        """What the finding's marked steps are, in a rollback's words."""
        return "grad-norm burst" if self.symptom == "grad_norm" else "spike"

    @cached_property
    def pattern(self) -> SpikePattern:
        return spike_pattern(self.finding, self.ctx, self.view)

    def early(self, share: float = 0.2) -> bool:
        """Whether the finding falls in the phase a warmup acts on: the first ``share`` of the run
        and, for Adam-type (or unknown) optimizers, within ten times the 2/(1-beta2) steps their
        second-moment estimate needs to settle (beta2 0.999 assumed when unknown)."""
        ctx = self.ctx
        since = ctx.onset - ctx.first_step
        if since >= share * ctx.total_steps:
            return False
        if ctx.optimizer is None or ctx.adaptive:
            b2 = ctx.beta2 if ctx.beta2 is not None and ctx.beta2 < 1 else 0.999
            return since < 10 * 2 / (1 - b2)
        return True

    def grad_jump(self, over: float) -> bool | None:
        """Whether the grad norm at the finding exceeded ``over`` times the stable p99 (None:
        not known)."""
        ctx = self.ctx
        if ctx.grad_stable is None or ctx.grad_at_onset is None:
            return None
        return ctx.grad_at_onset > over * ctx.grad_stable.p99


#: A lowering (or its batch-size equivalent) without a policy's own factor: ×0.5, one step of a
#: 1-2-5 LR grid.
DEFAULT_LR_CUT = 0.5
#: A raise without a policy's own factor: ×3, one step of a 1-3-10 LR grid.
DEFAULT_LR_RAISE = 3.0


def _raise_lr(s: Situation) -> Draft:
    f, ctx = s.finding, s.ctx
    return lr_kinds.raise_lr(f, ctx, DEFAULT_LR_RAISE, f"{f.rule} from {ctx.unit} {ctx.onset}")


#: kind -> its builder with default arguments.
KINDS: dict[str, Callable[[Situation], Draft | None]] = {
    "lower_peak_lr": lambda s: lr_kinds.lower_peak_lr(s.finding, s.ctx, DEFAULT_LR_CUT),
    "add_warmup": lambda s: lr_kinds.add_warmup(s.finding, s.ctx),
    "add_decay_schedule": lambda s: schedules.cosine(s.finding, s.ctx),
    "clip_grad_norm": lambda s: regularise.clip_grad_norm(s.finding, s.ctx),
    "weight_decay": lambda s: regularise.weight_decay(s.finding, s.ctx),
    "adamw": lambda s: regularise.adamw(s.finding, s.ctx),
    "early_stop": lambda s: regularise.early_stop(s.finding, s.ctx, s.view),
    "rollback_skip": lambda s: regularise.rollback_skip(s.finding, s.ctx, s.burst_noun),
    "raise_lr": _raise_lr,
    "rescale_lr_for_batch": lambda s: lr_kinds.rescale_lr_for_batch(s.finding, s.ctx, DEFAULT_LR_CUT),
    "restore_scheduler_state": lambda s: restarts.restore_scheduler_state(s.finding, s.ctx),
    "rewarmup": lambda s: restarts.rewarmup(s.finding, s.ctx),
    "lower_restart_lr": lambda s: restarts.lower_restart_lr(s.finding, s.ctx),
    "longer_restart_period": lambda s: restarts.longer_restart_period(s.finding, s.ctx),
}

#: The score of a kind no policy ranks: below every policy's first choice, ties kept in list order.
DEFAULT_SCORE = 0.5


def default_options(kind: str, s: Situation) -> list[Option]:
    build = KINDS[kind]
    return [(lambda: build(s), DEFAULT_SCORE)]
