"""Weights & Biases run files: ``wandb/run-<ts>-<id>/run-<id>.wandb`` (online runs) and
``wandb/offline-run-<ts>-<id>/`` (``WANDB_MODE=offline``), without the wandb package.

The file is a log of protobuf ``Record`` s (framing: :mod:`._wandb_log`). Each ``wandb.log`` call
writes one history record whose items are ``key``/``nested_key`` + ``value_json``; nested dict
keys are joined with ``/`` (``{"val": {"acc": 1}}`` -> ``val/acc``). ``_step`` is the step,
``_timestamp`` the wall time, ``_runtime`` is wandb's own clock and not read as a metric. Values
that are not numbers (media, tables, strings, booleans) are no points; an annotation per key
says how many. Config records become hparams (nested dicts flattened with ``/``), the summary is
kept as the last value of each key. Reading this by hand instead of through wandb's classes is
for two reasons: wandb is a heavy optional package, and its per-item objects cap reading at
~0.6 M points/s where the bulk decoding in :mod:`._wandb_items` reaches the 1 M/s target.
"""

from __future__ import annotations

import json
import re
from itertools import compress
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from ..model import Annotation, Run
from . import _wandb_items
from ._tfrecord import Problems
from ._wandb_log import is_wandb_file, records
from ._wandb_proto import RawRecord, Record
from .base import ReadOptions, RunSource
from .tabular import backwards_annotations, cap, duplicate_annotations, short_repr, tidy_frame

#: History keys wandb itself adds to every record.
STEP_KEY, TIME_KEY, RUNTIME_KEY = "_step", "_timestamp", "_runtime"
#: The first top-level field of a record says its kind: Go and Python both write fields in
#: number order, ``num`` (1) first when set. Tags: history 2, summary 3, config 5, run 17.
_KIND = re.compile(rb"(?:\x08[\x80-\xff]{0,9}[\x00-\x7f])?(\x12|\x1a|\x2a|\x8a\x01)")
_KINDS = {b"\x12": "history", b"\x1a": "summary", b"\x2a": "config", b"\x8a\x01": "run"}
#: Appended after every history record before one bulk parse: an empty item marks the boundary.
_SEP = RawRecord(history={"item": [b""]}).SerializeToString()


class WandbReader:
    name = "wandb"
    description = "Weights & Biases run file (wandb/run-*/run-*.wandb, wandb/offline-run-*/)"

    def sniff(self, path: Path, head: bytes) -> bool:
        return is_wandb_file(head)

    def read(self, source: RunSource, options: ReadOptions) -> Run:
        path = source.files[0]
        spath = str(path)
        problems = Problems(spath, options.strict)
        by_kind: dict[str, list[tuple[int, bytes]]] = {"history": [], "summary": [], "config": [], "run": []}
        for off, rec in records(path, problems):
            m = _KIND.match(rec)
            kind = _KINDS[m.group(1)] if m else _kind_of(rec)
            if kind:
                by_kind[kind].append((off, rec))
        hist = [r for _, r in by_kind["history"]]
        offsets = np.array([o for o, _ in by_kind["history"]], dtype=np.int64)
        items, rec_of = _history_items(hist, offsets, problems)
        scalars, notes = _points(items, rec_of, hist, offsets, spath)
        hparams, summary = _config_and_summary(by_kind, problems)
        return Run(name=source.name, source=spath, format=self.name, scalars=scalars, hparams=hparams,
                   summary=summary, step_axis="step",
                   annotations=tuple(problems.annotations + cap(notes)))


def _kind_of(rec: bytes) -> str | None:
    """The kind of a record whose first field is not its kind (wandb writes ``control`` and
    ``_info`` before the kind of some records, e.g. the run record)."""
    try:
        r = Record.FromString(rec)
    except DecodeError:  # a record of a kind we do not read needs not be one we can parse
        return None
    return next((k for k in ("history", "summary", "config", "run") if r.HasField(k)), None)


def _history_items(hist: list[bytes], offsets: np.ndarray, problems: Problems
                   ) -> tuple[_wandb_items.Items, np.ndarray]:
    """Every item of every history record, and the index of the record each came from."""
    try:
        merged = RawRecord.FromString(_SEP.join(hist) + _SEP) if hist else None
        raw = list(merged.history.item) if merged is not None else []
    except DecodeError:  # a record that passed its CRC but is no protobuf: find it one by one
        raw = []
        for off, rec in zip(offsets.tolist(), hist, strict=True):
            try:
                raw += list(RawRecord.FromString(rec).history.item)
            except DecodeError:
                problems.corrupt(off, "history record is not a valid protobuf message")
            raw.append(b"")
    lens = np.fromiter(map(len, raw), np.int64, len(raw))
    sep = lens == 0
    rec_of = (np.cumsum(sep) - sep)[~sep]
    return _wandb_items.split(list(compress(raw, ~sep))), rec_of


def _points(items: _wandb_items.Items, rec_of: np.ndarray, hist: list[bytes], offsets: np.ndarray,
            spath: str):
    names = items.names
    code = {n: i for i, n in enumerate(names)}
    n_rec = len(hist)
    step = np.full(n_rec, -1, dtype=np.int64)
    wall = np.full(n_rec, np.nan)
    has_step = np.zeros(n_rec, dtype=bool)
    if STEP_KEY in code:
        sel = (items.codes == code[STEP_KEY]) & items.numeric
        step[rec_of[sel]] = items.values[sel].astype(np.int64)
        has_step[rec_of[sel]] = True
    if TIME_KEY in code:
        sel = (items.codes == code[TIME_KEY]) & items.numeric
        wall[rec_of[sel]] = items.values[sel]
    for i in np.flatnonzero(~has_step):  # writers that leave _step out: the record's own step
        step[i] = Record.FromString(hist[i]).history.step.num
    notes: list[Annotation] = []
    own = {code[k] for k in (STEP_KEY, TIME_KEY, RUNTIME_KEY) if k in code}
    metric = ~np.isin(items.codes, list(own)) & (items.codes >= 0)
    for c in np.unique(items.codes[metric & ~items.numeric]):
        bad = np.flatnonzero((items.codes == c) & ~items.numeric)
        example = items.texts.get(int(bad[0]), b"")
        notes.append(Annotation(
            "non_numeric", f"key {names[c]!r}: {len(bad)} value(s) are not numbers (e.g. "
            f"{short_repr(example.decode('utf-8', 'replace'))}); no points read",
            path=spath, location=f"byte {int(offsets[rec_of[bad[0]]])}"))
    keep = metric & items.numeric
    codes, recs, values = items.codes[keep], rec_of[keep], items.values[keep]
    steps = step[recs]
    locs = offsets[recs]
    notes += backwards_annotations(step, offsets, spath, loc_label="byte")
    notes += duplicate_annotations(codes, steps, values, locs, names, spath, loc_label="byte")
    return tidy_frame(codes, names, steps, wall[recs], values), notes


def _config_and_summary(by_kind: dict[str, list[tuple[int, bytes]]], problems: Problems):
    """hparams from the run and config records (in order: later updates win), and the summary."""
    config: dict[str, Any] = {}
    summary_items: list[Any] = []
    for kind in ("run", "config"):
        for off, rec in by_kind[kind]:
            try:
                r = Record.FromString(rec)
            except DecodeError:
                problems.corrupt(off, f"{kind} record is not a valid protobuf message")
                continue
            if kind == "run":
                _apply(config, r.run.config)
                summary_items.extend(r.run.summary.update)
            else:
                _apply(config, r.config)
    config.pop("_wandb", None)
    summary: dict[str, Any] = {}
    for it in summary_items:
        summary[_wandb_items.name_of(it)] = _json(it.value_json)
    summ = [rec for _, rec in by_kind["summary"]]
    if summ:
        try:
            merged = RawRecord.FromString(b"".join(summ))
        except DecodeError:
            merged = None
        if merged is not None and merged.summary.update:
            raw = list(merged.summary.update)
            got = _wandb_items.split(raw, with_values=False)
            codes = got.codes[::-1]
            uniq, first = np.unique(codes, return_index=True)
            for c, i in zip(uniq.tolist(), (len(codes) - 1 - first).tolist(), strict=True):
                if c >= 0:  # the last update of each key
                    summary[got.names[c]] = _json(_wandb_items.Item.FromString(raw[i]).value_json)
    summary = {k: v for k, v in summary.items() if not k.startswith("_")}
    return _flatten(config), summary


def _apply(config: dict[str, Any], rec) -> None:
    for it in rec.update:
        config[_wandb_items.name_of(it)] = _json(it.value_json)
    for it in rec.remove:
        config.pop(_wandb_items.name_of(it), None)


def _json(text: bytes) -> Any:
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return text.decode("utf-8", errors="replace")


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out

