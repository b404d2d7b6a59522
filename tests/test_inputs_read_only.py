"""Inputs are never written: every command runs on a tree of logs in every format, made read-only,
and afterwards no file or directory under it differs (content hash, size, mode, mtime; no entry
added or removed; a directory's mtime catches a file created and deleted again, such as a SQLite
journal or a lock).

As root the read-only modes are not enforced by the kernel, so the snapshot comparison is what
makes this test fail; as any other user a write attempt fails the command as well.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import stat
import sys
from pathlib import Path

import pytest

from lrdoctor.cli import main

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"

#: A rerun command that needs no torch: writes a falling loss curve as metrics.csv.
FAKE_TRAIN = """\
import sys, pathlib
d = pathlib.Path(sys.argv[1]); d.mkdir(parents=True, exist_ok=True)
n, lr = int(sys.argv[2]), float(sys.argv[3])
(d / "metrics.csv").write_text("step,train_loss\\n" + "".join(f"{i},{1 / (i + 1 + lr)}\\n" for i in range(n)))
"""


def snapshot(root: Path) -> dict[str, tuple]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            digest = None
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as fh:
                    digest = hashlib.file_digest(fh, "sha256").hexdigest() if hasattr(hashlib, "file_digest") \
                        else hashlib.sha256(fh.read()).hexdigest()
            out[os.path.relpath(p, root)] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    st = os.lstat(root)
    out["."] = (st.st_mode, st.st_size, st.st_mtime_ns, None)
    return out


def _chmod_tree(root: Path, writable: bool) -> None:
    for dirpath, _, filenames in os.walk(root, topdown=False):
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o644 if writable else 0o444)
        os.chmod(dirpath, 0o755 if writable else 0o555)


@pytest.fixture
def tree(tmp_path) -> Path:
    t = tmp_path / "logs"
    shutil.copytree(ROOT / "sample_logs", t)  # TensorBoard, tensorboardX, Lightning, HF, JSONL, Keras, MLflow
    shutil.copytree(DATA / "wandb" / "wandb", t / "wandb-runs" / "wandb")
    shutil.copy(DATA / "mlflow_sqlite" / "mlflow.db", t / "mlflow.db")
    _chmod_tree(t, writable=False)
    yield t
    _chmod_tree(t, writable=True)


def test_no_command_changes_a_file_under_its_input(tree, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    train = tmp_path / "fake_train.py"
    train.write_text(FAKE_TRAIN)
    template = f"{shlex.quote(sys.executable)} {shlex.quote(str(train))} {{logdir}} {{max_steps}} {{lr}}"
    lightning = tree / "divergence-mlp-lightning"
    commands = [
        ["inspect", str(tree)],
        ["inspect", str(tree), "--json"],
        ["export", str(tree), "-o", str(out / "all.csv")],
        ["export", str(tree), "-o", str(out / "all.parquet")],
        ["diagnose", str(tree), "--json", "--fail-on", "never"],
        ["diagnose", str(lightning), "--html", str(out / "d.html"), "--fail-on", "never"],
        ["report", str(tree), "-o", str(out / "r.html")],
        ["verify", str(lightning), "--train", template, "--seeds", "3", "--budget-steps", "20", "-j", "2",
         "--out", str(out / "verify")],
        ["watch", str(tree), "--idle", "0", "--interval", "0.05"],
    ]
    if sys.modules.get("pyarrow") is None:
        pytest.importorskip("pyarrow")
    before = snapshot(tree)
    for argv in commands:
        rc = main(argv)
        err = capsys.readouterr().err
        assert rc in (0, 1), (argv[0], rc, err)  # 1: diagnose/verify/watch findings or ERROR verdicts
        after = snapshot(tree)
        changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        assert not changed, f"lrdoctor {argv[0]} changed {changed[:5]} under its input"
    assert (out / "verify").is_dir() and (out / "r.html").stat().st_size > 0


def test_the_snapshot_sees_what_a_write_would_do(tmp_path):
    (tmp_path / "a.csv").write_text("step,loss\n0,1\n")
    before = snapshot(tmp_path)
    (tmp_path / "a.csv-journal").write_text("x")  # created and removed again: the dir mtime moves
    (tmp_path / "a.csv-journal").unlink()
    os.utime(tmp_path, ns=(0, 12345))
    assert snapshot(tmp_path) != before
    before = snapshot(tmp_path)
    os.utime(tmp_path / "a.csv", ns=(0, 1))  # same bytes, touched
    assert snapshot(tmp_path) != before
