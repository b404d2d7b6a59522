"""lrdoctor.Controller: applies the harness's patch in a real torch loop, logs, stops at the budget."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from lrdoctor.verify.controller import METRICS_FILE, Controller, StopTraining, seed_from_env  # noqa: E402
from lrdoctor.verify.env import ENV_CONFIG, ENV_LOGDIR, ENV_MAX_STEPS, ENV_SEED  # noqa: E402

SCRIPT = str(Path(__file__).with_name("verify_train.py"))


def problem(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    return model, x, y


def env(tmp_path, patch, max_steps=20, seed=3):
    return {ENV_CONFIG: json.dumps(patch), ENV_LOGDIR: str(tmp_path / "logs"), ENV_MAX_STEPS: str(max_steps),
            ENV_SEED: str(seed)}


def rows(tmp_path):
    return [json.loads(line) for line in (tmp_path / "logs" / METRICS_FILE).read_text().splitlines()]


def loop(ctl, model, x, y, n=1000):
    for _ in range(n):
        ctl.step(torch.nn.functional.mse_loss(model(x), y))
        if ctl.should_stop:
            break


def test_pass_through_without_env_changes_nothing(tmp_path):
    model, x, y = problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ctl = Controller.from_env(opt, model, env={})
    assert not ctl.active and ctl.optimizer is opt
    ref, _, _ = problem()
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    loop(ctl, model, x, y, n=5)
    for _ in range(5):
        ref_opt.zero_grad()
        torch.nn.functional.mse_loss(ref(x), y).backward()
        ref_opt.step()
    assert ctl.step_count == 5 and not ctl.should_stop
    for a, b in zip(model.parameters(), ref.parameters(), strict=True):
        assert torch.equal(a, b)  # bitwise the same training as the plain loop
    assert not any(tmp_path.iterdir())  # nothing written without a logdir


def test_warmup_then_cosine_lr_scale_and_budget(tmp_path):
    model, x, y = problem()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    patch = {"lr_scale": 0.5, "warmup_steps": 5, "scheduler": {"type": "CosineAnnealingLR", "T_max": 10}}
    ctl = Controller.from_env(opt, model, env=env(tmp_path, patch, max_steps=15))
    loop(ctl, model, x, y)
    ctl.close()
    got = rows(tmp_path)
    lrs = [r["lr"] for r in got]
    assert [r["step"] for r in got] == list(range(1, 16))  # stopped exactly at the budget
    assert lrs[0] == pytest.approx(5e-3 * 0.01)  # warmup starts at start_factor * the scaled peak
    assert lrs[5] == pytest.approx(5e-3)  # peak reached after W steps
    assert lrs[-1] < 5e-3 * 0.1  # cosine decays towards 0 over T_max
    assert all(math.isfinite(r["train_loss"]) and r["grad_norm"] > 0 for r in got)


def test_clipping_logs_norm_before_clip_and_clips(tmp_path):
    model, x, y = problem()
    y = y * 1000  # huge gradients
    opt = torch.optim.SGD(model.parameters(), lr=1e-6)
    ctl = Controller.from_env(opt, model, env=env(tmp_path, {"clip_grad_norm": 0.5}, max_steps=3))
    seen = []
    handle = opt.register_step_pre_hook(lambda o, a, k: seen.append(
        float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])))))
    loop(ctl, model, x, y)
    handle.remove()
    ctl.close()
    logged = [r["grad_norm"] for r in rows(tmp_path)]
    assert all(g > 10 for g in logged)  # the raw norm, before clipping
    assert all(s == pytest.approx(0.5, rel=1e-4) for s in seen)  # what the optimizer saw


def test_weight_decay_optimizer_swap_and_stop_raises(tmp_path):
    model, x, y = problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    patch = {"optimizer": {"type": "AdamW"}, "weight_decay": 0.05, "lr": 3e-3}
    ctl = Controller.from_env(opt, model, env=env(tmp_path, patch, max_steps=2), raise_at_budget=True)
    assert isinstance(ctl.optimizer, torch.optim.AdamW)
    assert ctl.optimizer.param_groups[0]["weight_decay"] == 0.05 and ctl.lr == pytest.approx(3e-3)
    ctl.step(torch.nn.functional.mse_loss(model(x), y))
    with pytest.raises(StopTraining) as exc:
        ctl.step(torch.nn.functional.mse_loss(model(x), y))
    assert exc.value.code == 0 and exc.value.step == 2


def test_seed_from_env_pairs_initialisation():
    assert seed_from_env(default=1, env={ENV_SEED: "7"}) == 7
    a = torch.randn(3)
    seed_from_env(default=1, env={ENV_SEED: "7"})
    assert torch.equal(a, torch.randn(3))
    assert seed_from_env(default=None, env={}) is None


def test_script_under_env_protocol_writes_logs_lrdoctor_reads(tmp_path):
    patch = {"lr": 0.01, "clip_grad_norm": 1.0}
    e = {**env(tmp_path, patch, max_steps=40, seed=1), "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.run([sys.executable, SCRIPT, "--controller", "--max-steps", "500"], env={**os.environ, **e},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = rows(tmp_path)
    assert len(got) == 40 and got[0]["lr"] == pytest.approx(0.01)
    from lrdoctor.readers import discover
    from lrdoctor.roles import RoleView

    fn = getattr(discover, "discover", discover)
    (run,) = list(fn(str(tmp_path / "logs")))
    view = RoleView.of(run)
    assert {"train_loss", "grad_norm", "lr"} <= set(view.roles)
    assert len(view["train_loss"]) == 40


def _trained(tmp_path, name, e=None, n=60, seed=0, **kw):
    model, x, y = problem(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=25, gamma=0.5)
    if e is None:
        ctl = Controller.from_env(opt, model, scheduler=sched, logdir=str(tmp_path / name), env={}, **kw)
    else:
        ctl = Controller.from_env(opt, model, scheduler=sched, env=e)
    torch.manual_seed(99)  # dropout-free model; the RNG state is still saved and restored
    losses = []
    for _ in range(n):
        if ctl.should_stop:
            break
        loss = torch.nn.functional.mse_loss(model(x), y)
        losses.append(float(loss.detach()))
        ctl.step(loss)
    ctl.close()
    return ctl, losses


def test_checkpoints_then_a_forked_rerun_resumes_by_itself(tmp_path):
    from lrdoctor.verify.backends import ENV_RESUME_FROM, ENV_START_STEP

    ctl, orig = _trained(tmp_path, "orig", checkpoint_every=20, keep=2)
    ckdir = tmp_path / "orig" / "lrdoctor-checkpoints"
    assert sorted(p.name for p in ckdir.iterdir()) == ["step-20.pt", "step-40.pt", "step-60.pt"]  # last 2 + window
    e = {**env(tmp_path, {}, max_steps=50, seed=-1), ENV_RESUME_FROM: str(ckdir / "step-20.pt"), ENV_START_STEP: "20"}
    e.pop(ENV_SEED)
    rerun, losses = _trained(tmp_path, "rerun", e)
    assert rerun.start_step == 20 and rerun.step_count == 50  # stopped at the absolute stop step
    assert losses == orig[20:50]  # full-batch loop: the resumed run continues the original exactly
    got = rows(tmp_path)
    assert [r["step"] for r in got] == list(range(21, 51))
    assert got[5]["lr"] == pytest.approx(0.025)  # StepLR state came along: halved at step 25
    e2 = {**e, ENV_CONFIG: json.dumps({"lr_scale": 0.5})}
    rerun2, _ = _trained(tmp_path, "rerun2", e2)
    assert rerun2.optimizer.param_groups[0]["lr"] == pytest.approx(0.5 * 0.025 * 0.5)  # scaled from the fork on


def test_controller_stops_a_rerun_at_the_first_nonfinite_loss(tmp_path):
    model, x, y = problem()
    opt = torch.optim.SGD(model.parameters(), lr=5.0, momentum=0.9)
    ctl = Controller.from_env(opt, model, env=env(tmp_path, {}, max_steps=500))
    loop(ctl, model, x, y * 1e3)
    ctl.close()
    got = rows(tmp_path)
    assert ctl.should_stop and ctl.step_count < 500 and not math.isfinite(got[-1]["train_loss"])
    assert all(math.isfinite(r["train_loss"]) for r in got[:-1])


def test_a_patched_lr_is_the_new_peak_of_the_scripts_own_lr_curve(tmp_path):
    """The patch's lr is the new peak of the curve the script's own scheduler draws: the larger
    of the optimizer's starting LR and the largest LR the original run logged
    (LRDOCTOR_LOGGED_PEAK_LR). A LambdaLR that multiplies 0.05 by 20 from step 5 peaked at 1.0:
    "peak 1 -> 0.05" must peak at 0.05 (before, it reran unchanged); a warmup to 1.0 that died at
    0.319 must peak at the proposed 0.065, not 0.2."""
    from lrdoctor.verify.env import ENV_LOGGED_PEAK_LR

    def run(tag, start_lr, lam, logged_peak, patch_lr):
        model, x, y = problem()
        opt = torch.optim.SGD(model.parameters(), lr=start_lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lam)
        e = env(tmp_path / tag, {"lr": patch_lr}, max_steps=10)
        if logged_peak is not None:
            e[ENV_LOGGED_PEAK_LR] = str(logged_peak)
        ctl = Controller.from_env(opt, model, scheduler=sched, env=e)
        loop(ctl, model, x, y)
        ctl.close()
        return [r["lr"] for r in rows(tmp_path / tag)], ctl.scheduler

    lrs, _ = run("x20", 0.05, lambda s: 20.0 if s >= 5 else 1.0, 1.0, 0.05)
    assert max(lrs) == pytest.approx(0.05) and lrs[0] == pytest.approx(0.0025), lrs
    lrs, _ = run("x20-unknown", 0.05, lambda s: 20.0 if s >= 5 else 1.0, None, 0.05)
    assert max(lrs) == pytest.approx(1.0), lrs  # without the logged peak: against the starting LR, as before
    lrs, sched = run("warmup", 1.0, lambda s: min(1.0, (s + 1) / 100), 0.319, 0.065)
    assert sched.base_lrs == [pytest.approx(0.065)] and lrs[-1] == pytest.approx(0.065 * 10 / 100), lrs
