"""verify's reruns as real processes: hung ones are killed at their timeout, signal deaths become
ERROR verdicts, an interrupted verify leaves no process behind and resumes, and two verify
commands never share an --out."""

from __future__ import annotations

import json
import math
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lrdoctor.cli import main
from lrdoctor.verify.executors import LocalPoolExecutor, RerunKilled, RerunTimeout
from lrdoctor.verify.outdir import out_lock
from tests.proc_helpers import pids, survivors, wait_for

SCRIPT = str(Path(__file__).with_name("verify_misbehave.py"))
PY = shlex.quote(sys.executable)
REPO = str(Path(__file__).resolve().parents[1])

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="process groups are POSIX")


def healthy_run(d: Path, wall_step_s: float | None = None) -> Path:
    """A short healthy CSV log (no findings), optionally with wall times."""
    d.mkdir(parents=True, exist_ok=True)
    head = "step,train_loss" + (",wall_time" if wall_step_s else "")
    rows = [f"{s},{math.exp(-s / 50) + 0.1 + 0.002 * math.sin(s)}" + (f",{1.7e9 + wall_step_s * s}" if wall_step_s else "")
            for s in range(1, 201)]
    (d / "metrics.csv").write_text("\n".join([head, *rows]) + "\n")
    return d


def template(mode: str, tmp: Path) -> str:
    return (f"{PY} {shlex.quote(SCRIPT)} --mode {mode} --pidfile {shlex.quote(str(tmp / 'pids'))} "
            f"--gate {shlex.quote(str(tmp / 'gate'))} --logdir {{logdir}} --seed {{seed}}")


def verify_args(run: Path, out: Path, train: str, *extra: str) -> list[str]:
    return ["verify", str(run), "--patch", "{}", "--proposal", "patch", "--seeds", "3", "--budget-steps", "20",
            "--jobs", "6", "--out", str(out), "--train", train, "--json", *extra]


def only_verdict(text: str) -> dict:
    (v,) = [v for r in json.loads(text)["runs"] for v in r["verdicts"]]
    return v


def test_hung_rerun_killed_at_timeout_with_its_children(tmp_path, capsys):
    run = healthy_run(tmp_path / "run")
    rc = main(verify_args(run, tmp_path / "out", template("hang", tmp_path), "--rerun-timeout", "2"))
    v = only_verdict(capsys.readouterr().out)
    assert rc == 1 and v["verdict"] == "ERROR"
    assert "timed out after 2 s and was killed with its child processes" in v["reason"]
    started = pids(tmp_path)
    assert len(started) == 12  # 6 reruns, each a command and its grandchild
    assert survivors(started) == []
    errors = sorted((tmp_path / "out").rglob("error.log"))
    assert len(errors) == 6 and "timed out" in errors[0].read_text()
    assert not list((tmp_path / "out").rglob("lrdoctor-rerun.done"))


def test_rerun_killed_by_signal_is_an_error_verdict(tmp_path, capsys):
    run = healthy_run(tmp_path / "run")
    rc = main(verify_args(run, tmp_path / "out", template("sigkill", tmp_path)))
    v = only_verdict(capsys.readouterr().out)
    assert rc == 1 and v["verdict"] == "ERROR"
    assert "killed by signal SIGKILL (the kernel's out-of-memory killer" in v["reason"]


def die_by_sigkill(task: int) -> int:
    if task == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return task * 10


def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_pool_survives_a_killed_worker_and_times_out_only_the_slow_task():
    with LocalPoolExecutor(jobs=2) as ex:
        got = dict(ex.run(die_by_sigkill, [0, 1, 2, 3]))
        slow = dict(ex.run(sleep_for, [0.0, 30.0, 0.1], [5.0, 1.0, 5.0]))
    assert got[0] == 0 and got[2] == 20 and got[3] == 30  # the lost worker was replaced
    assert isinstance(got[1], RerunKilled) and "SIGKILL" in str(got[1])
    assert slow[0] == 0.0 and slow[2] == 0.1
    assert isinstance(slow[1], RerunTimeout) and "after 1 s" in str(slow[1])


def test_default_timeout_comes_from_the_run_wall_time(tmp_path):
    from lrdoctor.readers import discover
    from lrdoctor.verify.timeouts import FACTOR, FLOOR_S, rerun_timeout

    (fast,) = discover(str(healthy_run(tmp_path / "fast", wall_step_s=0.05)))
    (slow,) = discover(str(healthy_run(tmp_path / "slow", wall_step_s=30.0)))
    (untimed,) = discover(str(healthy_run(tmp_path / "untimed")))
    assert rerun_timeout(fast, 100, None) == FLOOR_S  # 5 s of training: the start-up floor
    assert rerun_timeout(slow, 100, None) == pytest.approx(FACTOR * 30.0 * 100)
    assert rerun_timeout(untimed, 100, None) is None  # no wall times, no flag: no limit
    assert rerun_timeout(slow, 100, 7) == 7 and rerun_timeout(slow, 100, 0) is None

    # and every rerun planned for the run carries it to the executor
    from lrdoctor.model import Proposal
    from lrdoctor.verify.protocol import VerifyConfig
    from lrdoctor.verify.runner import plan

    noop = Proposal(id="patch", kind="custom", summary="", rationale="", config={}, code="")
    p = plan([(slow, None, [noop])], VerifyConfig(seeds=3, budget_steps=100), tmp_path / "out",
             train=template("ok", tmp_path))
    assert len(p.tasks) == 6 and {t.timeout_s for t in p.tasks.values()} == {FACTOR * 30.0 * 100}


def spawn_verify(run: Path, out: Path, train: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)}
    return subprocess.Popen([sys.executable, "-m", "lrdoctor.cli", *verify_args(run, out, train)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_stopped_verify_leaves_no_process_keeps_finished_reruns_and_resumes(tmp_path, capsys, sig):
    """Seed 0's reruns finish, seeds 1 and 2 hang (each with a grandchild). A second verify on the
    same --out is refused while the first runs. Then the first is stopped: every process it started
    is gone (after SIGKILL too: the workers follow their parent), the finished reruns are kept, and
    (after Ctrl-C) a repeat - the gate removed, the same command line - takes the lock, reuses them
    and runs only the others."""
    run = healthy_run(tmp_path / "run")
    out = tmp_path / "out"
    (tmp_path / "gate").touch()
    train = template("gated", tmp_path)
    proc = spawn_verify(run, out, train)
    try:
        wait_for(lambda: len(pids(tmp_path)) == 8 and len(list(out.rglob("lrdoctor-rerun.done"))) == 2,
                 "4 hung reruns and 2 finished ones")
        rc2 = main(verify_args(run, out, train))
        err = capsys.readouterr().err
        assert rc2 == 2
        assert f"is in use by another 'lrdoctor verify' (pid {proc.pid} on {socket.gethostname()}, started" in err
        assert len(err.strip().splitlines()) == 1 + ("warning" in err)  # the 3-seed warning, then the error
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGKILL: -signal.SIGKILL}[sig], stderr
    if sig != signal.SIGKILL:
        assert stderr.strip().splitlines()[-1].startswith("lrdoctor: interrupted: every rerun was stopped; "
                                                          f"finished reruns under {out} are kept")
        assert "Traceback" not in stderr and "aborted" not in stderr
    assert survivors(pids(tmp_path)) == []
    markers = {p: p.stat().st_mtime_ns for p in out.rglob("lrdoctor-rerun.done")}
    assert len(markers) == 2 and all(p.parent.name == "seed0" for p in markers)
    if sig != signal.SIGINT:
        with out_lock(out):  # the kernel released the lock with its holder, even after SIGKILL
            pass
        return  # the resume is the same whatever stopped the first verify: checked once

    (tmp_path / "gate").unlink()
    assert main(verify_args(run, out, train)) == 0  # the lock went with the first verify
    v = only_verdict(capsys.readouterr().out)
    assert v["verdict"] == "INCONCLUSIVE" and v["seeds"] == [0, 1, 2]
    assert all(p.stat().st_mtime_ns == t for p, t in markers.items())  # not redone
    assert len(list(out.rglob("lrdoctor-rerun.done"))) == 6


def test_marker_write_on_a_full_disk_leaves_no_half_marker(tmp_path, monkeypatch):
    """ENOSPC injected in the writer (fsync, where delayed allocation and NFS report it): the old
    marker stays as it was, no temp file is left, and the error is one line naming the file."""
    from lrdoctor.errors import VerifyError
    from lrdoctor.verify.outdir import write_atomic

    marker = tmp_path / "lrdoctor-rerun.done"
    marker.write_text('{"digest": "old"}\n')

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(VerifyError) as err:
        write_atomic(marker, '{"digest": "new", "ok": true}\n')
    assert str(err.value).startswith(f"cannot write {marker}: No space left on device; free some space")
    assert "\n" not in str(err.value)
    assert marker.read_text() == '{"digest": "old"}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lrdoctor-rerun.done"]


def test_full_disk_stops_verify_with_one_error_and_no_half_marked_reruns(tmp_path, monkeypatch, capsys):
    """The first finished rerun cannot be marked: verify stops there with one line and exit 2, and
    nothing under --out claims a finished rerun."""
    from lrdoctor.verify import entry
    from lrdoctor.verify.executors import SerialExecutor

    monkeypatch.setattr(entry, "make_executor", lambda *a, **k: SerialExecutor())  # in-process: the fault reaches it
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    run = healthy_run(tmp_path / "run")
    rc = main(verify_args(run, tmp_path / "out", template("ok", tmp_path)))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1].startswith("lrdoctor: error: cannot write ") and "No space left on device" in err[-1]
    assert not list((tmp_path / "out").rglob("lrdoctor-rerun.done"))
    assert not list((tmp_path / "out").rglob("*.tmp"))


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_verify_on_a_real_tiny_tmpfs(tmp_path, capsys):
    """A real full disk (a 64 KiB tmpfs as --out): one error line, exit 2, and every marker that exists
    is whole and belongs to a rerun whose logs are complete."""
    out = tmp_path / "out"
    out.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(out)], capture_output=True).returncode:
        pytest.skip("mount not permitted here")
    try:
        run = healthy_run(tmp_path / "run")
        rc = main(verify_args(run, out, template("ok", tmp_path)))
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and "No space left on device" in err[-1] and err[-1].startswith("lrdoctor: error: ")
        for marker in out.rglob("lrdoctor-rerun.done"):
            assert json.loads(marker.read_text())["ok"] is True
            assert (marker.parent / "logs" / "metrics.csv").read_text().count("\n") == 101
    finally:
        subprocess.run(["umount", str(out)], check=False)


def test_rerun_that_runs_out_of_disk_stops_verify_once(tmp_path):
    """A training whose own writes fail with ENOSPC: every other rerun would too, so it is one
    VerifyError (the CLI's one line, exit 2), not an ERROR verdict per rerun."""
    from lrdoctor.errors import VerifyError
    from lrdoctor.verify.backends import CommandBackend, RerunTask, run_rerun

    cmd = f"{PY} -c \"raise OSError(28, 'No space left on device')\""
    d = tmp_path / "seed0"
    task = RerunTask(key=str(d), arm="baseline", seed=0, max_steps=5, patch={}, rerun_dir=str(d), device="cpu",
                     backend=CommandBackend(cmd), digest="x")
    with pytest.raises(VerifyError, match=r"ran out of disk space \(OSError: \[Errno 28\] No space left on device\)"):
        run_rerun(task)
    assert not (d / "lrdoctor-rerun.done").exists()
