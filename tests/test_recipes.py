"""Each recipe produces its pathology on 3 seeds (real CPU trainings, checked on the raw history,
independently of the labeller), and the labels say so.

Step counts are cut to just past where each pathology shows, to keep this file fast.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from lrdoctor.errors import UsageError  # noqa: E402
from lrdoctor.workloads.recipes import RECIPES, recipe_config  # noqa: E402
from lrdoctor.workloads.training import train  # noqa: E402

SEEDS = (0, 1, 2)


def run(tmp_path, recipe, seed, workload=None, **changes):
    cfg = recipe_config(recipe, workload, seed, num_threads=1, **changes)
    return train(cfg, tmp_path / f"{recipe}-{seed}", "jsonl", device="cpu")


def rules(res, primary_only=True):
    return {lab["rule"] for lab in res.labels if lab.get("primary", True) or not primary_only}


@pytest.mark.parametrize("seed", SEEDS)
def test_healthy_trains_without_pathology(tmp_path, seed):
    res = run(tmp_path, "healthy", seed, max_steps=300)
    h = res.history
    assert np.isfinite(h.train_loss).all()
    assert res.final_train_loss < 0.5 * h.train_loss[:10].mean()
    assert h.val_loss[-1] <= 1.1 * h.val_loss.min()
    assert res.labels == ()


@pytest.mark.parametrize("seed", SEEDS)
def test_divergence_blows_up(tmp_path, seed):
    res = run(tmp_path, "divergence", seed)
    loss = res.history.train_loss
    assert (~np.isfinite(loss)).any() or np.nanmax(loss) > 100 * np.nanmin(loss)
    assert rules(res) == {"divergence"}
    assert res.labels[0]["onset_step"] > 10  # it learns first, then blows up


@pytest.mark.parametrize("seed", SEEDS)
def test_loss_spike_at_the_poisoned_steps(tmp_path, seed):
    res = run(tmp_path, "loss-spike", seed, max_steps=260)
    h = res.history
    i = int(np.nonzero(h.steps == 250)[0][0])
    assert h.train_loss[i] >= 3 * np.median(h.train_loss[i - 20:i])
    assert rules(res) == {"loss-spike"} and res.labels[0]["onset_step"] == 250


@pytest.mark.parametrize("seed", SEEDS)
def test_plateau_stays_near_its_start(tmp_path, seed):
    res = run(tmp_path, "plateau", seed, max_steps=200)
    loss = res.history.train_loss
    assert abs(loss[-20:].mean() - loss[:20].mean()) < 0.1 * loss[:20].mean()
    assert rules(res) == {"plateau"}


@pytest.mark.parametrize("seed", SEEDS)
def test_overfitting_val_loss_turns_up_while_train_loss_falls(tmp_path, seed):
    res = run(tmp_path, "overfitting", seed, max_steps=300)
    h = res.history
    best = int(np.argmin(h.val_loss))
    assert h.val_loss[best:].max() >= 1.15 * h.val_loss[best]
    at_best = np.nonzero(h.steps == h.eval_steps[best])[0][0]
    assert h.train_loss[-20:].mean() < 0.5 * h.train_loss[at_best - 5:at_best + 5].mean()
    assert rules(res) == {"overfitting"}


@pytest.mark.parametrize("seed", SEEDS)
def test_exploding_gradient_bursts(tmp_path, seed):
    res = run(tmp_path, "exploding-gradients", seed, max_steps=260)
    g = res.history.grad_norm
    bursts = g[np.isin(res.history.steps, [150, 250])]
    assert (bursts >= 10 * np.median(g[20:])).all()
    assert rules(res) == {"exploding-gradients"}


@pytest.mark.parametrize("seed", SEEDS)
def test_vanishing_gradients_tiny_and_loss_stalled(tmp_path, seed):
    res = run(tmp_path, "vanishing-gradients", seed, max_steps=200)
    h = res.history
    assert np.median(h.grad_norm) < 0.1
    assert h.train_loss[-20:].mean() > 0.95 * h.train_loss[:20].mean()
    assert rules(res) == {"vanishing-gradients"} and rules(res, primary_only=False) == {"vanishing-gradients", "plateau"}


def test_a_fix_removes_the_label(tmp_path):
    """The labeller reads the run, not the recipe: a patched divergence run that trains is unlabelled."""
    cfg = recipe_config("divergence", seed=0, num_threads=1).apply_patch({"lr": 0.01})
    res = train(cfg, tmp_path, "jsonl", device="cpu")
    assert np.isfinite(res.history.train_loss).all() and res.labels == ()


def test_recipe_workload_validity():
    assert RECIPES["exploding-gradients"].workloads == ("gru_lm",)
    assert RECIPES["vanishing-gradients"].workloads == ("deep_sigmoid_mlp",)
    with pytest.raises(UsageError, match="not defined for workload"):
        recipe_config("vanishing-gradients", "cnn_classifier")
    for name, rec in RECIPES.items():
        for w in rec.workloads:
            cfg = recipe_config(name, w, 1)
            assert cfg.recipe == name and cfg.workload == w and cfg.seed == 1


@pytest.mark.parametrize("recipe,workload", [(r, w) for r, rec in RECIPES.items() for w in rec.workloads[1:]])
def test_every_recipe_on_its_other_workloads(tmp_path, recipe, workload):
    """One more seed, full length, on every other workload the recipe claims (labeller-checked)."""
    res = run(tmp_path, recipe, 5, workload)
    assert rules(res) == ({RECIPES[recipe].rule} if RECIPES[recipe].rule else set())


@pytest.mark.parametrize("workload", ("mlp_regressor", "cnn_classifier"))  # the LMs: too slow here
def test_healthy_is_tuned_so_lr_x10_clearly_hurts(tmp_path, workload):
    """The healthy LR sits near the sweep's best (see recipes.py): /10 is worse and x10 clearly
    worse, so verification's harmful control (LR x10 on a healthy run) has something to reject."""
    cfg = recipe_config("healthy", workload, 3, num_threads=1)
    val = {scale: train(cfg.apply_patch({"lr_scale": scale}), tmp_path / f"x{scale}", "jsonl", device="cpu")
           .final_val_loss for scale in (1.0, 0.1, 10.0)}
    assert val[0.1] > val[1.0]
    assert val[10.0] > 1.3 * val[1.0] or not np.isfinite(val[10.0])


def test_lr_restart_recipe_and_its_fixes(tmp_path, torch_one_thread):
    """The resume-without-scheduler-state fault restarts the schedule; the two proposal patches
    the lr-restart rule makes (restore the state; re-warm up) change the rerun as they say."""
    from lrdoctor.api import diagnose

    res = run(tmp_path, "lr-restart", 0, max_steps=150, schedule_restart_step=130)
    lr = res.history.lr  # lr[i] is step i + 1's
    assert lr[129] < 0.1 * lr.max() and lr[130] > 0.9 * lr[:130].max()  # back at the peak at once
    assert rules(res) == {"lr-restart"} and res.labels[0]["onset_step"] == 131
    (d,) = diagnose(res.logdir)
    f = next(f for f in d.findings if f.rule == "lr-restart")
    patches = {p.kind: p.config for p in f.proposals}
    fixed = train(res.config.apply_patch(patches["restore_scheduler_state"]), tmp_path / "fixed", "jsonl", device="cpu")
    assert np.all(np.diff(fixed.history.lr[30:]) <= 1e-12)  # the cosine decays to the end
    warm = train(res.config.apply_patch(patches["rewarmup"]), tmp_path / "warm", "jsonl", device="cpu")
    n = patches["rewarmup"]["rewarmup_steps"]
    assert warm.history.lr[130] < 0.05 * warm.history.lr[130 + n]  # ramps up again over n steps
