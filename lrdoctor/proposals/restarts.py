"""Proposals for a restarted LR schedule (rule lr-restart): restore the scheduler's state on
resume, or re-warm up from the resume step; for a periodic schedule that restarts too high or
too often, a lower restart peak or longer (growing) cycles -- in CosineAnnealingWarmRestarts'
own vocabulary (``eta_max`` is the optimizer's LR, ``T_0``, ``T_mult``)."""

from __future__ import annotations

from ..model import Finding
from .common import Draft, as_logged, fmt, nice_steps, round_down
from .context import RunContext

#: Re-warmup after a resume: this share of the steps from the resume to the end, at most.
REWARMUP_SHARE = 0.1
#: A lower restart peak: this share of the peak the restarts reach now.
RESTART_PEAK_SHARE = 0.5


def _jump(f: Finding) -> tuple[int, float | None, float | None]:
    ev = f.evidence
    at = int(ev.get("first_step", f.start_step or 0))
    return at, ev.get("lr_before"), ev.get("lr_after")


def restore_scheduler_state(f: Finding, ctx: RunContext) -> Draft | None:
    if f.evidence.get("kind") != "jump":
        return None
    at, before, after = _jump(f)
    return Draft(
        kind="restore_scheduler_state",
        summary=f"save and restore the LR scheduler's state with the checkpoint, so a resume at {ctx.unit} {at} "
                f"continues at LR {fmt(before)} instead of restarting at {fmt(after)}",
        rationale=f"the LR jumped from {fmt(before)} to {fmt(after)} at {ctx.unit} {at}: the schedule started "
                  "again from the top, which is what a scheduler rebuilt on resume without its state_dict does. "
                  "Restoring it (or passing the resume step as last_epoch) continues the schedule where it was.",
        config={"restore_scheduler_state": True},
    )


def rewarmup(f: Finding, ctx: RunContext) -> Draft | None:
    if f.evidence.get("kind") != "jump":
        return None
    at, _, after = _jump(f)
    n = max(1, nice_steps(REWARMUP_SHARE * max(ctx.last_step - at, 1)))
    return Draft(
        kind="rewarmup",
        summary=f"if the restart is wanted, re-warm up from {ctx.unit} {at}: ramp the LR from 1% to "
                f"{fmt(after)} over {n} {ctx.unit}s",
        rationale=f"the LR went straight back to {fmt(after)} at {ctx.unit} {at}"
                  + ("; the grad norm blew up after it" if f.evidence.get("grad_exploded") else "")
                  + f". A ramp over {REWARMUP_SHARE:.0%} of the remaining {ctx.last_step - at} {ctx.unit}s lets "
                    "Adam's moment estimates and the model adapt to the larger steps.",
        config={"rewarmup_steps": n, "warmup_start_factor": 0.01},
    )


def lower_restart_lr(f: Finding, ctx: RunContext) -> Draft | None:
    if f.evidence.get("kind") != "periodic":
        return None
    peak = as_logged(f.evidence.get("lr_peak")) or ctx.lr_peak
    if not peak:
        return None
    new = round_down(peak * RESTART_PEAK_SHARE)
    return Draft(
        kind="lower_restart_lr",
        summary=f"lower the restart peak (eta_max, the optimizer's LR) {fmt(peak)} → {fmt(new)}",
        rationale=f"{f.evidence.get('count', 1)} restart(s) back to {fmt(peak)} left the run worse than before "
                  "them by the next restart; a lower peak keeps the exploration without undoing the cycle's progress.",
        config={"lr": new},
    )


def longer_restart_period(f: Finding, ctx: RunContext) -> Draft | None:
    if f.evidence.get("kind") != "periodic":
        return None
    cycles = [int(c) for c in f.evidence.get("cycle_steps") or [] if c > 0]
    if not cycles:
        return None
    t0 = nice_steps(2 * cycles[0])
    grows = len(cycles) >= 2 and cycles[1] > 1.5 * cycles[0]
    t_mult = max(2, round(cycles[1] / cycles[0])) if grows else 2
    sched = {"type": "CosineAnnealingWarmRestarts", "T_0": t0, "T_mult": t_mult}
    return Draft(
        kind="longer_restart_period",
        summary=f"longer cycles that grow: CosineAnnealingWarmRestarts(T_0={t0}, T_mult={t_mult}) "
                f"(first cycle now {cycles[0]} {ctx.unit}s)",
        rationale=f"the loss had not recovered from a restart before the next one (cycles of {cycles[:4]} "
                  f"{ctx.unit}s); doubling T_0 and growing each cycle by T_mult gives it time to settle.",
        config={"scheduler": sched},
    )
