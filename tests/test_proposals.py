"""Proposals computed from real runs: tiny real trainings logged with torch's SummaryWriter, read
back from the event files, and findings placed where the logged curves put them. The checks are
that each proposal's numbers come from the run (the LR in force at the onset, the stable
stretch's grad norms, the best-val step, the eval cadence) and, where physics allows, that the
proposed change really fixes the training it came from.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from lrdoctor.model import Finding, Run, Severity, make_scalars
from lrdoctor.proposals import propose
from lrdoctor.proposals.common import fmt, round_sig
from lrdoctor.readers import discover
from lrdoctor.roles import RoleView

torch = pytest.importorskip("torch")


pytestmark = pytest.mark.usefixtures("torch_one_thread")


# --------------------------------------------------------------------------- real runs


def regression(steps, opt="SGD", lr=lambda s: 0.01, bad_steps=(), n=256, feats=8, scale=3.0, seed=0,
               batch=None, clip=None):
    """Linear regression on inputs of std ``scale``: the MSE Hessian is about 2*scale^2*I, so plain
    gradient descent is stable only below lr ~ 1/scale^2 (1/9 at scale 3; the sample covariance's
    largest eigenvalue puts the true bound near 0.08 for 256 points)."""
    g = torch.Generator().manual_seed(seed)
    w_true = torch.randn(feats, 1, generator=g)
    X = torch.randn(n, feats, generator=g) * scale
    Y = X @ w_true + 0.1 * torch.randn(n, 1, generator=g)
    torch.manual_seed(seed)
    model = torch.nn.Linear(feats, 1)
    o = (torch.optim.SGD if opt == "SGD" else torch.optim.Adam)(model.parameters(), lr=lr(1))
    pts = {"train/loss": [], "train/lr": [], "train/grad_norm": []}
    for step in range(1, steps + 1):
        for group in o.param_groups:
            group["lr"] = lr(step)
        idx = torch.arange(n) if batch is None else torch.randint(0, n, (batch,), generator=g)
        x, y = X[idx], Y[idx]
        if step in bad_steps:
            x = x * 50  # a corrupt batch
        o.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip or math.inf)
        o.step()
        pts["train/loss"].append((step, loss.item()))
        pts["train/lr"].append((step, lr(step)))
        pts["train/grad_norm"].append((step, norm.item()))
    return pts


def overfitting_run(steps=400, lr=0.01, eval_every=10, seed=0):
    """Random Fourier features fit to 16 noisy points: val loss bottoms out, then rises."""
    g = torch.Generator().manual_seed(seed)
    d = 200
    W, b = torch.randn(1, d, generator=g) * 3, torch.rand(d, generator=g) * 6.28

    def feat(x):
        return torch.cos(x @ W + b) * (2.0 / d) ** 0.5

    x = torch.rand(16, 1, generator=g) * 6 - 3
    y = torch.sin(x) + 0.3 * torch.randn(16, 1, generator=g)
    xv = torch.rand(400, 1, generator=g) * 6 - 3
    F, Fv, yv = feat(x), feat(xv), torch.sin(xv)
    torch.manual_seed(seed)
    m = torch.nn.Linear(d, 1)
    o = torch.optim.Adam(m.parameters(), lr=lr, betas=(0.9, 0.98))
    pts = {"train/loss": [], "val/loss": [], "train/lr": []}
    for s in range(1, steps + 1):
        o.zero_grad()
        loss = ((m(F) - y) ** 2).mean()
        loss.backward()
        o.step()
        pts["train/loss"].append((s, loss.item()))
        pts["train/lr"].append((s, lr))
        if s % eval_every == 0:
            with torch.no_grad():
                pts["val/loss"].append((s, ((m(Fv) - yv) ** 2).mean().item()))
    return pts


def logged_run(tmp_path, name, points, hparams=None, drop=()) -> RoleView:
    """Write the points with torch's SummaryWriter, read the event file back with lrdoctor's reader."""
    from torch.utils.tensorboard import SummaryWriter

    logdir = tmp_path / name
    with SummaryWriter(log_dir=str(logdir)) as w:
        for tag, pts in points.items():
            if tag in drop:
                continue
            for step, value in pts:
                w.add_scalar(tag, value, step)
    (run,) = discover(logdir)
    return RoleView.of(dataclasses.replace(run, hparams=hparams or {}))


def arr(view, role):
    s = view[role]
    return s.steps, s.values


def finding(rule, start, end=None, steps=(), evidence=None) -> Finding:
    return Finding(rule, Severity.ERROR, start, end, tuple(steps), "", evidence or {})


def by_kind(props):
    return {p.kind: p for p in props}


# --------------------------------------------------------------------------- divergence


@pytest.fixture(scope="module")
def diverging(tmp_path_factory):
    """Full-batch GD whose LR ramps linearly past the stability bound 1/9."""
    pts = regression(300, lr=lambda s: 0.3 * s / 300)
    return logged_run(tmp_path_factory.mktemp("div"), "div", pts, hparams={"optimizer": "SGD"})


def divergence_onset(view) -> int:
    steps, loss = arr(view, "train_loss")
    best = np.minimum.accumulate(np.where(np.isfinite(loss), loss, np.inf))
    bad = ~np.isfinite(loss) | (loss > 3 * best)
    return int(steps[np.argmax(bad)])


def test_divergence_lower_lr_from_the_lr_in_force_at_onset(diverging):
    onset = divergence_onset(diverging)
    steps, lr = arr(diverging, "lr")
    lr_on = float(lr[steps == onset][0])
    assert lr_on > 1 / 9, "the run diverged because its LR crossed the stability bound"
    props = propose(finding("divergence", onset), diverging)
    assert [p.rank for p in props] == list(range(1, len(props) + 1))
    assert props[0].kind == "lower_peak_lr"
    new = props[0].config["lr"]
    assert new <= lr_on / 3 * 1.0001
    # the ramp was still stable at the end of the stable stretch: the cut never goes above that LR
    assert new < 1 / 9
    assert f"{lr_on:.3g}" in props[0].rationale and str(onset) in props[0].rationale
    assert "→" in props[0].summary


def test_divergence_fix_actually_trains(diverging):
    """The proposed peak LR, held constant for the whole run, converges where the ramp diverged."""
    onset = divergence_onset(diverging)
    new = propose(finding("divergence", onset), diverging)[0].config["lr"]
    pts = regression(300, lr=lambda s: new)
    loss = np.array([v for _, v in pts["train/loss"]])
    assert np.all(np.isfinite(loss)) and loss[-1] < 0.1 * loss[0]


def test_divergence_clip_threshold_is_the_stable_p90(diverging):
    onset = divergence_onset(diverging)
    props = by_kind(propose(finding("divergence", onset), diverging))
    steps, g = arr(diverging, "grad_norm")
    first = int(steps.min())
    span = onset - first
    window = (steps >= first + span // 10) & (steps <= onset - max(span // 20, 1)) & np.isfinite(g)
    want = round_sig(float(np.percentile(g[window], 90)), 2)
    assert props["clip_grad_norm"].config == {"clip_grad_norm": want}
    assert "p90" in props["clip_grad_norm"].summary


def test_divergence_during_a_rising_lr_gets_no_warmup(diverging):
    """The logged LR was still ramping up at the onset: a longer ramp to the same peak only delays
    the divergence, so no warmup is proposed (the peak is what must come down)."""
    onset = divergence_onset(diverging)
    kinds = [p.kind for p in propose(finding("divergence", onset), diverging)]
    assert "add_warmup" not in kinds and kinds[0] == "lower_peak_lr"


def test_early_divergence_at_constant_lr_gets_warmup(tmp_path):
    pts = regression(300, lr=lambda s: 0.1)  # just above this problem's true bound 2/lambda_max
    view = logged_run(tmp_path, "const", pts, hparams={"optimizer": "SGD"})
    onset = divergence_onset(view)
    assert onset < 60
    props = by_kind(propose(finding("divergence", onset), view))
    w = props["add_warmup"].config
    assert w == {"warmup_steps": 2 * (onset - 1), "warmup_start_factor": 0.01}
    assert f"twice the {onset - 1} steps to the onset" in props["add_warmup"].rationale
    assert props["lower_peak_lr"].config == {"lr": 0.033}


def test_lr_from_hparams_when_not_logged(diverging, tmp_path):
    onset = divergence_onset(diverging)
    pts = regression(300, lr=lambda s: 0.3 * s / 300)
    view = logged_run(tmp_path, "nolr", pts, drop=("train/lr",),
                      hparams={"optimizer": {"type": "sgd", "lr": 0.3}, "batch_size": 256})
    assert not view.has("lr")
    low = by_kind(propose(finding("divergence", onset), view))["lower_peak_lr"]
    assert low.config == {"lr": 0.1}
    assert "hparams 'optimizer.lr'" in low.rationale and "not logged" in low.rationale


def test_lr_unknown_gives_relative_change_and_says_so(diverging, tmp_path):
    onset = divergence_onset(diverging)
    pts = regression(300, lr=lambda s: 0.3 * s / 300)
    view = logged_run(tmp_path, "nolr2", pts, drop=("train/lr",))
    props = by_kind(propose(finding("divergence", onset), view))
    low = props["lower_peak_lr"]
    assert set(low.config) == {"lr_scale"} and 0 < low.config["lr_scale"] < 1
    assert "LR not logged and not in hparams" in low.summary
    assert "assumed" in low.rationale
    assert "rescale_lr_for_batch" not in props


# --------------------------------------------------------------------------- loss spike


@pytest.fixture(scope="module")
def spiking(tmp_path_factory):
    pts = regression(400, opt="Adam", lr=lambda s: 0.01, bad_steps=(250,), batch=32)
    return logged_run(tmp_path_factory.mktemp("spike"), "spike", pts,
                      hparams={"optimizer": "Adam", "betas": "(0.9, 0.999)", "batch_size": 32})


def test_spike_rollback_skip_and_clip(spiking):
    steps, loss = arr(spiking, "train_loss")
    spike = int(steps[np.argmax(loss)])
    assert spike == 250
    props = by_kind(propose(finding("loss-spike", spike, spike, (spike,)), spiking))
    skip = props["rollback_skip"].config["skip_batches"]
    assert skip == [[spike - 20, spike + 20]]  # 400-step run: 400 // 20 steps back and past
    assert f"step {spike - 20}" in props["rollback_skip"].summary
    # clipped at the p90 of the norms before the spike, the spike's norm is far above it
    _, g = arr(spiking, "grad_norm")
    thr = props["clip_grad_norm"].config["clip_grad_norm"]
    assert thr == round_sig(float(np.percentile(g[(steps >= 25) & (steps <= 237)], 90)), 2)
    assert g[steps == spike][0] > 10 * thr
    # early warmup is not proposed for a late spike; Adam's warmup would be 2/(1-0.999) otherwise
    assert "add_warmup" not in props


def test_early_spike_gets_adam_warmup(spiking):
    props = by_kind(propose(finding("loss-spike", 30, 30, (30,)), spiking))
    w = props["add_warmup"]
    assert w.config["warmup_steps"] == 100  # 2/(1-0.999)=2000, capped at a quarter of 400 steps
    assert "2/(1-β2) = 2000" in w.rationale


def test_many_spikes_no_rollback_and_lower_lr_ranks_up(spiking):
    spikes = (50, 120, 190, 260, 330)
    props = propose(finding("loss-spike", 50, 330, spikes), spiking)
    kinds = [p.kind for p in props]
    assert "rollback_skip" not in kinds
    assert kinds.index("lower_peak_lr") < kinds.index("add_warmup")


# --------------------------------------------------------------------------- overfitting


@pytest.fixture(scope="module")
def overfit(tmp_path_factory):
    return logged_run(tmp_path_factory.mktemp("of"), "of", overfitting_run(),
                      hparams={"optimizer": {"type": "Adam", "betas": [0.9, 0.98], "weight_decay": 0.0}})


def test_overfitting_early_stop_at_best_val(overfit):
    steps, val = arr(overfit, "val_loss")
    best = int(steps[np.argmin(val)])
    assert val[-1] > 1.5 * val.min(), "the run really overfits"
    props = propose(finding("overfitting", best, int(steps[-1])), overfit)
    assert props[0].kind == "early_stop"
    assert props[0].config == {"early_stop_step": best + 20}  # two evals at the logged cadence of 10
    assert f"step {best}" in props[0].summary


def test_overfitting_adam_to_adamw_keeps_betas_and_lr(overfit):
    steps, val = arr(overfit, "val_loss")
    props = by_kind(propose(finding("overfitting", int(steps[np.argmin(val)])), overfit))
    cfg = props["adamw"].config
    assert cfg["optimizer"] == {"type": "AdamW", "betas": [0.9, 0.98]}
    assert cfg["weight_decay"] > 0 and "lr" not in cfg and "lr_scale" not in cfg


# --------------------------------------------------------------------------- plateau


def test_plateau_never_moved_raises_lr_to_the_optimizers_customary_lr(tmp_path):
    """A loss that never moved at an LR 1e5x below SGD's customary 0.1 goes straight to 0.1 (not
    x10, five ×10 reruns short of it); the one-cycle variant peaks at the same LR."""
    pts = regression(200, lr=lambda s: 1e-6)
    view = logged_run(tmp_path, "flat", pts, hparams={"optimizer": "SGD"})
    props = propose(finding("plateau", 1, 200), view)
    assert props[0].kind == "raise_lr" and props[0].config == {"lr": 0.1}
    assert "customary 0.1" in props[0].rationale and "LR range test" in props[0].rationale
    assert "would take 5 reruns" in props[0].rationale  # float32-logged 1e-6 is not 1e5 exactly
    assert props[1].config["scheduler"]["max_lr"] == 0.1 and props[1].config["scheduler"]["total_steps"] == 200
    # Adam's customary LR is 1e-3
    adam = logged_run(tmp_path, "flat_adam", pts, hparams={"optimizer": "Adam"})
    assert propose(finding("plateau", 1, 200), adam)[0].config == {"lr": 1e-3}


def test_plateau_never_moved_x10_when_near_the_default_or_optimizer_unknown(tmp_path):
    flat = regression(200, lr=lambda s: 1e-6)
    unknown = logged_run(tmp_path, "flat_unknown", flat)
    p = propose(finding("plateau", 1, 200), unknown)[0]
    assert p.config == {"lr": 1e-5} and "unknown" in p.rationale
    # already within x10 of SGD's customary LR: x10 (the LR alone is not the likely culprit)
    near = {**flat, "train/lr": [(s, 0.02) for s, _ in flat["train/lr"]]}
    p = propose(finding("plateau", 1, 200), logged_run(tmp_path, "flat_near", near, hparams={"optimizer": "SGD"}))[0]
    assert p.config == {"lr": 0.2} and "within ×10" in p.rationale


def test_plateau_with_constant_lr_gets_decay_in_eval_units(overfit):
    """On a run evaluated every 10 steps that stalls, ReduceLROnPlateau's patience is in evals."""
    steps, loss = arr(overfit, "train_loss")
    start = 200
    props = propose(finding("plateau", start, 400), overfit)
    if props[0].kind == "raise_lr":
        pytest.fail("the loss moved before the plateau: not 'never moved'")
    rop = next(p for p in props if p.id.endswith("reduce_on_plateau"))
    patience = rop.config["scheduler"]["patience"]
    assert patience == round((400 - start) / 3 / 10)
    assert f"{patience * 10} steps at one eval every 10" in rop.summary
    cos = next(p for p in props if p.id.endswith(":cosine"))
    assert cos.config["scheduler"]["T_max"] == 400 and cos.config["scheduler"]["eta_min"] == 1e-4


# --------------------------------------------------------------------------- general


def test_ids_unique_stable_and_unknown_rules_empty(diverging):
    onset = divergence_onset(diverging)
    for rule in ("divergence", "loss-spike", "plateau", "overfitting", "exploding-gradients",
                 "vanishing-gradients"):
        f = finding(rule, onset, 300, (onset,))
        a, b = propose(f, diverging), propose(f, diverging)
        assert [p.id for p in a] == [p.id for p in b]
        assert len({p.id for p in a}) == len(a)
        assert all(p.id.startswith(rule + ":") and p.summary and p.code and p.config for p in a)
    assert propose(finding("no-such-rule", 5), diverging) == []


def test_finding_without_steps_and_empty_run():
    empty = RoleView.of(Run("e", "e", "test", make_scalars("train/loss", [], None, [])))
    for rule in ("divergence", "plateau", "loss-spike", "overfitting"):
        props = propose(finding(rule, None), empty)
        assert all(p.code for p in props)


def test_proposals_compute_without_torch_imports():
    import subprocess
    import sys

    code = ("import sys, numpy as np; from lrdoctor.model import *; from lrdoctor.roles import RoleView;"
            "from lrdoctor.proposals import propose;"
            "r = Run('r','r','t', make_scalars('loss', np.arange(100), None, np.linspace(1, 9, 100)));"
            "ps = propose(Finding('divergence', Severity.ERROR, 50, 99, (), '', {}), RoleView.of(r));"
            "assert ps and 'torch' not in sys.modules, sys.modules.keys()")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_batch_rescale_from_hparams(diverging):
    onset = divergence_onset(diverging)
    view = RoleView(Run("b", "b", "t", diverging.run.scalars,
                        hparams={"optimizer": "SGD", "batch_size": 128, "world_size": 2}), diverging.roles)
    props = by_kind(propose(finding("divergence", onset), view))
    r, low = props["rescale_lr_for_batch"], props["lower_peak_lr"].config["lr"]
    steps, lr = arr(view, "lr")
    peak = float(lr[np.isfinite(lr)].max())  # the whole schedule's peak, past the onset too
    # SGD linear rule: the lowered LR at batch B == k times it at batch kB, k the largest that
    # stays below the peak
    k = max(k for k in (2, 4, 8) if low / peak * k < 0.95)
    assert r.config["batch_size"] == 128 * k
    assert r.config["lr"] < peak and k * low * 0.95 <= r.config["lr"] <= k * low * 1.05
    assert f"effective batch 256 → {256 * k}" in r.rationale


# --------------------------------------------------------------------------- epochs, bursts


def _epoch_run(hparams):
    """A Keras-style run (x axis = epochs) that stalls from epoch 12 of 40 at a constant LR."""
    e = np.arange(40)
    loss = np.maximum(np.exp(-e / 4), np.exp(-3)) + 0.1 + np.random.default_rng(1).normal(0, 1e-4, 40)
    scal = pd.concat([make_scalars("loss", e, None, loss), make_scalars("learning_rate", e, None, np.full(40, 1e-3)),
                      make_scalars("val_loss", e, None, loss + 0.02)], ignore_index=True)
    return RoleView.of(Run("k", "k", "keras_csv", scal, hparams=hparams, step_axis="epoch"))


def test_epoch_axis_counts_become_optimizer_steps():
    view = _epoch_run({"optimizer": "Adam", "steps_per_epoch": 50})
    props = {p.id: p for p in propose(finding("plateau", 12, 39), view)}
    cos = props["plateau:add_decay_schedule:cosine"]
    assert cos.config["scheduler"]["T_max"] == 40 * 50
    assert "40 epochs" in cos.summary and "50 per epoch" in cos.rationale
    # an epoch loop with the scheduler stepped inside it, per optimizer step
    assert "for epoch in range(num_epochs)" in cos.code and "scheduler_step()  # once per optimizer step" in cos.code
    assert "Call once per optimizer step" in cos.code
    rop = props["plateau:add_decay_schedule:reduce_on_plateau"]
    assert rop.config["scheduler"]["patience"] == round(27 / 3 / 1)  # evals, one per epoch
    assert "on_eval(epoch, evaluate(model))  # validate after every epoch" in rop.code


def test_epoch_axis_without_steps_per_epoch_stays_in_epochs():
    view = _epoch_run({"optimizer": "Adam"})
    cos = {p.id: p for p in propose(finding("plateau", 12, 39), view)}["plateau:add_decay_schedule:cosine"]
    assert cos.config["scheduler"]["T_max"] == 40
    assert "counts are epochs" in cos.rationale
    assert "scheduler_step()  # once per epoch, after its last optimizer step" in cos.code
    assert "Call once per epoch" in cos.code and "once per optimizer step" not in cos.code


def test_exploding_bursts_the_run_recovered_from_get_rollback(spiking):
    props = by_kind(propose(finding("exploding-gradients", 250, 250, (250,)), spiking))
    assert props["rollback_skip"].config == {"skip_batches": [[230, 270]]}
    assert "grad-norm burst" in props["rollback_skip"].summary


def test_exploding_into_nan_gets_no_rollback(diverging):
    onset = divergence_onset(diverging)
    kinds = [p.kind for p in propose(finding("exploding-gradients", onset, 300, (onset,)), diverging)]
    assert kinds[0] == "clip_grad_norm" and "rollback_skip" not in kinds


# --------------------------------------------------------------------------- end to end


def test_every_finding_on_workload_runs_gets_applicable_proposals(tmp_path):
    """Built-in workloads -> real log files -> discovery -> rules -> proposals: every finding has
    proposals with numbers, a patch the workload config accepts and code that executes."""
    try:
        from lrdoctor.engine.diagnose import diagnose_runs
        from lrdoctor.engine.spec import load_rules
        from lrdoctor.readers import discover
        from lrdoctor.workloads.config import WorkloadConfig
        from lrdoctor.workloads.recipes import recipe_config
        from lrdoctor.workloads.train import train
    except ImportError as exc:
        pytest.skip(f"pipeline not complete: {exc}")
    for recipe in ("divergence", "plateau"):
        train(recipe_config(recipe, "mlp_regressor"), tmp_path / recipe, fmt="tensorboard", device="cpu")
    diagnoses = diagnose_runs(discover(tmp_path), rules=load_rules())
    findings = [(d, f) for d in diagnoses for f in d.findings]
    assert {f.rule for _, f in findings} >= {"divergence", "plateau"}
    for d, f in findings:
        assert f.proposals, f"{d.run.name}: {f.rule} has no proposal"
        base = WorkloadConfig.from_dict(d.run.origin["config"])
        for p in f.proposals:
            assert any(ch.isdigit() for ch in p.summary), p.summary
            base.apply_patch(p.config)
            model = torch.nn.Linear(3, 1)
            ns = {"model": model, "optimizer": torch.optim.SGD(model.parameters(), lr=0.1)}
            exec(compile(p.code, p.id, "exec"), ns)
            if "scheduler_step" in ns:
                for _ in range(3):
                    ns["optimizer"].step()
                    ns["scheduler_step"]()


# --------------------------------------------------------------------------- properties


def _lr_run(lr_values, loss_values) -> RoleView:
    steps = np.arange(1, len(lr_values) + 1)
    scal = pd.concat([make_scalars("train/loss", steps, None, loss_values),
                      make_scalars("train/lr", steps, None, lr_values)], ignore_index=True)
    return RoleView.of(Run("p", "p", "t", scal))


def test_property_lowered_lr_is_below_the_lr_in_force_and_code_compiles():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=60, deadline=None)
    @given(n=st.integers(20, 400), peak=st.floats(1e-6, 10.0), warm=st.floats(0.0, 0.9),
           onset_share=st.floats(0.05, 1.0), rule=st.sampled_from(["divergence", "loss-spike",
                                                                     "exploding-gradients"]))
    def check(n, peak, warm, onset_share, rule):
        s = np.arange(1, n + 1)
        w = int(warm * n)
        lr = np.where(s <= w, peak * s / max(w, 1), peak)
        view = _lr_run(lr, np.linspace(2.0, 1.0, n))
        onset = max(1, int(onset_share * n))
        in_force = lr[onset - 1]
        props = propose(finding(rule, onset, n, (onset,)), view)
        low = by_kind(props)["lower_peak_lr"]
        if w >= 2 and onset == 1:
            # at the foot of a visible warmup the LR there says nothing: cut relative to the peak
            assert low.config["lr"] <= 0.5 * peak * 1.0001 and f"peak {fmt(peak)} →" in low.rationale
        else:
            # the new LR at the onset (the patch scales the whole schedule) is below the one that failed
            assert low.config["lr"] * in_force / lr[:onset].max() < in_force
        for p in props:
            compile(p.code, p.id, "exec")
            assert len({q.id for q in props}) == len(props)

    check()


# --------------------------------------------------------------------------- built-in workloads


def _workload(recipe, seed, tmp_path, **changes):
    """A pathology recipe trained for real, written as TensorBoard logs, read back and diagnosed
    with the built-in rules; returns (finding of the recipe's rule, its view, the config)."""
    try:
        from lrdoctor.engine.runner import run_rules
        from lrdoctor.engine.spec import load_rules
        from lrdoctor.readers import discover
        from lrdoctor.workloads.recipes import recipe_config
        from lrdoctor.workloads.train import train
    except ImportError as exc:
        pytest.skip(f"pipeline not complete: {exc}")
    cfg = recipe_config(recipe, "mlp_regressor", seed=seed, **changes)
    d = tmp_path / f"{recipe}-s{seed}"
    train(cfg, d, fmt="tensorboard", device="cpu")
    (run,) = discover(d)
    view = RoleView.of(run)
    diag = run_rules(view, load_rules(), proposer=propose)
    f = next(f for f in diag.findings if f.rule == recipe)
    return f, view, cfg


def _rerun(cfg, patch, seed, tmp_path):
    from lrdoctor.workloads.train import train

    new = cfg.apply_patch(patch)
    new = new.replace(seed=seed)
    return train(new, tmp_path / f"rerun-{seed}", fmt="jsonl", device="cpu")


def test_divergence_workload_caps_the_peak_below_the_last_healthy_lr(tmp_path):
    """SGD warmed up linearly into a peak LR 20x too high: the new peak is a third of the largest
    LR in force up to the best smoothed loss (not a third of the LR at the blow-up, nor of the
    configured peak), the warmup shape is kept, and reruns on this and other seeds do not diverge."""
    f, view, cfg = _workload("divergence", 0, tmp_path)
    top = f.proposals[0]
    assert top.kind == "lower_peak_lr" and set(top.config) == {"lr"}
    steps, loss = arr(view, "train_loss")
    lr_steps, lr = arr(view, "lr")
    pre = np.isfinite(loss) & (steps < f.start_step)
    smooth = pd.Series(loss[pre]).rolling(9, center=True, min_periods=1).median().to_numpy()
    best = int(steps[pre][np.argmin(smooth)])
    lr_best = float(lr[lr_steps <= best].max())
    lr_onset = float(lr[lr_steps <= f.start_step][-1])
    assert lr_best < lr_onset < cfg.lr, "the LR was still warming up when the run blew up"
    new = top.config["lr"]
    assert lr_best / 3 * 0.9 <= new <= lr_best / 3 * 1.0001
    assert f"step {f.start_step}" in top.rationale and "stability edge" in top.rationale
    assert "shape is kept" in top.rationale
    for seed in (0, 10, 11):
        res = _rerun(cfg, top.config, seed, tmp_path)
        assert not res.diverged and not res.labels, f"seed {seed} still diverges at peak {new}"
        h = res.history
        assert h.lr.max() == pytest.approx(new) and np.argmax(h.lr) >= cfg.warmup_steps - 1  # warmup kept
        assert res.final_train_loss < h.train_loss[:10].mean()


def test_isolated_poisoned_batch_spikes_rank_rollback_skip_first(tmp_path):
    """Poisoned batches: the grad norm is normal right before each spike, the run recovers, so
    skipping the batches ranks above clipping (the bad batch's loss is logged before any update,
    which clipping cannot undo); the rerun with the skip shows no spike."""
    f, view, cfg = _workload("loss-spike", 0, tmp_path)
    kinds = [p.kind for p in f.proposals]
    assert kinds[0] == "rollback_skip" and "clip_grad_norm" in kinds
    top = f.proposals[0]
    assert "Ranked first" in top.rationale and "logged before any update" in top.rationale
    ranges = top.config["skip_batches"]
    assert all(any(a <= s <= b for a, b in ranges) for s in cfg.poison_steps)
    res = _rerun(cfg, top.config, 0, tmp_path)
    assert not res.labels and np.isfinite(res.history.train_loss).all()


def glitch_run(steps=300, glitches=(100, 170, 240), seed=0):
    """Minibatch SGD on the linear regression whose gradient is corrupted (x300) at a few steps,
    as by an overflow: the grad norm bursts first and the loss jumps on the next step."""
    g = torch.Generator().manual_seed(seed)
    w_true = torch.randn(8, 1, generator=g)
    X = torch.randn(512, 8, generator=g)
    Y = X @ w_true + 0.1 * torch.randn(512, 1, generator=g)
    torch.manual_seed(seed)
    model = torch.nn.Linear(8, 1)
    o = torch.optim.SGD(model.parameters(), lr=0.05)
    pts = {"train/loss": [], "train/lr": [], "train/grad_norm": []}
    for step in range(1, steps + 1):
        idx = torch.randint(0, 512, (32,), generator=g)
        o.zero_grad()
        loss = ((model(X[idx]) - Y[idx]) ** 2).mean()
        loss.backward()
        if step in glitches:
            for p in model.parameters():
                p.grad *= 300
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), math.inf)
        o.step()
        pts["train/loss"].append((step, loss.item()))
        pts["train/lr"].append((step, 0.05))
        pts["train/grad_norm"].append((step, norm.item()))
    return pts


def test_spikes_after_grad_norm_bursts_rank_clipping_first(tmp_path):
    from lrdoctor.engine.runner import run_rules
    from lrdoctor.engine.spec import load_rules

    glitches = (100, 170, 240)
    view = logged_run(tmp_path, "glitch", glitch_run(glitches=glitches), hparams={"optimizer": "SGD"})
    spikes = next(f for f in run_rules(view, load_rules()).findings if f.rule == "loss-spike")
    assert set(spikes.steps) & {s + 1 for s in glitches}, spikes.steps
    props = propose(spikes, view)
    assert props[0].kind == "clip_grad_norm" and "before the loss jumped" in props[0].rationale


def test_plateau_workload_raise_to_customary_lr_trains(tmp_path):
    """SGD at an LR 1e5x too low: the proposal goes to SGD's customary 0.1, and reruns at it learn."""
    f, view, cfg = _workload("plateau", 0, tmp_path)
    top = f.proposals[0]
    assert top.kind == "raise_lr" and top.config == {"lr": 0.1}
    cyc = next(p for p in f.proposals if p.id.endswith("one_cycle"))
    assert cyc.config["scheduler"]["max_lr"] == 0.1
    for seed in (0, 10):
        res = _rerun(cfg, top.config, seed, tmp_path)
        assert not res.labels and res.final_train_loss < 0.5 * res.history.train_loss[:20].mean()


# --------------------------------------------------------------------------- reported bugs


def _amp_trainer_state(tmp_path):
    """A mixed-precision HF run as transformers writes it: GradScaler skipped the first 5 steps
    (grad_norm inf, json's Infinity), the LR warms up linearly 2e-6 -> 1e-4 over 50 steps, then
    decays linearly; the loss falls throughout."""
    from reader_fixtures import write_trainer_state

    hist = []
    for s in range(1, 201):
        lr = 2e-6 + (1e-4 - 2e-6) * (s - 1) / 49 if s <= 50 else 1e-4 * (1 - (s - 50) / 200)
        hist.append({"epoch": round(s / 200, 4), "grad_norm": math.inf if s <= 5 else 1.0 + 0.2 * math.sin(s),
                     "learning_rate": lr, "loss": round(3.0 * math.exp(-s / 80) + 0.5, 4), "step": s})
    hist.append({"epoch": 1.0, "step": 200, "total_flos": 1.2e13, "train_loss": 1.2, "train_runtime": 61.5,
                 "train_samples_per_second": 26.0, "train_steps_per_second": 3.25})
    path = write_trainer_state(tmp_path / "amp" / "trainer_state.json", hist, 200)
    assert '"grad_norm": Infinity' in path.read_text()
    from lrdoctor.readers import discover

    (run,) = discover(path.parent)
    view = RoleView.of(run)
    assert np.isinf(view["grad_norm"].values[:5]).all() and view.has("lr")
    return view


def test_amp_warmup_finding_at_step_1_cuts_relative_to_the_real_peak(tmp_path):
    """Bug: a divergence finding at step 1 (the old rule) gave "lower peak LR 2e-6 → 6.6e-7" (the
    warmup's first LR taken as the peak, a 150x cut of the real 1e-4) and "grad norm not logged"."""
    view = _amp_trainer_state(tmp_path)
    props = by_kind(propose(finding("divergence", 1), view))
    low = props["lower_peak_lr"]
    assert low.summary.startswith("lower peak LR 1e-4 → ")
    assert 1e-4 / 3 * 0.95 <= low.config["lr"] < 1e-4
    assert f"peak 1e-4 → {low.summary.split('→ ')[1]}" in low.rationale and "foot" in low.rationale
    assert "add_warmup" not in props, "49 → 50 steps is no change: the run already warms up"
    clip = props["clip_grad_norm"]
    assert "not logged" not in clip.summary + clip.rationale
    assert "5 non-finite grad norms ignored" in clip.rationale
    g = view["grad_norm"].values
    assert clip.config["clip_grad_norm"] == round_sig(float(np.percentile(g[np.isfinite(g)], 90)), 2)


def test_amp_run_through_the_real_rules_gets_no_absurd_proposal(tmp_path):
    from lrdoctor.engine.runner import run_rules
    from lrdoctor.engine.spec import load_rules

    view = _amp_trainer_state(tmp_path)
    diag = run_rules(view, load_rules(), proposer=propose)
    # whatever fires (nothing should), no proposal cuts the LR below a tenth of the 1e-4 peak or
    # claims the grad norm was not logged
    for f in diag.findings:
        for p in f.proposals:
            if "lr" in p.config and p.kind in ("lower_peak_lr", "rescale_lr_for_batch"):
                assert p.config["lr"] >= 1e-5, p.summary
            assert "not logged" not in p.summary + p.rationale, p.summary


def _keras_overfit(tmp_path, hparams=None):
    """Keras CSVLogger file (epochs from 0): val loss lowest at epoch 3, rising after."""
    from reader_fixtures import write_keras_csv

    from lrdoctor.readers import discover

    rows = [{"loss": 1.0 / (e + 1), "val_loss": 0.5 + 0.05 * (e - 3) ** 2} for e in range(12)]
    write_keras_csv(tmp_path / "k" / "training_log.csv", rows)
    (run,) = discover(tmp_path / "k")
    assert run.step_axis == "epoch" and int(run.scalars["step"].min()) == 0
    if hparams:
        run = Run(run.name, run.source, run.format, run.scalars, hparams=hparams, step_axis="epoch")
    return RoleView.of(run)


def test_keras_early_stop_counts_epochs_not_steps(tmp_path):
    """Bug: EARLY_STOP_STEP = 4 and a per-batch loop for an epoch-axis log stopped after 4
    batches, and Keras' 0-based epochs were off by one."""
    view = _keras_overfit(tmp_path)
    es = by_kind(propose(finding("overfitting", 4), view))["early_stop"]
    # best at epoch 3, stop two evals later: after the epoch numbered 5, i.e. 6 epochs
    assert es.config == {"early_stop_epoch": 6}
    assert "stop after epoch 5 (6 epochs; the log's epochs are 0-based)" in es.summary
    assert "EARLY_STOP_EPOCHS = 6" in es.code and "EARLY_STOP_STEP" not in es.code
    assert "for epoch in range(num_epochs)" in es.code and "optimizer step with the number" not in es.code


def test_keras_early_stop_with_steps_per_epoch_is_harness_applicable(tmp_path):
    view = _keras_overfit(tmp_path, {"steps_per_epoch": 30})
    es = by_kind(propose(finding("overfitting", 4), view))["early_stop"]
    assert es.config == {"early_stop_step": 6 * 30}
    assert "EARLY_STOP_EPOCHS = 6  # early_stop_step 180 at 30 optimizer steps per epoch" in es.code
    try:
        from lrdoctor.workloads.config import WorkloadConfig
    except ImportError:
        return
    assert WorkloadConfig(lr=0.01, max_steps=400).apply_patch(es.config).early_stop_step == 180


def test_real_keras_log_early_stop_in_epochs():
    from pathlib import Path

    from lrdoctor.readers import discover

    d = Path("/work/shared/real_logs/keras02_dm22_hsinhung")
    if not d.is_dir():
        pytest.skip("real logs absent")
    (run,) = discover(d)
    view = RoleView.of(run)
    val = view["val_loss"]
    best = int(val.steps[np.argmin(val.values)])
    es = by_kind(propose(finding("overfitting", best), view))["early_stop"]
    assert es.config == {"early_stop_epoch": best + 2 + 1}  # 0-based epochs, two evals of margin
    compile(es.code, "keras02", "exec")


def _vanishing_view(grad_values) -> RoleView:
    n = len(grad_values)
    steps = np.arange(1, n + 1)
    scal = pd.concat([make_scalars("train/loss", steps, None, np.full(n, 2.3)),
                      make_scalars("train/lr", steps, None, np.full(n, 0.05)),
                      make_scalars("train/grad_norm", steps, None, np.asarray(grad_values, float))],
                     ignore_index=True)
    return RoleView.of(Run("v", "v", "t", scal, hparams={"optimizer": "SGD"}))


def test_vanishing_from_the_first_step_claims_no_before():
    """Small from step 1: there is no healthy stretch, so the rationale must not quote one."""
    g = np.linspace(0.045, 0.03, 400)
    view = _vanishing_view(g)
    f = Finding("vanishing-gradients", Severity.WARNING, 1, 400, (1,), "", {"threshold": 0.05})
    (p,) = propose(f, view)
    assert "before" not in p.rationale.split(";")[0] and "vs" not in p.rationale
    assert "first step (1)" in p.rationale and "no healthy stretch" in p.rationale
    assert f"median grad norm {np.median(g):.2g}" in p.rationale and "threshold 0.05" in p.rationale


def test_vanishing_after_a_healthy_stretch_compares_with_it():
    g = np.concatenate([np.full(200, 1.0), np.full(200, 0.01)])
    view = _vanishing_view(g)
    f = Finding("vanishing-gradients", Severity.WARNING, 201, 400, (201,), "", {})
    (p,) = propose(f, view)
    assert "gradients vanished from step 201 (median grad norm 0.01 there vs 1 before)" in p.rationale


def test_clip_threshold_leaves_out_bursts_inside_the_stable_stretch():
    """sample_logs/divergence-mlp-lightning: SGD whose grad norm bursts 10-50x (steps 10, 24, 31)
    long before the loss diverges at 82. The p90 of steps 9-39 (25.5, 7.6x their median 3.36) would
    not clip the next burst; bursts (over SPIKE_X x their running median) are left out of the p90."""
    from pathlib import Path

    from lrdoctor.proposals.grads import SPIKE_X
    from lrdoctor.readers import discover

    root = Path(__file__).resolve().parents[1] / "sample_logs" / "divergence-mlp-lightning"
    if not root.is_dir():
        pytest.skip("sample_logs absent")
    (run,) = discover(root)
    view = RoleView.of(run)
    clip = by_kind(propose(finding("divergence", 82), view))["clip_grad_norm"]
    steps, g = arr(view, "grad_norm")
    window = g[(steps >= 9) & (steps <= 39)]
    med, p90 = float(np.median(window)), float(np.percentile(window, 90))
    assert p90 > 5 * med, "the stretch is spiky (the premise)"
    thr = clip.config["clip_grad_norm"]
    assert med < thr < SPIKE_X * med and "bursts left out" in clip.summary and "p90 to 25.5" in clip.rationale
    # every 10x+ burst of the stretch is clipped; of the ordinary steps, about a tenth
    assert np.all(window[window > 10 * med] > thr)
    assert (window[window < 3 * med] > thr).mean() <= 0.15
