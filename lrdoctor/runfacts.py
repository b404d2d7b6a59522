"""One answer to "what was this run's LR, length, clip threshold, optimizer, batch size".

What a run's hparams (nested dicts flattened to dotted keys) or, for what they lack, a built-in
workload's config (``Run.origin``) say, whatever the framework named the keys; the LR falls back
to the logged LR's peak. Proposals, verify and the report all ask here, so they cannot disagree.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from .model import Run
from .roles import RoleView

_OPTIMIZER_NAMES = {
    "adamw": "AdamW", "adam": "Adam", "sgd": "SGD", "rmsprop": "RMSprop", "adagrad": "Adagrad",
    "adamax": "Adamax", "nadam": "NAdam", "radam": "RAdam", "adafactor": "Adafactor",
    "lamb": "LAMB", "lion": "Lion", "sgdm": "SGD", "momentum": "SGD", "nesterov": "SGD",
}

# hparams keys (last dotted component, lower case, '-' and ' ' as '_'), most specific first.
_KEYS = {
    "lr": ("lr", "learning_rate", "learningrate", "peak_lr", "max_lr", "base_lr", "lr0", "init_lr"),
    "optimizer": ("optimizer", "optim", "optimizer_name", "optimizer_type", "opt"),
    "betas": ("betas",),
    "beta1": ("beta1", "adam_beta1", "beta_1"),
    "beta2": ("beta2", "adam_beta2", "beta_2"),
    "momentum": ("momentum",),
    "weight_decay": ("weight_decay", "weightdecay", "wd"),
    "batch_size": ("batch_size", "train_batch_size", "per_device_train_batch_size", "batchsize", "bs"),
    "world_size": ("world_size", "num_gpus", "n_gpu", "n_gpus", "gpus", "num_devices", "devices", "nproc"),
    "grad_accum": ("gradient_accumulation_steps", "accumulate_grad_batches", "grad_accum", "grad_accum_steps"),
    "warmup_steps": ("warmup_steps", "warmup_iters", "warmup"),
    "steps_per_epoch": ("steps_per_epoch", "epoch_steps", "num_update_steps_per_epoch"),
    "max_steps": ("max_steps", "total_steps", "num_steps", "max_iters", "train_steps", "num_training_steps"),
    # HF TrainingArguments' max_grad_norm and Lightning's gradient_clip_val are the same threshold
    "clip_grad_norm": ("clip_grad_norm", "max_grad_norm", "gradient_clip_val"),
}


def flatten(d: Mapping[str, Any], prefix: str = "", *, lookup_keys: bool = False) -> dict[str, Any]:
    """Nested dicts to one level of dotted keys (``{"optimizer": {"lr": 1}}`` -> ``optimizer.lr``);
    an empty dict stays a value. With ``lookup_keys`` (what :func:`lookup` reads), empty dicts are
    dropped and a dict-valued "optimizer" with a "type"/"name"/"class" also names the optimizer
    itself under its own key."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and (v or lookup_keys):
            out.update(flatten(v, key + ".", lookup_keys=lookup_keys))
            for sub in ("type", "name", "class") if lookup_keys else ():
                if isinstance(v.get(sub), str):
                    out.setdefault(key, v[sub])
        else:
            out[key] = v
    return out


def _norm_key(key: str) -> str:
    parts = re.split(r"[./]", key.strip())
    last = parts[-1]
    # "optimizer.type" / "optimizer/name" (flat hparams of a nested config) name the optimizer.
    if last.lower() in ("type", "name", "class") and len(parts) > 1:
        last = parts[-2]
    return re.sub(r"[\s\-]+", "_", last.lower())


def lookup(params: Mapping[str, Any], name: str) -> tuple[str, Any] | None:
    """The first hparams entry whose last key component is one of ``_KEYS[name]`` (in that
    order of preference), as ``(full key, value)``; keys under a scheduler are never an LR."""
    normed = [(k, _norm_key(k), v) for k, v in params.items()]
    for alias in _KEYS[name]:
        for key, nk, value in normed:
            if nk == alias and not re.search(r"sched|warmup_?ratio|finder", key.lower()):
                if value is None or (isinstance(value, str) and not value.strip()):
                    continue
                return key, value
    return None


def as_float(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def as_int(v: Any) -> int | None:
    f = as_float(v)
    if f is None or f <= 0 or f != int(f):
        return None
    return int(f)


def as_pair(v: Any) -> tuple[float, float] | None:
    if isinstance(v, str):
        try:
            v = ast.literal_eval(v.strip())
        except (ValueError, SyntaxError):
            return None
    if isinstance(v, (list, tuple)) and len(v) == 2:
        a, b = as_float(v[0]), as_float(v[1])
        if a is not None and b is not None:
            return (a, b)
    return None


def optimizer_name(v: Any) -> str | None:
    """Normalise 'torch.optim.AdamW', 'adamw', 'AdamW (lr=...)' to a torch class name."""
    if not isinstance(v, str):
        return None
    for token in re.findall(r"[A-Za-z]+", v):
        name = _OPTIMIZER_NAMES.get(token.lower())
        if name:
            return name
    return None


def hparams_of(run: Run) -> dict[str, Any]:
    """The run's hparams, then the built-in workload's config (origin) for what hparams lack,
    flattened to dotted keys."""
    params = flatten(run.hparams or {}, lookup_keys=True)
    config = run.origin.config if run.origin is not None else None
    if config:
        for k, v in flatten(config, lookup_keys=True).items():
            params.setdefault(k, v)
    return params


def configured(run: Run, name: str, params: Mapping[str, Any] | None = None) -> tuple[str, Any] | None:
    """``(key, value)`` of the configured ``name`` (a key of the alias table), or None."""
    return lookup(hparams_of(run) if params is None else params, name)


def configured_lr(run: Run) -> float | None:
    """The configured (peak) LR when hparams or the workload config give a positive one."""
    hit = configured(run, "lr")
    lr = as_float(hit[1]) if hit is not None else None
    return lr if lr is not None and lr > 0 else None


def peak_lr_unseen(run: Run) -> bool:
    """Whether :func:`base_lr` comes from the logs (no configured LR) and the logged LR was still
    rising when they end (its last point the highest and above the median of the last tenth): the
    run stopped during a warmup, so the logged peak is below the one its schedule would reach."""
    if configured_lr(run) is not None:
        return False
    s = RoleView.of(run).get("lr")
    if s is None:
        return False
    v = s.values[np.isfinite(s.values)]
    if v.size < 3:
        return False
    tail = v[-max(3, v.size // 10):]
    return bool(v[-1] >= v.max() and v[-1] > np.median(tail))


def base_lr(run: Run) -> float | None:
    """The run's LR: the configured one, else the logged LR's peak (a warmup starts low; a run
    stopped during its warmup logged less than its peak, see :func:`peak_lr_unseen`)."""
    lr = configured_lr(run)
    return lr if lr is not None else logged_peak_lr(run)


def logged_peak_lr(run: Run) -> float | None:
    """The largest finite LR the run logged, or None."""
    s = RoleView.of(run).get("lr")
    if s is not None and len(s):
        finite = s.values[np.isfinite(s.values)]
        if finite.size:
            return float(np.max(finite))
    return None


def clip_threshold(run: Run) -> float | None:
    """The gradient-norm clip the run trained with (None: no clipping, or not known)."""
    hit = configured(run, "clip_grad_norm")
    v = as_float(hit[1]) if hit is not None else None
    return v if v is not None and v > 0 else None


def planned_steps(run: Run) -> int | None:
    """The configured length in optimizer steps (a run killed early is shorter than planned)."""
    hit = configured(run, "max_steps")
    return as_int(hit[1]) if hit is not None else None
