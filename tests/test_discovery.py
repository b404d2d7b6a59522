"""Discovery: files, run directories and trees of runs; naming; grouping; what is ignored."""

from __future__ import annotations

import json
import logging

import pytest
from reader_fixtures import (
    snapshot,
    write_keras_csv,
    write_lightning_csv,
    write_mlflow_run,
    write_trainer_state,
)

from lrdoctor.errors import LogFormatError, NoRunsFoundError
from lrdoctor.readers import discover, find_run_sources, supported_formats

LFS_POINTER = (b"version https://git-lfs.github.com/spec/v1\n"
               b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 52340\n")


def lightning(d, n=3):
    write_lightning_csv(d, [{"loss": 1.0 / (i + 1), "epoch": 0, "step": i} for i in range(n)])


def test_sweep_tree_names_from_relative_paths(tmp_path):
    for lr in ("1e-3", "1e-2"):
        lightning(tmp_path / "runs" / f"lr_{lr}")
    for v in (10, 2, 1):
        lightning(tmp_path / "lightning_logs" / f"version_{v}")
    runs = discover(tmp_path)
    assert [r.name for r in runs] == ["lightning_logs/version_1", "lightning_logs/version_2",
                                      "lightning_logs/version_10", "runs/lr_1e-2", "runs/lr_1e-3"]
    assert [r.name for r in discover(tmp_path / "runs")] == ["lr_1e-2", "lr_1e-3"]
    # a single run passed directly gets its own directory's name
    assert [r.name for r in discover(tmp_path / "runs" / "lr_1e-2")] == ["lr_1e-2"]
    assert [r.name for r in discover(tmp_path / "runs" / "lr_1e-2" / "metrics.csv")] == ["lr_1e-2"]


def test_unrelated_files_ignored_and_origin_attached(tmp_path):
    d = tmp_path / "run1"
    lightning(d)
    (d / "hparams.yaml").write_text("lr: 0.1\n")
    (tmp_path / "README.md").write_text("# my runs\n")
    (tmp_path / "meta.yaml").write_text("name: x\n")
    (tmp_path / "plot.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    (tmp_path / "notes.csv").write_bytes(b"\x00\x01binary")
    origin = {"workload": "mlp", "config": {"lr": 0.1}, "labels": [{"rule": "divergence", "onset_step": 5}]}
    (d / "lrdoctor-run.json").write_text(json.dumps(origin))
    [run] = discover(tmp_path)
    assert run.name == "run1" and run.origin == origin and run.hparams == {"lr": 0.1}


def test_empty_tree_and_unknown_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "README.md").write_text("nothing here\n")
    with pytest.raises(NoRunsFoundError, match=f"no runs found under {tmp_path}"):
        discover(tmp_path)
    f = tmp_path / "weird.dat"
    f.write_text("hello world\n")
    with pytest.raises(LogFormatError) as err:
        discover(f)
    for fmt in supported_formats():
        assert fmt in str(err.value)


def test_hf_checkpoint_copies(tmp_path):
    hist = [{"loss": 1.0, "step": 10, "epoch": 0.1}, {"loss": 0.5, "step": 20, "epoch": 0.2}]
    out = tmp_path / "with_final"
    write_trainer_state(out / "trainer_state.json", hist, global_step=20)
    write_trainer_state(out / "checkpoint-10" / "trainer_state.json", hist[:1], global_step=10)
    only = tmp_path / "only_checkpoints"
    write_trainer_state(only / "checkpoint-10" / "trainer_state.json", hist[:1], global_step=10)
    write_trainer_state(only / "checkpoint-20" / "trainer_state.json", hist, global_step=20)
    runs = discover(tmp_path)
    assert [r.name for r in runs] == ["only_checkpoints", "with_final"]
    for r in runs:
        assert r.series("loss")["step"].tolist() == [10, 20]
    assert runs[0].source.endswith("checkpoint-20/trainer_state.json")
    assert runs[0].annotations[0].kind == "checkpoint_copy"


def test_mixed_formats_in_one_directory_get_file_names(tmp_path):
    lightning(tmp_path / "exp")
    write_keras_csv(tmp_path / "exp" / "training_log.csv", [{"loss": 1.0}, {"loss": 0.5}])
    runs = discover(tmp_path)
    assert sorted(r.name for r in runs) == ["exp/metrics.csv", "exp/training_log.csv"]
    assert sorted(r.format for r in runs) == ["keras_csv", "lightning_csv"]


def test_forced_format_on_a_tree(tmp_path):
    lightning(tmp_path / "a")
    write_keras_csv(tmp_path / "b" / "log.csv", [{"loss": 1.0}])
    [run] = discover(tmp_path, format="keras_csv")
    assert run.name == "b"
    with pytest.raises(NoRunsFoundError, match="of format 'mlflow'"):
        discover(tmp_path, format="mlflow")


def test_bad_run_in_tree_skipped_with_warning_error_under_strict(tmp_path, caplog):
    lightning(tmp_path / "good")
    bad = tmp_path / "bad" / "trainer_state.json"
    bad.parent.mkdir()
    bad.write_text('{"log_history": [{"loss": 1.0, "step": 1}')  # truncated JSON
    with caplog.at_level(logging.WARNING, logger="lrdoctor"):
        runs = discover(tmp_path)
    assert [r.name for r in runs] == ["good"]
    assert "bad" in caplog.text
    with pytest.raises(LogFormatError, match="trainer_state.json"):
        discover(tmp_path, strict=True)


def test_reading_never_writes(tmp_path):
    lightning(tmp_path / "a")
    write_mlflow_run(tmp_path / "mlruns", "0", "r", {"loss": [(1, 1.0, 0)]})
    write_trainer_state(tmp_path / "hf" / "trainer_state.json", [{"loss": 1.0, "step": 1}], global_step=1)
    before = snapshot(tmp_path)
    assert len(discover(tmp_path)) == 3
    assert snapshot(tmp_path) == before


def test_lfs_pointer_named_like_event_file_is_a_warning(tmp_path, caplog):
    lfs = tmp_path / "hub_mirror" / "runs" / "events.out.tfevents.1719642696.host.1.0"
    lfs.parent.mkdir(parents=True)
    lfs.write_bytes(LFS_POINTER)
    lightning(tmp_path / "other")
    with caplog.at_level(logging.WARNING, logger="lrdoctor"):
        runs = discover(tmp_path)
    assert [r.name for r in runs] == ["other"]
    assert str(lfs) in caplog.text and "LFS" in caplog.text
    with pytest.raises(NoRunsFoundError, match="Git LFS pointer"):
        discover(lfs.parent)
    with pytest.raises(LogFormatError, match="Git LFS pointer"):
        discover(lfs)


# -- TensorBoard grouping, with event files written by torch's SummaryWriter -------------------

def write_tb_runs(root):
    from torch.utils.tensorboard import SummaryWriter

    expect = {}
    w = SummaryWriter(log_dir=str(root / "lr_0.1"))
    for step in range(5):
        w.add_scalar("train/loss", 1.0 / (step + 1), step)
        w.add_scalars("Loss", {"train": 2.0 - step / 10, "val": 2.5 - step / 10}, step)  # subdirs
    w.add_hparams({"lr": 0.1, "bs": 32}, {"hparam/best": 0.2})  # another subdir
    w.close()
    expect["lr_0.1"] = [1.0 / (s + 1) for s in range(5)]
    w = SummaryWriter(log_dir=str(root / "lr_0.01"))
    for step in range(3):
        w.add_scalar("train/loss", 0.5 * step, step)
    w.close()
    expect["lr_0.01"] = [0.5 * s for s in range(3)]
    return expect


def test_tensorboard_grouping(tmp_path):
    pytest.importorskip("torch.utils.tensorboard")
    write_tb_runs(tmp_path)
    sources = find_run_sources(tmp_path)
    assert [s.name for s in sources] == ["lr_0.01", "lr_0.1"]
    assert all(s.format == "tensorboard" for s in sources)
    big = sources[1]
    sub = {f.parent.relative_to(big.root).as_posix() for f in big.files}
    assert "." in sub and "Loss_train" in sub and "Loss_val" in sub and len(sub) == 4  # + hparams dir
    assert len(sources[0].files) == 1


def test_tensorboard_round_trip(tmp_path):
    pytest.importorskip("torch.utils.tensorboard")
    pytest.importorskip("lrdoctor.readers.tensorboard")
    expect = write_tb_runs(tmp_path)
    (tmp_path / "lr_0.01" / "events.out.tfevents.1.mirror.0").write_bytes(LFS_POINTER)
    runs = {r.name: r for r in discover(tmp_path)}
    [lfs] = [a for a in runs["lr_0.01"].annotations if a.kind == "lfs_pointer"]
    assert lfs.path.endswith("events.out.tfevents.1.mirror.0")
    assert set(runs) == set(expect)
    for name, vals in expect.items():
        s = runs[name].series("train/loss")
        assert s["step"].tolist() == list(range(len(vals)))
        assert s["value"].tolist() == pytest.approx(vals, rel=1e-7)  # float32 on disk
    assert len(runs["lr_0.1"].series("Loss/train")) + len(runs["lr_0.1"].series("Loss")) >= 5
