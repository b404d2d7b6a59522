"""Keras ``history.json``: ``json.dump(history.history)``, a dict of per-epoch lists.

The position in each list is the epoch (0-based), so the step axis is the epoch. Python's json
writes NaN losses as the bare literal ``NaN``; they are read as NaN points. Lists may differ in
length (``validation_freq`` > 1 gives shorter ``val_*`` lists): each keeps its own length.

A variant seen in real repositories wraps the lists with their epoch numbers:
``{"epochs": [0.0, 1.0, ...], "metrics": {"loss": [...], ...}}``; the ``epochs`` list is then the
step axis (fractions floored, with a note), position i of every list belonging to ``epochs[i]``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import LogFormatError
from ..model import Annotation, Run
from .base import ReadOptions, RunSource
from .records import records_to_columns
from .tabular import to_steps, wide_to_tidy
from .textfile import load_json

_SHAPE = re.compile(rb'^\s*\{\s*"[^"]*"\s*:\s*\[\s*(-?[0-9.]|NaN|-?Infinity|null|\])')
_WRAPPED = re.compile(rb'^\s*\{\s*"(epochs|metrics)"\s*:\s*[\[{]')


class KerasHistoryReader:
    name = "keras_history"
    description = "Keras history.json (json.dump(history.history): a dict of per-epoch lists)"

    def sniff(self, path: Path, head: bytes) -> bool:
        return bool(_SHAPE.match(head) or _WRAPPED.match(head))

    def read(self, source: RunSource, options: ReadOptions) -> Run:
        path = source.files[0]
        spath = str(path)
        data = load_json(path, "JSON")
        epochs = None
        if isinstance(data, dict) and isinstance(data.get("metrics"), dict) and set(data) <= {"epochs", "metrics"}:
            epochs = data.get("epochs")
            if epochs is not None and not isinstance(epochs, list):
                raise LogFormatError("'epochs' is not a list", path=spath)
            data = data["metrics"]
        if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
            raise LogFormatError("expected a JSON object of lists (json.dump(history.history)) or "
                                 '{"epochs": [...], "metrics": {<name>: [...]}}', path=spath)
        n = max((len(v) for v in data.values()), default=0)
        # Epoch i of every list becomes one record, so the shared column logic applies.
        records = [{k: v[i] for k, v in data.items() if i < len(v)} for i in range(n)]
        locs = np.arange(n)
        cols, notes = records_to_columns(records, spath, locs, strict=options.strict, loc_label="epoch")
        steps = np.arange(n, dtype=np.int64)
        if epochs is not None:
            steps, more = _epoch_steps(epochs, n, spath, options.strict)
            notes += more
        table, more = wide_to_tidy(steps, locs, list(cols.values()), spath, axis="epoch", loc_label="epoch")
        return Run(name=source.name, source=spath, format=self.name, scalars=table,
                   step_axis="epoch", annotations=tuple(notes + more))


def _epoch_steps(epochs: list, n: int, spath: str, strict: bool) -> tuple[np.ndarray, list]:
    """The ``epochs`` list as whole-number steps (one per list position; positions it does not
    cover continue from its last epoch, and say so)."""
    cols, notes = records_to_columns([{"epochs": e} for e in epochs], spath, np.arange(len(epochs)),
                                     strict=strict, loc_label="epoch index")
    col = cols.get("epochs")
    if col is None or len(epochs) == 0:
        raise LogFormatError("'epochs' holds no numbers", path=spath)
    steps, more = to_steps(col, spath, np.arange(len(epochs)), loc_label="epoch index")
    notes += more
    if len(steps) < n:
        notes.append(Annotation("missing_step", f"'epochs' lists {len(steps)} epochs but the metric lists "
                                f"hold {n}; the rest are numbered on from epoch {int(steps[-1])}", path=spath))
        steps = np.concatenate([steps, steps[-1] + 1 + np.arange(n - len(steps))])
    return steps[:n], notes
