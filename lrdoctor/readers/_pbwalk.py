"""Walking the top-level fields of many protobuf messages at once, with numpy.

A ``.wandb`` file of a million points holds ~300k records and ~1.3M history items; decoding them
one protobuf object at a time costs microseconds each in Python. Here every message is a byte
range of one buffer and all of them advance field by field in lock-step (one numpy pass per
field position), so the Python cost is per field *position*, not per message. Only wire types 0
(varint) and 2 (length-delimited) are walked, the only ones the messages read here contain; a
message with anything else, or whose fields overrun its range, is flagged for the caller's
protobuf fallback.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAD = 64  # zero bytes the buffer needs past its last message (varint and value gathers read ahead)
_MAX_FIELDS = 100_000
#: messages walked at once: enough to make numpy's per-call cost small, few enough that the
#: arrays of a pass stay in cache
CHUNK = 16_384


def loads(buf: np.ndarray, dtype: str) -> np.ndarray:
    """``buf`` (uint8) as the little-endian integer of ``dtype`` starting at each byte (an
    unaligned view, no copy): a gather from it reads 2, 4 or 8 bytes per index in one step, where
    gathering each byte cost a numpy pass apiece."""
    size = np.dtype(dtype).itemsize
    return np.ndarray(shape=(max(len(buf) - size + 1, 0),), dtype=dtype, buffer=buf, offset=0, strides=(1,))


def varints(buf: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(value, byte count) of the varint at each position (up to 5 bytes; 0 bytes = malformed).
    Tags and most lengths take one or two bytes: those are decoded without the 5-byte gather."""
    b0 = buf[at].astype(np.int64)
    value = b0.copy()
    n = np.ones(len(at), dtype=np.int64)
    more = np.flatnonzero(b0 >= 0x80)
    if len(more):
        b1 = buf[at[more] + 1].astype(np.int64)
        value[more] = (b0[more] & 0x7F) | (b1 << 7)
        n[more] = 2
        longer = more[b1 >= 0x80]
        if len(longer):
            b = buf[at[longer, None] + np.arange(5)].astype(np.int64)
            cont = b >= 0x80
            k = np.argmin(cont, axis=1) + 1  # first byte without the continuation bit
            k[cont.all(axis=1)] = 0
            used = np.arange(5) < k[:, None]
            value[longer] = ((b & 0x7F) << (7 * np.arange(5)) * used).sum(axis=1, where=used)
            n[longer] = k
    return value, n


@dataclass(frozen=True)
class Fields:
    """The length-delimited fields found: message index, field number, payload start and length."""

    msg: np.ndarray
    field: np.ndarray
    start: np.ndarray
    length: np.ndarray
    bad: np.ndarray  # bool per message: not walkable (the caller decodes it another way)


def walk(buf: np.ndarray, start: np.ndarray, end: np.ndarray) -> Fields:
    """Every length-delimited top-level field of the messages ``buf[start[i]:end[i]]``, in order."""
    if len(start) > CHUNK:  # chunks keep the temporaries in cache (and off fresh, faulting pages)
        parts = [(lo, _walk(buf, start[lo:lo + CHUNK], end[lo:lo + CHUNK])) for lo in range(0, len(start), CHUNK)]
        return Fields(*(np.concatenate([f.msg + lo for lo, f in parts]),
                        *(np.concatenate([getattr(f, k) for _, f in parts]) for k in ("field", "start", "length", "bad"))))
    return _walk(buf, start, end)


def _walk(buf: np.ndarray, start: np.ndarray, end: np.ndarray) -> Fields:
    n = len(start)
    cur = start.astype(np.int64).copy()
    end = end.astype(np.int64)
    bad = np.zeros(n, dtype=bool)
    live = np.flatnonzero(cur < end)
    out_msg, out_field, out_start, out_len = [], [], [], []
    for _ in range(_MAX_FIELDS):
        if not len(live):
            break
        c = cur[live]
        b0, b1 = buf[c], buf[c + 1]
        # the usual field: a one-byte tag of wire type 2 and a one-byte length (items, records)
        short = ((b0 & 0x87) == 0x02) & (b0 >= 0x08) & (b1 < 0x80)
        if short.all():
            tag, length = b0.astype(np.int64), b1.astype(np.int64)
            nxt = c + 2 + length
            stop = end[live]
            ok = nxt <= stop
            if ok.all():  # the common pass: nothing to filter out (saves half its numpy calls)
                out_msg.append(live)
                out_field.append(tag >> 3)
                out_start.append(c + 2)
                out_len.append(length)
                cur[live] = nxt
                live = live[nxt < stop]
                continue
            bad[live[~ok]] = True
            keep = ok
            fstart = c + 2
        else:
            tag, tn = varints(buf, c)
            wire = tag & 7
            val, vn = varints(buf, c + np.maximum(tn, 1))
            length_delim = wire == 2
            nxt = np.where(length_delim, c + tn + vn + val, c + tn + vn)
            broken = (tn == 0) | (vn == 0) | ~((wire == 0) | length_delim) | (nxt > end[live]) | (tag >> 3 == 0)
            bad[live[broken]] = True
            ok = ~broken
            keep = ok & length_delim
            fstart, length = c + tn + vn, val
        out_msg.append(live[keep])
        out_field.append(tag[keep] >> 3)
        out_start.append(fstart[keep])
        out_len.append(length[keep])
        cur[live[ok]] = nxt[ok]
        live = live[ok & (nxt < end[live])]
    msg, field, fstart, flen = (_cat(x) for x in (out_msg, out_field, out_start, out_len))
    # message by message, fields in byte order: each pass's output is in message order, so a
    # stable sort by message alone merges the passes (few sorted runs: cheap)
    order = np.argsort(msg, kind="stable")
    order = order[~bad[msg[order]]]
    return Fields(msg[order], field[order], fstart[order], flen[order], bad)


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
