"""Proposals that leave the LR alone: clip gradients, decay weights (or move Adam to AdamW), stop
early at the best validation step, roll back and skip the batches around an isolated spike."""

from __future__ import annotations

import numpy as np

from ..model import Finding
from ..roles import RoleView
from .common import Draft, fmt, round_sig
from .context import RunContext
from .grads import SPIKE_WINDOW, SPIKE_X
from .spikes import incidents, rollback_distance

#: The percentile of the stable stretch's pre-clip norms a clip threshold sits at: it touches
#: about one normal step in ten and cuts anything beyond the healthy distribution.
CLIP_PERCENTILE = 90


def _s(n: int) -> str:
    return "" if n == 1 else "s"


def clip_grad_norm(finding: Finding, ctx: RunContext) -> Draft:
    g = ctx.grad_stable
    if g is None and ctx.grad_logged:
        return Draft(
            kind="clip_grad_norm",
            summary="clip grad norm at 1.0 (no finite grad norm logged: the common default)",
            rationale=f"{finding.rule} from {ctx.unit} {ctx.onset}; the grad norm was logged but none of its "
                      f"values is finite (every step overflowed), so the threshold cannot come from the run. "
                      f"Set it at the p{CLIP_PERCENTILE} of the finite pre-clip norms over a stable stretch.",
            config={"clip_grad_norm": 1.0},
        )
    if g is None:
        return Draft(
            kind="clip_grad_norm",
            summary="clip grad norm at 1.0 (grad norm not logged: the common default)",
            rationale=f"{finding.rule} from {ctx.unit} {ctx.onset}, but no grad_norm role was logged, so the "
                      f"threshold cannot come from the run. Log the value clip_grad_norm_ returns (the norm "
                      f"before clipping) and set the threshold at its p{CLIP_PERCENTILE} over a stable stretch.",
            config={"clip_grad_norm": 1.0},
        )
    pct = g.percentile(CLIP_PERCENTILE)
    # A stretch that looks stable in the loss can hold grad-norm bursts (SGD at too high an LR
    # bursts 10-50x long before the loss goes); a p90 taken over them sits far above the ordinary
    # steps and would not clip the next burst, so the bursts are left out of it.
    capped = g.calm_p90 is not None and round_sig(g.calm_p90, 2) < round_sig(pct, 2)
    thr = round_sig(g.calm_p90 if capped else pct, 2)
    at = ""
    if ctx.grad_at_onset is not None and thr > 0:
        at = (f"; around the onset it reached {fmt(ctx.grad_at_onset)}, "
              f"{fmt(ctx.grad_at_onset / thr)}× the threshold")
    where = (f"the run's finite grad norms, {ctx.unit}s {g.first_step}–{g.last_step}"
             + ("" if g.fallback else " (none is finite before the onset)") if g.whole_run else
             f"grad norms over {'' if g.fallback else 'the stable stretch '}{ctx.unit}s {g.first_step}–{g.last_step}")
    ignored = ""
    if g.ignored:
        ignored = (f", {g.ignored} non-finite grad norm{'s' if g.ignored > 1 else ''} ignored: under mixed "
                   f"precision, steps GradScaler skipped")
    return Draft(
        kind="clip_grad_norm",
        summary=f"clip grad norm at {fmt(thr)} ("
                f"p{CLIP_PERCENTILE} of the {'finite' if g.whole_run else 'pre-onset' if g.fallback else 'stable pre-onset'} norms"
                f"{f', {g.spikes} burst{_s(g.spikes)} left out' if capped else ''}"
                f"{'; the stable stretch was too short to trust' if g.fallback else ''})",
        rationale=(f"{g.fallback[0].upper()}{g.fallback[1:]}: " if g.fallback else "")
                  + f"{where} (n={g.n}{ignored}): "
                  f"median {fmt(g.p50)}, p90 {fmt(g.p90)}, p99 {fmt(g.p99)}, max {fmt(g.max)}{at}."
                  + (f" {g.spikes} of them {'is a burst' if g.spikes == 1 else 'are bursts'} (over {SPIKE_X:g}× the running median of the "
                     f"{SPIKE_WINDOW} around them) that would inflate the p{CLIP_PERCENTILE} to {fmt(pct)}; "
                     f"without them it is {fmt(thr)}." if capped else "")
                  + (f" Each logged norm is the mean of ~{g.averages:.0f} optimizer steps "
                     f"(an epoch mean): single steps scatter more than their means, so this threshold clips "
                     f"more steps than its percentile says; set it from per-step norms when they can be "
                     f"logged (lrdoctor verify measures its effect)." if g.averages > 1 else ""),
        config={"clip_grad_norm": thr},
    )


def _val_best(view: RoleView) -> tuple[int, float, float, int] | None:
    s = view.deduped("val_loss")
    if s is None:
        return None
    ok = np.isfinite(s.values)
    if ok.sum() < 2:
        return None
    steps, vals = s.steps[ok], s.values[ok]
    i = int(np.argmin(vals))
    return int(steps[i]), float(vals[i]), float(vals[-1]), int(steps[-1])


def early_stop(finding: Finding, ctx: RunContext, view: RoleView) -> Draft | None:
    best = _val_best(view)
    if best is None:
        return None
    step, low, final, last = best
    if step >= last:
        return None
    # Stop two evals after the best so a rerun with other seeds still sees its own minimum.
    margin = 2 * (ctx.eval_every or 0)
    stop = min(step + margin, last)
    saved = 1 - (stop - ctx.first_step) / max(ctx.last_step - ctx.first_step, 1)
    if ctx.unit == "epoch":
        # A count of epochs trained, so the harness and the snippet need not know the log's
        # numbering (Keras counts from 0: stopping "at epoch 4" means after 5 epochs).
        count = stop - ctx.epoch_base + 1
        base = "0-based" if ctx.epoch_base == 0 else "1-based"
        return Draft(
            kind="early_stop",
            summary=f"stop after epoch {stop} ({count} epochs; the log's epochs are {base}) and restore the best "
                    f"checkpoint (epoch {step}, val loss {low:.4g} vs {final:.4g} at the end)",
            rationale=f"val loss was lowest at epoch {step} ({low:.4g}) and ended at {final:.4g} "
                      f"({(final - low) / abs(low) * 100 if low else 0:.0f}% worse) at epoch {last}; stopping "
                      f"{margin} epochs (two evals) after the best, i.e. after {count} epochs counted from one, "
                      f"saves {saved:.0%} of the run.",
            config={"early_stop_epoch": count},
        )
    return Draft(
        kind="early_stop",
        summary=f"stop at {ctx.unit} {stop} and restore the best checkpoint ({ctx.unit} {step}, val loss "
                f"{low:.4g} vs {final:.4g} at the end)",
        rationale=f"val loss was lowest at {ctx.unit} {step} ({low:.4g}) and ended at {final:.4g} "
                  f"({(final - low) / abs(low) * 100 if low else 0:.0f}% worse) at {ctx.unit} {last}; "
                  f"stopping {margin} {ctx.unit}s (two evals) after the best saves {saved:.0%} of the run.",
        config={"early_stop_step": stop},
    )


def adamw(finding: Finding, ctx: RunContext) -> Draft | None:
    """Adam's weight_decay is an L2 term that the adaptive step divides away; AdamW decouples it."""
    if ctx.optimizer != "Adam":
        return None
    wd = ctx.weight_decay or 0.0
    new = round_sig(min(max(0.05, 10 * wd), 0.3), 2)
    betas = list(ctx.betas or (0.9, 0.999))
    return Draft(
        kind="adamw",
        summary=f"switch Adam → AdamW with weight_decay {fmt(new)} (was {fmt(wd)}), same LR",
        rationale=f"{_overfit(finding, ctx)}; the run used Adam with weight_decay {fmt(wd)}, an L2 penalty that "
                  f"Adam's per-coordinate scaling weakens. AdamW decays weights decoupled from the gradient "
                  f"(Loshchilov & Hutter 2019); {fmt(new)} is in the 0.01–0.1 range it is used with.",
        config={"optimizer": {"type": "AdamW", "betas": betas}, "weight_decay": new},
    )


def weight_decay(finding: Finding, ctx: RunContext) -> Draft | None:
    wd = ctx.weight_decay
    if ctx.optimizer == "AdamW":
        new, why = (round_sig(min(wd * 3, 0.3), 2), "×3") if wd else (0.05, "AdamW's usual 0.01–0.1 range")
    elif ctx.optimizer == "SGD":
        new, why = (round_sig(min(wd * 3, 5e-3), 2), "×3") if wd else (5e-4, "the usual SGD value")
    elif wd:
        new, why = round_sig(wd * 3, 2), f"×3 ({ctx.optimizer or 'optimizer unknown'})"
    else:
        return None
    return Draft(
        kind="weight_decay",
        summary=f"raise weight_decay {fmt(wd or 0.0)} → {fmt(new)}",
        rationale=f"{_overfit(finding, ctx)}; weight decay was {fmt(wd or 0.0)} with {ctx.optimizer or 'an unknown optimizer'}"
                  f"; new value: {why}.",
        config={"weight_decay": new},
    )


def _overfit(finding: Finding, ctx: RunContext) -> str:
    return f"val loss rose from {ctx.unit} {ctx.onset} while the train loss kept falling"


def rollback_skip(finding: Finding, ctx: RunContext, noun: str = "spike", recovered: bool = True) -> Draft | None:
    """Roll back ~100 steps before each isolated spike (``noun``: what the marked steps are) and
    skip the batches from there to as far past it (PaLM), fewer for short runs."""
    if ctx.unit != "step":
        return None
    spikes = sorted(set(finding.steps) or ({finding.start_step} if finding.start_step is not None else set()))
    back = rollback_distance(ctx)
    # Aftershocks within the rollback distance of a spike are skipped with it: count incidents.
    if not spikes or len(incidents(spikes, back)) > 3:
        return None
    ranges: list[list[int]] = []
    for s in spikes:
        a, b = max(s - back, ctx.first_step), min(s + back, ctx.last_step)
        if ranges and a <= ranges[-1][1] + 1:
            ranges[-1][1] = max(ranges[-1][1], b)
        else:
            ranges.append([a, b])
    n = sum(b - a + 1 for a, b in ranges)
    where = ", ".join(f"{a}–{b}" for a, b in ranges)
    many = len(spikes) > 1
    at = ", ".join(map(str, spikes))
    return Draft(
        kind="rollback_skip",
        summary=f"roll back to step {ranges[0][0]} and skip batches {where} ({n} batches) around the "
                f"{noun}{'s' if many else ''} at step{'s' if many else ''} {at}",
        rationale=(f"{len(spikes)} isolated {noun}{'s' if many else ''} (step{'s' if many else ''} {at})"
                   + (" the run recovered from, the mark of bad batches" if recovered else
                      ", though the loss did not come back to its level before")
                   + f"; PaLM restarts ~100 steps before a spike and skips 200–500 batches: here {back} steps "
                   f"back and {back} past ({ctx.total_steps}-step run). "
                   f"Needs a checkpoint at or before step {ranges[0][0]}."),
        config={"skip_batches": ranges},
    )
