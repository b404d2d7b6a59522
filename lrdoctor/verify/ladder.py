"""The LR ladder: when a proposal that lowers the LR (or, for a plateau, raises it) leaves the
symptom in some seeds, try the next rung - the LR moved by another factor of ``ladder_factor``
(3), or by its square (9) after a rung that changed nothing (:func:`step_factor`) - up to
``ladder_rungs`` (3) rungs in all, every rung against the same baseline arm, and report the
largest LR that is CONFIRMED.

Family-wise error: a **weighted Holm** procedure over the pre-declared family of
``ladder_rungs`` rungs, on each rung's one-sided Fisher p-value (is the symptom rarer than in the
baseline?), with weight ``FIRST_WEIGHT`` (0.8) on the first rung and the rest split evenly over the
others. Holm is valid under any dependence (the rungs share their baseline arm), and a rung that
was never run counts as p = 1, a valid (conservative) p-value, so stopping early cannot inflate
the error. A rung is CONFIRMED when Holm rejects its null *and* its own verdict is CONFIRMED
(the baseline reproduced the symptom and the candidate does not end worse): those extra
conditions only remove confirmations. Why these weights: with the default 5 seeds, Fisher
p-values jump from 0.024 to 0.083, so the first rung at 0.8 x 0.05 = 0.04 accepts exactly what a
lone test at 0.05 accepts - a proposal whose first cut works keeps today's verdict - while a later
rung (0.005 alone, more after a rejection) needs the symptom gone in every seed against a baseline
that shows it in every seed (p = 0.004).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

from ..model import Proposal, Verdict, VerdictKind

FIRST_WEIGHT = 0.8


def direction(proposal: Proposal, base_lr: float | None, *, may_raise: bool = False) -> int:
    """-1 when the proposal lowers the LR, +1 when it raises it and the finding's rule asks for a
    higher LR (``may_raise``: a plateau), 0 otherwise (no ladder)."""
    cfg = proposal.config
    scale = float(cfg["lr_scale"]) if "lr_scale" in cfg else None
    new = float(cfg["lr"]) if "lr" in cfg else None
    if scale is None and (new is None or base_lr is None):
        return 0
    factor = (scale if scale is not None else 1.0) * (new / base_lr if new is not None and base_lr else 1.0)
    if factor < 1:
        return -1
    if factor > 1 and may_raise:
        return 1
    return 0


def next_config(config: dict[str, Any], sign: int, factor: float) -> dict[str, Any]:
    """The next rung's patch: the proposal's LR (absolute or scale) moved by ``factor``."""
    step = factor ** sign
    out = dict(config)
    if "lr" in out:
        out["lr"] = float(out["lr"]) * step
    else:
        out["lr_scale"] = float(out["lr_scale"]) * step
    return out


def rung_lr(config: dict[str, Any], base_lr: float | None) -> float | None:
    if "lr" in config:
        return float(config["lr"]) * float(config.get("lr_scale", 1.0))
    if base_lr is None:
        return None
    return base_lr * float(config.get("lr_scale", 1.0))


def should_climb(v: Verdict, reproduce_fraction: float) -> bool:
    """Another rung helps only when this one left the symptom in some seed while the baseline
    reproduced it (an ERROR, or a baseline without the symptom, says nothing about the LR)."""
    if v.verdict is VerdictKind.ERROR or v.details.get("unchanged"):
        return False  # a command that ignores the patch or the seed ignores the next rung's too
    base, cand = v.details.get("baseline_symptom", []), v.details.get("candidate_symptom", [])
    n = len(base)
    return bool(n) and sum(base) > reproduce_fraction * n and sum(cand) > 0


def step_factor(v: Verdict, factor: float) -> float:
    """How far the next rung moves the LR: ``factor``, or ``factor**2`` when this rung left the
    symptom in at least as many seeds as the baseline. A cut that changed nothing is far from the
    stable LR (a constant LR that blows up at step 2 says nothing about where stability starts),
    and the rungs cannot grow in number instead: with 5 seeds a later rung's Holm level over 3
    rungs, 0.05 x 0.1 = 0.005, is just above the smallest one-sided Fisher p (1/252 = 0.004); over
    4 rungs it would be 0.0033 and no later rung could ever be confirmed. A rung that helped in
    some seeds is near the edge: the plain step keeps the answer fine."""
    base, cand = v.details.get("baseline_symptom", []), v.details.get("candidate_symptom", [])
    return factor ** 2 if sum(cand) >= sum(base) else factor


def weights(n_rungs: int) -> list[float]:
    if n_rungs == 1:
        return [1.0]
    return [FIRST_WEIGHT] + [(1 - FIRST_WEIGHT) / (n_rungs - 1)] * (n_rungs - 1)


def weighted_holm(pvalues: Sequence[float], w: Sequence[float], alpha: float) -> tuple[list[bool], list[float]]:
    """Weighted Holm step-down: which nulls are rejected, and the level each p was held to (the
    level at the step it was judged; untested steps get the level they would have had next)."""
    remaining = list(range(len(pvalues)))
    rejected = [False] * len(pvalues)
    level = [math.nan] * len(pvalues)
    while remaining:
        total = sum(w[i] for i in remaining)
        i = min(remaining, key=lambda j: pvalues[j] / w[j] if w[j] > 0 else math.inf)
        for j in remaining:
            level[j] = alpha * w[j] / total
        if pvalues[i] > level[i]:
            break
        rejected[i] = True
        remaining.remove(i)
    return rejected, level


def combine(rungs: Sequence[Verdict], configs: Sequence[dict[str, Any]], base_lr: float | None, *,
            alpha: float, n_rungs: int, steps: Sequence[int]) -> Verdict:
    """One verdict for the ladder: CONFIRMED at the largest LR whose rung Holm confirms, else the
    first rung's verdict (its reason says how far the ladder went)."""
    w = weights(n_rungs)
    p = [float(v.details.get("fisher_p", 1.0)) if v.verdict is not VerdictKind.ERROR else 1.0 for v in rungs]
    p += [1.0] * (n_rungs - len(rungs))  # rungs never run: p = 1
    rejected, level = weighted_holm(p, w, alpha)
    table = []
    ok: list[int] = []
    for k, (v, cfg) in enumerate(zip(rungs, configs, strict=True)):
        confirmed = rejected[k] and v.verdict is VerdictKind.CONFIRMED
        if confirmed:
            ok.append(k)
        d = v.details
        table.append({
            "rung": k + 1, "lr": rung_lr(cfg, base_lr), "config": dict(cfg), "verdict": v.verdict.value,
            "confirmed": confirmed, "baseline_hits": int(sum(d.get("baseline_symptom", []))),
            "candidate_hits": int(sum(d.get("candidate_symptom", []))), "n": len(v.seeds),
            "fisher_p": p[k], "holm_level": level[k], "holm_rejected": rejected[k],
            "wilcoxon_p_worse": d.get("wilcoxon_p_worse"), "mean_rel_diff": d.get("mean_rel_diff"),
            "candidate_steps": int(steps[k]) if k < len(steps) else 0, "reason": v.reason,
        })
    lrs = [rung_lr(c, base_lr) for c in configs]
    best = max(ok, key=lambda k: lrs[k] if lrs[k] is not None else -k) if ok else None
    pick = rungs[best] if best is not None else rungs[0]
    summary = "; ".join(f"rung {r['rung']} lr={_lr(r['lr'])}: {r['verdict']}"
                        f"{' (Holm-confirmed)' if r['confirmed'] else ''} {r['candidate_hits']}/{r['n']} seeds "
                        f"with the symptom, p={r['fisher_p']:.3g} vs Holm level {r['holm_level']:.3g}" for r in table)
    details = dict(pick.details)
    details["ladder"] = table
    details["ladder_procedure"] = f"weighted Holm over {n_rungs} pre-declared rungs, weights {[round(x, 3) for x in w]}"
    if best is not None:
        details["largest_confirmed_lr"] = lrs[best]
        details["confirmed_config"] = dict(configs[best])
        reason = (f"largest LR confirmed: {_lr(lrs[best])} (rung {best + 1} of {len(rungs)} tried); "
                  f"{pick.reason} | ladder: {summary}")
        kind = VerdictKind.CONFIRMED
    else:
        details["largest_confirmed_lr"] = None
        # without a Holm confirmation a rung's own CONFIRMED cannot stand
        kind = VerdictKind.INCONCLUSIVE if rungs[0].verdict is VerdictKind.CONFIRMED else rungs[0].verdict
        reason = f"no rung confirmed ({len(rungs)} tried); first rung: {rungs[0].reason} | ladder: {summary}"
    return replace(pick, verdict=kind, reason=reason, details=details,
                   p_value=p[best] if best is not None else pick.p_value)


def _lr(x: float | None) -> str:
    return "?" if x is None else f"{x:.3g}"



def climb(jobs: Sequence[Any], judge: Callable[[Any], Verdict], add_rung: Callable[[Any, dict], Any],
          settle: Callable[[Sequence[Any]], None], cfg) -> Iterator[tuple[Any, Verdict, list[Verdict]]]:
    """Judge every job; climb the ladder where it applies (all climbing jobs' rungs run together).

    A job is read for ``rule``, ``proposal``, ``base_lr`` and ``raises_lr`` (its rule may be cured by
    a higher LR). Yields ``(job, final verdict, the verdict of every rung tried)``; jobs without a
    ladder yield their own verdict and ``[it]``."""
    state = []
    for job in jobs:
        sign = direction(job.proposal, job.base_lr, may_raise=job.raises_lr) if job.rule else 0
        state.append((job, sign, [judge(job)], [job.proposal.config.to_dict()]))
    for _ in range(cfg.ladder_rungs - 1):
        up = [st for st in state if st[1] and should_climb(st[2][-1], cfg.reproduce_fraction)]
        if not up:
            break
        new = []
        for job, sign, verdicts, configs in up:
            configs.append(next_config(configs[-1], sign, step_factor(verdicts[-1], cfg.ladder_factor)))
            new.append(add_rung(job, configs[-1]))
        settle(new)
        for (_, _, verdicts, _), rung in zip(up, new, strict=True):
            verdicts.append(judge(rung))
    for job, sign, verdicts, configs in state:
        if not sign:
            yield job, verdicts[0], verdicts
            continue
        steps = [int(v.details.get("steps", {}).get("candidate", 0)) for v in verdicts]
        yield job, combine(verdicts, configs, job.base_lr, alpha=cfg.alpha, n_rungs=cfg.ladder_rungs,
                           steps=steps), verdicts
