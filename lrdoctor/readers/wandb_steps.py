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

import numpy as np
import pandas as pd

from ..model import Annotation

#: keys integrations log in every history row as their step (``define_metric``'s step_metric)
STEP_KEYS = ("trainer/global_step", "train/global_step")


def to_global_steps(scalars: pd.DataFrame, path: str) -> tuple[pd.DataFrame, Annotation | None]:
    """``scalars`` with ``step`` taken from a step key logged in most rows (see the module doc)."""
    if scalars.empty:
        return scalars, None
    col = scalars["tag"]
    # the reader's tag column is categorical: look the keys up among its categories, never turn a
    # million tags into strings (that alone cost a fifth of reading a 1M-point file)
    names = list(col.cat.categories) if isinstance(col.dtype, pd.CategoricalDtype) else list(pd.unique(col))
    keys = [k for k in STEP_KEYS if k in names]
    if not keys:
        return scalars, None
    steps = scalars["step"].to_numpy(dtype=np.int64)
    rows = np.unique(steps)
    for key in keys:
        mine = (col == key).to_numpy()
        at, value = steps[mine], scalars["value"].to_numpy(dtype=np.float64)[mine]
        order = np.argsort(at, kind="stable")
        at, value = at[order], value[order]
        if (len(np.unique(at)) != len(at) or 2 * len(at) < len(rows) or not np.all(np.isfinite(value))
                or not np.all(value == np.round(value)) or np.any(np.diff(value) < 0)):
            continue  # not one integral, non-decreasing value in most rows: W&B's _step stays
        # a row without the key (a direct experiment.log call) belongs to the last step logged
        # before it, or to the first one for rows before any
        j = np.clip(np.searchsorted(at, steps, side="right") - 1, 0, len(at) - 1)
        out = scalars.copy()
        out["step"] = value[j].astype(np.int64)
        missing = len(rows) - len(at)
        note = Annotation("step_axis", f"steps are {key!r}, logged in {len(at)} of {len(rows)} rows (W&B's _step "
                          f"counts log calls)" + (f"; the {missing} row(s) without it are put at the step logged "
                                                  "before them" if missing else ""), path=path)
        return out, note
    return scalars, None
