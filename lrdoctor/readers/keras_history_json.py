"""Keras ``history.json``: ``json.dump(history.history)``, a dict of per-epoch lists.

The position in each list is the epoch (0-based), so the step axis is the epoch. Python's json
writes NaN losses as the bare literal ``NaN``; they are read as NaN points. Lists may differ in
length (``validation_freq`` > 1 gives shorter ``val_*`` lists): each keeps its own length.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from ..errors import LogFormatError
from ..model import Run
from .base import ReadOptions, RunSource
from .records import records_to_columns
from .tabular import one_line, wide_to_tidy

_SHAPE = re.compile(rb'^\s*\{\s*"[^"]*"\s*:\s*\[\s*(-?[0-9.]|NaN|-?Infinity|null|\])')


class KerasHistoryReader:
    name = "keras_history"
    description = "Keras history.json (json.dump(history.history): a dict of per-epoch lists)"

    def sniff(self, path: Path, head: bytes) -> bool:
        return bool(_SHAPE.match(head))

    def read(self, source: RunSource, options: ReadOptions) -> Run:
        path = source.files[0]
        spath = str(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise LogFormatError(f"cannot parse JSON: {one_line(exc)}", path=spath) from exc
        if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
            raise LogFormatError("expected a JSON object of lists (json.dump(history.history))", path=spath)
        n = max((len(v) for v in data.values()), default=0)
        # Epoch i of every list becomes one record, so the shared column logic applies.
        records = [{k: v[i] for k, v in data.items() if i < len(v)} for i in range(n)]
        locs = np.arange(n)
        cols, notes = records_to_columns(records, spath, locs, strict=options.strict, loc_label="epoch")
        table, more = wide_to_tidy(np.arange(n, dtype=np.int64), locs, list(cols.values()), spath,
                                   axis="epoch", loc_label="epoch")
        return Run(name=source.name, source=spath, format=self.name, scalars=table,
                   step_axis="epoch", annotations=tuple(notes + more))
