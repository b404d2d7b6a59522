"""Property tests for every text-log reader: whatever a disk does to a log (see tests/damage.py),
``lrdoctor export`` exits 0 or 2, says what is wrong in one line naming the file, never shows a
traceback, and never exports a point the file does not hold.

"Holds": for damage that keeps the text (another encoding, other line ends) every exported point
is a point of the intact file. For byte damage a flipped digit is a different number that the
damaged file really holds, so there each exported value (and step) must be a number written in the
damaged bytes, and each tag a point of the intact file's or a name written there: nothing made up,
no NaN where text stood, no step 0 for a line without one.

Examples per reader: ``LRDOCTOR_FUZZ_EXAMPLES`` (default 25, the CI budget; the issue-14 run
used 1000: ``LRDOCTOR_FUZZ_EXAMPLES=1000 pytest tests/test_readers_fuzz.py
--hypothesis-show-statistics``).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from damage import SAME_TEXT, any_damage, binary_damage, damaged
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reader_fixtures import (
    write_history_json,
    write_keras_csv,
    write_lightning_csv,
    write_llamafactory_jsonl,
    write_mlflow_run,
    write_trainer_state,
)

from lrdoctor.cli import main

EXAMPLES = int(os.environ.get("LRDOCTOR_FUZZ_EXAMPLES", "25"))
N = 30


def _loss(i: int) -> float:
    return math.nan if i == 7 else math.inf if i == 11 else 1.0 / (i + 1)


# Each builder writes one run with the format's own writer (tests/reader_fixtures.py) and returns
# (the path given to the command, the file that gets damaged), both relative to the directory.
def _lightning(d: Path) -> tuple[str, str]:
    rows = [{"step": i, "train_loss": _loss(i), "lr-AdamW": 1e-3} for i in range(N)]
    rows += [{"step": i, "epoch": i // 10, "val_loss": 0.5 + i / 100, "val_äcc": 0.25} for i in range(9, N, 10)]
    write_lightning_csv(d / "version_0", rows, hparams={"lr": 1e-3})
    return "version_0/metrics.csv", "version_0/metrics.csv"


def _keras_csv(d: Path) -> tuple[str, str]:
    epochs = [{"loss": _loss(i), "val_loss": 0.5 if i % 2 else "NA", "lr_é": 0.01} for i in range(N)]
    write_keras_csv(d / "training.csv", epochs)
    return "training.csv", "training.csv"


def _csv_wide(d: Path) -> tuple[str, str]:
    with (d / "log.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["iteration", "loss", "lr", "val acc é"])
        for i in range(N):
            w.writerow([i, _loss(i), 1e-3 * (1 + i % 3), "" if i % 3 else 0.1 * i])
    return "log.csv", "log.csv"


def _csv_long(d: Path) -> tuple[str, str]:
    with (d / "points.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["tag", "step", "value"])
        for i in range(N):
            w.writerow(["train/loss", i, _loss(i)])
            if i % 5 == 0:
                w.writerow(["grad_norm_µ", i, 2.0 + i])
    return "points.csv", "points.csv"


def _csv_tab(d: Path) -> tuple[str, str]:
    with (d / "log.tsv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, delimiter="\t")
        w.writerow(["step", "train loss", "lr", "note; é"])
        for i in range(N):
            w.writerow([i, _loss(i), 1e-3 * (1 + i % 3), "a, b" if i % 3 else 0.1 * i])
    return "log.tsv", "log.tsv"


def _csv_semicolon(d: Path) -> tuple[str, str]:
    import pandas as pd  # a spreadsheet export in a European locale: ";" between cells, "0,5"

    df = pd.DataFrame({"epoch": range(N), "loss": [_loss(i) for i in range(N)],
                       "val_loss": [0.5 + i / 7 if i % 2 else None for i in range(N)]})
    df.to_csv(d / "export.csv", sep=";", decimal=",", index=False)
    return "export.csv", "export.csv"


def _hf(d: Path) -> tuple[str, str]:
    hist = [{"epoch": i / N, "grad_norm": 1.5 + i, "learning_rate": 1e-4, "loss": _loss(i), "step": i + 1}
            for i in range(N)]
    hist += [{"epoch": 1.0, "eval_loss": 0.75, "eval_rüntime": 1.25, "step": N}]
    write_trainer_state(d / "trainer_state.json", hist, global_step=N)
    return "trainer_state.json", "trainer_state.json"


def _history(d: Path) -> tuple[str, str]:
    write_history_json(d / "history.json", {"loss": [_loss(i) for i in range(N)],
                                            "val_loss": [0.5 + i for i in range(N // 2)], "lr": [1e-3] * N})
    return "history.json", "history.json"


def _jsonl(d: Path) -> tuple[str, str]:
    entries = [{"current_steps": i, "total_steps": N, "loss": _loss(i), "lr": 1e-4,
                "elapsed_time": f"0:00:{i:02d}", "nötig": None if i % 2 else 0.5} for i in range(N)]
    write_llamafactory_jsonl(d / "trainer_log.jsonl", entries)
    return "trainer_log.jsonl", "trainer_log.jsonl"


def _mlflow(d: Path) -> tuple[str, str]:
    write_mlflow_run(d / "mlruns", "0", "abc123", {
        "loss": [(1_700_000_000_000 + i, _loss(i), i) for i in range(N)],
        "lr": [(1_700_000_000_000 + i, 1e-3, i) for i in range(0, N, 3)],
    }, params={"lr": "0.001"}, run_name="fuzzed")
    return "mlruns", "mlruns/0/abc123/metrics/loss"


def _tensorboard(d: Path) -> tuple[str, str]:
    from tb_writers import write_torch

    (f,) = write_torch(d / "tb", {"train/loss": [(i, _loss(i)) for i in range(N)],
                                  "lr": [(i, 1e-3) for i in range(0, N, 2)]})
    return "tb", f.relative_to(d).as_posix()


def _wandb(d: Path) -> tuple[str, str]:
    # written by wandb itself (scripts/make_tracker_fixtures.py); the smallest of the runs
    src = min((DATA / "wandb" / "wandb").glob("*/*.wandb"), key=lambda p: p.stat().st_size)
    shutil.copytree(src.parent, d / src.parent.name)
    rel = f"{src.parent.name}/{src.name}"
    return rel, rel


def _mlflow_sqlite(d: Path) -> tuple[str, str]:
    shutil.copy(DATA / "mlflow_sqlite" / "mlflow.db", d / "mlflow.db")
    return "mlflow.db", "mlflow.db"


DATA = Path(__file__).parent / "data"
BUILDERS: dict[str, Callable[[Path], tuple[str, str]]] = {
    "lightning_csv": _lightning, "keras_csv": _keras_csv, "csv_wide": _csv_wide, "csv_long": _csv_long,
    "csv_tab": _csv_tab, "csv_semicolon": _csv_semicolon,
    "hf_trainer_state": _hf, "keras_history": _history, "jsonl": _jsonl, "mlflow": _mlflow,
    "tensorboard": _tensorboard, "wandb": _wandb, "mlflow_sqlite": _mlflow_sqlite,
}
#: Binary logs whose every record carries a checksum: whatever they read is a point of the intact file.
CHECKSUMMED = ("tensorboard", "wandb")
#: SQLite keeps numbers without checksums: a flipped byte inside a REAL is another number the
#: damaged store really holds, and no text to find it in; only exit code and message are checked.
UNCHECKED = ("mlflow_sqlite",)


def _key(tag: str, step: int, value: float) -> tuple:
    return tag, int(step), np.float64(value).view(np.int64).item()


def export(arg: Path, strict: bool) -> tuple[int, str, set]:
    """Run ``lrdoctor export ARG -o out.csv`` in-process: exit code, stderr, exported points."""
    out = arg.parent / "__out.csv" if arg.is_file() else arg.parent / f"__{arg.name}.csv"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["export", str(arg), "-o", str(out), *(["--strict"] if strict else [])])
    points = set()
    if rc == 0:
        csv.field_size_limit(1 << 30)  # a tag or value may be an enormous cell of the damaged file
        with out.open(newline="", encoding="utf-8") as fh:
            points = {_key(r["tag"], int(r["step"]), float(r["value"])) for r in csv.DictReader(fh)}
        out.unlink()
    return rc, err.getvalue(), points


#: format -> (directory of the intact run, path given to the command, damaged file, its points);
#: a global, not a fixture argument, so a failing example's report does not print every point.
ORIGINALS: dict[str, tuple[Path, str, str, set]] = {}


@pytest.fixture(scope="module", autouse=True)
def originals(tmp_path_factory) -> None:
    out = ORIGINALS
    for name, build in BUILDERS.items():
        d = tmp_path_factory.mktemp(name)
        arg, target = build(d)
        rc, err, points = export(d / arg, strict=False)
        assert rc == 0 and len(points) > N, (name, err)
        out[name] = (d, arg, target, points)


_NUMBER = re.compile(r"[-+]?(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][-+]?\d+)?")


def _numbers_in(text: str) -> np.ndarray:
    """Every number written in ``text`` (as Python, pandas, arrow or json could read it)."""
    found = {math.nan, math.inf, -math.inf, 0.0, 1.0}  # nan/inf literals, booleans
    for tok in _NUMBER.findall(text):
        for t in (tok, tok.replace("_", "")):
            with contextlib.suppress(ValueError):
                found.add(float(t))
    return np.array(sorted(found, key=lambda x: (math.isnan(x), x)))


def _written_in(value: float, numbers: np.ndarray) -> bool:
    if math.isnan(value):
        return True  # nan literals and NaN markers are in every text log
    finite = numbers[np.isfinite(numbers)]
    if math.isinf(value):
        return True  # "inf"/"Infinity" or an integer beyond float range: both logged infinities
    # parsers may round a long digit string differently in the last place
    return bool(len(finite) and np.min(np.abs(finite - value)) <= 4 * np.spacing(abs(value)))


def _assert_held(got: set, truth: set, data: bytes, how: tuple, decimal_comma: bool = False) -> None:
    if how[0] in SAME_TEXT:
        if how[0] == "latin1":  # "é" is one byte that is not UTF-8: a CSV tag holding it reads "\ufffd"
            truth = truth | {("".join(c if c.isascii() else "\ufffd" for c in t), s, v) for t, s, v in truth}
        assert got <= truth, f"points not in the intact file: {sorted(got - truth)[:5]}"
        return
    text = data.decode("utf-8", errors="replace")
    # a decimal-comma file writes 0.5 as "0,5"; only that format may read a comma as a point
    numbers = _numbers_in(text.replace(",", ".") + "\n" + text if decimal_comma else text)
    true_tags = {t for t, _, _ in truth}
    # a step may be a row's or a list element's position (no step column; Keras history)
    positions = text.count("\n") + text.count("\r") + text.count(",") + 2
    for tag, step, bits in got - truth:
        value = float(np.int64(bits).view(np.float64))
        # a quoted CSV cell's quotes are not part of its name; a quote inside an unquoted cell is
        assert tag in true_tags or tag in text or tag in text.replace('"', "") or json.dumps(tag)[1:-1] in text, \
            f"made-up tag {tag!r}"
        assert _written_in(value, numbers), f"{tag!r} step {step}: value {value!r} is not in the file"
        assert 0 <= step <= positions or _written_in(float(step), numbers) or any(
            math.floor(x) == step for x in numbers[np.isfinite(numbers)]), f"{tag!r}: step {step} not in the file"


def _assert_one_line_errors(rc: int, err: str, named: tuple[str, ...]) -> None:
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    for ln in lines:
        assert ln.startswith(("lrdoctor: ", "wrote ")), f"not a one-line message: {ln!r}"
    if rc == 2:
        errors = [ln for ln in lines if ln.startswith("lrdoctor: error:")]
        assert errors, err
        assert any(p in errors[-1] for p in named), f"error does not name the file: {errors[-1]!r}"


def _check(fmt: str, how: tuple, strict: bool) -> None:
    src, arg, target, truth = ORIGINALS[fmt]
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "run"
        shutil.copytree(src, d)
        data = damaged((src / target).read_bytes(), how)
        (d / target).write_bytes(data)
        rc, err, got = export(d / arg, strict)
        assert rc in (0, 2), (rc, err)
        named = (str(d / target), str(d / arg), str((d / target).parent.parent))
        _assert_one_line_errors(rc, err, named)
        if fmt in CHECKSUMMED:
            assert got <= truth, f"points not in the intact file: {sorted(got - truth)[:5]}"
        elif fmt not in UNCHECKED:
            _assert_held(got, truth, data, how, decimal_comma=fmt == "csv_semicolon")


@pytest.mark.parametrize("fmt", sorted(BUILDERS))  # one test per reader: each its own example count
@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data(), strict=st.booleans())
def test_damaged_log_exits_0_or_2_and_invents_nothing(fmt, data, strict):
    binary = fmt in CHECKSUMMED or fmt in UNCHECKED
    _check(fmt, data.draw(binary_damage if binary else any_damage, label="how"), strict)
