"""A rerun command that misbehaves, for verify's process-handling tests (not collected by pytest).

``--mode hang``: start a grandchild that sleeps, append both pids to ``PIDFILE`` (one per line),
then hang; verify must kill both. ``--mode sigkill``: die from SIGKILL, as under the OOM killer.
``--mode ok``: write a short healthy log into ``--logdir`` and exit 0 (a rerun that finishes).
``--mode gated``: as ``hang`` while the file ``--gate`` exists and the seed is not 0, else as ``ok``
(the same command line first hangs, then finishes: a resumed verify sees the same reruns).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def write_log(logdir: str, seed: int) -> None:
    rows = [f"{s},{1.0 / (1 + 0.01 * s) + 0.001 * seed}" for s in range(1, 101)]
    Path(logdir, "metrics.csv").write_text("step,train_loss\n" + "\n".join(rows) + "\n")


def hang(pidfile: str) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open(pidfile, "a") as fh:
        fh.write(f"{os.getpid()}\n{child.pid}\n")
    time.sleep(600)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", required=True)
    ap.add_argument("--pidfile", default=os.devnull)
    ap.add_argument("--logdir", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gate", default="")
    args = ap.parse_args()
    if args.mode == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if args.mode == "hang" or (args.mode == "gated" and args.seed != 0 and Path(args.gate).exists()):
        hang(args.pidfile)
    write_log(args.logdir, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
