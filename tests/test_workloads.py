"""Workload config, patch schema, schedules and the training loop (short real trainings on CPU)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lrdoctor.errors import UsageError  # noqa: E402
from lrdoctor.workloads import WORKLOADS, WorkloadConfig  # noqa: E402
from lrdoctor.workloads.schedules import build_optimizer, build_scheduler  # noqa: E402
from lrdoctor.workloads.training import NAN_GRACE, train  # noqa: E402


def lrs(cfg: WorkloadConfig) -> np.ndarray:
    p = [torch.nn.Parameter(torch.zeros(1))]
    opt = build_optimizer(p, cfg)
    sched = build_scheduler(opt, cfg)
    out = []
    for _ in range(cfg.max_steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched is not None:
            sched.step()
    return np.array(out)


def test_package_train_is_the_function_even_after_the_module_path_is_imported():
    import lrdoctor.workloads.train as legacy  # the compatibility module path, imported first
    import lrdoctor.workloads.training as training
    from lrdoctor import workloads
    from lrdoctor.workloads import TrainResult, recipe_config
    from lrdoctor.workloads import train as fn

    assert fn is training.train is workloads.train is legacy and callable(fn)
    assert TrainResult is training.TrainResult and recipe_config("healthy").recipe == "healthy"
    from lrdoctor.workloads.train import NAN_GRACE as grace  # old-style imports keep working

    assert grace == training.NAN_GRACE


# --- config and patches ---------------------------------------------------------------------------


def test_config_json_round_trip():
    cfg = WorkloadConfig(workload="gru_lm", seed=3, skip_batches=((5, 9),), poison_steps=(7,),
                         scheduler={"type": "OneCycleLR", "pct_start": 0.2}, optimizer={"type": "SGD", "momentum": 0.5})
    d = json.loads(json.dumps(cfg.to_dict()))
    assert WorkloadConfig.from_dict(d) == cfg


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(UsageError, match="bogus"):
        WorkloadConfig.from_dict({**WorkloadConfig().to_dict(), "bogus": 1})


def test_apply_patch_every_key():
    cfg = WorkloadConfig(lr=0.1, scheduler={"type": "OneCycleLR", "max_lr": 0.1},
                         optimizer={"type": "SGD", "momentum": 0.9})
    new = cfg.apply_patch({
        "lr": 0.01, "optimizer": {"momentum": 0.5}, "weight_decay": 1e-4, "warmup_steps": 40,
        "warmup_start_factor": 0.1, "clip_grad_norm": 1.0, "clip_grad_value": 0.5, "max_steps": 300,
        "early_stop_step": 200, "skip_batches": [[10, 20]], "batch_size": 64,
    })
    assert new.lr == pytest.approx(0.01)
    assert new.scheduler["max_lr"] == pytest.approx(0.01)  # the whole LR curve moves with "lr"
    assert new.optimizer == {"type": "SGD", "momentum": 0.5}
    assert (new.weight_decay, new.warmup_steps, new.warmup_start_factor) == (1e-4, 40, 0.1)
    assert (new.clip_grad_norm, new.clip_grad_value, new.max_steps) == (1.0, 0.5, 300)
    assert (new.early_stop_step, new.skip_batches, new.batch_size) == (200, ((10, 20),), 64)
    assert cfg.lr == 0.1  # frozen: the original is untouched


def test_apply_patch_replaces_on_new_type_and_scales():
    cfg = WorkloadConfig(lr=1e-3, optimizer={"type": "SGD", "momentum": 0.9},
                         scheduler={"type": "StepLR", "step_size": 10})
    new = cfg.apply_patch({"optimizer": {"type": "AdamW", "betas": [0.9, 0.95]}, "lr_scale": 0.5,
                           "scheduler": {"type": "CosineAnnealingLR", "T_max": 100}, "clip_grad_norm": None})
    assert new.optimizer == {"type": "AdamW", "betas": [0.9, 0.95]}
    assert new.scheduler == {"type": "CosineAnnealingLR", "T_max": 100}
    assert new.lr == pytest.approx(5e-4)
    with pytest.raises(UsageError):
        cfg.apply_patch({"learning_rate": 1})
    with pytest.raises(UsageError):
        WorkloadConfig(optimizer={"type": "Lion"})


# --- schedules ------------------------------------------------------------------------------------


def test_warmup_then_constant():
    lr = lrs(WorkloadConfig(lr=1.0, max_steps=30, warmup_steps=10, warmup_start_factor=0.01))
    assert lr[0] == pytest.approx(0.01)
    assert np.all(np.diff(lr[:11]) > 0)
    assert np.allclose(lr[10:], 1.0)


def test_cosine_never_rises_past_t_max():
    lr = lrs(WorkloadConfig(lr=1.0, max_steps=120, warmup_steps=20, scheduler={"type": "CosineAnnealingLR", "T_max": 50}))
    assert lr[20] == pytest.approx(1.0)
    assert np.all(np.diff(lr[20:]) <= 1e-12)
    assert np.allclose(lr[70:], 0.0)


def test_onecycle_stepped_past_total_steps_holds_its_last_lr():
    lr = lrs(WorkloadConfig(lr=1.0, max_steps=100, scheduler={"type": "OneCycleLR", "total_steps": 60}))
    assert lr.max() == pytest.approx(1.0, rel=1e-3)
    assert np.allclose(lr[60:], lr[59])


@pytest.mark.parametrize("sched", ["StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingWarmRestarts",
                                   "CyclicLR", "PolynomialLR", "LinearLR"])
@pytest.mark.parametrize("opt", ["SGD", "Adam", "RMSprop", "Adagrad"])
def test_every_schedule_with_every_optimizer(sched, opt):
    lr = lrs(WorkloadConfig(lr=0.1, max_steps=90, warmup_steps=10, optimizer={"type": opt},
                            scheduler={"type": sched}))
    assert np.isfinite(lr).all() and lr.max() <= 0.1 + 1e-9 and lr[-1] < 0.1


# --- the training loop ----------------------------------------------------------------------------


@pytest.mark.parametrize("workload", WORKLOADS)
def test_each_workload_trains_and_is_deterministic(tmp_path, workload):
    cfg = WorkloadConfig(workload=workload, max_steps=25, eval_every=10, lr=3e-3, train_size=256, val_size=64,
                         num_threads=1)
    a = train(cfg, tmp_path / "a", "jsonl", device="cpu")
    b = train(cfg, tmp_path / "b", "jsonl", device="cpu")
    assert list(a.history.steps) == list(range(1, 26))
    assert list(a.history.eval_steps) == [10, 20, 25]
    assert np.array_equal(a.history.train_loss, b.history.train_loss)
    assert np.isfinite(a.history.train_loss).all() and (a.history.grad_norm > 0).all()
    origin = json.loads((tmp_path / "a" / "lrdoctor-run.json").read_text())
    assert WorkloadConfig.from_dict(origin["config"]) == cfg and origin["workload"] == workload


def test_grad_norm_is_logged_before_clipping(tmp_path):
    cfg = WorkloadConfig(max_steps=20, eval_every=10, clip_grad_norm=1e-3, lr=1e-3)
    res = train(cfg, tmp_path, "jsonl", device="cpu")
    assert (res.history.grad_norm > 1e-2).all()


def test_skip_batches_are_not_trained_but_the_lr_schedule_is_kept(tmp_path):
    base = WorkloadConfig(max_steps=40, eval_every=20, warmup_steps=30, poison_steps=(15,))
    full = train(base, tmp_path / "full", "jsonl", device="cpu")
    skip = train(base.apply_patch({"skip_batches": [[12, 18]]}), tmp_path / "skip", "jsonl", device="cpu")
    assert not set(range(12, 19)) & set(skip.history.steps.tolist())
    keep = np.isin(full.history.steps, skip.history.steps)
    assert np.array_equal(full.history.lr[keep], skip.history.lr)
    assert np.array_equal(full.history.train_loss[:11], skip.history.train_loss[:11])


def test_early_stop_epoch_patch_becomes_steps_of_the_workloads_epoch_length():
    cfg = WorkloadConfig(epoch_steps=20)
    assert cfg.apply_patch({"early_stop_epoch": 5}).early_stop_step == 100
    assert cfg.apply_patch({"early_stop_epoch": 5, "early_stop_step": 30}).early_stop_step == 30


def test_early_stop_restores_the_best_weights(tmp_path):
    cfg = WorkloadConfig(max_steps=200, eval_every=10, early_stop_step=60, lr=3e-3)
    res = train(cfg, tmp_path, "jsonl", device="cpu")
    assert res.steps_done == 60 and res.history.steps[-1] == 60
    assert res.final_val_loss == pytest.approx(res.best_val_loss)


def test_nan_is_logged_then_training_stops(tmp_path):
    cfg = WorkloadConfig(max_steps=300, lr=50.0, optimizer={"type": "SGD"}, eval_every=50)
    res = train(cfg, tmp_path, "jsonl", device="cpu")
    first = int(np.argmax(~np.isfinite(res.history.train_loss)))
    assert res.diverged and res.steps_done == res.history.steps[first] + NAN_GRACE
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any(isinstance(r.get("train_loss"), float) and math.isnan(r["train_loss"]) for r in lines)
    assert lines[-1]["step"] == res.steps_done and "val_loss" in lines[-1]


def test_reduce_on_plateau_is_stepped_at_evals(tmp_path):
    cfg = WorkloadConfig(max_steps=120, eval_every=10, lr=1e-3,
                         scheduler={"type": "ReduceLROnPlateau", "patience": 0, "factor": 0.5, "threshold": 10.0})
    res = train(cfg, tmp_path, "jsonl", device="cpu")
    assert res.history.lr[-1] < 1e-3 and res.history.lr[0] == 1e-3


def test_cli_list_and_run(tmp_path, capsys):
    from lrdoctor.workloads.__main__ import main

    assert main(["list"]) == 0
    assert "vanishing-gradients" in capsys.readouterr().out
    assert main(["run", "plateau", "--format", "keras_csv", "--out", str(tmp_path), "--steps", "40",
                 "--patch", '{"lr": 1e-5}']) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["steps"] == 40 and (tmp_path / "training.log").exists()
