"""Following tracker stores written by the real packages: each poll delivers exactly the points
logged since the last one, and reads only those (rows fetched from an MLflow SQLite store), not
the whole run again."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lrdoctor.api import load_runs
from lrdoctor.live.follow import TreeFollower

DATA = Path(__file__).parent / "data"
T0 = 1_700_000_000_000  # ms


def _frame(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(tag=df["tag"].astype(str)).reset_index(drop=True)


def _expected(points: list[tuple[str, float, int, int]]) -> pd.DataFrame:
    """(key, value, timestamp ms, step) as the reader gives them: by time, ties by key."""
    rows = sorted(points, key=lambda p: (p[2], p[0]))
    return pd.DataFrame({"tag": [p[0] for p in rows], "step": np.array([p[3] for p in rows], dtype=np.int64),
                         "wall_time": np.array([p[2] / 1000 for p in rows]),
                         "value": np.array([p[1] for p in rows], dtype=np.float64)})


@pytest.fixture
def mlflow_store(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    # the committed store made by mlflow itself (tests/data/mlflow_sqlite): a new one runs ~60
    # schema migrations (4 s); its three finished runs are followed too
    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    shutil.copy(DATA / "mlflow_sqlite" / "mlflow.db", db)
    return db, mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}")


def _batch(step0: int, n: int) -> list[tuple[str, float, int, int]]:
    out = []
    for s in range(step0, step0 + n):
        loss = math.nan if s == 7 else (math.inf if s == 8 else 2.0 / (1 + s))
        out += [("train/loss", loss, T0 + 10 * s, s), ("lr", 1e-3 * (s % 5), T0 + 10 * s, s),
                ("val_loss", 1.0 + s, T0 + 10 * s + 5, s)]
    return out


def _log(client, run_id: str, points) -> None:
    from mlflow.entities import Metric

    client.log_batch(run_id, metrics=[Metric(k, v, t, s) for k, v, t, s in points])


def test_mlflow_sqlite_poll_reads_only_the_rows_logged_since(mlflow_store):
    db, client = mlflow_store
    finished = {r.name: len(r.scalars) for r in load_runs(db)}
    exp = client.create_experiment("live")
    run_id = client.create_run(exp, run_name="growing").info.run_id
    client.log_param(run_id, "lr", "0.001")
    tree = TreeFollower(db.parent)
    # the finished runs come whole on the first poll; the new run has no points yet
    assert {f.name: len(p) for f, p in tree.poll()} == finished
    (follower,) = [f for f in tree.runs.values() if f.name.endswith("/growing")]
    assert follower.hparams == {"lr": 0.001}
    delivered = []
    for b in range(4):
        pts = _batch(10 * b, 10)
        _log(client, run_id, pts)
        if b == 2:  # a param logged mid-run reaches the follower too
            client.log_param(run_id, "batch_size", "32")
        before = tree.rows_read
        grown = tree.poll()
        assert [f.name for f, _ in grown] == [follower.name]
        pd.testing.assert_frame_equal(_frame(grown[0][1]), _expected(pts), check_dtype=False)
        assert tree.rows_read - before == len(pts)  # the other runs' followers fetched nothing
        delivered.append(grown[0][1])
        assert tree.poll() == []  # nothing logged: nothing read
    assert follower.hparams == {"lr": 0.001, "batch_size": 32}
    full = next(r for r in load_runs(db) if r.name == follower.name)
    pd.testing.assert_frame_equal(_frame(pd.concat(delivered)), _frame(full.scalars), check_dtype=False)

    # a run started while watching is found and followed from its first point
    other = client.create_run(exp, run_name="second").info.run_id
    pts = _batch(0, 5)
    _log(client, other, pts)
    before = tree.rows_read
    (f2, new), = tree.poll()
    assert f2.name.endswith("/second") and tree.rows_read - before == len(pts)
    pd.testing.assert_frame_equal(_frame(new), _expected(pts), check_dtype=False)


def _rebuild_metrics_without(db: Path, run_id: str) -> None:
    """What ``mlflow gc`` then a schema migration do on SQLite: the trashed run's rows deleted,
    the table copied into a new one (alembic's batch mode), which numbers the rows afresh."""
    con = sqlite3.connect(db)
    sqls = [s for (s,) in con.execute("SELECT sql FROM sqlite_master WHERE tbl_name = 'metrics' AND sql IS NOT NULL")]
    con.execute("DELETE FROM metrics WHERE run_uuid = ?", (run_id,))
    con.execute("ALTER TABLE metrics RENAME TO _metrics_old")
    for s in sqls:
        if s.startswith("CREATE TABLE"):
            con.execute(s)
    con.execute("INSERT INTO metrics SELECT * FROM _metrics_old ORDER BY rowid")
    con.execute("DROP TABLE _metrics_old")
    for s in sqls:
        if s.startswith("CREATE INDEX"):
            con.execute(s)
    con.commit()
    con.close()


def test_mlflow_sqlite_rows_renumbered_are_read_again_and_only_new_points_delivered(mlflow_store):
    db, client = mlflow_store
    exp = client.create_experiment("live")
    trashed = client.create_run(exp, run_name="trashed").info.run_id
    run_id = client.create_run(exp, run_name="kept").info.run_id
    _log(client, trashed, _batch(0, 20))
    _log(client, run_id, _batch(0, 10))
    tree = TreeFollower(db.parent)
    tree.poll()
    (f,) = [f for f in tree.runs.values() if f.name.endswith("/kept")]
    client.delete_run(trashed)
    _rebuild_metrics_without(db, trashed)
    pts = _batch(10, 10)
    _log(client, run_id, pts)
    before = f.rows_read
    (got, new), = tree.poll()  # the other runs, read again too, deliver nothing
    assert got is f
    pd.testing.assert_frame_equal(_frame(new), _expected(pts), check_dtype=False)
    # the run's old rows moved: it was read again whole (30 old rows + 30 new), not past a stale rowid
    assert f.rows_read - before == 60
    pts = _batch(20, 3)
    _log(client, run_id, pts)
    before = tree.rows_read
    (_, new), = tree.poll()
    assert tree.rows_read - before == len(pts)  # and followed from there
    pd.testing.assert_frame_equal(_frame(new), _expected(pts), check_dtype=False)


WANDB_WRITER = r'''
import os, sys, wandb
run = wandb.init(project="live", mode="offline", dir=".", settings=wandb.Settings(console="off"))
print(os.path.abspath(run.dir), flush=True)
for line in sys.stdin:  # one batch of steps per line the test sends
    b = int(line)
    for s in range(300 * b, 300 * (b + 1)):
        run.log({"loss": float("nan") if s == 7 else 2.0 / (1 + s), "val": {"acc": s / 1200}, "lr": 1e-3})
    run.summary["best"] = b
    if b == 1:
        run.summary["gone"] = 1
    if b == 2:
        del run.summary["gone"]
    print("logged", flush=True)
run.finish()
'''


def _settled(path: Path, size: int, timeout: float = 30.0) -> int:
    """The file's size once wandb's writer (its Go core, writing behind the script) has grown it
    past ``size`` and then left it alone for a moment."""
    import time

    end = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < end:
        now = path.stat().st_size if path.exists() else 0
        if now != last:
            last, since = now, time.monotonic()
        elif now > size and time.monotonic() - since > 0.3:
            return now
        time.sleep(0.02)
    raise AssertionError(f"{path} did not grow past {size} bytes")


@contextlib.contextmanager
def _wandb_writer(tmp_path: Path, script: str):
    """``script`` logging to an offline W&B run, one batch per line sent to it; yields the process,
    its live ``.wandb`` file and where the test copies it (under ``tmp_path/watched``)."""
    pytest.importorskip("wandb")
    writer = tmp_path / "writer"
    writer.mkdir()
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(writer)}
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=writer, env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    watchdog = threading.Timer(120, proc.kill)  # a writer that hangs fails the test (its pipe closes)
    watchdog.start()
    try:
        run_dir = Path(proc.stdout.readline().strip()).parent  # .../wandb/offline-run-*/files -> the run
        (live,) = run_dir.glob("*.wandb")
        watched = tmp_path / "watched" / run_dir.name / live.name
        watched.parent.mkdir(parents=True)
        yield proc, live, watched
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()


def test_wandb_poll_reads_only_the_appended_records(tmp_path):
    """wandb (offline) logs in batches; after each, what it wrote so far is appended to the
    watched file in two parts (the first ends inside a record: a poll while a write is under
    way). Each poll must deliver exactly the points the file holds beyond those delivered
    before, read only the appended bytes (and the record they complete, from the start of its
    32 KiB block), and keep the run's summary equal to a whole read's."""
    from lrdoctor.readers import ReadOptions, find_run_sources, get_reader
    from lrdoctor.readers._wandb_log import BLOCK

    with _wandb_writer(tmp_path, WANDB_WRITER) as (proc, live, watched):
        watched.write_bytes(b"")
        tree = TreeFollower(tmp_path / "watched")
        delivered: list[pd.DataFrame] = []
        copied = 0

        def append_and_poll(data: bytes) -> None:
            nonlocal copied
            f = next(iter(tree.runs.values()), None)
            unread = copied - f.cursor.offset if f is not None else 0  # a record the file ended inside
            with open(watched, "ab") as fh:
                fh.write(data)
            copied += len(data)
            before = tree.bytes_read
            got = tree.poll()
            delivered.extend(p for _, p in got)
            (src,) = find_run_sources(watched)
            whole = get_reader("wandb").read(src, ReadOptions())
            so_far = pd.concat(delivered) if delivered else whole.scalars.iloc[:0]
            pd.testing.assert_frame_equal(_frame(so_far), _frame(whole.scalars), check_dtype=False)
            # not the file again: what was appended, the record it completes, and the rest of the
            # block that record starts in
            assert tree.bytes_read - before <= len(data) + unread + BLOCK
            if got:
                assert got[0][0].summary == whole.summary

        for b in range(4):
            proc.stdin.write(f"{b}\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "logged"
            size = _settled(live, copied)
            data = live.read_bytes()[copied:size]
            cut = len(data) // 2 + 3  # ~50-byte records: most likely inside one
            append_and_poll(data[:cut])
            append_and_poll(data[cut:])
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
    append_and_poll(live.read_bytes()[copied:])  # what finish() wrote: the summary, the exit
    (f,) = tree.runs.values()
    assert f.summary["best"] == 3 and "gone" not in f.summary
    assert copied > 2 * BLOCK and tree.bytes_read < 2 * copied  # the file was not read again per poll
    assert len(pd.concat(delivered)) == 1200 * 3  # the NaN loss at step 7 is a point too


def test_wandb_file_that_shrank_or_was_replaced_is_read_again_whole(tmp_path):
    from lrdoctor.readers import ReadOptions, find_run_sources, get_reader
    from lrdoctor.readers._wandb_log import BLOCK

    files = sorted((DATA / "wandb").rglob("*.wandb"), key=lambda p: -p.stat().st_size)
    big, other = files[0].read_bytes(), files[1].read_bytes()
    dest = tmp_path / "run-x.wandb"
    reader, opts = get_reader("wandb"), ReadOptions()

    def whole_read():
        return reader.read(find_run_sources(dest)[0], opts).scalars

    dest.write_bytes(big[:len(big) // 2])
    (src,) = find_run_sources(dest)
    first = reader.read_appended(src, opts)
    assert first.whole and first.bytes_read == len(big) // 2
    pd.testing.assert_frame_equal(_frame(first.run.scalars), _frame(whole_read()))
    again = reader.read_appended(src, opts, first.cursor)  # nothing appended: nothing new
    assert not again.whole and not len(again.run.scalars) and again.bytes_read <= BLOCK
    dest.write_bytes(big[:len(big) // 4])  # shorter than what was read
    got = reader.read_appended(src, opts, first.cursor)
    assert got.whole
    pd.testing.assert_frame_equal(_frame(got.run.scalars), _frame(whole_read()))
    dest.write_bytes(other + big[len(other):])  # another run's file, as long as the one read
    got = reader.read_appended(src, opts, first.cursor)
    assert got.whole and got.bytes_read == len(big)


WANDB_STEPMETRIC_WRITER = r'''
import os, sys, wandb
run = wandb.init(project="live", mode="offline", dir=".", settings=wandb.Settings(console="off"))
print(os.path.abspath(run.dir), flush=True)
for line in sys.stdin:  # one batch per line the test sends
    b = int(line)
    if b == 0:  # the script's own wandb.log calls before the trainer starts: no step key
        for i in range(300):
            run.log({"data/shard_size": 1000.0 + i})
    else:  # then as Lightning's WandbLogger: one call per metric, each with trainer/global_step
        for g in range(150 * (b - 1), 150 * b):
            run.log({"train/loss": 2.0 / (1 + g), "trainer/global_step": g})
            run.log({"lr-AdamW": 1e-3, "trainer/global_step": g})
    print("logged", flush=True)
run.finish()
'''


def test_wandb_step_key_under_watch_is_a_whole_reads(tmp_path):
    """The first poll sees only rows without trainer/global_step (so W&B's _step); once that key is
    in most rows, a whole read takes it as the step, and so must watch: the follower hands the run
    out again on that axis (restated), and what it handed out always equals a whole read of the
    file so far."""
    from lrdoctor.readers import ReadOptions, find_run_sources, get_reader

    with _wandb_writer(tmp_path, WANDB_STEPMETRIC_WRITER) as (proc, live, watched):
        tree = TreeFollower(tmp_path / "watched")
        held = None
        restated, copied = [], 0
        for b in range(4):
            proc.stdin.write(f"{b}\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "logged"
            size = _settled(live, copied)
            with open(watched, "ab") as fh:
                fh.write(live.read_bytes()[copied:size])
            copied = size
            for f, points in tree.poll():
                restated.append(f.restated)
                held = points if f.restated or held is None else pd.concat([held, points])
            (src,) = find_run_sources(watched)
            whole = get_reader("wandb").read(src, ReadOptions()).scalars
            so_far = whole.iloc[:0] if held is None else held
            pd.testing.assert_frame_equal(_frame(so_far), _frame(whole), check_dtype=False)
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
        with open(watched, "ab") as fh:  # what finish() wrote: the last rows, the summary
            fh.write(live.read_bytes()[copied:])
        for f, points in tree.poll():
            restated.append(f.restated)
            held = points if f.restated else pd.concat([held, points])
        whole = get_reader("wandb").read(src, ReadOptions()).scalars
        pd.testing.assert_frame_equal(_frame(held), _frame(whole), check_dtype=False)
    # _step at first (only the script's rows); the key once it was in most rows, then on that axis
    assert restated[0] is False and restated.count(True) == 1
    loss = held[held["tag"] == "train/loss"]
    assert loss["step"].tolist() == list(range(450))  # optimizer steps, not W&B's log-call count
