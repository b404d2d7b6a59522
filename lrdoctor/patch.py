"""The config patch: what a proposal changes in a training run, as one frozen, validated type.

Proposals build it, the code generator turns it into PyTorch code, verification applies it to a
built-in workload (``WorkloadConfig.apply_patch``), hands it to a ``--train`` command (placeholders
and ``LRDOCTOR_VERIFY_CONFIG``) or to :class:`lrdoctor.Controller` inside a script. The key list
below is the only one; every consumer derives its own subset from it.

A patch reads like a mapping (``patch["lr"]``, ``"lr" in patch``, ``patch == {"lr": 1e-3}``) and
keeps its values exactly as given (``10`` stays an int, so its JSON -- and the rerun directory
named by its hash -- does not change); :meth:`ConfigPatch.to_dict` is the JSON form.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import UsageError
from .frozen import FrozenJSON

#: Every key a patch may hold, and what it means (all optional).
PATCH_KEYS: dict[str, str] = {
    "lr": "new absolute peak LR (the schedule's absolute LRs move with it)",
    "lr_scale": "multiply the LR (and the schedule's absolute LRs)",
    "optimizer": '{"type": torch class name, kwargs}: same or no type merges kwargs, a new type replaces them',
    "weight_decay": "weight decay",
    "warmup_steps": "linear warmup steps (0 = none)",
    "warmup_start_factor": "LR factor the warmup starts from",
    "scheduler": '{"type": torch class name or "constant", kwargs by torch\'s names}',
    "clip_grad_norm": "gradient-norm clip threshold (None removes clipping)",
    "clip_grad_value": "gradient-value clip (None removes it)",
    "max_steps": "training length in optimizer steps",
    "early_stop_step": "stop after this many optimizer steps",
    "early_stop_epoch": "stop after this many epochs (epoch-axis logs)",
    "skip_batches": "[[first, last], ...] optimizer steps whose batches are skipped (inclusive)",
    "batch_size": "batch size",
    "restore_scheduler_state": "resume with the scheduler's saved state (true), so the LR does not restart",
    "rewarmup_steps": "warm the LR up again over this many steps from where the run resumed",
}
#: Keys a training script must apply itself: the Controller cannot change them from inside the loop.
OUTSIDE_LOOP = ("batch_size", "early_stop_step", "early_stop_epoch", "skip_batches", "restore_scheduler_state",
                "rewarmup_steps")
#: Keys the Controller applies to the optimizer, scheduler and clipping of a running script.
IN_LOOP = tuple(k for k in PATCH_KEYS if k not in OUTSIDE_LOOP and k != "max_steps")

_POSITIVE = ("lr", "lr_scale")
_NON_NEGATIVE = ("weight_decay", "warmup_start_factor")
_COUNTS = ("warmup_steps", "max_steps", "batch_size", "early_stop_step", "early_stop_epoch", "rewarmup_steps")
_OPTIONAL_POSITIVE = ("clip_grad_norm", "clip_grad_value")
_SPECS = ("optimizer", "scheduler")


def _number(key: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise UsageError(f"config patch: {key} must be a finite number, got {v!r}")
    return float(v)


def _check(key: str, v: Any) -> None:
    """Raise UsageError when ``v`` is not a valid value of ``key`` (nothing is converted)."""
    if key in _POSITIVE and _number(key, v) <= 0:
        raise UsageError(f"config patch: {key} must be > 0, got {v!r}")
    if key in _NON_NEGATIVE and _number(key, v) < 0:
        raise UsageError(f"config patch: {key} must be >= 0, got {v!r}")
    if key in _OPTIONAL_POSITIVE and v is not None and _number(key, v) <= 0:
        raise UsageError(f"config patch: {key} must be > 0 or null, got {v!r}")
    if key in _COUNTS and v is not None and (_number(key, v) < 0 or not float(v).is_integer()):
        raise UsageError(f"config patch: {key} must be a whole number >= 0, got {v!r}")
    if key in _SPECS and v is not None and not (isinstance(v, Mapping) and isinstance(v.get("type", ""), str)):
        raise UsageError(f"config patch: {key} must be an object with an optional \"type\" name, got {v!r}")
    if key == "restore_scheduler_state" and not isinstance(v, bool):
        raise UsageError(f"config patch: restore_scheduler_state must be true or false, got {v!r}")
    if key == "skip_batches":
        ok = isinstance(v, (list, tuple)) and all(
            isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(x, int) and not isinstance(x, bool)
                                                                 for x in p) and p[0] <= p[1] for p in v)
        if not ok:
            raise UsageError(f"config patch: skip_batches must be [[first, last], ...] steps, got {v!r}")


@dataclass(frozen=True, eq=False)
class ConfigPatch(FrozenJSON):
    """An immutable, validated config patch (build it with :meth:`of`)."""

    @classmethod
    def of(cls, patch: Mapping[str, Any] | None = None, **changes: Any) -> ConfigPatch:
        """A validated patch from a mapping (and/or keywords); a one-line UsageError names an
        unknown key or a bad value."""
        if isinstance(patch, ConfigPatch) and not changes:
            return patch
        d = {**dict(patch or {}), **changes}
        unknown = [k for k in d if k not in PATCH_KEYS]
        if unknown:
            raise UsageError(f"unknown config patch keys: {', '.join(sorted(map(str, unknown)))} "
                             f"(known: {', '.join(PATCH_KEYS)})")
        for k, v in d.items():
            _check(k, v)
        return cls(tuple((k, copy.deepcopy(v)) for k, v in d.items()))
