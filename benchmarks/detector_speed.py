"""Detector speed: one 1,000,000-step run with 5 tags, and a sweep of many runs across cores.

    python benchmarks/detector_speed.py [--steps 1000000] [--sweep-runs 1000] [--sweep-steps 10000]

Prints two tables. Target (issue 4): all detectors on the 1M-step run in < 2 s; the sweep's
runs/s grows with worker processes. Runs are built in memory (numpy curves with noise, spikes and
a late NaN), so this measures the engine, not the readers (benchmarks/ of the readers do that).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd

from lrdoctor.engine.diagnose import diagnose_runs
from lrdoctor.engine.runner import run_rules
from lrdoctor.engine.spec import load_rules
from lrdoctor.model import Run, make_scalars
from lrdoctor.roles import RoleView


def make_run(n: int, seed: int, name: str = "run") -> Run:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    loss = 2.0 * np.exp(-t / (n / 5)) + 0.3 + 0.02 * rng.standard_normal(n)
    loss[rng.integers(n // 10, n, 5)] += 3.0
    grad = np.exp(0.2 * rng.standard_normal(n))
    grad[rng.integers(n // 10, n, 3)] *= 50
    lr = 1e-3 * 0.5 * (1 + np.cos(np.pi * t / n))
    ev = t[:: max(1, n // 100)]
    val = 2.0 * np.exp(-ev / (n / 5)) + 0.35 + np.maximum(0, ev - 0.6 * n) / n
    acc = 1 - val / 3
    frames = [
        make_scalars("train/loss", t, None, loss),
        make_scalars("train/grad_norm", t, None, grad),
        make_scalars("train/learning_rate", t, None, lr),
        make_scalars("eval/loss", ev, None, val),
        make_scalars("eval/accuracy", ev, None, acc),
    ]
    return Run(name, "memory", "synthetic", pd.concat(frames, ignore_index=True))


def big_run(steps: int) -> None:
    rules = load_rules()
    run = make_run(steps, 0)
    view = RoleView.of(run)
    run_rules(view, rules)  # warm-up: imports, caches
    print(f"one run: {steps:,} steps x 5 tags ({len(run.scalars):,} points)")
    print(f"{'rule':<22} {'seconds':>8}  finding")
    from lrdoctor.engine.runner import _SeriesCache, run_rule

    t0 = time.perf_counter()
    cache = _SeriesCache(view)
    for role in ("train_loss", "val_loss", "grad_norm", "lr", "val_metric"):
        cache.get(role)
    print(f"{'(series extraction)':<22} {time.perf_counter() - t0:8.3f}")
    total = 0.0
    for rule in rules:
        t0 = time.perf_counter()
        out = run_rule(rule, view, cache)
        dt = time.perf_counter() - t0
        total += dt
        print(f"{rule.name:<22} {dt:8.3f}  {type(out).__name__ if out is not None else '-'}")
    t0 = time.perf_counter()
    run_rules(RoleView.of(run), rules)
    whole = time.perf_counter() - t0
    print(f"{'all detectors':<22} {total:8.3f}  (target < 2 s; the series extracted once, above)")
    print(f"{'whole run_rules':<22} {whole:8.3f}  (incl. role resolution and series extraction)")


def sweep(n_runs: int, steps: int) -> None:
    runs = [make_run(steps, i, f"r{i}") for i in range(n_runs)]
    cores = os.cpu_count() or 1
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(f"\nsweep: {n_runs} runs x {steps:,} steps x 5 tags, machine has {cores} cores{load}")
    print(f"{'jobs':>4} {'seconds':>8} {'runs/s':>8} {'speed-up':>8}")
    base = None
    for jobs in sorted({1, 2, 4, cores} & set(range(1, cores + 1))):
        t0 = time.perf_counter()
        diagnose_runs(runs, jobs=jobs, proposals=False)
        dt = time.perf_counter() - t0
        base = base or dt
        print(f"{jobs:>4} {dt:8.2f} {n_runs / dt:8.1f} {base / dt:8.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--sweep-runs", type=int, default=1000)
    ap.add_argument("--sweep-steps", type=int, default=10_000)
    args = ap.parse_args()
    big_run(args.steps)
    if args.sweep_runs:
        sweep(args.sweep_runs, args.sweep_steps)


if __name__ == "__main__":
    main()
