"""The TensorBoard reader on files written by the real writers (see tb_writers.py)."""

from __future__ import annotations

import logging
import math
import struct
from pathlib import Path

import numpy as np
import pytest
from tb_writers import (
    event_files,
    write_session_log_start,
    write_tensorboardx,
    write_tf2,
    write_torch,
)

from lrdoctor.errors import LogFormatError
from lrdoctor.readers._tfevent_file import decode_file
from lrdoctor.readers.base import ReadOptions, RunSource, is_lfs_pointer
from lrdoctor.readers.tensorboard import TensorBoardReader, read_event_file

REAL_LOGS = Path(__file__).resolve().parents[2] / "shared" / "real_logs"

POINTS = {
    "train/loss": [(0, 2.5), (1, 1.25), (2, math.nan), (3, math.inf), (4, -math.inf), (5, 0.1),
                   (200, 1e-30), (20000, 3.4e38), (3_000_000_000, -0.0)],
    "lr": [(0, 1e-3), (1, 0.000123456789), (2, 7.0)],
}

WRITERS = {
    "torch": lambda d: write_torch(d, POINTS),
    "torch_new_style": lambda d: write_torch(d, POINTS, new_style=True),
    "torch_new_style_double": lambda d: write_torch(d, POINTS, new_style=True, double_precision=True),
    "tensorboardx": lambda d: write_tensorboardx(d, POINTS),
    "tf2": lambda d: write_tf2(d, POINTS),
}


def _source(root: Path, name: str = "run") -> RunSource:
    return RunSource(name=name, root=root, files=tuple(event_files(root)), format="tensorboard")


def _read(root: Path, strict: bool = False):
    return TensorBoardReader().read(_source(root), ReadOptions(strict=strict))


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))


@pytest.mark.parametrize("writer", list(WRITERS))
def test_values_round_trip_exactly(tmp_path, writer):
    WRITERS[writer](tmp_path)
    run = _read(tmp_path)
    assert run.format == "tensorboard"
    assert sorted(run.tags) == ["lr", "train/loss"]
    assert run.annotations == ()
    for tag, pts in POINTS.items():
        s = run.series(tag)
        steps, values = zip(*pts, strict=True)
        expected = np.asarray(values, dtype=np.float64 if writer.endswith("double") else np.float32)
        assert s["step"].tolist() == list(steps)
        assert _same(s["value"].to_numpy(), expected)
        assert s["wall_time"].notna().all() and (s["wall_time"] > 1e9).all()
    loss = run.series("train/loss")["value"].to_numpy()
    assert np.isnan(loss[2]) and loss[3] == np.inf and loss[4] == -np.inf
    assert np.signbit(loss[-1])  # -0.0 keeps its sign
    assert run.scalars.dtypes["step"] == np.int64 and run.scalars.dtypes["value"] == np.float64


def test_read_event_file_returns_table_hparams_notes(tmp_path):
    (f,) = write_torch(tmp_path, POINTS)
    df, hparams, notes = read_event_file(f)
    assert list(df.columns) == ["tag", "step", "wall_time", "value"]
    assert len(df) == sum(len(p) for p in POINTS.values())
    assert hparams == {} and notes == []


def test_several_files_merged_in_step_order_and_restart_annotated(tmp_path):
    write_torch(tmp_path, {"loss": [(s, float(s)) for s in range(0, 10)]})
    # a resumed run: a second writer in the same directory starts again from step 5
    write_torch(tmp_path, {"loss": [(s, 100.0 + s) for s in range(5, 15)]})
    assert len(event_files(tmp_path)) == 2
    run = _read(tmp_path)
    s = run.series("loss")
    assert len(s) == 20  # nothing deleted
    assert s["step"].is_monotonic_increasing
    # stable merge: at a repeated step the first run's point comes first
    at7 = s[s["step"] == 7]["value"].tolist()
    assert at7 == [7.0, 107.0]
    restarts = [a for a in run.annotations if a.kind == "restart"]
    assert len(restarts) == 1 and restarts[0].location == "step 5"
    assert "'loss'" in restarts[0].message


def test_steps_going_backwards_within_a_file_are_kept_and_annotated(tmp_path):
    pts = [(s, float(s)) for s in range(10)] + [(s, -float(s)) for s in range(4, 8)]
    write_torch(tmp_path, {"loss": pts}, in_order=False)
    run = _read(tmp_path)
    assert len(run.series("loss")) == 14
    (note,) = [a for a in run.annotations if a.kind == "restart"]
    assert note.location == "step 4" and "after step 9" in note.message


def test_session_log_start_after_data_is_a_restart(tmp_path):
    write_tf2(tmp_path, {"loss": [(s, 1.0) for s in range(5)]}, wall_time=1e9)
    write_session_log_start(tmp_path, step=3)
    write_tf2(tmp_path, {"loss": [(s, 2.0) for s in range(3, 6)]}, wall_time=2e9)
    run = _read(tmp_path)
    assert len(run.series("loss")) == 8
    assert any(a.kind == "restart" and "SessionLog.START" in a.message and a.location == "step 3"
               for a in run.annotations)


def test_add_scalars_subdirectories_become_tags(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(tmp_path)) as w:
        for step in range(5):
            w.add_scalars("Loss", {"train": 1.0 / (step + 1), "validation": 2.0 / (step + 1)}, step)
            w.add_scalars("metrics/acc", {"top1": 0.5}, step)
            w.add_scalar("lr", 0.1, step)
    assert len(event_files(tmp_path)) == 4
    run = _read(tmp_path)
    assert sorted(run.tags) == ["Loss/train", "Loss/validation", "lr", "metrics/acc/top1"]
    assert _same(run.series("Loss/validation")["value"], np.float32([2.0 / (s + 1) for s in range(5)]))


def test_add_hparams_into_run_hparams(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(tmp_path)) as w:
        for step in range(3):
            w.add_scalar("hparam/accuracy", 0.1 * step, step)
        w.add_hparams({"lr": 0.01, "batch_size": 32, "optimizer": "adam", "nesterov": True},
                      {"hparam/accuracy": 0.2}, run_name="hp")
    run = _read(tmp_path)
    assert run.hparams == {"lr": 0.01, "batch_size": 32, "optimizer": "adam", "nesterov": True}
    assert len(run.series("hparam/accuracy")) == 3  # the final metric does not join the curve
    assert run.series("hparams/hparam/accuracy")["value"].tolist() == [pytest.approx(0.2)]


def test_non_scalar_events_are_skipped(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    rng = np.random.default_rng(0)
    with SummaryWriter(log_dir=str(tmp_path)) as w:
        for step in range(4):
            w.add_image("img", rng.random((3, 64, 64)), step)
            w.add_histogram("weights", rng.standard_normal(1000), step)
            w.add_text("note", f"step {step}", step)
            w.add_scalar("loss", float(step), step)
            w.add_scalar("acc", float(step) / 10, step, new_style=True)
    run = _read(tmp_path)
    assert sorted(run.tags) == ["acc", "loss"]
    assert run.series("loss")["value"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert run.annotations == ()


def test_chunk_boundaries_and_records_larger_than_a_chunk(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(tmp_path)) as w:
        for step in range(300):
            w.add_scalar("loss", step * 0.5, step)
            if step % 100 == 0:
                w.add_image("img", np.full((3, 40, 40), 0.5), step)  # ~5 KB record
    (f,) = event_files(tmp_path)
    whole = decode_file(f)
    for chunk in (64, 997, 4096):
        part = decode_file(f, chunk_size=chunk)
        assert part.step.tolist() == whole.step.tolist() and _same(part.value, whole.value)
        assert part.annotations == []
    assert whole.value.tolist() == [s * 0.5 for s in range(300)]


def _record_offsets(path: Path) -> list[int]:
    data = path.read_bytes()
    offs, off = [], 0
    while off + 12 <= len(data):
        offs.append(off)
        off += struct.unpack_from("<Q", data, off)[0] + 16
    return offs


def test_truncated_last_record_keeps_everything_before(tmp_path, caplog):
    (f,) = write_torch(tmp_path, {"loss": [(s, float(s)) for s in range(50)]})
    data = f.read_bytes()
    last = _record_offsets(f)[-1]
    f.write_bytes(data[: last + 20])
    with caplog.at_level(logging.WARNING, logger="lrdoctor"):
        run = _read(tmp_path, strict=True)  # a file still being written is not an error
    assert run.series("loss")["step"].tolist() == list(range(49))
    (note,) = run.annotations
    assert note.kind == "truncated" and note.location == f"byte {last}" and note.path == str(f)
    assert "truncated" not in caplog.text or str(f) in caplog.text
    assert str(f) in caplog.text


@pytest.mark.parametrize("where", ["payload", "length"])
def test_corrupt_record_is_skipped_named_and_strict_raises(tmp_path, caplog, where):
    (f,) = write_torch(tmp_path, {"loss": [(s, float(s)) for s in range(50)]})
    offs = _record_offsets(f)
    bad = offs[21]  # record 0 is the file_version event: this holds step 20
    data = bytearray(f.read_bytes())
    if where == "payload":
        length = struct.unpack_from("<Q", data, bad)[0]
        data[bad + 12 + length - 2] ^= 0x40  # inside the value: decodes fine, only the CRC tells
    else:
        data[bad + 1] = 0x7F  # absurd length
    f.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="lrdoctor"):
        run = _read(tmp_path)
    steps = run.series("loss")["step"].tolist()
    assert steps == [s for s in range(50) if s != 20]
    assert run.series("loss")["value"].tolist() == [float(s) for s in steps]  # no invented value
    (note,) = run.annotations
    assert note.kind == "corrupt_record" and note.location == f"byte {bad}" and note.path == str(f)
    assert f"byte {bad}" in caplog.text
    with pytest.raises(LogFormatError) as err:
        _read(tmp_path, strict=True)
    assert str(f) in str(err.value) and f"byte {bad}" in str(err.value)


def test_garbage_inserted_between_records_resynchronises(tmp_path):
    (f,) = write_tf2(tmp_path, {"loss": [(s, float(s)) for s in range(30)]})
    offs = _record_offsets(f)
    data = f.read_bytes()
    cut = offs[10]
    garbage = b"\x00garbage bytes\xff" * 7
    f.write_bytes(data[:cut] + garbage + data[cut:])
    fs = decode_file(f)
    assert fs.step.tolist() == list(range(30))
    (note,) = fs.annotations
    assert note.location == f"byte {cut}" and f"skipped {len(garbage)} bytes" in note.message


def test_sniff_by_content_and_lfs_pointer(tmp_path):
    (f,) = write_torch(tmp_path, POINTS)
    reader = TensorBoardReader()
    assert reader.sniff(f, f.read_bytes()[:512])
    fake = tmp_path / "events.out.tfevents.123.host"
    lfs = b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12345\n"
    assert not reader.sniff(fake, lfs) and is_lfs_pointer(lfs)
    assert not is_lfs_pointer(f.read_bytes()[:512])
    assert not reader.sniff(fake, b"step,loss\n0,1.0\n1,0.5\n")
    assert not reader.sniff(fake, bytes(range(64)))


def test_lfs_pointer_in_a_run_is_annotated_not_fatal(tmp_path, caplog):
    write_torch(tmp_path, POINTS)
    ptr = tmp_path / "events.out.tfevents.1.lfs"
    ptr.write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 1\n")
    with caplog.at_level(logging.WARNING, logger="lrdoctor"):
        run = _read(tmp_path)
    assert len(run.series("train/loss")) == len(POINTS["train/loss"])
    assert [a.kind for a in run.annotations] == ["lfs_pointer"]
    assert f"Git LFS pointer, not an event file: {ptr}" in caplog.text


def _reference_points(path: Path) -> set[tuple[str, int, int]]:
    """(tag, step, float64 bits) of every scalar, via tensorboard's own loader and protobuf."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto import event_pb2
    from tensorboard.util import tensor_util

    out = set()
    for raw in RawEventFileLoader(str(path)).Load():
        ev = event_pb2.Event.FromString(raw)
        for v in ev.summary.value:
            if v.HasField("simple_value"):
                x = float(np.float32(v.simple_value))
            elif v.HasField("tensor") and not v.tensor.tensor_shape.dim and v.tensor.dtype in (1, 2):
                if v.metadata.plugin_data.plugin_name not in ("", "scalars"):
                    continue
                x = float(tensor_util.make_ndarray(v.tensor))
            else:
                continue
            out.add((v.tag, ev.step, np.float64(x).view(np.int64).item()))
    return out


@pytest.mark.real_logs
@pytest.mark.skipif(not REAL_LOGS.is_dir(), reason="../shared/real_logs absent")
@pytest.mark.parametrize("path", sorted(REAL_LOGS.glob("tb*/events.out.tfevents.*")), ids=lambda p: p.parent.name)
def test_real_event_files_match_tensorboards_own_loader(path):
    df, _, notes = read_event_file(path)
    got = {(t, s, np.float64(v).view(np.int64).item())
           for t, s, v in zip(df["tag"], df["step"], df["value"], strict=True)}
    assert got == _reference_points(path)
    assert len(df) == len(got) or df.duplicated(["tag", "step"]).any()
    assert [a for a in notes if a.kind != "restart"] == []


def test_unusual_layouts_take_the_protobuf_path(tmp_path):
    """Multi-value summaries, metadata only on a tag's first tensor (TF1 writers strip it later),
    tensors of another plugin, huge and negative steps, long tags: all read, nothing invented."""
    from tb_writers import tf2_scalar_summary
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    w = EventFileWriter(str(tmp_path))
    long_tag = "x" * 300
    for step, value in [(0, 1.0), (1, 2.0), (2, 3.0)]:
        s = tf2_scalar_summary("tf1/loss", value)
        if step:
            s.value[0].ClearField("metadata")
        w.add_event(event_pb2.Event(wall_time=1e9 + step, step=step, summary=s))
    other = tf2_scalar_summary("custom/thing", 5.0)
    other.value[0].metadata.plugin_data.plugin_name = "custom"
    w.add_event(event_pb2.Event(wall_time=1e9, step=0, summary=other))
    both = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="a", simple_value=0.5),
                                      summary_pb2.Summary.Value(tag="b", simple_value=-0.5)])
    w.add_event(event_pb2.Event(wall_time=1e9, step=7, summary=both))
    for step in (-5, 2**50, 2**62):
        s = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="odd_steps", simple_value=step % 7)])
        w.add_event(event_pb2.Event(wall_time=1e9, step=step, summary=s))
    w.add_event(event_pb2.Event(wall_time=1e9, step=3, summary=summary_pb2.Summary(
        value=[summary_pb2.Summary.Value(tag=long_tag, simple_value=1.5)])))
    w.close()
    run = _read(tmp_path)
    assert sorted(run.tags) == sorted(["tf1/loss", "a", "b", "odd_steps", long_tag])
    assert run.series("tf1/loss")["value"].tolist() == [1.0, 2.0, 3.0]
    assert run.series("a")["value"].tolist() == [0.5] and run.series("b")["value"].tolist() == [-0.5]
    assert sorted(run.series("odd_steps")["step"].tolist()) == [-5, 2**50, 2**62]
    assert run.series(long_tag)["value"].tolist() == [1.5]
