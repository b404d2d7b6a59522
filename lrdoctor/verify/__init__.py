"""Verification: confirm or reject proposals with short paired reruns (see protocol.py).

``verify_path(path, ...)`` diagnoses the runs under a path and verifies their proposals (what
``lrdoctor verify`` does); ``verify_items(items, diagnose_fn, VerifyConfig(...), out=..., executor=...)``
verifies given (run, finding, proposals) triples.
"""

from __future__ import annotations

from .entry import verify_path
from .protocol import VerifyConfig
from .runner import RunVerification, verify_items

__all__ = ["VerifyConfig", "RunVerification", "verify_items", "verify_path"]
