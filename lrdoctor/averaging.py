"""How many optimizer steps each logged point of a series averages.

An epoch-level log does not hold per-step values but their mean over the epoch: a 15x one-step
grad-norm burst in a 20-step epoch shows as (19 + 15) / 20 = 1.7x, and a threshold made for
per-step values never sees it. A point is an epoch mean when

* its tag says so: Lightning's ``self.log(..., on_epoch=True)`` writes ``<name>_epoch``, Keras's
  TensorBoard callback ``epoch_<name>``;
* the run is indexed by epoch (Keras CSVLogger, ``history.json``, Keras TensorBoard);
* or the series has exactly one point per epoch of the run's ``epoch`` tag (Lightning's
  ``on_step=False, on_epoch=True`` keeps the bare name), three epochs at least.

It then averages the hparams' ``steps_per_epoch`` steps when they name it, else its median step
spacing when the steps count optimizer steps (Lightning logs an epoch's mean at the epoch's last
global step). An epoch-indexed log with no ``steps_per_epoch`` gives 1: the averaging is real but
unknown, and the thresholds stay per-step ones. Anything else is 1: a per-step series logged every
N steps (HF Trainer's ``grad_norm``) is a sample of one step, not a mean.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import numpy as np

from .model import Series
from .runfacts import as_int, configured

_EPOCH_TAG = re.compile(r"(^|/)epoch_|_epoch$")


def steps_per_point(series: Series, *, step_axis: str = "step", epoch: Series | None = None,
                    steps_per_epoch: int | None = None) -> float:
    """Steps each point of ``series`` averages (see the module doc); 1.0 when not an epoch mean."""
    if not averaged(series, step_axis=step_axis, epoch=epoch):
        return 1.0
    return _averaged_steps(series, step_axis, steps_per_epoch)


def _averaged_steps(series: Series, step_axis: str, steps_per_epoch: int | None) -> float:
    """:func:`steps_per_point` of a series already known to hold epoch means."""
    steps = np.asarray(series.steps, dtype=np.int64)
    if len(steps) < 2:
        return 1.0
    if steps_per_epoch is not None and steps_per_epoch > 1:
        return float(steps_per_epoch)
    if step_axis == "epoch":
        return 1.0
    spacing = float(np.median(np.diff(np.unique(steps)))) if len(np.unique(steps)) >= 2 else 1.0
    return max(spacing, 1.0)


def averaged(series: Series, *, step_axis: str = "step", epoch: Series | None = None) -> bool:
    """Whether the points of ``series`` are means over epochs (see the module doc)."""
    return tag_says_averaged(series.tag, step_axis) or _one_per_epoch(np.asarray(series.steps, dtype=np.int64), epoch)


def tag_says_averaged(tag: str, step_axis: str = "step") -> bool:
    """Whether the tag's name or the run's step axis alone says its points are epoch means."""
    return step_axis == "epoch" or bool(_EPOCH_TAG.search(tag.lower()))


def _one_per_epoch(steps: np.ndarray, epoch: Series | None) -> bool:
    if epoch is None or len(steps) < 3:
        return False
    es, ev = np.asarray(epoch.steps, dtype=np.int64), np.asarray(epoch.values, dtype=np.float64)
    order = np.argsort(es, kind="stable")
    es, ev = es[order], ev[order]
    j = np.searchsorted(es, steps)
    if np.any(j >= len(es)) or not bool(np.all(es[np.minimum(j, len(es) - 1)] == steps)):
        return False
    at = ev[j]
    return bool(np.all(np.isfinite(at)) and np.all(np.diff(at) == 1))


def with_averaging(view: Any, s: Series) -> Series:
    """``s`` with ``averages`` and ``epoch_means`` set from its run (``view``: a RoleView, or the
    live engine's prefix view, which has no tag index and so no epoch tag)."""
    run = view.run
    index = getattr(view, "index", None)
    epoch = index.series("epoch") if index is not None and "epoch" in index.tags else None
    if not averaged(s, step_axis=run.step_axis, epoch=epoch):
        return s  # the common case, decided without flattening the run's hparams
    hit = configured(run, "steps_per_epoch")
    k = _averaged_steps(s, run.step_axis, as_int(hit[1]) if hit is not None else None)
    # only what the tag or the axis says: the live engine's prefix view has no epoch tag to count
    # points against, and a flag it could not set would make live and offline answers differ
    means = tag_says_averaged(s.tag, run.step_axis)
    return s if k == 1.0 and not means else replace(s, averages=k, epoch_means=means)
