"""Bad cells, bad lines and empty logs: reported (file + line), never invented points or a
healthy-looking empty run; errors one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from reader_fixtures import write_history_json, write_mlflow_run, write_trainer_state

from lrdoctor.cli import main
from lrdoctor.errors import EmptyRunError, LeftOut, LogFormatError, NoRunsFoundError
from lrdoctor.readers import discover, discover_with_errors


def _values(run, tag):
    s = run.series(tag)
    return s["step"].tolist(), s["value"].to_numpy()


def _mlflow(tmp_path, lines):
    run = write_mlflow_run(tmp_path / "mlruns", "0", "abc", {"loss": [(1000 + i, 1.0 / (i + 1), i) for i in range(4)]},
                           run_name="r")
    with (run / "metrics" / "loss").open("a") as fh:
        fh.write(lines)
    return run


@pytest.mark.parametrize("bad", ["garbage line here", "1004 0.5", "1004 0.5 4 9", "1004 N/A 4"])
def test_mlflow_bad_line_is_named_and_skipped(tmp_path, bad):
    run_dir = _mlflow(tmp_path, f"{bad}\n1005 0.125 5\n")
    [run] = discover(tmp_path)
    steps, vals = _values(run, "loss")
    assert steps == [0, 1, 2, 3, 5]  # no invented step-0 NaN point
    assert not np.isnan(vals).any()
    kinds = [a.kind for a in run.annotations]
    assert kinds == ["bad_line"]  # and no bogus restart / duplicate notes
    note = run.annotations[0]
    assert note.path == str(run_dir / "metrics" / "loss") and note.location == "line 5"
    with pytest.raises(LogFormatError) as err:
        discover(tmp_path, strict=True)
    assert "\n" not in str(err.value) and "line 5" in str(err.value)


def test_mlflow_logged_nan_and_inf_stay_points(tmp_path):
    _mlflow(tmp_path, "1004 nan 4\n1005 inf 5\n1006 -inf 6\n")
    [run] = discover(tmp_path)
    steps, vals = _values(run, "loss")
    assert steps == [0, 1, 2, 3, 4, 5, 6]
    assert np.isnan(vals[4]) and vals[5] == np.inf and vals[6] == -np.inf
    assert not run.annotations


def test_csv_non_numeric_cells_are_reported_not_nan_points(tmp_path, capsys):
    f = tmp_path / "log.csv"
    f.write_text("step,loss\n0,1.0\n1,N/A\n2,null\n3,None\n4,--\n5,NaN\n6,Infinity\n7,-inf\n8,0.5\n")
    [run] = discover(f)
    steps, vals = _values(run, "loss")
    assert steps == [0, 5, 6, 7, 8]
    assert np.isnan(vals[1]) and vals[2] == np.inf and vals[3] == -np.inf
    notes = [a for a in run.annotations if a.kind == "non_numeric"]
    assert [a.location for a in notes] == [f"line {n}, column 'loss'" for n in (3, 4, 5, 6)]
    assert "'N/A'" in notes[0].message and "no point" in notes[0].message
    with pytest.raises(LogFormatError, match="line 3, column 'loss'"):
        discover(f, strict=True)
    # the text cells must not read as a divergence
    f2 = tmp_path / "t.csv"
    f2.write_text("step,loss\n" + "".join(f"{i},{1.0 / (i + 1)}\n" for i in range(50)) + "50,N/A\n")
    assert main(["diagnose", str(f2)]) != 2
    assert "divergence" not in capsys.readouterr().out


def test_json_text_values_are_reported_not_points(tmp_path):
    f = tmp_path / "log.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in [
        {"step": 1, "loss": 1.0}, {"step": 2, "loss": "N/A"}, {"step": 3, "loss": None},
        {"step": 4, "loss": "NaN"}, {"step": 5, "loss": 0.5}]) + "\n")
    [run] = discover(f)
    steps, vals = _values(run, "loss")
    assert steps == [1, 4, 5] and np.isnan(vals[1])
    [note] = [a for a in run.annotations if a.kind == "non_numeric"]
    assert note.location == "line 2, key 'loss'" and "'N/A'" in note.message


@pytest.mark.parametrize("kind", ["header_only", "hf_empty", "history_empty", "forced_csv"])
def test_run_without_scalars_is_an_error(tmp_path, kind):
    if kind == "header_only":
        f = tmp_path / "metrics.csv"
        f.write_text("step,loss,val_loss\n")
        args = []
    elif kind == "hf_empty":
        f = write_trainer_state(tmp_path / "trainer_state.json", [], global_step=0)
        args = []
    elif kind == "history_empty":
        f = write_history_json(tmp_path / "history.json", {"loss": [], "val_loss": []})
        args = []
    else:
        f = tmp_path / "log.jsonl"
        f.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.5}\n')
        args = ["--format", "csv"]
    # a JSON line forced as CSV has no header row of names ('"loss": 1.0}' is a printed value)
    with pytest.raises(LogFormatError, match="no CSV header" if kind == "forced_csv" else "no scalar values"):
        discover(f, format=args[1] if args else None)
    assert main(["inspect", str(f), *args]) == 2


def test_tree_reports_unreadable_runs(tmp_path, capsys):
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "log.csv").write_text("step,loss\n0,1.0\n1,0.5\n")
    (tmp_path / "broken").mkdir()
    write_trainer_state(tmp_path / "broken" / "trainer_state.json", [{"step": 1, "loss": 1.0}], global_step=1)
    text = (tmp_path / "broken" / "trainer_state.json").read_text()
    (tmp_path / "broken" / "trainer_state.json").write_text(text[: len(text) // 2])  # cut mid-write
    runs, errors = discover_with_errors(tmp_path)
    assert [r.name for r in runs] == ["good"]
    assert len(errors) == 1 and "cannot parse" in str(errors[0]) and not isinstance(errors[0], LeftOut)
    assert str(tmp_path / "broken" / "trainer_state.json") in str(errors[0])
    assert [r.name for r in discover(tmp_path)] == ["good"]  # the old API still works
    with pytest.raises(LogFormatError):
        discover(tmp_path, strict=True)
    # inspect prints what it read and exits 2 naming the unreadable run, even with -q
    assert main(["-q", "inspect", str(tmp_path)]) == 2
    cap = capsys.readouterr()
    assert "run good" in cap.out and "trainer_state.json" in cap.err and "cannot parse" in cap.err
    assert main(["export", str(tmp_path), "-o", str(tmp_path / "x.csv")]) == 2
    assert (tmp_path / "x.csv").is_file()


def test_run_without_metrics_beside_others_is_a_note(tmp_path, capsys):
    """A run created and crashed before its first log (a CSV with its header only) among runs
    that logged is left out with a note naming it, not an error; under --strict too."""
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "log.csv").write_text("step,loss\n0,1.0\n1,0.5\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.csv").write_text("step,loss\n")
    for strict in (False, True):
        runs, errors = discover_with_errors(tmp_path, strict=strict)
        assert [r.name for r in runs] == ["good"]
        (note,) = errors
        assert isinstance(note, EmptyRunError) and str(tmp_path / "empty" / "metrics.csv") in str(note)
    assert main(["-q", "inspect", str(tmp_path)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lrdoctor: note: left out: ") and "metrics.csv" in err[0]


def test_tree_with_only_unreadable_runs(tmp_path):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "metrics.csv").write_text("step,loss\n")
    with pytest.raises(LogFormatError, match="none of the 2 runs"):
        discover_with_errors(tmp_path)
    with pytest.raises(NoRunsFoundError):
        discover_with_errors(tmp_path / "a", format="mlflow")


def test_tiny_and_empty_event_files_named(tmp_path, capsys):
    empty = tmp_path / "events.out.tfevents.1700000000.host.1.v2"
    empty.write_bytes(b"")
    with pytest.raises(LogFormatError, match="empty event file") as err:
        discover(empty)
    assert str(empty) in str(err.value)
    tiny = tmp_path / "events.out.tfevents.1700000001.host.2.v2"
    tiny.write_bytes(b"abcde")
    assert main(["inspect", str(tiny)]) == 2
    err = capsys.readouterr().err
    assert "last record is incomplete" in err and "no scalar values" in err and str(tiny) in err
    assert "not a log format" not in err


def test_lfs_pointer_csv_in_a_tree_is_warned_about(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "log.csv").write_text("step,loss\n0,1.0\n1,0.5\n")
    (tmp_path / "b").mkdir()
    pointer = tmp_path / "b" / "metrics.csv"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 + "\nsize 123\n")
    assert main(["inspect", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert str(pointer) in err and "Git LFS pointer" in err
    with pytest.raises(LogFormatError, match="Git LFS pointer, not the log file"):
        discover(pointer)


def test_strict_corrupt_record_error_does_not_say_skipped(tmp_path):
    from tb_writers import write_torch

    [f] = write_torch(tmp_path, {"loss": [(i, 1.0 / (i + 1)) for i in range(20)]})
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    [run] = discover(tmp_path)
    assert any(a.kind == "corrupt_record" and "skipped" in a.message for a in run.annotations)
    with pytest.raises(LogFormatError) as err:
        discover(tmp_path, strict=True)
    assert "skipped" not in str(err.value) and "--strict" in str(err.value)


def test_files_named_like_logs_that_no_reader_knows_are_noted_in_a_tree(tmp_path, capsys):
    """In a tree, a file named like a log (by any of its suffixes) that is empty or of no known
    format is named once in a note, the others still read; images, weights and code stay silent."""
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "log.csv").write_text("step,loss\n0,1.0\n1,0.5\n")
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "train.log").write_bytes(bytes(range(256)) * 8)  # binary junk
    (tmp_path / "metrics.csv.junk").write_bytes(b"\x00\x01garbage")
    for quiet in ("plot.png", "model.pt", "train.py", "vocab.txt"):
        (tmp_path / quiet).write_bytes(b"\x89PNG\x00\x00 junk")
    assert main(["diagnose", str(tmp_path), "--fail-on", "never"]) == 0
    cap = capsys.readouterr()
    notes = sorted(ln for ln in cap.err.splitlines() if ln.startswith("lrdoctor:"))
    assert [n.split(": ")[3].rsplit("/", 1)[-1] for n in notes] == ["empty.csv", "metrics.csv.junk", "train.log"]
    assert all(n.startswith("lrdoctor: note: not read: ") for n in notes)
    assert "empty file (0 bytes)" in notes[0] and "not a log format lrdoctor knows" in notes[2]
    # with nothing readable beside them, the error says what was there
    (tmp_path / "good" / "log.csv").unlink()
    with pytest.raises(NoRunsFoundError, match="3 files named like logs not read"):
        discover(tmp_path)
