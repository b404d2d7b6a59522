"""MLflow file store: ``mlruns/<experiment_id>/<run_id>/``.

``metrics/<name>`` holds one line per point, ``<timestamp_ms> <value> <step>`` (very old
versions: no step); a metric name with ``/`` is a nested path under ``metrics/``. ``params/<name>``
holds one value each (-> hparams); ``meta.yaml`` gives the run name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import LogFormatError
from ..model import Annotation, Run
from .base import ReadOptions, RunSource
from .tabular import backwards_annotations, cap, duplicate_annotations, text_column, tidy_frame

_LINE = re.compile(rb"^\s*\d+ \S+( -?\d+)?\s*$")


def is_run_dir(path: Path) -> bool:
    """A directory laid out as an MLflow run (metrics/ next to meta.yaml, params/ or tags/)."""
    return (path / "metrics").is_dir() and any(
        (path / p).exists() for p in ("meta.yaml", "params", "tags"))


def metric_files(run_dir: Path) -> list[Path]:
    return sorted(p for p in (run_dir / "metrics").rglob("*") if p.is_file())


def run_name(run_dir: Path) -> str | None:
    """The run's name from meta.yaml (``run_name``) or the ``mlflow.runName`` tag."""
    meta = run_dir / "meta.yaml"
    if meta.is_file():
        import yaml

        try:
            data = yaml.safe_load(meta.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            data = None
        if isinstance(data, dict) and data.get("run_name"):
            return str(data["run_name"])
    tag = run_dir / "tags" / "mlflow.runName"
    if tag.is_file():
        return tag.read_text(encoding="utf-8", errors="replace").strip() or None
    return None


class MLflowReader:
    name = "mlflow"
    description = "MLflow file store (mlruns/<experiment>/<run_id>/metrics/<name>, params/)"

    def sniff(self, path: Path, head: bytes) -> bool:
        """A metric file inside a run directory (discovery finds run directories itself)."""
        return "metrics" in path.parts and bool(_LINE.match(head.split(b"\n", 1)[0] or b"x"))

    def read(self, source: RunSource, options: ReadOptions) -> Run:
        run_dir = source.root if source.root.is_dir() else source.root.parent
        if source.root.is_file():  # a single metric file passed directly
            while run_dir.name != "metrics" and run_dir != run_dir.parent:
                run_dir = run_dir.parent
            run_dir = run_dir.parent
        files = list(source.files) or metric_files(run_dir)
        parts, notes = [], []
        for f in files:
            arrays, more = _read_metric(f, _tag(f, run_dir), options.strict)
            parts.append(arrays)
            notes += more
        n = [len(p[0]) for p in parts]
        codes = np.repeat(np.arange(len(parts)), n)
        step, wall, value = (np.concatenate([p[i] for p in parts]) if parts else np.zeros(0) for i in range(3))
        # Points in logged order across metric files: by time, ties keep file order.
        order = np.argsort(wall, kind="stable")
        scalars = tidy_frame(codes[order], [_tag(f, run_dir) for f in files], step[order], wall[order],
                             value[order])
        return Run(name=source.name, source=str(run_dir), format=self.name, scalars=scalars,
                   hparams=_params(run_dir), step_axis="step", annotations=tuple(cap(notes)))


def _tag(path: Path, run_dir: Path) -> str:
    return path.relative_to(run_dir / "metrics").as_posix()


def _read_metric(path: Path, tag: str, strict: bool) -> tuple[tuple[np.ndarray, ...], list[Annotation]]:
    """(steps, wall times in s, values) of one metric file."""
    spath = str(path)
    empty = (np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0))
    try:
        df = pd.read_csv(path, sep=" ", header=None, dtype=str, keep_default_na=False, na_values=[""],
                         skip_blank_lines=True)
    except pd.errors.EmptyDataError:
        return empty, []
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise LogFormatError(f"cannot parse MLflow metric file: {exc}", path=spath) from exc
    if df.shape[1] not in (2, 3):
        raise LogFormatError(f"expected '<timestamp> <value> <step>' lines, got {df.shape[1]} fields",
                             path=spath, location="line 1")
    locs = np.arange(len(df), dtype=np.int64) + 1
    notes: list[Annotation] = []
    ts = pd.to_numeric(df[0], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    val, more = text_column(df[1], "value", spath, locs, strict=strict)
    notes += more
    if val is None:
        return empty, notes
    if df.shape[1] == 3:
        steps = pd.to_numeric(df[2], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        steps = np.nan_to_num(steps, nan=0.0).astype(np.int64)
    else:
        steps = np.zeros(len(df), dtype=np.int64)
        notes.append(Annotation("no_step_column", "old MLflow metric file without steps; step 0 used",
                                path=spath))
    keep = val.present
    steps, values = steps[keep], val.values[keep]
    notes += backwards_annotations(steps, locs[keep], spath)
    notes += duplicate_annotations(np.zeros(len(steps), dtype=np.int64), steps, values, locs[keep],
                                   [tag], spath)
    return (steps, ts[keep] / 1000.0, values), notes


def _params(run_dir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    pdir = run_dir / "params"
    if not pdir.is_dir():
        return out
    for p in sorted(pdir.rglob("*")):
        if p.is_file():
            out[p.relative_to(pdir).as_posix()] = _scalar(p.read_text(encoding="utf-8", errors="replace"))
    return out


def _scalar(text: str) -> Any:
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text
