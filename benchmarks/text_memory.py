"""Peak memory of reading a big printed log: the text reader on ``step=N loss=X lr=0.001
tokens_per_s=...`` lines, beside the CSV reader on the same points and the bare import.

    python benchmarks/text_memory.py [--lines 1000000]

Each row runs in a fresh process (its maximum RSS is the process's own, ``ru_maxrss``); the log is
written to a temporary folder and removed. Figures (before/after) are in README's Measured section.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_CHILD = """
import resource, sys
from pathlib import Path
from lrdoctor.readers import discover
if sys.argv[1] != "-":
    [run] = discover(Path(sys.argv[1]))
    assert len(run.scalars) == int(sys.argv[2]), len(run.scalars)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def _write(folder: Path, lines: int) -> tuple[Path, Path]:
    rng = random.Random(0)
    text, csv = folder / "train.log", folder / "train.csv"
    with text.open("w") as ft, csv.open("w") as fc:
        fc.write("step,loss,lr,tokens_per_s\n")
        for s in range(lines):
            loss, tps = 2.5 * 0.99999 ** s + rng.random() * 0.01, rng.uniform(9000, 11000)
            ft.write(f"step={s} loss={loss:.5f} lr=0.001 tokens_per_s={tps:.1f}\n")
            fc.write(f"{s},{loss:.5f},0.001,{tps:.1f}\n")
    return text, csv


def _row(name: str, path: Path | None, points: int) -> str:
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _CHILD, str(path) if path else "-", str(points)],
                         capture_output=True, text=True, check=True).stdout
    secs = time.perf_counter() - t
    size = path.stat().st_size / 2**20 if path else 0.0
    rss = float(out.strip())
    ratio = f"{rss / size:.1f}x" if size else "-"
    return f"| {name} | {size:.0f} | {secs:.1f} | {rss:.0f} | {ratio} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        text, csv = _write(Path(tmp), args.lines)
        points = 3 * args.lines  # loss, lr, tokens_per_s; step is the counter
        print(f"{args.lines:,} lines, {points:,} points")
        print("| read | file MB | seconds | max RSS MB | RSS / file |")
        print("|---|---|---|---|---|")
        print(_row("import lrdoctor only", None, 0))
        print(_row("text reader (train.log)", text, points))
        print(_row("CSV reader, same points (train.csv)", csv, points))


if __name__ == "__main__":
    main()
