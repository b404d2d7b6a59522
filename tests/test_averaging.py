"""Which series are epoch means, and over how many steps (lrdoctor.averaging)."""

from __future__ import annotations

import numpy as np

from lrdoctor.averaging import steps_per_point
from lrdoctor.model import Run, Series, make_scalars


def _s(tag: str, steps) -> Series:
    steps = np.asarray(steps, dtype=np.int64)
    return Series(tag, steps, np.ones(len(steps)))


def test_epoch_tags_average_their_step_spacing_and_samples_do_not():
    ends = [e * 50 + 49 for e in range(10)]
    assert steps_per_point(_s("grad_norm_epoch", ends)) == 50  # Lightning on_epoch: <name>_epoch
    assert steps_per_point(_s("train/epoch_loss", ends)) == 50  # Keras TensorBoard: epoch_<name>
    assert steps_per_point(_s("grad_norm", ends)) == 1  # HF logs one step's norm every 50 steps
    # Lightning on_step=False, on_epoch=True keeps the bare name: one point per epoch of the epoch tag
    epoch = Series("epoch", np.asarray(ends, dtype=np.int64), np.arange(10, dtype=np.float64))
    assert steps_per_point(_s("grad_norm", ends), epoch=epoch) == 50
    two_per_epoch = Series("epoch", np.arange(0, 500, 25, dtype=np.int64), np.repeat(np.arange(10.0), 2))
    assert steps_per_point(_s("grad_norm", range(0, 500, 25)), epoch=two_per_epoch) == 1


def test_epoch_indexed_logs_need_the_steps_per_epoch_from_hparams():
    assert steps_per_point(_s("loss", range(30)), step_axis="epoch") == 1  # unknown: per-step thresholds
    assert steps_per_point(_s("loss", range(30)), step_axis="epoch", steps_per_epoch=391) == 391


def _keras_csv(path, losses) -> None:
    """What Keras's CSVLogger writes (it is a csv.DictWriter over the epoch's logs)."""
    import csv

    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["epoch", "loss"])
        w.writeheader()
        for e, v in enumerate(losses):
            w.writerow({"epoch": e, "loss": v})


def test_epoch_means_flag_comes_from_the_tag_or_the_axis_and_reaches_the_detectors(tmp_path):
    from lrdoctor.averaging import with_averaging
    from lrdoctor.engine.diagnose import diagnose_runs
    from lrdoctor.readers import discover
    from lrdoctor.roles import RoleView

    # SGD at a far too high LR: epoch means fall to 0.40, then bounce at 0.47-2.16, never NaN
    bounce = [1.9125, 0.4013, 0.5945, 1.0348, 0.8159, 1.2347, 0.9558, 0.4908, 2.1624, 0.6535, 0.7942, 0.8164,
              0.5347, 0.668, 0.6195, 0.6182, 0.6278, 0.8454, 0.5977, 0.5183, 0.471, 0.4715, 0.7196, 0.7908, 0.908]
    _keras_csv(tmp_path / "training.log", bounce)
    (run,) = discover(tmp_path)
    view = RoleView.of(run)
    s = with_averaging(view, view["train_loss"])
    assert run.step_axis == "epoch" and s.epoch_means and s.averages == 1.0  # how many steps: unknown
    (d,) = diagnose_runs([run], proposals=False)
    (f,) = [f for f in d.findings if f.rule == "divergence"]
    assert f.evidence["kind"] == "unstable" and f.start_step == 2
    # on a run indexed by steps a bare tag stays unflagged, whatever its spacing (HF logs one
    # step's loss every 50 steps); a Lightning <name>_epoch tag is flagged
    per_step = RoleView.of(Run(name="r", source="r", format="test", scalars=make_scalars("loss", [0], None, [1.0])))
    assert not with_averaging(per_step, _s("train_loss", range(0, 500, 50))).epoch_means
    assert with_averaging(per_step, _s("train_loss_epoch", range(49, 500, 50))).epoch_means
