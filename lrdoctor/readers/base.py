"""The reader interface: every log format is one module with one :class:`Reader`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..model import Run

#: JSON Lines the live callbacks append to a run's log directory (findings, stops, rollbacks).
#: Discovery never treats it as a log; its records become the run's annotations.
FINDINGS_FILE = "lrdoctor-findings.jsonl"
#: The first bytes of a Git LFS pointer file (checked in instead of the real log): every spec
#: version's pointer starts "version https://git-lfs.github.com/spec/v1" (older clients wrote
#: "version https://git-lfs..."), so the common prefix is what is tested.
LFS_POINTER_PREFIX = b"version https://git-lfs"


def is_lfs_pointer(head: bytes) -> bool:
    """A Git LFS pointer file (checked in instead of the real log file), from its first bytes."""
    return head.startswith(LFS_POINTER_PREFIX)


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
