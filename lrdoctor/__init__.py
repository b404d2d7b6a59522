"""lrdoctor: diagnose PyTorch training runs offline from their logs.

The public library surface is :mod:`lrdoctor.api` (``load_runs``, ``diagnose``, ``report``,
``verify``) and :class:`lrdoctor.Controller` for in-script verification. Attributes are resolved
lazily so that ``import lrdoctor`` never imports torch or matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Controller": "lrdoctor.verify.controller",
    "load_runs": "lrdoctor.api",
    "diagnose": "lrdoctor.api",
    "report": "lrdoctor.api",
    "verify": "lrdoctor.api",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lrdoctor' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
