"""What the rules say about runs whose LR is far too high but that never produce a NaN.

The corpus's divergence recipe warms SGD-momentum up into a blow-up; a user who simply sets the LR
10x or 30x too high often gets something quieter: a loss thrown back to chance level or onto the
mean predictor in the first epoch, or one that bounces at a high level. Those runs must not be
told "plateau: raise the LR" (the opposite of the fix). For each built-in workload, the healthy
recipe (its LR tuned by the sweep in ``lrdoctor.workloads.recipes``) is trained at ``--mult`` x
that LR for ``--seeds``, each written as a per-step log (jsonl) and as Keras CSV epoch means, and
diagnosed with the built-in rules. The table counts, per format, runs whose findings include a
rule that says "LR too high" (its top proposal lowers the LR, adds warmup or clips), runs told to
raise the LR (a finding whose rule may raise it: plateau), and runs with no canonical finding.

    python benchmarks/too_high_lr.py [--mult 10 30] [--seeds 0 1] [--out DIR] [-v]

About 2-3 minutes on a 2-core CPU (32 trainings of 400-600 steps).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from collections import Counter
from pathlib import Path

WORKLOADS = ("mlp_regressor", "cnn_classifier", "gru_lm", "transformer_lm")
FORMATS = ("jsonl", "keras_csv")
CANONICAL = ("divergence", "loss-spike", "plateau", "overfitting", "exploding-gradients", "vanishing-gradients")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mult", type=float, nargs="+", default=[10.0, 30.0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--out", type=Path, default=None, help="keep the logs here (default: a temp dir)")
    p.add_argument("-v", "--verbose", action="store_true", help="one line per run")
    args = p.parse_args()

    from lrdoctor.engine.diagnose import diagnose_runs
    from lrdoctor.engine.spec import load_rules
    from lrdoctor.readers import discover
    from lrdoctor.workloads.recipes import recipe_config
    from lrdoctor.workloads.training import train

    logging.disable(logging.INFO)
    rules = load_rules()
    raises = {r.name for r in rules if r.raises_lr}
    tmp = None if args.out else tempfile.TemporaryDirectory(prefix="too_high_lr_")
    root = args.out or Path(tmp.name)
    counts: dict[str, Counter] = {f: Counter() for f in FORMATS}
    for w in WORKLOADS:
        for m in args.mult:
            for seed in args.seeds:
                base = recipe_config("healthy", w, seed)
                cfg = base.apply_patch({"lr": base.lr * m})
                for fmt in FORMATS:
                    out = root / f"{w}-x{m:g}-s{seed}-{fmt}"
                    train(cfg, str(out), fmt)
                    found = [f for d in diagnose_runs(list(discover(out)), rules=rules, proposals=False)
                             for f in d.findings if f.rule in CANONICAL]
                    names = sorted({f.rule for f in found})
                    told_raise = any(f.rule in raises for f in found)
                    told_lower = any(f.rule not in raises and f.rule != "overfitting" for f in found)
                    c = counts[fmt]
                    c["runs"] += 1
                    c["lr too high"] += told_lower
                    c["raise the lr"] += told_raise
                    c["nothing"] += not found
                    if args.verbose:
                        sys.stdout.write(f"{out.name:40s} {json.dumps(names)}\n")
    sys.stdout.write("\n| format | runs | told LR too high | told to raise the LR | no finding |\n|---|---:|---:|---:|---:|\n")
    for fmt, c in counts.items():
        sys.stdout.write(f"| {fmt} | {c['runs']} | {c['lr too high']} | {c['raise the lr']} | {c['nothing']} |\n")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
