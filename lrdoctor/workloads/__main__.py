"""``python -m lrdoctor.workloads``: run a recipe, or list recipes and formats.

    python -m lrdoctor.workloads list
    python -m lrdoctor.workloads run divergence --workload mlp_regressor --format tensorboard \\
        --out runs/div --seed 0 [--steps 300] [--patch '{"lr": 0.1}']
"""

from __future__ import annotations

import argparse
import json
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    from .recipes import RECIPES, recipe_config
    from .writers import FORMATS

    p = argparse.ArgumentParser(prog="python -m lrdoctor.workloads")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="recipes, their workloads, and the log formats")
    r = sub.add_parser("run", help="train one recipe and write its logs")
    r.add_argument("recipe", choices=list(RECIPES))
    r.add_argument("--workload", default=None)
    r.add_argument("--format", default="tensorboard", choices=FORMATS)
    r.add_argument("--out", required=True)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--steps", type=int, default=None, help="override max_steps")
    r.add_argument("--patch", default=None, help="a Proposal.config patch as JSON")
    r.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    if args.cmd == "list":
        for rec in RECIPES.values():
            sys.stdout.write(f"{rec.name:22s} {', '.join(rec.workloads):60s} {rec.doc}\n")
        sys.stdout.write(f"formats: {', '.join(FORMATS)}\n")
        return 0
    from .._optional import MissingDependencyError, require

    try:  # one line, not a traceback from deep inside the training
        require("torch", "training a built-in workload")
        if args.format == "tensorboardx":
            require("tensorboardX", "the tensorboardx log format")
    except MissingDependencyError as exc:
        sys.stderr.write(f"lrdoctor.workloads: error: {exc}\n")
        return 2
    from .training import train

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    changes = {"max_steps": args.steps} if args.steps else {}
    cfg = recipe_config(args.recipe, args.workload, args.seed, **changes)
    if args.patch:
        cfg = cfg.apply_patch(json.loads(args.patch))
    res = train(cfg, args.out, args.format, device=args.device)
    sys.stdout.write(json.dumps({"logdir": res.logdir, "format": res.format, "steps": res.steps_done,
                                 "seconds": round(res.seconds, 2), "final_val_loss": res.final_val_loss,
                                 "labels": list(res.labels)}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
