"""Regenerate tests/data/{wandb,mlflow_sqlite}/ with the real trackers, and record what was logged.

    python scripts/make_tracker_fixtures.py [--only wandb|mlflow]

Needs the ``wandb`` and ``mlflow`` packages (the dev extra). They are too slow to run in every
test session (each wandb run starts its Go core, each new mlflow.db runs its schema
migrations), so the output is committed: a few small files. ``expected.json`` next to each holds
every point exactly as it was handed to the tracker (NaN/inf as the strings "nan"/"inf"/"-inf"),
which the reader tests compare against.

- ``wandb/``: a ``wandb/`` folder as ``WANDB_MODE=offline`` leaves it, with three runs. wandb only
  writes online runs (``run-<ts>-<id>/``) when it can reach a server; the third run's directory
  is renamed to that layout (the file inside is the same format).
- ``text/hf_trainer/*.log``: what a HuggingFace ``Trainer`` run on a tiny random GPT-2 printed
  to stdout/stderr (tqdm bars with their carriage returns, the ``{'loss': ...}`` dict lines),
  captured three ways (see ``make_hf``); expected.json is ``trainer.state.log_history``.
- ``mlflow_sqlite/mlflow.db``: MLflow's default store (``sqlite:///mlflow.db`` in the working
  directory) with two experiments, three runs; one diverges.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"


def enc(v: float) -> float | str:
    return v if math.isfinite(v) else str(v)


def healthy(n: int, seed: float = 0.0) -> list[float]:
    return [2.0 * math.exp(-i / (n / 4)) + 0.05 * math.sin(i * 0.7 + seed) + 0.1 for i in range(n)]


def diverging(n: int) -> list[float]:
    return [2.0 * math.exp(-i / 40) + 0.1 if i < n // 2 else 0.2 * math.exp((i - n // 2) / 12) for i in range(n)]


WANDB_SCRIPT = r'''
import json, math, sys, wandb
spec = json.loads(sys.argv[1])
run = wandb.init(project="lrdoctor-fixtures", mode="offline", dir=".", name=spec["name"],
                 config=spec["config"])
logged = []
for entry in spec["log"]:
    data = {k: (float(v) if isinstance(v, str) and v in ("nan", "inf", "-inf") else v)
            for k, v in entry["data"].items()}
    if entry.get("nested"):
        data["val"] = {"loss": data.pop("val_loss")}
    if "step" in entry:
        wandb.log(data, step=entry["step"])
    else:
        wandb.log(data)
for k, v in spec.get("summary", {}).items():
    run.summary[k] = v
run.finish()
print(run.dir)
'''


def wandb_specs() -> list[dict]:
    n = 300
    loss = healthy(n)
    a = []
    for i in range(n):
        d = {"train/loss": loss[i], "lr": 1e-3 * min(1.0, (i + 1) / 30)}
        if i == 40:
            d["train/loss"] = "nan"
        if i == 41:
            d["grad_norm"] = "inf"
        elif i % 5 == 0:
            d["grad_norm"] = 1.0 + 0.01 * i
        e: dict = {"data": d}
        if i % 50 == 49:
            d["val_loss"] = loss[i] + 0.05
            e["nested"] = True
        if i == 100:
            d["note"] = "checkpoint saved"  # a string: no point
            d["flag"] = True  # a boolean: no point
        a.append(e)
    # Skip ahead with an explicit step, as a resumed script would.
    a.append({"data": {"train/loss": 0.123, "lr": 1e-4}, "step": 500})
    # One record far larger than a 32 KiB block: it is split across blocks.
    a.append({"data": {"train/loss": 0.111, "caption": "x" * 70000}, "step": 501})
    b_loss = diverging(200)
    b = [{"data": {"train/loss": v, "lr": 0.5}} for v in b_loss]
    c_loss = healthy(120, seed=1.0)
    c = [{"data": {"loss": v, "epoch": i // 40}} for i, v in enumerate(c_loss)]
    return [
        {"name": "warmup-nan-loss", "config": {"lr": 1e-3, "optimizer": {"name": "adamw", "betas": [0.9, 0.999]},
                                              "batch_size": 32}, "log": a, "summary": {"best_val": 0.25}},
        {"name": "diverging-sgd", "config": {"lr": 0.5, "optimizer": "sgd"}, "log": b},
        {"name": "online-layout", "config": {"lr": 3e-4}, "log": c},
    ]


def expected_points(spec: dict) -> dict[str, list]:
    """Every numeric point the script logs, as wandb numbers steps: (step, value) per key."""
    out: dict[str, list] = {}
    step = 0
    for entry in spec["log"]:
        step = entry.get("step", step)
        for k, v in entry["data"].items():
            if isinstance(v, bool) or not isinstance(v, (int, float, str)):
                continue
            if isinstance(v, str) and v not in ("nan", "inf", "-inf"):
                continue
            key = "val/loss" if k == "val_loss" and entry.get("nested") else k
            out.setdefault(key, []).append([step, v])
        step += 1
    return out


def make_wandb() -> None:
    out = DATA / "wandb"
    shutil.rmtree(out, ignore_errors=True)
    expected = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DISABLE_CODE": "true",
               "WANDB_DISABLE_GIT": "true", "WANDB__DISABLE_STATS": "true"}
        for spec in wandb_specs():
            res = subprocess.run([sys.executable, "-c", WANDB_SCRIPT, json.dumps(spec)], cwd=tmp, env=env,
                                 check=True, capture_output=True, text=True)
            run_dir = (Path(tmp) / res.stdout.strip().splitlines()[-1]).parent
            name = run_dir.name
            if spec["name"] == "online-layout":
                name = name.replace("offline-run-", "run-")
            dest = out / "wandb" / name
            dest.mkdir(parents=True)
            for f in run_dir.glob("*.wandb"):
                shutil.copy2(f, dest / f.name)
            expected[f"wandb/{name}"] = {"name": spec["name"], "config": spec["config"], "summary": spec.get("summary", {}),
                                         "points": expected_points(spec)}
        # wandb's own debug logs next to the runs, as in a real wandb/ folder (not runs)
        shutil.copy2(Path(tmp) / "wandb" / "debug.log", out / "wandb" / "debug.log")
    (out / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True))


MLFLOW_SCRIPT = r'''
import json, sys, mlflow
specs = json.loads(sys.argv[1])
for spec in specs:
    mlflow.set_experiment(spec["experiment"])
    with mlflow.start_run(run_name=spec["name"]):
        mlflow.log_params(spec["params"])
        for key, pts in spec["metrics"].items():
            for step, v in pts:
                mlflow.log_metric(key, float(v), step=step)
print(mlflow.get_tracking_uri())
'''


def mlflow_specs() -> list[dict]:
    n = 150
    h = healthy(n)
    d = diverging(n)
    return [
        {"experiment": "baseline", "name": "healthy-adam", "params": {"lr": "0.001", "optimizer": "adam"},
         "metrics": {"train/loss": [[i, h[i]] for i in range(n)],
                     "val_loss": [[i, h[i] + 0.05] for i in range(0, n, 10)],
                     "grad_norm": [[i, "nan" if i == 30 else 1.0] for i in range(n)]}},
        {"experiment": "baseline", "name": "healthy-adam", "params": {"lr": "0.002", "optimizer": "adam"},
         "metrics": {"train/loss": [[i, h[i] * 0.9] for i in range(n)]}},
        {"experiment": "lr-sweep", "name": "sgd-lr-0.5", "params": {"lr": "0.5", "optimizer": "sgd"},
         "metrics": {"train/loss": [[i, d[i]] for i in range(n)]}},
    ]


def make_mlflow() -> None:
    out = DATA / "mlflow_sqlite"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    specs = mlflow_specs()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    res = subprocess.run([sys.executable, "-c", MLFLOW_SCRIPT, json.dumps(specs)], cwd=out, env=env,
                         check=True, capture_output=True, text=True)
    uri = res.stdout.strip().splitlines()[-1]  # the default store: mlflow.db in the working directory
    assert uri.startswith("sqlite:///") and Path(uri[len("sqlite:///"):]).resolve() == out / "mlflow.db", uri
    shutil.rmtree(out / "mlruns", ignore_errors=True)  # artifact folders, empty
    (out / "expected.json").write_text(json.dumps(specs, indent=1))


HF_SCRIPT = r'''
import json, sys, torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments
torch.manual_seed(0)
model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=64, n_positions=32))
g = torch.Generator().manual_seed(0)
data = [{"input_ids": (ids := torch.randint(0, 64, (32,), generator=g)), "labels": ids} for _ in range(96)]
args = TrainingArguments(output_dir=sys.argv[1], max_steps=60, logging_steps=5, eval_strategy="steps",
                         eval_steps=20, per_device_train_batch_size=4, per_device_eval_batch_size=8,
                         learning_rate=3e-3, warmup_steps=10, report_to="none", use_cpu=True,
                         save_strategy="no", seed=0)
trainer = Trainer(model=model, args=args, train_dataset=data[:80], eval_dataset=data[80:])
trainer.train()
with open(sys.argv[2], "w") as fh:
    json.dump(trainer.state.log_history, fh, indent=1)
'''


#: HF Trainer's timing metrics: the one thing that differs between two runs of the same seed.
TIMINGS = ("_runtime", "_per_second")


def make_hf() -> None:
    """Three captures of the same seeded run: ``train.log``, stdout unbuffered (``python -u``,
    ``PYTHONUNBUFFERED=1``; a terminal's line buffering behaves alike) with stderr in the same
    file; ``buffered.log``, Python's default block-buffered stdout to a file (``nohup python
    train.py > out.log 2>&1``): the dicts reach the file in chunks, apart from the bar; and
    ``stdout.log``, stdout alone (``> out.log``): no bar at all."""
    out = DATA / "text" / "hf_trainer"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    base = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    base.update({"TQDM_MININTERVAL": "0", "TRANSFORMERS_VERBOSITY": "warning"})
    expected = []
    for name, unbuffered, stderr in (("train.log", True, subprocess.STDOUT), ("buffered.log", False, subprocess.STDOUT),
                                     ("stdout.log", False, subprocess.DEVNULL)):
        env = {**base, "PYTHONUNBUFFERED": "1"} if unbuffered else base
        with tempfile.TemporaryDirectory() as tmp, (out / name).open("wb") as log:
            subprocess.run([sys.executable, "-c", HF_SCRIPT, tmp, str(Path(tmp) / "history.json")], stdout=log,
                           stderr=stderr, env=env, check=True)
            expected.append(json.loads((Path(tmp) / "history.json").read_text()))
    # seeded on CPU: the three runs logged the same numbers, but for their timings
    untimed = [[{k: v for k, v in e.items() if not k.endswith(TIMINGS)} for e in h] for h in expected]
    assert all(h == untimed[0] for h in untimed), "runs of the same seed differ"
    (out / "expected.json").write_text(json.dumps(expected[0], indent=1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--only", choices=["wandb", "mlflow", "hf"])
    args = p.parse_args(argv)
    if args.only in (None, "wandb"):
        make_wandb()
    if args.only in (None, "mlflow"):
        make_mlflow()
    if args.only in (None, "hf"):
        make_hf()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
