"""TensorBoard layouts beyond one directory: Keras's train/ + validation/, add_hparams names."""

from __future__ import annotations

import pytest
from tb_writers import write_tf2

from lrdoctor.cli import main
from lrdoctor.readers import discover
from lrdoctor.roles import RoleView


def _keras_logs(root, n=6):
    """What Keras's TensorBoard callback writes: logs/train and logs/validation, epoch_* tags."""
    write_tf2(root / "train", {"epoch_loss": [(e, 1.0 / (e + 1)) for e in range(n)],
                               "epoch_accuracy": [(e, 0.5 + 0.05 * e) for e in range(n)]})
    write_tf2(root / "validation", {"epoch_loss": [(e, 1.0 + 0.25 * e) for e in range(n)],
                                    "epoch_accuracy": [(e, 0.5) for e in range(n)]})


def test_keras_train_validation_dirs_are_one_run(tmp_path):
    logs = tmp_path / "logs"
    _keras_logs(logs)
    runs = discover(logs)
    assert len(runs) == 1
    run = runs[0]
    assert run.name == "logs"
    assert sorted(run.tags) == ["train/epoch_accuracy", "train/epoch_loss", "validation/epoch_accuracy",
                                "validation/epoch_loss"]
    assert run.step_axis == "epoch"
    view = RoleView.of(run)
    assert view.roles == {"train_loss": "train/epoch_loss", "val_loss": "validation/epoch_loss",
                          "val_metric": "validation/epoch_accuracy"}
    assert view["val_loss"].values.tolist() == [1.0, 1.25, 1.5, 1.75, 2.0, 2.25]


def test_keras_runs_in_a_sweep_stay_apart(tmp_path):
    _keras_logs(tmp_path / "lr_1e-3")
    _keras_logs(tmp_path / "lr_1e-2")
    write_tf2(tmp_path / "solo" / "train", {"epoch_loss": [(0, 1.0)]})  # train/ alone: no merge
    names = sorted(r.name for r in discover(tmp_path))
    assert names == ["lr_1e-2", "lr_1e-3", "solo/train"]


def test_keras_export_has_epoch_axis(tmp_path, capsys):
    _keras_logs(tmp_path / "logs")
    out = tmp_path / "x.csv"
    assert main(["export", str(tmp_path / "logs"), "-o", str(out)]) == 0
    import pandas as pd

    table = pd.read_csv(out)
    assert list(table.columns) == ["run", "tag", "step", "wall_time", "value", "step_axis"]
    assert set(table["step_axis"]) == {"epoch"}


def test_add_hparams_metric_keeps_logged_name_without_clash(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(tmp_path)) as w:
        for step in range(3):
            w.add_scalar("train/loss", 1.0 / (step + 1), step)
        w.add_hparams({"lr": 0.01}, {"hparam/final": 6.5}, run_name="hp")
    run = discover(tmp_path)[0]
    assert "hparam/final" in run.tags and "hparams/hparam/final" not in run.tags
    assert run.series("hparam/final")["value"].tolist() == [pytest.approx(6.5)]
    assert run.step_axis == "step"
    assert not [a for a in run.annotations if a.kind == "restart"]


def test_run_whose_event_file_holds_no_scalar_is_left_out_with_a_note(tmp_path, capsys):
    """A run directory whose only event file holds no scalar (text only) beside one that logged:
    a note naming it, exit 0; an extra scalar-less event file inside a run is simply part of it."""
    from tb_writers import linear_points, write_torch
    from torch.utils.tensorboard import SummaryWriter

    write_torch(tmp_path / "a", linear_points(["loss"], 30))
    write_torch(tmp_path / "c", linear_points(["loss"], 30))
    for d in ("b", "c"):
        w = SummaryWriter(str(tmp_path / d), filename_suffix=".text")
        w.add_text("note", "started", 0)
        w.close()
    assert main(["diagnose", str(tmp_path), "--fail-on", "never"]) == 0
    cap = capsys.readouterr()
    assert "2 runs diagnosed" in cap.out
    (note,) = [ln for ln in cap.err.splitlines() if ln.startswith("lrdoctor:")]
    assert note.startswith("lrdoctor: note: left out: ") and str(tmp_path / "b") in note
