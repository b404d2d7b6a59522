"""Reading what a run's hparams (or a built-in workload's config) say about its optimizer, LR,
batch and length, whatever the framework named the keys."""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Mapping
from typing import Any

from ..roles import RoleView

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
    "max_steps": ("max_steps", "total_steps", "num_steps", "max_iters", "train_steps"),
}


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts to one level of dotted keys (``{"optimizer": {"lr": 1}}`` -> ``optimizer.lr``)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
            # A dict-valued "optimizer" with a "type"/"name" names the optimizer itself.
            for sub in ("type", "name", "class"):
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


def hparams_of(view: RoleView) -> dict[str, Any]:
    """The run's hparams, then the built-in workload's config (origin) for what hparams lack."""
    params = flatten(view.run.hparams or {})
    origin = view.run.origin or {}
    if isinstance(origin.get("config"), Mapping):
        for k, v in flatten(origin["config"]).items():
            params.setdefault(k, v)
    return params
