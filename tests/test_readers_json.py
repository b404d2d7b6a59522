"""JSON-shaped readers: HF trainer_state.json, JSON Lines (LLaMA-Factory), Keras history.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
from reader_fixtures import write_history_json, write_llamafactory_jsonl, write_trainer_state

from lrdoctor.errors import LogFormatError
from lrdoctor.readers import discover


def same(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return a.shape == b.shape and bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))


def hf_history():
    hist = []
    for step in range(10, 110, 10):
        hist.append({"epoch": step / 100, "grad_norm": 1.0 + step / 1000, "learning_rate": 5e-5 * step / 100,
                     "loss": 2.0 - step / 100, "step": step})
        if step % 50 == 0:
            hist.append({"epoch": step / 100, "eval_loss": 1.9 - step / 200, "eval_runtime": 3.2, "step": step})
            hist.append({"epoch": step / 100, "predict_loss": 1.8, "predict_runtime": 3.0})  # no step
    hist[3]["loss"] = float("nan")
    hist[4]["grad_norm"] = float("inf")
    hist.append({"epoch": 1.0, "step": 100, "total_flos": 1e12, "train_loss": 1.5, "train_runtime": 60.0})
    return hist


def test_hf_trainer_state_round_trip(tmp_path):
    hist = hf_history()
    f = write_trainer_state(tmp_path / "out" / "trainer_state.json", hist, global_step=100)
    assert "NaN" in f.read_text() and "Infinity" in f.read_text()
    [run] = discover(tmp_path / "out")
    assert run.format == "hf_trainer_state" and run.name == "out"
    for tag in ("loss", "grad_norm", "learning_rate", "eval_loss", "train_loss"):
        want = [(e["step"], e[tag]) for e in hist if tag in e]
        s = run.series(tag)
        assert s["step"].tolist() == [w[0] for w in want]
        assert same(s["value"], [w[1] for w in want])
    # eval entries are separate records at the same step as train entries: no duplicates for loss
    assert run.series("eval_loss")["step"].tolist() == [50, 100]
    # predict entries have no step: they take the step before them, and that is reported
    assert run.series("predict_loss")["step"].tolist() == [50, 100]
    assert [a.kind for a in run.annotations] == ["missing_step"]
    assert run.hparams["train_batch_size"] == 8 and run.hparams["global_step"] == 100


def test_hf_custom_lr_key_and_text_values(tmp_path):
    hist = [{"epoch": 0.1, "grad_norm": 4.8, "loss": 24.8, "lr": 1e-4, "remaining_time": "59h:30m:19s",
             "step": 20, "train/acc_0": 0.04},
            {"epoch": 0.2, "grad_norm": 3.7, "loss": 20.4, "lr": 1e-4, "remaining_time": "53h:52m:50s",
             "step": 40, "train/acc_0": "n/a"}]
    write_trainer_state(tmp_path / "trainer_state.json", hist, global_step=40)
    [run] = discover(tmp_path / "trainer_state.json")
    assert run.tags == ["epoch", "grad_norm", "loss", "lr", "train/acc_0"]
    assert same(run.series("train/acc_0")["value"], [0.04])  # "n/a" is no point, but reported
    kinds = {a.kind: a for a in run.annotations}
    assert set(kinds) == {"non_numeric_column", "non_numeric"}
    assert kinds["non_numeric"].location == "log_history entry 1, key 'train/acc_0'"
    with pytest.raises(LogFormatError, match="train/acc_0"):
        discover(tmp_path / "trainer_state.json", strict=True)


def test_llamafactory_trainer_log_jsonl(tmp_path):
    f = tmp_path / "trainer_log.jsonl"
    entries = [{"current_steps": s, "total_steps": 30, "loss": 2.0 / s, "eval_loss": None, "predict_loss": None,
                "reward": None, "accuracy": None, "lr": 1e-4, "epoch": s / 30, "percentage": s / 30 * 100,
                "elapsed_time": "0:00:05", "remaining_time": "0:01:00"} for s in range(5, 35, 5)]
    entries[2]["loss"] = float("nan")
    entries.append({"current_steps": 30, "total_steps": 30, "eval_loss": 0.5, "epoch": 1.0,
                    "elapsed_time": "0:02:00", "remaining_time": "0:00:00"})
    write_llamafactory_jsonl(f, entries)
    with f.open("a") as fh:
        fh.write('{"current_steps": 35, "loss": 0.')  # still being written
    [run] = discover(tmp_path)
    assert run.format == "jsonl" and run.name == tmp_path.name
    assert "eval_loss" in run.tags and "reward" not in run.tags and "elapsed_time" not in run.tags
    s = run.series("loss")
    assert s["step"].tolist() == [5, 10, 15, 20, 25, 30]
    assert same(s["value"], [e["loss"] for e in entries if "loss" in e])
    assert run.series("eval_loss")["step"].tolist() == [30]
    kinds = sorted(a.kind for a in run.annotations)
    assert kinds == ["non_numeric_column", "non_numeric_column", "truncated"]
    with pytest.raises(LogFormatError, match="line 8"):
        discover(f, strict=True)


def test_keras_history_json(tmp_path):
    hist = {"loss": [1.0, float("nan"), 0.5], "accuracy": [0.1, 0.2, 0.3], "val_loss": [1.1, float("inf")]}
    f = write_history_json(tmp_path / "history.json", hist)
    assert "NaN" in f.read_text()
    [run] = discover(f)
    assert run.format == "keras_history" and run.step_axis == "epoch" and run.name == tmp_path.name
    for tag, vals in hist.items():
        s = run.series(tag)
        assert s["step"].tolist() == list(range(len(vals)))
        assert same(s["value"], vals)


def test_unrelated_json_is_not_a_run(tmp_path):
    (tmp_path / "config.json").write_text('{"architectures": ["LlamaForCausalLM"], "hidden_size": 64}')
    with pytest.raises(LogFormatError, match="supported: .*hf_trainer_state"):
        discover(tmp_path / "config.json")


def test_history_json_with_epochs_and_metrics(tmp_path):
    # the shape real repositories save: json.dump({"epochs": [...], "metrics": history.history})
    loss = [3.0, 2.0, 2.5, float("nan"), float("nan")]
    val = [3.1, 2.2, float("inf"), float("nan"), 1.0]
    f = tmp_path / "history.json"
    f.write_text(json.dumps({"epochs": [0.0, 1.0, 2.0, 3.0, 4.0],
                             "metrics": {"loss": loss, "val_loss": val, "learning_rate": [1e-3] * 5}}, indent=2))
    [run] = discover(f)
    assert run.format == "keras_history" and run.step_axis == "epoch"
    for tag, want in (("loss", loss), ("val_loss", val)):
        s = run.series(tag)
        assert s["step"].tolist() == [0, 1, 2, 3, 4]
        assert np.array_equal(s["value"].to_numpy(), np.array(want), equal_nan=True)
    assert not run.annotations
    # epochs that do not start at 0 (a resumed fit) are the steps, metrics key first also sniffed
    g = tmp_path / "resumed" / "history.json"
    g.parent.mkdir()
    g.write_text(json.dumps({"metrics": {"loss": [1.0, 0.9]}, "epochs": [10, 11]}))
    [run] = discover(g)
    assert run.series("loss")["step"].tolist() == [10, 11]
    bad = tmp_path / "bad" / "history.json"
    bad.parent.mkdir()
    bad.write_text(json.dumps({"epochs": ["first"], "metrics": {"loss": [1.0]}}))
    with pytest.raises(LogFormatError, match="'epochs' holds no numbers"):
        discover(bad)
