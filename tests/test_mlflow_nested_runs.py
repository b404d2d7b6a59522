"""MLflow sweeps: the parent run of nested runs usually logs no metric of its own. It is left out
with a note naming it (not an error), in both stores; a store where no run logged a metric is
the error. Stores written by the real mlflow (tests/mlflow_sweep_writer.py)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lrdoctor.cli import main

pytestmark = pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="mlflow not installed")
WRITER = Path(__file__).with_name("mlflow_sweep_writer.py")


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mlflow_sweeps")
    subprocess.run([sys.executable, str(WRITER), str(out)], check=True, capture_output=True, timeout=300)
    return out


@pytest.mark.parametrize("store", ["sql", "file"])
def test_parent_without_metrics_is_a_note_and_children_are_diagnosed(stores, store, capsys):
    assert main(["diagnose", str(stores / store), "--json", "--fail-on", "never"]) == 0
    cap = capsys.readouterr()
    doc = json.loads(cap.out)
    names = sorted(r["name"] for r in doc["runs"])
    assert [n.rsplit("/", 1)[-1] for n in names] == ["child-lr0.01", "child-lr0.5"]
    assert "errors" not in doc
    (left,) = doc["left_out"]
    assert "parent" in left["message"] and "no scalar values" in left["message"]
    notes = [ln for ln in cap.err.splitlines() if ln.startswith("lrdoctor:")]
    (note,) = notes  # once, as a note
    assert note.startswith("lrdoctor: note: left out: ")
    # named as lrdoctor names the run, with its experiment and its nested runs
    assert "run parent" in note or f"run {store}/parent" in note
    assert "experiment sweep" in note and "MLflow parent of 2 nested runs" in note and "child-lr0.5" in note
    where = stores / store / "mlflow.db" if store == "sql" else stores / store / "mlruns"
    assert str(where) in note


def test_report_and_inspect_list_the_parent_and_exit_0(stores, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", str(stores / "sql"), "-o", str(out)]) == 0
    page = out.read_text()
    assert 'id="lrd-not-read"' in page and "left out" in page and "sql/parent" in page
    assert main(["inspect", str(stores / "file")]) == 0
    assert "left out" in capsys.readouterr().err


def test_the_store_file_itself_reads_the_children(stores, capsys):
    # mlflow.db named alone is one file holding three runs: the parent is still only a note
    assert main(["diagnose", str(stores / "sql" / "mlflow.db"), "--fail-on", "never"]) == 0
    assert "note: left out" in capsys.readouterr().err


@pytest.mark.parametrize("path", ["none", "none/mlflow.db"])
def test_store_where_no_run_has_metrics_is_an_error_naming_it(stores, path, capsys):
    assert main(["diagnose", str(stores / path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"lrdoctor: error: {stores / 'none' / 'mlflow.db'}: ")
    assert "none of the 3 runs holds a metric value" in err[0]
