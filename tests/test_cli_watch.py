"""``lrdoctor watch``: a TensorBoard run written slowly by another process is diagnosed while
that process is still writing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from lrdoctor.cli import main

ROOT = Path(__file__).resolve().parents[1]

WRITER = r"""
import math, sys, time
from torch.utils.tensorboard import SummaryWriter
w = SummaryWriter(sys.argv[1])
for step in range(400):
    # a healthy decay, then the LR "diverges" at step 120: loss x30 and climbing, then inf
    loss = 2.0 * math.exp(-step / 40) + 0.2 if step < 120 else (6.0 * 1.05 ** (step - 120) if step < 160 else math.inf)
    w.add_scalar("train/loss", loss, step)
    w.add_scalar("train/lr", 0.01 if step < 120 else 1.0, step)
    w.flush()
    time.sleep(0.01 if step < 150 else 0.05)
w.close()
"""


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_watch_reports_the_divergence_while_the_writer_still_runs(tmp_path):
    logdir = tmp_path / "run"
    logdir.mkdir()
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(logdir)], env=_env())
    try:
        watch = subprocess.run(
            [sys.executable, "-m", "lrdoctor.cli", "watch", str(tmp_path), "--json", "--exit-on", "error",
             "--interval", "0.2", "--idle", "60"],
            capture_output=True, text=True, timeout=120, env=_env())
        still_writing = writer.poll() is None
    finally:
        writer.kill()
        writer.wait()
    assert watch.returncode == 1, watch.stderr
    events = [json.loads(line) for line in watch.stdout.splitlines()]
    assert events[-1]["rule"] == "divergence" and events[-1]["event"] == "new"
    assert events[-1]["severity"] == "error" and 115 <= events[-1]["start_step"] <= 170
    assert events[-1]["proposals"], "a finding comes with its proposals"
    assert still_writing, "watch must report before the writer is done"


def test_watch_ends_when_idle_with_the_offline_findings(tmp_path, capsys):
    t0 = time.monotonic()
    code = main(["watch", str(ROOT / "sample_logs" / "loss-spike-cnn-tensorboardx"), "--idle", "0.3",
                 "--interval", "0.1"])
    out = capsys.readouterr().out
    assert code == 0 and time.monotonic() - t0 < 30
    assert "loss-spike" in out and out.count("LRD002") == 1 and "->" in out


def test_watch_bad_input_is_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "metrics.csv"
    bad.write_text("step,loss\n1,0.5\n")
    code = main(["watch", str(tmp_path), "--idle", "0", "--format", "nope"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "nope" in err


def test_watch_waits_for_an_empty_file_and_says_when_no_run_ever_appeared(tmp_path, capsys):
    """A training that has just created its log (empty) is waited for, not an error; a path where
    no run appears before --idle is exit 2 naming it (a job script must not take a wrong path for
    a clean run)."""
    import threading

    log = tmp_path / "metrics.csv"
    log.write_text("")

    def write_later():
        time.sleep(0.5)
        log.write_text("step,train_loss\n" + "".join(f"{s},{1.0 / (s + 1)}\n" for s in range(40)))

    t = threading.Thread(target=write_later)
    t.start()
    code = main(["watch", str(log), "--idle", "1.5", "--interval", "0.1"])
    t.join()
    assert code == 0, capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(["watch", str(empty), "--idle", "0.3", "--interval", "0.1"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no run appeared" in err and str(empty) in err
