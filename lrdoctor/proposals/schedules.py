"""Proposals that add or change the decay schedule (kind ``add_decay_schedule``, one variant per
torch scheduler). Step counts exclude the warmup (the shared convention), so a schedule ends
exactly at the run's last step."""

from __future__ import annotations

from ..model import Finding
from .common import Draft, fmt, nice_steps, round_sig
from .context import RunContext

KIND = "add_decay_schedule"
#: Floor of a decay as a fraction of the peak LR.
FLOOR_SHARE = 0.01


def _warm(ctx: RunContext) -> int:
    """Warmup the run already has (kept in the patch so the decay's step counts exclude it)."""
    return int(ctx.existing_warmup or 0)


def _decay_len(ctx: RunContext) -> int:
    return max(ctx.total_steps - _warm(ctx), 1)


def _base(ctx: RunContext) -> dict:
    return {"warmup_steps": _warm(ctx), "warmup_start_factor": 0.01} if _warm(ctx) else {}


def _at(ctx: RunContext, k: int) -> int:
    """The run's own step number of the first step trained at the LR the schedule reaches after
    ``k`` of its own steps (k excludes warmup; the warmup runs first, from the run's first step)."""
    return ctx.first_step + _warm(ctx) + int(k)


def _after_warm(ctx: RunContext) -> str:
    return f" (after the {_warm(ctx)}-{ctx.unit} warmup)" if _warm(ctx) else ""


def _floor(ctx: RunContext) -> tuple[float, str]:
    if ctx.lr_peak:
        f = round_sig(ctx.lr_peak * FLOOR_SHARE, 2)
        return f, f"{fmt(f)} ({FLOOR_SHARE:g} × the peak {fmt(ctx.lr_peak)})"
    return 0.0, "0 (the LR is unknown, so the floor cannot be set relative to it)"


def _stall(ctx: RunContext, finding: Finding) -> str:
    end = finding.end_step if finding.end_step is not None else ctx.last_step
    lr = f" at a constant LR {fmt(ctx.lr_at_onset)}" if ctx.lr_constant and ctx.lr_at_onset else ""
    return f"the loss stalled from {ctx.unit} {ctx.onset} to {end}{lr}"


def cosine(finding: Finding, ctx: RunContext) -> Draft:
    t = _decay_len(ctx)
    floor, why = _floor(ctx)
    cfg = _base(ctx) | {"scheduler": {"type": "CosineAnnealingLR", "T_max": t, "eta_min": floor}}
    return Draft(
        kind=KIND, variant="cosine",
        summary=f"cosine decay to {fmt(floor)} over {t} {ctx.unit}s (T_max={t}) from {ctx.unit} "
                f"{_at(ctx, 0)}{_after_warm(ctx)}, reaching the floor at {ctx.unit} {_at(ctx, t)}",
        rationale=f"{_stall(ctx, finding)}; a decay lets it settle into the basin it is circling. "
                  f"T_max is the run's {ctx.total_steps} {ctx.unit}s less {_warm(ctx)} of warmup; floor {why}.",
        config=cfg,
    )


def multistep(finding: Finding, ctx: RunContext) -> Draft:
    t = _decay_len(ctx)
    w = _warm(ctx)
    onset = ctx.onset - ctx.first_step - w
    if 0.2 * t <= onset <= 0.8 * t:
        m1 = nice_steps(onset)
        why = f"the first at the stall ({ctx.unit} {ctx.onset})"
    else:
        m1 = nice_steps(0.5 * t)
        why = "the first at half the run"
    m2 = nice_steps(m1 + (t - m1) / 2)
    if not 0 < m1 < m2 < t:
        m1, m2 = max(t // 2, 1), max(3 * t // 4, 2)
    cfg = _base(ctx) | {"scheduler": {"type": "MultiStepLR", "milestones": [m1, m2], "gamma": 0.1}}
    return Draft(
        kind=KIND, variant="multistep",
        summary=f"MultiStepLR: LR ×0.1 from {ctx.unit}s {_at(ctx, m1)} and {_at(ctx, m2)}",
        rationale=f"{_stall(ctx, finding)}; step decays, {why} and the second halfway to the end "
                  f"({t} {ctx.unit}s after warmup). The milestones {m1} and {m2} count the scheduler's "
                  f"own {ctx.unit}s{', which exclude the ' + str(w) + '-' + ctx.unit + ' warmup' if w else ''}.",
        config=cfg,
    )


def reduce_on_plateau(finding: Finding, ctx: RunContext) -> Draft:
    end = finding.end_step if finding.end_step is not None else ctx.last_step
    stall = max(end - ctx.onset, 1)
    every = ctx.eval_every
    monitor = "val loss"
    if every is None:
        every = max(ctx.total_steps // 50, 1)
        monitor = f"train loss averaged over {every} {ctx.unit}s (the run logged no val loss)"
    # Fire within the first third of a stall as long as this one.
    patience = int(min(max(round(stall / 3 / every), 1), 20))
    floor, _ = _floor(ctx)
    sched = {"type": "ReduceLROnPlateau", "mode": "min", "factor": 0.1, "patience": patience,
             "threshold": 1e-4, "threshold_mode": "rel", "cooldown": 0, "min_lr": floor}
    # SequentialLR cannot chain ReduceLROnPlateau after a warmup, so the patch drops the warmup
    # (the verification harness builds schedules the same way).
    warm = {"warmup_steps": 0} if _warm(ctx) else {}
    dropped = f" The run's {_warm(ctx)}-{ctx.unit} warmup is dropped: SequentialLR cannot chain it." if warm else ""
    return Draft(
        kind=KIND, variant="reduce_on_plateau",
        summary=f"ReduceLROnPlateau on {monitor.split(' (')[0]}: LR ×0.1 once it has not improved for more "
                f"than {patience} evals ({patience * every} {ctx.unit}s at one eval every {every})",
        rationale=f"{_stall(ctx, finding)} ({stall} {ctx.unit}s); torch counts patience in step() calls, "
                  f"one per evaluation here, so {patience} evals = {patience * every} {ctx.unit}s, a third of "
                  f"the stall. Monitor: {monitor}.{dropped}",
        config=warm | {"scheduler": sched},
    )


def warm_restarts(finding: Finding, ctx: RunContext) -> Draft | None:
    t = _decay_len(ctx)
    t0 = t // 7  # cycles of T0, 2*T0, 4*T0 end exactly at the run's last step
    if t0 < 1:
        return None
    floor, why = _floor(ctx)
    cfg = _base(ctx) | {"scheduler": {"type": "CosineAnnealingWarmRestarts", "T_0": t0, "T_mult": 2,
                                      "eta_min": floor}}
    decayed = (f"the LR had already decayed to {fmt(ctx.lr_at_onset)} (from {fmt(ctx.lr_peak)}) when the loss "
               f"stalled at {ctx.unit} {ctx.onset}" if ctx.lr_decayed else _stall(ctx, finding))
    return Draft(
        kind=KIND, variant="warm_restarts",
        summary=f"CosineAnnealingWarmRestarts: T_0={t0}, T_mult=2 (restarts at {ctx.unit}s {_at(ctx, t0)} "
                f"and {_at(ctx, 3 * t0)}), "
                f"floor {fmt(floor)}",
        rationale=f"{decayed}; restarts lift the LR back to its peak to leave the stall. Cycles of {t0}, "
                  f"{2 * t0} and {4 * t0} {ctx.unit}s fill the {t} {ctx.unit}s after warmup; floor {why}.",
        config=cfg,
    )


def one_cycle(finding: Finding, ctx: RunContext, factor: float) -> Draft | None:
    if not ctx.lr_peak:
        return None
    max_lr = round_sig(ctx.lr_peak * factor, 2)
    total = ctx.total_steps
    # torch's OneCycleLR is at max_lr after pct_start*total - 1 of its steps; no warmup precedes it
    peak_at = ctx.first_step + max(round(0.3 * total) - 1, 0)
    sched = {"type": "OneCycleLR", "max_lr": max_lr, "total_steps": total, "pct_start": 0.3,
             "anneal_strategy": "cos", "div_factor": 25.0, "final_div_factor": 1e4,
             "three_phase": False, "cycle_momentum": False}
    return Draft(
        kind=KIND, variant="one_cycle",
        summary=f"OneCycleLR up to {fmt(max_lr)} (×{fmt(round_sig(factor, 2))} the LR {fmt(ctx.lr_peak)}) over "
                f"{total} {ctx.unit}s",
        rationale=f"{_stall(ctx, finding)}: the LR is likely far too small. One cycle starts at "
                  f"max_lr/25 = {fmt(max_lr / 25)}, peaks at {ctx.unit} {peak_at} and anneals to "
                  f"{fmt(max_lr / 25 / 1e4)}; momentum cycling off so it fits any optimizer.",
        # warmup 0: OneCycleLR warms up itself (pct_start), a second warmup would stack on it
        config={"warmup_steps": 0, "scheduler": sched},
    )
