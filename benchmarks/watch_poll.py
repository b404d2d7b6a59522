"""CPU time of one ``lrdoctor watch`` poll on a 1M-point tracker store after 1,000 points were
appended: the poll as it is (reading only what was added) next to re-reading the run whole
and dropping the points already delivered (what a poll did before), in one run.

    python benchmarks/watch_poll.py [--workdir /tmp/lrdoctor-bench] [--repeats 3]

The 1M-point files are the ones of ``ingest_speed.py`` (``tracker_ingest.make_files``: written
once by mlflow / wandb into the work directory), copied into a scratch directory that the
benchmark appends to:

* ``mlflow.db``: 1,000 more rows are logged with ``MlflowClient.log_batch`` (100 steps of the
  10 metrics) before each poll;
* ``.wandb``: the file wandb wrote is copied up to the start of a history record near its end,
  and before each poll the next 100 history records (1,000 points, with the summary records
  wandb wrote between them) are appended: the bytes wandb wrote, as it wrote them.

Times are ``time.process_time`` (CPU of this process: SQLite runs in it), the median of
``--repeats`` polls; "read" is what the poll fetched (rows of the store, bytes of the file).
Each poll must deliver exactly the 1,000 new points.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import tracker_ingest  # noqa: E402

from lrdoctor.live.follow import TreeFollower  # noqa: E402

TAGS, STEPS = 10, 100_000


def _poll(tree: TreeFollower, whole: bool) -> tuple[float, int, int]:
    """(CPU seconds, points delivered, rows or bytes read) of one poll; ``whole``: read the runs
    again from their start, as polls did before."""
    if whole:
        for f in tree.runs.values():
            f.cursor = None
    read = tree.rows_read + tree.bytes_read
    t = time.process_time()
    got = tree.poll()
    cpu = time.process_time() - t
    return cpu, sum(len(p) for _, p in got), tree.rows_read + tree.bytes_read - read


def _first_poll(tree: TreeFollower) -> tuple[int, float]:
    t = time.process_time()
    n = sum(len(p) for _, p in tree.poll())
    return n, time.process_time() - t


def mlflow_row(src: Path, scratch: Path, repeats: int) -> list[str]:
    logging.disable(logging.WARNING)
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    db = scratch / "mlflow" / "mlflow.db"
    db.parent.mkdir(parents=True)
    shutil.copy(src, db)
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    tree = TreeFollower(db.parent)
    first, first_cpu = _first_poll(tree)
    step = STEPS
    out = {}
    for whole in (False, True):
        polls = []
        for _ in range(repeats):
            batch = [Metric(f"metric_{k}/loss", 1.0 + k, 1_800_000_000_000 + s, s)
                     for s in range(step, step + 1000 // TAGS) for k in range(TAGS)]
            step += 1000 // TAGS
            client.log_batch(run.info.run_id, metrics=batch)
            polls.append(_poll(tree, whole))
            if polls[-1][1] != len(batch):
                raise SystemExit(f"!! a poll delivered {polls[-1][1]} points, expected {len(batch)}")
        out[whole] = polls
    return _rows("mlflow.db", first, first_cpu, out, "rows")


def wandb_row(src_dir: Path, scratch: Path, repeats: int) -> list[str]:
    from lrdoctor.readers._pbwalk import walk
    from lrdoctor.readers._tfrecord import Problems
    from lrdoctor.readers._wandb_log import scan

    (src,) = src_dir.glob("wandb/offline-run-*/*.wandb")
    sc = scan(src, Problems(str(src), False))
    top = walk(sc.buffer, sc.start, sc.start + sc.length)
    history = np.unique(top.msg[top.field == 2])  # records holding a history (Record field 2)
    cuts = sc.offset[history[len(history) - 1 - 100 * (2 * repeats - np.arange(2 * repeats + 1))]].tolist()
    dest = scratch / "wandb" / src.parent.name / src.name
    dest.parent.mkdir(parents=True)
    data = src.read_bytes()
    dest.write_bytes(data[:cuts[0]])
    tree = TreeFollower(dest.parent.parent)
    first, first_cpu = _first_poll(tree)
    out: dict[bool, list] = {False: [], True: []}
    for k in range(2 * repeats):
        with open(dest, "ab") as fh:
            fh.write(data[cuts[k]:cuts[k + 1]])
        whole = k >= repeats
        out[whole].append(_poll(tree, whole))
        if out[whole][-1][1] != 1000:
            raise SystemExit(f"!! a poll delivered {out[whole][-1][1]} points, expected 1000")
    return _rows(".wandb", first, first_cpu, out, "bytes")


def _rows(name: str, first: int, first_cpu: float, out: dict, unit: str) -> list[str]:
    lines = []
    for whole, label in ((False, "appended only"), (True, "re-read whole")):
        polls = out[whole]
        cpu = statistics.median(p[0] for p in polls)
        read = statistics.median(p[2] for p in polls)
        lines.append(f"{name:<10} {first:>9,} {label:<14} {cpu * 1e3:>9.1f} {read:>12,.0f} {unit}")
    ratio = statistics.median(p[0] for p in out[True]) / statistics.median(p[0] for p in out[False])
    lines.append(f"{'':<10} first poll (whole run) {first_cpu:.2f} s CPU; appended-only poll {ratio:,.0f}x cheaper")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "lrdoctor-bench")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    files = tracker_ingest.make_files(args.workdir, TAGS, STEPS)
    print(f"{'store':<10} {'points':>9} {'poll':<14} {'CPU ms':>9} {'read':>12}")
    with tempfile.TemporaryDirectory(prefix="watch-poll-", dir=args.workdir) as tmp:
        if "mlflow.db" in files:
            print("\n".join(mlflow_row(files["mlflow.db"], Path(tmp), args.repeats)), flush=True)
        else:
            print("mlflow.db  skipped: mlflow not installed (lrdoctor[trackers])")
        if "wandb" in files:
            print("\n".join(wandb_row(files["wandb"], Path(tmp), args.repeats)), flush=True)
        else:
            print(".wandb     skipped: wandb not installed (lrdoctor[trackers])")
    return 0


if __name__ == "__main__":
    sys.exit(main())
