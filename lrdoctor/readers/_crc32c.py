"""CRC32C (Castagnoli) as TFRecord framing uses it: one-shot and vectorised over many records.

One-shot checksums come from ``google-crc32c`` (hardware accelerated). Checking a million small
records one call at a time would cost more than decoding them, so records that share a layout are
checked together: CRC is affine over GF(2), so for two messages of equal length
``crc(a) ^ crc(b)`` depends only on ``a ^ b``. :func:`delta_tables` gives the contribution of each
byte value at each distance from the end of a message, and a record's CRC is the CRC of a
reference record xor the contributions of the few byte positions where they differ.
"""

from __future__ import annotations

import numpy as np

try:
    import google_crc32c as _gcrc

    def crc32c(data: bytes | memoryview) -> int:
        return _gcrc.value(data if isinstance(data, bytes) else bytes(data))

except ImportError:  # pragma: no cover - the core dependency is missing; slow but correct
    _gcrc = None

    def crc32c(data: bytes | memoryview) -> int:
        crc = 0xFFFFFFFF
        table = _TABLE_LIST
        for b in bytes(data):
            crc = (crc >> 8) ^ table[(crc ^ b) & 0xFF]
        return crc ^ 0xFFFFFFFF


_POLY = 0x82F63B78  # reflected Castagnoli polynomial


def _make_table() -> np.ndarray:
    t = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        t = np.where(t & 1, (t >> 1) ^ np.uint32(_POLY), t >> 1).astype(np.uint32)
    return t


TABLE = _make_table()
_TABLE_LIST = [int(x) for x in TABLE]
_MASK_DELTA = 0xA282EAD8


def masked_crc32c(data: bytes | memoryview) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def unmask(masked: np.ndarray) -> np.ndarray:
    """Vectorised inverse of the TFRecord CRC mask."""
    rot = (masked.astype(np.uint32) - np.uint32(_MASK_DELTA)).astype(np.uint32)
    return ((rot >> np.uint32(17)) | (rot << np.uint32(15))).astype(np.uint32)


_delta: np.ndarray = TABLE[None, :].copy()


def delta_tables(max_distance: int) -> np.ndarray:
    """``T[d, b]``: how a byte ``b`` ``d`` bytes before the end of a message changes its CRC.

    ``T[0]`` is the plain CRC table; each further byte after it shifts the register once.
    """
    global _delta
    if _delta.shape[0] <= max_distance:
        rows = [_delta]
        last = _delta[-1]
        for _ in range(_delta.shape[0], max_distance + 1 + 64):
            last = (last >> np.uint32(8)) ^ TABLE[last & np.uint32(0xFF)]
            rows.append(last[None, :])
        _delta = np.concatenate(rows).astype(np.uint32)
    return _delta
