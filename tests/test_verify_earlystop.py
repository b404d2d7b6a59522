"""A rerun of a plain user command is stopped once its train loss has stayed NaN/inf (it trains on
NaN weights otherwise, to the end of its budget); one that recovers, or never diverges, runs on."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from lrdoctor.verify.backends import (
    EARLY_STOP_FILE,
    CommandBackend,
    RerunTask,
    python_command,
    run_rerun,
    task_digest,
)
from lrdoctor.verify.earlystop import NONFINITE_POINTS

# A training loop that prints nothing but its CSV log, one flushed line per step, like a script
# with a csv.writer: the loss falls, then from --nan-from on it is NaN (for --nan-for steps, or for
# good), 20 ms per step.
SCRIPT = '''
import argparse, math, sys, time
ap = argparse.ArgumentParser()
ap.add_argument("--max-steps", type=int)
ap.add_argument("--logdir")
ap.add_argument("--nan-from", type=int, default=10**9)
ap.add_argument("--nan-for", type=int, default=10**9)
a = ap.parse_args()
import pathlib
pathlib.Path(a.logdir).mkdir(parents=True, exist_ok=True)
with open(pathlib.Path(a.logdir) / "metrics.csv", "w") as fh:
    fh.write("step,train_loss,lr\\n")
    for step in range(1, a.max_steps + 1):
        nan = a.nan_from <= step < a.nan_from + a.nan_for
        loss = float("nan") if nan else math.exp(-step / 50) + 0.01 * math.sin(step)
        fh.write(f"{step},{loss},0.1\\n")
        fh.flush()
        time.sleep(0.02)
'''


def _rerun(tmp_path: Path, steps: int, *args: str):
    tmp_path.mkdir(parents=True, exist_ok=True)
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    backend = CommandBackend(python_command(str(script), "--max-steps", "{max_steps}", "--logdir", "{logdir}", *args))
    d = tmp_path / "rerun"
    task = RerunTask(key=str(d), arm="baseline", seed=0, max_steps=steps, patch={}, rerun_dir=str(d), device="cpu",
                     backend=backend, digest=task_digest(backend, {}, steps, 0, "cpu"))
    t0 = time.perf_counter()
    out = run_rerun(task)
    logged = pd.read_csv(Path(task.logdir) / "metrics.csv")
    return out, logged, time.perf_counter() - t0, d


def test_a_rerun_whose_loss_stays_nan_is_stopped_and_counts_as_finished(tmp_path):
    out, logged, seconds, d = _rerun(tmp_path, 1000, "--nan-from", "30")  # 20 s if it ran to its budget
    assert out.ok, out.stderr_tail
    note = (d / EARLY_STOP_FILE).read_text()
    assert "NaN/inf at its last" in note and "train_loss" in note
    last = int(logged["step"].max())
    # stopped within a poll or two of the 10th NaN (50 steps a second), far before the budget
    assert 30 + NONFINITE_POINTS <= last < 300, last
    assert logged["train_loss"].iloc[-1] != logged["train_loss"].iloc[-1]  # its logs end in the NaN
    assert seconds < 12


def test_a_rerun_with_a_few_nan_losses_or_none_runs_to_its_budget(tmp_path):
    out, logged, _, d = _rerun(tmp_path, 120, "--nan-from", "30", "--nan-for", str(NONFINITE_POINTS - 2))
    assert out.ok and not (d / EARLY_STOP_FILE).exists()
    assert int(logged["step"].max()) == 120
    out, logged, _, d = _rerun(tmp_path / "clean", 120)
    assert out.ok and not (d / EARLY_STOP_FILE).exists()
    assert int(logged["step"].max()) == 120  # ran by itself to its budget


def test_stopping_reaches_the_training_a_shell_started(tmp_path):
    """A template like ``sh -c "python train.py ..."``: the stop must reach the shell's child,
    the training itself, or it keeps writing into a rerun already counted as finished."""
    import shlex
    import sys

    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    inner = f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} --max-steps {{max_steps}} --logdir {{logdir}} --nan-from 30"
    backend = CommandBackend(f"sh -c {shlex.quote(inner)}")
    d = tmp_path / "rerun"
    task = RerunTask(key=str(d), arm="baseline", seed=0, max_steps=1000, patch={}, rerun_dir=str(d), device="cpu",
                     backend=backend, digest=task_digest(backend, {}, 1000, 0, "cpu"))
    out = run_rerun(task)
    assert out.ok and (d / EARLY_STOP_FILE).exists(), out.stderr_tail
    log = Path(task.logdir) / "metrics.csv"
    size = log.stat().st_size
    time.sleep(0.5)  # 25 steps' worth of writing, were the training still running
    assert log.stat().st_size == size
