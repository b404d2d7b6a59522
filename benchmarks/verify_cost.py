"""Verification cost: forked reruns from a checkpoint before the onset vs today's reruns from step 0.

Two built-in workload runs of 20,000 steps that save a checkpoint every 100 steps (keep 3, plus
those before a loss anomaly):

* ``divergence-late``: SGD (momentum 0.9) at LR 0.01 whose schedule steps the LR x30 at step 15,000
  (MultiStepLR, gamma 30 - a schedule that restarts far too high): NaN a few steps after 75% of
  the run;
* ``spikes-late``: the loss-spike recipe's healthy Adam run stretched to 20,000 steps, with
  poisoned batches at steps 15,000 and 15,060.

Each run is diagnosed; the top proposal of its finding and a no-op control (``{}``) are verified
with 5 paired seeds twice in the same process: forked (the default) and from step 0 (``fork=False``,
the protocol before forking). The table gives, per run and protocol: the verdicts, the steps rerun
for the top proposal (all arms, all seeds, every ladder rung) and their share of the original
run's steps, the distinct reruns and steps of the whole verification, and the wall time.

    python benchmarks/verify_cost.py                  # ~10 min on 2 busy CPU cores
    python benchmarks/verify_cost.py --jobs 2 --out /tmp/vc --keep
    python benchmarks/verify_cost.py --device cuda    # reruns on a GPU
    python benchmarks/verify_cost.py --only forked    # skip the from-scratch comparison
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

STEPS = 20_000


def cases() -> dict[str, dict]:
    from lrdoctor.workloads.recipes import recipe_config

    spike = recipe_config("loss-spike", "mlp_regressor", seed=0).to_dict()
    spike.update(max_steps=STEPS, poison_steps=[15_000, 15_060], eval_every=100, checkpoint_every=100,
                 checkpoint_keep=3)
    return {
        "divergence-late": dict(workload="mlp_regressor", seed=0, max_steps=STEPS, lr=0.01,
                                optimizer={"type": "SGD", "momentum": 0.9}, eval_every=100,
                                scheduler={"type": "MultiStepLR", "milestones": [15_000], "gamma": 30.0},
                                checkpoint_every=100, checkpoint_keep=3, recipe="divergence"),
        "spikes-late": spike,
    }


def make_run(root: Path, name: str, config: dict, fmt: str):
    from lrdoctor.workloads.config import WorkloadConfig
    from lrdoctor.workloads.training import train

    d = root / "runs" / name
    t0 = time.perf_counter()
    if not (d / "lrdoctor-run.json").exists():
        train(WorkloadConfig.from_dict(config), d, fmt, "cpu")
    return d, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--format", default="jsonl", help="log format the runs are written in")
    ap.add_argument("--only", choices=["forked", "scratch"], default=None)
    ap.add_argument("--out", default=None, help="work directory (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from dataclasses import replace

    from lrdoctor.api import load_runs
    from lrdoctor.engine.diagnose import diagnose_runs
    from lrdoctor.engine.spec import load_rules
    from lrdoctor.model import Proposal
    from lrdoctor.verify import VerifyConfig, verify_items
    from lrdoctor.verify.executors import LocalPoolExecutor
    from lrdoctor.verify.protocol import resolve_device

    root = Path(args.out or tempfile.mkdtemp(prefix="lrdoctor-vc-"))
    rules = load_rules()
    own = [replace(r, superseded_by=()) for r in rules]

    def rediagnose(rs):
        return diagnose_runs(rs, rules=own, jobs=1, proposals=False)

    noop = Proposal("control:noop", "noop", "change nothing", "control", {}, "")
    protocols = [("forked", True), ("scratch", False)]
    if args.only:
        protocols = [p for p in protocols if p[0] == args.only]
    rows, ok = [], True
    for name, config in cases().items():
        d, t_gen = make_run(root, name, config, args.format)
        (run,) = load_runs(d)
        (diag,) = diagnose_runs([run], rules=rules, jobs=1)
        want = config.get("recipe")
        f = next((f for f in diag.findings if f.rule == want and f.proposals), None)
        if f is None:
            print(f"{name}: no {want} finding with a proposal ({[x.rule for x in diag.findings]}); skipped")
            ok = False
            continue
        top = f.proposals[0]
        print(f"{name}: generated in {t_gen:.0f}s; {f.rule} from step {f.start_step}, top proposal {top.id} "
              f"{top.config}", flush=True)
        for proto, fork in protocols:
            cfg = VerifyConfig(fork=fork, device=resolve_device(args.device))
            t0 = time.perf_counter()
            with LocalPoolExecutor(args.jobs) as ex:
                (res,) = verify_items([(run, f, [top, noop])], rediagnose, cfg, out=root / f"verify-{proto}",
                                      executor=ex)
            wall = time.perf_counter() - t0
            v_top = next(v for v in res.verdicts if v.proposal_id == top.id)
            v_noop = next(v for v in res.verdicts if v.proposal_id == noop.id)
            c = v_top.details["cost"]
            ladder = v_top.details.get("ladder") or []
            rows.append((name, proto, v_top.verdict.value, len(ladder) or 1, v_noop.verdict.value, c["total_steps"],
                         c["ratio"], res.cost.reruns, res.cost.steps, res.cost.ratio, wall,
                         v_top.details.get("fork", {}).get("note", "")))
            print(f"  {proto}: {v_top.verdict.value} in {wall:.0f}s ({v_top.reason[:160]})", flush=True)
            if fork:
                ok &= v_top.verdict.value == "CONFIRMED" and c["ratio"] <= 0.20
            ok &= v_noop.verdict.value != "CONFIRMED"

    print()
    print(f"{'run':<16} {'protocol':<8} {'top':<12} {'rungs':>5} {'no-op':<12} {'top steps':>10} {'% orig':>7} "
          f"{'reruns':>6} {'all steps':>10} {'% orig':>7} {'wall s':>7}")
    for r in rows:
        print(f"{r[0]:<16} {r[1]:<8} {r[2]:<12} {r[3]:>5} {r[4]:<12} {r[5]:>10,} {100 * r[6]:>6.1f}% {r[7]:>6} "
              f"{r[8]:>10,} {100 * r[9]:>6.1f}% {r[10]:>7.0f}")
    for r in rows:
        print(f"  {r[0]} / {r[1]}: {r[11]}")
    print(f"\ntargets: top proposal CONFIRMED with forking at <= 20% of the original run's steps; no-op never "
          f"CONFIRMED -> {'met' if ok else 'NOT met'}; {args.jobs} workers on {os.cpu_count()} CPUs, device "
          f"{args.device}")
    if not args.keep and args.out is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
