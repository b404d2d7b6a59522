"""JSON-shaped logs (HF ``log_history``, JSON Lines, Keras ``history.json``) to numeric columns.

JSON has already parsed the numbers (Python's json reads the bare ``NaN``/``Infinity`` literals
too), so this only sorts each value into: number (a point; ``NaN``/``Infinity`` included), ``null``
(not logged at this record), or text (no point, an annotation naming the line and key; a key
that only ever holds text, such as ``remaining_time: "1:02:03"``, is reported once and left out).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..model import Annotation
from .tabular import Column, bad_cell_annotations, short_repr
from .textfile import clean_name


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
                key = clean_name(key)
            if key not in values:
                values[key] = np.full(n, np.nan)
                present[key] = np.zeros(n, dtype=bool)
            if v is None:
                continue
            x = _number(v)
            if x is None:  # text is no point (a NaN there would read as a divergence)
                texts.setdefault(key, []).append((i, v))
            else:
                present[key][i] = True
                values[key][i] = x
    cols: dict[str, Column] = {}
    notes: list[Annotation] = []
    for key in values:
        bad = texts.get(key, [])
        if bad and not present[key].any():
            notes.append(Annotation("non_numeric_column",
                                    f"key {key!r} holds text (e.g. {short_repr(bad[0][1])}), not read as a metric",
                                    path=path, location=f"key {key!r}"))
            continue
        notes += bad_cell_annotations([(int(locs[i]), v) for i, v in bad], key, path, strict=strict,
                                      loc_label=loc_label, what="key")
        cols[key] = Column(key, values[key], present[key])
    return cols, notes
