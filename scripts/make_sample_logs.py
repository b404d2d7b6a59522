"""Regenerate sample_logs/: one real training run per pathology plus healthy ones, in several formats.

    python scripts/make_sample_logs.py [--out sample_logs]

Deterministic: fixed seeds, one CPU thread, CPU device, and a fake clock for logged wall times,
so the logged values are identical on every regeneration (TensorBoard event-file *names* still
carry the host and time, as SummaryWriter makes them). Each run directory holds its logs and
``lrdoctor-run.json`` (workload, config, ground-truth labels); README.md describes them.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lrdoctor.workloads.recipes import recipe_config  # noqa: E402

#: (directory, recipe, workload, format, seed, what it shows)
SAMPLES = [
    ("healthy-mlp-tensorboard", "healthy", "mlp_regressor", "tensorboard", 0,
     "tuned Adam + warmup + cosine on an MLP regressor: loss falls smoothly, val loss follows"),
    ("healthy-transformer-hf", "healthy", "transformer_lm", "hf_trainer_state", 0,
     "tuned AdamW + warmup + cosine + clipping on a tiny causal transformer LM"),
    ("divergence-mlp-lightning", "divergence", "mlp_regressor", "lightning_csv", 0,
     "SGD warmup into a peak LR far too high: the loss learns, then blows up to inf/NaN"),
    ("loss-spike-cnn-tensorboardx", "loss-spike", "cnn_classifier", "tensorboardx", 0,
     "poisoned batches at steps 250 and 400 of an otherwise healthy CNN: two isolated loss spikes"),
    ("plateau-gru-mlflow", "plateau", "gru_lm", "mlflow", 0,
     "SGD with an LR ~1e4x too low: the GRU LM's loss stays at its starting value"),
    ("overfitting-cnn-keras", "overfitting", "cnn_classifier", "keras_csv", 0,
     "96 noisy training images, a wide CNN, no regularisation: val loss turns up while train loss falls"),
    ("exploding-gru-jsonl", "exploding-gradients", "gru_lm", "jsonl", 0,
     "GRU LM without clipping, plain SGD: grad-norm bursts ~20x the median at 4 steps"),
    ("divergence-mlp-wandb", "divergence", "mlp_regressor", "wandb", 1,
     "W&B offline run (wandb package): LR far too high, the loss blows up to inf/NaN"),
    ("overfitting-mlp-mlflow-sqlite", "overfitting", "mlp_regressor", "mlflow_sqlite", 0,
     "MLflow's default SQLite store (mlflow.db, written by mlflow): val loss turns up"),
    ("plateau-mlp-text", "plateau", "mlp_regressor", "text", 0,
     "printed output only (train.log, nanoGPT-style 'iter N: loss ...' lines): the loss never moves"),
    ("vanishing-sigmoid-tensorboard", "vanishing-gradients", "deep_sigmoid_mlp", "tensorboard", 0,
     "12-layer sigmoid MLP: grad norm tiny from the start, loss stalled at chance level"),
]


class FakeClock:
    def __init__(self, start: float = 1_700_000_000.0, tick: float = 0.05):
        self.t, self.tick = start, tick

    def __call__(self) -> float:
        self.t += self.tick
        return self.t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "sample_logs"))
    p.add_argument("--only", action="append", help="regenerate only this sample (repeatable); the "
                   "wandb and mlflow_sqlite samples need pip install 'lrdoctor[trackers]'")
    args = p.parse_args(argv)
    from lrdoctor.workloads.training import train

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, recipe, workload, fmt, seed, what in SAMPLES:
        d = out / name
        if args.only and name not in args.only:
            rows.append((name, workload, recipe, fmt, what, _onset_of(d, fmt)))
            continue
        if d.exists():
            shutil.rmtree(d)
        cfg = recipe_config(recipe, workload, seed)
        res = train(cfg, d, fmt, device="cpu", clock=FakeClock())
        prim = [lab for lab in res.labels if lab.get("primary", True)]
        onset = ", ".join(f"{lab['rule']} @ {lab['onset_step']}" for lab in prim) or "none (healthy)"
        if res.labels and fmt == "keras_csv":
            onset += " (epochs)"
        if fmt == "wandb":
            _trim_wandb(d)
        rows.append((name, workload, recipe, fmt, what, onset))
        print(f"{name}: {res.steps_done} steps, {res.seconds:.1f}s, labels: {onset}", flush=True)
    (out / "README.md").write_text(_readme(rows))
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"sample_logs: {size / 1e6:.2f} MB")
    return 0


def _trim_wandb(d: Path) -> None:
    """Keep what lrdoctor reads (the .wandb file) and the provenance; wandb's debug logs hold
    host paths, files/ only requirements.txt, and wandb/latest-run is a symlink."""
    wb = d / "wandb"
    for p in list(wb.iterdir()):
        if p.is_symlink() or p.is_file():
            p.unlink()
    for run_dir in wb.iterdir():
        for p in list(run_dir.iterdir()):
            if p.is_dir():
                shutil.rmtree(p)


def _onset_of(d: Path, fmt: str) -> str:
    """The labelled onset of an existing sample (when it is not regenerated)."""
    import json

    origin = json.loads((d / "lrdoctor-run.json").read_text())
    prim = [lab for lab in origin.get("labels", []) if lab.get("primary", True)]
    onset = ", ".join(f"{lab['rule']} @ {lab['onset_step']}" for lab in prim) or "none (healthy)"
    return onset + (" (epochs)" if prim and fmt == "keras_csv" else "")


def _readme(rows) -> str:
    lines = [
        "# sample_logs",
        "",
        "Real training runs of lrdoctor's built-in PyTorch workloads (`lrdoctor/workloads/`), one per",
        "pathology plus healthy ones, in several log formats. Regenerate with",
        "`python scripts/make_sample_logs.py` (deterministic values; about 20 s on one CPU core).",
        "Each directory holds the logs and `lrdoctor-run.json`: the workload, its full config (rerunnable",
        "with `lrdoctor verify`) and the ground-truth labels (rule + onset step; for the Keras-style",
        "run, whose step axis is the epoch, onsets are epochs).",
        "",
        "Demo: `lrdoctor diagnose sample_logs/`",
        "",
        "| run | workload | recipe | format | what it shows | labelled onset |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| `{n}` | {w} | {r} | {f} | {what} | {o} |" for n, w, r, f, what, o in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
