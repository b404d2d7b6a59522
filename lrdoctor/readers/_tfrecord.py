"""TFRecord framing: ``uint64 length | masked crc32c(length) | data | masked crc32c(data)``.

The file is read in chunks (bounded memory) and each chunk's frames are walked by their length
fields. Every frame's length CRC is validated (vectorised: lengths repeat, so one CRC per distinct
length). A frame whose header fails is corrupt: strict mode raises; otherwise the reader names the
byte offset, scans forward to the next valid header and goes on. An incomplete last frame is a
file still being written: everything before it is kept and it is reported as truncated.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import LogFormatError
from ..model import Annotation
from ._crc32c import masked_crc32c

CHUNK_SIZE = 4 << 20  # bounds memory: the per-record arrays of a chunk are ~3x its size
HEADER = 12  # length (8) + length crc (4)
FOOTER = 4  # data crc

_LEN = struct.Struct("<Q")
_U32 = struct.Struct("<I")


def strided_view(data: bytes, dtype: str) -> np.ndarray:
    """``v[i]`` is the value of ``dtype`` stored at byte ``i`` (unaligned; no copy)."""
    size = np.dtype(dtype).itemsize
    n = max(len(data) - size + 1, 0)
    return np.ndarray(shape=(n,), dtype=dtype, buffer=data, strides=(1,))


@dataclass
class Chunk:
    data: bytes
    base: int  # file offset of data[0]
    starts: np.ndarray  # int64 offset of each frame within data
    lengths: np.ndarray  # int64 payload length of each frame


@dataclass
class Problems:
    """What went wrong in one file; annotations in file order."""

    path: str
    strict: bool
    annotations: list[Annotation] = field(default_factory=list)
    origin: int = 0  # added to every offset reported (a file read from a later offset on)

    def corrupt(self, offset: int, message: str, action: str = "record skipped") -> None:
        """``message`` says what is wrong; ``action`` what reading does about it (not under strict,
        where it is an error: "(--strict)" instead)."""
        if self.strict:
            raise LogFormatError(f"{message} (--strict)", path=self.path, location=f"byte {self.origin + offset}")
        self.annotations.append(Annotation(kind="corrupt_record", message=f"{message}; {action}",
                                           path=self.path, location=f"byte {self.origin + offset}"))

    def truncated(self, offset: int, size: int) -> None:
        self.annotations.append(
            Annotation(
                kind="truncated",
                message=f"last record is incomplete ({size - offset} bytes; the file may still be "
                "being written); everything before it was read",
                path=self.path,
                location=f"byte {self.origin + offset}",
            )
        )


def _header_ok(data: bytes, off: int) -> bool:
    return masked_crc32c(data[off : off + 8]) == _U32.unpack_from(data, off + 8)[0]


_PERIOD_MAX = 64  # longest repeating pattern of frame sizes looked for (tags per step, roughly)
_BURST_MAX = 8192


def _period(sizes: list[int]) -> int:
    """Smallest p such that the last p frame sizes repeat the p before them, or 0."""
    for p in range(1, min(_PERIOD_MAX, len(sizes) // 2) + 1):
        if sizes[-p:] == sizes[-2 * p : -p]:
            return p
    return 0


def _walk(data: bytes) -> tuple[np.ndarray, int]:
    """Follow length fields from offset 0: offsets of the frames that fit, and where they stop.

    A Python loop costs ~0.2 us a frame. Training logs repeat the same frame sizes step after step
    (one record per tag), so once the last frames show a period, the following offsets are
    predicted with numpy and kept up to the first one whose length field disagrees: each kept
    offset is then exactly where the plain walk would have gone.
    """
    unpack = _LEN.unpack_from
    size = len(data)
    limit = size - HEADER
    pieces: list[np.ndarray] = []
    starts: list[int] = []
    lengths = strided_view(data, "<u8")
    off = 0
    burst = 2 * _PERIOD_MAX + 1
    predict = 1024
    while off <= limit:
        stop = len(starts) + burst
        while off <= limit and len(starts) < stop:
            starts.append(off)
            off += unpack(data, off)[0] + HEADER + FOOTER
        if off > limit or len(starts) < 2 * _PERIOD_MAX:
            break
        tail = starts[-2 * _PERIOD_MAX :] + [off]
        sizes = [b - a for a, b in zip(tail[:-1], tail[1:], strict=True)]
        p = _period(sizes)
        if not p:
            burst = min(burst * 4, _BURST_MAX)
            continue
        pattern = np.asarray(sizes[-p:], dtype=np.int64)
        span = int(pattern.sum())
        reps = max(1, min(predict // p, (size - off) // span + 1))
        pred = (off + np.arange(reps, dtype=np.int64)[:, None] * span
                + np.concatenate(([0], np.cumsum(pattern)[:-1]))[None, :]).ravel()
        plen = np.tile(pattern, reps)
        fits = pred + plen <= size
        good = fits & (lengths[np.minimum(pred, len(lengths) - 1)].astype(np.int64) + (HEADER + FOOTER) == plen)
        k = int(np.argmin(good)) if not good.all() else len(good)
        if k == 0:
            burst = min(burst * 4, _BURST_MAX)
            continue
        pieces.append(np.asarray(starts, dtype=np.int64))
        pieces.append(pred[:k])
        starts = []
        off = int(pred[k - 1] + plen[k - 1])
        burst = 2 * _PERIOD_MAX + 1
        predict = predict * 4 if k == len(good) else 1024
    if off > size:
        off = starts.pop()
    pieces.append(np.asarray(starts, dtype=np.int64))
    return np.concatenate(pieces), off


def _first_bad_header(data: bytes, starts: np.ndarray, lengths: np.ndarray) -> int:
    """Index of the first frame whose length CRC is wrong, or len(starts)."""
    if len(starts) == 0:
        return 0
    stored = strided_view(data, "<u4")[starts + 8]
    uniq, inv = np.unique(lengths, return_inverse=True)
    expected = np.fromiter((masked_crc32c(_LEN.pack(int(v))) for v in uniq), dtype=np.uint32, count=len(uniq))
    bad = np.flatnonzero(expected[inv] != stored)
    return int(bad[0]) if len(bad) else len(starts)


def _resync(data: bytes, start: int) -> int | None:
    """First offset >= start in data holding a valid frame header, or None."""
    if len(data) - start < HEADER:
        return None
    # A real frame's length is < 4 GiB, so its bytes 4..7 are zero: a cheap filter before the CRC.
    high = strided_view(data, "<u4")[start + 4 : len(data) - HEADER + 5]
    for cand in np.flatnonzero(high == 0):
        off = start + int(cand)
        if off + HEADER <= len(data) and _header_ok(data, off):
            return off
    return None


def iter_chunks(path: str | Path, problems: Problems, chunk_size: int = CHUNK_SIZE) -> Iterator[Chunk]:
    """Valid frames of one event file, chunk by chunk; problems are recorded as they are met."""
    path = Path(path)
    size = path.stat().st_size
    pos = 0
    bad_since: int | None = None  # file offset where an unresolved corrupt region began
    with path.open("rb") as fh:
        want = chunk_size
        while pos < size:
            fh.seek(pos)
            data = fh.read(want)
            want = chunk_size
            at_eof = pos + len(data) >= size
            if bad_since is not None:
                found = _resync(data, 0)
                if found is None:
                    if at_eof:
                        problems.corrupt(bad_since, f"garbage from byte {bad_since} to the end of the file",
                                         f"{size - bad_since} bytes skipped")
                        return
                    pos += max(len(data) - HEADER, 1)
                    continue
                problems.corrupt(bad_since, f"corrupt record at byte {bad_since}: bad length checksum",
                                 f"skipped {pos + found - bad_since} bytes to the next valid record")
                bad_since = None
                if found:
                    pos += found
                    continue
            starts, stop = _walk(data)
            lengths = np.diff(starts, append=stop) - (HEADER + FOOTER)
            k = _first_bad_header(data, starts, lengths)
            if k < len(starts):
                yield Chunk(data, pos, starts[:k], lengths[:k])
                bad_since = pos + int(starts[k])
                if problems.strict:
                    problems.corrupt(bad_since, "corrupt record: bad length checksum")
                pos = bad_since + 1
                continue
            if len(starts):
                yield Chunk(data, pos, starts, lengths)
            rest = len(data) - stop
            if rest >= HEADER and not _header_ok(data, stop):
                bad_since = pos + stop
                if problems.strict:
                    problems.corrupt(bad_since, "corrupt record: bad length checksum")
                pos = bad_since + 1
                continue
            if at_eof:
                if rest:
                    problems.truncated(pos + stop, size)
                return
            if stop == 0:  # one frame larger than a chunk: read it whole
                want = HEADER + _LEN.unpack_from(data, 0)[0] + FOOTER
            pos += stop
