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
class FilePart:
    """One attempt of a log file appended by several fits (Keras CSVLogger restarts)."""

    rows: tuple[int, int]  # data rows [first, end) of the attempt
    lines: tuple[int, int]  # their first and last line in the file
    attempt: int  # k of ``attempts``, counted from 1
    attempts: int


@dataclass(frozen=True)
class RunSource:
    """The files that make up one run, found by discovery."""

    name: str  # from the run's path relative to the searched root
    root: Path  # the run's directory (or the file itself for single-file runs)
    files: tuple[Path, ...]
    format: str
    #: the run's directory when ``root`` is a file in it (where its lrdoctor-run.json is looked for)
    dir: Path | None = field(default=None, compare=False)
    #: what discovery noted about the source (e.g. which checkpoint copy stands in for the run)
    note: str | None = field(default=None, compare=False)
    #: for stores with opaque run ids: the run's path in the store, its name when two runs share one
    path_name: str | None = field(default=None, compare=False)
    #: Git LFS pointer files found where the run's logs should be
    lfs_pointers: tuple[str, ...] = field(default=(), compare=False)
    #: one run of a file that holds several (an MLflow SQLite store: the run's id)
    run_id: str | None = field(default=None, compare=False)
    #: one attempt of a file appended by several fits
    part: FilePart | None = field(default=None, compare=False)
    #: how discovery grouped the run's files (copies left out, which attempt of several this is)
    grouping: tuple[str, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class Appended:
    """What a reader that can follow a run read since its last read (``read_appended``)."""

    run: Run  # the new points (its hparams and summary are the run's current ones)
    cursor: object  # where the next read resumes; the reader's own type, opaque to callers
    whole: bool  # the run was read again from its start: its points include those read before
    #: the points read again whole are on another step axis than those read before (W&B's step
    #: key, decided again as rows arrive): they replace every point handed out so far
    restated: bool = False
    rows_read: int = 0  # rows fetched (a database), for tests and benchmarks
    bytes_read: int = 0  # bytes read (a file)


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
