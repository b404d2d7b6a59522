"""Small real PyTorch trainings that reproduce training pathologies, with pluggable log writers.

Stable API (used by verification and the corpus scripts)::

    from lrdoctor.workloads import WorkloadConfig, train, recipe_config, RECIPES
    cfg = WorkloadConfig.from_dict(run.origin["config"]).apply_patch(patch)
    result = train(cfg, logdir, fmt)          # -> TrainResult

Only :mod:`.config` is imported eagerly; torch is imported when training starts. The training
loop's module is :mod:`.training`; ``lrdoctor.workloads.train`` is always the function, even after
``from lrdoctor.workloads.train import ...`` (a compatibility alias of ``.training``) has run.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from .config import WORKLOADS, WorkloadConfig

_LAZY = {
    "train": "lrdoctor.workloads.training",
    "TrainResult": "lrdoctor.workloads.training",
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


class _Package(types.ModuleType):
    """Keeps the lazy ``train`` function from being shadowed by a submodule of the same name.

    Importing a submodule ``pkg.x`` ends with ``setattr(pkg, "x", module)``; for the compatibility
    module ``lrdoctor.workloads.train`` that would turn ``lrdoctor.workloads.train`` (and
    ``from lrdoctor.workloads import train``) into the module, so it is not stored and
    ``__getattr__`` keeps answering with the function.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
