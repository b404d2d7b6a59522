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

from ..errors import LogFormatError
from ..model import Annotation, Run
from .base import ReadOptions, RunSource
from .tabular import backwards_annotations, cap, duplicate_annotations, tidy_frame
from .textfile import decode, read_bytes

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


#: The tag MLflow sets on a nested run (``start_run(nested=True)``): its parent run's id.
PARENT_TAG = "mlflow.parentRunId"


def relation(experiment: str | None, parent: str | None, children: list[str]) -> str | None:
    """A run's place in its store in words: its experiment, and its parent or nested runs (a
    sweep's parent run usually logs no metrics of its own)."""
    parts = [f"experiment {experiment}"] if experiment else []
    if children:
        shown = ", ".join(children[:3]) + (", ..." if len(children) > 3 else "")
        parts.append(f"MLflow parent of {len(children)} nested run{'s' if len(children) > 1 else ''}: {shown}")
    if parent:
        parts.append(f"nested in run {parent}")
    return "; ".join(parts) or None


def _tag_value(run_dir: Path, key: str) -> str | None:
    try:
        return (run_dir / "tags" / key).read_text(encoding="utf-8", errors="replace").strip() or None
    except OSError:
        return None


def _experiment_name(exp_dir: Path) -> str | None:
    import yaml

    try:
        data = yaml.safe_load((exp_dir / "meta.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return str(data["name"]) if isinstance(data, dict) and data.get("name") else None


class MLflowReader:
    name = "mlflow"
    description = "MLflow file store (mlruns/<experiment>/<run_id>/metrics/<name>, params/)"

    def sniff(self, path: Path, head: bytes) -> bool:
        """A metric file inside a run directory (discovery finds run directories itself)."""
        return "metrics" in path.parts and bool(_LINE.match(head.split(b"\n", 1)[0] or b"x"))

    def describe(self, source: RunSource) -> str | None:
        """The run's experiment and parent or nested runs (``mlflow.parentRunId`` tags of the runs
        beside it), for naming a run left out. Only read for such runs: it lists the experiment."""
        run_dir = source.root
        if not run_dir.is_dir():
            return None
        exp_dir = run_dir.parent
        parent_id = _tag_value(run_dir, PARENT_TAG)
        parent = None
        if parent_id:
            parent = run_name(exp_dir / parent_id) if (exp_dir / parent_id).is_dir() else parent_id
        try:
            siblings = sorted(d for d in exp_dir.iterdir() if d.is_dir() and d != run_dir)
        except OSError:
            siblings = []
        children = [run_name(d) or d.name for d in siblings if _tag_value(d, PARENT_TAG) == run_dir.name]
        return relation(_experiment_name(exp_dir), parent, children)

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
    """(steps, wall times in s, values) of one metric file.

    Parsed line by line (MLflow writes one ``str(float)`` per line, so NaN/inf arrive as ``nan``,
    ``inf``): a line that is not ``<int timestamp> <number> [<int step>]`` is named in an
    annotation and skipped, never turned into a point (``--strict``: an error).
    """
    spath = str(path)
    # A byte that is not UTF-8 spoils the number it sits in: that line is reported as not a metric line.
    text = decode(read_bytes(path), path, errors="surrogateescape")
    rows = [(i + 1, line.split()) for i, line in enumerate(text.splitlines()) if line.strip()]
    # Very old MLflow wrote no step; a file is one or the other, so the usual width decides.
    width = 3 if sum(len(f) == 3 for _, f in rows) * 2 >= len(rows) else 2
    ts_l: list[float] = []
    val_l: list[float] = []
    step_l: list[int] = []
    locs: list[int] = []
    bad: list[tuple[int, str]] = []
    for lineno, fields in rows:
        try:
            if len(fields) != width:
                raise ValueError
            ts, value = int(fields[0]), float(fields[1])
            step = int(fields[2]) if width == 3 else 0
        except ValueError:
            bad.append((lineno, " ".join(fields)))
            continue
        ts_l.append(ts)
        val_l.append(value)
        step_l.append(step)
        locs.append(lineno)
    notes: list[Annotation] = []
    if bad:
        lineno, line = bad[0]
        expected = "'<timestamp> <value> <step>'" if width == 3 else "'<timestamp> <value>'"
        if strict:
            raise LogFormatError(f"not a metric line {expected}: {line[:60]!r}", path=spath,
                                 location=f"line {lineno}")
        listed = ", ".join(str(n) for n, _ in bad[:20]) + (", ..." if len(bad) > 20 else "")
        notes.append(Annotation("bad_line", f"{len(bad)} line(s) not of the form {expected} skipped "
                                f"(first: {line[:60]!r}; lines {listed})", path=spath,
                                location=f"line {lineno}"))
    steps = np.asarray(step_l, dtype=np.int64)
    values = np.asarray(val_l, dtype=np.float64)
    wall = np.asarray(ts_l, dtype=np.float64) / 1000.0
    loc = np.asarray(locs, dtype=np.int64)
    if width == 2 and len(steps):
        notes.append(Annotation("no_step_column", "old MLflow metric file without steps; step 0 used",
                                path=spath))
    notes += backwards_annotations(steps, loc, spath)
    notes += duplicate_annotations(np.zeros(len(steps), dtype=np.int64), steps, values, loc, [tag], spath)
    return (steps, wall, values), notes


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
