"""Text-log reader on output printed by Lightning's progress bars and Keras ``fit``.

The logs are committed (tests/data/text/{lightning_tqdm,lightning_tqdm_diverge,lightning_rich,keras_fit}, made by
scripts/make_textlog_fixtures.py with lightning 2.6 and keras 3.15 on torch: too slow to start for
every test session); expected.json holds the unrounded values the script logged, compared here
after each printer's own rounding.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from lrdoctor.cli import main
from lrdoctor.errors import LogFormatError
from lrdoctor.readers import discover
from lrdoctor.readers.base import ReadOptions, RunSource
from lrdoctor.readers.textlog import TextLogReader

TEXT = Path(__file__).parent / "data" / "text"


def _series(run, tag) -> tuple[list[int], list[float]]:
    s = run.series(tag)
    return s["step"].tolist(), s["value"].tolist()


def _lightning_expected(name: str, fmt) -> dict[str, tuple[list[int], list[float]]]:
    epochs = json.loads((TEXT / name / "expected.json").read_text())
    return {key: ([e["global_step"] for e in epochs], [float(fmt(e[key])) for e in epochs])
            for key in ("train_loss", "val_loss")}


def test_lightning_tqdm_bar_reads_each_epochs_finished_bar():
    # tqdm's set_postfix prints floats with 3 significant digits (Lightning pads zeros); the bar
    # of epoch e+1 shows epoch e's val_loss until validation ran: those updates are no points
    [run] = discover(TEXT / "lightning_tqdm" / "train.log")
    want = _lightning_expected("lightning_tqdm", lambda v: f"{v:.3g}")
    assert run.format == "text" and set(run.tags) == set(want)  # v_num is the logger's version
    for tag, (steps, values) in want.items():
        assert _series(run, tag) == (steps, values), tag


def test_lightning_tqdm_bar_nan_and_inf_read_and_diagnosed_as_divergence(capsys):
    """Lightning's tqdm bar pads every number to 5 characters: NaN prints as ``nan.0``, inf as
    ``inf.0`` (and -inf as ``-inf.``); those lines were skipped, so the diverged run read "ok"."""
    f = TEXT / "lightning_tqdm_diverge" / "train.log"
    raw = f.read_text()
    assert "train_loss=nan.0" in raw and "train_loss=inf.0" in raw
    [run] = discover(f)
    want = _lightning_expected("lightning_tqdm_diverge", lambda v: f"{v:.3g}")
    for tag, (steps, values) in want.items():
        got_steps, got = _series(run, tag)
        assert got_steps == steps and np.array_equal(got, values, equal_nan=True), tag
    assert np.isnan(want["train_loss"][1][-2:]).all()  # the fixture does diverge
    assert main(["diagnose", str(f), "--json"]) == 1
    [out] = json.loads(capsys.readouterr().out)["runs"]
    [div] = [x for x in out["findings"] if x["rule"] == "divergence"]
    assert div["start_step"] == want["train_loss"][0][2]


@pytest.mark.parametrize("printed, value", [
    ("nan", math.nan), ("nan.0", math.nan), ("NaN", math.nan), ("-nan", math.nan), ("inf", math.inf),
    ("inf.0", math.inf), ("-inf.", -math.inf), ("-inf.0", -math.inf), ("Infinity", math.inf),
    ("-Infinity", -math.inf), ("+inf", math.inf), ("INF", math.inf),
])
def test_nonfinite_spellings_read_wherever_a_number_is(tmp_path, printed, value):
    """As printed by tqdm bars (``nan.0``), rich bars, Keras and HF dicts (``nan``), JavaScript
    and Java (``NaN``, ``Infinity``), in each line shape that carries metrics."""
    lines = {
        "name=value": [f"step={s} loss={printed if s == 2 else 1.5}" for s in range(4)],
        "counter first": [f"iter {s}: loss {printed if s == 2 else 1.5}, lr 0.1" for s in range(4)],
        "tqdm bar": [f"Epoch {s}: 100%|##########| 8/8 [00:00<00:00, 31.63it/s, v_num=0, "
                     f"train_loss={printed if s == 2 else 1.500}]" for s in range(4)],
        "python dict": [f"{{'loss': {printed if s == 2 else 1.5}, 'epoch': {s}.0}}" for s in range(4)],
        "keras": [line for s in range(4) for line in (f"Epoch {s + 1}/4", f"8/8 - 0s - loss: "
                                                           f"{printed if s == 2 else 1.5} - mae: 0.5")],
    }
    for shape, text in lines.items():
        if shape == "python dict" and printed not in ("nan", "inf", "-inf", "+inf"):
            continue  # a printed Python dict only ever holds Python's spellings
        f = tmp_path / f"{shape.replace(' ', '_')}.log"
        f.write_text("\n".join(text) + "\n")
        [run] = discover(f)
        loss = run.series("train_loss" if shape == "tqdm bar" else "loss")["value"].to_numpy()
        assert len(loss) == 4, (shape, printed)
        assert np.array_equal(loss, [1.5, 1.5, value, 1.5], equal_nan=True), (shape, printed)


@pytest.mark.parametrize("log", ["wide.log", "narrow.log"])
def test_lightning_rich_bar_read_as_printed(log):
    # RichProgressBar(leave=True) leaves each epoch's finished bar, metrics formatted ".3f"; on an
    # 80-column console rich wraps them onto the lines below the bar
    [run] = discover(TEXT / "lightning_rich" / log)
    want = _lightning_expected("lightning_rich", lambda v: f"{v:.3f}")
    assert set(run.tags) == set(want)
    for tag, (steps, values) in want.items():
        assert _series(run, tag) == (steps, values), tag
    [shapes] = [a for a in run.annotations if a.kind == "line_shapes"]
    assert shapes.message.startswith("recognised 4 lines (4 x rich progress bar")


def test_rich_bar_redrawn_in_a_terminal_is_not_read(tmp_path):
    # in a terminal rich redraws the bar (\r) and shows an epoch's end before its validation
    # ran, with the previous epoch's val_loss: such lines are never read as points
    bars = [line for line in (TEXT / "lightning_rich" / "wide.log").read_text().splitlines()
            if line.startswith("Epoch ")]
    f = tmp_path / "tty.log"
    f.write_text("".join(f"\r{b.replace(' 8/8 ', ' 4/8 ')}\r{b}\n" for b in bars))
    src = RunSource(name="tty", root=f, files=(f,), format="text")
    with pytest.raises(LogFormatError, match="no metric lines"):
        TextLogReader().read(src, ReadOptions())


def _keras_format(v: float) -> float:
    return float(f"{v:.4f}" if abs(v) > 1e-3 else f"{v:.4e}")  # keras.utils.Progbar's rule


@pytest.mark.parametrize("log", ["verbose1.log", "verbose2.log"])
def test_keras3_fit_output_read_as_printed(log):
    history = json.loads((TEXT / "keras_fit" / "expected.json").read_text())
    [run] = discover(TEXT / "keras_fit" / log)
    assert run.step_axis == "epoch" and set(run.tags) == set(history)
    for tag, values in history.items():
        assert _series(run, tag) == (list(range(1, len(values) + 1)), [_keras_format(v) for v in values]), tag
