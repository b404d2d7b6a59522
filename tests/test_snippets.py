"""Every proposal snippet is executed against a tiny model + optimizer and stepped; the LR
trajectory (and clipping, optimizer, stopping, skipping) it produces must match its config patch,
and, where the workloads' schedule builder exists, match what that builder makes of the same patch.

The patches are the ones ``propose()`` ships, taken from runs shaped to trigger every kind.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lrdoctor.model import Finding, Run, Severity, make_scalars
from lrdoctor.proposals import KINDS, propose
from lrdoctor.proposals.codegen import snippet
from lrdoctor.roles import RoleView

torch = pytest.importorskip("torch")


pytestmark = pytest.mark.usefixtures("torch_one_thread")

N = 1000  # steps of every shaped run


def _run(name, loss, lr=None, grad=None, val_every=None, hparams=None, val=None) -> RoleView:
    steps = np.arange(1, N + 1)
    parts = [make_scalars("train/loss", steps, None, loss)]
    if lr is not None:
        parts.append(make_scalars("train/lr", steps, None, lr))
    if grad is not None:
        parts.append(make_scalars("train/grad_norm", steps, None, grad))
    if val_every:
        vs = np.arange(val_every, N + 1, val_every)
        parts.append(make_scalars("val/loss", vs, None, val(vs) if val else loss[vs - 1] + 0.05))
    return RoleView.of(Run(name, name, "test", pd.concat(parts, ignore_index=True), hparams=hparams or {}))


def _detected(view, rule) -> Finding:
    from lrdoctor.engine.runner import run_rule
    from lrdoctor.engine.spec import load_rules

    out = run_rule(next(r for r in load_rules() if r.name == rule), view)
    assert isinstance(out, Finding), out
    return out


def _finding(rule, start, end=None, steps=()) -> Finding:
    return Finding(rule, Severity.ERROR, start, end if end is not None else N, tuple(steps), "", {})


def _shaped_proposals():
    rng = np.random.default_rng(0)
    s = np.arange(1, N + 1)
    grad = np.abs(rng.normal(1.0, 0.2, N))
    # Adam run that diverges at 700, spikes once at 300 and overfits after 500.
    loss = np.exp(-s / 300) + 0.1
    loss[699:] = np.linspace(0.3, 40, N - 699)
    g1 = grad.copy()
    g1[689:] *= 20
    adam = _run("adam", loss, lr=np.full(N, 3e-3), grad=g1, val_every=50,
                hparams={"optimizer": "Adam", "betas": [0.9, 0.98], "batch_size": 64, "weight_decay": 0.0},
                val=lambda vs: 0.5 + ((vs - 500) / 500.0) ** 2)
    # SGD run whose loss stalls from 600 at a constant LR.
    stall = np.maximum(np.exp(-s / 150), np.exp(-600 / 150)) + 0.2 + rng.normal(0, 1e-3, N)
    sgd = _run("sgd", stall, lr=np.full(N, 0.1), grad=grad, val_every=40,
               hparams={"optimizer": {"type": "SGD", "momentum": 0.9, "weight_decay": 5e-4}},
               val=lambda vs: 0.4 + ((vs - 400) / 600.0) ** 2)
    # A run that never moves, and one whose LR had decayed (after a 100-step warmup) when it stalled.
    flat = _run("flat", 2.3 + rng.normal(0, 1e-3, N), lr=np.full(N, 1e-5), grad=grad)
    lr4 = np.where(s < 100, 0.05 * s / 100, 0.05)
    lr4[499:] = 5e-4
    decayed = _run("decayed", stall, lr=lr4, grad=grad)
    # No LR anywhere: relative proposals.
    nolr = _run("nolr", loss, grad=g1)
    # A resume without the scheduler state at 600 (the cosine starts again), and a periodic
    # schedule (T_0=100, T_mult=2) whose restarts blow the grad norm up: found by the real rule.
    cos = 3e-3 * 0.5 * (1 + np.cos(np.pi * np.where(s < 600, s, s - 600) / 650))
    resumed = _run("resumed", np.exp(-s / 300) + 0.1, lr=cos, grad=grad)
    edges = np.array([0, 100, 300, 700, 1500])
    k = np.searchsorted(edges, s - 1, side="right") - 1
    phase, length = (s - 1 - edges[k]), np.diff(edges)[k]
    warm = 3e-3 * 0.5 * (1 + np.cos(np.pi * phase / length))
    g2 = grad.copy()
    g2[[305, 705]] *= 30
    periodic = _run("periodic", np.exp(-s / 300) + 0.1, lr=warm, grad=g2)
    cases = [
        (resumed, _detected(resumed, "lr-restart")), (periodic, _detected(periodic, "lr-restart")),
        (adam, _finding("divergence", 700)), (adam, _finding("loss-spike", 300, 300, (300,))),
        (adam, _finding("overfitting", 500)), (adam, _finding("exploding-gradients", 690)),
        (sgd, _finding("plateau", 600)), (sgd, _finding("overfitting", 400)),
        (flat, _finding("plateau", 1)), (decayed, _finding("plateau", 600)),
        (nolr, _finding("divergence", 700)), (sgd, _finding("vanishing-gradients", 600)),
    ]
    out = []
    for view, f in cases:
        for p in propose(f, view):
            out.append(pytest.param(view, p, id=f"{view.run.name}-{p.id}"))
    return out


PROPOSALS = _shaped_proposals()


def test_every_kind_and_schedule_is_exercised():
    kinds = {p.values[1].kind for p in PROPOSALS}
    assert kinds == set(KINDS)
    variants = {p.values[1].id.split(":")[-1] for p in PROPOSALS if p.values[1].kind == "add_decay_schedule"}
    assert variants == {"cosine", "multistep", "reduce_on_plateau", "warm_restarts", "one_cycle"}
    assert any("lr_scale" in p.values[1].config for p in PROPOSALS)
    assert any("warmup_steps" in p.values[1].config and p.values[1].config.get("scheduler") for p in PROPOSALS)


# --------------------------------------------------------------------------- harness


BASE_LR = 0.02


def _model_and_optimizer(kind="Adam"):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    groups = [{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr": BASE_LR / 10}]
    opt = torch.optim.Adam(groups, lr=BASE_LR) if kind == "Adam" else torch.optim.SGD(groups, lr=BASE_LR, momentum=0.9)
    return model, opt


class Trace:
    def __init__(self):
        self.lrs, self.steps, self.skipped, self.clipped = [], [], [], []
        self.stopped_at = self.restored = None
        self.states = {}


def drive(code: str, n: int, *, vals=None, eval_every=None, loss_scale=1.0, opt_kind="Adam"):
    """Exec the snippet and follow the training loop it documents for ``n`` steps (from 1)."""
    model, opt = _model_and_optimizer(opt_kind)
    ns = {"model": model, "optimizer": opt}
    exec(compile(code, "<snippet>", "exec"), ns)
    opt = ns["optimizer"]
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    t = Trace()
    t.ns, t.model, t.opt = ns, model, opt
    for step in range(1, n + 1):
        if "skip_batch" in ns and ns["skip_batch"](step):
            t.skipped.append(step)
            continue
        t.lrs.append(opt.param_groups[0]["lr"])
        t.steps.append(step)
        opt.zero_grad()
        loss = loss_scale * ((model(x) - y) ** 2).mean()
        loss.backward()
        if "clip_gradients" in ns:
            pre = ns["clip_gradients"]()
            post = torch.norm(torch.stack([p.grad.norm() for p in model.parameters()]))
            t.clipped.append((float(pre), float(post)))
        opt.step()
        if "scheduler_step" in ns:
            ns["scheduler_step"]()
        if "on_eval" in ns and eval_every and step % eval_every == 0:
            v = vals(step)
            t.states[step] = {k: p.detach().clone() for k, p in model.state_dict().items()}
            ns["on_eval"](step, v)
        if "should_stop" in ns and ns["should_stop"](step):
            t.stopped_at = step
            if "restore_best" in ns:
                t.restored = ns["restore_best"]()
            break
    t.lrs = np.array(t.lrs)
    return t


def close(a, b, rel=1e-9):
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-15)


def _horizon(cfg) -> int:
    w = int(cfg.get("warmup_steps") or 0)
    s = cfg.get("scheduler") or {}
    if s.get("type") == "CosineAnnealingLR":
        return w + s["T_max"]
    if s.get("type") == "OneCycleLR":
        return w + s["total_steps"]
    return max(w, 1) + 400


# --------------------------------------------------------------------------- the checks


@pytest.mark.parametrize("view,proposal", PROPOSALS)
def test_snippet_follows_its_config(view, proposal):
    cfg, kind = proposal.config, proposal.kind
    variant = proposal.id.split(":")[-1]
    code = proposal.code
    assert code == snippet(cfg, header=proposal.summary, unit="step",
                           eval_every=code and _eval_every(view)), "code is generated from the config"
    start = BASE_LR
    if "lr" in cfg:
        start = cfg["lr"]
    if "lr_scale" in cfg:
        start = BASE_LR * cfg["lr_scale"]

    if kind in ("lower_peak_lr", "raise_lr", "rescale_lr_for_batch", "lower_restart_lr") and "scheduler" not in cfg:
        t = drive(code, 5)
        assert close(t.lrs[0], start)
        assert close(t.opt.param_groups[1]["lr"], start / 10), "group ratios are kept"
        if kind == "rescale_lr_for_batch":
            assert t.ns["BATCH_SIZE"] == cfg["batch_size"]
        return

    if kind == "add_warmup":
        w, sf = cfg["warmup_steps"], cfg["warmup_start_factor"]
        t = drive(code, w + 50)
        assert close(t.lrs[0], BASE_LR * sf)
        assert t.lrs[w - 1] < BASE_LR and close(t.lrs[w], BASE_LR), "reaches the peak exactly at step W"
        assert np.all(np.diff(t.lrs[: w + 1]) > 0)
        assert np.allclose(t.lrs[w:], BASE_LR, rtol=1e-12)
        return

    if kind == "add_decay_schedule":
        _check_schedule(variant, cfg, code, view)
        return

    if kind == "longer_restart_period":
        _check_schedule("warm_restarts", {**cfg, "scheduler": {"eta_min": 0.0, **cfg["scheduler"]}}, code, view)
        return

    if kind == "restore_scheduler_state":
        _check_resume(code)
        return

    if kind == "rewarmup":
        n, sf = cfg["rewarmup_steps"], cfg["warmup_start_factor"]
        model, opt = _model_and_optimizer()
        ns = {"model": model, "optimizer": opt}
        exec(compile(code, "<snippet>", "exec"), ns)
        sched = ns["rewarmup"](torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0))
        lrs = []
        for _ in range(n + 5):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        assert close(lrs[0], BASE_LR * sf) and close(lrs[n], BASE_LR) and np.all(np.diff(lrs[: n + 1]) > 0)
        return

    if kind == "clip_grad_norm":
        t = drive(code, 20, loss_scale=1e4)
        thr = cfg["clip_grad_norm"]
        assert any(pre > thr for pre, _ in t.clipped), "large gradients were there to clip"
        assert all(post <= thr * (1 + 1e-5) for _, post in t.clipped), "threshold applied"
        return

    if kind == "adamw":
        t = drive(code, 3)
        assert isinstance(t.opt, torch.optim.AdamW)
        assert close(t.opt.param_groups[0]["lr"], BASE_LR) and close(t.opt.param_groups[1]["lr"], BASE_LR / 10)
        assert all(g["weight_decay"] == cfg["weight_decay"] for g in t.opt.param_groups)
        assert tuple(t.opt.param_groups[0]["betas"]) == tuple(cfg["optimizer"]["betas"])
        assert sum(p.numel() for g in t.opt.param_groups for p in g["params"]) == 4 * 8 + 8 + 8 + 1
        return

    if kind == "weight_decay":
        t = drive(code, 3, opt_kind="SGD")
        assert all(g["weight_decay"] == cfg["weight_decay"] for g in t.opt.param_groups)
        return

    if kind == "early_stop":
        stop = cfg["early_stop_step"]
        best = max(10, (stop // 2) // 10 * 10)
        t = drive(code, stop + 100, vals=lambda s: 1.0 + abs(s - best) / 100, eval_every=10)
        assert t.stopped_at == stop
        assert t.restored == best
        for k, v in t.model.state_dict().items():
            assert torch.equal(v, t.states[best][k]), "the best checkpoint is restored"
        return

    if kind == "rollback_skip":
        (a, b), *_ = cfg["skip_batches"]
        t = drive(code, b + 20)
        want = [s for lo, hi in cfg["skip_batches"] for s in range(lo, hi + 1) if s <= b + 20]
        assert t.skipped == want
        assert len(t.steps) == b + 20 - len(want)
        return

    raise AssertionError(f"no check for {proposal.id}")


def _check_resume(code, tmp="ckpt.pt"):
    """A checkpoint saved by the snippet's save_checkpoint and loaded by its load_checkpoint into
    a fresh model/optimizer/scheduler continues the LR schedule where it was."""
    import tempfile
    from pathlib import Path

    def fresh():
        model, opt = _model_and_optimizer()
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=50)
        ns = {"model": model, "optimizer": opt, "scheduler": sched}
        exec(compile(code, "<snippet>", "exec"), ns)
        return ns

    a = fresh()
    for _ in range(20):
        a["optimizer"].step()
        a["scheduler"].step()
    with tempfile.TemporaryDirectory() as d:
        path = str(Path(d) / tmp)
        a["save_checkpoint"](path, 20)
        b = fresh()
        assert b["load_checkpoint"](path) == 20
    assert b["scheduler"].last_epoch == 20
    assert close(b["optimizer"].param_groups[0]["lr"], a["optimizer"].param_groups[0]["lr"])
    assert b["optimizer"].param_groups[0]["lr"] < 0.9 * BASE_LR, "not back at the peak"


def _eval_every(view):
    from lrdoctor.proposals.context import build_context

    return build_context(_finding("plateau", 1), view).eval_every


def _check_schedule(variant, cfg, code, view):
    s = cfg["scheduler"]
    w = int(cfg.get("warmup_steps") or 0)
    peak = BASE_LR
    if variant == "cosine":
        T, floor = s["T_max"], s["eta_min"]
        t = drive(code, w + T + 60)
        lrs = t.lrs
        assert close(lrs[w], peak)
        if w:
            assert close(lrs[0], peak * cfg["warmup_start_factor"])
        assert np.all(np.diff(lrs[w : w + T + 1]) <= 1e-15), "cosine only decays up to T_max"
        assert close(lrs[w + T], floor, 1e-6), "ends at its floor"
        assert np.allclose(lrs[w + T :], floor, rtol=1e-9, atol=1e-15), "does not rise past T_max"
        mid = floor + (peak - floor) * 0.5
        assert close(lrs[w + T // 2], mid, 1e-2)
    elif variant == "multistep":
        m1, m2 = s["milestones"]
        t = drive(code, w + m2 + 5)
        assert close(t.lrs[w + m1 - 1], peak) and close(t.lrs[w + m1], peak * s["gamma"])
        assert close(t.lrs[w + m2], peak * s["gamma"] ** 2)
    elif variant == "reduce_on_plateau":
        every, p = _eval_every(view) or 1, s["patience"]
        assert f"EVAL_EVERY = {every}" in code
        # Val loss improves for 3 evals, then stalls: the cut comes after `patience` more
        # non-improving evals (torch cuts when bad evals exceed patience), counted in evals.
        t = drive(code, every * (p + 10), eval_every=every,
                  vals=lambda st: 1.0 - 0.1 * min(st // every, 3))
        first_cut = int(np.argmax(t.lrs < peak)) + 1  # the step whose LR is the first reduced one
        assert first_cut == every * (3 + p + 1) + 1
        assert close(t.lrs[first_cut - 1], max(peak * s["factor"], s["min_lr"]))
        assert t.lrs.min() >= s["min_lr"] * (1 - 1e-9)
    elif variant == "warm_restarts":
        t0 = s["T_0"]
        t = drive(code, w + 3 * t0 + 5)
        lrs = t.lrs
        assert close(lrs[w], peak)
        assert lrs[w + t0 - 1] < 0.05 * peak + s["eta_min"] and close(lrs[w + t0], peak), "restart at T_0"
        assert close(lrs[w + 3 * t0], peak), "second restart after T_0*T_mult more"
    elif variant == "one_cycle":
        n, mx = s["total_steps"], s["max_lr"]
        t = drive(code, n + 60)
        lrs = t.lrs
        assert close(lrs[0], mx / s["div_factor"])
        assert close(lrs.max(), mx, 1e-6) and abs(int(np.argmax(lrs)) - (s["pct_start"] * n - 1)) <= 1
        final = mx / s["div_factor"] / s["final_div_factor"]
        assert close(lrs[n - 1], final, 1e-6), "anneals to its final LR at total_steps"
        assert np.allclose(lrs[n - 1 :], final, rtol=1e-9), "not stepped past total_steps"
    else:
        raise AssertionError(variant)


# --------------------------------------------------------------------------- vs the workloads


def _workload_builders():
    try:
        from lrdoctor.workloads.config import WorkloadConfig
        from lrdoctor.workloads.schedules import build_optimizer, build_scheduler
    except ImportError:
        return None
    return WorkloadConfig, build_optimizer, build_scheduler


LR_PROPOSALS = [p for p in PROPOSALS
                if {"lr", "lr_scale", "warmup_steps", "scheduler", "optimizer", "weight_decay"} & set(p.values[1].config)]


@pytest.mark.parametrize("view,proposal", LR_PROPOSALS)
def test_snippet_matches_workload_schedule_builder(view, proposal):
    """The snippet and the verification harness (WorkloadConfig.apply_patch + build_scheduler)
    produce the same LR trajectory, step for step, for the same patch."""
    builders = _workload_builders()
    if builders is None:
        pytest.skip("lrdoctor.workloads.schedules not available")
    WorkloadConfig, build_optimizer, build_scheduler = builders
    cfg = proposal.config
    n = _horizon(cfg) + 30
    every = _eval_every(view) or 10
    plateau = (cfg.get("scheduler") or {}).get("type") == "ReduceLROnPlateau"

    def vals(st):
        return 1.0 - 0.1 * min(st // every, 3)

    t = drive(proposal.code, n, eval_every=every if plateau else None, vals=vals)

    wc = WorkloadConfig(lr=BASE_LR, max_steps=n, optimizer={"type": "Adam"}).apply_patch(cfg)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = build_optimizer(model.parameters(), wc)
    sched = build_scheduler(opt, wc)
    ref = []
    for step in range(1, n + 1):
        ref.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched is None:
            continue
        if plateau:
            if step % every == 0:
                sched.step(vals(step))
        else:
            sched.step()
    assert np.allclose(t.lrs, ref, rtol=1e-9, atol=1e-15)
    if "optimizer" in cfg:
        assert type(opt) is type(t.opt)
    if "weight_decay" in cfg:
        assert opt.param_groups[0]["weight_decay"] == t.opt.param_groups[0]["weight_decay"]


# --------------------------------------------------------------------------- epoch-axis runs


def _keras_view(tmp_path, hparams=None) -> RoleView:
    """A Keras CSVLogger log (epochs from 0) of 40 epochs at a constant LR: the loss stalls from
    epoch 12 and the val loss is lowest at epoch 9, then rises."""
    from reader_fixtures import write_keras_csv

    from lrdoctor.readers import discover

    rng = np.random.default_rng(1)
    rows = [{"loss": float(max(np.exp(-e / 4), np.exp(-3)) + 0.1 + rng.normal(0, 1e-4)), "learning_rate": 1e-3,
             "val_loss": 0.4 + 0.01 * (e - 9) ** 2} for e in range(40)]
    write_keras_csv(tmp_path / "keras" / "training_log.csv", rows)
    (run,) = discover(tmp_path / "keras")
    assert run.step_axis == "epoch"
    if hparams:
        run = Run(run.name, run.source, run.format, run.scalars, hparams=hparams, step_axis="epoch")
    return RoleView.of(run)


def _epoch_proposals(view):
    out = {}
    for f in (_finding("plateau", 12, 39), _finding("overfitting", 10, 39)):
        out.update({p.id: p for p in propose(f, view)})
    return out


def drive_epochs(code: str, epochs: int, batches: int, *, vals=None):
    """Exec the snippet and follow the epoch loop it documents: optimizer steps inside, the
    scheduler stepped where its comment says, validation and the stop check after each epoch."""
    model, opt = _model_and_optimizer()
    ns = {"model": model, "optimizer": opt}
    exec(compile(code, "<snippet>", "exec"), ns)
    opt = ns["optimizer"]
    per_step = "scheduler_step()  # once per optimizer step" in code
    per_epoch = "scheduler_step()  # once per epoch" in code
    assert not (per_step and per_epoch)
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    t = Trace()
    t.epoch_lrs, t.model = [], model
    step = 0
    for epoch in range(epochs):
        t.epoch_lrs.append(opt.param_groups[0]["lr"])
        for _ in range(batches):
            t.lrs.append(opt.param_groups[0]["lr"])
            opt.zero_grad()
            ((model(x) - y) ** 2).mean().backward()
            opt.step()
            step += 1
            if per_step:
                ns["scheduler_step"]()
        if per_epoch:
            ns["scheduler_step"]()
        if "on_eval" in ns:
            t.states[epoch] = {k: p.detach().clone() for k, p in model.state_dict().items()}
            ns["on_eval"](epoch, vals(epoch))
        if "should_stop" in ns and ns["should_stop"](epoch + 1, step):
            t.stopped_at = epoch + 1
            if "restore_best" in ns:
                t.restored = ns["restore_best"]()
            break
    t.epoch_lrs, t.lrs = np.array(t.epoch_lrs), np.array(t.lrs)
    return t


def test_epoch_snippets_without_steps_per_epoch_step_per_epoch(tmp_path):
    view = _keras_view(tmp_path)
    props = _epoch_proposals(view)
    assert {"plateau:add_decay_schedule:cosine", "overfitting:early_stop"} <= set(props)
    for p in props.values():
        assert "once per optimizer step" not in p.code, p.id  # counts are epochs
        assert "enumerate(loader" not in p.code, p.id
    cos = props["plateau:add_decay_schedule:cosine"].config["scheduler"]
    t = drive_epochs(props["plateau:add_decay_schedule:cosine"].code, cos["T_max"] + 5, 3)
    assert close(t.epoch_lrs[0], BASE_LR) and close(t.epoch_lrs[cos["T_max"]], cos["eta_min"], 1e-6)
    assert np.all(np.ptp(t.lrs.reshape(-1, 3), axis=1) == 0), "the LR is constant within an epoch"
    ms = props["plateau:add_decay_schedule:multistep"].config["scheduler"]
    t = drive_epochs(props["plateau:add_decay_schedule:multistep"].code, ms["milestones"][1] + 2, 2)
    m1 = ms["milestones"][0]
    assert close(t.epoch_lrs[m1 - 1], BASE_LR) and close(t.epoch_lrs[m1], BASE_LR * ms["gamma"])
    rop = props["plateau:add_decay_schedule:reduce_on_plateau"].config["scheduler"]
    t = drive_epochs(props["plateau:add_decay_schedule:reduce_on_plateau"].code, rop["patience"] + 8, 2,
                     vals=lambda e: 1.0 - 0.1 * min(e, 3))
    # improves for epochs 0..3, then torch cuts after `patience` more non-improving evals (epochs)
    assert int(np.argmax(t.epoch_lrs < BASE_LR)) == 3 + rop["patience"] + 2


def test_epoch_early_stop_snippet_stops_after_the_right_epoch_and_restores_best(tmp_path):
    view = _keras_view(tmp_path)
    es = _epoch_proposals(view)["overfitting:early_stop"]
    n = es.config["early_stop_epoch"]
    assert n == 9 + 2 + 1  # best at the log's epoch 9 (0-based), two evals of margin
    log_val = dict(zip(view["val_loss"].steps.tolist(), view["val_loss"].values.tolist(), strict=True))
    t = drive_epochs(es.code, 40, 4, vals=lambda e: log_val[e])
    assert t.stopped_at == n, "stops after 12 epochs, not after 12 batches"
    assert len(t.lrs) == n * 4
    assert t.restored == 9
    for k, v in t.model.state_dict().items():
        assert torch.equal(v, t.states[9][k]), "the best epoch's weights are restored"


def test_epoch_snippets_with_steps_per_epoch_step_per_optimizer_step(tmp_path):
    spe = 5
    view = _keras_view(tmp_path, {"steps_per_epoch": spe})
    props = _epoch_proposals(view)
    cos = props["plateau:add_decay_schedule:cosine"]
    T = cos.config["scheduler"]["T_max"]
    assert T == 40 * spe and "scheduler_step()  # once per optimizer step" in cos.code
    t = drive_epochs(cos.code, 41, spe)
    assert close(t.lrs[0], BASE_LR) and close(t.lrs[T], cos.config["scheduler"]["eta_min"], 1e-6)
    assert t.lrs[1] < t.lrs[0], "decays within the first epoch"
    es = props["overfitting:early_stop"]
    assert es.config == {"early_stop_step": 12 * spe}
    log_val = dict(zip(view["val_loss"].steps.tolist(), view["val_loss"].values.tolist(), strict=True))
    t = drive_epochs(es.code, 40, spe, vals=lambda e: log_val[e])
    assert t.stopped_at == 12 and t.restored == 9


def test_epoch_warmup_snippet_counts_epochs(tmp_path):
    view = _keras_view(tmp_path)
    warm = {p.kind: p for p in propose(_finding("divergence", 3, 39), view)}["add_warmup"]
    w = warm.config["warmup_steps"]
    assert f"WARMUP_EPOCHS = {w}" in warm.code and "WARMUP_STEPS" not in warm.code
    t = drive_epochs(warm.code, w + 3, 2)
    assert close(t.epoch_lrs[0], BASE_LR * warm.config["warmup_start_factor"])
    assert t.epoch_lrs[w - 1] < BASE_LR and close(t.epoch_lrs[w], BASE_LR), "peak reached at epoch W"


def test_every_sample_log_finding_has_runnable_proposals():
    """Every finding on sample_logs/ carries a proposal with numbers, a patch and code that runs
    with only ``model`` and ``optimizer`` in scope (each hook called once)."""
    from pathlib import Path

    from lrdoctor.engine.runner import run_rules
    from lrdoctor.engine.spec import load_rules
    from lrdoctor.readers import discover

    root = Path(__file__).resolve().parents[1] / "sample_logs"
    if not root.is_dir():
        pytest.skip("sample_logs absent")
    rules, seen = load_rules(), 0
    for run in discover(root):
        for f in run_rules(RoleView.of(run), rules, proposer=propose).findings:
            assert f.proposals, f"{run.name}: {f.rule} has no proposal"
            for p in f.proposals:
                seen += 1
                assert p.config and any(c.isdigit() for c in p.summary), p.id
                model, opt = _model_and_optimizer()
                ns = {"model": model, "optimizer": opt}
                exec(compile(p.code, p.id, "exec"), ns)
                ns["optimizer"].step()
                for hook, args in (("scheduler_step", ()), ("clip_gradients", ()), ("on_eval", (1, 0.5)),
                                   ("should_stop", (1,)), ("restore_best", ()), ("skip_batch", (1,))):
                    if hook in ns:
                        ns[hook](*args)
    assert seen >= 5


# --------------------------------------------------------------------------- stated steps vs the snippet


def _stated(text: str, pattern: str) -> list[int]:
    import re

    m = re.search(pattern, text)
    assert m, f"{pattern!r} not in {text!r}"
    return [int(g) for g in m.groups()]


def _first_step(t, pred, after: int = 0) -> int:
    """The (1-based) step of the snippet's loop, past step ``after`` (the warmup), first trained
    at an LR satisfying ``pred``."""
    hit = np.flatnonzero(pred(t.lrs) & (np.asarray(t.steps) > after))
    assert hit.size, "never happens"
    return int(t.steps[hit[0]])


def _warmed_stall_view():
    """SGD at a constant 0.1 after a 20-step linear warmup, the loss stalling from step 500."""
    rng = np.random.default_rng(1)
    s = np.arange(1, N + 1)
    lr = np.where(s <= 20, 0.1 * s / 20, 0.1)
    loss = np.maximum(np.exp(-s / 120), np.exp(-500 / 120)) + 0.2 + rng.normal(0, 1e-3, N)
    return _run("warmed", loss, lr=lr, grad=np.abs(rng.normal(1.0, 0.2, N)),
                hparams={"optimizer": {"type": "SGD", "momentum": 0.9}})


def _decay_proposals_with_warmup():
    view = _warmed_stall_view()
    out = {}
    for rule in ("no-lr-decay", "plateau"):
        for p in propose(_finding(rule, 500), view):
            if p.kind == "add_decay_schedule":
                out.setdefault(p.id.split(":")[-1], p)
    return out


def test_multistep_summary_states_the_steps_the_lr_drops_at_after_warmup():
    """Milestones count the scheduler's own steps (after warmup); the summary states the run's
    steps, and the snippet drops the LR exactly there."""
    p = _decay_proposals_with_warmup()["multistep"]
    w = p.config["warmup_steps"]
    m1, m2 = p.config["scheduler"]["milestones"]
    assert w >= 15, "the run's warmup is kept"
    a, b = _stated(p.summary, r"from steps (\d+) and (\d+)")
    assert (a, b) == (1 + w + m1, 1 + w + m2), "absolute steps, the warmup counted in"
    t = drive(p.code, b + 5, opt_kind="SGD")
    assert _first_step(t, lambda x: x < BASE_LR * 0.5, w) == a
    assert _first_step(t, lambda x: x < BASE_LR * 0.05, w) == b
    assert f"{m1} and {m2}" in p.rationale and "exclude" in p.rationale


def test_schedule_summaries_state_the_steps_the_snippet_acts_at():
    props = {f"warmed-{k}": p for k, p in _decay_proposals_with_warmup().items()}
    props |= {pr.values[1].id + "@" + pr.values[0].run.name: pr.values[1] for pr in PROPOSALS
              if pr.values[1].kind == "add_decay_schedule"}
    checked = set()
    for name, p in props.items():
        s, variant = p.config["scheduler"], p.id.split(":")[-1]
        w = int(p.config.get("warmup_steps") or 0)
        if variant == "warm_restarts":
            a, b = _stated(p.summary, r"restarts at steps (\d+) and (\d+)")
            t = drive(p.code, b + 5)
            rises = [int(t.steps[i]) for i in np.flatnonzero(np.diff(t.lrs) > 0.5 * BASE_LR) + 1]
            assert rises[:2] == [a, b], name
        elif variant == "cosine":
            a, b = _stated(p.summary, r"from step (\d+).*reaching the floor at step (\d+)")
            t = drive(p.code, b + 5)
            assert _first_step(t, lambda x: np.isclose(x, BASE_LR, rtol=1e-9)) == a, name
            floor = s["eta_min"]
            assert _first_step(t, lambda x, f=floor: np.isclose(x, f, rtol=1e-6), w) == b, name
        elif variant == "one_cycle":
            (peak,) = _stated(p.rationale, r"peaks at step (\d+)")
            t = drive(p.code, s["total_steps"])
            assert abs(int(t.steps[int(np.argmax(t.lrs))]) - peak) <= 1, name
        elif variant == "multistep":
            a, _ = _stated(p.summary, r"from steps (\d+) and (\d+)")
            t = drive(p.code, a + 2)
            assert _first_step(t, lambda x: x < BASE_LR * 0.5, w) == a, name
        else:
            continue
        checked.add((variant, bool(w)))
    assert {("multistep", True), ("warm_restarts", True), ("cosine", True), ("one_cycle", False)} <= checked
