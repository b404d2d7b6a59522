"""One config object for every built-in workload, and the patch schema applied to it.

:class:`WorkloadConfig` is what ``lrdoctor-run.json`` stores under ``"config"`` (``to_dict()``),
what verification rebuilds (``WorkloadConfig.from_dict(run.origin["config"])``) and what a
Proposal's ``config`` patch edits (``cfg.apply_patch(patch)``). Stable API:

- ``WorkloadConfig.from_dict(d)`` ignores no key silently: unknown keys raise UsageError.
- ``cfg.apply_patch(patch)`` implements the shared patch schema (all keys optional):
  ``lr`` (new absolute peak LR), ``lr_scale`` (multiply LR), ``optimizer`` ({"type": ..., kwargs};
  same type or no type merges kwargs, a new type replaces them), ``weight_decay``,
  ``warmup_steps``, ``warmup_start_factor``, ``scheduler`` ({"type": torch class name or
  "constant", kwargs by torch's names}; same type or no type merges kwargs, a new type replaces
  them), ``clip_grad_norm``, ``clip_grad_value`` (None removes clipping), ``max_steps``,
  ``early_stop_step``, ``early_stop_epoch`` (epochs to train on an epoch-axis log: becomes
  ``early_stop_step`` = epochs x ``epoch_steps``), ``skip_batches`` ([[first, last], ...], inclusive), ``batch_size``,
  ``restore_scheduler_state`` (true: a resume keeps the schedule, so no ``schedule_restart_step``),
  ``rewarmup_steps`` (after a schedule restart, ramp the LR from ``warmup_start_factor`` over this many steps).
  ``lr``/``lr_scale`` scale the scheduler's absolute LRs (``max_lr``, ``base_lr``, ``eta_min``)
  by the same factor, so the whole LR curve moves together.

Steps are counted from 1 (the number of optimizer steps done, like HF's ``global_step``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from ..patch import ConfigPatch

WORKLOADS = ("mlp_regressor", "cnn_classifier", "gru_lm", "transformer_lm", "deep_sigmoid_mlp")
OPTIMIZERS = ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad")
_LR_KWARGS = ("max_lr", "base_lr", "eta_min")


@dataclass(frozen=True)
class WorkloadConfig:
    workload: str = "mlp_regressor"
    seed: int = 0
    max_steps: int = 600
    batch_size: int = 32
    lr: float = 1e-3  # peak LR (the LR every scheduler starts from / peaks at)
    optimizer: dict[str, Any] = field(default_factory=lambda: {"type": "Adam"})
    weight_decay: float = 0.0
    warmup_steps: int = 0
    warmup_start_factor: float = 0.01
    scheduler: dict[str, Any] = field(default_factory=lambda: {"type": "constant"})
    clip_grad_norm: float | None = None
    clip_grad_value: float | None = None
    early_stop_step: int | None = None
    skip_batches: tuple[tuple[int, int], ...] = ()
    eval_every: int = 25
    log_every: int = 1
    train_size: int = 2048
    val_size: int = 512
    label_noise: float = 0.0  # classification: fraction of flipped labels; regression: noise std
    poison_steps: tuple[int, ...] = ()
    poison_scale: float = 30.0
    #: fault: at this step the LR scheduler is rebuilt from scratch, as a run resumed from a
    #: checkpoint without its scheduler state does (the LR jumps back to its peak, the decay starts again)
    schedule_restart_step: int | None = None
    rewarmup_steps: int = 0  # after such a restart, ramp the LR up over this many steps
    poison_kind: str = "auto"  # "auto" (per task, see training.py) | "repeat" (LM: one character repeated)
    model: dict[str, Any] = field(default_factory=dict)  # workload-specific sizes, see models.py
    epoch_steps: int = 20  # steps per "epoch" for epoch-axis formats (keras_csv) and HF's epoch
    recipe: str | None = None  # which recipe labeller computes the ground truth after training
    num_threads: int | None = None  # torch intra-op threads during train(); None -> 1
    # save a resumable checkpoint every N steps (0 = never) and keep the last N (plus those before
    # a loss anomaly, see checkpointing.py); verify forks its reruns from them
    checkpoint_every: int = 0
    checkpoint_keep: int = 3

    def __post_init__(self) -> None:
        if self.workload not in WORKLOADS:
            raise UsageError(f"unknown workload {self.workload!r} (known: {', '.join(WORKLOADS)})")
        opt = self.optimizer.get("type", "Adam")
        if opt not in OPTIMIZERS:
            raise UsageError(f"unknown optimizer {opt!r} (known: {', '.join(OPTIMIZERS)})")
        if self.max_steps < 1 or self.batch_size < 1 or self.eval_every < 1 or self.log_every < 1:
            raise UsageError("max_steps, batch_size, eval_every and log_every must be >= 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise UsageError(f"lr must be a positive number, got {self.lr!r}")
        if self.warmup_steps < 0:
            raise UsageError("warmup_steps must be >= 0")
        if self.checkpoint_every < 0 or self.checkpoint_keep < 0:
            raise UsageError("checkpoint_every and checkpoint_keep must be >= 0")
        # Normalise containers so JSON round trips compare equal.
        object.__setattr__(self, "skip_batches", tuple((int(a), int(b)) for a, b in self.skip_batches))
        object.__setattr__(self, "poison_steps", tuple(int(s) for s in self.poison_steps))
        object.__setattr__(self, "optimizer", {"type": opt, **{k: v for k, v in self.optimizer.items() if k != "type"}})
        sched = dict(self.scheduler) if self.scheduler else {"type": "constant"}
        sched.setdefault("type", "constant")
        object.__setattr__(self, "scheduler", sched)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["skip_batches"] = [list(p) for p in self.skip_batches]
        d["poison_steps"] = list(self.poison_steps)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WorkloadConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise UsageError(f"unknown workload config keys: {', '.join(unknown)}")
        return cls(**d)

    def replace(self, **changes: Any) -> WorkloadConfig:
        return dataclasses.replace(self, **changes)

    def apply_patch(self, patch: Mapping[str, Any]) -> WorkloadConfig:
        """A new config with a config patch applied (see the module docstring); the patch is
        validated as a :class:`lrdoctor.patch.ConfigPatch` (unknown keys are a UsageError)."""
        patch = ConfigPatch.of(patch)
        ch: dict[str, Any] = {}
        sched = dict(self.scheduler)
        if "scheduler" in patch:
            new = dict(patch["scheduler"] or {"type": "constant"})
            if new.get("type", sched["type"]) != sched["type"]:
                sched = new
            else:
                sched.update(new)
            ch["scheduler"] = sched
        factor = 1.0
        if "lr" in patch:
            # "lr" is the new *peak*: for a schedule that steps the LR up (gamma > 1) the peak is
            # past cfg.lr, and a proposal's peak LR read from the logs is that one
            factor = float(patch["lr"]) / (self.lr * self.peak_multiplier)
        if "lr_scale" in patch:
            factor *= float(patch["lr_scale"])
        if factor != 1.0:
            ch["lr"] = self.lr * factor
            explicit = patch.get("scheduler") or {}
            scaled = {k: _scale(sched[k], factor) for k in _LR_KWARGS if k in sched and k not in explicit}
            if scaled:
                ch["scheduler"] = {**sched, **scaled}
        if "optimizer" in patch:
            new = dict(patch["optimizer"])
            old = dict(self.optimizer)
            ch["optimizer"] = new if new.get("type", old["type"]) != old["type"] else {**old, **new}
        for key in ("weight_decay", "warmup_start_factor"):
            if key in patch:
                ch[key] = float(patch[key])
        if patch.get("restore_scheduler_state"):
            ch["schedule_restart_step"] = None
        for key in ("warmup_steps", "max_steps", "batch_size", "rewarmup_steps"):
            if key in patch:
                ch[key] = int(patch[key])
        for key in ("clip_grad_norm", "clip_grad_value"):
            if key in patch:
                ch[key] = None if patch[key] is None else float(patch[key])
        if "early_stop_step" in patch:
            ch["early_stop_step"] = None if patch["early_stop_step"] is None else int(patch["early_stop_step"])
        elif patch.get("early_stop_epoch") is not None:
            # epochs to train (counted from 1) on an epoch-axis log; a workload knows its epoch length
            ch["early_stop_step"] = int(patch["early_stop_epoch"]) * self.epoch_steps
        if "skip_batches" in patch:
            ch["skip_batches"] = tuple((int(a), int(b)) for a, b in patch["skip_batches"])
        return dataclasses.replace(self, **ch)

    @property
    def peak_multiplier(self) -> float:
        """Largest LR of the schedule over ``cfg.lr``: 1, except for step schedules whose gamma > 1."""
        kind, gamma = self.scheduler.get("type"), float(self.scheduler.get("gamma", 0.1) or 0.1)
        if gamma <= 1 or kind not in ("MultiStepLR", "StepLR", "ExponentialLR"):
            return 1.0
        s = self.scheduler_steps
        if kind == "MultiStepLR":
            return gamma ** sum(1 for m in self.scheduler.get("milestones", ()) if int(m) < s)
        if kind == "StepLR":
            return gamma ** ((s - 1) // max(1, int(self.scheduler.get("step_size", max(1, s // 3)))))
        return gamma ** (s - 1)

    @property
    def scheduler_steps(self) -> int:
        """Steps the main scheduler runs for (warmup excluded, as the patch schema says)."""
        return max(1, self.max_steps - self.warmup_steps)

    def is_skipped(self, step: int) -> bool:
        return any(a <= step <= b for a, b in self.skip_batches)


def _scale(v: Any, factor: float) -> Any:
    if isinstance(v, (list, tuple)):
        return [x * factor for x in v]
    return v * factor
