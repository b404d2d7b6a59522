"""Optional dependencies, named before any work starts.

Reading and diagnosing logs needs only the core dependencies; workload reruns need torch, the Ray
executor Ray, parquet export pyarrow. A missing one must be one line that says what to install,
raised before the first rerun starts - not a ``ModuleNotFoundError`` traceback from every rerun.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import UsageError


class MissingDependencyError(UsageError, ImportError):
    """An optional package that the requested feature needs is not importable (an ImportError
    too, so ``try: import lrdoctor.integrations.hf`` / ``except ImportError`` keeps working)."""


#: module -> the pip requirement that provides it (an lrdoctor extra where there is one)
INSTALL = {
    "torch": "'lrdoctor[torch]'",
    "ray": "'lrdoctor[ray]'",
    "pyarrow": "'lrdoctor[parquet]'",
    "tensorboardX": "tensorboardX",
    "transformers": "transformers",
    "lightning.pytorch.callbacks": "lightning",
}


def require(module: str, what: str) -> ModuleType:
    """Import ``module`` or raise a one-line :class:`MissingDependencyError`: "<what> needs
    <module>: pip install <requirement>". A module that is present but fails to import (a broken
    install, a missing shared library) is reported the same way, with the import's own message."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        hint = INSTALL.get(module, module)
        top = module.partition(".")[0]
        why = "" if isinstance(exc, ModuleNotFoundError) and exc.name in (module, top) else f" ({exc})"
        raise MissingDependencyError(f"{what} needs {top}{why}: pip install {hint}") from exc
