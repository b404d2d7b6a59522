"""Follow runs that are still being written: on each poll, only what was appended since the last.

This layer calls the format readers; it does not parse any format itself. For each file of a run
it keeps the offset up to which it has read *complete* units, and on a poll hands the readers a
temporary copy of the run holding only the complete units appended since (plus the CSV header):

* TensorBoard event files: whole TFRecord frames (the last frame may be half written: reading
  resumes at its start on the next poll);
* CSV (Lightning, Keras, generic), JSON Lines, text logs and MLflow metric files: whole lines (a line
  without its newline yet is left for the next poll). A CSV whose header changes (Lightning's
  CSVLogger rewrites the file when a new metric appears) or a file that shrinks is read again
  from its start, and only the points beyond those already delivered are kept;
* files a writer rewrites whole (HF ``trainer_state.json``, a Keras history JSON): read again
  when their size or modification time changes, keeping the points beyond those already
  delivered; a copy caught half written is left for the next poll;
* formats whose reader follows a run itself (``read_appended``): a W&B ``.wandb`` file, framed in
  32 KiB blocks whose records span blocks, is read on from the first record not read whole;
  an MLflow SQLite store past the run's last row. The reader is asked, when the file changes,
  for what was added since its cursor; when it had to read the run again from its start (rows
  renumbered, another file in place of the one followed), only the points beyond those
  already delivered are kept.

The temporary copy mirrors the run's layout (subdirectories of a TensorBoard run name tags), so
each reader reads it exactly as it reads the real run.
"""

from __future__ import annotations

import logging
import shutil
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import LogFormatError, NoRunsFoundError
from ..model import Run
from ..readers import ReadOptions, RunSource, find_run_sources, get_reader, supported_formats
from .repeats import RepeatedWarnings

log = logging.getLogger(__name__)

_LINE_FORMATS = frozenset({"lightning_csv", "keras_csv", "csv", "jsonl", "mlflow", "text"})
_CSV_FORMATS = frozenset({"lightning_csv", "keras_csv", "csv"})
#: read again whole when they change: JSON rewritten whole
_WHOLE_FORMATS = frozenset({"hf_trainer_state", "keras_history"})
#: files holding several runs, split into them by discovery while following (the runs of an
#: MLflow SQLite store); their reader follows each run (``read_appended``)
_STORES = frozenset({"mlflow_sqlite"})


def _by_reader(fmt: str) -> bool:
    """The reader reads what was added since its own cursor (W&B, MLflow SQLite)."""
    return fmt in supported_formats() and hasattr(get_reader(fmt), "read_appended")


def _whole(fmt: str) -> bool:
    """Read again whole on change: the formats above, and any this layer does not know."""
    return fmt in _WHOLE_FORMATS or (fmt != "tensorboard" and fmt not in _LINE_FORMATS)


_LEN = struct.Struct("<Q")


def complete_frames_end(data: bytes) -> int:
    """Where the last whole TFRecord frame in ``data`` ends (a half-written frame is left out)."""
    off, size = 0, len(data)
    while off + 12 <= size:
        end = off + 12 + _LEN.unpack_from(data, off)[0] + 4
        if end > size:
            break
        off = end
    return off


def _stamp(path: Path) -> tuple[int, int]:
    """Size and modification time; (-1, -1) when absent (an SQLite store writes its WAL file,
    ``<db>-wal``, when in WAL mode, and the database itself only at checkpoints)."""
    try:
        stat = path.stat()
    except OSError:
        return (-1, -1)
    return stat.st_size, stat.st_mtime_ns


def complete_lines_end(data: bytes) -> int:
    return data.rfind(b"\n") + 1


@dataclass
class _FileState:
    offset: int = 0
    header: bytes = b""  # a CSV's first line, prepended to every appended chunk
    stamp: tuple[int, ...] = (-1, -1)  # size, mtime_ns: for files rewritten whole and stores


@dataclass
class RunFollower:
    """One run being written: :meth:`poll` returns the points appended since the last poll."""

    source: RunSource
    strict: bool = False
    files: dict[Path, _FileState] = field(default_factory=dict)
    delivered: dict[str, int] = field(default_factory=dict)  # points per tag handed out so far
    hparams: dict = field(default_factory=dict)
    summary: Mapping[str, Any] = field(default_factory=dict)  # the tracker's run summary (W&B), as of the last poll
    step_axis: str = "step"
    bytes_read: int = 0
    rows_read: int = 0  # database rows fetched (an MLflow SQLite store)
    cursor: object = None  # where the reader resumes, for formats it follows itself
    #: the last poll's points replace every point it returned before (a W&B run whose step key a
    #: whole read now decides otherwise: see WandbReader.read_appended)
    restated: bool = False

    @property
    def name(self) -> str:
        return self.source.name

    def poll(self, source: RunSource | None = None) -> pd.DataFrame | None:
        """New points as a tidy table (tag, step, wall_time, value), or None when nothing new."""
        if source is not None:
            self.source = source  # a new event file may have appeared in the run
        self.restated = False
        fmt = self.source.format
        if _by_reader(fmt):
            return self._poll_reader()
        chunks: dict[Path, bytes] = {}
        reset = False
        for path in self.source.files:
            st = self.files.setdefault(path, _FileState())
            try:
                got = self._read_new(path, st, fmt)
            except OSError as exc:  # its permissions changed since discovery found it
                log.warning("%s: cannot read (%s); read again when it can be", path, exc.strerror or exc)
                continue
            if got is None:
                continue
            data, was_reset = got
            reset |= was_reset
            if data:
                chunks[path] = data
        if not chunks:
            return None
        run = self._read_chunks(chunks)
        if run is None:
            return None
        self.hparams.update(run.hparams)
        self.step_axis = run.step_axis
        return self._only_new(run.scalars, reset or _whole(fmt))

    def _poll_reader(self) -> pd.DataFrame | None:
        changed = False
        for path in self.source.files:
            st = self.files.setdefault(path, _FileState())
            # stat before reading: a write landing during the read changes it again for the next poll
            stamp = _stamp(path) + _stamp(path.with_name(path.name + "-wal"))
            changed |= stamp != st.stamp
            st.stamp = stamp
        if not changed:
            return None
        got = get_reader(self.source.format).read_appended(
            self.source, ReadOptions(strict=self.strict), self.cursor)
        self.cursor = got.cursor
        self.rows_read += got.rows_read
        self.bytes_read += got.bytes_read
        self.hparams.update(got.run.hparams)
        self.summary = got.run.summary
        self.step_axis = got.run.step_axis
        if got.restated:
            self.restated, self.delivered = True, {}
        return self._only_new(got.run.scalars, got.whole)

    def _read_new(self, path: Path, st: _FileState, fmt: str) -> tuple[bytes, bool] | None:
        try:
            stat = path.stat()
        except OSError:
            return None  # removed or not there yet
        if _whole(fmt):
            stamp = (stat.st_size, stat.st_mtime_ns)
            if stamp == st.stamp:
                return None
            data = path.read_bytes()
            self.bytes_read += len(data)
            return data, True  # st.stamp is set once the copy parses (see _read_chunks)
        reset = stat.st_size < st.offset
        if reset:
            st.offset, st.header = 0, b""
        if stat.st_size == st.offset:
            return None
        with open(path, "rb") as fh:
            if fmt in _CSV_FORMATS and st.header:
                first = fh.readline()
                if first != st.header:  # rewritten with a new header: read it all again
                    st.offset, st.header, reset = 0, b"", True
            fh.seek(st.offset)
            data = fh.read()
        self.bytes_read += len(data)
        end = complete_frames_end(data) if fmt == "tensorboard" else complete_lines_end(data)
        data = data[:end]
        if not data:
            return None
        if fmt in _CSV_FORMATS:
            if not st.header:
                nl = data.find(b"\n") + 1
                st.header = data[:nl]
                body = data[nl:]
            else:
                body = data
            st.offset += end
            return (st.header + body if body else b""), reset
        st.offset += end
        return data, reset

    def _read_chunks(self, chunks: dict[Path, bytes]) -> Run | None:
        src = self.source
        base = src.root if src.root.is_dir() else src.root.parent
        with tempfile.TemporaryDirectory(prefix="lrdoctor-follow-") as tmp:
            root = Path(tmp) / "run"
            files = []
            for path, data in chunks.items():
                dest = root / path.relative_to(base)
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(data)
                files.append(dest)
            if src.root.is_dir() or src.format == "lightning_csv":  # sidecars: run name, hparams
                for extra in ("meta.yaml", "params", "hparams.yaml"):
                    p = base / extra
                    if p.is_file():
                        shutil.copy(p, root / extra)
                    elif p.is_dir():
                        shutil.copytree(p, root / extra, dirs_exist_ok=True)
            tmp_root = root if src.root.is_dir() else root / src.root.name
            copy = replace(src, root=tmp_root, files=tuple(files))
            try:
                run = get_reader(src.format).read(copy, ReadOptions(strict=self.strict))
            except LogFormatError as exc:
                if _whole(src.format):
                    return None  # caught half written; read again on the next change
                raise LogFormatError(str(exc.message).replace(str(root), str(base)), path=str(src.root),
                                     location=exc.location) from exc
        if _whole(src.format):
            for path in chunks:
                stat = path.stat()
                self.files[path].stamp = (stat.st_size, stat.st_mtime_ns)
        return run

    def _only_new(self, scalars: pd.DataFrame, reread: bool) -> pd.DataFrame | None:
        tags = scalars["tag"].astype(str).to_numpy()
        if reread:
            # a file read again from its start: drop each tag's first ``delivered`` points
            keep = np.ones(len(tags), dtype=bool)
            for tag in np.unique(tags):
                rows = np.flatnonzero(tags == tag)
                keep[rows[: self.delivered.get(tag, 0)]] = False
            scalars, tags = scalars[keep], tags[keep]
        if not len(scalars):
            return None
        uniq, counts = np.unique(tags, return_counts=True)
        for t, c in zip(uniq, counts, strict=True):
            self.delivered[str(t)] = self.delivered.get(str(t), 0) + int(c)
        return scalars.assign(tag=tags).reset_index(drop=True)


@dataclass
class TreeFollower:
    """Every run under a path, including runs and files that appear while it is followed."""

    path: Path
    format: str | None = None
    strict: bool = False
    runs: dict[str, RunFollower] = field(default_factory=dict)  # by the run's root path
    repeats: RepeatedWarnings = field(default_factory=RepeatedWarnings)

    def poll(self) -> list[tuple[RunFollower, pd.DataFrame]]:
        """(run, new points) for each run that grew since the last poll. A warning given at the
        poll before (a file it cannot read) is not given again (see :mod:`.repeats`)."""
        with self.repeats.poll():
            return self._poll()

    def _poll(self) -> list[tuple[RunFollower, pd.DataFrame]]:
        try:
            # not split by content (TensorBoard attempts, Keras CSV restarts): that reads whole
            # files at every poll, and a split names row ranges of the whole file, not of a chunk
            sources = find_run_sources(self.path, self.format, expand_formats=_STORES)
        except NoRunsFoundError as exc:  # nothing written yet is not an error while following
            log.debug("no runs under %s yet: %s", self.path, exc)
            return []
        out = []
        for src in sources:
            # not the name: an MLflow run's name comes from its meta.yaml; one SQLite store holds many runs
            key = f"{src.root}|{src.run_id or ''}"
            f = self.runs.get(key)
            if f is None:
                f = self.runs[key] = RunFollower(src, strict=self.strict)
            new = f.poll(src)
            if new is not None:
                out.append((f, new))
        return out

    @property
    def bytes_read(self) -> int:
        return sum(f.bytes_read for f in self.runs.values())

    @property
    def rows_read(self) -> int:
        return sum(f.rows_read for f in self.runs.values())
