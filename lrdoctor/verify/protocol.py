"""The verification protocol: how many seeds, how long each rerun, what counts as "not worse".

Defaults (each overridable from the CLI or :class:`VerifyConfig`):

* **5 paired seeds** (0..4). Both arms of a pair use the same seed, hence the same initialisation
  and data order. 3 or 4 seeds are allowed with a warning: a one-sided paired test on n seeds
  cannot go below p = 2**-n, so 3 seeds can never reach p < 0.05 on the target metric (the Fisher
  test on the symptom needs >= 4 per arm to reach it, too). Fewer than 3 is refused.
* **Budget** (steps per rerun, both arms equal): from the start to past the finding (its last
  listed event, e.g. the last spike, or the end of its stretch) plus a recovery margin of
  ``max(min_recovery_steps, recovery_fraction * onset)``, at least ``min_fraction`` (half) of the
  original run - a rule that judges a trend (plateau, overfitting) needs a stretch of curve even when
  the onset is at the start - and capped at
  ``max_fraction`` of the original run's length (its configured length when known: a diverged
  run's logs stop early) - but never below ``onset + min_recovery_steps`` nor ``min_budget_steps``.
  ``--budget-steps`` overrides it. A rerun forked from a checkpoint (checkpoints.py) starts at
  the latest checkpoint at or before ``onset - fork_margin_steps`` and runs to past the last event
  plus ``max(min_recovery_steps, recovery_fraction * (last event - fork))``, and that margin past
  the last batch a proposal skips when it skips some (:func:`fork_budget`).
* **Re-diagnosis**: each rerun is diagnosed with the same rules, each rule on its own (no
  superseding). Logged grad norms are pre-clipping, so gradient rules judge the norm that reaches
  the optimizer, ``min(logged norm, the arm's clip threshold)`` (NaN/inf kept). The target metric
  is the mean of the last ``smooth_window`` val-loss points, else of the last 5% of the train
  loss; any NaN/inf in it makes it +inf (scored worse than every finite value).
* **Verdict thresholds**: ``alpha = 0.05`` for the Fisher test; the baseline must reproduce the
  symptom in more than ``reproduce_fraction`` (half) of the seeds; the candidate is "worse" when
  its target metric is higher in a one-sided Wilcoxon test at ``alpha`` or its mean relative
  difference exceeds ``worse_margin`` (5%).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..errors import VerifyError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VerifyConfig:
    seeds: int = 5
    first_seed: int = 0
    budget_steps: int | None = None  # fixed budget; None = derived from the onset
    recovery_fraction: float = 0.5
    min_recovery_steps: int = 50
    max_fraction: float = 1.0  # cap: never longer than the original run (lower it to save time)
    min_fraction: float = 0.5  # of the original run: trend rules (plateau, overfitting) need a stretch
    min_budget_steps: int = 50
    alpha: float = 0.05
    reproduce_fraction: float = 0.5
    worse_margin: float = 0.05
    smooth_window: int = 5  # points averaged for the "smoothed final" target metric
    device: str = "cpu"  # resolved device: "cpu" or "cuda"
    rerun_timeout_s: float | None = None  # None: derived from the run's wall time (verify/timeouts.py); 0: none
    # forking from a checkpoint (checkpoints.py): on/off, --checkpoints PATTERN, and how far before
    # the onset the fork must be (detectors need a stretch of normal curve before the event)
    fork: bool = True
    checkpoints: str | None = None
    # --base-lr: the original run's peak LR, the baseline reruns' {lr} with --train (None: the
    # configured LR, else the logged LR's peak, which is short of the peak for a run stopped in warmup)
    base_lr: float | None = None
    fork_margin_steps: int = 100
    # the LR ladder (ladder.py): at most this many rungs in all, each LR x or / this factor
    ladder_rungs: int = 3
    ladder_factor: float = 3.0

    def seed_list(self) -> tuple[int, ...]:
        return tuple(range(self.first_seed, self.first_seed + self.seeds))

    def check(self, *, warn: bool = True) -> VerifyConfig:
        if self.seeds < 3:
            raise VerifyError(f"--seeds {self.seeds}: a paired test needs at least 3 seeds (5 recommended)")
        if self.seeds < 5 and warn:
            log.warning(
                "%d paired seeds: a one-sided paired test cannot go below p = %.3f, so it cannot reach "
                "p < 0.05; use 5 seeds for a conclusive verdict", self.seeds, 2.0 ** -self.seeds,
            )
        if self.base_lr is not None and not self.base_lr > 0:
            raise VerifyError(f"--base-lr must be positive, got {self.base_lr}")
        if self.budget_steps is not None and self.budget_steps < 1:
            raise VerifyError(f"--budget-steps must be positive, got {self.budget_steps}")
        if self.fork_margin_steps < 0:
            raise VerifyError(f"fork_margin_steps must be >= 0, got {self.fork_margin_steps}")
        if self.ladder_rungs < 1 or self.ladder_factor <= 1:
            raise VerifyError("ladder_rungs must be >= 1 and ladder_factor > 1")
        if not 0 < self.max_fraction <= 1:
            raise VerifyError(f"max_fraction must be in (0, 1], got {self.max_fraction}")
        return self


def budget_for(cfg: VerifyConfig, onset: int | None, original_steps: int | None, last_event: int | None = None) -> int:
    """Steps per rerun for a finding whose symptom sets in at ``onset`` and ends at ``last_event``
    (the last of several spikes, or the end of a stretch)."""
    if cfg.budget_steps is not None:
        return int(cfg.budget_steps)
    if onset is None:
        # no onset (a healthy run, or a finding without a step): rerun the whole original length
        if original_steps is None:
            raise VerifyError("cannot derive a rerun budget: no onset step and no run length; pass --budget-steps")
        return max(cfg.min_budget_steps, int(original_steps))
    margin = max(cfg.min_recovery_steps, int(round(cfg.recovery_fraction * onset)))
    budget = max(int(onset), int(last_event or 0)) + margin
    if original_steps:
        budget = max(budget, int(round(cfg.min_fraction * original_steps)))
        # the cap never cuts into the minimum margin past the onset: a rerun that stops at the
        # onset cannot show the symptom (a diverged run's logs end a few steps after it)
        cap = int(round(cfg.max_fraction * original_steps))
        budget = min(budget, max(cap, int(onset) + cfg.min_recovery_steps))
    return max(cfg.min_budget_steps, budget)


def fork_budget(cfg: VerifyConfig, start: int, onset: int, last_event: int | None, skip_end: int | None = None) -> int:
    """Steps per rerun that starts at checkpoint step ``start``: to past the finding's last event
    plus a recovery margin of ``max(min_recovery_steps, recovery_fraction * (end - start))`` - the
    same margin as from step 0, measured from the fork instead of from the start. ``skip_end`` is
    the last step of the batches a proposal skips (``skip_batches``): the reruns run that margin
    past it too, or a candidate that rolls back and skips would never train again inside its rerun."""
    if cfg.budget_steps is not None:
        return int(cfg.budget_steps)
    end = max(int(onset), int(last_event if last_event is not None else onset))
    margin = max(cfg.min_recovery_steps, int(round(cfg.recovery_fraction * (end - start))))
    return max(end, int(skip_end if skip_end is not None else end)) + margin - int(start)


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``."""
    device = (device or "auto").lower()
    if device not in ("auto", "cpu", "cuda"):
        raise VerifyError(f"--device must be auto, cpu or cuda, got {device!r}")
    if device == "cpu":
        return device
    try:
        import torch

        has_cuda = bool(torch.cuda.is_available())
    except ImportError:
        if device == "cuda":
            from .._optional import require

            require("torch", "--device cuda")
        has_cuda = False
    if device == "cuda" and not has_cuda:
        raise VerifyError("--device cuda: torch sees no CUDA device")
    return "cuda" if has_cuda else "cpu"
