"""Small real PyTorch trainings that reproduce training pathologies, with pluggable log writers.

Stable API (used by verification and the corpus scripts)::

    from lrdoctor.workloads import WorkloadConfig, train, recipe_config, RECIPES
    cfg = WorkloadConfig.from_dict(run.origin["config"]).apply_patch(patch)
    result = train(cfg, logdir, fmt)          # -> TrainResult

Only :mod:`.config` is imported eagerly; torch is imported when training starts.
"""

from __future__ import annotations

import importlib
from typing import Any

from .config import WORKLOADS, WorkloadConfig

_LAZY = {
    "train": "lrdoctor.workloads.train",
    "TrainResult": "lrdoctor.workloads.train",
    "build_optimizer": "lrdoctor.workloads.schedules",
    "build_scheduler": "lrdoctor.workloads.schedules",
    "RECIPES": "lrdoctor.workloads.recipes",
    "recipe_config": "lrdoctor.workloads.recipes",
    "label_run": "lrdoctor.workloads.recipes",
    "FORMATS": "lrdoctor.workloads.writers",
}

__all__ = ["WORKLOADS", "WorkloadConfig", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lrdoctor.workloads' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
