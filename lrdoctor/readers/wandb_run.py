"""Weights & Biases run files: ``wandb/run-<ts>-<id>/run-<id>.wandb`` (online runs) and
``wandb/offline-run-<ts>-<id>/`` (``WANDB_MODE=offline``), without the wandb package.

The file is a log of protobuf ``Record`` s (framing: :mod:`._wandb_log`). Each ``wandb.log`` call
writes one history record whose items are ``key``/``nested_key`` + ``value_json``; nested dict
keys are joined with ``/`` (``{"val": {"acc": 1}}`` -> ``val/acc``). ``_step`` is the step,
``_timestamp`` the wall time, ``_runtime`` is wandb's own clock and not read as a metric. Values
that are not numbers (media, tables, strings, booleans) are no points; an annotation per key
says how many. Config records become hparams (nested dicts flattened with ``/``), the summary is
kept as the last value of each key (decoded when first used: :mod:`._wandb_summary`). Reading
this by hand instead of through wandb's classes is for two reasons: wandb is a heavy optional
package, and decoding with its per-record objects plus ``json.loads`` per value costs ~3.5x the
CPU of walking all records at once with numpy (:mod:`._pbwalk`, :mod:`._wandb_items`; figures
in README, ``benchmarks/ingest_speed.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from ..errors import LogFormatError
from ..model import Annotation, Run
from . import _wandb_items
from ._pbwalk import varints, walk
from ._tfrecord import Problems
from ._wandb_log import HEADER, Scan, is_wandb_file, scan
from ._wandb_proto import Record
from ._wandb_summary import Summary, decode, json_value
from .base import Appended, ReadOptions, RunSource
from .tabular import backwards_annotations, cap, duplicate_annotations, short_repr, tidy_frame
from .wandb_steps import StepRows, to_global_steps

#: History keys wandb itself adds to every record.
STEP_KEY, TIME_KEY, RUNTIME_KEY = "_step", "_timestamp", "_runtime"
#: Record fields read (wandb_internal.proto): history 2, summary 3, config 5, run 17.
HISTORY, SUMMARY, CONFIG, RUN = 2, 3, 5, 17


class WandbReader:
    name = "wandb"
    description = "Weights & Biases run file (wandb/run-*/run-*.wandb, wandb/offline-run-*/)"

    def sniff(self, path: Path, head: bytes) -> bool:
        return is_wandb_file(head)

    def read(self, source: RunSource, options: ReadOptions) -> Run:
        path = source.files[0]
        spath = str(path)
        problems = Problems(spath, options.strict)
        sc = scan(path, problems)
        scalars, notes, kinds = _records(sc, problems, spath)
        scalars, axis = to_global_steps(scalars, spath)
        notes = [*notes, *([axis] if axis is not None else [])]
        config, initial = _config(sc, kinds[RUN][0], kinds[CONFIG][0])
        recs = kinds[SUMMARY][0]
        if options.strict:  # a damaged summary is an error now, not when it is first used
            summary = Summary.decoded({**_own(initial), **decode(sc, *kinds[SUMMARY], problems)})
        else:
            summary = Summary(spath, sc.offset[recs], sc.crc[recs], _own(initial))
        return Run(name=source.name, source=spath, format=self.name, scalars=scalars, hparams=_hparams(config),
                   summary=summary, step_axis="step",
                   annotations=tuple(problems.annotations + cap(notes)))

    def read_appended(self, source: RunSource, options: ReadOptions, cursor: object = None) -> Appended:
        """The records appended since ``cursor`` (None: all of them), for ``lrdoctor watch``.

        wandb only appends to the file, so a read resumes at the first record the last one did
        not read whole (``Scan.resume``: a record the file ended inside, perhaps one split
        across blocks; the scan starts at the start of its block, where the framing can be
        followed from). The config and the summary are carried over in the cursor and updated by
        the new records, in order, so they stay what a whole read gives. A file that no longer
        starts as it did (another run's file in its place) or is shorter than what was read is
        read again whole. The summary records read are decoded at once (a poll's are few), not
        when the summary is first used.

        The step key (:mod:`.wandb_steps`) is decided on every row read so far, as a whole read of
        the file so far decides it: when the new rows change the answer (the first rows were a
        script's own ``wandb.log`` calls, and the integration's ``trainer/global_step`` rows came
        after), the file is read again whole on the new axis and ``restated`` says that its
        points replace every point handed out before."""
        path = source.files[0]
        spath = str(path)
        whole = not isinstance(cursor, FileCursor) or not _continues(path, cursor)
        prev = _START if whole else cursor
        try:
            with open(path, "rb") as fh:
                head = fh.read(_HEAD)
        except OSError as exc:
            raise LogFormatError(f"cannot read: {exc.strerror or exc}", path=spath) from exc
        problems = Problems(spath, options.strict)
        sc = scan(path, problems, start=prev.offset)
        scalars, notes, kinds = _records(sc, problems, spath)
        rows = prev.rows.plus(StepRows.of(scalars))
        key = rows.key()
        if key != prev.step_key and len(prev.rows.rows) and not whole:
            again = self.read_appended(source, options, None)
            return replace(again, whole=True, restated=True, bytes_read=again.bytes_read + sc.bytes_read)
        scalars, axis = rows.rekey(scalars, key, spath)
        notes += [axis] if axis is not None else []
        config, initial = _config(sc, kinds[RUN][0], kinds[CONFIG][0], prev.config, prev.initial)
        summary = decode(sc, *kinds[SUMMARY], problems, base=prev.summary)
        run = Run(name=source.name, source=spath, format=self.name, scalars=scalars, hparams=_hparams(config),
                  summary=Summary.decoded({**_own(initial), **summary}), step_axis="step",
                  annotations=tuple(problems.annotations + cap(notes)))
        return Appended(run=run, cursor=FileCursor(sc.resume, head, config, initial, summary, rows, key),
                        whole=whole, bytes_read=sc.bytes_read)


#: the file's header and its first fragment's (whose CRC is the run record's): another run's file
#: put in place of a followed one differs here
_HEAD = HEADER + HEADER


@dataclass(frozen=True)
class FileCursor:
    """Where a followed ``.wandb`` file was read up to (:meth:`WandbReader.read_appended`), and
    what the records before it set."""

    offset: int  # the first record not read whole
    head: bytes  # the file's first bytes then
    config: dict[str, Any]  # run and config records applied so far (nested, as wandb keeps it)
    initial: dict[str, Any]  # the run record's summary
    summary: dict[str, Any]  # summary records applied so far
    rows: StepRows  # the history rows read so far, for the step key (:mod:`.wandb_steps`)
    step_key: str | None  # the step key of the points handed out (None: W&B's _step)


_START = FileCursor(0, b"", {}, {}, {}, StepRows(), None)


def _continues(path: Path, cursor: FileCursor) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(cursor.head))
            return head == cursor.head and os.fstat(fh.fileno()).st_size >= cursor.offset
    except OSError:
        return False


def _records(sc: Scan, problems: Problems, spath: str):
    """The points of the history records, their notes, and the records of each kind read."""
    top = walk(sc.buffer, sc.start, sc.start + sc.length)
    for i in np.flatnonzero(top.bad):
        problems.corrupt(int(sc.offset[i]), "W&B record is not a valid protobuf message")
    kinds = {k: _field_of(top, k) for k in (HISTORY, SUMMARY, CONFIG, RUN)}
    scalars, notes = _history(sc, *kinds[HISTORY], problems, spath)
    return scalars, notes, kinds


def _field_of(top, field: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(record index, payload start, payload length) of the records that hold ``field``."""
    sel = top.field == field
    return top.msg[sel], top.start[sel], top.length[sel]


def _history(sc: Scan, recs: np.ndarray, start: np.ndarray, length: np.ndarray, problems: Problems,
             spath: str):
    buf = sc.buffer
    inner = walk(buf, start, start + length)
    for j in np.flatnonzero(inner.bad):
        problems.corrupt(int(sc.offset[recs[j]]), "W&B history record is not a valid protobuf message")
    item = inner.field == 1
    items = _wandb_items.split(buf, inner.start[item], inner.length[item])
    rec_of = inner.msg[item]  # index into recs
    offsets = sc.offset[recs]
    names = items.names
    code = {n: i for i, n in enumerate(names)}
    # every value but wandb's own clock is read (the runtime is 1 in 13 items of a plain run)
    wanted = np.flatnonzero((items.codes >= 0) & (items.codes != code.get(RUNTIME_KEY, -1)))
    values, numeric, texts = _wandb_items.numbers(buf, items, wanted)
    n_rec = len(recs)
    step = np.zeros(n_rec, dtype=np.int64)
    wall = np.full(n_rec, np.nan)
    has_step = np.zeros(n_rec, dtype=bool)
    if STEP_KEY in code:
        sel = (items.codes == code[STEP_KEY]) & numeric
        step[rec_of[sel]] = values[sel].astype(np.int64)
        has_step[rec_of[sel]] = True
    if TIME_KEY in code:
        sel = (items.codes == code[TIME_KEY]) & numeric
        wall[rec_of[sel]] = values[sel]
    # writers that leave _step out: the record's own HistoryStep (field 2: {num = 1}; empty = 0)
    st = (inner.field == 2) & ~has_step[inner.msg]
    if st.any():
        s0 = inner.start[st]
        num, used = varints(buf, s0 + 1)
        step[inner.msg[st]] = np.where((inner.length[st] > 0) & (buf[s0] == 0x08) & (used > 0), num, 0)
    notes: list[Annotation] = []
    is_metric = np.ones(len(names) + 1, dtype=bool)  # by code; the last entry for code -1 (no key)
    is_metric[[code[k] for k in (STEP_KEY, TIME_KEY, RUNTIME_KEY) if k in code] + [-1]] = False
    metric = is_metric[items.codes]
    for c in np.unique(items.codes[metric & ~numeric]):
        bad = np.flatnonzero((items.codes == c) & ~numeric)
        example = texts.get(int(bad[0]), b"")
        notes.append(Annotation(
            "non_numeric", f"key {names[c]!r}: {len(bad)} value(s) are not numbers (e.g. "
            f"{short_repr(example.decode('utf-8', 'replace'))}); no points read",
            path=spath, location=f"byte {int(offsets[rec_of[bad[0]]])}"))
    keep = metric & numeric
    codes, recs_k, values = items.codes[keep], rec_of[keep], values[keep]
    steps = step[recs_k]
    has_items = np.zeros(n_rec, dtype=bool)
    has_items[rec_of] = True
    rec_steps = step[has_items]
    notes += backwards_annotations(rec_steps, offsets[has_items], spath, loc_label="byte")
    if not np.all(rec_steps[1:] > rec_steps[:-1]):  # one record per step cannot repeat a step
        notes += duplicate_annotations(codes, steps, values, offsets[recs_k], names, spath, loc_label="byte")
    return tidy_frame(codes, names, steps, wall[recs_k], values), notes


def _config(sc: Scan, run_recs: np.ndarray, config_recs: np.ndarray, config: dict[str, Any] | None = None,
            initial: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The config after the run and config records (in file order: later updates win), applied
    to ``config`` (a followed file's so far; not changed), and the summary the run record starts
    with (a resumed run's)."""
    config = dict(config or {})
    initial = dict(initial or {})
    for i in sorted({*run_recs.tolist(), *config_recs.tolist()}):
        raw = sc.buffer[sc.start[i]:sc.start[i] + sc.length[i]].tobytes()
        try:
            r = Record.FromString(raw)
        except DecodeError:
            continue  # already reported by the walk
        if r.HasField("run"):
            _apply(config, r.run.config)
            for it in r.run.summary.update:
                initial[_wandb_items.name_of(it)] = json_value(it.value_json)
        else:
            _apply(config, r.config)
    return config, initial


def _hparams(config: dict[str, Any]) -> dict[str, Any]:
    return _flatten({k: v for k, v in config.items() if k != "_wandb"})


def _own(summary: dict[str, Any]) -> dict[str, Any]:
    """Without wandb's own keys (``_step``, ``_runtime``, ...)."""
    return {k: v for k, v in summary.items() if not k.startswith("_")}


def _apply(config: dict[str, Any], rec) -> None:
    for it in rec.update:
        config[_wandb_items.name_of(it)] = json_value(it.value_json)
    for it in rec.remove:
        config.pop(_wandb_items.name_of(it), None)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out
