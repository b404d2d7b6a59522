"""What is not a plain log file never hangs or exhausts lrdoctor: FIFOs, symlinks to /dev/zero or
to a directory above, unreadable files and directories, huge directories, a file still growing.
Each has one outcome: skipped with a warning naming it (in a tree), or a one-line error (named as
PATH). Commands that could block run in a subprocess with a timeout, so a regression fails the
test instead of hanging the suite."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from tb_writers import write_torch

from lrdoctor.errors import LeftOut
from lrdoctor.readers import discover, discover_with_errors
from lrdoctor.readers.tensorboard import read_event_file

ROOT = Path(__file__).resolve().parents[1]
HANG = 60  # seconds: far beyond any of these commands on an idle tree; reached only by a hang


def _cli(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([*prefix, sys.executable, "-m", "lrdoctor.cli", *args], capture_output=True,
                          text=True, timeout=HANG, env=env, cwd=ROOT)


def _csv(path: Path, n: int = 20) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("step,loss\n" + "".join(f"{i},{1.0 / (i + 1)}\n" for i in range(n)))
    return path


def _one_line_error(proc: subprocess.CompletedProcess, *names: str) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr and lines[-1].startswith("lrdoctor: error:")
    assert all(n in lines[-1] for n in names), lines[-1]
    return lines[-1]


@pytest.fixture
def tree(tmp_path) -> Path:
    _csv(tmp_path / "runs" / "good" / "log.csv")
    return tmp_path / "runs"


def test_fifo_named_like_an_event_file(tree):
    fifo = tree / "bad" / "events.out.tfevents.1700000000.host.1.0"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    # in a tree: skipped with a warning, the other run read
    proc = _cli("inspect", str(tree))
    assert proc.returncode == 0, proc.stderr
    assert f"{fifo}: not a regular file (a named pipe); skipped" in proc.stderr
    assert "good" in proc.stdout
    # named directly: an error, not a read that waits for a writer forever
    _one_line_error(_cli("export", str(fifo), "-o", str(tree.parent / "o.csv")), str(fifo), "named pipe")
    _one_line_error(_cli("inspect", str(fifo), "--format", "tensorboard"), str(fifo))


@pytest.mark.parametrize("name", ["events.out.tfevents.1.host", "log.csv", "trainer_log.jsonl", "run-x.wandb"])
def test_symlink_to_dev_zero(tree, name):
    link = tree / "zero" / name
    link.parent.mkdir()
    link.symlink_to("/dev/zero")
    proc = _cli("export", str(tree), "-o", str(tree.parent / "o.csv"))
    assert proc.returncode == 0, proc.stderr
    assert f"{link}: not a regular file (a character device); skipped" in proc.stderr
    _one_line_error(_cli("inspect", str(link), "--format", "csv"), str(link), "character device")


def test_symlink_loop_to_a_directory_above(tree):
    (tree / "good" / "loop").symlink_to("..")
    (tree / "good" / "self").symlink_to(".")
    mlflow_metrics = tree / "mlruns" / "0" / "r1" / "metrics"
    mlflow_metrics.mkdir(parents=True)
    (mlflow_metrics.parent / "meta.yaml").write_text("run_name: r1\n")
    (mlflow_metrics / "loss").write_text("1000 0.5 0\n1001 0.25 1\n")
    (mlflow_metrics / "up").symlink_to("../..")
    runs = {r.name: r for r in discover(tree)}
    assert sorted(runs) == ["good", "r1"]
    assert runs["r1"].tags == ["loss"] and len(runs["good"].scalars) == 20


def _without_root_privileges() -> tuple[str, ...]:
    """Root reads a mode-000 file anyway: drop the capabilities that let it (CAP_DAC_*) for the
    child, so the permission check is the kernel's own, as for any user."""
    if os.geteuid() != 0:
        return ()
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot make a file unreadable to this process")
    return ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all")


def test_unreadable_file_and_directory(tree):
    prefix = _without_root_privileges()
    secret = _csv(tree / "private" / "log.csv")
    closed = tree / "closed"
    _csv(closed / "inner" / "log.csv")
    secret.chmod(0)
    closed.chmod(0)
    try:
        proc = _cli("inspect", str(tree), prefix=prefix)
        assert proc.returncode == 0, proc.stderr
        assert f"{secret}: cannot read (Permission denied); skipped" in proc.stderr
        assert f"{closed}: cannot list directory (Permission denied); skipped" in proc.stderr
        err = _one_line_error(_cli("export", str(secret), "-o", "-", prefix=prefix), str(secret))
        assert "not readable" in err or "Permission denied" in err
    finally:
        secret.chmod(0o644)
        closed.chmod(0o755)


def test_directory_with_100000_entries(tmp_path):
    big = tmp_path / "big"
    big.mkdir()
    for i in range(100_000):  # empty files: the cost is the listing and one stat/open each
        os.close(os.open(big / f"f{i:06d}.out", os.O_CREAT | os.O_WRONLY, 0o644))
    _csv(big / "zz" / "log.csv")
    runs, errors = discover_with_errors(big)
    assert [r.name for r in runs] == ["zz"]
    # named like logs (.out) but empty: 20 named in notes, the rest counted in one
    assert len(errors) == 21 and all(isinstance(e, LeftOut) for e in errors)
    assert str(errors[-1]) == f"{big}: 99980 more files named like logs not read"


def test_event_file_growing_while_read(tmp_path):
    """A run being written: the reader reads the file as it was when opened (its size then), keeps
    every whole record before the cut and says the last one is incomplete; it never chases the
    writer."""
    src = tmp_path / "src"
    (f,) = write_torch(src, {"loss": [(i, 1.0 / (i + 1)) for i in range(3000)]})
    data = f.read_bytes()
    truth = set(zip(*(read_event_file(f)[0][c].tolist() for c in ("tag", "step", "value")), strict=True))
    live = tmp_path / "run" / f.name
    live.parent.mkdir()
    live.write_bytes(data[:5000])
    stop = threading.Event()

    def writer() -> None:  # appends the same records again and again in odd-sized pieces
        pos, piece = 5000, 997
        with live.open("ab") as fh:
            while not stop.is_set():
                fh.write(data[pos:pos + piece] if pos + piece <= len(data) else data[pos:] + data[:pos + piece - len(data)])
                fh.flush()
                pos = (pos + piece) % len(data)
                time.sleep(0.0005)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    try:
        time.sleep(0.3)
        reads = [read_event_file(live) for _ in range(3)]
    finally:
        stop.set()
        t.join()
    for df, _, notes in reads:
        got = set(zip(df["tag"].tolist(), df["step"].tolist(), df["value"].tolist(), strict=True))
        assert got and got <= truth
        assert {a.kind for a in notes} <= {"truncated", "restart"}
    assert np.all([len(df) for df, _, _ in reads])



def test_unreadable_live_findings_file_is_a_note_naming_it(tree):
    """The records a live callback wrote beside a run are read back as notes; when that file
    cannot be read the run is still diagnosed, with one note naming the file (not an OSError)."""
    prefix = _without_root_privileges()
    records = tree / "good" / "lrdoctor-findings.jsonl"
    records.write_text('{"event": "stop", "at_step": 5, "summary": "stopped at step 5"}\n')
    records.chmod(0)
    try:
        proc = _cli("diagnose", str(tree / "good"), "--json", prefix=prefix)
    finally:
        records.chmod(0o644)
    assert "Traceback" not in proc.stderr and proc.returncode in (0, 1), proc.stderr
    import json

    (run,) = json.loads(proc.stdout)["runs"]
    (note,) = [a for a in run["annotations"] if a["kind"] == "bad_live_record"]
    assert note["path"] == str(records) and "\n" not in note["message"]
    assert note["message"].startswith("cannot read lrdoctor-findings.jsonl: ") and "Permission denied" in note["message"]
