"""HuggingFace Trainer ``trainer_state.json``: ``log_history`` entries as records.

Train entries (``loss``, ``grad_norm``, ``learning_rate``/``lr``, ``epoch``, ``step``) and eval
entries (``eval_*``) are separate records, often at the same step; ``predict_*`` entries carry
no ``step`` and take the step of the record before them (reported). transformers writes the file
with ``json.dumps(indent=2, sort_keys=True)``, so NaN losses appear as the bare literal ``NaN``.
Which ``checkpoint-*/trainer_state.json`` copy is read is decided by discovery.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LogFormatError
from ..model import Annotation, Run
from .base import ReadOptions, RunSource
from .records import records_to_columns
from .tabular import Column, to_steps, wide_to_tidy
from .textfile import load_json

FILE_NAME = "trainer_state.json"
_GLOBAL_STEP = re.compile(rb'"global_step"\s*:\s*(\d+)')


def global_step_of(path: Path) -> int:
    """The run's last step from the top of a trainer_state.json (sorted keys put it first)."""
    try:
        with path.open("rb") as fh:
            m = _GLOBAL_STEP.search(fh.read(8192))
    except OSError:
        return -1
    return int(m.group(1)) if m else -1


class HFTrainerStateReader:
    name = "hf_trainer_state"
    description = "HuggingFace Trainer trainer_state.json (log_history)"

    def sniff(self, path: Path, head: bytes) -> bool:
        if not head.lstrip().startswith(b"{"):
            return False
        return b'"log_history"' in head or path.name == FILE_NAME

    def read(self, source: RunSource, options: ReadOptions) -> Run:
        path = source.files[0]
        spath = str(path)
        state = load_json(path, "trainer_state.json")
        history = state.get("log_history") if isinstance(state, dict) else None
        if not isinstance(history, list):
            raise LogFormatError("no 'log_history' list", path=spath)
        records = [e if isinstance(e, dict) else {} for e in history]
        locs = np.arange(len(records))
        cols, notes = records_to_columns(records, spath, locs, strict=options.strict,
                                         loc_label="log_history entry")
        step_col = cols.pop("step", None)
        if step_col is None:
            step_col = Column("step", np.full(len(records), np.nan), np.zeros(len(records), dtype=bool))
        missing = ~step_col.present
        if missing.any():
            keys = sorted({k for i in np.flatnonzero(missing) for k in records[i]})
            notes.append(Annotation(
                "missing_step", f"{int(missing.sum())} log_history entries have no 'step' "
                f"(keys {', '.join(keys[:6])}{', ...' if len(keys) > 6 else ''}); they take the step of "
                "the entry before them", path=spath, location=f"log_history entry {int(np.flatnonzero(missing)[0])}",
            ))
        # to_steps would report every gap again; pre-fill them here.
        steps, more = to_steps(step_col, spath, locs, "log_history entry",
                               default_first=int(state.get("global_step") or 0) if not step_col.present.any() else 0)
        notes += [a for a in more if a.kind != "missing_step"]
        table, more = wide_to_tidy(steps, locs, list(cols.values()), spath, loc_label="log_history entry")
        notes += more
        note = source.note
        if note:
            notes.insert(0, Annotation("checkpoint_copy", note, path=spath))
        return Run(name=source.name, source=spath, format=self.name, scalars=table,
                   hparams=_hparams(state), step_axis="step", annotations=tuple(notes))


def _hparams(state: dict[str, Any]) -> dict[str, Any]:
    """The Trainer settings the state file records (batch size, max_steps, logging_steps, ...)."""
    skip = {"log_history", "stateful_callbacks", "is_local_process_zero", "is_world_process_zero"}
    out = {k: v for k, v in state.items()
           if k not in skip and (v is None or isinstance(v, (int, float, str, bool)))}
    if isinstance(state.get("trial_params"), dict):
        out.update(state["trial_params"])
    return out
