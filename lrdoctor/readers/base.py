"""The reader interface: every log format is one module with one :class:`Reader`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..model import Run

#: Name of the file a built-in workload writes into each run directory (workload + config +
#: ground-truth labels). Discovery never treats it as a log; it becomes ``Run.origin``.
ORIGIN_FILE = "lrdoctor-run.json"
#: JSON Lines the live callbacks append to a run's log directory (findings, stops, rollbacks).
#: Discovery never treats it as a log; its records become the run's annotations.
FINDINGS_FILE = "lrdoctor-findings.jsonl"


@dataclass(frozen=True)
class ReadOptions:
    strict: bool = False  # corrupt records are errors instead of skipped-with-annotation


@dataclass(frozen=True)
class RunSource:
    """The files that make up one run, found by discovery."""

    name: str  # from the run's path relative to the searched root
    root: Path  # the run's directory (or the file itself for single-file runs)
    files: tuple[Path, ...]
    format: str
    extra: dict = field(default_factory=dict, compare=False)


class Reader(Protocol):
    #: format name, used for --format and Run.format
    name: str
    #: one line for "supported formats" listings
    description: str

    def sniff(self, path: Path, head: bytes) -> bool:
        """Whether this file is (a part of) a log of this format, from its name and first bytes."""
        ...

    def read(self, source: RunSource, options: ReadOptions) -> Run:
        """Read one run; raise LogFormatError naming the file and location on bad input."""
        ...
