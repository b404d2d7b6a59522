"""Shared cleaning for table-shaped logs (CSV, JSON records): text cells to numbers, step
columns, wide rows to the tidy table, and the annotations that say what was odd.

Everything here is vectorised over rows; loops run over columns only. Nothing is dropped silently:
an empty cell (or JSON null / Keras "NA") means "not logged at this row"; a NaN/inf literal
(``nan``, ``Infinity``, ``-inf``...) is a NaN/inf point; any other cell that is not a number
(``N/A``, ``null``, ``--``) is no point *and* an annotation naming the file, line, column and text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import LogFormatError
from ..model import Annotation, make_scalars

#: Text that means "NaN was logged" (kept as a NaN point, not reported as a bad cell).
NAN_LITERALS = ("nan", "+nan", "-nan")
#: Column names (lower-cased) that hold wall-clock time rather than a metric.
WALL_TIME_NAMES = ("wall_time", "walltime", "timestamp", "time", "_timestamp", "wall time")
#: At most this many annotations of one kind per file; the rest are summarised in one more.
MAX_PER_KIND = 20


@dataclass(frozen=True)
class Column:
    """One metric column: a value per row, and whether the row logged it at all."""

    name: str
    values: np.ndarray  # float64
    present: np.ndarray  # bool


def cap(annotations: list[Annotation], limit: int = MAX_PER_KIND) -> list[Annotation]:
    """Keep the first ``limit`` annotations of each kind and summarise the rest."""
    out: list[Annotation] = []
    counts: dict[str, int] = {}
    for a in annotations:
        counts[a.kind] = counts.get(a.kind, 0) + 1
        if counts[a.kind] <= limit:
            out.append(a)
    for kind, n in counts.items():
        if n > limit:
            path = next(a.path for a in annotations if a.kind == kind)
            out.append(Annotation(kind, f"{n - limit} more {kind} annotations not listed", path=path))
    return out


def text_column(
    raw: pd.Series, name: str, path: str, locs: np.ndarray, *, strict: bool, loc_label: str = "line",
    missing: Sequence[str] = (),
) -> tuple[Column | None, list[Annotation]]:
    """Convert a text column to numbers. Returns None (plus an annotation) when no cell is numeric."""
    s = (raw if pd.api.types.is_string_dtype(raw) else raw.astype("str")).reset_index(drop=True)
    s = s.str.strip()
    present = (s.notna() & (s != "")).to_numpy(dtype=bool)
    if missing:
        present = present & ~s.isin(list(missing)).to_numpy(dtype=bool)
    num = pd.to_numeric(s.where(present), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    nan_lit = present & s.str.lower().isin(NAN_LITERALS).to_numpy(dtype=bool)
    bad = present & np.isnan(num) & ~nan_lit
    if present.any() and bad.sum() == present.sum() and not nan_lit.any():
        example = s[present].iloc[0]
        return None, [Annotation(
            "non_numeric_column",
            f"column {name!r} holds text (e.g. {example!r}), not read as a metric",
            path=path, location=f"column {name!r}",
        )]
    notes = bad_cell_annotations([(int(locs[i]), s.iloc[i]) for i in np.flatnonzero(bad)], name, path,
                                 strict=strict, loc_label=loc_label, what="column")
    # A cell that is no number and no NaN/inf literal is not a point (a NaN point there would
    # read as a divergence); the annotation says where it was.
    present = present & ~bad
    return Column(name, num, present), notes


def bad_cell_annotations(bad: Sequence[tuple[int, object]], name: str, path: str, *, strict: bool,
                         loc_label: str = "line", what: str = "column") -> list[Annotation]:
    """Annotations for cells of ``name`` that are not numbers: (line/row number, text) pairs.
    Under ``strict`` the first one is a LogFormatError instead."""
    notes: list[Annotation] = []
    for loc, text in bad[:MAX_PER_KIND]:
        where = f"{loc_label} {loc}, {what} {name!r}"
        if strict:
            raise LogFormatError(f"non-numeric value {short_repr(text)}", path=path, location=where)
        notes.append(Annotation(
            "non_numeric", f"non-numeric value {short_repr(text)} in {what} {name!r}: not a number, "
            "no point read", path=path, location=where,
        ))
    if len(bad) > MAX_PER_KIND:
        rest = ", ".join(f"{loc_label} {loc}" for loc, _ in bad[MAX_PER_KIND:MAX_PER_KIND + 10])
        more = ", ..." if len(bad) > MAX_PER_KIND + 10 else ""
        notes.append(Annotation("non_numeric", f"{len(bad) - MAX_PER_KIND} more non-numeric values in {what} "
                                f"{name!r} ({rest}{more}): no points read", path=path,
                                location=f"{what} {name!r}"))
    return notes


def one_line(exc: object) -> str:
    """An exception's text on one line (pandas' tokenizer messages span several)."""
    return " ".join(str(exc).split())


def short_repr(v: object) -> str:
    text = repr(v) if isinstance(v, str) else format_number(v)
    return text if len(text) <= 60 else text[:57] + "..."


def format_number(v: object) -> str:
    """A number as people write it (``6.5``, ``3``), not numpy's ``np.float64(6.5)``."""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    return repr(v)


def numeric_column(raw: pd.Series, name: str) -> Column:
    """A column pandas already parsed as numbers (NaN there can only mean an empty cell)."""
    values = raw.to_numpy(dtype=np.float64, na_value=np.nan)
    return Column(name, values, ~np.isnan(values))


def to_steps(
    col: Column, path: str, locs: np.ndarray, loc_label: str = "line", *, default_first: int = 0,
) -> tuple[np.ndarray, list[Annotation]]:
    """Integer steps from a step column: gaps take the previous row's step, fractions are floored,
    each reported."""
    notes: list[Annotation] = []
    vals = np.where(col.present, col.values, np.nan)
    finite = np.isfinite(vals)
    if not finite.all():
        missing = np.flatnonzero(~finite)
        for i in missing[:MAX_PER_KIND]:
            notes.append(Annotation(
                "missing_step", f"no {col.name!r} value; the previous row's step is used",
                path=path, location=f"{loc_label} {int(locs[i])}",
            ))
        if len(missing) > MAX_PER_KIND:
            notes.append(Annotation("missing_step", f"{len(missing) - MAX_PER_KIND} more rows without a step",
                                    path=path))
        idx = np.where(finite, np.arange(len(vals)), -1)
        np.maximum.accumulate(idx, out=idx)
        vals = np.where(idx >= 0, vals[np.maximum(idx, 0)], default_first)
    frac = vals != np.floor(vals)
    if frac.any():
        i = int(np.flatnonzero(frac)[0])
        notes.append(Annotation(
            "fractional_step", f"{int(frac.sum())} non-integer values in {col.name!r} (first {format_number(vals[i])}) "
            "rounded down to whole steps", path=path, location=f"{loc_label} {int(locs[i])}",
        ))
    return np.floor(vals).astype(np.int64), notes


def wall_time_column(columns: dict[str, Column]) -> tuple[str | None, np.ndarray | None]:
    """The column holding Unix time (seconds or milliseconds), if any."""
    for name, col in columns.items():
        if name.strip().lower() not in WALL_TIME_NAMES or not col.present.any():
            continue
        v = col.values[col.present]
        med = float(np.nanmedian(v)) if np.isfinite(v).any() else 0.0
        if med > 1e11:  # milliseconds
            return name, np.where(col.present, col.values / 1000.0, np.nan)
        if med > 1e8:
            return name, np.where(col.present, col.values, np.nan)
    return None, None


def backwards_annotations(steps: np.ndarray, locs: np.ndarray, path: str, axis: str = "step",
                          loc_label: str = "line", reasons: Sequence[str | None] | None = None) -> list[Annotation]:
    """One ``restart`` annotation per row where the step axis goes backwards (data kept);
    ``reasons`` may say why at a row (None there: a resumed or appended run)."""
    if len(steps) < 2:
        return []
    back = np.flatnonzero(np.diff(steps) < 0) + 1
    out = [Annotation(
        "restart", f"{axis} goes back from {int(steps[i - 1])} to {int(steps[i])} "
        f"({(reasons[i] if reasons is not None else None) or 'a resumed or appended run'}); all rows kept",
        path=path, location=f"{loc_label} {int(locs[i])}",
    ) for i in back[:MAX_PER_KIND]]
    if len(back) > MAX_PER_KIND:
        out.append(Annotation("restart", f"{axis} goes back {len(back) - MAX_PER_KIND} more times", path=path))
    return out


def duplicate_annotations(codes: np.ndarray, steps: np.ndarray, values: np.ndarray, locs: np.ndarray,
                          names: Sequence[str], path: str, loc_label: str = "line") -> list[Annotation]:
    """One annotation per tag that logs some step twice with different values (all points kept).

    A step repeated with the identical value (``epoch`` attached to every HF/Lightning record) is
    not worth a note.
    """
    if len(steps) < 2:
        return []
    order = np.lexsort((steps, codes))
    c, s, v = codes[order], steps[order], values[order]
    same = (c[1:] == c[:-1]) & (s[1:] == s[:-1])
    if not same.any():
        return []
    differ = same & _neighbours_differ(v)
    out = []
    for code in np.unique(c[1:][differ]):
        hits = np.flatnonzero(differ & (c[1:] == code))
        i = hits[0]
        a, b = sorted((int(locs[order[i]]), int(locs[order[i + 1]])))
        out.append(_duplicate_note(names[code], len(hits), int(s[i]), a, b, path, loc_label))
    return out


def _neighbours_differ(v: np.ndarray) -> np.ndarray:
    """v[i+1] != v[i], with NaN equal to NaN (a repeated NaN is a repeat, not a conflict)."""
    return ~((v[1:] == v[:-1]) | (np.isnan(v[1:]) & np.isnan(v[:-1])))


def _duplicate_note(tag: str, count: int, step: int, a: int, b: int, path: str, loc_label: str) -> Annotation:
    return Annotation(
        "duplicate_steps",
        f"tag {tag!r}: {count} repeated steps with different values (first: step {step}, "
        f"{loc_label}s {a} and {b}); all points kept",
        path=path, location=f"{loc_label} {b}",
    )


def tidy_frame(codes: np.ndarray, names: Sequence[str], step: np.ndarray, wall_time: np.ndarray | None,
               value: np.ndarray) -> pd.DataFrame:
    """The canonical scalar table with ``tag`` as a categorical of the tag names.

    Materialising one Python string per point costs more than parsing the CSV; a categorical
    holds the same str values (``==``, ``groupby``, ``pd.unique`` behave as with str) at 1-2
    bytes per point. Unused names are dropped so ``Run.tags`` lists only tags with points.
    """
    k = len(names)
    used = np.bincount(codes, minlength=k) > 0
    if not used.all():
        remap = np.cumsum(used) - 1
        codes = remap[codes]
        names = [n for n, u in zip(names, used, strict=True) if u]
    tag = pd.Categorical.from_codes(codes.astype(np.int32, copy=False), categories=list(names))
    n = len(step)
    return pd.DataFrame({
        "tag": tag,
        "step": np.asarray(step, dtype=np.int64),
        "wall_time": np.full(n, np.nan) if wall_time is None else np.asarray(wall_time, dtype=np.float64),
        "value": np.asarray(value, dtype=np.float64),
    }, copy=False)  # the arrays are fresh; consolidating them into one block would copy


def wide_duplicates(steps: np.ndarray, locs: np.ndarray, columns: Sequence[Column], path: str,
                    loc_label: str = "line") -> list[Annotation]:
    """:func:`duplicate_annotations` for a wide table whose steps never go back: a repeated step
    of one column is then two present cells in adjacent rows of equal step (no sort needed)."""
    out = []
    for col in columns:
        idx = np.flatnonzero(col.present)
        s, v = steps[idx], col.values[idx]
        differ = (s[1:] == s[:-1]) & _neighbours_differ(v)
        if differ.any():
            i = int(np.flatnonzero(differ)[0])
            a, b = int(locs[idx[i]]), int(locs[idx[i + 1]])
            out.append(_duplicate_note(col.name, int(differ.sum()), int(s[i]), a, b, path, loc_label))
    return out


def wide_to_tidy(
    steps: np.ndarray, locs: np.ndarray, columns: Sequence[Column], path: str, *,
    wall_time: np.ndarray | None = None, axis: str = "step", loc_label: str = "line",
) -> tuple[pd.DataFrame, list[Annotation]]:
    """Rows x metric columns -> tidy table in logged order (row by row, columns left to right)."""
    n, k = len(steps), len(columns)
    if k == 0 or n == 0:
        return make_scalars([], [], None, []), []
    pres = np.column_stack([c.present for c in columns])
    idx = np.flatnonzero(pres.ravel())
    del pres
    row, code = np.divmod(idx, k)
    value = np.column_stack([c.values for c in columns]).ravel()[idx]
    names = [c.name for c in columns]
    table = tidy_frame(code, names, steps[row], None if wall_time is None else wall_time[row], value)
    notes = backwards_annotations(steps, locs, path, axis, loc_label)
    if notes:
        notes += duplicate_annotations(code, steps[row], value, locs[row], names, path, loc_label)
    elif not np.all(steps[1:] > steps[:-1]):  # strictly increasing rows cannot repeat a step
        notes += wide_duplicates(steps, locs, columns, path, loc_label)
    return table, notes


def pick(names: Sequence[str], candidates: Sequence[str]) -> str | None:
    """The first of ``candidates`` (case-insensitive, stripped) that is one of ``names``."""
    lookup = {n.strip().lower(): n for n in names}
    for c in candidates:
        if c in lookup:
            return lookup[c]
    return None
