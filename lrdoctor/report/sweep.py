"""Sweep-level facts for the index: each run's learning rate and which LRs trained stably."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..model import Run
from ..runfacts import configured_lr, flatten
from .data import RunView

_NAME_LR = re.compile(r"(?:^|[^a-z])(?:lr|learning[_-]?rate)[_=\-]?(\d+(?:\.\d*)?(?:e[-+]?\d+)?)", re.IGNORECASE)


@dataclass(frozen=True)
class SweepPoint:
    key: str
    name: str
    lr: float
    loss: float | None  # best val loss when every run has one, else final train loss
    stable: bool


@dataclass(frozen=True)
class LrSweep:
    points: tuple[SweepPoint, ...]
    loss_label: str
    stable_range: tuple[float, float] | None
    best: SweepPoint | None
    reason: str = ""  # why these runs were grouped as one sweep (shown on the page)

    @property
    def stable_runs(self) -> int:
        """Runs inside the stable range (0 when there is none)."""
        if self.stable_range is None:
            return 0
        lo, hi = self.stable_range
        return sum(1 for p in self.points if lo <= p.lr <= hi)


def _as_lr(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) and 0 < x < 100 else None


def run_lr(run: Run) -> float | None:
    """The run's (peak) LR from its hparams or workload config (:func:`lrdoctor.runfacts.configured_lr`),
    else from its name (``lr_1e-3``, ``lr=0.01``)."""
    lr = _as_lr(configured_lr(run))
    if lr is not None:
        return lr
    hits = list(_NAME_LR.finditer(run.name))  # the last one: "sweep_lr/lr_1e-3" names the run's own LR
    return _as_lr(hits[-1].group(1)) if hits else None


def is_stable(view: RunView) -> bool:
    # findings whose rule file declares they mean "this LR is too high to train stably"
    if any(f.unstable_in_sweep for f in view.diagnosis.findings):
        return False
    return view.final_train_loss is None or math.isfinite(view.final_train_loss)


def experiment_dir(view: RunView) -> str:
    """The directory a run's siblings share: the parent of its run directory (of the file's
    directory for a single-file run; a split ``name#k`` attempt shares its file's)."""
    src = Path(view.run.source)
    run_dir = src.parent if src.is_file() else src
    return str(run_dir.parent)


def comparable_key(view: RunView) -> tuple:
    """Runs are points of one sweep only when they are runs of one experiment: the same built-in
    workload when known, else siblings under one parent directory with the same format, the same
    loss tags and the same hparam keys (runs of five projects never share all of that)."""
    origin = view.run.origin
    if origin is not None and origin.workload:
        return ("workload", origin.workload)
    roles = view.diagnosis.roles
    keys = tuple(sorted(flatten(view.run.hparams)))
    return ("tags", experiment_dir(view), view.run.format, roles.get("train_loss"), roles.get("val_loss"), keys)


def grouping_reason(key: tuple, n: int) -> str:
    """Why ``n`` runs of one ``comparable_key`` were grouped, in words."""
    if key[0] == "workload":
        return f"{n} runs of the built-in workload {key[1]}"
    _, parent, fmt, train, val, keys = key
    parts = [f"{n} sibling runs under {parent}/", f"the same format ({fmt})",
             f"train loss tag {train!r}" + (f" and val loss tag {val!r}" if val else "")]
    parts.append(f"the same {len(keys)} hparam keys" if keys else "no hparams")
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def lr_sweep(views: Sequence[RunView]) -> LrSweep | None:
    """The largest group of comparable runs whose LRs differ; None when there is no such group
    (LRs unknown, all equal, or only across different tasks, whose losses do not compare)."""
    groups: dict[tuple, list[tuple[RunView, float]]] = {}
    for v in views:
        lr = run_lr(v.run)
        if lr is not None:
            groups.setdefault(comparable_key(v), []).append((v, lr))
    groups = {k: rows for k, rows in groups.items() if len({lr for _, lr in rows}) >= 2}
    if not groups:
        return None
    key = max(groups, key=lambda k: len(groups[k]))
    rows = groups[key]
    use_val = all(v.best_val_loss is not None for v, _ in rows)
    points = tuple(
        SweepPoint(v.key, v.run.name, lr, v.best_val_loss if use_val else v.final_train_loss, is_stable(v))
        for v, lr in sorted(rows, key=lambda r: r[1])
    )
    # An LR is stable when every run at it is; the stable range is the longest run of stable LRs.
    lrs = sorted({p.lr for p in points})
    ok = {lr: all(p.stable for p in points if p.lr == lr) for lr in lrs}
    best_span: tuple[float, float] | None = None
    best_len, start = 0, None
    for i, lr in enumerate([*lrs, None]):
        if lr is not None and ok[lr]:
            start = i if start is None else start
            continue
        if start is not None and i - start > best_len:
            best_len, best_span = i - start, (lrs[start], lrs[i - 1])
        start = None
    finite = [p for p in points if p.stable and p.loss is not None and math.isfinite(p.loss)]
    best = min(finite, key=lambda p: p.loss) if finite else None
    return LrSweep(points, "best val loss" if use_val else "final train loss", best_span, best,
                   grouping_reason(key, len(rows)))
