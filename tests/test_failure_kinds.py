"""The failure kinds found on real public logs (issue 15), each on a file written by a real writer
(torch's SummaryWriter, Lightning's CSVLogger, a Keras-style CSVLogger file), diagnosed end to end.
The curves are generated here with the shapes seen on the real logs (which are never copied)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lrdoctor.api import diagnose
from tests.tb_writers import write_torch


def _rules(path: Path) -> dict[str, object]:
    (d,) = diagnose(path)
    return {f.rule: f for f in d.findings}


def _lightning_csv(tmp_path: Path, rows: list[tuple[int, dict[str, float]]]) -> Path:
    from lightning.pytorch.loggers import CSVLogger

    logger = CSVLogger(str(tmp_path), name="run")
    for step, metrics in rows:
        logger.log_metrics(metrics, step=step)
    logger.save()
    return Path(logger.log_dir)


def test_spike_on_a_loss_spanning_decades_is_found(tmp_path):
    # a physics-informed loss falling 1e10 -> 1e4 with multiplicative noise; a 50x jump late in
    # the run is invisible on a linear scale (the early values set the noise and the range)
    rng = np.random.default_rng(0)
    t = np.arange(600)
    loss = 10.0 ** (10 - 6 * t / 600) * np.exp(0.1 * rng.standard_normal(600))
    loss[450] *= 50
    loss[451] *= 8
    logdir = _lightning_csv(tmp_path, [(int(i), {"mean_loss": float(v)}) for i, v in zip(t, loss, strict=True)])
    found = _rules(logdir)
    assert "loss-spike" in found and found["loss-spike"].steps == (450,), found
    assert found["loss-spike"].evidence["log_domain"] is True


def test_spike_that_decays_back_is_a_spike_not_divergence(tmp_path):
    # x7000 jump at step 600 that decays back over ~200 steps to the end of the run, still a few
    # times its old level there: the loss did not "rise and stay there"
    rng = np.random.default_rng(1)
    t = np.arange(800)
    late = np.clip(t - 600, 0, None)
    loss = 0.02 * (1 + 0.05 * rng.standard_normal(800))
    loss = loss + np.where(t >= 600, 140.0 * np.exp(-late / 15.0) + 0.3 * np.exp(-late / 300.0), 0.0)
    write_torch(tmp_path, {"train/loss": list(zip(t.tolist(), loss.tolist(), strict=True))})
    found = _rules(tmp_path)
    assert "divergence" not in found, found["divergence"].message
    assert found["loss-spike"].steps == (600,)


def test_spikes_before_a_final_divergence_are_reported_beside_it(tmp_path):
    # two blow-ups that recover, then a third that ends in NaN: the user hears both stories
    rng = np.random.default_rng(2)
    t = np.arange(800)
    loss = 1.0 * np.exp(-t / 300) + 0.2 + 0.01 * rng.standard_normal(800)
    loss[300], loss[301] = 6.0, 2.0
    loss[500], loss[501] = 9.0, 3.0
    loss[770:780] = np.geomspace(1.0, 1e4, 10)
    loss[780:] = np.nan
    write_torch(tmp_path, {"loss": list(zip(t.tolist(), loss.tolist(), strict=True))})
    found = _rules(tmp_path)
    assert "divergence" in found
    assert found["loss-spike"].steps == (300, 500)


def _keras_csv(path: Path, columns: dict[str, np.ndarray]) -> Path:
    """What keras.callbacks.CSVLogger writes: an epoch column, the logs' keys sorted, CRLF."""
    keys = sorted(columns)
    n = len(next(iter(columns.values())))
    lines = [",".join(["epoch", *keys])]
    lines += [",".join([str(i), *(repr(float(columns[k][i])) for k in keys)]) for i in range(n)]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return path


def test_val_blow_up_while_train_sits_at_chance_is_not_overfitting(tmp_path):
    # binary task that never learns (loss at ln 2) while the val loss blows up: unstable, not
    # memorising; the plateau at chance level is what the user must hear
    rng = np.random.default_rng(3)
    loss = np.log(2) + 2e-4 * rng.standard_normal(30)
    loss[0] = 0.712
    val = np.concatenate([[0.79, 0.89], 2.0 + 3.0 * rng.random(28)])
    f = _keras_csv(tmp_path / "training_log.csv", {"loss": loss, "val_loss": val})
    found = _rules(f)
    assert "overfitting" not in found, found["overfitting"].message
    assert "plateau" in found and "ln 2" in found["plateau"].message


def test_val_rise_after_a_train_spike_is_not_overfitting(tmp_path):
    # the model learns, a spike at step 600 damages it, the val loss ends above its best: the
    # spike explains the rise (loss-spike), not memorisation
    rng = np.random.default_rng(4)
    t = np.arange(1000)
    loss = 2.0 * np.exp(-t / 150) + 0.3 + 0.01 * rng.standard_normal(1000)
    loss[600], loss[601], loss[602] = 9.0, 4.0, 1.5
    loss[603:] += 0.05 * np.exp(-(t[603:] - 603) / 400)
    val_steps = np.arange(50, 1000, 50)
    val = 2.0 * np.exp(-val_steps / 150) + 0.4 + np.where(val_steps > 600, 0.15, 0.0)
    write_torch(tmp_path, {"train/loss": list(zip(t.tolist(), loss.tolist(), strict=True)),
                           "val/loss": list(zip(val_steps.tolist(), val.tolist(), strict=True))})
    found = _rules(tmp_path)
    assert "overfitting" not in found, found["overfitting"].message
    assert found["loss-spike"].steps == (600,)


def test_epoch_mean_loss_creeping_down_at_chance_level_is_a_plateau(tmp_path):
    # four classes, epoch means: 1.40 -> 1.379 over 20 epochs (1.5%) -- smooth, so many noise
    # units, yet the model is still guessing (ln 4 = 1.386)
    rng = np.random.default_rng(5)
    e = np.arange(20)
    loss = 1.40 - 0.021 * e / 19 + 5e-4 * rng.standard_normal(20)
    logdir = _lightning_csv(tmp_path, [(int(i) * 50 + 49, {"train_loss_epoch": float(v), "epoch": int(i)})
                                       for i, v in zip(e, loss, strict=True)])
    found = _rules(logdir)
    assert "plateau" in found and "ln 4" in found["plateau"].message, found


def test_spike_in_an_epoch_level_log_is_found(tmp_path):
    # 80 epoch means of a learning run; one epoch's mean jumps 3.5x (a per-step spike averaged
    # into its epoch) and the next ones recover: less than half the curve's range (0.54)
    rng = np.random.default_rng(6)
    e = np.arange(80)
    loss = 1.5 * np.exp(-e / 12) + 0.2 + 0.005 * rng.standard_normal(80)
    loss[65], loss[66] = 0.74, 0.3
    f = _keras_csv(tmp_path / "log.csv", {"loss": loss})
    found = _rules(f)
    assert found["loss-spike"].steps == (65,), found


def test_spikes_that_show_only_in_the_val_loss_are_found(tmp_path):
    # per-step train loss stays smooth; two evaluations jump 3-4x and the next ones recover
    rng = np.random.default_rng(7)
    rows = []
    for step in range(0, 3000, 10):
        rows.append((step, {"train_loss_step": float(1.0 * np.exp(-step / 800) + 0.3 + 0.01 * rng.standard_normal())}))
        if step % 100 == 90:
            val = 1.0 * np.exp(-step / 800) + 0.35 + 0.005 * rng.standard_normal()
            val = {1490: 1.6, 2290: 1.9}.get(step, val)
            rows.append((step, {"val_loss": float(val)}))
    logdir = _lightning_csv(tmp_path, rows)
    found = _rules(logdir)
    assert found["loss-spike"].steps == (1490, 2290), found
    assert "in the val loss" in found["loss-spike"].message


def _torch_lrs(make_scheduler, steps: int) -> np.ndarray:
    """The LR a real torch scheduler gives at each optimizer step."""
    import torch

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=3e-4)
    sched = make_scheduler(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return np.asarray(out)


def test_resume_without_scheduler_state_is_named_as_the_cause(tmp_path):
    # warmup + cosine over 2000 steps; resumed at step 1200 from a checkpoint without the
    # scheduler state, so warmup+cosine start again; the grad norm explodes and the loss blows up
    import torch

    def sched(opt):
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-4, total_steps=2000, pct_start=0.05)

    lr = _torch_lrs(sched, 2000)
    lr = np.concatenate([lr[:1200], lr[:800]])
    rng = np.random.default_rng(8)
    t = np.arange(2000)
    loss = 2.0 * np.exp(-t / 300) + 0.5 + 0.02 * rng.standard_normal(2000)
    grad = 1.0 + 0.05 * rng.standard_normal(2000)
    loss[1230:] += np.linspace(0, 30, 770)
    grad[1230:] *= 40
    write_torch(tmp_path, {"train/loss": list(zip(t.tolist(), loss.tolist(), strict=True)),
                           "train/grad_norm": list(zip(t.tolist(), grad.tolist(), strict=True)),
                           "train/learning_rate": list(zip(t.tolist(), lr.tolist(), strict=True))})
    (d,) = diagnose(tmp_path)
    found = {f.rule: f for f in d.findings}
    f = found["lr-restart"]
    assert f.start_step in range(1199, 1202) and f.evidence["kind"] == "jump", f
    assert f.evidence["grad_exploded"] and "resumes from a checkpoint" in f.message
    kinds = [p.kind for p in f.proposals]
    assert kinds[:2] == ["restore_scheduler_state", "rewarmup"], kinds
    assert "scheduler.load_state_dict" in f.proposals[0].code
    assert "divergence" in found  # the symptom is still reported beside its cause


def _warm_restarts(t0: int, t_mult: int, steps: int) -> np.ndarray:
    import torch

    return _torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=t0, T_mult=t_mult), steps)


def test_cosine_warm_restarts_that_recover_are_not_flagged(tmp_path):
    # each restart bumps the loss, which settles lower by the end of the cycle: intended
    rng = np.random.default_rng(9)
    lr = _warm_restarts(200, 1, 1000)
    t = np.arange(1000)
    phase = t % 200
    loss = 1.5 * np.exp(-t / 300) + 0.3 + 0.1 * np.exp(-phase / 20) * (t >= 200) + 0.01 * rng.standard_normal(1000)
    logdir = _lightning_csv(tmp_path, [(int(i), {"train_loss_step": float(a), "lr-SGD": float(b)})
                                       for i, a, b in zip(t, loss, lr, strict=True)])
    assert "lr-restart" not in _rules(logdir)


def test_cosine_warm_restarts_that_destabilise_are_flagged_with_schedule_fixes(tmp_path):
    # T_0=150, T_mult=2: from the second restart on, the loss ends each cycle higher than before it
    rng = np.random.default_rng(10)
    lr = _warm_restarts(150, 2, 2250)
    t = np.arange(2250)
    loss = 1.5 * np.exp(-t / 100) + 0.3 + 0.005 * rng.standard_normal(2250)
    loss[450:] += 0.3 * (t[450:] - 450) / 1800
    logdir = _lightning_csv(tmp_path, [(int(i), {"train_loss_step": float(a), "lr-SGD": float(b)})
                                       for i, a, b in zip(t, loss, lr, strict=True)])
    (d,) = diagnose(logdir)
    f = next(f for f in d.findings if f.rule == "lr-restart")
    assert f.evidence["kind"] == "periodic" and f.evidence["loss_unrecovered"], f
    assert 450 in f.steps and 150 not in f.steps
    kinds = [p.kind for p in f.proposals]
    assert kinds[:2] == ["lower_restart_lr", "longer_restart_period"], kinds
    longer = f.proposals[1]
    assert longer.config["scheduler"]["type"] == "CosineAnnealingWarmRestarts"
    assert longer.config["scheduler"]["T_0"] == 300 and longer.config["scheduler"]["T_mult"] == 2


def test_losses_named_by_their_metric_family_are_resolved_and_explained(tmp_path, capsys):
    # a Lightning regression run that logs rmse_step / train_rmse_epoch and val_loss: no tag is
    # named like a train loss, yet the run is judged (its loss never moves: a plateau)
    from lrdoctor.cli import main

    rng = np.random.default_rng(11)
    rows = [(s, {"rmse_step": float(0.9 + 0.005 * rng.standard_normal())}) for s in range(0, 400, 2)]
    rows += [(s, {"train_rmse_epoch": 0.9, "val_loss": 0.81, "epoch": s // 100}) for s in range(99, 400, 100)]
    logdir = _lightning_csv(tmp_path / "a", rows)
    (d,) = diagnose(logdir)
    assert d.roles["train_loss"] == "rmse_step" and "plateau" in {f.rule for f in d.findings}
    assert main(["inspect", str(logdir)]) == 0
    out = capsys.readouterr().out
    assert "train_loss rmse_step: no tag named loss; rmse family" in " ".join(out.split())
    # the optimised loss before what reports it: nll over perplexity, mse over rmse
    nll = _lightning_csv(tmp_path / "b", [(s, {"perplexity": 20.0 - s / 100, "nll": float(np.log(20.0 - s / 100))})
                                          for s in range(50)])
    assert diagnose(nll)[0].roles["train_loss"] == "nll"
    mse = _lightning_csv(tmp_path / "c", [(s, {"rmse": 1.0 / (s + 1), "mse": 1.0 / (s + 1) ** 2}) for s in range(50)])
    assert diagnose(mse)[0].roles["train_loss"] == "mse"


def test_clip_threshold_from_a_too_short_stable_stretch_falls_back_and_says_so(tmp_path):
    # the stable stretch before an early onset holds 7 small warmup-time grad norms (~0.1); the
    # run's norms are ~0.86: a p90 of those 7 would clip every ordinary step
    from lrdoctor.model import Finding, Severity
    from lrdoctor.proposals import propose
    from lrdoctor.readers import discover
    from lrdoctor.roles import RoleView

    rng = np.random.default_rng(12)
    t = np.arange(1, 201)
    grad = np.where(t <= 7, 0.1 + 0.01 * t, 0.86 * np.exp(0.1 * rng.standard_normal(200)))
    loss = 2.0 * np.exp(-t / 50) + 0.3
    write_torch(tmp_path, {"train/loss": list(zip(t.tolist(), loss.tolist(), strict=True)),
                           "train/grad_norm": list(zip(t.tolist(), grad.tolist(), strict=True)),
                           "train/learning_rate": [(int(s), 1e-3) for s in t]})
    view = RoleView.of(discover(tmp_path)[0])
    f = Finding("loss-spike", Severity.WARNING, 8, 8, (8,), "", {"count": 1})
    clip = next(p for p in propose(f, view) if p.kind == "clip_grad_norm")
    assert clip.config["clip_grad_norm"] > 0.5, clip.summary
    assert "too short to trust" in clip.summary and "grad norm(s), fewer than 20" in clip.rationale


def _sw(logdir: Path, points: dict[str, list[tuple[int, float]]]) -> Path:
    """One SummaryWriter process's event file in ``logdir`` (each call a new file)."""
    from torch.utils.tensorboard import SummaryWriter

    before = set(logdir.glob("events.out.tfevents.*"))
    w = SummaryWriter(str(logdir))
    for tag, pts in points.items():
        for step, value in pts:
            w.add_scalar(tag, value, step)
    w.close()
    (new,) = set(logdir.glob("events.out.tfevents.*")) - before
    return new


def test_event_files_of_one_directory_grouped_the_way_the_user_meant(tmp_path):
    import shutil
    import time

    from lrdoctor.readers import discover

    curve = [(s, float(2.0 * np.exp(-s / 50) + 0.3)) for s in range(300)]
    # Lightning version_N: a truncated early copy of the event file beside the full later one
    lit = tmp_path / "lightning_logs" / "version_3"
    lit.mkdir(parents=True)
    full = _sw(lit, {"train_loss": curve})
    early = lit / full.name.replace("events.out.tfevents.", "events.out.tfevents.1")
    shutil.copy(full, early)
    with early.open("r+b") as fh:
        fh.truncate(full.stat().st_size // 2)
    (run,) = discover(lit)
    assert len(run.scalars) == 300 and any(a.kind == "grouping" for a in run.annotations)
    # HuggingFace: a second event file holding only the end-of-run eval belongs to the run
    hf = tmp_path / "hf"
    _sw(hf, {"train/loss": curve})
    time.sleep(1.1)
    _sw(hf, {"eval/loss": [(300, 0.35)]})
    (run,) = discover(hf)
    assert set(run.tags) == {"train/loss", "eval/loss"}
    # Keras Logs/train: one file per fit, each from epoch 0 again -> one run per attempt
    ker = tmp_path / "Logs" / "train"
    for k in range(3):
        _sw(ker, {"epoch_loss": [(e, float((1.0 + k) * np.exp(-e / 5))) for e in range(20)]})
        time.sleep(1.1)
    runs = discover(ker)
    assert sorted(r.name.split("#")[-1] for r in runs) == ["1", "2", "3"] and all(len(r.scalars) == 20 for r in runs)


def test_report_sweeps_only_siblings_of_one_experiment_and_says_why(tmp_path):
    # three unrelated projects, each one run with its own LR in its name: same writer, same tag
    # names -- not a sweep; two siblings of one experiment are, and the page says why
    from lrdoctor.report.html import render_report

    def run(where: Path, lr: float):
        from lightning.pytorch.loggers import CSVLogger

        logger = CSVLogger(str(where.parent), name=where.name, version="")
        for s in range(60):
            logger.log_metrics({"train_loss": float(np.exp(-s * lr * 10) + 0.2)}, step=s)
        logger.log_hyperparams({"lr": lr, "batch_size": 32})
        logger.save()

    for proj, lr in (("projA", 1e-3), ("projB", 1e-2), ("projC", 1e-1)):
        run(tmp_path / "unrelated" / proj / f"lr_{lr}", lr)
    html = render_report(diagnose(tmp_path / "unrelated"), workers=1)
    assert "Learning-rate sweep" not in html
    for lr in (1e-3, 1e-2):
        run(tmp_path / "exp" / "sweep" / f"lr_{lr}", lr)
    html = render_report(diagnose(tmp_path / "exp"), workers=1)
    assert "Learning-rate sweep" in html and "grouped as one sweep because they are 2 sibling runs under" in html


def test_keras_log_dir_fit_several_times_splits_into_its_fits_with_their_val_halves(tmp_path):
    # Keras's TensorBoard callback, log_dir="Logs", fit 3 times by 3 processes on 3 hosts: Logs/train
    # and Logs/validation each hold one event file per fit; fit k's val loss must be fit k's
    from lrdoctor.readers import discover
    from lrdoctor.roles import RoleView
    from tests.tb_writers import write_tf2

    logs = tmp_path / "Logs"
    for k in range(3):
        t0 = 1.7e9 + 3600 * k  # each fit an hour after the previous one
        for half, curve in (("train", [(e, (1 + k) / (e + 1)) for e in range(10)]),
                            ("validation", [(e, (1 + k) * (1 + 0.1 * e)) for e in range(10)])):
            before = set((logs / half).glob("*")) if (logs / half).exists() else set()
            write_tf2(logs / half, {"epoch_loss": curve}, wall_time=t0 + (5 if half == "validation" else 0))
            (new,) = set((logs / half).glob("*")) - before
            new.rename(new.with_name(f"events.out.tfevents.{int(t0)}.host{k}.{4242 + k}.{half}.v2"))
    runs = discover(logs)
    assert [r.name for r in runs] == ["Logs#1", "Logs#2", "Logs#3"]
    for k, run in enumerate(runs):
        view = RoleView.of(run)
        assert view.roles["val_loss"] == "validation/epoch_loss"
        assert view["train_loss"].values[0] == 1 + k and view["val_loss"].values[0] == 1 + k
        assert len(view["val_loss"]) == 10
        assert any(a.kind == "grouping" and f"fit {k + 1} of 3" in a.message for a in run.annotations)


def test_a_one_step_grad_burst_inside_an_epoch_mean_is_found(tmp_path):
    # Lightning self.log(..., on_epoch=True): one point per 20-step epoch, the epoch's mean. One
    # step of epoch 25 bursts to 15x: its epoch mean is only ~1.7x -- under a per-step 10x rule
    rng = np.random.default_rng(21)
    spe, epochs = 20, 40
    per_step = np.exp(0.3 * rng.standard_normal(spe * epochs))
    loss = 2.0 * np.exp(-np.arange(spe * epochs) / 300) + 0.3
    healthy = [(e * spe + spe - 1, {"grad_norm_epoch": float(per_step[e * spe:(e + 1) * spe].mean()),
                                    "train_loss_epoch": float(loss[e * spe:(e + 1) * spe].mean()), "epoch": e})
               for e in range(epochs)]
    assert "exploding-gradients" not in _rules(_lightning_csv(tmp_path / "healthy", healthy))
    per_step[25 * spe + 7] = 15.0
    burst = [(s, {**m, "grad_norm_epoch": float(per_step[i * spe:(i + 1) * spe].mean())})
             for i, (s, m) in enumerate(healthy)]
    found = _rules(_lightning_csv(tmp_path / "burst", burst))
    ev = found["exploding-gradients"].evidence
    assert found["exploding-gradients"].steps == (25 * spe + spe - 1,) and ev["steps_per_point"] == spe
    assert "mean of ~20 steps" in found["exploding-gradients"].message
    # the clip threshold is a percentile of those means: the proposal says single steps scatter more
    clip = next(p for p in found["exploding-gradients"].proposals if p.kind == "clip_grad_norm")
    assert "mean of ~20 optimizer steps" in clip.rationale, clip.rationale


def test_recovery_is_not_judged_from_too_few_losses_before_a_spike(tmp_path):
    # a spike at step 3 of a SummaryWriter log: the 3 losses before it (2.3, 1.2, 1.0) are the
    # initial transient, no level; the loss then stays at 2.2, twice what it was. A median of those
    # 3 (1.2) would call 2.2 "back near its level"; the proposal must say why it cannot
    from lrdoctor.model import Finding, Severity
    from lrdoctor.proposals import propose
    from lrdoctor.proposals.context import build_context
    from lrdoctor.proposals.spikes import spike_pattern
    from lrdoctor.readers import discover
    from lrdoctor.roles import RoleView

    rng = np.random.default_rng(13)
    loss = np.r_[2.3, 1.2, 1.0, 6.0, 2.2 * np.exp(0.02 * rng.standard_normal(196))]
    write_torch(tmp_path, {"train/loss": list(enumerate(loss.tolist()))})
    view = RoleView.of(discover(tmp_path)[0])
    f = Finding("loss-spike", Severity.WARNING, 3, 3, (3,), "", {"count": 1})
    assert spike_pattern(f, build_context(f, view), view).recovered is False
    skip = next(p for p in propose(f, view) if p.kind == "rollback_skip")
    assert "Only 3 train losses before step 3, too few" in skip.rationale
    assert "the run recovered from" not in skip.rationale


def test_loss_at_chance_over_a_hundred_classes_is_a_plateau_when_the_accuracy_is_a_guess(tmp_path):
    # CIFAR-100-like epoch means creeping 4.66 -> 4.59 (1.5%) around ln 100 = 4.605: past ten
    # classes every loss is near some ln k, so only an accuracy of ~1/100 says the model guesses
    rng = np.random.default_rng(22)
    e = np.arange(20)
    loss = 4.66 - 0.07 * e / 19 + 5e-4 * rng.standard_normal(20)

    def log(where, acc):
        return _lightning_csv(tmp_path / where, [(int(i) * 50 + 49, {"train_loss_epoch": float(v), "val_acc": float(a),
                                                                    "epoch": int(i)})
                                                 for i, v, a in zip(e, loss, acc, strict=True)])

    found = _rules(log("guess", 0.01 + 0.001 * rng.standard_normal(20)))
    msg = found["plateau"].message if "plateau" in found else found
    assert "a uniform guess over ~" in msg and "val_acc 0.01" in msg, msg
    assert 95 <= found["plateau"].evidence["chance_classes"] <= 105
    assert "plateau" not in _rules(log("learns", np.linspace(0.05, 0.3, 20)))


def _classifier(tmp_path: Path, loss: np.ndarray, val_acc: np.ndarray | None = None) -> Path:
    points = {"train_loss": [(i + 1, float(v)) for i, v in enumerate(loss)]}
    if val_acc is not None:
        points["val_acc"] = [(25 * (i + 1), float(v)) for i, v in enumerate(val_acc)]
    write_torch(tmp_path / "run", points)
    return tmp_path / "run"


def test_a_loss_that_collapses_back_to_chance_is_divergence_not_a_plateau(tmp_path):
    """A 4-class classifier learns (1.39 -> ~0.4) while its LR warms up too far, then loses it
    all: the loss goes back to ln 4 and stays (3.6x its best: no 5x blow-up). Before, the plateau
    rule called this "never moved" and proposed a 10x higher LR."""
    rng = np.random.default_rng(3)
    t = np.arange(400)
    loss = np.where(t < 80, 1.39 - 1.0 * t / 80, 0.39)
    loss = np.where(t >= 100, 1.39, np.where(t >= 80, 0.39 + (t - 80) / 20, loss))
    loss = loss * np.exp(0.08 * rng.standard_normal(len(t)))
    found = _rules(_classifier(tmp_path, loss, np.r_[[0.6, 0.8, 0.85], np.full(13, 0.25)]))
    assert "divergence" in found and "plateau" not in found, found
    f = found["divergence"]
    assert f.evidence["kind"] == "collapse" and 95 <= f.start_step <= 130
    assert f.evidence["returned_share"] > 0.9 and "lost what it had learned" in f.message
    assert any(p.config.get("lr_scale", 1) < 1 or "lr" in p.config for p in f.proposals)
    assert not any(p.kind == "raise_lr" for p in f.proposals)


def test_a_loss_that_rises_part_way_or_comes_back_down_is_no_collapse(tmp_path):
    rng = np.random.default_rng(4)
    t = np.arange(400)
    base = 0.3 + 1.1 * np.exp(-t / 40)
    # a warmup bump half way back to the start, that falls again; a rise that recovers late
    for k, bump in enumerate((0.55 * np.exp(-((t - 150) / 30.0) ** 2), np.where((t > 150) & (t < 300), 0.9, 0.0))):
        loss = (base + bump) * np.exp(0.05 * rng.standard_normal(len(t)))
        found = _rules(_classifier(tmp_path / str(k), loss))
        assert "divergence" not in found, (k, found)


def test_a_loss_that_fell_and_came_back_did_move(tmp_path):
    """The plateau rule's "never moved" compares the start with the end; a loss that went far
    below both in between moved (with divergence ignored, nothing says "plateau")."""
    rng = np.random.default_rng(6)
    t = np.arange(300)
    loss = 1.39 - 0.9 * np.sin(np.pi * t / 299) + 0.03 * rng.standard_normal(len(t))
    from lrdoctor.engine.spec import load_rules

    (d,) = diagnose(_classifier(tmp_path, loss), rules=[r for r in load_rules() if r.name != "divergence"])
    assert "plateau" not in {f.rule for f in d.findings}, d.findings


def test_a_resume_that_lost_the_scheduler_state_late_in_a_cosine_decay_is_found(tmp_path):
    """A real loop with CosineAnnealingLR, stopped at 60% and resumed from a checkpoint of the
    model and optimizer but a fresh scheduler: the LR jumps from 0.38x its peak back to the peak
    (2.6x, under the 3x the rule used to ask for)."""
    import torch
    from torch.utils.tensorboard import SummaryWriter

    torch.manual_seed(0)
    x = torch.randn(256, 8)
    y = x @ torch.randn(8, 1)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    total = 300
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total)
    with SummaryWriter(str(tmp_path / "run")) as w:
        for step in range(1, total + 1):
            if step == int(0.6 * total):  # the resume: the optimizer's state, a new scheduler
                for g in opt.param_groups:
                    g["lr"] = g["initial_lr"]
                sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total)
            i = torch.randint(0, 256, (32,))
            loss = torch.nn.functional.mse_loss(model(x[i]), y[i])
            opt.zero_grad()
            loss.backward()
            w.add_scalar("train_loss", float(loss), step)
            w.add_scalar("lr", opt.param_groups[0]["lr"], step)
            opt.step()
            sched.step()
    found = _rules(tmp_path / "run")
    assert "lr-restart" in found, found
    assert abs(found["lr-restart"].start_step - int(0.6 * total)) <= 2
