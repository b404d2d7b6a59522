"""The live guard in lrdoctor.Controller (a plain PyTorch loop), and the optional imports."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from lrdoctor.api import diagnose  # noqa: E402
from lrdoctor.verify.controller import Controller  # noqa: E402

JUMP_AT, STEPS, CHECK = 60, 150, 10


def _loop(logdir, jump, live):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2048, 8, generator=g)
    y = x @ torch.randn(8, 1, generator=g) + 0.1 * torch.randn(2048, 1, generator=g)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 if s < JUMP_AT else jump)
    last = math.nan
    with Controller(opt, model, scheduler=sched, logdir=logdir, live=live) as ctl:
        for _ in range(STEPS):
            idx = torch.randint(0, 2048, (16,), generator=g)
            loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
            ctl.step(loss)
            last = float(loss.detach())
            if ctl.should_stop:
                break
    return ctl, last


def _records(logdir):
    return [json.loads(line) for line in (Path(logdir) / "lrdoctor-findings.jsonl").read_text().splitlines()]


def test_stop_within_one_check_interval(tmp_path, torch_one_thread):
    ctl, _ = _loop(tmp_path, 400.0, {"action": "stop", "check_every": CHECK})
    finding, stop = _records(tmp_path)
    assert finding["rule"] == "divergence" and stop["event"] == "stop"
    assert ctl.step_count <= finding["start_step"] + CHECK < STEPS
    assert Path(stop["checkpoint"]).is_file()
    d = diagnose(tmp_path)[0]  # lrdoctor-metrics.jsonl, with the stop as an annotation
    assert any(a.kind == "live_stop" for a in d.run.annotations)


def test_rollback_ends_finite(tmp_path, torch_one_thread):
    # each rollback lowers the peak LR one 1-3-10 grid step (the proposal's 1/3): here from the
    # jumped LR 20 down to a stable one takes four
    ctl, last = _loop(tmp_path, 400.0, {"action": "rollback", "check_every": CHECK, "checkpoint_every": 10,
                                        "skip_after": 3, "max_rollbacks": 6})
    rollbacks = [r for r in _records(tmp_path) if r["event"] == "rollback"]
    assert rollbacks and ctl.step_count == STEPS and math.isfinite(last)
    assert all(r["to_step"] < r["start_step"] - 1 and r["skip_after"] == 3 for r in rollbacks)
    assert ctl.guard.rollbacks == len(rollbacks)


def test_healthy_loop_untouched_and_warn_is_the_default(tmp_path, torch_one_thread):
    ctl, last = _loop(tmp_path, 1.0, "stop")
    assert ctl.step_count == STEPS and math.isfinite(last) and not ctl.guard.records
    _, last = _loop(tmp_path / "warn", 400.0, "warn")  # warn: the divergence is logged, the run goes on
    (rec,) = _records(tmp_path / "warn")
    assert rec["event"] == "finding" and rec["rule"] == "divergence"


def test_import_lrdoctor_never_imports_the_frameworks():
    code = ("import sys, lrdoctor, lrdoctor.live.guard, lrdoctor.live.engine, lrdoctor.integrations; "
            "lrdoctor.Controller; import lrdoctor.cli; "
            "bad = [m for m in ('lightning', 'pytorch_lightning', 'transformers') if m in sys.modules]; "
            "sys.exit(f'imported {bad}' if bad else 0)")
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120)
    assert r.returncode == 0, r.stderr + r.stdout


def test_snapshots_are_independent_copies_that_load_back(torch_one_thread):
    """A rollback guard's snapshot (lrdoctor.live.guard.state_copy) owns its tensors, keeps the
    state dict's version metadata, and loads back into the model and optimizer exactly."""
    import torch

    from lrdoctor.live.guard import state_copy

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, 5)
    x = torch.randn(16, 4)

    def train(k):
        for _ in range(k):
            model(x).pow(2).mean().backward()
            opt.step()
            sched.step()
            opt.zero_grad()

    train(3)
    snap = state_copy({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict()})
    assert snap["model"]._metadata == model.state_dict()._metadata
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train(4)  # the live tensors move on; the snapshot must not
    assert not torch.equal(model.state_dict()["0.weight"], before["0.weight"])
    assert all(torch.equal(snap["model"][k], before[k]) for k in before)
    model.load_state_dict(snap["model"])
    opt.load_state_dict(snap["optimizer"])
    sched.load_state_dict(snap["scheduler"])
    assert all(torch.equal(model.state_dict()[k], before[k]) for k in before)
    assert sched.last_epoch == 3 and opt.state_dict()["state"][0]["step"] == 3
