"""Text-log reader on what real printers print.

The HuggingFace Trainer output is committed (tests/data/text/hf_trainer, made by
scripts/make_tracker_fixtures.py --only hf: a tiny random GPT-2 trained 60 steps with
transformers' Trainer, stdout+stderr as nohup keeps them); the other shapes are printed here by
plain loops with the print statements of the projects they come from.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reader_fixtures import write_keras_csv, write_llamafactory_jsonl

from lrdoctor.cli import main
from lrdoctor.errors import LogFormatError
from lrdoctor.readers import discover
from lrdoctor.readers.textlog_shapes import colon_pairs, named_pairs

HF = Path(__file__).parent / "data" / "text" / "hf_trainer"


def points(run, tag):
    s = run.series(tag)
    return s["step"].tolist(), s["value"].to_numpy()


#: HF Trainer's timing metrics, which differ between the three captures of the same seeded run.
_TIMINGS = ("_runtime", "_per_second")


@pytest.mark.parametrize("log, by_step", [("train.log", True), ("buffered.log", False), ("stdout.log", False)])
def test_hf_trainer_printed_dicts_read_as_logged(log, by_step):
    """train.log: stdout unbuffered, stderr in the same file: each dict is printed between
    tqdm's clearing of the bar and its redraw at the global step, which is the dict's step.
    buffered.log (nohup's block-buffered stdout) and stdout.log (no bar): occurrence numbering."""
    history = json.loads((HF / "expected.json").read_text())
    [run] = discover(HF / log)
    assert run.format == "text"
    # ProgressCallback prints each float as f"{v:.4g}" (it leaves out total_flos)
    keys = {k for entry in history for k, v in entry.items()
            if k not in ("step", "total_flos") and isinstance(v, (int, float))}
    assert set(run.tags) == keys
    for key in keys:
        entries = [e for e in history if key in e]
        want = [float(f"{e[key]:.4g}") if isinstance(e[key], float) else e[key] for e in entries]
        steps, got = points(run, key)
        assert steps == ([e["step"] for e in entries] if by_step else list(range(len(want)))), key
        if log == "train.log" or not key.endswith(_TIMINGS):
            assert np.array_equal(got, np.array(want, dtype=float), equal_nan=True), key
    kinds = {a.kind: a for a in run.annotations}
    assert ("bar_step" in kinds) == by_step and ("no_step_counter" in kinds) != by_step
    assert kinds["line_shapes"].message.startswith(f"recognised {len(history)} lines (")
    if by_step:  # the end-of-training summary sits at the last step, as in trainer_state.json
        assert points(run, "train_runtime")[0] == [history[-1]["step"]] == [max(points(run, "loss")[0])]


def test_hf_trainer_dicts_take_bar_steps_only_when_every_dict_is_framed(tmp_path):
    """A dict printed by the script itself (not through tqdm.write) is not framed by the bar's
    clear and redraw: then no dict takes the bar's step (one series numbered two ways is none)."""
    raw = (HF / "train.log").read_bytes()
    f = tmp_path / "train.log"
    f.write_bytes(b"{'loss': 9.5, 'epoch': 0.0}\n" + raw)
    [run] = discover(f)
    assert points(run, "loss")[0][:3] == [0, 1, 2] and points(run, "loss")[1][0] == 9.5
    assert not [a for a in run.annotations if a.kind == "bar_step"]


def _print_to(path: Path, body) -> Path:
    buf = io.StringIO()
    body(buf)
    path.write_text(buf.getvalue())
    return path


def test_nanogpt_lines(tmp_path):
    def body(out):  # nanoGPT train.py's two prints
        for it in range(0, 30):
            if it % 10 == 0:
                print(f"step {it}: train loss {3 - it * 0.01:.4f}, val loss {3.1 - it * 0.01:.4f}", file=out)
            print(f"iter {it}: loss {3 - it * 0.02:.4f}, time {12.3 + it:.2f}ms, mfu {-100.0 if it < 5 else 1.5:.2f}%",
                  file=out)
    [run] = discover(_print_to(tmp_path / "nohup.out", body))
    steps, vals = points(run, "loss")
    assert steps == list(range(30)) and np.array_equal(vals, [float(f"{3 - i * 0.02:.4f}") for i in range(30)])
    steps, vals = points(run, "val loss")
    assert steps == [0, 10, 20] and vals.tolist() == [3.1, 3.0, 2.9]
    assert points(run, "mfu")[1][0] == -100.0
    assert run.step_axis == "step" and not [a for a in run.annotations if a.kind == "no_step_counter"]


def test_pytorch_tutorial_epoch_step_lines(tmp_path):
    def body(out):  # pytorch/examples-style: Step restarts every epoch
        for epoch in range(2):
            for i in range(60):
                if (i + 1) % 20 == 0:
                    print("Epoch [{}/{}], Step [{}/{}], Loss: {:.4f}".format(  # noqa: UP032 - the tutorial's own print
                        epoch + 1, 2, i + 1, 60, 1 / (i + 1 + 60 * epoch)),
                          file=out)
    [run] = discover(_print_to(tmp_path / "train.log", body))
    steps, vals = points(run, "Loss")
    assert steps == [20, 40, 60, 80, 100, 120]
    assert vals.tolist() == [float(f"{1 / s:.4f}") for s in steps]
    assert any(a.kind == "combined_step" for a in run.annotations)


def test_key_value_and_colon_lines(tmp_path):
    def body(out):
        print("Namespace(lr=0.001, batch_size=32)", file=out)  # a config dump: not a series
        for step in range(0, 50, 10):
            print(f"step={step} loss={2.3 - step / 100:.3f} lr={1e-3:.1e}", file=out)
        print("step=50 loss=nan lr=1.0e-03", file=out)
        for step in range(3):
            print(f"Step: {step}, Loss: {0.5 + step:.2f}, grad norm: inf", file=out)
    [run] = discover(_print_to(tmp_path / "slurm-1234.out", body))
    steps, vals = points(run, "loss")
    assert steps == [0, 10, 20, 30, 40, 50]
    assert np.array_equal(vals, [2.3, 2.2, 2.1, 2.0, 1.9, np.nan], equal_nan=True)
    assert points(run, "lr")[1].tolist() == [1e-3] * 6
    assert "batch_size" not in run.tags
    assert points(run, "Loss")[0] == [0, 1, 2] and np.isinf(points(run, "grad norm")[1]).all()
    assert any(a.kind == "restart" for a in run.annotations)  # the Step: lines start again at 0


def test_keras_fit_output(tmp_path):
    def body(out):  # Keras 2 fit(verbose=1) as nohup keeps it: \r progress updates, then the epoch line
        for epoch in range(1, 4):
            print(f"Epoch {epoch}/3", file=out)
            bar = "".join(f"\r {b}/10 [====>.....] - ETA: 1s - loss: {9.0:.4f}" for b in range(1, 10))
            print(bar + f"\r10/10 [==============================] - 1s 50ms/step - loss: {1 / epoch:.4f} "
                  f"- val_loss: {1.2 / epoch:.4f}", file=out)
    [run] = discover(_print_to(tmp_path / "train.log", body))
    assert run.step_axis == "epoch"
    steps, vals = points(run, "loss")
    assert steps == [1, 2, 3] and vals.tolist() == [1.0, 0.5, float(f"{1 / 3:.4f}")]  # 9.0 partials never read
    assert points(run, "val_loss")[0] == [1, 2, 3]


def test_structured_readers_win(tmp_path):
    # a Keras CSV named train.log and a JSONL file stay what they are
    write_keras_csv(tmp_path / "a" / "train.log", [{"loss": 1.0}, {"loss": 0.5}, {"loss": 0.4}, {"loss": 0.3}])
    (tmp_path / "b").mkdir()
    write_llamafactory_jsonl(tmp_path / "b" / "trainer_log.jsonl",
                             [{"current_steps": i, "loss": 1.0 / (i + 1)} for i in range(5)])
    formats = {r.name: r.format for r in discover(tmp_path)}
    assert formats == {"a": "keras_csv", "b": "jsonl"}


def test_prose_is_not_a_log(tmp_path, capsys):
    f = tmp_path / "notes.txt"
    f.write_text("We trained for 3 epochs.\nlr: 0.1 worked, batch: 32\nDone.\n")
    assert main(["inspect", str(f)]) == 2
    assert "not a log format" in capsys.readouterr().err


def _intact_log() -> bytes:
    buf = io.StringIO()
    for it in range(40):
        if it % 10 == 0:
            print(f"step {it}: train loss {3 - it * 0.01:.4f}, val loss {3.1 - it * 0.01:.4f}", file=buf)
        print(f"iter {it}: loss {3 - it * 0.02:.4f}, time {12.3 + it:.2f}ms", file=buf)
        if it % 7 == 0:
            print("Epoch [{}/{}], Step [{}/{}], Loss: {:.4f}".format(  # noqa: UP032
                it // 20 + 1, 2, it % 20 + 1, 20, 0.5), file=buf)
    return buf.getvalue().encode()


def _set(run) -> set:
    s = run.scalars
    return set(zip(s["tag"].astype(str), s["step"].tolist(), s["value"].map(repr), strict=True))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_truncated_or_damaged_text_never_crashes_nor_invents(tmp_path, data):
    raw = bytearray(_intact_log())
    intact_path = tmp_path / "intact.log"
    intact_path.write_bytes(bytes(raw))
    [intact] = discover(intact_path)
    raw = raw[: data.draw(st.integers(0, len(raw)))]
    for _ in range(data.draw(st.integers(0, 5))):
        if raw:
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.sampled_from([0x00, 0xFF, 0x80, 0x07, 0x1F]))
    f = tmp_path / "damaged.log"
    f.write_bytes(bytes(raw))
    try:
        [run] = discover(f)
    except LogFormatError:
        return  # nothing left to read, or no longer text: one line, not a crash
    assert _set(run) <= _set(intact)


def test_truncated_last_line_is_not_read(tmp_path):
    f = tmp_path / "train.log"
    f.write_text("step=1 loss=2.5\nstep=2 loss=2.4\nstep=3 loss=2.3\nstep=4 loss=2.2")  # "2.25" cut short?
    [run] = discover(f)
    assert points(run, "loss")[0] == [1, 2, 3]
    assert any(a.kind == "truncated" and a.location == "line 4" for a in run.annotations)


def test_truncated_last_line_under_strict(tmp_path):
    """--strict: a cut metric line is an error naming the file and line, as a cut JSON Lines
    record is; a cut line that would not have been read (a bar still drawing) stays a note."""
    f = tmp_path / "train.log"
    f.write_text("step=1 loss=2.5\nstep=2 loss=2.4\nstep=3 loss=2.3\nstep=4 loss=2.2")
    with pytest.raises(LogFormatError) as err:
        discover(f, strict=True)
    assert err.value.path == str(f) and err.value.location == "line 4"
    g = tmp_path / "bar.log"
    g.write_text("step=1 loss=2.5\nstep=2 loss=2.4\nstep=3 loss=2.3\nEpoch 1:  50%|#####     | 4/8 [00:01<00:01]")
    [run] = discover(g, strict=True)
    assert points(run, "loss")[0] == [1, 2, 3]
    assert [a.location for a in run.annotations if a.kind == "truncated"] == ["line 4"]


#: Lines on which the shapes' former patterns were quadratic (the fuzz test's two, from a damaged
#: .wandb file, and others of the same kind), each ~100 KB: no shape reads them.
ADVERSARIAL = {
    "a a a": "a " * 50_000, "blanks": " " * 100_000 + "x", "tabs": "\t" * 100_000 + "x", "a=": "a=" * 50_000,
    "digits": "1" * 100_000, "colons": ": " * 50_000, "a.a.": "a." * 50_000, "a 1 ": "a 1 " * 25_000,
    "cut dict": "{'a': " * 20_000, "digit value": "loss: " + "1" * 100_000 + "x",
    "counter blanks": "step" + " " * 100_000 + "x", "lead run": "iter 1: " + "a." * 50_000,
    "keras dashes": " - a:" * 20_000,
}


def test_enormous_lines_are_tried_and_skipped_not_a_hang(tmp_path):
    """The shapes' patterns were quadratic on some text ("a a a ...", a run of blanks): a damaged
    file's 400 KB line took hours (found by the fuzz test on a damaged .wandb file), so lines over
    4,096 characters were skipped unread. Every pattern is linear now (benchmarks/text_line_cost.py
    times them): such lines are tried, and skipped and counted as before; a long metric line (an
    HF dict of 400 metrics, ~16 KB, skipped before) is read."""
    long_dict = "{" + ", ".join(f"'metric_{i}': '{i / 7:.4g}'" for i in range(400)) + "}"
    assert len(long_dict) > 4096
    f = tmp_path / "train.log"
    f.write_text("step=1 loss=2.5\nstep=2 loss=2.4\nstep=3 loss=2.3\n" + "a " * 200_000 + "\n"
                 + " " * 400_000 + "x\n" + "\n".join(ADVERSARIAL.values()) + "\nstep=4 loss=2.2\n"
                 + f"{long_dict}\n{long_dict}\n")
    [run] = discover(f)
    assert points(run, "loss")[0] == [1, 2, 3, 4]
    assert points(run, "metric_399")[1].tolist() == [float(f"{399 / 7:.4g}")] * 2
    [shapes] = [a for a in run.annotations if a.kind == "line_shapes"]
    assert shapes.message.endswith(f"; {2 + len(ADVERSARIAL)} lines skipped")


#: The patterns colon_pairs and named_pairs replace (quadratic on some text): on short lines they
#: are the reference for what those two find.
_OLD_NUM = r"[-+]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|(?i:nan|inf(?:inity)?)(?:\.0*)?)"
_OLD_VALUE = rf"({_OLD_NUM})(?:%|ms|s|it/s|s/it)?(?![\w/:.])"
_OLD_COLON_PAIR = re.compile(rf"(?:^|[\s,|;\]\-])([A-Za-z][\w./ -]*?)\s*:\s*{_OLD_VALUE}")
_OLD_NAMED_PAIR = re.compile(rf"([A-Za-z][\w./-]*(?: [A-Za-z][\w./-]*)?)\s*[:=]?\s+{_OLD_VALUE}")
_TOKENS = ["a", "loss", "grad norm", "lr", " ", "  ", "\t", ":", ": ", "=", ",", "|", ";", "]", "[", "-", " - ",
           "(", "1", "0.5", "1e-3", "nan", "inf", "-inf", "100/600", "s", "ms", "%", ".", "/", "_", "x1", "1a",
           "Step", "iter", "é", "{'a': 1}", "'"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_TOKENS), min_size=1, max_size=16).map("".join))
def test_linear_pair_scanners_find_what_the_old_patterns_found(line):
    assert colon_pairs(line) == _OLD_COLON_PAIR.findall(line)
    assert named_pairs(line) == _OLD_NAMED_PAIR.findall(line)


@pytest.mark.parametrize("strict", [False, True])
def test_damaged_line_annotated_or_error(tmp_path, strict):
    f = tmp_path / "train.log"
    f.write_bytes(b"step=1 loss=2.5\nstep=2 loss=2.\xff4\nstep=3 loss=2.3\nstep=4 loss=2.2\n")
    if strict:
        with pytest.raises(LogFormatError, match="line 2"):
            discover(f, strict=True)
        return
    [run] = discover(f)
    assert points(run, "loss")[0] == [1, 3, 4]
    assert any(a.kind == "damaged_line" and a.location == "line 2" for a in run.annotations)
