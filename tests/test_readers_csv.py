"""CSV readers (Lightning CSVLogger, Keras CSVLogger, generic wide/long) on files written the way
those tools write them."""

from __future__ import annotations

import csv
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reader_fixtures import write_keras_csv, write_lightning_csv

from lrdoctor.errors import LogFormatError
from lrdoctor.readers import csvfile, discover, find_run_sources


@pytest.fixture(autouse=True, params=["arrow", "pandas"])
def parser(request, monkeypatch):
    """Every test runs with both CSV parsers (pyarrow when installed; pandas otherwise)."""
    if request.param == "arrow":
        pytest.importorskip("pyarrow.csv")
    monkeypatch.setattr(csvfile, "USE_ARROW", request.param == "arrow")
    return request.param


def values_of(run, tag):
    s = run.series(tag)
    return s["step"].tolist(), s["value"].to_numpy()


def same(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return a.shape == b.shape and bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))


def lightning_rows(n_epochs=3, steps_per_epoch=4, log_every=2):
    """What Lightning logs: train_loss_step every log_every steps; at epoch end val_loss and
    train_loss_epoch rows at the epoch's last step; epoch attached to every row."""
    rows, expect = [], {"train_loss_step": [], "val_loss": [], "train_loss_epoch": []}
    rng = np.random.default_rng(0)
    step = 0
    for epoch in range(n_epochs):
        for _ in range(steps_per_epoch):
            if (step + 1) % log_every == 0:
                v = float(rng.normal(2, 0.3))
                rows.append({"train_loss_step": v, "epoch": epoch, "step": step})
                expect["train_loss_step"].append((step, v))
            step += 1
        v = float(rng.normal(2, 0.1))
        rows.append({"val_loss": v, "epoch": epoch, "step": step - 1})
        expect["val_loss"].append((step - 1, v))
        v = float(rng.normal(2, 0.1))
        rows.append({"train_loss_epoch": v, "epoch": epoch, "step": step - 1})
        expect["train_loss_epoch"].append((step - 1, v))
    return rows, expect


def test_lightning_csvlogger_round_trip(tmp_path):
    rows, expect = lightning_rows()
    rows[1]["train_loss_step"] = float("nan")
    expect["train_loss_step"][1] = (expect["train_loss_step"][1][0], float("nan"))
    rows.append({"val_loss": float("inf"), "epoch": 2, "step": 11})  # trainer.validate() after fit
    expect["val_loss"].append((11, float("inf")))
    d = tmp_path / "lightning_logs" / "version_0"
    write_lightning_csv(d, rows, hparams={"lr": 0.001, "batch_size": 32}, flush_every=3)
    assert b"\r\n" in (d / "metrics.csv").read_bytes()
    [run] = discover(d)
    assert run.format == "lightning_csv" and run.name == "version_0" and run.step_axis == "step"
    assert run.hparams == {"lr": 0.001, "batch_size": 32}
    for tag, pts in expect.items():
        steps, vals = values_of(run, tag)
        assert steps == [s for s, _ in pts]
        assert same(vals, [v for _, v in pts])
    assert run.series("epoch")["value"].tolist() == [r["epoch"] for r in rows]
    # validate() repeated the last step with a different value: reported, both kept
    dup = [a for a in run.annotations if a.kind == "duplicate_steps"]
    assert len(dup) == 1 and "'val_loss'" in dup[0].message and dup[0].location.startswith("line ")
    assert list(run.scalars.columns) == ["tag", "step", "wall_time", "value"]
    assert str(run.scalars["step"].dtype) == "int64" and run.scalars["wall_time"].isna().all()


def test_lightning_rows_keep_logged_order(tmp_path):
    rows, _ = lightning_rows(n_epochs=1)
    write_lightning_csv(tmp_path / "v", rows)
    [run] = discover(tmp_path / "v" / "metrics.csv")
    # row by row, columns in header order within a row
    expected = []
    for r in rows:
        expected += [(k, r[k]) for k in sorted(r) if k != "step"]
    assert list(zip(run.scalars["tag"], run.scalars["value"], strict=True)) == expected


def test_lightning_python_tags_in_hparams(tmp_path):
    d = tmp_path / "version_3"
    write_lightning_csv(d, [{"loss": 1.0, "epoch": 0, "step": 0}])
    (d / "hparams.yaml").write_text("args: !!python/object:argparse.Namespace\n  lr: 0.1\nseed: 7\n")
    [run] = discover(d)
    assert run.hparams == {"args": {"lr": 0.1}, "seed": 7}


def test_keras_csvlogger_crlf_na_and_append_restart(tmp_path):
    f = tmp_path / "training.log"  # the name in Keras' docs: content, not the name, decides
    first = [{"loss": 1.0 / (e + 1), "accuracy": 0.5 + e / 10, "val_loss": 1.2 / (e + 1)} for e in range(4)]
    first[2]["loss"] = float("nan")
    del first[1]["val_loss"]  # validation_freq=2: Keras writes NA
    write_keras_csv(f, first)
    second = [{"loss": 0.3, "accuracy": 0.9, "val_loss": 0.4}, {"loss": float("inf"), "accuracy": 0.9, "val_loss": 0.5}]
    write_keras_csv(f, second, append=True)
    raw = f.read_bytes()
    assert raw.count(b"\r\n") == 7 and b",NA" in raw
    # two fits appended to one file: two runs, each judged on its own
    first_run, second_run = discover(f)
    assert (first_run.name, second_run.name) == ("training#1", "training#2")
    for run in (first_run, second_run):
        assert run.format == "keras_csv" and run.step_axis == "epoch"
        assert not [a for a in run.annotations if a.kind in ("non_numeric", "restart")]
    steps, vals = values_of(first_run, "loss")
    assert steps == [0, 1, 2, 3]
    assert same(vals, [1.0, 0.5, float("nan"), 0.25])
    steps, _ = values_of(first_run, "val_loss")
    assert steps == [0, 2, 3]  # NA is "not logged", not NaN
    steps, vals = values_of(second_run, "loss")
    assert steps == [0, 1] and same(vals, [0.3, float("inf")])
    [note] = [a for a in second_run.annotations if a.kind == "attempt"]
    assert note.location == "lines 6-7" and "attempt 2 of 2" in note.message


def test_keras_csv_split_into_attempts_in_a_tree(tmp_path):
    f = tmp_path / "exp" / "training_log.csv"
    for n in (1, 8, 8):  # as in a real repository: a 1-epoch try, then two 8-epoch fits
        write_keras_csv(f, [{"loss": 0.7 - 0.01 * e, "val_loss": 0.8 + 0.1 * e} for e in range(n)],
                        append=f.exists())
    runs = discover(tmp_path)
    assert [r.name for r in runs] == ["exp#1", "exp#2", "exp#3"]
    assert [len(r.series("loss")) for r in runs] == [1, 8, 8]
    assert all(r.series("loss")["step"].tolist() == list(range(len(r.series("loss")))) for r in runs)
    # a resumed fit that continues the epochs (initial_epoch=8) stays in its attempt
    g = tmp_path / "resume" / "training_log.csv"
    write_keras_csv(g, [{"loss": 1.0}] * 3)
    with g.open("a", newline="") as fh:
        fh.write("3,0.5\r\n4,0.4\r\n")
    [run] = discover(tmp_path / "resume")
    assert run.name == "resume" and run.series("loss")["step"].tolist() == [0, 1, 2, 3, 4]


YOLO_HEADER = ["epoch", "train/box_loss", "train/obj_loss", "metrics/mAP_0.5", "val/box_loss", "x/lr0"]


def test_padded_yolov5_results_csv(tmp_path):
    f = tmp_path / "exp" / "results.csv"
    f.parent.mkdir()
    lines = [",".join(f"{h:>20s}" for h in YOLO_HEADER)]
    for e in range(5):
        vals = [0.1 / (e + 1), 0.05, 0.3 + e / 100, 0.04, 0.01 * (e + 1)]
        lines.append(",".join([f"{e:>20d}"] + [f"{v:>20.5g}" for v in vals]))
    f.write_text("\n".join(lines) + "\n")
    [run] = discover(tmp_path)
    assert run.name == "exp" and run.format == "csv" and run.step_axis == "epoch"
    assert run.tags == YOLO_HEADER[1:]
    steps, vals = values_of(run, "x/lr0")
    assert steps == list(range(5)) and same(vals, [float(f"{0.01 * (e + 1):.5g}") for e in range(5)])


def test_sparse_wide_csv_several_rows_per_step(tmp_path):
    f = tmp_path / "metrics.csv"
    cols = ["timestamp", "train/loss", "step", "Gen Loss", "eval/loss"]
    rows = [
        [1756179661.3, "", 0, "", ""], [1756179662.0, 9.3, 0, 2.5, ""], [1756179663.0, "", 0, "", 9.1],
        [1756179700.0, 5.0, 50, 1.5, ""], [1756179701.0, "", 50, "", 5.5],
    ]
    with f.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        w.writerows(rows)
    [run] = discover(f)
    assert run.format == "csv" and run.tags == ["train/loss", "Gen Loss", "eval/loss"]
    steps, vals = values_of(run, "eval/loss")
    assert steps == [0, 50] and same(vals, [9.1, 5.5])
    s = run.series("Gen Loss")
    assert s["wall_time"].tolist() == [1756179662.0, 1756179700.0]  # the timestamp column is wall time
    assert not run.annotations


def test_non_numeric_cell_is_no_point_but_an_annotation_or_error_under_strict(tmp_path):
    f = tmp_path / "log.csv"
    f.write_text("step,loss,acc\n0,1.5,0.1\n1,oops,0.2\n2,nan,0.3\n3,1.2,0.4\n")
    [run] = discover(f)
    steps, vals = values_of(run, "loss")
    # the logged nan literal is a NaN point; the text is none (a NaN would read as a divergence)
    assert steps == [0, 2, 3] and same(vals, [1.5, np.nan, 1.2])
    [note] = run.annotations
    assert note.kind == "non_numeric" and "'oops'" in note.message
    assert note.path == str(f) and note.location == "line 3, column 'loss'"
    with pytest.raises(LogFormatError, match=r"line 3, column 'loss'"):
        discover(f, strict=True)


def test_text_column_reported_not_read(tmp_path):
    f = tmp_path / "log.csv"
    f.write_text("step,loss,phase\n0,1.0,train\n1,0.9,train\n")
    [run] = discover(f)
    assert run.tags == ["loss"]
    assert [a.kind for a in run.annotations] == ["non_numeric_column"]


def test_long_csv_and_duplicate_steps(tmp_path):
    f = tmp_path / "long.csv"
    f.write_text("tag,step,value\nloss,0,2.0\nlr,0,0.1\nloss,1,1.5\nloss,1,1.4\nlr,1,inf\nloss,0,9\n")
    [run] = discover(f)
    assert run.format == "csv" and run.tags == ["loss", "lr"]
    steps, vals = values_of(run, "loss")
    assert steps == [0, 1, 1, 0] and same(vals, [2.0, 1.5, 1.4, 9.0])
    kinds = sorted(a.kind for a in run.annotations)
    assert kinds == ["duplicate_steps", "restart"]


def test_no_step_column_uses_rows(tmp_path):
    f = tmp_path / "gan.csv"
    f.write_text("epoch,batch,Gen Loss,Disc Loss\n0,0,1,2\n0,1,1,2\n1,0,1,2\n1,1,1,2\n")
    [run] = discover(f)
    assert run.series("Gen Loss")["step"].tolist() == [0, 1, 2, 3]
    assert run.series("epoch")["value"].tolist() == [0, 0, 1, 1]
    assert any(a.kind == "no_step_column" for a in run.annotations)


def test_repeated_header_rows_are_reported_not_data(tmp_path):
    f = tmp_path / "log.csv"
    f.write_text("step,loss\n0,1.0\n1,0.9\nstep,loss\n0,1.1\n1,nan\n")
    [run] = discover(f)
    steps, vals = values_of(run, "loss")
    assert steps == [0, 1, 0, 1] and same(vals, [1.0, 0.9, 1.1, np.nan])
    notes = {a.kind: a.location for a in run.annotations}
    assert notes == {"repeated_header": "line 4", "restart": "line 5", "duplicate_steps": "line 5"}


def test_forced_format(tmp_path):
    f = tmp_path / "metrics.csv"
    write_lightning_csv(tmp_path, [{"loss": 1.0, "epoch": 0, "step": 0}])
    assert find_run_sources(f)[0].format == "lightning_csv"
    [run] = discover(f, format="csv")
    assert run.format == "csv" and run.tags == ["epoch", "loss"]


finite_or_not = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), 0.0, -0.0, 5e-324, 1.7976931348623157e308]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.lists(finite_or_not, min_size=2, max_size=2), min_size=1, max_size=40))
def test_csv_module_floats_round_trip_exactly(tmp_path, values):
    f = tmp_path / "prop.csv"
    with f.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "loss", "grad_norm"])
        for i, (a, b) in enumerate(values):
            w.writerow([i, a, b])
    [run] = discover(f)
    for j, tag in enumerate(["loss", "grad_norm"]):
        steps, vals = values_of(run, tag)
        want = [row[j] for row in values]
        assert steps == list(range(len(values)))
        assert same(vals, want)
        assert all(math.copysign(1, a) == math.copysign(1, b) for a, b in zip(vals, want, strict=True)
                   if a == 0 and b == 0)
    assert not run.annotations


def test_utf16_csv_with_bom_is_read(tmp_path):
    f = tmp_path / "log.csv"
    with f.open("w", encoding="utf-16", newline="") as fh:  # what Excel / PowerShell write
        csv.writer(fh).writerows([["step", "loss"], [1, 0.5], [2, 0.25]])
    assert f.read_bytes()[:2] in (b"\xff\xfe", b"\xfe\xff")
    [run] = discover(f)
    steps, vals = values_of(run, "loss")
    assert run.format == "csv" and steps == [1, 2] and same(vals, [0.5, 0.25])


def test_annotation_numbers_are_plain(tmp_path):
    f = tmp_path / "log.csv"
    f.write_text("step,loss\n0,1.0\n6.5,0.9\n")
    [run] = discover(f)
    [note] = run.annotations
    assert note.kind == "fractional_step" and "(first 6.5)" in note.message and "np." not in note.message


def test_text_in_step_column_keeps_the_row(tmp_path):
    f = tmp_path / "log.csv"
    f.write_text("step,loss\n0,1.0\nabc,0.9\n2,0.8\n")
    [run] = discover(f)
    steps, vals = values_of(run, "loss")
    assert steps == [0, 0, 2] and same(vals, [1.0, 0.9, 0.8])
    [note] = [a for a in run.annotations if a.kind == "non_numeric"]
    assert "'abc'" in note.message and "previous row's step" in note.message


def test_header_names_with_numbers_are_not_taken_for_printed_lines(tmp_path):
    # YOLOv5 names a column "metrics/mAP_0.5:0.95"; a printed "Loss: 0.23, Step: 5" is no header
    f = tmp_path / "results.csv"
    f.write_text("epoch,train/box_loss,metrics/mAP_0.5:0.95\n0,0.12,0.01\n1,0.11,0.02\n")
    [run] = discover(f)
    assert run.format == "csv" and "metrics/mAP_0.5:0.95" in run.tags
    g = tmp_path / "printed.log"
    g.write_text("Step: 1, Loss: 0.23\nStep: 2, Loss: 0.21\nStep: 3, Loss: 0.20\n")
    [run] = discover(g)
    assert run.format == "text" and run.series("Loss")["step"].tolist() == [1, 2, 3]


def _cut_mid_last_number(f, out):
    """``f``'s bytes with the last row cut two characters after its last decimal point (a file
    still being written, or copied short); returns the cut row's 1-based line number and text."""
    data = f.read_bytes()
    assert data.endswith(b"\n")
    row_start = data.rstrip(b"\r\n").rfind(b"\n") + 1
    cut = data.rindex(b".", row_start) + 2
    out.write_bytes(data[:cut])
    return data[:row_start].count(b"\n") + 1, data[row_start:cut].decode()


def _check_cut(cut_file, intact_run, line, text, tag, strict_read):
    """The cut row is no point, every complete row is read as written, and the annotation (or
    under --strict the error) names the file and the line."""
    [run] = discover(cut_file)
    note = [a for a in run.annotations if a.kind == "truncated"]
    assert len(note) == 1 and note[0].path == str(cut_file) and note[0].location == f"line {line}"
    assert repr(text) in note[0].message
    want = intact_run.scalars.iloc[:len(run.scalars)]
    assert len(run.scalars) < len(intact_run.scalars)
    assert list(run.scalars["tag"]) == list(want["tag"]) and list(run.scalars["step"]) == list(want["step"])
    assert same(run.scalars["value"], want["value"])
    # the cut row's step holds no point of the cut column
    cut_step = int(text.split(",")[0]) if tag != "train_loss_step" else None
    if cut_step is not None:
        assert cut_step not in values_of(run, tag)[0]
    with pytest.raises(LogFormatError) as err:
        strict_read(cut_file)
    assert err.value.path == str(cut_file) and err.value.location == f"line {line}"


def test_lightning_csvlogger_file_cut_mid_number(tmp_path):
    """Lightning's own CSVLogger writes the file; cut inside its last number, the row is not read."""
    loggers = pytest.importorskip("lightning.pytorch.loggers")
    logger = loggers.CSVLogger(str(tmp_path), name="lightning_logs")
    for step in range(12):
        logger.log_metrics({"train_loss_step": 1.0 / (step + 1.7), "epoch": step // 4}, step=step)
        if step % 4 == 3:
            logger.log_metrics({"val_loss": 0.4567 + step / 1000, "epoch": step // 4}, step=step)
    logger.save()
    f = tmp_path / "lightning_logs" / "version_0" / "metrics.csv"
    [intact] = discover(f)
    cut = tmp_path / "cut" / "version_0" / "metrics.csv"
    cut.parent.mkdir(parents=True)
    line, text = _cut_mid_last_number(f, cut)
    assert line == 16  # header + 12 step rows + 3 validation rows
    [run] = discover(cut)
    assert run.format == "lightning_csv" and values_of(run, "val_loss")[0] == [3, 7]  # step 11's is cut
    _check_cut(cut, intact, line, text, "val_loss",
               lambda p: discover(p, strict=True))


def _keras_csvlogger(path, epochs):
    """keras.callbacks.CSVLogger driven as ``fit`` drives it (keras when installed)."""
    keras = pytest.importorskip("keras")
    cb = keras.callbacks.CSVLogger(str(path))
    cb.on_train_begin()
    for e, logs in enumerate(epochs):
        cb.on_epoch_end(e, logs)
    cb.on_train_end()


@pytest.mark.parametrize("writer", ["keras", "csv module as keras"])
def test_keras_csvlogger_file_cut_mid_number(tmp_path, writer, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    epochs = [{"loss": 1.0 / (e + 1.3), "val_loss": 1.1 / (e + 1.3)} for e in range(6)]
    f = tmp_path / "training.log"
    if writer == "keras":
        _keras_csvlogger(f, epochs)
    else:
        write_keras_csv(f, epochs)
    [intact] = discover(f)
    assert intact.format == "keras_csv"
    cut = tmp_path / "cut" / "training.log"
    cut.parent.mkdir()
    line, text = _cut_mid_last_number(f, cut)
    assert line == 7 and text.startswith("5,")
    _check_cut(cut, intact, line, text, "loss", lambda p: discover(p, strict=True))


def test_keras_appended_attempts_cut_note_goes_with_the_last(tmp_path):
    f = tmp_path / "training.log"
    write_keras_csv(f, [{"loss": 0.9}, {"loss": 0.8}, {"loss": 0.7}])
    write_keras_csv(f, [{"loss": 0.5}, {"loss": 0.4}, {"loss": 0.35}], append=True)
    cut = tmp_path / "cut.log"
    line, _ = _cut_mid_last_number(f, cut)
    first, second = discover(cut)
    assert values_of(second, "loss")[0] == [0, 1]
    assert not [a for a in first.annotations if a.kind == "truncated"]
    assert [a.location for a in second.annotations if a.kind == "truncated"] == [f"line {line}"]


def test_generic_csv_cut_mid_number_and_the_edges(tmp_path):
    f = tmp_path / "log.csv"
    with f.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "lr", "loss"])
        w.writerows([s, 0.001, 2.0 / (s + 1.5)] for s in range(51))
    [intact] = discover(f)
    cut = tmp_path / "cut.csv"
    line, text = _cut_mid_last_number(f, cut)
    assert (line, text) == (52, "50,0.001,0.0")  # 0.0388...
    _check_cut(cut, intact, line, text, "loss", lambda p: discover(p, strict=True))
    # blanks after the last line end are no line: nothing to report
    (tmp_path / "blank.csv").write_bytes(f.read_bytes() + b"  ")
    [run] = discover(tmp_path / "blank.csv")
    assert len(run.scalars) == len(intact.scalars) and not [a for a in run.annotations if a.kind == "truncated"]
    # a header that is the only line is kept as the header: no row is left out, there is none
    (tmp_path / "head.csv").write_bytes(b"step,loss")
    with pytest.raises(LogFormatError, match="no scalar values"):
        discover(tmp_path / "head.csv")


def test_utf16_csv_cut_mid_number(tmp_path):
    f = tmp_path / "log.csv"
    rows = "step,loss\r\n" + "".join(f"{s},{1 / (s + 1.5)!r}\r\n" for s in range(6))
    f.write_bytes(rows.encode("utf-16"))
    [intact] = discover(f)
    cut = tmp_path / "cut.csv"
    cut.write_bytes(rows[:-8].encode("utf-16"))
    _check_cut(cut, intact, 7, rows[:-8].rsplit("\n", 1)[1], "loss", lambda p: discover(p, strict=True))


# --- tab- and semicolon-separated files, decimal commas -------------------------------------------

def _pandas_frame(n=60, seed=0):
    rng = np.random.default_rng(seed)
    loss = rng.lognormal(size=n) * 10.0 ** rng.integers(-8, 8, n)
    loss[[3, 7]] = [np.nan, np.inf]
    lr = np.float32(rng.uniform(1e-5, 1e-1, n)).astype(np.float64)  # a float32 LR's many digits
    return pd.DataFrame({"step": np.arange(n) * 10, "loss": loss, "lr": lr})


@pytest.mark.parametrize(("name", "sep", "decimal"), [
    ("metrics.tsv", "\t", "."), ("metrics.csv", "\t", "."), ("metrics.csv", ";", "."),
    ("metrics.csv", ";", ","), ("metrics.tsv", "\t", ","), ("metrics.txt", ";", ","),
])
def test_pandas_to_csv_with_any_separator_and_decimal_read_exactly(tmp_path, name, sep, decimal):
    df = _pandas_frame()
    f = tmp_path / name
    df.to_csv(f, sep=sep, decimal=decimal, index=False, na_rep="nan")
    if decimal == ",":
        assert b"0," in f.read_bytes() and sep.encode() in f.read_bytes()
    [run] = discover(f)
    assert run.format == "csv" and run.tags == ["loss", "lr"] and not run.annotations
    for tag in ("loss", "lr"):
        steps, vals = values_of(run, tag)
        assert steps == df["step"].tolist() and same(vals, df[tag])


def test_pandas_index_column_and_empty_cells_with_semicolons(tmp_path):
    df = _pandas_frame(20)
    df.loc[df.index % 3 == 0, "lr"] = np.nan  # written as an empty cell: not logged at that row
    f = tmp_path / "log.csv"
    df.to_csv(f, sep=";", decimal=",")  # with the index, as to_csv writes by default
    [run] = discover(f)
    steps, vals = values_of(run, "lr")
    want = df[df.index % 3 != 0]
    assert steps == want["step"].tolist() and same(vals, want["lr"])
    assert [a.kind for a in run.annotations] == ["unnamed_column"]


@pytest.mark.parametrize("delimiter", ["\t", ";"])
def test_stdlib_csv_writer_with_tab_or_semicolon(tmp_path, delimiter):
    f = tmp_path / "train_log.csv"
    rows = [(i, 1.0 / (i + 1), 0.1 * 0.5 ** i) for i in range(30)]
    with f.open("w", newline="") as fh:
        w = csv.writer(fh, delimiter=delimiter)
        w.writerow(["iteration", "train loss", "learning rate"])
        w.writerows(rows)
    [run] = discover(f)
    assert run.tags == ["train loss", "learning rate"]
    steps, vals = values_of(run, "learning rate")
    assert steps == list(range(30)) and same(vals, [r[2] for r in rows])


def test_comma_csv_whose_text_holds_semicolons_and_tabs_is_read_as_commas(tmp_path):
    f = tmp_path / "log.tsv"  # the name says tab; the content says comma, and wins
    with f.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "loss", "note"])
        for i in range(10):
            w.writerow([i, 0.5 + i, f"lr=0.1;bs=32\tseed {i}" if i % 2 else "a;b;c"])
    f.write_bytes(f.read_bytes() + b"10,0.25,unquoted;with\ttab\r\n")
    [run] = discover(f)
    steps, vals = values_of(run, "loss")
    assert steps == list(range(11)) and same(vals, [0.5 + i for i in range(10)] + [0.25])
    assert [a.kind for a in run.annotations] == ["non_numeric_column"]


def test_semicolon_header_and_decimal_commas_in_the_first_rows_never_split_on_commas(tmp_path):
    f = tmp_path / "export.csv"
    f.write_text("epoch;loss;val_loss\n1;0,123;1,5\n2;0,1;1,25e-3\n3;2;3\n")
    [run] = discover(f)
    assert run.tags == ["loss", "val_loss"] and run.step_axis == "epoch"
    assert same(values_of(run, "loss")[1], [0.123, 0.1, 2.0])
    assert same(values_of(run, "val_loss")[1], [1.5, 1.25e-3, 3.0])


def test_decimal_comma_and_decimal_point_in_one_file_is_an_error_naming_the_lines(tmp_path, capsys):
    f = tmp_path / "mixed.csv"
    f.write_text("step;loss;lr\n0;0,5;3\n1;0,25;4\n2;0,125;1.500\n")
    with pytest.raises(LogFormatError) as err:
        discover(f)
    assert err.value.path == str(f) and err.value.location == "lines 2 and 4"
    assert "'0,5'" in str(err.value) and "'1.500'" in str(err.value)
    from lrdoctor.cli import main
    assert main(["export", str(f), "-o", str(tmp_path / "out.csv")]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert str(f) in line and "lines 2 and 4" in line and "Traceback" not in line


def test_a_thousands_separated_cell_is_no_point_but_a_note(tmp_path):
    f = tmp_path / "export.csv"
    f.write_text("step;loss\n0;1.234,5\n1;0,25\n")
    [run] = discover(f)
    steps, vals = values_of(run, "loss")
    assert steps == [1] and same(vals, [0.25])
    [note] = run.annotations
    assert note.kind == "non_numeric" and "'1.234,5'" in note.message and note.location.startswith("line 2")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.lists(finite_or_not, min_size=2, max_size=2), min_size=1, max_size=30),
       dialect=st.sampled_from([(",", "."), ("\t", "."), (";", "."), (";", ","), ("\t", ",")]),
       names=st.lists(st.sampled_from(["loss", "grad_norm", "loss, train", "lr (x, y)", "a;b", "c\td", "e,f;g"]),
                      min_size=2, max_size=2, unique=True))
def test_pandas_floats_round_trip_exactly_with_any_dialect(tmp_path, values, dialect, names):
    # header names holding the other separators (pandas quotes only its own): ',' in a name
    # matches the decimal commas of the rows
    sep, decimal = dialect
    f = tmp_path / "prop.csv"
    df = pd.DataFrame(values, columns=names, dtype=np.float64)
    df.insert(0, "step", np.arange(len(values)))
    df.to_csv(f, sep=sep, decimal=decimal, index=False, na_rep="nan")
    [run] = discover(f)
    for tag in names:
        steps, vals = values_of(run, tag)
        assert steps == list(range(len(values))) and same(vals, df[tag])
    assert not run.annotations


# --- separators told apart by content; decimal mark told by the number columns --------------------

@pytest.mark.parametrize(("sep", "names"), [
    (";", ["step", "loss, train"]), (";", ["epoch", "loss (train, mean)", "lr (x, y)"]),
    ("\t", ["step", "loss, train", "lr (x, y)"]),
])
def test_decimal_comma_file_whose_header_names_hold_commas_reads_by_its_separator(tmp_path, sep, names):
    # The header's commas match each row's decimal commas: both split into as many cells.
    n = 50
    loss = 2 * np.exp(-np.arange(n) / 20) + 0.1
    df = pd.DataFrame({names[0]: np.arange(n), names[1]: loss, **{c: np.full(n, 1e-3) for c in names[2:]}})
    f = tmp_path / "export.csv"
    df.to_csv(f, sep=sep, decimal=",", index=False)
    [run] = discover(f)
    assert run.tags == names[1:] and not run.annotations
    for tag in names[1:]:
        steps, vals = values_of(run, tag)
        assert steps == list(range(n)) and same(vals, df[tag])


def test_comma_csv_whose_header_and_text_hold_semicolons_stays_a_comma_csv(tmp_path):
    df = pd.DataFrame({"step": range(30), "train;loss": 1 / np.arange(1, 31), "note": ["x;y"] * 30})
    f = tmp_path / "log.csv"
    df.to_csv(f, index=False)  # ';' splits every line in two too, but into no numbers
    [run] = discover(f)
    assert run.tags == ["train;loss"] and same(values_of(run, "train;loss")[1], df["train;loss"])


def test_a_separator_the_content_cannot_tell_is_a_one_line_error(tmp_path, capsys):
    # step 0 and "loss;note" "5;x", or "step,loss" 0.5 and "note" "x": as many cells and numbers
    f = tmp_path / "log.csv"
    f.write_text("step,loss;note\n0,5;x\n1,5;y\n2,5;z\n")
    with pytest.raises(LogFormatError) as err:
        discover(f)
    assert err.value.path == str(f) and "','" in str(err.value) and "';'" in str(err.value)
    from lrdoctor.cli import main
    assert main(["export", str(f), "-o", str(tmp_path / "out.csv")]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert str(f) in line and "Traceback" not in line


@pytest.mark.parametrize(("decimal", "label"), [(".", "0,1"), (",", "1.2")])
def test_a_label_column_with_the_other_decimal_mark_does_not_refuse_the_file(tmp_path, decimal, label):
    # a device list "0,1" beside decimal points; a version "1.2" beside decimal commas
    n = 40
    df = pd.DataFrame({"step": range(n), "loss": 2 * np.exp(-np.arange(n) / 20) + 0.1, "lr": np.full(n, 3e-4),
                       "gpus": [label] * n})
    f = tmp_path / "log.csv"
    df.to_csv(f, sep=";", decimal=decimal, index=False)
    assert label.encode() in f.read_bytes()
    [run] = discover(f)
    for tag in ("loss", "lr"):
        steps, vals = values_of(run, tag)
        assert steps == list(range(n)) and same(vals, df[tag])


def test_one_column_writing_both_decimal_marks_is_an_error_naming_its_lines(tmp_path):
    f = tmp_path / "log.csv"
    f.write_text("step;loss;ver\n0;0,5;1.2\n1;0,25;1.2\n2;1.5;1.2\n")  # ver is a label; loss is not
    with pytest.raises(LogFormatError) as err:
        discover(f)
    assert err.value.location == "lines 2 and 4" and "'0,5'" in str(err.value) and "'1.5'" in str(err.value)


@pytest.fixture(scope="module")
def keras():
    import os
    os.environ.setdefault("KERAS_BACKEND", "torch")
    return pytest.importorskip("keras")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # keras' torch backend, numpy 2
@pytest.mark.parametrize("separator", [";", "\t"])
def test_keras_csvlogger_with_a_semicolon_or_tab_separator(tmp_path, keras, separator):
    f = tmp_path / "training.log"
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse", metrics=["mae"])
    x = np.random.default_rng(0).random((32, 3))
    hist = model.fit(x, x.sum(axis=1, keepdims=True), epochs=4, verbose=0, validation_split=0.25,
                     callbacks=[keras.callbacks.CSVLogger(str(f), separator=separator)])
    assert f.read_text().splitlines()[0].split(separator)[0] == "epoch"
    [run] = discover(f)
    assert run.format == "keras_csv" and run.step_axis == "epoch" and not run.annotations
    assert run.tags == sorted(hist.history)
    for tag, want in hist.history.items():
        steps, vals = values_of(run, tag)
        assert steps == [0, 1, 2, 3] and same(vals, want)


def test_a_quote_never_closed_in_a_file_with_both_marks_is_a_one_line_error(tmp_path, capsys):
    f = tmp_path / "log.csv"
    f.write_text('step;loss;ver\n0;0,5;1.2\n1;0,25;1.2\n2;"0,125;1.2\n')
    from lrdoctor.cli import main
    assert main(["export", str(f), "-o", str(tmp_path / "out.csv")]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert str(f) in line and "Traceback" not in line


def test_lightning_csvlogger_metric_names_holding_separators_stay_a_comma_csv(tmp_path):
    # Lightning's CSVLogger has no separator option (csv.DictWriter's comma); its metric names may
    # hold ';' or ',' (quoted) and must not turn the file into a ';' one
    loggers = pytest.importorskip("lightning.fabric.loggers")
    logger = loggers.CSVLogger(str(tmp_path), name="lightning_logs", version=0)
    want = {"train;loss": [], "lr (x, y)": []}
    for step in range(25):
        row = {"train;loss": 2.0 / (step + 1), "lr (x, y)": 1e-3 * 0.9 ** step, "epoch": step // 5}
        logger.log_metrics(row, step=step)
        for k in want:
            want[k].append(row[k])
    logger.finalize("success")
    f = tmp_path / "lightning_logs" / "version_0" / "metrics.csv"
    assert b";" in f.read_bytes().splitlines()[0]
    [run] = discover(f)
    assert run.format == "lightning_csv" and set(want) <= set(run.tags)
    for tag, vals in want.items():
        steps, got = values_of(run, tag)
        assert steps == list(range(25)) and same(got, vals)
