"""Statistics of a paired rerun experiment (scipy; imported lazily by the harness).

Two questions per proposal, each answered on the same seeds in both arms:

* is the symptom gone?  A binary outcome per rerun (the rule fired or not), compared with a
  one-sided Fisher exact test (H1: the baseline arm shows the symptom more often);
* does the candidate end no worse?  The paired differences ``candidate - baseline`` of the target
  metric (lower is better), with a one-sided Wilcoxon signed-rank test each way, a bootstrap CI of
  the mean difference and P(candidate better) from the bootstrap distribution.

A rerun that blew up has no finite final loss; it is scored as *worse than every finite value
seen in the experiment* (see :func:`finite_scores`) so that ranks stay right and the bootstrap
never sees an infinity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: The smallest one-sided p a Wilcoxon signed-rank test can give with n paired seeds is 2**-n.
MIN_SEEDS_FOR_ALPHA_05 = 5


@dataclass(frozen=True)
class SymptomTest:
    baseline_hits: int
    candidate_hits: int
    n: int
    p_value: float

    @property
    def baseline_rate(self) -> float:
        return self.baseline_hits / self.n if self.n else 0.0

    @property
    def candidate_rate(self) -> float:
        return self.candidate_hits / self.n if self.n else 0.0


@dataclass(frozen=True)
class PairedTest:
    n: int
    baseline: tuple[float, ...]
    candidate: tuple[float, ...]
    diffs: tuple[float, ...]  # candidate - baseline (negative = candidate better)
    rel_diffs: tuple[float, ...]  # diffs / |baseline|
    p_better: float  # P(mean paired difference < 0) under the bootstrap
    p_less: float  # Wilcoxon one-sided, H1: candidate lower (better)
    p_greater: float  # Wilcoxon one-sided, H1: candidate higher (worse)
    ci: tuple[float, float]  # bootstrap CI of the mean paired difference
    mean_rel_diff: float
    nonfinite_baseline: int
    nonfinite_candidate: int
    #: the score non-finite finals were replaced by before the tests and the CI (None: there were none)
    nonfinite_score: float | None = None


def fisher_symptom(baseline: Sequence[bool], candidate: Sequence[bool]) -> SymptomTest:
    """One-sided Fisher exact test that the candidate arm shows the symptom less often."""
    from scipy.stats import fisher_exact

    b = int(np.sum(np.asarray(baseline, dtype=bool)))
    c = int(np.sum(np.asarray(candidate, dtype=bool)))
    n_b, n_c = len(baseline), len(candidate)
    table = [[b, n_b - b], [c, n_c - c]]
    # "greater": the odds of the symptom are higher in the baseline row than in the candidate row.
    _, p = fisher_exact(table, alternative="greater")
    return SymptomTest(b, c, n_b, float(p))


def worst_score(baseline: Sequence[float], candidate: Sequence[float]) -> float:
    """The score a NaN/inf final gets: worse than every finite one in the experiment."""
    both = np.concatenate([np.asarray(baseline, dtype=np.float64), np.asarray(candidate, dtype=np.float64)])
    finite = both[np.isfinite(both)]
    if not finite.size:
        return 1.0
    hi, lo = float(finite.max()), float(finite.min())
    return hi + max(abs(hi), hi - lo, 1.0)


def finite_scores(baseline: Sequence[float], candidate: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Replace NaN/inf (a blown-up rerun) by a value worse than every finite one in the experiment."""
    b = np.asarray(baseline, dtype=np.float64)
    c = np.asarray(candidate, dtype=np.float64)
    worst = worst_score(b, c)
    return np.where(np.isfinite(b), b, worst), np.where(np.isfinite(c), c, worst)


def _wilcoxon(d: np.ndarray, alternative: str) -> float:
    from scipy.stats import wilcoxon

    if d.size == 0 or np.all(d == 0):
        return 1.0
    # zsplit keeps zero differences in the ranking instead of silently shrinking n
    res = wilcoxon(d, alternative=alternative, zero_method="zsplit", method="auto")
    return float(res.pvalue)


def paired_target(
    baseline: Sequence[float],
    candidate: Sequence[float],
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> PairedTest:
    """Paired comparison of a lower-is-better metric between the candidate and baseline arms."""
    from scipy.stats import bootstrap

    raw_b = np.asarray(baseline, dtype=np.float64)
    raw_c = np.asarray(candidate, dtype=np.float64)
    if raw_b.shape != raw_c.shape or raw_b.size == 0:
        raise ValueError("paired_target needs two non-empty arms of equal length")
    b, c = finite_scores(raw_b, raw_c)
    d = c - b
    scale = np.where(np.abs(b) > 1e-12, np.abs(b), 1.0)
    rel = d / scale
    if np.all(d == d[0]):
        # a constant sample has a degenerate bootstrap (scipy warns and returns NaN)
        ci = (float(d[0]), float(d[0]))
        p_better = 1.0 if d[0] < 0 else 0.0 if d[0] > 0 else 0.5
    else:
        res = bootstrap(
            (d,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
            method="percentile", random_state=np.random.default_rng(seed),
        )
        ci = (float(res.confidence_interval.low), float(res.confidence_interval.high))
        dist = np.asarray(res.bootstrap_distribution)
        p_better = float(np.mean(dist < 0) + 0.5 * np.mean(dist == 0))
    return PairedTest(
        n=int(d.size),
        baseline=tuple(float(x) for x in raw_b),
        candidate=tuple(float(x) for x in raw_c),
        diffs=tuple(float(x) for x in d),
        rel_diffs=tuple(float(x) for x in rel),
        p_better=p_better,
        p_less=_wilcoxon(d, "less"),
        p_greater=_wilcoxon(d, "greater"),
        ci=ci,
        mean_rel_diff=float(np.mean(rel)),
        nonfinite_baseline=int(np.sum(~np.isfinite(raw_b))),
        nonfinite_candidate=int(np.sum(~np.isfinite(raw_c))),
        nonfinite_score=None if np.isfinite(raw_b).all() and np.isfinite(raw_c).all() else worst_score(raw_b, raw_c),
    )


def smoothed_final(values: np.ndarray, window: int = 5) -> float:
    """The mean of the last ``window`` points; NaN/inf anywhere in the run makes it +inf.

    A run that went NaN and "recovered" to finite numbers (e.g. a logger that resets) is still a
    run that blew up, so any non-finite point counts.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return float("nan")
    if not np.all(np.isfinite(v)):
        return float("inf")
    return float(np.mean(v[-max(1, window):]))
