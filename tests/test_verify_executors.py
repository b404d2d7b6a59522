"""Executors run real reruns (the tiny training script through the command backend)."""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import pytest

from lrdoctor.verify.backends import (
    CommandBackend,
    RerunTask,
    finished,
    python_command,
    run_rerun,
    task_digest,
)
from lrdoctor.verify.executors import LocalPoolExecutor, RerunTimeout, SerialExecutor
from tests.proc_helpers import pids, survivors, wait_for

SCRIPT = str(Path(__file__).with_name("verify_train.py"))
MISBEHAVE = str(Path(__file__).with_name("verify_misbehave.py"))


def torch_threads(_task) -> tuple[int, str]:
    import torch

    return torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS", "")


def boom(task):
    if task == 2:
        raise RuntimeError("task 2 exploded")
    return task * 10


def tasks_for(tmp_path, template, seeds=(0, 1), steps=30):
    backend = CommandBackend(template, base={"lr": 0.05})
    out = []
    for s in seeds:
        d = tmp_path / f"seed{s}"
        out.append(RerunTask(key=str(d), arm="baseline", seed=s, max_steps=steps, patch={}, rerun_dir=str(d),
                             device="cpu", backend=backend, digest=task_digest(backend, {}, steps, s, "cpu")))
    return out


def final_loss(logdir: str) -> float:
    with open(Path(logdir) / "metrics.csv") as fh:
        return float(list(csv.DictReader(fh))[-1]["train_loss"])


def test_local_pool_one_torch_thread_per_worker_and_errors_isolated():
    with LocalPoolExecutor(jobs=2) as ex:
        got = dict(ex.run(torch_threads, [0, 1, 2]))
        assert set(got) == {0, 1, 2}
        assert all(v == (1, "1") for v in got.values())
        res = dict(ex.run(boom, [1, 2, 3]))
    assert res[0] == 10 and res[2] == 30
    assert isinstance(res[1], RuntimeError) and "exploded" in str(res[1])


def test_local_pool_runs_real_reruns_seeded_and_marked(tmp_path):
    template = python_command(SCRIPT, "--lr", "{lr}", "--max-steps", "{max_steps}", "--seed", "{seed}",
                              "--logdir", "{logdir}")
    tasks = tasks_for(tmp_path, template, seeds=(0, 1, 0))
    tasks[2] = RerunTask(**{**tasks[2].__dict__, "key": str(tmp_path / "again"), "rerun_dir": str(tmp_path / "again")})
    with LocalPoolExecutor(jobs=2) as ex:
        out = dict(ex.run(run_rerun, tasks))
    assert all(o.ok for o in out.values()), [o.stderr_tail for o in out.values()]
    losses = [final_loss(o.logdir) for o in (out[0], out[1], out[2])]
    assert losses[0] == losses[2]  # same seed, same numbers: the pairing the protocol relies on
    assert losses[0] != losses[1]
    assert finished(tasks[0]) and finished(tasks[1])


def test_failing_command_reports_stderr_tail(tmp_path):
    template = python_command(SCRIPT, "--fail", "--logdir", "{logdir}")
    (task,) = tasks_for(tmp_path, template, seeds=(0,))
    (res,) = [o for _, o in SerialExecutor().run(run_rerun, [task])]
    assert not res.ok and res.returncode == 3
    assert "out of memory (simulated)" in res.stderr_tail
    assert not finished(task)


def test_ray_executor_and_cli_on_one_local_instance(tmp_path, capsys, monkeypatch):
    """One local Ray instance started here (Ray's start-up is most of the cost) serves both the
    executor itself - seeded reruns, a failing task isolated - and ``lrdoctor verify --executor ray``,
    which joins the running instance and leaves it running."""
    ray = pytest.importorskip("ray")
    import json

    from lrdoctor.cli import main
    from lrdoctor.verify.executors import RayExecutor
    from lrdoctor.workloads.recipes import recipe_config
    from lrdoctor.workloads.training import train

    monkeypatch.setenv("RAY_DISABLE_USAGE_STATS", "1")
    run = tmp_path / "divergence"
    train(recipe_config("divergence", "mlp_regressor", seed=0), run, "jsonl", "cpu")
    template = python_command(SCRIPT, "--lr", "{lr}", "--max-steps", "{max_steps}", "--seed", "{seed}",
                              "--logdir", "{logdir}")
    tasks = tasks_for(tmp_path / "direct", template, seeds=(0, 1))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}})
    try:
        ex = RayExecutor(gpus_per_task=0)
        out = dict(ex.run(run_rerun, tasks))
        res = dict(ex.run(boom, [1, 2]))
        # a hung rerun is killed at its timeout on the Ray node, with its grandchild
        hang = python_command(MISBEHAVE, "--mode", "hang", "--pidfile", str(tmp_path / "pids"), "--logdir", "{logdir}")
        (timed,) = dict(ex.run(run_rerun, tasks_for(tmp_path / "hang", hang, seeds=(0,)), [2.0])).values()
        timed_pids = survivors(pids(tmp_path))
        # an interrupted verify: the generator is dropped while two reruns hang; their Ray tasks are
        # cancelled and take their process groups down
        ok = python_command(MISBEHAVE, "--mode", "ok", "--logdir", "{logdir}")
        gen = ex.run(run_rerun, [*tasks_for(tmp_path / "ok", ok, seeds=(0,)),
                                 *tasks_for(tmp_path / "cancel", hang, seeds=(1, 2))])
        first = next(gen)
        wait_for(lambda: len(pids(tmp_path)) == 6, "two more hung reruns")
        gen.close()
        cancelled_pids = survivors(pids(tmp_path), wait_s=30)
        capsys.readouterr()
        rc = main(["verify", str(run), "--rule", "divergence", "--proposal", "patch", "--patch", '{"lr": 0.1}',
                   "--budget-steps", "150", "--executor", "ray", "--out", str(tmp_path / "v"), "--json"])
        assert ray.is_initialized()  # joined, not started (and so not shut down) by the command
    finally:
        ray.shutdown()
    assert all(o.ok for o in out.values()), [o.stderr_tail for o in out.values()]
    assert final_loss(out[0].logdir) != final_loss(out[1].logdir)
    assert res[0] == 10 and isinstance(res[1], Exception) and "exploded" in str(res[1])
    assert isinstance(timed, RerunTimeout) and "timed out after 2 s" in str(timed)
    assert timed_pids == [] and cancelled_pids == []
    assert first[1].ok
    doc = json.loads(capsys.readouterr().out)  # stdout stays pure JSON with Ray running
    (v,) = [v for r in doc["runs"] for v in r["verdicts"]]
    assert rc == 0 and v["verdict"] == "CONFIRMED", v["reason"]
    assert len(list((tmp_path / "v").rglob("lrdoctor-rerun.done"))) == 10
