"""Any other CSV log, wide or long.

Wide: a step-like column (``step``, ``iteration``, ``epoch``, ...; see ``STEP_NAMES``) plus one
column per metric, in any order, possibly sparse (several partial rows per step), possibly padded
to a fixed width (YOLOv5 ``results.csv``). Long: one point per row with ``tag,step,value``
columns (``metric``/``name``/``key`` accepted for ``tag``; optional ``wall_time``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import LogFormatError
from ..model import Run
from .base import ReadOptions, RunSource
from .csv_dialect import header_of
from .csvfile import STEP_NAMES, csv_columns, read_wide_csv
from .tabular import (
    WALL_TIME_NAMES,
    backwards_annotations,
    duplicate_annotations,
    pick,
    tidy_frame,
    to_steps,
)

TAG_NAMES = ("tag", "metric", "metric_name", "name", "key")
VALUE_NAMES = ("value", "val", "scalar")


def long_columns(names: list[str]) -> tuple[str, str, str] | None:
    """(tag, step, value) column names when the header is a long table."""
    tag, value = pick(names, TAG_NAMES), pick(names, VALUE_NAMES)
    step = pick(names, STEP_NAMES)
    if tag and value and step and len(names) <= 6:
        return tag, step, value
    return None


class GenericCSVReader:
    name = "csv"
    description = "Generic CSV: wide (a step/iteration/epoch column + metric columns) or long (tag,step,value)"

    def sniff(self, path: Path, head: bytes) -> bool:
        if head.lstrip().startswith((b"{", b"[")):
            return False  # JSON whose other reader declined it: its commas make no CSV header
        names = header_of(head, path)
        if not names:
            return False
        if long_columns(names) or pick(names, STEP_NAMES):
            return True
        return any("loss" in n.lower() for n in names)

    def read(self, source: RunSource, options: ReadOptions) -> Run:
        path = source.files[0]
        with path.open("rb") as fh:
            df_head = header_of(fh.read(65536), path)
        if df_head is None:
            raise LogFormatError("no CSV header (a first line of column names separated by commas, tabs or semicolons)",
                                 path=str(path))
        cols = long_columns(df_head)
        if cols is not None:
            table, notes = read_long(path, cols, strict=options.strict)
            axis = "epoch" if cols[1].strip().lower() in ("epoch", "epochs") else "step"
        else:
            table, notes, axis = read_wide_csv(path, strict=options.strict)
        return Run(name=source.name, source=str(path), format=self.name, scalars=table,
                   step_axis="epoch" if axis == "epoch" else "step", annotations=tuple(notes))


def read_long(path: Path, cols: tuple[str, str, str], *, strict: bool):
    tag_name, step_name, value_name = cols
    spath = str(path)
    columns, _, locs, notes = csv_columns(path, strict=strict, text=(tag_name,))
    if value_name not in columns or step_name not in columns or tag_name not in columns:
        raise LogFormatError(f"long CSV needs numeric {step_name!r} and {value_name!r} columns", path=spath)
    tag_col = columns.pop(tag_name)
    keep = tag_col.present & columns[value_name].present
    tags = pd.Series(tag_col.values)
    steps, more = to_steps(columns[step_name], spath, locs)
    notes += more
    wt_name = pick([c for c in columns if c not in (step_name, value_name)], WALL_TIME_NAMES)
    wall = None
    if wt_name is not None:
        w = columns[wt_name]
        wall = np.where(w.present, w.values, np.nan)
        if np.nanmedian(wall) > 1e11 if np.isfinite(wall).any() else False:
            wall = wall / 1000.0
        wall = wall[keep]
    codes, names = pd.factorize(tags[keep])
    table = tidy_frame(codes, list(names), steps[keep], wall, columns[value_name].values[keep])
    notes += duplicate_annotations(codes, steps[keep], columns[value_name].values[keep], locs[keep],
                                   list(names), spath)
    # Steps going back within one tag are a restart; report per tag's first occurrence.
    order = np.argsort(codes, kind="stable")
    c, s, lk = codes[order], steps[keep][order], locs[keep][order]
    for code in np.unique(c):
        m = c == code
        notes += backwards_annotations(s[m], lk[m], spath)[:1]
    return table, notes
