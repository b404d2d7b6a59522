"""Encodings, undecodable bytes, enormous cells and thousands of columns: read exactly or reported
(file + line/byte), never a traceback. The random version of these is tests/test_readers_fuzz.py."""

from __future__ import annotations

import codecs
import csv
import json

import numpy as np
import pytest
from reader_fixtures import write_history_json, write_llamafactory_jsonl

from lrdoctor.cli import main
from lrdoctor.errors import LogFormatError
from lrdoctor.readers import csvfile, discover


def _points(run) -> list[tuple]:
    df = run.scalars
    return sorted(zip(df["tag"].astype(str), df["step"].tolist(), df["value"].tolist(), strict=True))


@pytest.mark.parametrize("arrow", [True, False])
def test_issue_14_invalid_utf8_cell_is_reported_not_a_traceback(tmp_path, capsys, monkeypatch, arrow):
    """The issue's file: pyarrow died with ArrowInvalid ('Invalid UTF8 payload')."""
    monkeypatch.setattr(csvfile, "USE_ARROW", arrow)
    d = tmp_path / "d"
    d.mkdir()
    (d / "log.csv").write_bytes(b"step,loss\n1,0.5\n2,abc\n3,\xff\xfe\n")
    out = tmp_path / "out.csv"
    assert main(["export", str(d), "-o", str(out)]) == 0
    assert out.read_text().splitlines()[1:] == ["d,loss,1,nan,0.5,step"]
    [run] = discover(d)
    notes = {a.kind: a for a in run.annotations}
    assert notes["invalid_utf8"].location == "line 4, byte 24"
    assert {a.location for a in run.annotations if a.kind == "non_numeric"} == {
        "line 3, column 'loss'", "line 4, column 'loss'"}
    with pytest.raises(LogFormatError, match=r"log.csv \(line 4, byte 24\)"):
        discover(d, strict=True)
    capsys.readouterr()
    assert main(["inspect", str(d)]) == 0
    assert "line 4, byte 24" in capsys.readouterr().out


def _wide_rows(n_rows: int) -> list[list]:
    return [[i, 1.0 / (i + 1), 0.25 * i] for i in range(n_rows)]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "utf-8-sig"])
def test_csv_with_a_byte_order_mark_reads_every_point(tmp_path, encoding):
    rows = _wide_rows(20)
    text = "step,loss,lr_é\r\n" + "".join(f"{a},{b!r},{c!r}\r\n" for a, b, c in rows)
    f = tmp_path / "log.csv"
    f.write_bytes(text.encode(encoding))
    [run] = discover(f)
    want = sorted([("loss", a, b) for a, b, _ in rows] + [("lr_é", a, c) for a, _, c in rows])
    assert _points(run) == want


@pytest.mark.parametrize("encoding", ["utf-16-le", "latin-1"])
def test_json_logs_not_in_utf8_are_one_line_errors_with_the_byte(tmp_path, capsys, encoding):
    f = tmp_path / "trainer_state.json"
    f.write_bytes(json.dumps({"log_history": [{"loss": 1.0, "step": 1, "nötig": 2.0}]},
                             ensure_ascii=False).encode(encoding))
    assert main(["inspect", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(f) in err and ("byte" in err or "not a log format" in err)


def test_jsonl_line_with_undecodable_bytes_costs_that_line_only(tmp_path):
    f = tmp_path / "trainer_log.jsonl"
    lines = [json.dumps({"current_steps": i, "loss": 1.0 / (i + 1)}).encode() for i in range(5)]
    lines[2] = lines[2].replace(b'"loss"', b'"lo\xffss"')
    f.write_bytes(b"\n".join(lines) + b"\n")
    [run] = discover(f)
    assert [s for _, s, _ in _points(run)] == [0, 1, 3, 4]
    [note] = [a for a in run.annotations if a.kind == "corrupt_record"]
    assert note.location == "line 3" and "not UTF-8" in note.message


def test_mlflow_line_with_undecodable_bytes_is_a_bad_line(tmp_path):
    from reader_fixtures import write_mlflow_run

    run_dir = write_mlflow_run(tmp_path / "mlruns", "0", "r1", {"loss": [(1000 + i, 0.5, i) for i in range(4)]})
    with (run_dir / "metrics" / "loss").open("ab") as fh:
        fh.write(b"1004 0.\xff5 4\n1005 0.25 5\n")
    [run] = discover(tmp_path)
    assert [s for _, s, _ in _points(run)] == [0, 1, 2, 3, 5]
    assert [a.location for a in run.annotations if a.kind == "bad_line"] == ["line 5"]


def test_json_key_with_a_lone_surrogate_exports(tmp_path):
    f = tmp_path / "trainer_log.jsonl"
    f.write_text('{"current_steps": 1, "lo\\ud800ss": 0.5}\n{"current_steps": 2, "lo\\ud800ss": 0.25}\n')
    out = tmp_path / "out.csv"
    assert main(["export", str(f), "-o", str(out)]) == 0
    assert "lo\\ud800ss" in out.read_text(encoding="utf-8")


def test_integer_beyond_float_range_in_json_is_an_infinity(tmp_path):
    f = tmp_path / "trainer_state.json"
    f.write_text('{"log_history": [{"loss": 1' + "0" * 5000 + ', "step": 1}, {"loss": 0.5, "step": 2}]}')
    [run] = discover(f)
    assert _points(run) == [("loss", 1, np.inf), ("loss", 2, 0.5)]


COLUMNS = 5000


def test_thousands_of_csv_columns(tmp_path):
    f = tmp_path / "wide.csv"
    with f.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step", *(f"m{j}" for j in range(COLUMNS))])
        for i in range(3):
            w.writerow([i, *(i + j / COLUMNS for j in range(COLUMNS))])
    [run] = discover(f)
    assert len(run.scalars) == 3 * COLUMNS and run.tags[-1] == f"m{COLUMNS - 1}"
    s = run.series(f"m{COLUMNS - 1}")
    assert s["value"].tolist() == [i + (COLUMNS - 1) / COLUMNS for i in range(3)]


def test_thousands_of_json_keys(tmp_path):
    jl = write_llamafactory_jsonl(tmp_path / "trainer_log.jsonl", [
        {"current_steps": i, **{f"m{j}": i + j for j in range(COLUMNS)}} for i in range(3)])
    hist = write_history_json(tmp_path / "history.json", {f"m{j}": [float(j)] * 3 for j in range(COLUMNS)})
    assert len(discover(jl)[0].scalars) == 3 * COLUMNS
    assert len(discover(hist)[0].scalars) == 3 * COLUMNS


@pytest.mark.parametrize("cell", [b"9" * 3_000_000, b"x" * 3_000_000, b"\xff" * 1_000_000])
def test_an_enormous_cell_is_one_bad_value(tmp_path, cell):
    f = tmp_path / "log.csv"
    f.write_bytes(b"step,loss\n0,0.5\n1," + cell + b"\n2,0.25\n")
    [run] = discover(f)
    got = _points(run)
    # 3 million nines is a number: beyond float range, an infinity as logged; text is no point
    assert got == ([("loss", 0, 0.5), ("loss", 1, np.inf), ("loss", 2, 0.25)] if cell[:1] == b"9"
                   else [("loss", 0, 0.5), ("loss", 2, 0.25)])
    if cell[:1] != b"9":
        [note] = [a for a in run.annotations if a.kind == "non_numeric"]
        assert note.location == "line 3, column 'loss'" and len(note.message) < 200


def test_an_enormous_line_without_line_ends(tmp_path, capsys):
    f = tmp_path / "trainer_log.jsonl"
    f.write_bytes(b'{"current_steps": 1, "loss": 0.5}\n{"current_steps": 2, "note": "' + b"a" * 5_000_000 + b'"')
    [run] = discover(f)
    assert _points(run) == [("loss", 1, 0.5)]
    assert [a.kind for a in run.annotations] == ["truncated"]
    assert all(len(a.message) < 300 for a in run.annotations)


def test_utf16_without_bom_is_a_one_line_error(tmp_path, capsys):
    f = tmp_path / "log.csv"
    f.write_bytes("step,loss\n0,0.5\n".encode("utf-16-le"))
    assert main(["export", str(f), "-o", str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(f) in err


def test_boms_are_known():
    from lrdoctor.readers.textfile import encoding_of

    assert encoding_of(codecs.BOM_UTF32_LE + b"a") == "utf-32"
    assert encoding_of(codecs.BOM_UTF16_LE + b"a\x00") == "utf-16"
    assert encoding_of(b"step,loss") == "utf-8-sig"


@pytest.mark.parametrize("arrow", [True, False])
@pytest.mark.parametrize("text", [
    ",step,loss\n0,0,1.0\n1,1,0.5\n",  # pandas to_csv with its index
    ",step,loss\n,0,1.0\n,1,0.5\n",  # found by the fuzz test: a header cut at its start
])
def test_a_column_with_an_empty_header_is_no_made_up_tag(tmp_path, monkeypatch, arrow, text):
    monkeypatch.setattr(csvfile, "USE_ARROW", arrow)
    f = tmp_path / "log.csv"
    f.write_text(text)
    [run] = discover(f)
    assert run.tags == ["loss"]
    assert [a.kind for a in run.annotations] == ["unnamed_column"]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32", "utf-8-sig"])
def test_text_log_with_a_byte_order_mark_reads_every_point(tmp_path, encoding):
    """Windows PowerShell's ``python train.py > train.log`` writes UTF-16 LE with a BOM (and CRLF)."""
    f = tmp_path / "train.log"
    with f.open("w", encoding=encoding, newline="\r\n") as fh:  # Python's codec writes the BOM
        if encoding == "utf-16-be":
            fh.write("\ufeff")  # the BE codec writes none: a BE BOM, as other tools write it
        for step in range(0, 100, 10):
            print(f"Step: {step}, Loss: {2.4 - step / 100:.4f}", file=fh)
    [run] = discover(f)
    assert run.format == "text"
    assert _points(run) == [("Loss", s, round(2.4 - s / 100, 4)) for s in range(0, 100, 10)]


def test_text_log_of_undecodable_lines_says_how_many(tmp_path, capsys):
    f = tmp_path / "train.log"
    f.write_bytes(b"".join(f"step={s} loss={1 / (s + 1):.4f} note=d\xe9j\xe0\n".encode("latin-1")
                           for s in range(20)))
    assert main(["inspect", str(f), "--format", "text"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "0 lines skipped, 20 more with undecodable bytes" in err
