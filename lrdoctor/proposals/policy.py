"""Ranking policies: how strongly a run's evidence backs each proposal kind, per kind of finding.

A rule file names its policy (``proposal_policy: blow-up``) next to the kinds it offers; the
policy ranks only those kinds. Each entry is a small function of the :class:`~.kinds.Situation`
returning its options (builder, score): the score orders the proposals (1 is the strongest
backing), an empty list leaves the kind out for this run. A kind the policy does not rank falls
back to :mod:`.kinds`' default at ``DEFAULT_SCORE``.

The scores are judgement, written down once here: each function's docstring says why it ranks
where it does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from . import lr as lr_kinds
from . import regularise, schedules
from .common import Draft, relative_drop
from .context import Needs
from .grads import layer_clip_note
from .kinds import KINDS, Option, Situation
from .spikes import recovered, recovery_note

Rank = Callable[[Situation], list[Option]]


@dataclass(frozen=True)
class Policy:
    """One kind of finding's ranking, and the run facts its planners need computed."""

    doc: str
    ranks: Mapping[str, Rank] = field(hash=False)
    needs: Needs = Needs()


def _with_note(d: Draft | None, note: str) -> Draft | None:
    return replace(d, rationale=d.rationale + note) if d is not None and note else d


# ------------------------------------------------------------------------------ blow-up

def _blowup_lower_peak(s: Situation) -> list[Option]:
    """First: a blow-up is the LR past the stability edge; a third of the healthy LR is the fix
    that most often works on its own."""
    return [(lambda: lr_kinds.lower_peak_lr(s.finding, s.ctx, lr_kinds.EDGE_SAFETY), 0.9)]


def _blowup_warmup(s: Situation) -> list[Option]:
    """Second when the blow-up came early and the run had no warmup (the optimizer state was
    still settling); a weak alternative otherwise."""
    strong = s.early() and not s.ctx.existing_warmup
    return [(lambda: lr_kinds.add_warmup(s.finding, s.ctx), 0.8 if strong else 0.45)]


def _blowup_clip(s: Situation) -> list[Option]:
    """Backed by a grad norm that jumped over 3x its stable p99 at the onset; weaker when it did
    not, weakest when the grad norm is unknown."""
    jump = s.grad_jump(3.0)
    return [(lambda: regularise.clip_grad_norm(s.finding, s.ctx), 0.75 if jump else 0.5 if jump is not None else 0.3)]


def _blowup_rescale(s: Situation) -> list[Option]:
    """Last: the same LR cut bought with a bigger batch costs memory and throughput."""
    return [(lambda: lr_kinds.rescale_lr_for_batch(s.finding, s.ctx, lr_kinds.EDGE_SAFETY), 0.2)]


# ------------------------------------------------------------------------------ spikes

def _spike_scores(s: Situation) -> tuple[float, float]:
    """(clip, rollback-and-skip) scores from what the curves say caused the spikes: bad batches
    (isolated, recovered, no grad burst first: only skipping removes a spike logged before its
    update) put skipping first; unstable updates (a burst first, or recurring bursts) put
    clipping first; otherwise clipping ranks by how far the grad norm jumped."""
    pat = s.pattern
    if pat.isolated:
        return 0.6, 0.92
    if pat.unstable_updates:
        return 0.92, 0.7
    jump = s.grad_jump(2.0)
    return (0.9 if jump else 0.65 if jump is not None else 0.4), 0.75


def _spike_clip(s: Situation) -> list[Option]:
    clip, skip = _spike_scores(s)
    note = s.pattern.why_clip(s.ctx) if clip > skip and s.pattern.unstable_updates else ""
    return [(lambda: _with_note(regularise.clip_grad_norm(s.finding, s.ctx), note), clip)]


def _spike_rollback(s: Situation) -> list[Option]:
    clip, skip = _spike_scores(s)
    note = (s.pattern.why_rollback(s.ctx) if skip > clip else "") + recovery_note(s.view, s.ctx)
    return [(lambda: _with_note(regularise.rollback_skip(s.finding, s.ctx, s.burst_noun, s.pattern.recovered), note),
             skip)]


def _spike_count(s: Situation) -> int:
    count = s.finding.evidence.get("count")
    return int(count) if isinstance(count, (int, float)) and count > 0 else (len(set(s.finding.steps)) or 1)


def _spike_lower_peak(s: Situation) -> list[Option]:
    """Strong when spikes are many (5 or more: the LR itself is too high), else a fallback."""
    return [(lambda: lr_kinds.lower_peak_lr(s.finding, s.ctx, 0.5), 0.85 if _spike_count(s) >= 5 else 0.5)]


def _early_warmup(score: float) -> Rank:
    def rank(s: Situation) -> list[Option]:
        """Only when the finding falls in the phase a warmup acts on."""
        return [(lambda: lr_kinds.add_warmup(s.finding, s.ctx), score)] if s.early() else []

    return rank


# ------------------------------------------------------------------------------ stall

def _never_moved(s: Situation) -> bool:
    """The detector's own verdict when it gives one (evidence kind "never_moves" vs a stall), else
    whether the train loss fell under 5% by the onset."""
    f, ctx = s.finding, s.ctx
    kind = f.evidence.get("kind")
    if isinstance(kind, str) and kind:
        return kind == "never_moves"
    end = f.end_step if f.end_step is not None else ctx.last_step
    drop = relative_drop(s.view, ctx.first_step, ctx.onset, end)
    return drop is not None and drop < 0.05


def _stall_raise(s: Situation) -> list[Option]:
    """First, and only, when the loss never moved: the LR is too small to train at all."""
    if not _never_moved(s):
        return []
    ctx = s.ctx
    factor, why = lr_kinds.never_moved_raise(ctx)
    evidence = f"the train loss never moved (plateau from {ctx.unit} {ctx.onset})"
    return [(lambda: lr_kinds.raise_lr(s.finding, ctx, factor, evidence, why), 0.9)]


def _stall_schedules(s: Situation) -> list[Option]:
    """A loss that never moved: one-cycle to the raised LR as the alternative. A stall after
    the LR had already decayed: warm restarts (more LR) before another decay. A stall at a
    constant LR: decay it, on the val loss when it is evaluated (ReduceLROnPlateau), else cosine."""
    f, ctx = s.finding, s.ctx
    if _never_moved(s):
        factor, _ = lr_kinds.never_moved_raise(ctx)
        return [(lambda: schedules.one_cycle(f, ctx, factor), 0.6)]
    if ctx.lr_decayed:
        return [(lambda: schedules.warm_restarts(f, ctx), 0.8), (lambda: schedules.cosine(f, ctx), 0.5)]
    return [
        (lambda: schedules.reduce_on_plateau(f, ctx), 0.9 if ctx.eval_every else 0.75),
        (lambda: schedules.cosine(f, ctx), 0.85),
        (lambda: schedules.multistep(f, ctx), 0.7),
        (lambda: schedules.warm_restarts(f, ctx), 0.4),
    ]


def _no_decay_schedules(s: Situation) -> list[Option]:
    """The loss stalled at an LR that never decayed: a decay schedule is the fix itself; cosine
    first (no tuning), ReduceLROnPlateau when a val loss drives it."""
    f, ctx = s.finding, s.ctx
    return [
        (lambda: schedules.cosine(f, ctx), 0.9),
        (lambda: schedules.reduce_on_plateau(f, ctx), 0.8 if ctx.eval_every else 0.6),
        (lambda: schedules.multistep(f, ctx), 0.7),
    ]


# ------------------------------------------------------------------------------ overfit

def _fixed(build: Callable[[Situation], Draft | None], score: float) -> Rank:
    def rank(s: Situation) -> list[Option]:
        return [(lambda: build(s), score)]

    return rank


# ------------------------------------------------------------------------------ grad bursts

def _bursts_rollback(s: Situation) -> list[Option]:
    """Only for a few separate bursts (at most 3, 10+ steps apart) the run recovered from: bad
    batches, as for loss spikes."""
    f, ctx = s.finding, s.ctx
    bursts = sorted(set(f.steps))
    if 0 < len(bursts) <= 3 and bool(np.all(np.diff(bursts) >= 10)) and recovered(s.view, ctx, f):
        note = recovery_note(s.view, ctx)
        return [(lambda: _with_note(regularise.rollback_skip(f, ctx, s.burst_noun), note), 0.55)]
    return []


# ------------------------------------------------------------------------------ vanishing

def _vanishing_raise(s: Situation) -> list[Option]:
    """The only LR lever, and a weak one: vanishing gradients come from the model; an adaptive
    optimizer already rescales small gradients, so it ranks lower there. Judged per layer, it is
    offered only while the loss stalls: a global LR scales every layer's step alike, so it cannot
    close an early/late gap of orders of magnitude, and while the loss still falls (the last
    layers learn) it would only push those harder."""
    f, ctx = s.finding, s.ctx
    note = (" Vanishing gradients usually come from the model (saturating activations, depth without "
            "residuals or normalisation, initialisation), which no LR change fixes; a larger LR only "
            "compensates" + (", and little for an adaptive optimizer, which already rescales small "
                             "gradients." if ctx.adaptive else "."))
    if f.evidence.get("kind") == "layers":
        if not f.evidence.get("loss_stalled"):
            return []
        ev = (f"the early layers' gradients were {f.evidence['layer_ratio']:.1e}× the last layers' from "
              f"{ctx.unit} {ctx.onset} while the loss stalled")
        note += (" A global LR scales every layer's step alike: the early layers stay that far behind; "
                 "the larger LR only speeds the layers that still learn.")
        return [(lambda: lr_kinds.raise_lr(f, ctx, 3.0, ev, note), 0.3 if ctx.adaptive else 0.5)]
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


#: policy name (as a rule file's ``proposal_policy`` gives it) -> Policy.
POLICIES: dict[str, Policy] = {
    "blow-up": Policy(
        "the loss (or grad norm) blew up: cut the LR from the last healthy point",
        {"lower_peak_lr": _blowup_lower_peak, "add_warmup": _blowup_warmup, "clip_grad_norm": _blowup_clip,
         "rescale_lr_for_batch": _blowup_rescale},
        Needs(grad_blowup_ends_stable=True, healthy_edge=True)),
    "spikes": Policy(
        "isolated loss spikes: skip bad batches or clip unstable updates, as the curves say",
        {"clip_grad_norm": _spike_clip, "rollback_skip": _spike_rollback, "lower_peak_lr": _spike_lower_peak,
         "add_warmup": _early_warmup(0.8)},
        Needs(excludes_finding_steps=True, grad_blowup_ends_stable=True)),
    "grad-bursts": Policy(
        "grad-norm bursts: clip first, then a lower LR",
        {"clip_grad_norm": _fixed(lambda s: _with_note(regularise.clip_grad_norm(s.finding, s.ctx),
                                                       layer_clip_note(s.view, s.finding.evidence, s.ctx.unit)), 0.9),
         "lower_peak_lr": _fixed(lambda s: lr_kinds.lower_peak_lr(s.finding, s.ctx, 0.5), 0.7),
         "rescale_lr_for_batch": _fixed(lambda s: lr_kinds.rescale_lr_for_batch(s.finding, s.ctx, 0.5), 0.2),
         "rollback_skip": _bursts_rollback, "add_warmup": _early_warmup(0.6)},
        Needs(grad_blowup_ends_stable=True)),
    "stall": Policy(
        "the loss stopped falling: more LR when it never moved, else a decay schedule",
        {"raise_lr": _stall_raise, "add_decay_schedule": _stall_schedules}),
    "no-decay": Policy(
        "a stall at an LR that never decayed: add the decay",
        {"add_decay_schedule": _no_decay_schedules}),
    "overfit": Policy(
        "val loss rising while train loss falls: stop at the best val step, then regularise",
        {"early_stop": _fixed(KINDS["early_stop"], 0.9), "adamw": _fixed(KINDS["adamw"], 0.8),
         "weight_decay": _fixed(KINDS["weight_decay"], 0.7)}),
    "restart": Policy(
        "the LR jumped back up: an accidental restart (a resume) is fixed by restoring the scheduler state; "
        "a wanted one by a lower restart peak, then longer cycles",
        # first: a resume that lost the scheduler's state is fixed by restoring it; for a periodic
        # schedule, first the peak the LR restarts to; the fallback when the restart is wanted is to
        # warm up again; then the cycle length
        {"restore_scheduler_state": _fixed(KINDS["restore_scheduler_state"], 0.9),
         "lower_restart_lr": _fixed(KINDS["lower_restart_lr"], 0.85),
         "rewarmup": _fixed(KINDS["rewarmup"], 0.8),
         "longer_restart_period": _fixed(KINDS["longer_restart_period"], 0.75)}),
    "vanishing": Policy(
        "gradients vanished: a larger LR only compensates",
        {"raise_lr": _vanishing_raise}),
}

#: The policy of a rule that names none: every listed kind at its default, in list order.
PLAIN = Policy("no policy: the kinds in the order the rule lists them", {})
