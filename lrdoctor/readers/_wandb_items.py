"""Vectorised decoding of many W&B history/summary items at once.

A history record holds items ``Item{key=1 | nested_key=2 (repeated), value_json=16}``. Decoding
them one protobuf object at a time costs ~1 us of Python per point, which caps a reader near
600k points/s; here the items of a whole file are byte ranges of one buffer (found by
:mod:`._pbwalk`), split with numpy: walk the key fields of every item in lock-step, group
identical key bytes by a hash (checked for collisions), and convert value texts to floats in one
numpy cast. An item of any other layout (a field after ``value_json``, a length over 127 bytes,
an unknown field) is decoded by protobuf instead, so nothing is lost to the fast path.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ._wandb_proto import Item

_VALUE_TAG = (0x82, 0x01)  # field 16, wire type 2
_MAX_KEY_FIELDS = 32
_MAX_FAST_VALUE = 40  # longer value texts (media, tables) take the slow path
_CHUNK = 1 << 18


@dataclass(frozen=True)
class Items:
    """Items split into key codes and value texts."""

    codes: np.ndarray  # int64 index into names, per item
    names: list[str]  # key name per code (nested keys joined with '/')
    values: np.ndarray  # float64 per item (NaN where not a number: see numeric)
    numeric: np.ndarray  # bool per item: value_json is a JSON number (or NaN/Infinity)
    texts: dict[int, bytes]  # value_json of non-numeric items, by item index (first few per key)


def _sliding(buf: np.ndarray, width: int) -> np.ndarray:
    return np.lib.stride_tricks.as_strided(buf, shape=(max(len(buf) - width + 1, 0), width),
                                           strides=(1, 1), writeable=False)


def name_of(item: Item) -> str:
    parts = item.nested_key
    raw = b"/".join(parts) if parts else item.key
    return raw.decode("utf-8", errors="replace")


def split(buf: np.ndarray, starts: np.ndarray, lens: np.ndarray, *, with_values: bool = True) -> Items:
    """Key codes (and, ``with_values``, numbers) of the items ``buf[starts[i]:starts[i] + lens[i]]``
    (``buf`` padded with zeros, see ``_pbwalk.PAD``); see the module docstring."""
    n = len(starts)
    starts = starts.astype(np.int64)
    lens = lens.astype(np.int64)
    ends = starts + lens
    if n and len(buf) < ends.max() + _MAX_FAST_VALUE + 8:
        buf = np.concatenate([buf, np.zeros(_MAX_FAST_VALUE + 8, dtype=np.uint8)])
    cur = starts.copy()
    ok = lens > 0
    walking = ok.copy()
    for _ in range(_MAX_KEY_FIELDS):
        tag = buf[cur]
        key = walking & ((tag == 0x0A) | (tag == 0x12))
        if not key.any():
            break
        length = buf[cur + 1].astype(np.int64)
        bad = key & ((length >= 0x80) | (cur + 2 + length > ends))
        ok &= ~bad
        step = key & ~bad
        cur[step] += 2 + length[step]
        walking = step
    vlen = buf[cur + 2].astype(np.int64)
    ok &= (buf[cur] == _VALUE_TAG[0]) & (buf[cur + 1] == _VALUE_TAG[1]) & (vlen < 0x80)
    ok &= (cur + 3 + vlen == ends) & (cur > starts) & (vlen <= _MAX_FAST_VALUE)
    codes = np.full(n, -1, dtype=np.int64)
    names: list[str] = []
    by_name: dict[str, int] = {}

    def code_of(name: str) -> int:
        if name not in by_name:
            by_name[name] = len(names)
            names.append(name)
        return by_name[name]

    keylen = cur - starts
    fast = np.flatnonzero(ok)
    for width in np.unique(keylen[fast]):
        sel = fast[keylen[fast] == width]
        keys = _sliding(buf, int(width))[starts[sel]]
        h = _hash_rows(keys)
        local, uniq = pd.factorize(h)
        first = np.zeros(len(uniq), dtype=np.int64)
        first[local[::-1]] = np.arange(len(sel))[::-1]
        if not (keys == keys[first[local]]).all():  # a hash collision: sort exactly instead
            _, first, local = np.unique(keys, axis=0, return_index=True, return_inverse=True)
            local = local.ravel()
        mapping = np.array([code_of(name_of(Item.FromString(_bytes(buf, starts, lens, sel[i]))))
                            for i in first], dtype=np.int64)
        codes[sel] = mapping[local]
    values = np.full(n, np.nan)
    numeric = np.zeros(n, dtype=bool)
    texts: dict[int, bytes] = {}
    vstart = cur + 3
    for lo in range(0, len(fast) if with_values else 0, _CHUNK):
        sel = fast[lo:lo + _CHUNK]
        width = int(vlen[sel].max())
        rows = _sliding(buf, width)[vstart[sel]]  # a copy: fancy indexing
        rows[np.arange(width) >= vlen[sel][:, None]] = 0
        text = rows.view(f"S{width}").ravel()
        try:
            values[sel] = text.astype(np.float64)
            numeric[sel] = True
        except ValueError:  # some value is no number: convert one by one
            got, isnum = _floats(list(text))
            values[sel], numeric[sel] = got, isnum
            for i in sel[~isnum]:
                texts[int(i)] = bytes(text[np.searchsorted(sel, i)])
    # Values that are valid numbers to numpy but not JSON ("nan" is written "NaN" by wandb) stay.
    for i in np.flatnonzero(~ok):
        item = Item.FromString(_bytes(buf, starts, lens, i))
        if not item.key and not item.nested_key:
            continue
        codes[i] = code_of(name_of(item))
        if not with_values:
            continue
        got, isnum = _floats([item.value_json])
        values[i], numeric[i] = got[0], isnum[0]
        if not isnum[0]:
            texts[int(i)] = item.value_json
    return Items(codes, names, values, numeric, texts)


def _bytes(buf: np.ndarray, starts: np.ndarray, lens: np.ndarray, i) -> bytes:
    return buf[starts[i]:starts[i] + lens[i]].tobytes()


def _hash_rows(keys: np.ndarray) -> np.ndarray:
    """One uint64 per row of a (n, width) uint8 array: the row in 8-byte words, mixed (FNV-style).
    Collisions are possible and checked by the caller."""
    n, width = keys.shape
    words = -(-width // 8)
    padded = np.zeros((n, words * 8), dtype=np.uint8)
    padded[:, :width] = keys
    cols = padded.view(np.uint64)
    h = np.full(n, np.uint64(14695981039346656037))
    with np.errstate(over="ignore"):
        for j in range(words):
            h ^= cols[:, j]
            h *= np.uint64(1099511628211)
            h ^= h >> np.uint64(29)
    return h


def _floats(texts: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    out = np.full(len(texts), np.nan)
    isnum = np.zeros(len(texts), dtype=bool)
    for i, t in enumerate(texts):
        v = _json_number(t)
        if v is not None:
            out[i], isnum[i] = v, True
    return out, isnum


def _json_number(text: bytes) -> float | None:
    try:
        v = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        return float(v)
    except OverflowError:  # an integer beyond float range
        return math.copysign(math.inf, v)
