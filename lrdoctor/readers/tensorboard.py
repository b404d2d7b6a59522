"""TensorBoard event files (``events.out.tfevents.*``) -> :class:`~lrdoctor.model.Run`.

Reads every scalar (no sampling) written by ``torch.utils.tensorboard`` (``simple_value`` and
``new_style=True`` tensors), tensorboardX, and TF2/Keras ``tf.summary.scalar`` (rank-0 tensors,
plugin ``scalars``). Decoding lives in ``_tfrecord`` (framing), ``_tfevent_fast`` (vectorised),
``_tfevent_slow`` (protobuf) and ``_tfevent_file`` (one file); this module makes a run of files.

Tags of files in subdirectories of the run directory:

* ``add_scalars(main, {"train": ..})`` writes tag ``main`` into ``<run>/<main with / as _>_train/``:
  read as ``main/train`` (e.g. ``Loss/train``, ``Loss/validation``);
* the ``add_hparams`` subdirectory (its files hold hparams-plugin data): the tag as logged, or
  ``hparams/<tag>`` when the main run has a curve of that name (the final metrics it logs at
  step 0 must not mix with it);
* Keras's ``train/`` + ``validation/`` (merged into one run by discovery): ``train/epoch_loss``,
  ``validation/epoch_loss``; a run whose tags are all ``epoch_*`` has step axis ``epoch``;
* any other subdirectory ``a/b``: ``a/b/<tag>``.
"""

from __future__ import annotations

import logging
import re
import struct
from pathlib import Path

import numpy as np
import pandas as pd

from ..model import Annotation, Run, make_scalars
from ._crc32c import masked_crc32c
from ._tfevent_file import FileScalars, decode_file
from .base import ReadOptions, RunSource, is_lfs_pointer

log = logging.getLogger(__name__)

_MAX_RESTART_NOTES = 20


def is_tfrecord(head: bytes) -> bool:
    """Whether ``head`` starts with a TFRecord frame whose length checksum is right."""
    if len(head) < 12:
        return False
    return masked_crc32c(head[:8]) == struct.unpack_from("<I", head, 8)[0]


class TensorBoardReader:
    name = "tensorboard"
    description = ("TensorBoard event files (events.out.tfevents.*: torch SummaryWriter, tensorboardX, "
                   "TF2/Keras tf.summary), searched recursively")

    def sniff(self, path: Path, head: bytes) -> bool:
        return is_tfrecord(head)

    def expand(self, source: RunSource) -> list[RunSource]:
        """Copies of event files dropped, separate attempts split (see :mod:`.tb_grouping`)."""
        from .tb_grouping import group_files

        def decode(path: Path) -> FileScalars:
            with Path(path).open("rb") as fh:
                if is_lfs_pointer(fh.read(64)):  # no points: kept with the run, read() notes it
                    return FileScalars(str(path), [], np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0),
                                       np.zeros(0), None)
            return decode_file(path, strict=False)

        try:
            return group_files(source, decode, _file_order)
        except Exception:  # noqa: BLE001 - an unreadable file: read() reports it on the whole run
            log.debug("grouping the event files of %s failed", source.root, exc_info=True)
            return [source]

    def read(self, source: RunSource, options: ReadOptions) -> Run:
        return read_run(source, options)


def read_event_file(path: str | Path, strict: bool = False) -> tuple[pd.DataFrame, dict, list[Annotation]]:
    """Every scalar of one event file as a tidy table (file order), its hparams, and annotations."""
    fs = decode_file(path, strict=strict)
    _log_problems(fs.annotations)
    notes = list(fs.annotations) + _restarts_in_file(fs, fs.tag_names)
    return _table(fs, fs.tag_names), dict(fs.hparams), notes


def _log_problems(notes: list[Annotation]) -> None:
    for a in notes:
        log.warning("%s (%s): %s", a.path, a.location, a.message)


def _table(fs: FileScalars, names: list[str]) -> pd.DataFrame:
    tags = np.array(names, dtype=object)[fs.tag_id] if len(fs.tag_id) else np.array([], dtype=object)
    return make_scalars(tags, fs.step, fs.wall_time, fs.value)


def _restarts_in_file(fs: FileScalars, names: list[str], had_data: bool = False) -> list[Annotation]:
    """Steps going backwards within a tag, and SessionLog.START after data (of this file or, with
    ``had_data``, of an earlier one): kept, annotated. A START before any point is a beginning."""
    notes: list[Annotation] = []
    if len(fs.step) > 1 and np.any(fs.step[1:] < fs.step[:-1]):  # else no tag can go backwards
        order = np.argsort(fs.tag_id, kind="stable")
        t, s = fs.tag_id[order], fs.step[order]
        back = np.flatnonzero((t[1:] == t[:-1]) & (s[1:] < s[:-1]))
        for tid in np.unique(t[back + 1]).tolist()[:_MAX_RESTART_NOTES]:
            hits = back[t[back + 1] == tid]
            i = int(hits[0])
            notes.append(Annotation(
                kind="restart",
                message=f"tag {names[tid]!r}: step {int(s[i + 1])} logged after step {int(s[i])} "
                f"({len(hits)} time(s)); a resumed run? all points kept",
                path=fs.path, location=f"step {int(s[i + 1])}",
            ))
    first_data = fs.first_offset
    for off, step in fs.restarts:
        if had_data or (first_data is not None and off > first_data):
            notes.append(Annotation(
                kind="restart", message=f"SessionLog.START at step {step}: the run was restarted; all points kept",
                path=fs.path, location=f"step {step}",
            ))
    return notes


def _file_order(path: Path) -> tuple:
    # events.out.tfevents.<unix time>.<host>...: the writer's start time orders a run's files
    m = re.match(r"events\.out\.tfevents\.(\d+(?:\.\d+)?)", path.name)
    return (float(m.group(1)) if m else float("inf"), str(path))


def _renamed(fs: FileScalars, file: Path, root: Path, main_tags: set[str] | frozenset = frozenset()) -> list[str]:
    try:
        rel = file.parent.relative_to(root)
    except ValueError:
        rel = Path(".")
    if rel == Path("."):
        return fs.tag_names
    if fs.hparams:
        # add_hparams' final metrics keep the name they were logged with unless the main run
        # has a curve of that name (then they would mix with it at step 0).
        return [f"hparams/{t}" if t in main_tags else t for t in fs.tag_names]
    out = []
    for t in fs.tag_names:
        stem = t.replace("/", "_") + "_"
        if len(rel.parts) == 1 and rel.name.startswith(stem) and len(rel.name) > len(stem):
            out.append(f"{t}/{rel.name[len(stem):]}")
        else:
            out.append(f"{rel.as_posix()}/{t}")
    return out


def step_axis_of(tags: list[str]) -> str:
    """Keras's TensorBoard callback logs ``epoch_*`` tags once per epoch with step = epoch."""
    names = [t.rsplit("/", 1)[-1] for t in tags if not t.startswith("hparams/")]
    return "epoch" if names and all(n.startswith("epoch_") for n in names) else "step"


def read_run(source: RunSource, options: ReadOptions) -> Run:
    root = Path(source.root)
    if root.is_file():
        root = root.parent
    notes: list[Annotation] = []
    hparams: dict = {}
    decoded: list[tuple[Path, FileScalars]] = []
    for file in sorted((Path(f) for f in source.files), key=_file_order):
        with file.open("rb") as fh:
            head = fh.read(64)
        if is_lfs_pointer(head):
            note = Annotation(kind="lfs_pointer", message="Git LFS pointer, not an event file (run "
                              "'git lfs pull' to fetch it); skipped", path=str(file))
            log.warning("Git LFS pointer, not an event file: %s", file)
            notes.append(note)
            continue
        decoded.append((file, decode_file(file, strict=options.strict)))
    main_tags = {n for file, fs in decoded if not fs.hparams for n in _renamed(fs, file, root)}
    tables: list[pd.DataFrame] = []
    last_step: dict[str, int] = {}
    had_data = False
    for file, fs in decoded:
        _log_problems(fs.annotations)
        names = _renamed(fs, file, root, main_tags)
        notes.extend(fs.annotations)
        notes.extend(_restarts_in_file(fs, names, had_data))
        if not fs.hparams:
            notes.extend(_restarts_across_files(fs, names, last_step, file))
        hparams.update(fs.hparams)
        if len(fs.step):
            had_data = True
            tables.append(_table(fs, names))
    if tables:
        df = pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0]
        steps = df["step"].to_numpy()
        if len(steps) > 1 and np.any(steps[1:] < steps[:-1]):
            df = df.iloc[np.argsort(steps, kind="stable")].reset_index(drop=True)
    else:
        df = make_scalars(np.array([], dtype=object), [], [], [])
    tags = list(pd.unique(df["tag"])) if len(df) else []
    for message in source.grouping:
        notes.append(Annotation(kind="grouping", message=message, path=str(source.root)))
    return Run(name=source.name, source=str(source.root), format="tensorboard", scalars=df,
               hparams=hparams, step_axis=step_axis_of(tags), annotations=tuple(notes))


def _restarts_across_files(fs: FileScalars, names: list[str], last_step: dict[str, int],
                           file: Path) -> list[Annotation]:
    notes = []
    if not len(fs.step):
        return notes
    _, first = np.unique(fs.tag_id, return_index=True)
    for i in first.tolist():
        tag, step = names[int(fs.tag_id[i])], int(fs.step[i])
        prev = last_step.get(tag)
        if prev is not None and step <= prev and len(notes) < _MAX_RESTART_NOTES:
            notes.append(Annotation(
                kind="restart",
                message=f"tag {tag!r} starts again at step {step} in {file.name} after reaching step "
                f"{prev} in an earlier file; a resumed run? all points kept",
                path=str(file), location=f"step {step}",
            ))
    for tid, m in pd.Series(fs.step).groupby(fs.tag_id).max().items():
        last_step[names[tid]] = max(int(m), last_step.get(names[tid], int(m)))
    return notes
