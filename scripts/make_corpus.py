"""Generate the labelled corpus used to measure rule detection quality.

    python scripts/make_corpus.py [--out .cache/corpus] [--workers N] [--limit K]

Runs every recipe on every workload it is valid for, over several seeds, optimizers, schedules
and all log formats, in parallel (one process per core, one torch thread each). Runs already
present (their ``lrdoctor-run.json`` exists) are kept, so reruns are incremental.

Split (so thresholds are never tuned on what they are scored on):
- ``dev``: seeds 0 and 1, every workload except ``cnn_classifier``;
- ``heldout``: seeds 10 and 11 (never in dev) and every workload, ``cnn_classifier`` only here.

Output: ``<out>/<split>/<recipe>/<run>/...`` and ``<out>/labels.json``::

    {"version": 1, "runs": [{"path": "dev/divergence/mlp_regressor-base-s0-tensorboard",
      "recipe": ..., "workload": ..., "variant": ..., "seed": ..., "format": ..., "split": ...,
      "step_axis": "step" | "epoch", "labels": [{"rule", "onset_step", "steps", "primary"}],
      "ok": bool}]}

``ok`` is False when a pathology recipe's labeller found no pathology in that run (the run is
kept and listed; scorers should skip it) or when a healthy run shows divergence, overfitting,
plateau or exploding gradients to the labellers (``<out>/checks.json`` keeps what they found in
every run; a healthy run not yet checked counts as ok).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lrdoctor.workloads.recipes import RECIPES  # noqa: E402
from lrdoctor.workloads.writers import FORMATS  # noqa: E402

DEV_SEEDS = (0, 1)
HELDOUT_SEEDS = (10, 11)
HELDOUT_ONLY = ("cnn_classifier",)
#: Base LRs the RMSprop/Adagrad/SGD variants below scale from: the healthy recipe's Adam LRs before
#: they were tuned up (recipes.py), where those variants were checked to train cleanly. Kept so the
#: variants' runs do not move; "base", "adamw-onecycle" and "adam-restarts" use the tuned LR.
_HEALTHY_LR = {"mlp_regressor": 3e-3, "cnn_classifier": 2e-3, "gru_lm": 5e-3, "transformer_lm": 3e-3}

#: healthy variants: other optimizers and schedules that still train well
HEALTHY_VARIANTS = {
    "base": lambda w: {},
    "adamw-onecycle": lambda w: {"optimizer": {"type": "AdamW"}, "weight_decay": 0.01, "warmup_steps": 0,
                                 "scheduler": {"type": "OneCycleLR"}},
    "rmsprop-step": lambda w: {"optimizer": {"type": "RMSprop"}, "lr": _HEALTHY_LR[w] / 3,
                               "scheduler": {"type": "StepLR"}},
    "adam-restarts": lambda w: {"scheduler": {"type": "CosineAnnealingWarmRestarts"}},
    "adagrad-cyclic": lambda w: {"optimizer": {"type": "Adagrad"}, "lr": _HEALTHY_LR[w] * 10,
                                 "warmup_steps": 0, "scheduler": {"type": "CyclicLR"}},
    "sgd-multistep": lambda w: {"optimizer": {"type": "SGD", "momentum": 0.9}, "lr": _HEALTHY_LR[w] * 10,
                                "scheduler": {"type": "MultiStepLR"}},
}
PLATEAU_VARIANTS = {
    "base": lambda w: {},
    "adam": lambda w: {"optimizer": {"type": "Adam"}, "lr": 1e-6},
    "rmsprop": lambda w: {"optimizer": {"type": "RMSprop"}, "lr": 1e-7},
}


def plan() -> list[dict]:
    jobs: list[dict] = []
    k = 0
    for split, seeds in (("dev", DEV_SEEDS), ("heldout", HELDOUT_SEEDS)):
        for name, rec in RECIPES.items():
            variants = HEALTHY_VARIANTS if name == "healthy" else PLATEAU_VARIANTS if name == "plateau" else {
                "base": lambda w: {}}
            for w in rec.workloads:
                if split == "dev" and w in HELDOUT_ONLY:
                    continue
                for seed in seeds:
                    # Variants rotate over a recipe's runs so every one appears without
                    # multiplying the run count.
                    vnames = list(variants)
                    vname = vnames[sum(j["recipe"] == name for j in jobs) % len(vnames)]
                    fmt = FORMATS[k % len(FORMATS)]
                    k += 1
                    changes = variants[vname](w)
                    if fmt == "hf_trainer_state" and k % 2:
                        changes = {**changes, "log_every": 5}
                    run = f"{w}-{vname}-s{seed}-{fmt}"
                    jobs.append({"path": f"{split}/{name}/{run}", "recipe": name, "workload": w, "variant": vname,
                                 "seed": seed, "format": fmt, "split": split, "changes": changes})
    return jobs


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def run_one(job: dict, out: str) -> dict:
    from lrdoctor.workloads.recipes import recipe_config
    from lrdoctor.workloads.training import train

    final = Path(out) / job["path"]
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    cfg = recipe_config(job["recipe"], job["workload"], job["seed"], **job["changes"])
    t0, c0 = time.perf_counter(), time.process_time()
    res = train(cfg, tmp, job["format"], device="cpu")
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    # MLflow's meta.yaml records absolute artifact URIs of the tmp directory; fix them up.
    for meta in final.rglob("meta.yaml"):
        meta.write_text(meta.read_text().replace(tmp.resolve().as_uri(), final.resolve().as_uri()))
    return {**job, "seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0,
            "checks": sanity_checks(cfg, res.history)}


def sanity_checks(cfg, hist) -> list[str]:
    """Pathologies the labellers find in a run whatever its recipe (a healthy run must show none)."""
    from lrdoctor.workloads.recipes import LABELLERS

    found = [lab for rule in ("divergence", "overfitting", "plateau", "exploding-gradients")
             for lab in LABELLERS[rule](cfg, hist)]
    return sorted({lab["rule"] for lab in found})


def entry(job: dict, out: Path, checks: dict[str, list[str]]) -> dict:
    origin = json.loads((out / job["path"] / "lrdoctor-run.json").read_text())
    labels = origin["labels"]
    if job["recipe"] == "healthy":
        ok = not labels and not checks.get(job["path"])
    else:
        ok = any(lab["rule"] == RECIPES[job["recipe"]].rule for lab in labels)
    e = {k: v for k, v in job.items() if k not in ("changes", "seconds")}
    return {**e, "step_axis": origin.get("step_axis", "step"), "labels": labels, "ok": ok}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=".cache/corpus")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--limit", type=int, default=None, help="only the first K planned runs (for tests)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = plan()[: args.limit]
    todo = [j for j in jobs if not (out / j["path"] / "lrdoctor-run.json").exists()]
    t0 = time.perf_counter()
    print(f"{len(jobs)} runs planned, {len(jobs) - len(todo)} present, {len(todo)} to train "
          f"on {args.workers} workers", flush=True)
    cpu = 0.0
    checks_file = out / "checks.json"
    checks = json.loads(checks_file.read_text()) if checks_file.exists() else {}
    with ProcessPoolExecutor(max_workers=args.workers, initializer=_init_worker) as ex:
        futs = {ex.submit(run_one, j, str(out)): j for j in todo}
        for n, fut in enumerate(as_completed(futs), 1):
            r = fut.result()
            cpu += r["cpu"]
            checks[r["path"]] = r["checks"]
            checks_file.write_text(json.dumps(checks, indent=1, sort_keys=True))
            print(f"[{n}/{len(todo)}] {r['path']} {r['seconds']:.1f}s ({r['cpu']:.1f}s CPU)", flush=True)
    entries = [entry(j, out, checks) for j in jobs]
    (out / "labels.json").write_text(json.dumps({"version": 1, "runs": entries}, indent=1))
    bad = [e["path"] for e in entries if not e["ok"]]
    splits = {s: sum(e["split"] == s for e in entries) for s in ("dev", "heldout")}
    # Wall time depends on what else the machine runs; CPU time / workers is the unloaded estimate.
    print(f"done in {time.perf_counter() - t0:.0f}s wall, {cpu:.0f}s CPU in training "
          f"(~{cpu / max(1, args.workers):.0f}s on {args.workers} idle cores): {len(entries)} runs {splits}; "
          f"not ok: {len(bad)}")
    for b in bad:
        print(f"  not ok: {b}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
