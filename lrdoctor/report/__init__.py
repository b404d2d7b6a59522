"""The self-contained HTML report (``lrdoctor report``, ``lrdoctor diagnose --html``)."""

from __future__ import annotations

from .html import render_report, write_report

__all__ = ["render_report", "write_report"]
