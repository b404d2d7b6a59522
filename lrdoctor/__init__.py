"""lrdoctor: diagnose PyTorch training runs offline from their logs."""

from __future__ import annotations

__version__ = "0.1.0"
