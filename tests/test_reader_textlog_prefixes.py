"""Text logs written through a logger (``logging`` with the formats of common projects, loguru)
and the print loops of common scripts: the line's own counter is the step, never a metric, and
a diverged run is diagnosed as one.

Every log is written here by the real printer: ``logging`` with the project's format string,
loguru's default sink format, ``print`` loops with the scripts' own f-strings.
"""

from __future__ import annotations

import io
import json
import logging
import math

import numpy as np
import pytest

from lrdoctor.cli import main
from lrdoctor.errors import LogFormatError
from lrdoctor.readers import discover
from lrdoctor.readers.textlog_shapes import parse_line

STEPS = list(range(0, 400, 10))


def loss_at(step: int) -> float:
    """Falls, then grows without bound from step 250, then NaN from step 330: a diverged run."""
    if step >= 330:
        return math.nan
    return 2.4 * math.exp(-step / 200) if step < 250 else 2.4 * math.exp(-1.25) * 1.4 ** ((step - 250) / 10)


def _log_with(path, fmt: str, message, datefmt: str | None = None):
    """Each step's message through a ``logging`` handler with ``fmt``, as the script's logger writes it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(fmt, datefmt=datefmt))
    log = logging.getLogger(f"lrdoctor_test.{path.stem}")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        log.info("Starting training")
        for step in STEPS:
            log.info(message(step, loss_at(step)))
    finally:
        log.removeHandler(handler)
    path.write_text(stream.getvalue())
    return path


def _assert_read_and_diverged(path, tag, capsys, steps=STEPS):
    [run] = discover(path)
    assert run.format == "text"
    assert set(run.tags) >= {tag} and not {t for t in run.tags if t.lower() in ("step", "iteration", "num_updates")}
    s = run.series(tag)
    assert s["step"].tolist() == steps
    want = [loss_at(st) for st in STEPS]
    assert np.allclose(s["value"].to_numpy(), want, rtol=1e-3, equal_nan=True)
    assert not [a for a in run.annotations if a.kind == "no_step_counter"]
    capsys.readouterr()
    assert main(["diagnose", str(path), "--json"]) == 1
    [out] = json.loads(capsys.readouterr().out)["runs"]
    assert "divergence" in {f["rule"] for f in out["findings"]}


# the message after the prefix: what the scripts print
_STEP_LOSS = lambda step, loss: f"Step: {step}, Loss: {loss:.4f}"  # noqa: E731


@pytest.mark.parametrize("fmt, datefmt, message", [
    ("%(asctime)s - %(levelname)s - %(name)s - %(message)s", None, _STEP_LOSS),  # the logging cookbook's
    ("%(asctime)s - %(levelname)s - %(message)s", None, _STEP_LOSS),
    # HF accelerate / transformers example scripts' logging.basicConfig
    ("%(asctime)s - %(levelname)s - %(name)s - %(message)s", "%m/%d/%Y %H:%M:%S",
     lambda step, loss: f"Step: {step}, Loss: {loss:.4f}, LR: 1e-3"),
    ("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s", None,  # Hydra's job logging
     lambda step, loss: f"step: {step}, loss: {loss:.4f}"),
    ("%(levelname)s:%(name)s:%(message)s", None, _STEP_LOSS),  # logging.basicConfig's default
    ("%(asctime)s - %(levelname)s - %(message)s", None, lambda step, loss: f"step {step} - loss: {loss:.4f}"),
    ("%(asctime)s %(levelname)s %(name)s: %(message)s", None, lambda step, loss: f"Step {step} | Loss {loss:.4f}"),
])
def test_logging_module_prefixes(tmp_path, capsys, fmt, datefmt, message):
    f = _log_with(tmp_path / "train.log", fmt, message, datefmt)
    _assert_read_and_diverged(f, "Loss" if "Loss" in message(0, 1.0) else "loss", capsys)


def test_loguru_prefix(tmp_path, capsys):
    loguru = pytest.importorskip("loguru")
    f = tmp_path / "train.log"
    with f.open("w") as fh:
        sink = loguru.logger.add(fh, level="INFO")  # loguru's default format: ts | LEVEL | mod:fn:line - msg
        try:
            for step in STEPS:
                loguru.logger.info("Step: {}, Loss: {:.4f}", step, loss_at(step))
        finally:
            loguru.logger.remove(sink)
    assert " | INFO     | " in f.read_text()
    _assert_read_and_diverged(f, "Loss", capsys)


def test_fairseq_num_updates_is_the_step(tmp_path, capsys):
    """fairseq's train_inner lines (its logging format and SimpleProgressBar's print): the
    ``100 / 5000`` counts batches of the epoch, ``num_updates`` is the global optimizer step."""
    def message(step, loss):
        stats = f"loss={loss:.3f}, ppl={2 ** loss:.2f}, wps=12345.6, num_updates={step + 100}, lr=0.0005, gnorm=1.2"
        return "{}:  {:5d} / {:d} {}".format("epoch 001", step + 100, 5000, stats)  # noqa: UP032 - fairseq's own
    f = _log_with(tmp_path / "train.log", "%(asctime)s | %(levelname)s | %(name)s | %(message)s", message,
                  "%Y-%m-%d %H:%M:%S")
    _assert_read_and_diverged(f, "loss", capsys, steps=[s + 100 for s in STEPS])
    [run] = discover(f)
    assert "num_updates" not in run.tags and "gnorm" in run.tags


def _printed(path, line):
    path.write_text("Loading data...\n" + "".join(line(step, loss_at(step)) + "\n" for step in STEPS) + "Done.\n")
    return path


@pytest.mark.parametrize("line", [
    lambda step, loss: f"epoch {step // 100} step {step} loss {loss:.4f} lr {1e-3:.2e}",  # a print loop
    lambda step, loss: f"step {step} loss {loss:.4f}",
    lambda step, loss: f"global_step {step} train_loss {loss:.4f}",
    lambda step, loss: f"Iteration {step}/1000 loss {loss:.4f}",
    lambda step, loss: f"[{step}/2000] loss: {loss:.4f} lr: {1e-3:.2e}",
    lambda step, loss: f"[default0]:step {step} loss {loss:.4f}",  # torchrun --tee's prefix
    lambda step, loss: json.dumps({"step": step, "loss": loss}),  # JSON among other prints (nohup.out)
])
def test_print_loops(tmp_path, capsys, line):
    f = _printed(tmp_path / "nohup.out", line)
    _assert_read_and_diverged(f, next(t for t in ("train_loss", "loss") if t in line(0, 1.0)), capsys)


def test_several_ranks_read_rank_zero_only(tmp_path):
    f = tmp_path / "train.log"
    f.write_text("".join(f"[rank{r}]: step {step} loss {loss_at(step) + r:.4f}\n" for step in STEPS if step < 330
                         for r in range(4)))
    [run] = discover(f)
    s = run.series("loss")
    assert s["step"].tolist() == [st for st in STEPS if st < 330]
    assert np.allclose(s["value"], [loss_at(st) for st in STEPS if st < 330], rtol=1e-3)
    assert any(a.kind == "ranks" and "rank 0" in a.message for a in run.annotations)


@pytest.mark.parametrize("line", [
    "2026-12-02 19:30:38,123 - INFO - __main__ - Step: 980, Loss: 2.5",
    "2026-12-02 19:30:38,123 - INFO - __main__ - Epoch 3 - step: 980 - loss: 2.5",
    " - iteration: 980 - loss: 2.5",  # Keras's ' - name: value' shape with a counter among its pairs
])
def test_a_counter_is_never_a_metric(line):
    got = parse_line(line)
    assert got is not None and got.counters.get("step") == 980 and [k.lower() for k, _ in got.pairs] == ["loss"]


@pytest.mark.parametrize("text", [
    "loss 2.3 acc 0.5\n" * 10,  # no counter: no step to take
    "Processed 100 files in 3 seconds\n" * 10,
    "step 5 of 10 done\n" * 10,  # not name/number alternating
    "INFO:root:loss: 2.3\n" * 10,
])
def test_blank_separated_words_and_numbers_are_not_metrics(tmp_path, text):
    f = tmp_path / "out.log"
    f.write_text(text)
    with pytest.raises(LogFormatError, match="not a log format"):
        discover(f)
