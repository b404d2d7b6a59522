"""The framing of a ``.wandb`` file: LevelDB's log format behind a 7-byte W&B header.

``:W&B`` + magic ``0xBEE1`` (uint16 LE) + version ``0``; then 32 KiB blocks of fragments, each
``crc32 (uint32 LE) | length (uint16 LE) | type (uint8) | data``. The CRC is zlib's CRC-32 of the
type byte followed by the data. Type 1 is a whole record, 2/3/4 the first/middle/last fragment of
one that crosses blocks; a block's last < 7 bytes are zero padding. (wandb's own Python reader
went with wandb 0.18's move to the Go core, which is why this is hand-written: it is ~100 lines
and lets lrdoctor read W&B runs without the wandb package.)

Damage is handled as LevelDB's reader does: a fragment whose CRC, type or length is wrong makes
the rest of its block unreadable, so reading resumes at the next block, and a record whose
fragments were lost is dropped; each case becomes an annotation naming the byte offset.
A file that ends inside a fragment was cut off while written: everything before it is kept.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import LogFormatError
from ._tfrecord import Problems

MAGIC = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4

_FRAG = struct.Struct("<IHB")
#: zlib.crc32 seeds: the CRC of each type byte, so a fragment's CRC needs one call over its data.
_SEED = {t: zlib.crc32(bytes([t])) for t in range(5)}


def is_wandb_file(head: bytes) -> bool:
    return head.startswith(MAGIC[:6])


@dataclass(frozen=True)
class Scan:
    """Every intact record of a file: ``buffer[start[i]:start[i] + length[i]]`` is record i's
    payload (whole records in place in the file's bytes, records split across blocks joined after
    them), ``offset[i]`` the file offset of its first fragment. ``buffer`` ends in zero padding."""

    buffer: np.ndarray  # uint8
    offset: np.ndarray
    start: np.ndarray
    length: np.ndarray


def scan(path: Path, problems: Problems, pad: int = 64) -> Scan:
    """Find every intact record of ``path``; damage goes to ``problems`` (see the module docstring)."""
    spath = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LogFormatError(f"cannot read: {exc.strerror or exc}", path=spath) from exc
    if not data.startswith(MAGIC[:6]):
        raise LogFormatError("not a W&B run file (no ':W&B' header)", path=spath, location="byte 0")
    if len(data) < HEADER:
        raise LogFormatError("W&B run file cut off inside its header", path=spath, location="byte 0")
    if data[6] != MAGIC[6]:
        raise LogFormatError(f"W&B run file format version {data[6]} is not known (expected 0)",
                             path=spath, location="byte 6")
    size = len(data)
    view = memoryview(data)
    offsets: list[int] = []
    starts: list[int] = []  # -1: assembled from fragments, payload in `joined`
    lengths: list[int] = []
    joined: list[bytes] = []
    off = HEADER
    parts: list[bytes] = []
    start = -1  # offset of the record being assembled from fragments
    cut = -1  # offset where the file ends inside a fragment
    unpack = _FRAG.unpack_from
    crc32 = zlib.crc32
    while off < size:
        left = BLOCK - off % BLOCK
        if left < HEADER:  # trailer padding of a block
            off += left
            continue
        if off + HEADER > size:
            cut = off
            break
        crc, length, kind = unpack(data, off)
        end = off + HEADER + length
        if kind == FULL and end - off <= left and end <= size and crc32(view[off + HEADER:end], _SEED[1]) == crc:
            if start >= 0:  # the common case first: one whole record
                problems.corrupt(start, "a record split across blocks has no last fragment", "record dropped")
                start, parts = -1, []
            offsets.append(off)
            starts.append(off + HEADER)
            lengths.append(length)
            off = end
            continue
        if kind == 0 and length == 0 and crc == 0:  # zero-filled (preallocated) space
            off += left
            continue
        if end > size and 1 <= kind <= 4 and end - off <= left:
            cut = off
            break
        chunk = data[off + HEADER:end]
        if not 1 <= kind <= 4 or end - off > left or crc32(chunk, _SEED[kind]) != crc:
            why = ("bad fragment type" if not 1 <= kind <= 4 else
                   "fragment longer than its block" if end - off > left else "CRC mismatch")
            nxt = off + left
            problems.corrupt(off, f"corrupt W&B record ({why})",
                             f"rest of its block skipped, reading resumes at byte {min(nxt, size)}")
            if start >= 0:
                problems.corrupt(start, "a record split across blocks lost a fragment", "record dropped")
                start, parts = -1, []
            off = nxt
            continue
        if kind == FIRST:
            if start >= 0:
                problems.corrupt(start, "a record split across blocks has no last fragment", "record dropped")
            start, parts = off, [chunk]
        elif start < 0:
            problems.corrupt(off, "a record fragment without its first part", "fragment skipped")
        elif kind == MIDDLE:
            parts.append(chunk)
        else:
            parts.append(chunk)
            offsets.append(start)
            starts.append(-1)
            payload = b"".join(parts)
            lengths.append(len(payload))
            joined.append(payload)
            start, parts = -1, []
        off = end
    if start >= 0 or cut >= 0:  # cut off mid-record: the record being written is lost
        problems.truncated(start if start >= 0 else cut, size)
    start_arr = np.asarray(starts, dtype=np.int64)
    length_arr = np.asarray(lengths, dtype=np.int64)
    tail = start_arr < 0
    if tail.any():  # fragmented records go after the file's bytes, in order
        start_arr[tail] = size + pad + np.concatenate([[0], np.cumsum(length_arr[tail])[:-1]])
    buffer = np.frombuffer(b"".join([data, b"\0" * pad, *joined, b"\0" * pad]), dtype=np.uint8)
    return Scan(buffer, np.asarray(offsets, dtype=np.int64), start_arr, length_arr)
