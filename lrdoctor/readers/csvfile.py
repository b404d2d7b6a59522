"""Loading CSV logs with pandas (one vectorised parse) and sniffing their header.

Shared by the Lightning, Keras and generic CSV readers. Cells are parsed so that an empty cell
stays distinguishable from a logged ``nan``: only ``""`` is NA to pandas, a literal ``nan`` keeps
its column as text and goes through :func:`tabular.text_column`.
"""

from __future__ import annotations

import codecs
import io
import re
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import LogFormatError
from ..model import Annotation
from .csv_dialect import COMMA, Dialect, dialect_of
from .tabular import (
    Column,
    numeric_column,
    one_line,
    pick,
    short_repr,
    text_column,
    to_steps,
    wall_time_column,
    wide_to_tidy,
)
from .textfile import check_regular, cut_line, encoding_of, first_bad_byte, read_bytes, where

#: Step-axis column names, most specific first (case-insensitive).
STEP_NAMES = ("step", "global_step", "globalstep", "steps", "iteration", "iter", "iterations", "it",
              "current_steps", "current_step", "_step", "trainer/global_step", "training/iteration",
              "epoch", "epochs")
EPOCH_NAMES = ("epoch", "epochs")
#: Parse with pyarrow when it is installed (faster, and it tells an empty cell from a logged
#: ``nan`` while parsing); pandas otherwise. Tests switch it off to cover the pandas path.
USE_ARROW = True


def load_csv(path: Path, source: Path | bytes | None = None, dialect: Dialect = COMMA) -> pd.DataFrame:
    """Parse a CSV log: headers stripped of padding, values of leading spaces; empty cells NA.

    Bytes the file's encoding cannot decode become U+FFFD: the cell holding one is then no
    number (reported by :func:`tabular.text_column`), the rest of the file is read. ``source``
    is what to parse when not the whole file (its complete lines, see :func:`csv_source`).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pd.errors.DtypeWarning)  # mixed columns: see text_column
        return _read_csv(path, path if source is None else source, dialect)


def _read_csv(path: Path, source: Path | bytes, dialect: Dialect) -> pd.DataFrame:
    check_regular(path)
    with path.open("rb") as fh:
        encoding = encoding_of(fh.read(4))
    try:
        df = pd.read_csv(
            _readable(source), keep_default_na=False, na_values=[""], skipinitialspace=True,
            encoding=encoding, encoding_errors="replace", sep=dialect.delimiter, decimal=dialect.decimal,
        )
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        m = re.search(r"\bline (\d+)", str(exc))
        raise LogFormatError(f"cannot parse CSV: {one_line(exc)}", path=str(path),
                             location=f"line {m.group(1)}" if m else None) from exc
    except pd.errors.EmptyDataError as exc:
        raise LogFormatError("empty file", path=str(path)) from exc
    df.columns = [str(c).strip() for c in df.columns]
    return df


def drop_repeated_headers(df: pd.DataFrame, locs: np.ndarray, path: str
                          ) -> tuple[pd.DataFrame, np.ndarray, list[Annotation]]:
    """Rows that repeat the header (logs concatenated by hand) are not data; say where they were."""
    text_cols = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    if len(text_cols) < len(df.columns) or not len(df):
        return df, locs, []
    mask = np.ones(len(df), dtype=bool)
    for c in df.columns:
        mask &= (df[c].astype("str").str.strip() == c).to_numpy(dtype=bool)
    if not mask.any():
        return df, locs, []
    notes = [Annotation("repeated_header", "the header row repeats here (appended log); row skipped",
                        path=path, location=f"line {int(locs[i])}") for i in np.flatnonzero(mask)]
    keep = ~mask
    # The columns stay text; frame_columns parses them as numbers cell by cell (vectorised).
    df = df[keep].reset_index(drop=True)
    return df, locs[keep], notes


def frame_columns(df: pd.DataFrame, path: str, locs: np.ndarray, *, strict: bool,
                  missing: Sequence[str] = (), decimal: str = "."
                  ) -> tuple[dict[str, Column], list[Annotation]]:
    """Every column of a parsed CSV as numbers (text columns reported and left out)."""
    out: dict[str, Column] = {}
    notes: list[Annotation] = []
    for i, name in enumerate(df.columns):
        if unnamed(name):
            notes.append(_unnamed_note(i, path))
            continue
        raw = df[name]
        if pd.api.types.is_bool_dtype(raw):
            out[name] = Column(name, raw.to_numpy(dtype=np.float64), np.ones(len(raw), dtype=bool))
        elif pd.api.types.is_numeric_dtype(raw):
            out[name] = numeric_column(raw, name)
        else:
            col, more = text_column(_points(raw, decimal), name, path, locs, strict=strict, missing=missing)
            notes += more
            if col is not None:
                out[name] = col
    return out, notes


def csv_columns(path: Path, *, strict: bool, missing: Sequence[str] = (), text: Sequence[str] = ()
                ) -> tuple[dict[str, Column], int, np.ndarray, list[Annotation]]:
    """Every column of a CSV log as numbers, plus the row count and each row's line number.

    Columns named in ``text`` come back as a Column whose ``values`` is an object array of the
    stripped strings (for a long table's tag column).
    """
    source, notes = csv_source(path, strict=strict)
    dialect = dialect_of(path, source)
    got = _arrow_columns(path, source, dialect, strict=strict, missing=missing, text=text) if USE_ARROW else None
    if got is None:
        got = _pandas_columns(path, source, dialect, strict=strict, missing=missing, text=text)
    columns, n, locs, more = got
    notes += more
    # (a prefix match: also pandas' "Unnamed: 0_level_0" of a multi-row header)
    headless = [name for name in columns if not name or _UNNAMED.match(name)]
    for name in headless:
        # An empty header cell (a pandas index written with to_csv, a damaged header): whatever
        # it holds is no metric, and a tag named "Unnamed: 0" would be made up.
        del columns[name]
        notes.append(Annotation("unnamed_column", "a column with an empty header is not read as a metric",
                                path=str(path), location="line 1"))
    return columns, n, locs, notes


def csv_source(path: Path, *, strict: bool) -> tuple[Path | bytes, list[Annotation]]:
    """What to parse: the file, or when its last line has no line end (a log still being written,
    or cut), every line before that one, and an annotation naming it (under ``strict`` an error).

    The cut text of a row (``50,15`` of ``50,15.0812``) would parse as a plausible point. A header
    that is the only line is kept: no row comes from it either way.
    """
    cut = cut_line(path)
    if cut is None or cut.line == 1:
        return path, []
    what = f"the last line has no line end (a file still being written, or cut): {short_repr(cut.text)}"
    if strict:
        raise LogFormatError(what, path=str(path), location=f"line {cut.line}")
    return cut.complete, [Annotation("truncated", f"{what}; not read", path=str(path),
                                                 location=f"line {cut.line}")]


def _readable(source: Path | bytes) -> Path | io.BytesIO:
    """A parser's input: the file, or a fresh buffer of its complete lines (one per parse: a
    failed pyarrow attempt leaves a shared buffer at its end)."""
    return source if isinstance(source, Path) else io.BytesIO(source)


def _pandas_columns(path: Path, source: Path | bytes, dialect: Dialect, *, strict: bool,
                    missing: Sequence[str], text: Sequence[str]):
    spath = str(path)
    df = load_csv(path, source, dialect)
    locs = np.arange(len(df), dtype=np.int64) + 2  # line numbers: the header is line 1
    df, locs, notes = drop_repeated_headers(df, locs, spath)
    notes = _undecodable(path, source, strict) + notes
    texts = {name: _text_values(df[name]) for name in text if name in df.columns}
    columns, more = frame_columns(df.drop(columns=list(texts)), spath, locs, strict=strict, missing=missing,
                                  decimal=dialect.decimal)
    return {**texts, **columns}, len(df), locs, notes + more


def _undecodable(path: Path, source: Path | bytes, strict: bool) -> list[Annotation]:
    """Where the first byte that is not UTF-8 was (load_csv read it as U+FFFD): one note, or
    under ``strict`` an error."""
    data = read_bytes(path) if isinstance(source, Path) else source
    if encoding_of(data[:4]) != "utf-8-sig":
        return []
    bom = 3 if data.startswith(codecs.BOM_UTF8) else 0
    at = first_bad_byte(data[bom:])
    if at is None:
        return []
    at += bom
    what = f"byte {data[at:at + 1]!r} is not UTF-8 text"
    if strict:
        raise LogFormatError(what, path=str(path), location=where(data, at))
    return [Annotation("invalid_utf8", f"{what}: read as U+FFFD (a cell holding one is no number)",
                       path=str(path), location=where(data, at))]


def _points(raw: pd.Series, decimal: str) -> pd.Series:
    """A text column of a decimal-comma file with its commas as points, for the number parser
    (a column that also holds text or ``nan`` is parsed cell by cell, not by the CSV parser)."""
    if decimal == ".":
        return raw
    text = raw.astype("str")
    # only whole numbers with one decimal comma: other text keeps its own words in the annotation
    number = text.str.fullmatch(_DECIMAL_COMMA).fillna(False).to_numpy(dtype=bool)
    return raw.where(~number, text.str.replace(",", ".", regex=False))


_DECIMAL_COMMA = r"\s*[-+]?\d*,\d+(?:[eE][-+]?\d+)?\s*"


def _text_values(raw: pd.Series) -> Column:
    s = raw.astype("str").str.strip()
    present = (s.notna() & (s != "")).to_numpy(dtype=bool)
    return Column(str(raw.name), s.to_numpy(dtype=object), present)


def _arrow_columns(path: Path, source: Path | bytes, dialect: Dialect, *, strict: bool,
                   missing: Sequence[str], text: Sequence[str]):
    """The fast path: pyarrow's CSV parser keeps an empty cell (null) apart from a logged ``nan``
    (NaN) while parsing floats natively. None when pyarrow is absent or the file needs pandas'
    leniency (ragged rows, every column text, e.g. repeated header rows)."""
    try:
        import pyarrow as pa
    except ImportError:
        return None
    check_regular(path)
    with path.open("rb") as fh:
        if encoding_of(fh.read(4)) != "utf-8-sig":
            return None  # pandas decodes UTF-16
    try:
        return _arrow_table_columns(path, source, dialect, strict=strict, missing=missing, text=text)
    except (pa.ArrowInvalid, UnicodeDecodeError):
        return None  # bytes that are not UTF-8 in a name or text column: pandas reads them as U+FFFD


def _arrow_table_columns(path: Path, source: Path | bytes, dialect: Dialect, *, strict: bool,
                         missing: Sequence[str], text: Sequence[str]):
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    try:
        table = pcsv.read_csv(
            _readable(source), parse_options=pcsv.ParseOptions(delimiter=dialect.delimiter),
            convert_options=pcsv.ConvertOptions(null_values=["", *missing], strings_can_be_null=True,
                                                quoted_strings_can_be_null=True, decimal_point=dialect.decimal))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError):
        return None
    names = [str(c).strip() for c in table.column_names]
    numeric = [pa.types.is_integer(c.type) or pa.types.is_floating(c.type) or pa.types.is_boolean(c.type)
               or pa.types.is_null(c.type) for c in table.columns]
    if not any(numeric) or len(set(names)) < len(names):
        return None
    spath = str(path)
    n = table.num_rows
    locs = np.arange(n, dtype=np.int64) + 2
    columns: dict[str, Column] = {}
    notes: list[Annotation] = []
    for i, (name, col, is_num) in enumerate(zip(names, table.columns, numeric, strict=True)):
        if unnamed(name):
            notes.append(_unnamed_note(i, spath))
            continue
        present = ~pc.is_null(col).to_numpy(zero_copy_only=False)
        if name in text:
            columns[name] = _text_values(pd.Series(col.to_pandas(), name=name))
        elif is_num:
            values = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
            columns[name] = Column(name, np.where(present, values, np.nan) if pa.types.is_null(col.type)
                                   else values, present)
        else:
            raw = _points(pd.Series(pc.cast(col, pa.string()).to_pandas(), name=name), dialect.decimal)
            got, more = text_column(raw, name, spath, locs, strict=strict, missing=missing)
            notes += more
            if got is not None:
                columns[name] = got
    return columns, n, locs, notes


#: pandas' name for a column whose header cell is empty.
_UNNAMED = re.compile(r"Unnamed: \d+")


def unnamed(name: str) -> bool:
    """A column whose header cell is empty (pandas calls it ``Unnamed: N``): no metric name to
    give its values (a damaged header, or a DataFrame index written by ``to_csv``)."""
    return not name or bool(_UNNAMED.fullmatch(name))


def _unnamed_note(i: int, path: str) -> Annotation:
    return Annotation("unnamed_column", f"column {i + 1} has no name in the header; not read", path=path,
                      location=f"column {i + 1}")


def read_wide_csv(path: Path, *, strict: bool, step_names: Sequence[str] = STEP_NAMES,
                  missing: Sequence[str] = (), rows: slice | None = None
                  ) -> tuple[pd.DataFrame, list[Annotation], str]:
    """A wide CSV log (a step column + one column per metric) as the tidy table.

    Returns the table, the annotations, and the step axis (``"step"``, ``"epoch"``, or ``"row"``
    when the file has no step column and rows are numbered instead). ``rows`` reads only those
    data rows (one attempt of a file several runs appended to).
    """
    spath = str(path)
    columns, n, locs, notes = csv_columns(path, strict=strict, missing=missing)
    if rows is not None:
        columns = {k: Column(c.name, c.values[rows], c.present[rows]) for k, c in columns.items()}
        lines = {f"line {int(x)}" for x in locs[rows]}
        # the note of a cut last line goes with the last attempt
        notes = [a for a in notes if not (a.location or "").startswith("line ")
                 or a.location.split(",")[0] in lines or (a.kind == "truncated" and rows.stop >= n)]
        locs = locs[rows]
        n = len(locs)
    step_name = pick(list(columns), step_names)
    wt_name, wall_time = wall_time_column(columns)
    axis = "step"
    if step_name is not None and step_name.strip().lower() in EPOCH_NAMES:
        axis = "epoch"
        col = columns[step_name]
        # Several rows per epoch and no global step (a batch counter restarting every epoch):
        # the row order is the only step axis there is.
        if len(col.values) > 1 and np.mean(np.diff(col.values[col.present]) == 0) > 0.5:
            step_name, axis = None, "row"
    if step_name is None:
        if axis != "row":
            axis = "row"
        notes.append(Annotation("no_step_column", "no step/epoch column; rows are numbered from 0 "
                                "and used as steps", path=spath))
        steps = np.arange(n, dtype=np.int64)
    else:
        steps, more = to_steps(columns[step_name], spath, locs)
        notes += more
        # A text cell in the step column loses its step, not its row's points (see missing_step).
        where = f"column {step_name!r}"
        notes = [replace(a, message=a.message.rsplit(": not a number", 1)[0] + ": not a step; the previous row's step is used")
                 if a.kind == "non_numeric" and (a.location or "").endswith(where) else a for a in notes]
    metrics = [c for n, c in columns.items() if n not in (step_name, wt_name)]
    table, more = wide_to_tidy(steps, locs, metrics, spath, wall_time=wall_time,
                               axis="epoch" if axis == "epoch" else "step")
    return table, notes + more, axis
