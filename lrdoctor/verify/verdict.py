"""From the paired reruns of one proposal to a :class:`~lrdoctor.model.Verdict`.

Order of the checks (the first that applies decides):

1. any rerun of the pair failed -> ERROR, with the stderr tail of the first failure;
1b. the reruns did not vary (:func:`unchanged`: every seed of the baseline logged the same losses,
   or a candidate that moves the LR logged the baseline's) -> INCONCLUSIVE, saying which;
2. a finding to fix, but the baseline shows its symptom in at most ``reproduce_fraction`` of the
   seeds -> INCONCLUSIVE (the budget does not reproduce the problem, so nothing can be learnt);
3. symptom not removed (one-sided Fisher p >= alpha): REJECTED when the candidate shows it at least
   as often as the baseline, else INCONCLUSIVE (fewer, but not significantly fewer);
4. symptom removed but the target metric ends worse at equal budget (Wilcoxon one-sided p < alpha,
   or mean relative difference > ``worse_margin``) -> REJECTED, naming the short-rerun bias when
   the proposal lowers the LR;
5. otherwise CONFIRMED.

Without a finding (a proposal checked on a healthy run, e.g. ``--patch``), nothing can be
confirmed: REJECTED when the candidate brings findings the baseline does not have (Fisher) or ends
worse, else INCONCLUSIVE.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..model import Proposal, Verdict, VerdictKind
from .protocol import VerifyConfig
from .stats import fisher_symptom, paired_target


@dataclass(frozen=True)
class ArmResult:
    """One rerun, read back and re-diagnosed."""

    seed: int
    ok: bool
    symptom: bool = False  # the finding's rule fired (or, without a finding: any rule fired)
    rules: tuple[str, ...] = ()
    target: float = math.nan  # smoothed final val loss, else train loss
    target_role: str = ""
    error: str = ""
    logdir: str = ""
    steps: int = 0  # optimizer steps this rerun ran after its start (from its logs)
    # (role, steps, values) per series kept for display (the target metric's, train loss, grad
    # norm), downsampled; the report draws them, the verdict never looks at them
    curves: tuple[tuple[str, tuple[float, ...], tuple[float, ...]], ...] = field(default=(), compare=False,
                                                                                 repr=False)

    symptom_rules: tuple[str, ...] = ()  # those of ``rules`` that declare a symptom (see RuleSpec.symptom)
    # a hash of the losses it logged (steps and values of train and val loss, no wall times): two
    # reruns with the same one trained the same numbers
    losses: str = ""

    def curve(self, role: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        return next(((s, v) for r, s, v in self.curves if r == role), None)


def moves_lr(config) -> bool:
    """The patch changes the LR a step trains with (a new LR, a scale, a warmup or a schedule):
    an applied one always changes the losses. A clip threshold or a skip may change none."""
    return ("lr" in config or float(config.get("lr_scale", 1.0)) != 1.0
            or float(config.get("warmup_steps", 0) or 0) > 0 or "scheduler" in config)


def unchanged(baseline: Sequence[ArmResult], candidate: Sequence[ArmResult], proposal: Proposal) -> str | None:
    """Why the reruns cannot be compared although none failed (None: they can). Reruns are
    compared by the hash of their losses: a baseline whose seeds all logged the same losses is
    one run, not n, and a candidate that moves the LR yet logged the baseline's losses in every
    seed did not get its patch (the command ignores {seed} or the LR it is given). Either way the
    p-values would be about n copies of one comparison, or about no change at all."""
    n = len(baseline)
    hashes = [a.losses for a in baseline]
    if n >= 2 and all(hashes) and len(set(hashes)) == 1:
        return (f"the baseline's {n} seeds logged identical losses, so the reruns do not vary with the seed "
                "(the --train template has no {seed}, or the script does not seed its data order or "
                "initialisation from it / LRDOCTOR_SEED): each arm is one run, not " + str(n))
    if moves_lr(proposal.config) and all(b.losses and b.losses == c.losses for b, c in zip(baseline, candidate, strict=True)):
        return ("the candidate logged exactly the baseline's losses in every seed although it changes the LR: "
                "the command did not apply the patch (pass it with {lr}, {lr_scale} or {config_json} in the "
                "--train template, or read LRDOCTOR_CONFIG as lrdoctor.Controller does)")
    return None


def lowers_lr(proposal: Proposal, base_lr: float | None) -> bool:
    cfg = proposal.config
    if "lr_scale" in cfg and float(cfg["lr_scale"]) < 1:
        return True
    return "lr" in cfg and base_lr is not None and float(cfg["lr"]) < base_lr


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def decide(
    rule: str | None,
    proposal: Proposal,
    baseline: Sequence[ArmResult],
    candidate: Sequence[ArmResult],
    cfg: VerifyConfig,
    *,
    base_lr: float | None = None,
) -> Verdict:
    seeds = tuple(a.seed for a in baseline)

    def verdict(kind: VerdictKind, reason: str, p=None, ci=None, pb=None, **details) -> Verdict:
        return Verdict(
            rule=rule or "", proposal_id=proposal.id, kind=proposal.kind, verdict=kind, seeds=seeds,
            p_value=p, ci=ci, p_better=pb, reason=reason, details=details,
        )

    failed = [(arm, a) for arm, runs in (("baseline", baseline), ("candidate", candidate)) for a in runs if not a.ok]
    if failed:
        arm, a = failed[0]
        return verdict(
            VerdictKind.ERROR,
            f"{len(failed)} of {2 * len(seeds)} reruns failed; first: {arm} seed {a.seed} ({a.logdir}): {a.error}",
            failed=[f"{arm}/seed{x.seed}" for arm, x in failed],
        )
    same = unchanged(baseline, candidate, proposal)
    if same is not None:
        return verdict(VerdictKind.INCONCLUSIVE, same, unchanged=True)

    paired = paired_target([a.target for a in baseline], [a.target for a in candidate], seed=len(seeds))
    role = baseline[0].target_role or "train_loss"
    worse = paired.p_greater < cfg.alpha or paired.mean_rel_diff > cfg.worse_margin
    on = ""
    if paired.nonfinite_score is not None:
        # The CI and tests run on substituted scores: say so, or "inf vs 0.47, CI [-1.05, -1.01]"
        # reads as arithmetic on the raw finals.
        on = (f"non-finite finals (baseline {paired.nonfinite_baseline}/{len(seeds)}, candidate "
              f"{paired.nonfinite_candidate}/{len(seeds)}) ranked as worst, scored "
              f"{_fmt(paired.nonfinite_score)}; CI and P on those scores: ")
    target_txt = (
        f"final {role}: baseline {_fmt(_median(paired.baseline))} vs candidate {_fmt(_median(paired.candidate))} "
        f"(median; {on}mean paired diff CI [{_fmt(paired.ci[0])}, {_fmt(paired.ci[1])}], "
        f"P(candidate better) {paired.p_better:.2f})"
    )
    common = {
        "target_role": role,
        "baseline_target": list(paired.baseline),
        "candidate_target": list(paired.candidate),
        "wilcoxon_p_better": paired.p_less,
        "wilcoxon_p_worse": paired.p_greater,
        "mean_rel_diff": paired.mean_rel_diff,
        **({"nonfinite_score": paired.nonfinite_score} if paired.nonfinite_score is not None else {}),
        "baseline_symptom": [a.symptom for a in baseline],
        "candidate_symptom": [a.symptom for a in candidate],
        "baseline_rules": [list(a.rules) for a in baseline],
        "candidate_rules": [list(a.rules) for a in candidate],
    }
    n = len(seeds)

    if not rule:
        # healthy run: does the candidate break something that was fine?
        sym = fisher_symptom([a.symptom for a in candidate], [a.symptom for a in baseline])
        common["fisher_p"] = sym.p_value
        if sym.p_value < cfg.alpha or worse:
            why = (f"candidate brings findings in {sym.baseline_hits}/{n} seeds vs {sym.candidate_hits}/{n}"
                   if sym.p_value < cfg.alpha else "candidate ends worse")
            return verdict(VerdictKind.REJECTED, f"{why}; {target_txt}", sym.p_value if sym.p_value < cfg.alpha
                           else paired.p_greater, paired.ci, paired.p_better, **common)
        return verdict(VerdictKind.INCONCLUSIVE, f"no symptom to remove and candidate not worse; {target_txt}",
                       paired.p_less, paired.ci, paired.p_better, **common)

    sym = fisher_symptom([a.symptom for a in baseline], [a.symptom for a in candidate])
    common["fisher_p"] = sym.p_value
    sym_txt = f"{rule} in baseline {sym.baseline_hits}/{n} vs candidate {sym.candidate_hits}/{n} seeds"
    if sym.baseline_hits <= cfg.reproduce_fraction * n:
        return verdict(
            VerdictKind.INCONCLUSIVE,
            f"baseline reproduced {rule} in only {sym.baseline_hits}/{n} seeds at this budget; "
            "raise --budget-steps",
            sym.p_value, paired.ci, paired.p_better, **common,
        )
    if sym.p_value >= cfg.alpha:
        kind = VerdictKind.REJECTED if sym.candidate_hits >= sym.baseline_hits else VerdictKind.INCONCLUSIVE
        tail = "symptom not removed" if kind is VerdictKind.REJECTED else "fewer, but not significantly"
        return verdict(kind, f"{tail}: {sym_txt} (Fisher p={sym.p_value:.3g})", sym.p_value, paired.ci,
                       paired.p_better, **common)
    if worse:
        bias = (" (short reruns favour small LRs, so a lower LR that ends worse here will end worse in full)"
                if lowers_lr(proposal, base_lr) else "")
        return verdict(
            VerdictKind.REJECTED,
            f"removes the symptom ({sym_txt}, Fisher p={sym.p_value:.3g}) but ends worse at equal budget{bias}: "
            f"{target_txt}",
            sym.p_value, paired.ci, paired.p_better, **common,
        )
    return verdict(
        VerdictKind.CONFIRMED,
        f"symptom gone ({sym_txt}, Fisher p={sym.p_value:.3g}) and not worse: {target_txt}",
        sym.p_value, paired.ci, paired.p_better, **common,
    )


def _median(xs: Sequence[float]) -> float:
    import numpy as np

    return float(np.median(np.asarray(xs, dtype=float)))
