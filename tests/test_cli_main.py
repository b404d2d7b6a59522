"""The CLI shell: one-line errors with exit 2, and a closed pipe is not a failure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lrdoctor.cli import main

SAMPLES = Path(__file__).resolve().parent.parent / "sample_logs"


def test_unwritable_output_path_is_one_line_and_exit_2(tmp_path, capsys):
    rc = main(["export", str(SAMPLES / "healthy-mlp-tensorboard"), "-o", str(tmp_path / "missing" / "x.csv")])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("lrdoctor: error:") and "\n" not in err and "Traceback" not in err


def test_report_into_an_unwritable_place_is_one_line_and_exit_2(tmp_path, capsys):
    target = tmp_path / "ro"
    target.write_text("a file, not a directory")
    rc = main(["report", str(SAMPLES / "healthy-mlp-tensorboard"), "-o", str(target / "r.html")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "Traceback" not in err


def test_reader_closing_the_pipe_early_is_exit_0():
    # export of all samples to stdout is far more than a pipe buffer (64 KiB), so the write fails
    proc = subprocess.Popen(
        [sys.executable, "-m", "lrdoctor.cli", "export", str(SAMPLES), "-o", "-"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    proc.stdout.read(20)
    proc.stdout.close()
    assert proc.wait(timeout=60) == 0
    assert b"Traceback" not in proc.stderr.read()


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_diagnose_keeps_its_exit_code_and_html_when_the_reader_leaves(tmp_path, json_flag):
    """`lrdoctor diagnose runs | head -1` under `set -o pipefail`: the samples hold errors, so the
    exit code is 1 however much of the output was read, and --html is still written. The pipe is
    closed before diagnose prints anything (reading the samples takes far longer than this)."""
    html = tmp_path / "r.html"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lrdoctor.cli", "diagnose", str(SAMPLES), "--html", str(html), *json_flag],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    proc.stdout.close()
    assert proc.wait(timeout=120) == 1
    assert b"Traceback" not in proc.stderr.read()
    assert html.stat().st_size > 10_000


def test_unknown_subcommand_is_exit_2(capsys):
    assert main(["frobnicate"]) == 2
    assert "frobnicate" in capsys.readouterr().err


def test_report_names_unreadable_runs_and_exits_2_after_writing_the_rest(tmp_path, capsys):
    import shutil

    root = tmp_path / "sweep"
    shutil.copytree(SAMPLES / "healthy-mlp-tensorboard", root / "good")
    (root / "broken").mkdir()
    (root / "broken" / "trainer_state.json").write_text('{"log_history": [{"step": 1, "loss"')  # cut mid-write
    out = tmp_path / "r.html"
    assert main(["report", str(root), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert out.exists() and "good" in out.read_text()
    assert [ln for ln in err.splitlines() if ln.startswith("lrdoctor: error: run not read:") and "trainer_state.json" in ln]
