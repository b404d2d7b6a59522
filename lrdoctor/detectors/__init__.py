"""Pure, vectorised detectors: role series in, :class:`~lrdoctor.detectors.base.Evidence` or None out.

Built-in kinds are listed in :data:`lrdoctor.engine.registry.BUILTIN`.
"""

from .base import Evidence

__all__ = ["Evidence"]
