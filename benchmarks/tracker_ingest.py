"""Tracker rows of ``ingest_speed.py``: a 1M-point ``.wandb`` file and a 1M-row ``mlflow.db``,
each written once by the real package into the work directory, then read by lrdoctor and by the
package's own means in the same run.

Peers: wandb 0.31 has no reader of ``.wandb`` files left in Python (its DataStore moved into the
Go core, and its public API needs a server), so the peer is wandb's own protobuf classes
(``wandb_internal_pb2.Record``) on each record plus ``json.loads`` of each value: what reading
with the wandb package amounts to. For MLflow the peer is ``MlflowClient.get_metric_history``
for every metric of every run (SQLAlchemy over the same database).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

MEASURE = {
    # what diagnose, report and verify read: every point (the summary is left undecoded)
    "lrdoctor_wandb": """
from lrdoctor.readers import find_run_sources, read_source, ReadOptions
def run(p):
    return sum(len(read_source(s, ReadOptions()).scalars) for s in find_run_sources(p))
""",
    # and what inspect reads: the points and the run's summary
    "lrdoctor_wandb_summary": """
from lrdoctor.readers import find_run_sources, read_source, ReadOptions
def run(p):
    runs = [read_source(s, ReadOptions()) for s in find_run_sources(p)]
    assert all(dict(r.summary) for r in runs)
    return sum(len(r.scalars) for r in runs)
""",
    "wandb_pb2": """
import glob, json
from lrdoctor.readers._tfrecord import Problems
from lrdoctor.readers._wandb_log import scan
from wandb.proto import wandb_internal_pb2 as pb
from pathlib import Path
def run(p):
    f = Path(glob.glob(p + "/wandb/*/*.wandb")[0])
    n = 0
    sc = scan(f, Problems(str(f), False))  # lrdoctor's framing; wandb's classes for the records
    buf = sc.buffer.tobytes()
    for s, length in zip(sc.start.tolist(), sc.length.tolist()):
        rec = pb.Record.FromString(buf[s:s + length])
        if rec.HasField("history"):
            for item in rec.history.item:
                key = "/".join(item.nested_key) or item.key
                value = json.loads(item.value_json)
                if not key.startswith("_") and isinstance(value, (int, float)):
                    n += 1
    return n
""",
    "lrdoctor_mlflow_sqlite": """
from lrdoctor.readers import find_run_sources, read_source, ReadOptions
def run(p):
    return sum(len(read_source(s, ReadOptions()).scalars) for s in find_run_sources(p))
""",
    "mlflow_client": """
import logging
logging.disable(logging.WARNING)
from mlflow import MlflowClient
def run(p):
    client = MlflowClient(tracking_uri="sqlite:///" + p)
    n = 0
    for exp in client.search_experiments():
        for r in client.search_runs([exp.experiment_id], max_results=50000):
            for key in r.data.metrics:
                n += len(client.get_metric_history(r.info.run_id, key))
    return n
""",
}

WANDB_WRITE = r'''
import math, sys, wandb
steps, tags = int(sys.argv[1]), int(sys.argv[2])
run = wandb.init(project="bench", mode="offline", dir=".", settings=wandb.Settings(console="off"))
for i in range(steps):
    run.log({f"metric_{k}/loss": math.sin(i * 1e-3 + k) + 1.5 for k in range(tags)})
run.finish()
'''

MLFLOW_WRITE = r'''
import math, sys, logging
logging.disable(logging.WARNING)
from mlflow import MlflowClient
from mlflow.entities import Metric
steps, tags, db = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
client = MlflowClient(tracking_uri="sqlite:///" + db)
exp = client.create_experiment("bench")
run_id = client.create_run(exp, run_name="bench").info.run_id
batch = []
for i in range(steps):
    for k in range(tags):
        batch.append(Metric(f"metric_{k}/loss", math.sin(i * 1e-3 + k) + 1.5, 1_700_000_000_000 + i, i))
    if len(batch) >= 1000:
        client.log_batch(run_id, metrics=batch)
        batch = []
if batch:
    client.log_batch(run_id, metrics=batch)
client.set_terminated(run_id)
'''


def make_files(workdir: Path, tags: int, steps: int) -> dict[str, Path]:
    """The tracker files (written by wandb / mlflow when installed; skipped otherwise)."""
    out: dict[str, Path] = {}
    wdir = workdir / f"wandb_{tags}x{steps}"
    if not list(wdir.glob("wandb/offline-run-*/*.wandb")) and _has("wandb"):
        print(f"writing {wdir} with wandb (offline) ...", file=sys.stderr, flush=True)
        wdir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
        subprocess.run([sys.executable, "-c", WANDB_WRITE, str(steps), str(tags)], cwd=wdir, env=env, check=True)
        latest = wdir / "wandb" / "latest-run"
        if latest.is_symlink():
            latest.unlink()
    if list(wdir.glob("wandb/offline-run-*/*.wandb")):
        out["wandb"] = wdir
    db = workdir / f"mlflow_{tags}x{steps}" / "mlflow.db"
    if not db.exists() and _has("mlflow"):
        print(f"writing {db} with mlflow ...", file=sys.stderr, flush=True)
        db.parent.mkdir(parents=True, exist_ok=True)
        tmp = db.with_suffix(".partial")
        tmp.unlink(missing_ok=True)
        subprocess.run([sys.executable, "-c", MLFLOW_WRITE, str(steps), str(tags), str(tmp)], check=True)
        tmp.rename(db)
    if db.exists():
        out["mlflow.db"] = db
    return out


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


#: per file: lrdoctor's timed reading (the one the target is judged on), its other readings shown
#: beside it, and the package's own reading
PEERS = {"wandb": ("lrdoctor_wandb", ("lrdoctor_wandb_summary",), "wandb_pb2"),
         "mlflow.db": ("lrdoctor_mlflow_sqlite", (), "mlflow_client")}
#: what each row times, as printed under the table
ROW_NOTES = {"lrdoctor_wandb": "lrdoctor_wandb: every point, as diagnose/report/verify read a run (the summary "
             "records are decoded when Run.summary is first used)",
             "lrdoctor_wandb_summary": "lrdoctor_wandb_summary: every point and the whole Run.summary, as inspect reads a run",
             "wandb_pb2": "wandb_pb2: wandb's own Record class per record + json.loads per value (no summary)"}
