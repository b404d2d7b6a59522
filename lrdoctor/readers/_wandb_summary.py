"""The summary of a W&B run: the last update of each key over its summary records (a later
remove drops the key), decoded when it is first used.

Why when first used: wandb writes a summary record after every history record, so two thirds of
a file's records are summary records, and since it writes each record's keys in any order, no
earlier record can be skipped unread: finding the last update of each key walks all their items
(~0.4 CPU s of the 1.3 s a 1M-point file took to read). Diagnosis never uses the summary (only
``inspect`` shows it), so the reader keeps where the summary records are (their file offsets and
the CRCs framing them, 12 bytes a record; not the file's bytes, which a sweep of runs held in
memory for diagnosis could not afford) and reads them again from the file on first use. If the
file has gone or changed by then, the summary is the run record's own, with a logged warning.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LogFormatError
from . import _wandb_items
from ._pbwalk import walk
from ._tfrecord import Problems
from ._wandb_log import Scan, scan

log = logging.getLogger(__name__)

SUMMARY = 3  #: the Record field of a summary record (wandb_internal.proto)


class Summary(Mapping[str, Any]):
    """``Run.summary`` of a W&B run: ``initial`` (the run record's summary, a resumed run's)
    updated by the summary records at ``offsets`` of ``path``, decoded on first use."""

    __slots__ = ("_path", "_offsets", "_crcs", "_initial", "_data")

    def __init__(self, path: str, offsets: np.ndarray, crcs: np.ndarray, initial: dict[str, Any]):
        self._path, self._offsets, self._crcs, self._initial = path, offsets, crcs, initial
        self._data: dict[str, Any] | None = None if len(offsets) else dict(initial)

    @classmethod
    def decoded(cls, data: dict[str, Any]) -> Summary:
        return cls("", np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), data)

    def _get(self) -> dict[str, Any]:
        if self._data is None:
            self._data = {**self._initial, **_reread(self._path, self._offsets, self._crcs)}
        return self._data

    def __getitem__(self, key: str) -> Any:
        return self._get()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())

    def __repr__(self) -> str:
        return repr(self._get())


def _reread(path: str, offsets: np.ndarray, crcs: np.ndarray) -> dict[str, Any]:
    try:
        sc = scan(Path(path), Problems(path, False))  # its damage was reported when the run was read
    except LogFormatError as exc:
        log.warning("%s: W&B summary not read (%s); only the run record's summary is kept", path, exc)
        return {}
    recs = np.flatnonzero(np.isin(sc.offset, offsets))
    if len(recs) != len(offsets) or not np.array_equal(sc.crc[recs], crcs):
        log.warning("%s: W&B summary not read: the file changed since its points were read; only the "
                    "run record's summary is kept", path)
        return {}
    top = walk(sc.buffer, sc.start[recs], sc.start[recs] + sc.length[recs])
    sel = top.field == SUMMARY
    problems = Problems(path, False)
    out = decode(sc, recs[top.msg[sel]], top.start[sel], top.length[sel], problems)
    for a in problems.annotations:
        log.warning("%s: %s (%s)", path, a.message, a.location)
    return out


def decode(sc: Scan, recs: np.ndarray, start: np.ndarray, length: np.ndarray, problems: Problems,
           base: dict[str, Any] | None = None) -> dict[str, Any]:
    """The last update of each key over the summary records ``recs`` (payloads at ``start``,
    ``length``), applied in record order, a record's removes after its updates (as wandb does),
    to ``base`` (the summary of the records before these, when a followed file is read on from
    where it was; not changed)."""
    buf = sc.buffer
    inner = walk(buf, start, start + length)
    for j in np.flatnonzero(inner.bad):
        problems.corrupt(int(sc.offset[recs[j]]), "W&B summary record is not a valid protobuf message")
    out: dict[str, Any] = dict(base or {})
    updated_in: dict[str, int] = dict.fromkeys(out, -1)  # before every record read here
    for field in (1, 2):  # update, then remove
        sel = inner.field == field
        if not sel.any():
            continue
        got = _wandb_items.split(buf, inner.start[sel], inner.length[sel])
        rec = recs[inner.msg[sel]]  # record order is the order written (not byte order: records
        # split across blocks are joined after the file's bytes)
        # the last item of each key by a scatter (np.unique sorted the 1.5M codes of a 100k-step
        # run's summary records only to find these: ~0.08 of its 1.7 CPU s)
        keyed = np.flatnonzero(got.codes >= 0)
        last = np.full(len(got.names), -1, dtype=np.int64)
        np.maximum.at(last, got.codes[keyed], keyed)
        pos, lens = inner.start[sel], inner.length[sel]
        for c, i in enumerate(last.tolist()):
            if i < 0:
                continue
            name = got.names[c]
            if field == 1:
                raw = buf[pos[i]:pos[i] + lens[i]].tobytes()
                out[name] = json_value(_wandb_items.Item.FromString(raw).value_json)
                updated_in[name] = int(rec[i])
            elif name in out and updated_in[name] <= rec[i]:
                del out[name]
    return {k: v for k, v in out.items() if not k.startswith("_")}


def json_value(text: bytes) -> Any:
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return text.decode("utf-8", errors="replace")
