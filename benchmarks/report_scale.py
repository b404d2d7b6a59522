"""How long a sweep report takes to render, and how big it gets, as the number of runs grows.

Runs are real TensorBoard event files: ``--unique`` trainings (different LRs, the highest ones
diverging) written with torch's SummaryWriter, then copied into ``lr_<lr>_seed<k>`` run
directories up to the sweep size; they are read back with lrdoctor's readers and diagnosed by the
rule engine. Target (issue #7): 1,000 runs render in under 60 s into a page under 50 MB.

    python benchmarks/report_scale.py                 # 10, 100, 1000 runs
    python benchmarks/report_scale.py --sizes 1000 --steps 5000
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def write_unique(root: Path, n_unique: int, steps: int) -> list[tuple[float, Path]]:
    from torch.utils.tensorboard import SummaryWriter

    lrs = np.geomspace(1e-4, 1e-1, n_unique)
    out = []
    rng = np.random.default_rng(0)
    for lr in lrs:
        d = root / f"u_{lr:.3g}"
        s = np.arange(steps)
        loss = 2.3 * np.exp(-s * lr * 2) + 0.2 + 0.03 * rng.standard_normal(steps)
        grad = 1 + 0.2 * np.abs(rng.standard_normal(steps))
        if lr > 3e-2:  # too high: blows up two thirds of the way in
            at = int(steps * 0.66)
            ramp = np.exp(np.clip(s - at, 0, None) / (steps / 60))
            loss, grad = loss * ramp, grad * ramp
            loss[at + steps // 8:] = np.nan
        spikes = rng.choice(steps, 2, replace=False)
        loss[spikes] *= 4
        with SummaryWriter(str(d), flush_secs=3600, max_queue=100_000) as w:
            for i in range(steps):
                w.add_scalar("train/loss", loss[i], i)
                w.add_scalar("train/grad_norm", grad[i], i)
                w.add_scalar("train/lr", lr * min(1.0, (i + 1) / 100), i)
                if i % 50 == 0:
                    w.add_scalar("val/loss", loss[i] + 0.05, i)
        out.append((float(lr), d))
    return out


def make_sweep(root: Path, unique: list[tuple[float, Path]], n: int) -> Path:
    sweep = root / f"sweep_{n}"
    for k in range(n):
        lr, src = unique[k % len(unique)]
        shutil.copytree(src, sweep / f"lr_{lr:.3g}_seed{k // len(unique)}")
    return sweep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    ap.add_argument("--unique", type=int, default=20)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--max-figures", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--keep", type=Path, default=None, help="also write the largest report here")
    args = ap.parse_args()

    from lrdoctor.engine.diagnose import diagnose_runs
    from lrdoctor.readers import discover
    from lrdoctor.report import render_report

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}; {args.steps} steps x 4 tags a run")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        unique = write_unique(root, args.unique, args.steps)
        print(f"wrote {len(unique)} unique runs with SummaryWriter in {time.perf_counter() - t:.1f} s")
        html = ""
        for n in args.sizes:
            sweep = make_sweep(root, unique, n)
            t0 = time.perf_counter()
            runs = discover(str(sweep))
            t1 = time.perf_counter()
            diagnoses = diagnose_runs(runs, jobs=args.jobs)
            t2 = time.perf_counter()
            html = render_report(diagnoses, max_figures=args.max_figures, workers=min(4, args.jobs or os.cpu_count() or 1))
            t3 = time.perf_counter()
            figs = html.count('class="lrd-fig"')
            rows.append((n, t1 - t0, t2 - t1, t3 - t2, len(html.encode()) / 1e6, figs))
            shutil.rmtree(sweep)
        if args.keep:
            args.keep.write_text(html, encoding="utf-8")

    head = f"{'runs':>6} {'read s':>8} {'diagnose s':>11} {'render s':>9} {'page MB':>8} {'figures':>8}  target"
    print(head)
    print("-" * len(head))
    for n, tr, td, tp, mb, figs in rows:
        ok = "ok" if (n < 1000 or (tp < 60 and mb < 50)) else "MISSED (<60 s, <50 MB)"
        print(f"{n:>6} {tr:>8.2f} {td:>11.2f} {tp:>9.2f} {mb:>8.2f} {figs:>8}  {ok if n >= 1000 else ''}")


if __name__ == "__main__":
    main()
