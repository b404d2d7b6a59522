"""Following runs while they are written: each poll reads only the appended, complete units,
and the points delivered over all polls are exactly what the reader reads from the whole file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lrdoctor.api import load_runs
from lrdoctor.live.follow import TreeFollower, complete_frames_end

SAMPLES = Path(__file__).resolve().parents[1] / "sample_logs"


def _grow_copy(src_dir: Path, dst_dir: Path, rng: np.random.Generator, polls: int = 12):
    """Copy a run directory into ``dst_dir`` a few random byte chunks at a time (every file grows
    at once, cut anywhere: mid record, mid line, mid JSON), yielding after each chunk."""
    files = [p for p in sorted(src_dir.rglob("*")) if p.is_file()]
    for p in files:  # run metadata (MLflow meta.yaml, params, hparams.yaml) is written whole at the start
        if p.suffix == ".yaml" or p.parent.name == "params":
            (dst_dir / p.relative_to(src_dir)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(p, dst_dir / p.relative_to(src_dir))
    files = [p for p in files if not (p.suffix == ".yaml" or p.parent.name == "params")]
    data = {p: p.read_bytes() for p in files}
    cuts = {p: np.sort(rng.integers(0, len(b) + 1, polls - 1)) for p, b in data.items()}
    for i in range(polls):
        for p, b in data.items():
            end = len(b) if i == polls - 1 else int(cuts[p][i])
            dest = dst_dir / p.relative_to(src_dir)
            dest.parent.mkdir(parents=True, exist_ok=True)
            done = dest.stat().st_size if dest.exists() else 0
            if end > done:
                with open(dest, "ab") as fh:
                    fh.write(b[done:end])
        yield i


def _points(df: pd.DataFrame) -> pd.DataFrame:
    out = df[["tag", "step", "value"]].assign(tag=df["tag"].astype(str))
    return out.sort_values(["tag", "step"], kind="stable").reset_index(drop=True)


GROWING = [SAMPLES / p.name for p in sorted(SAMPLES.iterdir()) if p.is_dir()] + [
    Path(__file__).parent / "data" / "wandb",  # .wandb files are appended to as well
    Path(__file__).parent / "data" / "wandb_stepmetric"]  # Lightning's trainer/global_step as the step


@pytest.mark.parametrize("src", GROWING, ids=lambda p: p.name)
def test_points_over_all_polls_equal_one_read_of_the_finished_log(src, tmp_path):
    sample = src.name
    rng = np.random.default_rng(sum(map(ord, sample)))
    dst = tmp_path / sample
    tree = TreeFollower(dst)
    got: dict[str, list[pd.DataFrame]] = {}
    for _ in _grow_copy(src, dst, rng):
        for follower, new in tree.poll():
            got.setdefault(follower.name, []).append(new)
    expected = {r.name: r for r in load_runs(dst)}
    assert set(got) == set(expected)
    for name, run in expected.items():
        polled = pd.concat(got[name], ignore_index=True)
        pd.testing.assert_frame_equal(_points(polled), _points(run.scalars), check_dtype=False)
    files = sum(p.stat().st_size for p in dst.rglob("*") if p.is_file())
    if sample != "healthy-transformer-hf":  # trainer_state.json: rewritten whole, read again whole
        # appended bytes, not the file again per poll (a .wandb file is read on from the start
        # of the 32 KiB block where the last poll stopped)
        assert tree.bytes_read <= files + 12 * 32768 * max(1, len(list(dst.rglob("*.wandb"))))


def test_a_half_written_event_record_is_left_for_the_next_poll(tmp_path):
    src = next((SAMPLES / "healthy-mlp-tensorboard").glob("events.out.tfevents.*"))
    data = src.read_bytes()
    end = complete_frames_end(data[:1000])
    assert 0 < end < 1000 and complete_frames_end(data) == len(data)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    dest = run_dir / src.name
    dest.write_bytes(data[:1000])
    tree = TreeFollower(run_dir)
    (_, first), = tree.poll()
    assert tree.runs[f"{run_dir}|"].files[dest].offset == end
    with open(dest, "ab") as fh:
        fh.write(data[1000:])
    (_, second), = tree.poll()
    assert len(first) + len(second) == len(load_runs(run_dir)[0].scalars)
    assert tree.poll() == []


def test_lightning_csv_rewritten_with_a_new_column_delivers_only_new_points(tmp_path):
    d = tmp_path / "version_0"
    d.mkdir()
    f = d / "metrics.csv"
    f.write_text("epoch,step,train_loss\n0,0,1.0\n0,1,0.9\n")
    tree = TreeFollower(d)
    (_, a), = tree.poll()
    assert len(a) == 4  # epoch and train_loss at two steps
    # Lightning's CSVLogger rewrites the file with the new header when val_loss first appears
    f.write_text("epoch,step,train_loss,val_loss\n0,0,1.0,\n0,1,0.9,\n0,2,0.8,0.85\n")
    (_, b), = tree.poll()
    assert sorted(zip(b["tag"], b["step"], strict=True)) == [("epoch", 2), ("train_loss", 2), ("val_loss", 2)]


def test_mlflow_run_followed_per_metric_file(tmp_path):
    src = next(p for p in (SAMPLES / "plateau-gru-mlflow").rglob("meta.yaml") if (p.parent / "metrics").is_dir())
    run_dir = tmp_path / "mlruns" / "0" / "abc"
    shutil.copytree(src.parent, run_dir)
    tree = TreeFollower(tmp_path)
    (follower, pts), = tree.poll()
    assert follower.name.endswith("gru_lm-0") and len(pts) == len(load_runs(tmp_path)[0].scalars)
    with open(run_dir / "metrics" / "train_loss", "a") as fh:
        fh.write("1700000000000 0.5 9999\n1700000000000 0.4 10")  # second line not finished
    (_, pts), = tree.poll()
    assert list(pts["step"]) == [9999] and list(pts["value"]) == [0.5]


DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("fixture", ["wandb", "mlflow_sqlite"])
def test_tracker_stores_come_whole_on_the_first_poll_then_nothing_while_unchanged(fixture, tmp_path):
    dst = tmp_path / fixture
    shutil.copytree(DATA / fixture, dst)
    tree = TreeFollower(dst)
    first = {f.name: len(pts) for f, pts in tree.poll()}
    expected = {r.name: len(r.scalars) for r in load_runs(dst)}
    assert first == expected and tree.poll() == []
