"""JSON-shaped logs (HF ``log_history``, JSON Lines, Keras ``history.json``) to numeric columns.

JSON has already parsed the numbers (Python's json reads the bare ``NaN``/``Infinity`` literals
too), so this only sorts each value into: number (a point), ``null`` (not logged at this record),
or text (a point with value NaN plus an annotation; a key that only ever holds text, such as
``remaining_time: "1:02:03"``, is reported once and left out).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import LogFormatError
from ..model import Annotation
from .tabular import MAX_PER_KIND, Column


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        try:
            return float(v)
        except OverflowError:  # an int beyond float range
            return math.inf if v > 0 else -math.inf
    if isinstance(v, str):
        try:
            return float(v.strip())
        except ValueError:
            return None
    return None


def records_to_columns(
    records: Sequence[dict[str, Any]], path: str, locs: Sequence[int], *, strict: bool,
    loc_label: str = "line",
) -> tuple[dict[str, Column], list[Annotation]]:
    """One :class:`Column` per key seen in any record, keys in first-seen order."""
    n = len(records)
    values: dict[str, np.ndarray] = {}
    present: dict[str, np.ndarray] = {}
    texts: dict[str, list[tuple[int, Any]]] = {}
    for i, rec in enumerate(records):
        for key, v in rec.items():
            if key not in values:
                values[key] = np.full(n, np.nan)
                present[key] = np.zeros(n, dtype=bool)
            if v is None:
                continue
            x = _number(v)
            present[key][i] = True
            if x is None:
                texts.setdefault(key, []).append((i, v))
            else:
                values[key][i] = x
    cols: dict[str, Column] = {}
    notes: list[Annotation] = []
    for key in values:
        bad = texts.get(key, [])
        if bad and len(bad) == int(present[key].sum()):
            notes.append(Annotation("non_numeric_column",
                                    f"key {key!r} holds text (e.g. {_short(bad[0][1])}), not read as a metric",
                                    path=path, location=f"key {key!r}"))
            continue
        for i, v in bad[:MAX_PER_KIND]:
            where = f"{loc_label} {locs[i]}, key {key!r}"
            if strict:
                raise LogFormatError(f"non-numeric value {_short(v)}", path=path, location=where)
            notes.append(Annotation("non_numeric", f"non-numeric value {_short(v)} in key {key!r} read as NaN",
                                    path=path, location=where))
        if len(bad) > MAX_PER_KIND:
            notes.append(Annotation("non_numeric", f"{len(bad) - MAX_PER_KIND} more non-numeric values in key "
                                    f"{key!r} read as NaN", path=path, location=f"key {key!r}"))
        cols[key] = Column(key, values[key], present[key])
    return cols, notes


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."

