"""Readers for every supported log format, and discovery of the runs under a path.

``discover(path)`` is the one entry point the rest of lrdoctor uses: it finds the runs under a
file, a run directory, or a tree of runs, reads each with the reader its files sniff as (or the
one ``format=`` forces), and returns them as :class:`~lrdoctor.model.Run` objects.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from dataclasses import replace
from pathlib import Path

from ..errors import EmptyRunError, LeftOut, LogFormatError, LrdoctorError, NoRunsFoundError, UsageError
from ..model import Annotation, Run
from ..origin import ORIGIN_FILE, RunOrigin
from .base import FINDINGS_FILE, Reader, ReadOptions, RunSource
from .discovery import Finder, origin_dir, unique_names
from .generic_csv import GenericCSVReader
from .hf_trainer_state import HFTrainerStateReader
from .jsonl import JSONLinesReader
from .keras_csv import KerasCSVReader
from .keras_history_json import KerasHistoryReader
from .lightning_csv import LightningCSVReader
from .mlflow import MLflowReader
from .mlflow_sqlite import MLflowSQLiteReader
from .tabular import one_line
from .tensorboard import TensorBoardReader
from .textlog import TextLogReader
from .wandb_run import WandbReader

log = logging.getLogger(__name__)
#: Files named like logs that no reader knows listed one by one; the rest are counted.
MAX_NOT_READ = 20

#: Readers in sniffing priority order: the most specific content signature first.
READERS: list[Reader] = [
    TensorBoardReader(),
    WandbReader(),
    MLflowReader(),
    MLflowSQLiteReader(),
    HFTrainerStateReader(),
    LightningCSVReader(),
    KerasCSVReader(),
    KerasHistoryReader(),
    JSONLinesReader(),
    GenericCSVReader(),
    TextLogReader(),  # last: printed output is only read when no structured reader knows the file
]

__all__ = ["READERS", "ReadOptions", "RunSource", "discover", "discover_with_errors", "find_run_sources",
           "get_reader", "read_source", "supported_formats"]


def supported_formats() -> list[str]:
    """Format names accepted by ``--format``, in sniffing priority order."""
    return [r.name for r in READERS]


def get_reader(name: str) -> Reader:
    for r in READERS:
        if r.name == name:
            return r
    raise UsageError(f"unknown format {name!r} (supported: {', '.join(supported_formats())})")


def find_run_sources(path: str | Path, format: str | None = None, *,
                     expand_formats: Collection[str] | None = None,
                     not_read: list[LeftOut] | None = None) -> list[RunSource]:
    """The runs under ``path`` (a log file, a run directory, or a tree of runs), not yet read.

    Files of formats that hold several runs are split into them (an MLflow SQLite store, a Keras
    CSV with restarts, TensorBoard attempts); ``expand_formats`` limits that to those formats
    (``lrdoctor watch`` follows files as they grow and splits only stores that must be).
    ``not_read`` receives one note per file in the tree that is named like a log but that no
    reader knows (or that cannot be opened)."""
    path = Path(path)
    forced = get_reader(format) if format else None
    finder = Finder(READERS, forced=forced)
    if not path.exists():
        raise NoRunsFoundError(f"no such file or directory: {path}")
    if not path.is_dir():  # a file, or a FIFO/device that for_file refuses by name
        return _expand([finder.for_file(path)], path.parent, expand_formats)
    sources = _expand(finder.for_tree(path), path, expand_formats)
    if not sources:
        what = f" of format {format!r}" if format else ""
        msg = f"no runs{what} found under {path}"
        if finder.lfs_pointers:
            msg += f" ({len(finder.lfs_pointers)} Git LFS pointer files instead of logs, e.g. " \
                   f"{finder.lfs_pointers[0]}: run 'git lfs pull')"
        elif finder.not_read:
            first, why = finder.not_read[0]
            msg += f" ({len(finder.not_read)} files named like logs not read, e.g. {first}: {why})"
        raise NoRunsFoundError(msg)
    if not_read is not None:
        not_read += [LeftOut(why, path=str(p)) for p, why in finder.not_read[:MAX_NOT_READ]]
        more = len(finder.not_read) - MAX_NOT_READ
        if more > 0:  # a directory of 100,000 empty .out files is one more line, not 100,000
            not_read.append(LeftOut(f"{more} more files named like logs not read", path=str(path)))
    return sources


def _expand(sources: list[RunSource], root: Path, formats: Collection[str] | None = None) -> list[RunSource]:
    """Files that hold many runs (an MLflow SQLite store) become one source per run."""
    out: list[RunSource] = []
    for s in sources:
        wanted = s.format in supported_formats() and (formats is None or s.format in formats)
        expand = getattr(get_reader(s.format), "expand", None) if wanted else None
        out += expand(s) if expand is not None else [s]
    return unique_names(out, root) if len(out) != len(sources) else out


def read_source(source: RunSource, options: ReadOptions) -> Run:
    """Read one found run, attaching ``lrdoctor-run.json`` (if present) as ``Run.origin``."""
    reader = get_reader(source.format)
    run = reader.read(source, options)
    if not len(run.scalars):
        raise _empty(reader, source)
    changes: dict = {}
    if run.name != source.name:
        changes["name"] = source.name
    origin, bad = read_origin(source)
    if origin is not None:
        changes["origin"] = origin
    if bad is not None:
        changes["annotations"] = run.annotations + (bad,)
    notes = live_notes(origin_dir(source) / FINDINGS_FILE)
    if notes:  # first: where the training was stopped or rolled back matters more than reader notes
        changes["annotations"] = notes + changes.get("annotations", run.annotations)
    lfs = source.lfs_pointers
    if lfs:
        changes["annotations"] = changes.get("annotations", run.annotations) + tuple(
            Annotation("lfs_pointer", "a Git LFS pointer, not the log file itself ('git lfs pull' fetches it); "
                       "skipped", path=p) for p in lfs)
    return replace(run, **changes) if changes else run


def _empty(reader: Reader, source: RunSource) -> EmptyRunError:
    """A run with nothing to diagnose must not read as a healthy one. Runs of a store (opaque ids,
    or many runs in one file) are named, with what the store says of them (an MLflow parent run
    of nested runs) when its reader can tell (``describe``)."""
    where = source.files[0] if len(source.files) == 1 else source.root
    what = ""
    if source.run_id is not None or source.path_name is not None:
        describe = getattr(reader, "describe", None)
        about = describe(source) if describe is not None else None
        what = f"run {source.name}" + (f" ({about})" if about else "") + ": "
    return EmptyRunError(f"{what}no scalar values (read as {source.format})", path=str(where))


def read_origin(source: RunSource) -> tuple[RunOrigin | None, Annotation | None]:
    """The run's ``lrdoctor-run.json`` (how a built-in workload was configured), if there is one,
    or the note saying why it could not be read."""
    path = origin_dir(source) / ORIGIN_FILE
    try:
        if not path.is_file():
            return None, None
        return RunOrigin.parse(json.loads(path.read_text(encoding="utf-8"))), None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, Annotation("bad_origin", f"cannot read {ORIGIN_FILE}: {one_line(exc)}", path=str(path))


def live_notes(path: Path) -> tuple[Annotation, ...]:
    """The records the live callbacks wrote beside the run (a stop, a rollback, a finding), as
    annotations, so ``diagnose`` shows where and why the training was intervened on. A file that
    cannot be read is one note naming it: the run's log is still diagnosed."""
    try:
        if not path.is_file():
            return ()
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return (Annotation("bad_live_record", f"cannot read {FINDINGS_FILE}: {one_line(exc)}", path=str(path)),)
    notes = []
    for i, line in enumerate(text.splitlines(), start=1):
        try:
            rec = json.loads(line)
        except ValueError:
            notes.append(Annotation("bad_live_record", "not a JSON object", path=str(path), location=f"line {i}"))
            continue
        if not isinstance(rec, dict):
            continue
        kind = str(rec.get("event", "finding"))
        msg = str(rec.get("summary") or rec.get("message") or "")
        step = rec.get("at_step")
        notes.append(Annotation(f"live_{kind}", msg, path=str(path),
                                location=f"step {step}" if step is not None else f"line {i}"))
    return tuple(notes)


def discover_with_errors(path: str | Path, *, format: str | None = None, strict: bool = False,
                         progress: bool = False) -> tuple[list[Run], list[LrdoctorError]]:
    """Find and read every run under ``path``: the runs that could be read, and one error per run
    that could not (each names its file; nothing is logged here, the caller reports them).

    Errors that are :class:`~lrdoctor.errors.LeftOut` are notes, not failures: a run with no
    metric values while others have some (an MLflow parent run), a file named like a log that
    no reader knows.

    Raises when nothing can be read: a single file that cannot be read, any unreadable run under
    ``strict``, or a tree whose every run fails (the only error, or a summary naming the first).
    """
    not_read: list[LeftOut] = []
    sources = find_run_sources(path, format, not_read=not_read)
    options = ReadOptions(strict=strict)
    single = Path(path).is_file() and len(sources) == 1  # one file can hold many runs (mlflow.db)
    runs: list[Run] = []
    errors: list[LrdoctorError] = []
    for source in _progress(sources, progress):
        try:
            runs.append(read_source(source, options))
        except LogFormatError as exc:
            if single or (strict and not isinstance(exc, EmptyRunError)):
                raise
            errors.append(exc)
    if not runs:
        raise _nothing_read(path, errors)
    return runs, errors + list(not_read)


def _nothing_read(path: str | Path, errors: list[LrdoctorError]) -> LrdoctorError:
    if len(errors) == 1:
        return errors[0]
    if errors and all(isinstance(e, EmptyRunError) for e in errors):
        files = {e.path for e in errors}
        where = files.pop() if len(files) == 1 else str(path)  # one store file: name it
        return EmptyRunError(f"none of the {len(errors)} runs holds a metric value (first: {errors[0]})",
                             path=where)
    if errors:
        return LogFormatError(f"none of the {len(errors)} runs found could be read (first: {errors[0]})",
                              path=str(path))
    return NoRunsFoundError(f"no runs found under {path}")


def discover(path: str | Path, *, format: str | None = None, strict: bool = False,
             progress: bool = False) -> list[Run]:
    """Find and read every run under ``path``.

    In a tree, a run that cannot be read is skipped with a warning (an error under ``strict``),
    one left out (no metric values beside runs that have some) with an info line; a single file
    that cannot be read is always an error. :func:`discover_with_errors` returns
    the skipped runs' errors instead of only logging them.
    """
    runs, errors = discover_with_errors(path, format=format, strict=strict, progress=progress)
    for exc in errors:
        if isinstance(exc, LeftOut):
            log.info("left out: %s", exc)
        else:
            log.warning("run skipped: %s", exc)
    return runs


def _progress(sources: list[RunSource], enabled: bool):
    if not enabled or len(sources) < 2:
        yield from sources
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task("reading runs", total=len(sources))
        for s in sources:
            yield s
            bar.advance(task)

