"""Property tests: damaged event files never crash the reader with anything but LogFormatError,
and never yield a (tag, step, value) that the intact file does not hold."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from damage import byte_damage, damaged
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tb_writers import write_tensorboardx, write_tf2, write_torch

from lrdoctor.errors import LogFormatError
from lrdoctor.readers._tfevent_file import decode_file
from lrdoctor.readers.tensorboard import read_event_file


def _points(n: int) -> dict:
    return {
        "train/loss": [(s, 1.0 / (s + 1)) for s in range(n)],
        "lr": [(s, 1e-3 * (1 + s % 3)) for s in range(0, n, 2)],
        "val/acc": [(s, math.nan if s == 4 else 0.5) for s in range(0, n, 4)],
    }


def _key(tag, step, value) -> tuple:
    return tag, int(step), np.float64(value).view(np.int64).item()


def _keys(df) -> set:
    return {_key(*row) for row in zip(df["tag"], df["step"], df["value"], strict=True)}


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict[str, tuple[bytes, set]]:
    out = {}
    for name, write in [("torch", write_torch), ("tensorboardx", write_tensorboardx), ("tf2", write_tf2)]:
        d = tmp_path_factory.mktemp(name)
        (f,) = write(d, _points(24))
        if name == "torch":  # a non-scalar record among the scalars
            from torch.utils.tensorboard import SummaryWriter

            with SummaryWriter(log_dir=str(d), filename_suffix=".img") as w:
                w.add_image("img", np.zeros((3, 8, 8)), 3)
                w.add_scalar("after_image", 7.0, 3)
            f2 = next(p for p in d.iterdir() if p.name.endswith(".img"))
            f.write_bytes(f.read_bytes() + f2.read_bytes())
            f2.unlink()
        df, _, notes = read_event_file(f)
        assert notes == []
        out[name] = (f.read_bytes(), _keys(df))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(writer=st.sampled_from(["torch", "tensorboardx", "tf2"]), how=byte_damage, strict=st.booleans(),
       chunk=st.sampled_from([None, 61, 700]))
def test_damage_never_crashes_nor_invents_points(originals, tmp_path, writer, how, strict, chunk):
    data, truth = originals[writer]
    path = Path(tmp_path) / "events.out.tfevents.1.damaged"
    path.write_bytes(damaged(data, how))
    try:
        if chunk is None:
            df, _, notes = read_event_file(path, strict=strict)
            got = _keys(df)
        else:  # small read chunks: damage and resynchronisation across chunk borders
            fs = decode_file(path, strict=strict, chunk_size=chunk)
            got = {_key(fs.tag_names[t], s, v) for t, s, v in zip(fs.tag_id, fs.step, fs.value, strict=True)}
            notes = fs.annotations
    except LogFormatError as err:
        assert strict, "only strict mode raises"
        assert str(path) in str(err) and "byte " in str(err)
        return
    assert got <= truth
    assert all(a.path == str(path) for a in notes)
    # whatever damage lost is accounted for (a cut or deletion on a record boundary is a valid file)
    if how[0] in ("flip", "insert") and len(got) < len(truth):
        assert any(a.kind in ("corrupt_record", "truncated") for a in notes)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(noise=st.binary(min_size=0, max_size=300))
def test_arbitrary_bytes(tmp_path, noise):
    path = Path(tmp_path) / "events.out.tfevents.2.noise"
    path.write_bytes(noise)
    df, _, _ = read_event_file(path)
    assert len(df) == 0 or set(df.columns) == {"tag", "step", "wall_time", "value"}
