"""Finding the runs under a path: a log file, one run directory, or a tree of many runs.

Rules (README "Runs and discovery"):
- A TensorBoard run is the topmost directory (at or below the searched path) that directly holds
  event files; event files in its subdirectories (``add_scalars``/``add_hparams``) belong to it.
- Keras's ``logs/train/`` + ``logs/validation/`` (sibling directories named train, validation,
  val or eval that hold event files, under a parent that holds none) are one run rooted at the
  parent.
- An MLflow run is a directory with ``metrics/`` next to ``meta.yaml``/``params/``/``tags/``.
- ``trainer_state.json`` copies in ``checkpoint-*/`` are skipped when the run directory has its own;
  otherwise the copy with the largest ``global_step`` is read.
- A W&B run is a directory holding ``run-<id>.wandb`` (wandb's ``files/``, ``logs/``, ``tmp/`` in it and
  ``wandb/debug*.log`` are not runs).
- Every other log file is one run, its format sniffed from its first bytes.
- A run is named by its directory relative to the searched path (the searched directory's own name
  when the run is the directory itself); runs that share a directory add their file name.
Nothing here writes anywhere.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path

from ..errors import LogFormatError
from ..origin import ORIGIN_FILE
from .base import FINDINGS_FILE, Reader, RunSource, is_lfs_pointer
from .hf_trainer_state import FILE_NAME as HF_FILE
from .hf_trainer_state import global_step_of
from .mlflow import is_run_dir, metric_files, run_name
from .textfile import check_regular, kind_of

log = logging.getLogger(__name__)

HEAD_BYTES = 8192
#: Files never sniffed: not logs (images, weights, configs), or lrdoctor's own provenance file.
SKIP_SUFFIXES = frozenset({
    ".png", ".jpg", ".jpeg", ".gif", ".svg", ".pdf", ".pt", ".pth", ".ckpt", ".bin", ".safetensors",
    ".npy", ".npz", ".pkl", ".pickle", ".h5", ".hdf5", ".onnx", ".zip", ".gz", ".tar", ".yaml", ".yml",
    ".md", ".rst", ".py", ".html", ".ipynb", ".parquet", ".model", ".msgpack", ".lock",
})
SKIP_DIRS = frozenset({"__pycache__", "node_modules", ".git", ".trash"})
#: Files named like a log: in a tree, one that no reader knows is named in a note instead of
#: skipped silently (any suffix counts: ``metrics.csv.1``, ``train.log.old``).
LOG_SUFFIXES = frozenset({".csv", ".jsonl", ".log", ".out", ".wandb"})
LOG_NAMES = frozenset({"mlflow.db"})  # not any .db: an Optuna study.db beside the runs is no log
#: ``.txt`` also holds vocabularies, requirements and merges beside a checkpoint: only names that
#: say "log" count.
_LOG_WORDS = re.compile(r"log|stdout|stderr|train|metric|history|output", re.IGNORECASE)
#: File names fixed by their format: such a run is named by its directory alone.
FIXED_NAMES = frozenset({"metrics.csv", HF_FILE, "trainer_log.jsonl", "history.json", "results.csv"})
#: A W&B run directory holds ``run-<id>.wandb``; ``wandb/`` holds one directory per run.
WANDB_SUFFIX = ".wandb"
WANDB_RUN_DIRS = ("run-", "offline-run-")
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def is_event_file_name(name: str) -> bool:
    return "tfevents" in name


def named_like_log(path: Path) -> bool:
    suffixes = {x.lower() for x in path.suffixes}
    return (bool(suffixes & LOG_SUFFIXES) or path.name in LOG_NAMES
            or (".txt" in suffixes and bool(_LOG_WORDS.search(path.stem))))


def _head(path: Path) -> bytes:
    """The first bytes of a file found in a tree; b"" (and a warning) when it cannot be read or is
    no regular file: opening a FIFO blocks until someone writes, /dev/zero never ends."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            log.warning("%s: not a regular file (%s); skipped", path, kind_of(st.st_mode))
            return b""
        with path.open("rb") as fh:
            return fh.read(HEAD_BYTES)
    except OSError as exc:
        log.warning("%s: cannot read (%s); skipped", path, exc.strerror or exc)
        return b""


def _is_empty(path: Path) -> bool:
    """A regular file of 0 bytes (an unreadable one was already warned about by :func:`_head`)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == 0


def _head_of_file(path: Path) -> bytes:
    """The first bytes of the file named on the command line: any failure is the error."""
    check_regular(path)
    try:
        with path.open("rb") as fh:
            return fh.read(HEAD_BYTES)
    except OSError as exc:
        raise LogFormatError(f"cannot read: {exc.strerror or exc}", path=str(path)) from exc


def _unlistable(exc: OSError) -> None:
    log.warning("%s: cannot list directory (%s); skipped", exc.filename, exc.strerror or exc)


class Finder:
    """One search: sniffs files with ``readers`` (priority order) and groups them into runs."""

    def __init__(self, readers: Sequence[Reader], *, forced: Reader | None = None):
        # Event files and MLflow run directories are grouped by directory, not one file per run.
        self.readers = [r for r in readers if r.name not in ("tensorboard", "mlflow")]
        self.mlflow = next((r for r in readers if r.name == "mlflow"), None)
        self.by_name = {r.name: r for r in readers}
        self.forced = forced
        self.is_lfs = is_lfs_pointer
        self.lfs_pointers: list[Path] = []
        #: files named like logs that no reader knows: (file, why), for the caller to note
        self.not_read: list[tuple[Path, str]] = []

    def wants(self, fmt: str) -> bool:
        return self.forced is None or self.forced.name == fmt

    # -- single file ---------------------------------------------------------------------------
    def for_file(self, path: Path) -> RunSource:
        head = _head_of_file(path)
        if self.forced is not None:
            fmt = self.forced.name
        elif self.is_lfs(head):
            what = "an event file" if is_event_file_name(path.name) else "the log file"
            raise LogFormatError(f"a Git LFS pointer, not {what} (fetch it with 'git lfs pull')",
                                 path=str(path))
        elif is_event_file_name(path.name) and not self.sniff(path, head) == "tensorboard":
            if not head:
                raise LogFormatError("empty event file (0 bytes): nothing was written to it", path=str(path))
            fmt = "tensorboard"  # by its name: the reader says what is wrong with the records
        else:
            fmt = self.sniff(path, head)
            if fmt is None and self.mlflow is not None and self.mlflow.sniff(path, head):
                fmt = "mlflow"  # one metric file of an MLflow run, passed directly
            if fmt is None:
                names = ", ".join(self.by_name)
                raise LogFormatError(f"not a log format lrdoctor knows (supported: {names}; "
                                     "use --format to force one)", path=str(path))
        by_dir = path.name in FIXED_NAMES or fmt in ("tensorboard", "wandb", "mlflow_sqlite")
        name = path.parent.resolve().name if by_dir else path.stem
        return RunSource(name=name or path.name, root=path, files=(path,), format=fmt)

    def sniff(self, path: Path, head: bytes) -> str | None:
        tb = self.by_name.get("tensorboard")
        if tb is not None and tb.sniff(path, head):
            return "tensorboard"
        if tb is None and is_event_file_name(path.name):
            return "tensorboard"  # found even while the TensorBoard reader is unavailable
        for r in self.readers:
            if r.sniff(path, head):
                return r.name
        return None

    # -- tree --------------------------------------------------------------------------------
    def for_tree(self, root: Path) -> list[RunSource]:
        tb_runs: dict[Path, list[Path]] = {}
        found: list[tuple[Path, str, Path]] = []  # (run dir, format, file)
        mlflow_runs: list[Path] = []
        # Symlinked directories are not followed (os.walk's default): a link to a directory above
        # would loop forever.
        for dirpath, dirnames, filenames in os.walk(root, onerror=_unlistable):
            d = Path(dirpath)
            dirnames[:] = sorted(n for n in dirnames if n not in SKIP_DIRS and not n.startswith("."))
            if is_run_dir(d) and self.wants("mlflow"):
                mlflow_runs.append(d)
                dirnames[:] = []
                continue
            if any(n.endswith(WANDB_SUFFIX) for n in filenames):
                dirnames[:] = []  # a W&B run directory: files/, logs/, tmp/ are wandb's own copies
            elif d.name == "wandb" and any(n.startswith(WANDB_RUN_DIRS) for n in dirnames):
                filenames = []  # wandb/debug*.log: wandb's own logs, not the training's
            tb_root = next((r for r in tb_runs if r == d or r in d.parents), None)
            for fname in sorted(filenames):
                path = d / fname
                if fname in (ORIGIN_FILE, FINDINGS_FILE) or path.suffix.lower() in SKIP_SUFFIXES:
                    continue
                head = _head(path)
                if not head:
                    if self.forced is None and named_like_log(path) and _is_empty(path):
                        self.not_read.append((path, "empty file (0 bytes)"))
                    continue
                if self.is_lfs(head):
                    what = "an event file" if is_event_file_name(fname) else "a log file"
                    log.warning("%s: a Git LFS pointer, not %s (fetch it with 'git lfs pull'); skipped",
                                path, what)
                    self.lfs_pointers.append(path)
                    continue
                fmt = self.forced.name if self.forced and self.forced.sniff(path, head) else (
                    None if self.forced else self.sniff(path, head))
                if fmt is None and is_event_file_name(fname) and self.wants("tensorboard"):
                    fmt = "tensorboard"  # a truncated/corrupt start: the reader reports it
                if fmt is None:
                    if self.forced is None and named_like_log(path):
                        self.not_read.append((path, "named like a log, but not a log format lrdoctor knows "
                                                    "(pass the file alone, or with --format, to see why)"))
                    continue
                if fmt == "tensorboard":
                    if tb_root is None:
                        tb_root = d
                        tb_runs[d] = []
                    tb_runs[tb_root].append(path)
                else:
                    found.append((d, fmt, path))
        tb_runs = merge_split_dirs(tb_runs)
        sources = [self._tb(root, r, files) for r, files in tb_runs.items()]
        sources += [self._mlflow(root, r) for r in mlflow_runs]
        sources += self._files(root, found)
        return unique_names(sources, root)

    def _tb(self, root: Path, run_dir: Path, files: list[Path]) -> RunSource:
        lfs = [p for p in self.lfs_pointers if run_dir in p.parents]
        return RunSource(name=_rel(root, run_dir), root=run_dir, files=tuple(files), format="tensorboard",
                         lfs_pointers=tuple(str(p) for p in lfs))

    def _mlflow(self, root: Path, run_dir: Path) -> RunSource:
        # Named like every other run, by its path, but with the store's "mlruns/<exp>/<run_id>"
        # (opaque ids) replaced by the run's own name from meta.yaml: "sweep/lr_1e-3/my-run".
        rel = _rel(root, run_dir)
        parts = Path(rel).parts
        prefix = parts[: parts.index("mlruns")] if "mlruns" in parts else ()
        own = run_name(run_dir)
        name = "/".join((*prefix, own)) if own else rel
        return RunSource(name=name, root=run_dir, files=tuple(metric_files(run_dir)), format="mlflow",
                         path_name=_rel(root, run_dir))

    def _files(self, root: Path, found: list[tuple[Path, str, Path]]) -> list[RunSource]:
        out: list[RunSource] = []
        hf_dirs = {d for d, fmt, p in found if fmt == "hf_trainer_state" and p.name == HF_FILE}
        checkpoints: dict[Path, list[Path]] = {}
        for d, fmt, path in found:
            m = _CHECKPOINT.match(d.name)
            if fmt == "hf_trainer_state" and m and d != root:
                if d.parent not in hf_dirs:
                    checkpoints.setdefault(d.parent, []).append(path)
                continue
            out.append(RunSource(name=_rel(root, d), root=path, files=(path,), format=fmt,
                                 dir=d))
        for run_dir, copies in checkpoints.items():
            best = max(copies, key=lambda p: (global_step_of(p), _ckpt_no(p)))
            note = (f"run directory has no trainer_state.json; read {best.parent.name}/{best.name}, "
                    f"the latest of {len(copies)} checkpoint copies")
            out.append(RunSource(name=_rel(root, run_dir), root=best, files=(best,), format="hf_trainer_state",
                                 dir=run_dir, note=note))
        return out


#: Subdirectory names Keras's TensorBoard callback (and similar) use for one run's phases.
SPLIT_DIRS = frozenset({"train", "validation", "val", "eval"})


def merge_split_dirs(tb_runs: dict[Path, list[Path]]) -> dict[Path, list[Path]]:
    """Keras writes one run as ``logs/train/`` + ``logs/validation/``: sibling directories named
    train/validation/val/eval that hold event files, under a parent that holds none, are one run
    rooted at the parent (their tags become ``train/epoch_loss``, ``validation/epoch_loss``)."""
    by_parent: dict[Path, list[Path]] = {}
    for d in tb_runs:
        if d.name in SPLIT_DIRS:
            by_parent.setdefault(d.parent, []).append(d)
    out: dict[Path, list[Path]] = {}
    merged: dict[Path, Path] = {}
    for parent, dirs in by_parent.items():
        if len(dirs) >= 2 and parent not in tb_runs:
            for d in dirs:
                merged[d] = parent
    for d, files in tb_runs.items():
        key = merged.get(d, d)
        out.setdefault(key, []).extend(files)
    return out


def _ckpt_no(path: Path) -> int:
    m = _CHECKPOINT.match(path.parent.name)
    return int(m.group(1)) if m else -1


def _rel(root: Path, path: Path) -> str:
    rel = path.relative_to(root).as_posix()
    return root.resolve().name if rel == "." else rel


def _natural(text: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def unique_names(sources: list[RunSource], root: Path) -> list[RunSource]:
    """Sort by name (naturally: version_2 before version_10); names shared by several runs get
    the run's file (or path) appended."""
    from dataclasses import replace

    counts: dict[str, int] = {}
    for s in sources:
        counts[s.name] = counts.get(s.name, 0) + 1
    out = []
    for s in sources:
        if counts[s.name] > 1:
            if s.path_name is not None:  # MLflow runs: the store's own path instead of the run name
                s = replace(s, name=s.path_name)
            elif s.format != "tensorboard":
                s = replace(s, name=_rel(root, s.files[0]))
        out.append(s)
    return sorted(out, key=lambda s: _natural(s.name))


def origin_dir(source: RunSource) -> Path:
    """The directory whose ORIGIN_FILE describes this run."""
    if source.dir is not None:
        return source.dir
    return source.root if source.root.is_dir() else source.root.parent
