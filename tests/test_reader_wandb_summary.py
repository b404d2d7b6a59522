"""``Run.summary`` of a W&B run equals wandb's own records replayed in order.

The oracle decodes every record with wandb's protobuf ``Record`` class (on lrdoctor's framing)
and applies each summary update and remove in file order, the run record's summary first; the
reader finds the last update of each key in bulk instead. Runs: the committed fixtures, and one
written here by wandb (offline) where keys are logged many times, set through ``run.summary``,
nested, overwritten and deleted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lrdoctor.readers import discover
from lrdoctor.readers._tfrecord import Problems
from lrdoctor.readers._wandb_log import scan

DATA = Path(__file__).parent / "data" / "wandb"

WRITE = r'''
import wandb
run = wandb.init(project="t", mode="offline", dir=".", settings=wandb.Settings(console="off"))
for i in range(300):
    run.log({"loss": 1.0 / (i + 1), "val": {"acc": i / 300}, "lr": 1e-3 * (i % 7)})
    if i % 50 == 0:
        run.summary["best"] = i
        run.summary["gone"] = i
run.summary["best_loss"] = {"value": 0.5, "step": 12}
run.summary["loss"] = -1.0  # overrides the last logged loss
del run.summary["gone"]
run.log({"late": 3})
run.finish()
'''


def _oracle(path: Path) -> dict:
    pb = pytest.importorskip("wandb.proto.wandb_internal_pb2")
    sc = scan(path, Problems(str(path), False))
    out: dict = {}

    def name(it) -> str:
        return "/".join(it.nested_key) if it.nested_key else it.key

    for i in range(len(sc.start)):
        r = pb.Record.FromString(sc.buffer[sc.start[i]:sc.start[i] + sc.length[i]].tobytes())
        s = r.run.summary if r.HasField("run") else r.summary if r.HasField("summary") else None
        if s is None:
            continue
        for it in s.update:
            out[name(it)] = json.loads(it.value_json)
        for it in s.remove:
            out.pop(name(it), None)
    return {k: v for k, v in out.items() if not k.startswith("_")}


def _check(root: Path) -> int:
    runs = discover(root)
    for run in runs:
        want = _oracle(Path(run.source))
        assert run.summary == want, run.name
    return len(runs)


def test_summary_of_committed_runs_is_wandbs_replayed():
    assert _check(DATA) >= 3


def test_summary_after_many_updates_explicit_sets_and_a_delete(tmp_path):
    pytest.importorskip("wandb")
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    subprocess.run([sys.executable, "-c", WRITE], cwd=tmp_path, env=env, check=True, timeout=120)
    [run] = discover(tmp_path / "wandb")
    assert _check(tmp_path / "wandb") == 1
    assert run.summary["loss"] == -1.0 and run.summary["best"] == 250 and "gone" not in run.summary
    assert run.summary["val/acc"] == 299 / 300 and run.summary["late"] == 3


def _source() -> Path:
    return next(p for p in sorted(DATA.rglob("*.wandb")) if "best_val" in _oracle(p))


def _read(path: Path, strict: bool = False):
    from lrdoctor.readers import read_source
    from lrdoctor.readers.base import ReadOptions, RunSource

    return read_source(RunSource(name="x", root=path, files=(path,), format="wandb"), ReadOptions(strict=strict))


def test_summary_is_decoded_when_first_used_not_when_the_points_are_read(tmp_path, monkeypatch):
    from lrdoctor.readers import _wandb_summary, wandb_run

    f = tmp_path / "run-x.wandb"
    f.write_bytes(_source().read_bytes())
    calls = []
    decode = _wandb_summary.decode
    for module in (_wandb_summary, wandb_run):
        monkeypatch.setattr(module, "decode", lambda *a: calls.append(1) or decode(*a))
    run = _read(f)
    assert len(run.scalars) and calls == []  # what diagnosis reads: no summary decoded
    assert run.summary == _oracle(f) and calls == [1]
    assert run.summary["best_val"] == 0.25 and calls == [1]  # decoded once
    # under --strict a damaged summary must be an error at once: decoded while reading
    assert _read(f, strict=True).summary == _oracle(f) and calls == [1, 1]


def test_summary_of_a_file_changed_or_gone_since_read_is_not_guessed(tmp_path, caplog):
    f = tmp_path / "run-x.wandb"
    data = _source().read_bytes()
    f.write_bytes(data)
    changed, gone = _read(f), _read(f)
    f.write_bytes(data + data[7:100])  # appended to: the records read before are still there
    assert changed.summary == _oracle(f)
    later = _read(f)
    other = next(p for p in sorted(DATA.rglob("*.wandb")) if p.read_bytes() != data)
    f.write_bytes(other.read_bytes())
    with caplog.at_level("WARNING"):
        assert dict(later.summary) == {}  # this run's record holds no summary of its own
    assert "changed since its points were read" in caplog.text and str(f) in caplog.text
    f.unlink()
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert dict(gone.summary) == {}
    assert "W&B summary not read" in caplog.text and str(f) in caplog.text
