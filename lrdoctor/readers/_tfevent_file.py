"""Decode one event file: frames (_tfrecord) -> vectorised templates (_tfevent_fast) + protobuf
path (_tfevent_slow) -> every scalar point in file order.

Every record whose content is used or skipped has its data CRC32C checked (vectorised for the
fast path, one call per record otherwise), so a damaged record is never turned into a point.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..model import Annotation
from . import _tfevent_fast as fast
from ._tfevent_slow import SKIP_VALUE_KIND, SKIP_WHAT, Decoded, extract, parse_event
from ._tfrecord import CHUNK_SIZE, Chunk, Problems, iter_chunks

_MAX_REP_TRIES = 8


@dataclass
class FileScalars:
    path: str
    tag_names: list[str]
    tag_id: np.ndarray  # int32 per point, index into tag_names
    step: np.ndarray
    wall_time: np.ndarray
    value: np.ndarray
    first_offset: int | None  # file offset of the first point's record
    hparams: dict[str, Any] = field(default_factory=dict)
    restarts: list[tuple[int, int]] = field(default_factory=list)  # (file offset, step)
    annotations: list[Annotation] = field(default_factory=list)


class _Acc:
    def __init__(self) -> None:
        self.tag_index: dict[str, int] = {}
        self.parts: list[tuple[np.ndarray, ...]] = []  # of the current chunk, with offsets
        self.done: list[tuple[np.ndarray, ...]] = []  # (tag_id, step, wall, value, pending)
        self.first_offset: int | None = None
        self.plugins: dict[str, str] = {}
        self.dec = Decoded()

    def tag(self, name: str) -> int:
        return self.tag_index.setdefault(name, len(self.tag_index))


def _same_value(ours: float, theirs: float) -> bool:
    return ours == theirs or (np.isnan(ours) and np.isnan(theirs))


def _verify_rep(data: bytes, f: dict, v: fast.Views, r: int, acc: _Acc) -> tuple[int, bool] | None:
    """Prove record ``r`` means what its layout says: (tag id, pending) or None; (-1, _) means a
    rank-0 tensor of another plugin (not a scalar)."""
    d, end = int(f["d"][r]), int(f["end"][r])
    if fast.record_crc(data, d, end) != int(fast.stored_crcs(f, v, np.array([r]))[0]):
        return None
    ev = parse_event(data[d:end])
    if ev is None or ev.WhichOneof("what") != "summary" or len(ev.summary.value) != 1:
        return None
    val = ev.summary.value[0]
    tag_bytes = data[int(f["tag_off"][r]) : int(f["tag_off"][r]) + int(f["tl"][r])]
    if val.tag.encode() != tag_bytes or ev.step != int(f["step"][r]):
        return None
    if ev.wall_time != float(fast.Views.at(v.f64, f["d"][r : r + 1] + 1)[0]):
        return None
    ours = float(fast.values(f, v, np.array([r]))[0])
    plugin = None
    if val.HasField("metadata") and val.metadata.HasField("plugin_data"):
        plugin = val.metadata.plugin_data.plugin_name
        acc.plugins.setdefault(val.tag, plugin)
    kind = val.WhichOneof("value")
    if kind == "simple_value" and not f["tensor"][r]:
        theirs = float(np.float32(val.simple_value))
    elif kind == "tensor" and f["tensor"][r]:
        from ._tfevent_slow import _tensor_scalar

        theirs = _tensor_scalar(val.tensor)
        if theirs is None:
            return None
        if plugin not in (None, "scalars"):
            return -1, False
    else:
        return None
    if not _same_value(ours, theirs):
        return None
    return acc.tag(val.tag), kind == "tensor" and plugin is None


def _fast(chunk: Chunk, f: dict, v: fast.Views, acc: _Acc) -> np.ndarray:
    """Emit the fast-path points of a chunk; return the record indices left for the slow path."""
    idx = np.flatnonzero(f["ok"])
    if len(idx) == 0:
        return np.zeros(0, dtype=np.int64)
    codes, first = fast.template_codes(f, v, idx)
    n_t = len(first)
    rep = np.full(n_t, -1, dtype=np.int64)
    tag_id = np.full(n_t, -1, dtype=np.int64)
    pending = np.zeros(n_t, dtype=bool)
    for t in range(n_t):
        got = _verify_rep(chunk.data, f, v, int(idx[first[t]]), acc)
        if got is not None:
            rep[t], (tag_id[t], pending[t]) = idx[first[t]], got
            continue
        for r in idx[np.flatnonzero(codes == t)[1:_MAX_REP_TRIES]]:
            got = _verify_rep(chunk.data, f, v, int(r), acc)
            if got is not None:
                rep[t], (tag_id[t], pending[t]) = r, got
                break
    has_rep = rep[codes] >= 0
    good = np.zeros(len(idx), dtype=bool)
    sel = np.flatnonzero(has_rep)
    if len(sel):
        rep_crc = np.zeros(n_t, dtype=np.uint32)
        for t in np.flatnonzero(rep >= 0).tolist():
            rep_crc[t] = fast.record_crc(chunk.data, int(f["d"][rep[t]]), int(f["end"][rep[t]]))
        crc = fast.member_crcs(f, v, idx[sel], rep[codes[sel]], rep_crc[codes[sel]])
        good[sel] = crc == fast.stored_crcs(f, v, idx[sel])
    emit = good & (tag_id[codes] >= 0)
    e = idx[emit]
    if len(e):
        acc.parts.append((
            tag_id[codes[emit]], f["step"][e], fast.Views.at(v.f64, f["d"][e] + 1), fast.values(f, v, e),
            chunk.base + chunk.starts[e], pending[codes[emit]],
        ))
    return idx[~good]


def _slow(chunk: Chunk, f: dict, v: fast.Views, records: np.ndarray, problems: Problems, acc: _Acc) -> None:
    data = chunk.data
    dec = Decoded()
    stored = fast.stored_crcs(f, v, records)
    for i, want in zip(records.tolist(), stored.tolist(), strict=True):
        d, end = int(f["d"][i]), int(f["end"][i])
        at = chunk.base + int(chunk.starts[i])
        if fast.record_crc(data, d, end) != want:
            problems.corrupt(at, f"corrupt record at byte {at}: data checksum mismatch")
            continue
        if f["what"][i] in SKIP_WHAT or (f["single"][i] and f["kind"][i] in SKIP_VALUE_KIND):
            continue  # image, histogram, audio, graph, ...: not parsed
        ev = parse_event(data[d:end])
        if ev is None:
            problems.corrupt(at, f"record at byte {at} does not decode as an Event")
            continue
        extract(ev, at, dec)
    for tag, plugin in dec.plugins.items():
        acc.plugins.setdefault(tag, plugin)
    acc.dec.hparams.update(dec.hparams)
    acc.dec.restarts.extend(dec.restarts)
    if dec.offsets:
        acc.parts.append((
            np.fromiter((acc.tag(t) for t in dec.tags), dtype=np.int64, count=len(dec.tags)),
            np.asarray(dec.steps, dtype=np.int64), np.asarray(dec.walls, dtype=np.float64),
            np.asarray(dec.values, dtype=np.float64), np.asarray(dec.offsets, dtype=np.int64),
            np.asarray(dec.pending, dtype=bool),
        ))


def decode_file(path: str | Path, strict: bool = False, chunk_size: int = CHUNK_SIZE) -> FileScalars:
    problems = Problems(str(path), strict)
    acc = _Acc()
    for chunk in iter_chunks(path, problems, chunk_size):
        v = fast.Views(chunk.data)
        f = fast.parse_layouts(chunk, v)
        rest = _fast(chunk, f, v, acc)
        slow = np.union1d(rest, np.flatnonzero(~f["ok"]))
        if len(slow):
            _slow(chunk, f, v, slow, problems, acc)
        del v, f
        _merge_chunk(acc)
    return _finish(str(path), acc, problems)


def _merge_chunk(acc: _Acc) -> None:
    """Put the chunk's fast and slow points in file order; keep only what the file table needs."""
    if not acc.parts:
        return
    cols = [np.concatenate(c) for c in zip(*acc.parts, strict=True)]
    acc.parts.clear()
    offset = cols[4]
    if np.any(offset[1:] < offset[:-1]):
        order = np.argsort(offset, kind="stable")
        cols = [c[order] for c in cols]
    if acc.first_offset is None:
        acc.first_offset = int(cols[4][0])
    acc.done.append((cols[0].astype(np.int32), cols[1], cols[2], cols[3], cols[5]))


def _concat(parts: list, i: int, dtype) -> np.ndarray:
    out = np.concatenate([p[i] for p in parts]) if parts else np.zeros(0, dtype=dtype)
    return out.astype(dtype, copy=False)


def _finish(path: str, acc: _Acc, problems: Problems) -> FileScalars:
    names = list(acc.tag_index)
    tag_id, pending = _concat(acc.done, 0, np.int32), _concat(acc.done, 4, bool)
    step, wall, value = _concat(acc.done, 1, np.int64), _concat(acc.done, 2, np.float64), _concat(acc.done, 3, np.float64)
    acc.done.clear()
    # Rank-0 tensors without plugin metadata are scalars unless their tag belongs to another plugin.
    other = np.array([acc.plugins.get(t, "scalars") != "scalars" for t in names], dtype=bool)
    if pending.any() and other.any():
        keep = ~(pending & other[tag_id])
        tag_id, step, wall, value = (a[keep] for a in (tag_id, step, wall, value))
    return FileScalars(
        path=path, tag_names=names, tag_id=tag_id, step=step, wall_time=wall, value=value,
        first_offset=acc.first_offset, hparams=acc.dec.hparams, restarts=acc.dec.restarts,
        annotations=problems.annotations,
    )

