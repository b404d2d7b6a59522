"""Proposals that change the LR's size: lower the peak, raise it, warm it up, rescale it for a
batch-size change."""

from __future__ import annotations

import math

from ..model import Finding
from .common import Draft, fmt, nice_steps, round_down, round_sig
from .context import RunContext

#: Share of the run a proposed warmup may take at most (a warmup longer than this leaves too
#: little of a short rerun at the peak LR to judge it).
MAX_WARMUP_SHARE = 0.25


def _where(ctx: RunContext) -> str:
    return f"{ctx.unit} {ctx.onset}"


def lr_unknown_note(ctx: RunContext) -> str:
    return (f"the LR was neither logged (no lr role) nor found in hparams, so this is relative to "
            f"whatever LR the run used, assumed constant up to {_where(ctx)}")


#: Divergence: the new peak LR as a share of the largest LR the run was still healthy at (its
#: best smoothed loss). Under a rising LR the best loss marks where bigger steps stopped paying
#: off -- the top of an LR range test (Smith 2017), i.e. the stability edge, not a safe LR. A
#: third is half an order of magnitude below it, one step down the usual 1-3-10 LR grid: margin
#: for the curvature's growth as training goes on (progressive sharpening, Cohen et al. 2021)
#: and for the edge's seed-to-seed spread.
EDGE_SAFETY = 1 / 3


def cut(ctx: RunContext, factor: float) -> tuple[float, bool, str]:
    """The LR to have at the onset: ``factor`` times the LR in force there, or the last LR the
    run was still stable at when the LR was rising into the onset and that one is lower.
    Returns (target LR, whether the LR was rising, why)."""
    on = ctx.lr_at_onset
    stable = ctx.lr_stable or on
    target = on * factor
    why = f"×{fmt(round_sig(factor, 2))} the LR in force at the onset"
    rising = stable < 0.95 * on
    if rising and stable < target:
        target, why = stable, f"the LR it was still stable at ({ctx.unit} {ctx.stable_end})"
    return target, rising, why


def new_peak(ctx: RunContext, factor: float) -> tuple[float, str]:
    """The new peak LR (unrounded) and why. Needs ``ctx.lr_at_onset``.

    From the healthy LR when the context has one (divergence with a logged LR): ``factor`` times
    the largest LR in force up to the last healthy step, as the peak of the whole schedule, so
    the LR never again climbs to where the run failed. Otherwise the schedule is scaled so that
    the LR at the onset becomes :func:`cut`'s target -- and when the LR was still rising to a
    larger configured peak there, the peak itself is capped at that target."""
    if ctx.lr_healthy:
        return ctx.lr_healthy * factor, (
            f"×{fmt(round_sig(factor, 2))} the largest LR the run was still healthy at, "
            f"{fmt(ctx.lr_healthy)} (up to {ctx.unit} {ctx.healthy_step})")
    on = ctx.lr_at_onset
    if ctx.warmup_foot and ctx.lr_peak:
        return ctx.lr_peak * factor, f"×{fmt(round_sig(factor, 2))} the run's peak LR {fmt(ctx.lr_peak)}"
    target, _, why = cut(ctx, factor)
    if ctx.lr_peak_source:
        return target, f"{why}, as the peak: the LR was still rising there, so the old peak is never reached"
    # Scaled from the largest LR up to the onset: a schedule still rising there is capped at the
    # target, so it never climbs back to where the run failed.
    return (ctx.lr_peak_before or ctx.lr_peak or on) * target / on, why


def _healthy_note(ctx: RunContext, factor: float) -> str:
    note = f"; its best smoothed train loss was at {ctx.unit} {ctx.best_step}"
    if ctx.healthy_step is not None and ctx.best_step is not None and ctx.healthy_step < ctx.best_step:
        note += f", but the grad norm had blown up by {ctx.unit} {ctx.grad_unstable_from}"
    note += f", with the LR at most {fmt(ctx.lr_healthy)} up to {ctx.unit} {ctx.healthy_step}"
    frac = "a third" if abs(factor - 1 / 3) < 1e-9 else f"×{fmt(round_sig(factor, 2))}"
    margin = (f"{frac} of it is half an order of magnitude below, one step down the 1-3-10 LR grid, "
              f"leaving margin for the curvature's growth during training and for seed-to-seed spread")
    if ctx.lr_at_onset and ctx.lr_healthy < 0.95 * ctx.lr_at_onset:
        return (f"{note}. Under a rising LR the best loss marks the stability edge (the top of an LR "
                f"range test, Smith 2017), not a safe LR; {margin}")
    return f"{note}; {margin}"


def lower_peak_lr(finding: Finding, ctx: RunContext, factor: float) -> Draft:
    """Lower the peak LR, keeping the schedule's shape (see :func:`new_peak` for where the new
    value comes from)."""
    if ctx.lr_at_onset is None or ctx.lr_at_onset <= 0:
        scale = round_sig(factor, 2)
        return Draft(
            kind="lower_peak_lr",
            summary=f"scale the LR ×{fmt(scale)} (LR not logged and not in hparams)",
            rationale=f"{finding.rule} from {_where(ctx)}; {lr_unknown_note(ctx)}. "
                      f"×{fmt(scale)} is about half an order of magnitude, one step of a usual LR grid.",
            config={"lr_scale": scale},
        )
    on, stable = ctx.lr_at_onset, ctx.lr_stable or ctx.lr_at_onset
    rising = stable < 0.95 * on
    peak = ctx.lr_peak or on
    raw, why = new_peak(ctx, factor)
    value = round_down(raw, 2)
    if ctx.lr_logged:
        evidence = (f"the logged LR ({ctx.lr_source}) was {fmt(on)} at the onset ({_where(ctx)})"
                    + (f" and {fmt(stable)} at {ctx.unit} {ctx.stable_end}, still stable" if rising else
                       f", unchanged since {ctx.unit} {ctx.stable_end} when the run was still stable"))
    else:
        evidence = (f"the configured LR was {fmt(on)} ({ctx.lr_source}; not logged, so assumed in "
                    f"force at the onset, {_where(ctx)})")
    if ctx.grad_unstable_from is not None and ctx.grad_unstable_from < ctx.onset:
        evidence += (f"; the grad norm had already blown up at {ctx.unit} {ctx.grad_unstable_from}, "
                     f"so the stable stretch ends before that")
    if ctx.lr_healthy:
        evidence += _healthy_note(ctx, factor)
    elif ctx.warmup_foot:
        evidence += (f"; that is the foot of the run's {ctx.existing_warmup}-{ctx.unit} warmup (the LR not yet "
                     f"risen off its start, or every step so far skipped by GradScaler), far below its peak {fmt(peak)}: "
                     f"instability there comes from the optimizer state or the loss scale settling rather than "
                     f"the LR's size, so the cut is made relative to the peak")
    if value > peak:
        value = round_down(peak * factor, 2)  # a lowering never ends above the run's own peak
    warm = (f" ({ctx.existing_warmup}-{ctx.unit} warmup)" if ctx.existing_warmup and not ctx.lr_peak_source
            else " (warmup included)" if ctx.existing_warmup else "")
    shape = (f"; the schedule's shape is kept{warm}, its peak {fmt(peak)} → {fmt(value)} "
             f"(×{fmt(round_sig(value / peak, 2))})")
    if ctx.lr_peak_source:
        shape += f" (the configured peak, {ctx.lr_peak_source}: the LR was still rising at the onset)"
    return Draft(
        kind="lower_peak_lr",
        summary=f"lower peak LR {fmt(peak)} → {fmt(value)}",
        rationale=f"{finding.rule} from {_where(ctx)}: {evidence}. New peak LR: {why}, "
                  f"{fmt(value)}{shape}.",
        config={"lr": value},
    )


def raise_lr(finding: Finding, ctx: RunContext, factor: float, evidence: str, note: str = "") -> Draft:
    if ctx.lr_peak is None or ctx.lr_peak <= 0:
        return Draft(
            kind="raise_lr",
            summary=f"scale the LR ×{fmt(factor)} (LR not logged and not in hparams)",
            rationale=f"{evidence}; {lr_unknown_note(ctx)}.{note}",
            config={"lr_scale": float(factor)},
        )
    new = round_sig(ctx.lr_peak * factor, 2)
    return Draft(
        kind="raise_lr",
        summary=f"raise peak LR {fmt(ctx.lr_peak)} → {fmt(new)} (×{fmt(round_sig(factor, 2))})",
        rationale=f"{evidence}; the LR was {fmt(ctx.lr_peak)} ({ctx.lr_source}).{note}",
        config={"lr": new},
    )


#: The LR each optimizer is customarily started at -- Adam/AdamW/RAdam 1e-3 (Kingma & Ba 2015;
#: torch's default), Adamax/NAdam 2e-3 (torch's defaults, from their papers), RMSprop 1e-3
#: (Hinton's Coursera lecture 6e, Keras's default; torch's 1e-2 is the aggressive end), Adagrad
#: 1e-2 (torch's default), SGD 0.1 (He et al. 2016, Goyal et al. 2017 at batch 256; torch's 1e-3
#: default is a placeholder, not a recommendation).
CUSTOMARY_LR = {"Adam": 1e-3, "AdamW": 1e-3, "RAdam": 1e-3, "Adamax": 2e-3, "NAdam": 2e-3,
                "RMSprop": 1e-3, "Adagrad": 1e-2, "SGD": 0.1}
#: A loss that never moved gets at least this much more LR: a smaller step is not worth a rerun.
MIN_RAISE = 10.0


def never_moved_raise(ctx: RunContext) -> tuple[float, str]:
    """(factor, why) to raise the LR of a run whose loss never moved: ×10, or all the way to the
    optimizer's customary LR when that is further away -- a starting point for a range test."""
    default = CUSTOMARY_LR.get(ctx.optimizer or "")
    lr = ctx.lr_peak
    test = (" Treat it as the starting point of an LR range test (Smith 2017): ramp the LR "
            "geometrically over a few hundred steps from 1/100 to 10× this value and pick where the loss "
            "falls fastest (about a tenth of the LR at its minimum).")
    if default is None or not lr or lr * MIN_RAISE >= default:
        known = f"{ctx.optimizer}'s customary LR {fmt(default)}" if default else "the optimizer's customary LR"
        why = (f" ×{MIN_RAISE:g}: the LR is within ×{MIN_RAISE:g} of {known}" if default and lr else
               f" ×{MIN_RAISE:g}: {known} is unknown (optimizer not in hparams)")
        return MIN_RAISE, why + "." + test
    return default / lr, (f" The LR was {fmt(default / lr)}× below {ctx.optimizer}'s customary {fmt(default)} "
                          f"(the usual starting LR for it), so it goes straight there: with a loss that did not "
                          f"move at all, ×{MIN_RAISE:g} steps would take {math.ceil(round(math.log10(default / lr), 2))} "
                          f"reruns to get there." + test)


def warmup_length(ctx: RunContext) -> tuple[int, str] | None:
    """Warmup steps and why: long enough that the LR at the onset is half its peak, or
    2/(1-beta2) for Adam-type optimizers (Ma & Yarats 2021), capped at a quarter of the run."""
    since = max(ctx.onset - ctx.first_step, 1)
    cands = [(2 * since, f"twice the {since} {ctx.unit}s to the onset, so the LR there is half its peak")]
    if ctx.existing_warmup:
        cands.append((2 * ctx.existing_warmup, f"twice the run's own {ctx.existing_warmup}-{ctx.unit} warmup"))
    if ctx.adaptive and ctx.beta2 is not None and ctx.beta2 < 1:
        n = 2.0 / (1.0 - ctx.beta2)
        cands.append((n, f"2/(1-β2) = {n:.0f} for {ctx.optimizer} with β2={ctx.beta2:g}"))
    n, why = max(cands, key=lambda c: c[0])
    cap = max(int(MAX_WARMUP_SHARE * ctx.total_steps), 10)
    if n > cap:
        n, why = cap, f"{why}, capped at a quarter of the {ctx.total_steps}-{ctx.unit} run"
    n = nice_steps(n)
    if ctx.existing_warmup and n < 1.5 * ctx.existing_warmup:
        return None  # lengthening a warmup by less than half is no change worth a rerun
    return n, why


def add_warmup(finding: Finding, ctx: RunContext) -> Draft | None:
    got = warmup_length(ctx)
    if got is None:
        return None
    n, why = got
    start = 0.01
    peak = f" to the peak {fmt(ctx.lr_peak)}" if ctx.lr_peak else " to the peak"
    head = (f"lengthen warmup {ctx.existing_warmup} → {n} {ctx.unit}s" if ctx.existing_warmup
            else f"add linear warmup over {n} {ctx.unit}s")
    return Draft(
        kind="add_warmup",
        summary=f"{head} (LR ×{start:g}{peak})",
        rationale=f"{finding.rule} at {_where(ctx)}, {ctx.onset - ctx.first_step} {ctx.unit}s into the run"
                  f"{'' if ctx.existing_warmup else ' with no warmup in the logged LR' if ctx.lr_logged else ''}"
                  f"; length: {why}.",
        config={"warmup_steps": n, "warmup_start_factor": start},
    )


def rescale_lr_for_batch(finding: Finding, ctx: RunContext, factor: float) -> Draft | None:
    """The LR cut ``factor`` expressed as a bigger batch instead: at batch k*B the LR equivalent
    to ``factor*lr`` at B is ``factor*lr*k`` for SGD (linear rule) and ``factor*lr*sqrt(k)`` for
    Adam-type optimizers, so part of the cut is bought with batch size (and throughput)."""
    if ctx.batch_size is None or not ctx.lr_at_onset or ctx.optimizer is None:
        return None
    peak = ctx.lr_peak or ctx.lr_at_onset
    lowered = new_peak(ctx, factor)[0]  # the same new peak lower_peak_lr proposes
    factor = lowered / peak
    adaptive = ctx.adaptive
    gain = (lambda k: math.sqrt(k)) if adaptive else (lambda k: float(k))
    ks = [k for k in (2, 4, 8) if factor * gain(k) < 0.95]
    if not ks:
        return None
    k = ks[-1]
    new = round_down(lowered * gain(k), 2)
    b = ctx.batch_size
    rule = "√k rule for Adam-type" if adaptive else "linear rule for SGD"
    world = ""
    if (ctx.world_size or 1) > 1 or (ctx.grad_accum or 1) > 1:
        world = (f"; effective batch {ctx.effective_batch} → {ctx.effective_batch * k} "
                 f"(world size {ctx.world_size or 1}, accumulation {ctx.grad_accum or 1})")
    return Draft(
        kind="rescale_lr_for_batch",
        summary=f"batch {b} → {b * k} with peak LR {fmt(peak)} → {fmt(new)} ({rule}, k={k})",
        rationale=f"equivalent to lowering the LR ×{fmt(round_sig(factor, 2))} at batch {b} "
                  f"({ctx.optimizer}: LR ∝ {'√batch' if adaptive else 'batch'}; Goyal et al. 2017 for SGD)"
                  f"; each step then sees {k}× the samples{world}. Keep a warmup when scaling up.",
        config={"batch_size": b * k, "lr": new},
    )
