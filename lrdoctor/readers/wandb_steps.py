"""The optimizer step of a W&B run's points, when an integration logged it beside W&B's own.

W&B numbers history rows by ``_step``, which counts ``wandb.log`` calls, not optimizer steps:
Lightning's ``WandbLogger`` logs the train metrics, the LR and the validation metrics in separate
calls (396 ``_step`` values for 192 optimizer steps), and says so to W&B's UI with
``define_metric("*", step_metric="trainer/global_step")``, logging that key in every row; HF's
``WandbCallback`` does the same with ``train/global_step``. Findings and proposals must name
optimizer steps ("skip batches 188-226" of a run that had 192 would be wrong advice), so when one
of these keys is in most rows (half at least), is integral and never decreases, it is the
step, a row without it (a script's own ``experiment.log`` call) taking the step logged before
it; otherwise ``_step`` stays, as W&B shows it by default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..model import Annotation

#: keys integrations log in every history row as their step (``define_metric``'s step_metric)
STEP_KEYS = ("trainer/global_step", "train/global_step")


@dataclass(frozen=True)
class StepRows:
    """What decides the step key: the ``_step`` of every history row with points, and for each
    step key the rows logging it (their ``_step``) and its values. A followed run keeps adding to
    it (:meth:`plus`), so ``lrdoctor watch`` decides as a whole read of the file so far would."""

    rows: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # sorted, unique
    keys: Mapping[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # key -> (_step, value)

    @classmethod
    def of(cls, scalars: pd.DataFrame) -> StepRows:
        if scalars.empty:
            return cls()
        col = scalars["tag"]
        # the reader's tag column is categorical: look the keys up among its categories, never turn
        # a million tags into strings (that alone cost a fifth of reading a 1M-point file)
        names = list(col.cat.categories) if isinstance(col.dtype, pd.CategoricalDtype) else list(pd.unique(col))
        steps = scalars["step"].to_numpy(dtype=np.int64)
        keys = {}
        for key in (k for k in STEP_KEYS if k in names):
            mine = (col == key).to_numpy()
            keys[key] = (steps[mine], scalars["value"].to_numpy(dtype=np.float64)[mine])
        return cls(np.unique(steps), keys)

    def plus(self, more: StepRows) -> StepRows:
        keys = dict(self.keys)
        for k, (at, value) in more.keys.items():
            old = keys.get(k)
            keys[k] = (at, value) if old is None else (np.concatenate([old[0], at]), np.concatenate([old[1], value]))
        rows = self.rows
        if len(more.rows):
            # a followed file's new rows come after those read (O(n) per poll, not a sort)
            rows = (np.concatenate([rows, more.rows]) if not len(rows) or more.rows[0] > rows[-1]
                    else np.union1d(rows, more.rows))
        return StepRows(rows, keys)

    def key(self) -> str | None:
        """The step key a whole read takes (the module doc says when), or None for ``_step``."""
        for key in STEP_KEYS:
            if key not in self.keys:
                continue
            at, value = self._sorted(key)
            if (len(np.unique(at)) != len(at) or 2 * len(at) < len(self.rows) or not np.all(np.isfinite(value))
                    or not np.all(value == np.round(value)) or np.any(np.diff(value) < 0)):
                continue  # not one integral, non-decreasing value in most rows: W&B's _step stays
            return key
        return None

    def _sorted(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        at, value = self.keys[key]
        if np.all(at[1:] >= at[:-1]):
            return at, value
        order = np.argsort(at, kind="stable")
        return at[order], value[order]

    def rekey(self, scalars: pd.DataFrame, key: str | None, path: str) -> tuple[pd.DataFrame, Annotation | None]:
        """``scalars`` (some or all of the rows seen) with ``step`` the value of ``key``."""
        if key is None or scalars.empty:
            return scalars, None
        at, value = self._sorted(key)
        steps = scalars["step"].to_numpy(dtype=np.int64)
        # a row without the key (a direct experiment.log call) belongs to the last step logged
        # before it, or to the first one for rows before any
        j = np.clip(np.searchsorted(at, steps, side="right") - 1, 0, len(at) - 1)
        out = scalars.copy()
        out["step"] = value[j].astype(np.int64)
        missing = len(self.rows) - len(at)
        note = Annotation("step_axis", f"steps are {key!r}, logged in {len(at)} of {len(self.rows)} rows (W&B's "
                          f"_step counts log calls)" + (f"; the {missing} row(s) without it are put at the step "
                                                        "logged before them" if missing else ""), path=path)
        return out, note


def to_global_steps(scalars: pd.DataFrame, path: str) -> tuple[pd.DataFrame, Annotation | None]:
    """``scalars`` with ``step`` taken from a step key logged in most rows (see the module doc)."""
    rows = StepRows.of(scalars)
    return rows.rekey(scalars, rows.key(), path)
