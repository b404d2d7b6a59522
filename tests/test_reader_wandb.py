"""W&B reader on ``wandb/`` folders written by the wandb package itself (offline mode).

The fixtures are committed (tests/data/wandb, made by scripts/make_tracker_fixtures.py with
wandb 0.31: starting wandb's Go core per run is too slow for every test session); expected.json
holds every point exactly as the script handed it to ``wandb.log``.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lrdoctor.cli import main
from lrdoctor.errors import LogFormatError
from lrdoctor.readers import discover, read_source
from lrdoctor.readers.base import ReadOptions, RunSource

DATA = Path(__file__).parent / "data" / "wandb"
EXPECTED = json.loads((DATA / "expected.json").read_text())


def _num(v) -> float:
    return float(v)  # "nan"/"inf"/"-inf" strings too


def _points(run) -> set[tuple[str, int, str]]:
    s = run.scalars
    return {(t, int(st_), repr(float(v))) for t, st_, v in zip(s["tag"].astype(str), s["step"], s["value"], strict=True)}


def test_every_point_of_every_run_as_logged():
    runs = {r.name: r for r in discover(DATA)}
    assert set(runs) == set(EXPECTED)  # debug.log next to the runs is wandb's, not a run
    for name, exp in EXPECTED.items():
        run = runs[name]
        assert run.format == "wandb" and run.step_axis == "step"
        assert sorted(run.tags) == sorted(exp["points"])
        for tag, pts in exp["points"].items():
            s = run.series(tag)
            assert s["step"].tolist() == [p[0] for p in pts], (name, tag)
            got, want = s["value"].to_numpy(), np.array([_num(p[1]) for p in pts])
            assert np.array_equal(got, want, equal_nan=True), (name, tag)
        # wall time from wandb's _timestamp: present and never going back
        wall = run.scalars["wall_time"].to_numpy()
        assert np.isfinite(wall).all() and (np.diff(wall) >= 0).all()


def test_config_is_hparams_nested_keys_joined_and_summary_kept():
    run = next(r for r in discover(DATA) if r.name.endswith(_run_id("warmup-nan-loss")))
    assert run.hparams == {"lr": 1e-3, "optimizer/name": "adamw", "optimizer/betas": [0.9, 0.999],
                           "batch_size": 32}
    assert "val/loss" in run.tags  # logged as {"val": {"loss": ...}}
    assert run.summary["best_val"] == 0.25  # set through run.summary
    assert run.summary["train/loss"] == 0.111  # the last logged value
    # a string and a boolean were logged: no points, one annotation per key naming where
    notes = {a.message.split(":")[0]: a for a in run.annotations if a.kind == "non_numeric"}
    assert set(notes) == {"key 'note'", "key 'flag'", "key 'caption'"}
    assert all(a.location.startswith("byte ") for a in notes.values())


def _run_id(spec_name: str) -> str:
    """The run directory (relative to DATA) of the run the script named ``spec_name``."""
    return next(k for k, v in EXPECTED.items() if v["name"] == spec_name)


def test_single_file_and_run_directory(tmp_path):
    name = _run_id("online-layout")
    run_dir = DATA / name
    [f] = run_dir.glob("*.wandb")
    [by_file] = discover(f)
    [by_dir] = discover(run_dir)
    assert by_file.name == by_dir.name == run_dir.name  # named by their directory
    assert _points(by_file) == _points(by_dir)


def test_record_split_across_blocks_is_read():
    # the warmup run logs a 70,000-character caption: that record spans three 32 KiB blocks,
    # and the point logged with it (step 501) is read
    run = next(r for r in discover(DATA) if r.name == _run_id("warmup-nan-loss"))
    s = run.series("train/loss")
    assert s["step"].iloc[-1] == 501 and s["value"].iloc[-1] == 0.111


def _read(path: Path, strict: bool = False):
    src = RunSource(name="x", root=path, files=(path,), format="wandb")
    return read_source(src, ReadOptions(strict=strict))


def _source_file() -> Path:
    return next((DATA / _run_id("warmup-nan-loss")).glob("*.wandb"))


def test_truncated_file_keeps_everything_before_with_offset(tmp_path):
    data = _source_file().read_bytes()
    cut = tmp_path / "run-cut.wandb"
    cut.write_bytes(data[: len(data) // 2])
    run = _read(cut)
    full = _points(_read(_source_file()))
    got = _points(run)
    assert got and got < full
    [note] = [a for a in run.annotations if a.kind == "truncated"]
    offset = int(note.location.split()[1])
    assert 7 <= offset < len(data) // 2


def test_corrupt_block_is_skipped_and_named(tmp_path):
    data = bytearray(_source_file().read_bytes())
    off = 4 * 32768 + 5000  # inside the fifth block (history records there)
    data[off:off + 40] = b"\xff" * 40
    bad = tmp_path / "run-bad.wandb"
    bad.write_bytes(bytes(data))
    run = _read(bad)
    notes = [a for a in run.annotations if a.kind == "corrupt_record"]
    assert notes and all(a.location.startswith("byte ") for a in notes)
    full = _points(_read(_source_file()))
    got = _points(run)
    assert got < full
    # reading resumed at the next block: points from the end of the file are still there
    assert ("train/loss", 501, repr(0.111)) in got
    with pytest.raises(LogFormatError, match=r"byte \d+"):
        _read(bad, strict=True)


def test_not_a_wandb_file_is_one_line_error(tmp_path, capsys):
    f = tmp_path / "run-x.wandb"
    f.write_bytes(b":W&B" + struct.pack("<HB", 0xBEE1, 9) + b"\0" * 20)
    assert main(["inspect", str(f)]) == 2
    err = capsys.readouterr().err
    assert "version 9" in err and str(f) in err and "Traceback" not in err


def test_diagnose_wandb_folder_lists_every_run_and_flags_the_diverging_one(capsys):
    rc = main(["diagnose", str(DATA), "--json"])
    doc = json.loads(capsys.readouterr().out)
    findings = {r["name"]: {f["rule"] for f in r["findings"]} for r in doc["runs"]}
    assert set(findings) == set(EXPECTED)
    assert "divergence" in findings[_run_id("diverging-sgd")]
    assert findings[_run_id("online-layout")] == set()
    assert rc != 2


_INTACT: dict[str, set] = {}


def _intact() -> set:
    if not _INTACT:
        _INTACT["p"] = _points(_read(_source_file()))
    return _INTACT["p"]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_damaged_files_never_crash_nor_invent_points(tmp_path, data):
    raw = bytearray(_source_file().read_bytes())
    cut = data.draw(st.integers(7, len(raw)))
    raw = raw[:cut]
    for _ in range(data.draw(st.integers(0, 4))):
        if len(raw) <= 8:
            break
        i = data.draw(st.integers(7, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    f = tmp_path / "run-fuzz.wandb"
    f.write_bytes(bytes(raw))
    try:
        run = _read(f)
    except LogFormatError:
        return  # e.g. no scalar left: a one-line error, not a crash
    assert _points(run) <= _intact()
    assert isinstance(dict(run.summary), dict)  # decoded from the damaged file without a crash


def test_crc_is_zlib_crc32_of_type_and_data():
    # the framing assumption the reader rests on, checked on the real file's first record
    data = _source_file().read_bytes()
    crc, length, kind = struct.unpack_from("<IHB", data, 7)
    assert crc == zlib.crc32(data[14:14 + length], zlib.crc32(bytes([kind])))


def test_key_hash_collisions_fall_back_to_exact_grouping(monkeypatch):
    from lrdoctor.readers import _wandb_items

    want = _points(_read(_source_file()))
    monkeypatch.setattr(_wandb_items, "_hash_rows", lambda keys: np.zeros(len(keys), dtype=np.uint64))
    assert _points(_read(_source_file())) == want


def test_values_read_the_same_through_numpy_where_pandas_rounds_inexactly(monkeypatch):
    # pandas < 3.1 converts CSV floats with its own inexact parser: numpy's cast is used there
    from lrdoctor.readers import _wandb_items

    want = _points(_read(_source_file()))
    monkeypatch.setattr(_wandb_items, "_CSV_FLOATS_EXACT", False)
    assert _points(_read(_source_file())) == want


@pytest.mark.parametrize("exact", [True, False])
def test_bulk_value_parse_refuses_any_text_that_is_not_one_number(monkeypatch, exact):
    from lrdoctor.readers import _wandb_items

    monkeypatch.setattr(_wandb_items, "_CSV_FLOATS_EXACT", exact)

    def parse(*texts: bytes):
        width = max(map(len, texts)) + 1
        rows = np.array([list(t.ljust(width, b"#")) for t in texts], dtype=np.uint8)
        return _wandb_items._parse_lines(rows, np.array([len(t) for t in texts]))

    got = parse(b"0.1", b"-2.5e-07", b"NaN", b"Infinity", b"-Infinity", b"1e400", b"17", b"1.7000000000000002")
    want = [0.1, -2.5e-07, float("nan"), float("inf"), float("-inf"), float("inf"), 17.0, 1.7000000000000002]
    assert [repr(v) for v in got.tolist()] == [repr(v) for v in want]
    for bad in (b"1,2", b"1\n2", b"1x", b"-", b'"1"', b"1\x002"):
        assert parse(b"3", bad) is None, bad


def test_a_step_metric_logged_in_every_row_is_the_step():
    """Lightning's WandbLogger (and HF's WandbCallback) log train, LR and val metrics in separate
    wandb.log calls, each with their optimizer step (trainer/global_step, define_metric's
    step_metric): W&B's _step counts the calls. The fixture (scripts/make_wandb_stepmetric_fixture.py,
    the real wandb) spikes at optimizer step 100 of 200."""
    (run,) = discover(Path(__file__).parent / "data" / "wandb_stepmetric")
    loss = run.scalars[run.scalars["tag"] == "train_loss_step"]
    assert loss["step"].tolist() == list(range(200))
    val = run.scalars[run.scalars["tag"] == "val_loss"]
    assert val["step"].tolist() == list(range(24, 200, 25))
    assert any(a.kind == "step_axis" and "trainer/global_step" in a.message for a in run.annotations)
    from lrdoctor.api import diagnose

    (d,) = diagnose([run])
    (spike,) = [f for f in d.findings if f.rule == "loss-spike"]
    assert spike.start_step == 100


def test_a_step_metric_in_few_rows_or_not_integral_leaves_wandbs_step_and_fills_the_odd_row():
    import pandas as pd

    from lrdoctor.readers.wandb_steps import to_global_steps

    def table(tags, steps, values):
        return pd.DataFrame({"tag": tags, "step": steps, "wall_time": [0.0] * len(tags), "value": values})

    # the key in 1 of 3 rows: W&B's _step stays
    scal = table(["loss", "trainer/global_step", "loss", "loss"], [0, 0, 1, 2], [1.0, 5.0, 0.9, 0.8])
    out, note = to_global_steps(scal, "x.wandb")
    assert note is None and out["step"].tolist() == [0, 0, 1, 2]
    # in every row but not integral: stays too
    scal = table(["loss", "trainer/global_step", "loss", "trainer/global_step"], [0, 0, 1, 1], [1.0, 5.0, 0.9, 5.5])
    assert to_global_steps(scal, "x.wandb")[1] is None
    # in 2 of 3 rows: the row without it (a direct experiment.log) takes the step logged before it
    scal = table(["loss", "trainer/global_step", "extra", "loss", "trainer/global_step"], [0, 0, 1, 2, 2],
                 [1.0, 7.0, 3.0, 0.9, 8.0])
    out, note = to_global_steps(scal, "x.wandb")
    assert out["step"].tolist() == [7, 7, 7, 8, 8] and "2 of 3 rows" in note.message
