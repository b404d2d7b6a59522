"""Vectorised decoding of the common scalar Event layouts of one chunk of an event file.

Why hand-written: a protobuf parse per record tops out near 0.3-0.4M scalars/s, and a training
run's event file is almost entirely one-value scalar records that differ only in wall time, step
and value. So every record is parsed at once with numpy at fixed byte layouts::

    Event   09 <f64 wall_time> [10 <varint step>] 2a <len> Summary
    Summary 0a <len> Value                          (exactly one value)
    Value   0a <len> <tag> ( 15 <f32 simple_value>
                           | 42 <len> TensorProto 08 <1|2> [12 00] (22|2a|32) <4|8> <value> )
                           [ 4a ... metadata ]

Records with the same layout and tag form a *template*. Its first record is parsed with protobuf,
which proves the layout's meaning; each other member is proven identical to it outside the
wall-time, step and value bytes by its data CRC32C, computed from the template's CRC and those
bytes alone (see _crc32c). Anything else -- other layouts, other kinds of events, and every record
whose CRC does not come out -- goes to the protobuf path in _tfevent_slow, one record at a time.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._crc32c import crc32c, delta_tables, unmask
from ._tfrecord import HEADER, Chunk, strided_view

_HI = np.uint64(0x8080808080808080)
_LO7 = np.uint64(0x7F7F7F7F7F7F7F7F)


class Views:
    """Unaligned typed views of a chunk; gathers are clipped so no index leaves the buffer."""

    def __init__(self, data: bytes):
        self.u8 = np.frombuffer(data, np.uint8)
        pad = data + bytes(16) if len(data) < 16 else data
        self.u32 = strided_view(pad, "<u4")
        self.u64 = strided_view(pad, "<u8")
        self.f32 = strided_view(pad, "<f4")
        self.f64 = strided_view(pad, "<f8")

    @staticmethod
    def at(view: np.ndarray, idx: np.ndarray) -> np.ndarray:
        # not view.take(mode="clip"): it copies an unaligned view whole before gathering
        return view[np.minimum(idx, len(view) - 1)]


def _varint8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decode varints of up to 8 bytes from the little-endian uint64 ``x``: (value, n_bytes or 0)."""
    stop = ~x & _HI
    low = stop & (~stop + np.uint64(1))
    nbytes = np.zeros(len(x), dtype=np.int64)
    nz = low != 0
    nbytes[nz] = (np.log2(low[nz].astype(np.float64)).astype(np.int64) - 7) // 8 + 1
    keep = np.where(nbytes >= 8, ~np.uint64(0), (np.uint64(1) << (nbytes.astype(np.uint64) * np.uint64(8))) - np.uint64(1))
    y = x & keep & _LO7
    out = np.zeros(len(x), dtype=np.uint64)
    for j in range(int(nbytes.max(initial=0))):
        out |= ((y >> np.uint64(8 * j)) & np.uint64(0x7F)) << np.uint64(7 * j)
    return out.view(np.int64), nbytes


def _byte(x: np.ndarray, i) -> np.ndarray:
    """Byte ``i`` (a scalar or per-record array) of little-endian uint64 words."""
    return ((x >> (np.asarray(i, dtype=np.uint64) * np.uint64(8))) & np.uint64(0xFF)).astype(np.int64)


def _varint2(v: Views, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Length fields: 1 or 2 byte varints (else n_bytes 0)."""
    b0 = Views.at(v.u8, p).astype(np.int64)
    b1 = Views.at(v.u8, p + 1).astype(np.int64)
    one = b0 < 0x80
    two = ~one & (b1 < 0x80)
    val = np.where(one, b0, (b0 & 0x7F) | (b1 << 7))
    return val, np.where(one, 1, np.where(two, 2, 0))


def _summary_header(v: Views, p: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``2a <len> 0a <len> 0a <len> <tag>`` at ``p`` spanning to ``end``: (ok, tag offset, tag length).

    One 8-byte word holds the whole header when the three lengths are one-byte varints (records
    under 128 bytes); the rest are parsed byte by byte.
    """
    w = Views.at(v.u64, p)
    sl, vl, tl = _byte(w, 1), _byte(w, 3), _byte(w, 5)
    short = (sl < 0x80) & (vl < 0x80) & (tl < 0x80)
    ok = (short & (_byte(w, 0) == 0x2A) & (_byte(w, 2) == 0x0A) & (_byte(w, 4) == 0x0A)
          & (p + 2 + sl == end) & (p + 4 + vl == end))
    tag_off = p + 6
    long_ = np.flatnonzero(~short & (_byte(w, 0) == 0x2A))
    if len(long_):
        q, e = p[long_], end[long_]
        sl2, n = _varint2(v, q + 1)
        q = q + 1 + n
        ok2 = (n > 0) & (q + sl2 == e) & (Views.at(v.u8, q) == 0x0A)
        vl2, n = _varint2(v, q + 1)
        q = q + 1 + n
        ok2 &= (n > 0) & (q + vl2 == e) & (Views.at(v.u8, q) == 0x0A)
        tl2, n = _varint2(v, q + 1)
        ok2 &= n > 0
        ok[long_], tag_off[long_], tl[long_] = ok2, q + 1 + n, tl2
    ok &= (tl > 0) & (tag_off + tl < end)
    return ok, tag_off, tl


def parse_layouts(chunk: Chunk, v: Views) -> dict[str, np.ndarray]:
    """Per-record fields of the fast layout; ``ok`` marks the records that have it."""
    d = chunk.starts + HEADER
    end = d + chunk.lengths
    at = Views.at
    has_wall = at(v.u8, d) == 0x09
    wall_bits = at(v.u64, d + 1)
    w9 = at(v.u64, d + 9)
    has_step = _byte(w9, 0) == 0x10
    step_bits = w9 >> np.uint64(8)  # the step varint, if it is at most 7 bytes long
    step, slen = _varint8(step_bits)
    slen[slen > 6] = 0  # longer steps (>= 2**42, negative): protobuf path
    step_ok = ~has_step | (slen > 0)
    ok = (chunk.lengths >= 20) & (chunk.lengths < 1 << 16) & has_wall & step_ok
    step = np.where(has_step, step, 0)
    slen = np.where(has_step, slen, 0)
    p = np.where(has_step, d + 10 + slen, d + 9)
    what = np.where(has_wall & step_ok, _byte(w9, np.where(has_step, 1 + slen, 0)), 0)  # 0: unknown
    ok &= what == 0x2A
    head_ok, tag_off, tl = _summary_header(v, p, end)
    ok &= head_ok
    single = ok.copy()  # one-value summary: its value kind can be judged from one byte
    kpos = tag_off + tl
    k8 = at(v.u64, kpos)
    kind = _byte(k8, 0)
    simple = kind == 0x15
    # tensor: 42 <len> 08 <dtype> [12 00] <content field> <width> <value>, all in k8 but the value
    dt = _byte(k8, 3)
    has_shape = (_byte(k8, 4) == 0x12) & (_byte(k8, 5) == 0)
    c = np.where(has_shape, 6, 4)
    width = np.where(simple | (dt == 1), 4, 8)
    cfield = _byte(k8, c)
    tensor = (
        (kind == 0x42) & (_byte(k8, 2) == 0x08) & ((dt == 1) | (dt == 2))
        & ((cfield == 0x22) | ((cfield == 0x2A) & (dt == 1)) | ((cfield == 0x32) & (dt == 2)))
        & (_byte(k8, c + 1) == width) & (_byte(k8, 1) == c + width)
    )
    val_off = np.where(simple, kpos + 1, kpos + c + 2)
    ok &= (simple | tensor) & (val_off + width <= end)
    return {
        "ok": ok, "d": d, "end": end, "step": step, "slen": slen, "tag_off": tag_off, "tl": tl,
        "tensor": tensor, "val_off": val_off, "width": width, "what": what, "kind": kind,
        "single": single, "has_wall": has_wall, "wall_bits": wall_bits, "step_bits": step_bits,
        "val_bits": at(v.u64, val_off),
    }


def template_codes(f: dict[str, np.ndarray], v: Views, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group the fast records ``idx`` by layout and tag: (code per record, first member per code)."""
    d = f["d"][idx]
    tag_off, tl = f["tag_off"][idx], f["tl"][idx]
    shape = (
        (f["end"][idx] - d).astype(np.uint64)
        | (f["slen"][idx].astype(np.uint64) << np.uint64(16))
        | (f["width"][idx].astype(np.uint64) << np.uint64(20))
        | (f["tensor"][idx].astype(np.uint64) << np.uint64(24))
        | ((f["val_off"][idx] - d).astype(np.uint64) << np.uint64(32))
    )
    # First and last (up to) 8 tag bytes; a collision is caught by the CRC and goes the slow way.
    head = Views.at(v.u64, tag_off) & np.where(tl >= 8, ~np.uint64(0), (np.uint64(1) << (tl.astype(np.uint64) * np.uint64(8))) - np.uint64(1))
    tail = Views.at(v.u64, tag_off + tl - 8) if len(idx) else head
    key = shape * np.uint64(0x9E3779B97F4A7C15) ^ head * np.uint64(0xC2B2AE3D27D4EB4F) ^ tail
    codes, _ = pd.factorize(key)
    # factorize numbers codes in order of first appearance: a first member raises the running max.
    first = np.flatnonzero(np.diff(np.maximum.accumulate(codes), prepend=-1) > 0)
    return codes.astype(np.int64), first


def member_crcs(f: dict[str, np.ndarray], v: Views, idx: np.ndarray, rep: np.ndarray,
                rep_crc: np.ndarray) -> np.ndarray:
    """Data CRC of each record ``idx[i]``, assuming it equals record ``rep[i]`` outside wall time,
    step and value bytes (``rep_crc[i]`` is that record's CRC)."""
    d = f["d"][idx]
    length = f["end"][idx] - d
    table = delta_tables(int(length.max(initial=1))).ravel()
    crc = rep_crc.astype(np.uint32).copy()

    def mix(offset_rel: np.ndarray, delta: np.ndarray, nbytes: int) -> None:
        dist = length - 1 - offset_rel  # distance of the field's first byte from the end
        for j in range(nbytes):
            b = ((delta >> np.uint64(8 * j)) & np.uint64(0xFF)).astype(np.int64)
            if not b.any():  # e.g. the high bytes of nearby wall times: no change to the CRC
                continue
            crc[...] ^= table[np.maximum(dist - j, 0) * 256 + b]

    def field_delta(bits: np.ndarray, nbytes: np.ndarray) -> np.ndarray:
        mask = np.where(nbytes >= 8, ~np.uint64(0), (np.uint64(1) << (nbytes.astype(np.uint64) * np.uint64(8))) - np.uint64(1))
        return (bits[idx] ^ bits[rep]) & mask

    mix(np.full(len(idx), 1), f["wall_bits"][idx] ^ f["wall_bits"][rep], 8)
    slen = f["slen"][idx]
    mix(np.full(len(idx), 10), field_delta(f["step_bits"], slen), int(slen.max(initial=0)))
    width = f["width"][idx]
    mix(f["val_off"][idx] - d, field_delta(f["val_bits"], width), int(width.max(initial=0)))
    return crc


def stored_crcs(f: dict[str, np.ndarray], v: Views, idx: np.ndarray) -> np.ndarray:
    return unmask(Views.at(v.u32, f["end"][idx]))


def record_crc(data: bytes, d: int, end: int) -> int:
    return crc32c(data[d:end])


def values(f: dict[str, np.ndarray], v: Views, idx: np.ndarray) -> np.ndarray:
    bits = f["val_bits"][idx]
    f32 = (bits & np.uint64(0xFFFFFFFF)).astype(np.uint32).view(np.float32).astype(np.float64)
    return np.where(f["width"][idx] == 4, f32, bits.view(np.float64))
