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

import csv
import io
import json
import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ._pbwalk import loads
from ._wandb_proto import Item

_VALUE_TAG = (0x82, 0x01)  # field 16, wire type 2
_MAX_KEY_FIELDS = 32
_MAX_FAST_VALUE = 40  # longer value texts (media, tables) take the slow path
_CHUNK = 1 << 16
_SPLIT_CHUNK = 1 << 16


@dataclass(frozen=True)
class Items:
    """Items split into key codes, and where each value text lies (read by :func:`numbers`)."""

    codes: np.ndarray  # int64 index into names, per item (-1: an item without a key)
    names: list[str]  # key name per code (nested keys joined with '/')
    vstart: np.ndarray  # int64 start of the value text in the buffer, per item on the fast path
    vlen: np.ndarray  # int64 its length
    fast: np.ndarray  # bool per item: laid out as expected (else decoded by protobuf)
    slow_values: dict[int, bytes]  # value_json of the items decoded by protobuf, by item index


def _sliding(buf: np.ndarray, width: int) -> np.ndarray:
    return np.lib.stride_tricks.as_strided(buf, shape=(max(len(buf) - width + 1, 0), width),
                                           strides=(1, 1), writeable=False)


def name_of(item: Item) -> str:
    parts = item.nested_key
    raw = b"/".join(parts) if parts else item.key
    return raw.decode("utf-8", errors="replace")


#: masks keeping the first w bytes of a little-endian 8-byte word
_LOW = np.array([(1 << (8 * w)) - 1 for w in range(8)] + [(1 << 64) - 1], dtype=np.uint64)


def split(buf: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> Items:
    """Key codes of the items ``buf[starts[i]:starts[i] + lens[i]]`` (``buf`` padded with zeros,
    see ``_pbwalk.PAD``) and where their values lie; see the module docstring. Items are split
    in chunks: the arrays of each numpy pass then stay in cache."""
    names: list[str] = []
    parts = [_split(buf, starts[lo:lo + _SPLIT_CHUNK], lens[lo:lo + _SPLIT_CHUNK], names, lo)
             for lo in range(0, len(starts), _SPLIT_CHUNK)] or [_split(buf, starts, lens, names, 0)]
    return Items(np.concatenate([p.codes for p in parts]), names,
                 *(np.concatenate([getattr(p, k) for p in parts]) for k in ("vstart", "vlen", "fast")),
                 {k: v for p in parts for k, v in p.slow_values.items()})


def _split(buf: np.ndarray, starts: np.ndarray, lens: np.ndarray, names: list[str], base: int) -> Items:
    n = len(starts)
    starts = starts.astype(np.int64)
    lens = lens.astype(np.int64)
    ends = starts + lens
    if n and len(buf) < ends.max() + _MAX_FAST_VALUE + 8:
        buf = np.concatenate([buf, np.zeros(_MAX_FAST_VALUE + 8, dtype=np.uint8)])
    # the usual layout first, for all items at once: one key field, then value_json, then nothing
    head = loads(buf, "<u2")[starts]  # key tag, key length
    tag, klen = head & 0xFF, head >> 8
    cur = np.minimum(starts + 2 + klen, ends)
    ok = ((tag == 0x0A) | (tag == 0x12)) & (klen < 0x80)
    value = loads(buf, "<u4")[cur]  # value tag (2 bytes), value length
    ok &= (value & 0xFFFF) == (_VALUE_TAG[0] | _VALUE_TAG[1] << 8)
    vlen = ((value >> 16) & 0xFF).astype(np.int64)
    ok &= (cur + 3 + vlen == ends) & (vlen <= _MAX_FAST_VALUE)
    other = np.flatnonzero(~ok & (lens > 0))
    if len(other):  # several key fields (nested keys): walked in lock-step
        cur[other], vlen[other], ok[other] = _walk_keys(buf, starts[other], ends[other])
    codes = np.full(n, -1, dtype=np.int64)
    by_name = {name: i for i, name in enumerate(names)}

    def code_of(name: str) -> int:
        if name not in by_name:
            by_name[name] = len(names)
            names.append(name)
        return by_name[name]

    keylen = cur - starts
    fast = np.flatnonzero(ok)
    # A key is its bytes, held exactly by its length and ceil(length / 8) little-endian words
    # (the last one ending at the key's end); items are grouped by word count, words hashed
    # to one integer per item, and the grouping checked against the words themselves.
    nwords = np.maximum((keylen[fast] + 7) // 8, 1)
    for count in np.unique(nwords).tolist():
        sel = fast[nwords == count]
        st, kl = starts[sel], keylen[sel]
        words = np.empty((len(sel), count + 1), dtype=np.uint64)
        words[:, count] = kl
        u64 = loads(buf, "<u8")
        words[:, 0] = u64[st]
        for j in range(1, count):  # count > 1: the key is over 8 bytes long
            words[:, j] = u64[np.minimum(st + 8 * j, st + kl - 8)]
        if count == 1:
            words[:, 0] &= _LOW[np.minimum(kl, 8)]
        local, uniq = pd.factorize(_hash_rows(words))
        first = np.zeros(len(uniq), dtype=np.int64)
        first[local[::-1]] = np.arange(len(sel))[::-1]
        if not (words == words[first[local]]).all():  # a hash collision: group exactly instead
            _, first, local = np.unique(words, axis=0, return_index=True, return_inverse=True)
            local = local.ravel()
        mapping = np.array([code_of(name_of(Item.FromString(_bytes(buf, starts, lens, sel[i]))))
                            for i in first], dtype=np.int64)
        codes[sel] = mapping[local]
    slow_values: dict[int, bytes] = {}
    for i in np.flatnonzero(~ok).tolist():  # any other layout: protobuf decodes it
        item = Item.FromString(_bytes(buf, starts, lens, i))
        if item.key or item.nested_key:
            codes[i] = code_of(name_of(item))
            slow_values[base + i] = item.value_json
    return Items(codes, names, cur + 3, vlen, ok, slow_values)


def _walk_keys(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray):
    """(value field offset, value length, fast layout) of items with any number of key fields."""
    cur = starts.copy()
    ok = np.ones(len(starts), dtype=bool)
    walking = np.arange(len(starts))
    for _ in range(_MAX_KEY_FIELDS):
        c = cur[walking]
        tag = buf[c]
        key = (tag == 0x0A) | (tag == 0x12)
        walking, c = walking[key], c[key]
        if not len(walking):
            break
        length = buf[c + 1].astype(np.int64)
        nxt = c + 2 + length
        bad = (length >= 0x80) | (nxt > ends[walking])
        ok[walking[bad]] = False
        walking = walking[~bad]
        cur[walking] = nxt[~bad]
    vlen = buf[cur + 2].astype(np.int64)
    ok &= (buf[cur] == _VALUE_TAG[0]) & (buf[cur + 1] == _VALUE_TAG[1]) & (vlen < 0x80)
    ok &= (cur + 3 + vlen == ends) & (cur > starts) & (vlen <= _MAX_FAST_VALUE)
    return cur, vlen, ok


def numbers(buf: np.ndarray, items: Items, sel: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[int, bytes]]:
    """The values of the items ``sel`` (indices) as floats, for every item: (value, True where a
    number, value_json of the non-numbers among ``sel``). Value texts are cut out of the buffer
    side by side, one per line, and those that start like a JSON number (or wandb's ``NaN``,
    ``Infinity``, ``-Infinity``) are converted in one go per chunk (:func:`_parse_lines`); any
    other text, and a chunk the bulk conversion refuses, is converted one by one as JSON."""
    n = len(items.codes)
    values = np.full(n, np.nan)
    numeric = np.zeros(n, dtype=bool)
    texts: dict[int, bytes] = {}
    if len(buf) < (items.vstart.max(initial=0) + _MAX_FAST_VALUE + 2):
        buf = np.concatenate([buf, np.zeros(_MAX_FAST_VALUE + 2, dtype=np.uint8)])
    fast = sel[items.fast[sel]]
    for lo in range(0, len(fast), _CHUNK):
        part = fast[lo:lo + _CHUNK]
        vlen = items.vlen[part]
        width = int(vlen.max()) + 1  # room for a newline after the longest
        rows = _sliding(buf, width)[items.vstart[part]]  # a copy: fancy indexing
        like = _NUMBER_START[rows[:, 0]] & (vlen > 0)
        got = _parse_lines(rows, vlen) if like.all() else _parse_lines(rows[like], vlen[like])
        if got is not None:
            values[part[like]] = got
            numeric[part[like]] = True
            rest = np.flatnonzero(~like)
        else:
            rest = np.arange(len(part))
        if len(rest):  # texts that are no number, or a chunk refused: as JSON, one by one
            raw = [rows[k, :vlen[k]].tobytes() for k in rest.tolist()]
            got, isnum = _floats(raw)
            values[part[rest]], numeric[part[rest]] = got, isnum
            for k in np.flatnonzero(~isnum).tolist():
                texts[int(part[rest[k]])] = raw[k]
    for i in sel[~items.fast[sel]].tolist():
        raw = items.slow_values.get(i)
        if raw is None:
            continue
        got, isnum = _floats([raw])
        values[i], numeric[i] = got[0], isnum[0]
        if not isnum[0]:
            texts[i] = raw
    return values, numeric, texts


_NEWLINE = ord("\n")
#: first bytes of a JSON number, and of the NaN / Infinity / -Infinity that wandb writes
_NUMBER_START = np.zeros(256, dtype=bool)
_NUMBER_START[list(b"-0123456789NI")] = True
#: pandas >= 3.1 converts CSV floats with fast_float, which rounds correctly (as ``float()`` and
#: numpy do); older pandas' default converter can be off by an ulp, so numpy converts there.
_CSV_FLOATS_EXACT = tuple(int(x) for x in re.findall(r"\d+", pd.__version__)[:2]) >= (3, 1)


def _parse_lines(rows: np.ndarray, vlen: np.ndarray) -> np.ndarray | None:
    """One float per row of ``rows`` (its first ``vlen`` bytes are a number's text), or None if
    any is not a number. The texts go to pandas' C CSV parser one per line because numpy's
    bytes-to-float cast parses each through Python's float parser (~0.2 us a value, a fifth of
    reading a W&B file); the parser is held to one column of plain numbers: no quoting, no NA
    words but ``NaN``, and a text it would split or merge shows in the row count or the comma
    check."""
    if not len(rows):
        return np.zeros(0)
    if not _CSV_FLOATS_EXACT:
        rows[np.arange(rows.shape[1]) >= vlen[:, None]] = 0
        try:
            return rows.view(f"S{rows.shape[1]}").ravel().astype(np.float64)
        except ValueError:
            return None
    keep = np.arange(rows.shape[1]) <= vlen[:, None]  # each text and the byte after it
    lines = rows[keep]  # the texts end to end, ...
    lines[np.cumsum(vlen + 1) - 1] = _NEWLINE  # ... each on its own line
    blob = lines.tobytes()
    if b"," in blob:  # a second column: pandas would take the first as the index
        return None
    try:
        got = pd.read_csv(io.BytesIO(blob), header=None, names=["v"], dtype=np.float64, sep=",",
                          lineterminator="\n", quoting=csv.QUOTE_NONE, na_values=["NaN"],
                          keep_default_na=False, engine="c")["v"].to_numpy()
    except (ValueError, pd.errors.ParserError):
        return None
    return got if len(got) == len(rows) else None


def _bytes(buf: np.ndarray, starts: np.ndarray, lens: np.ndarray, i) -> bytes:
    return buf[starts[i]:starts[i] + lens[i]].tobytes()


def _hash_rows(words: np.ndarray) -> np.ndarray:
    """One uint64 per row of a (n, k) uint64 array, mixed (FNV-style). Collisions are possible
    and checked by the caller."""
    h = np.full(len(words), np.uint64(14695981039346656037))
    with np.errstate(over="ignore"):
        for j in range(words.shape[1]):
            h ^= words[:, j]
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
