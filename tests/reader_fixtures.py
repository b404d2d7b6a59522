"""Write logs exactly as the real tools write them (without installing those tools).

Each writer follows the tool's own code: Lightning's ``_ExperimentWriter`` (csv_logs.py), Keras'
``CSVLogger.on_epoch_end``, transformers' ``TrainerState.save_to_json``, MLflow's
``FileStore.log_metric``/``log_param``, LLaMA-Factory's ``LogCallback``, and
``json.dump(history.history)``. Tests call them to build their fixtures in tmp_path.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def write_lightning_csv(log_dir: Path, rows: Sequence[Mapping[str, Any]], hparams: Mapping[str, Any] | None = None,
                        flush_every: int = 100) -> Path:
    """Lightning CSVLogger: rows are ``log_metrics`` calls (each with its ``step``); every
    ``flush_every`` rows ``save()`` appends, rewriting the file when new keys appear; the header
    is the sorted union of keys; csv.DictWriter (excel dialect, CRLF) leaves absent keys empty."""
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / "metrics.csv"
    keys: list[str] = []
    pending: list[dict[str, Any]] = []
    written: list[dict[str, Any]] = []

    def save() -> None:
        if not pending:
            return
        new = set().union(*pending) - set(keys)
        keys.extend(new)
        keys.sort()
        exists = path.is_file()
        if new and exists:  # _rewrite_with_new_header
            with path.open("w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=keys)
                w.writeheader()
                w.writerows(written)
        with path.open("a" if exists else "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=keys)
            if not exists:
                w.writeheader()
            w.writerows(pending)
        written.extend(pending)
        pending.clear()

    for row in rows:
        pending.append(dict(row))
        if len(pending) >= flush_every:
            save()
    save()
    if hparams is not None:
        import yaml

        (log_dir / "hparams.yaml").write_text(yaml.dump(dict(hparams)))
    return path


def write_keras_csv(path: Path, epochs: Sequence[Mapping[str, Any]], append: bool = False) -> Path:
    """Keras CSVLogger: keys sorted at the first epoch, ``epoch`` first, ``NA`` for missing keys,
    csv.DictWriter on a text-mode file (so CRLF line ends); append mode adds rows, no header."""
    keys = sorted(epochs[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    exists = path.is_file() and append
    with path.open("a" if append else "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["epoch", *keys])
        if not exists:
            w.writeheader()
        for epoch, logs in enumerate(epochs):
            w.writerow({"epoch": epoch, **{k: logs.get(k, "NA") for k in keys}})
    return path


def write_trainer_state(path: Path, log_history: Sequence[Mapping[str, Any]], global_step: int,
                        **extra: Any) -> Path:
    """transformers TrainerState.save_to_json: json.dumps(asdict(state), indent=2, sort_keys=True)."""
    state = {
        "best_metric": None, "best_model_checkpoint": None, "epoch": extra.pop("epoch", 1.0),
        "eval_steps": 500, "global_step": global_step, "is_hyper_param_search": False,
        "is_local_process_zero": True, "is_world_process_zero": True, "log_history": list(log_history),
        "logging_steps": 10, "max_steps": global_step, "num_input_tokens_seen": 0, "num_train_epochs": 1,
        "save_steps": 500, "total_flos": 0.0, "train_batch_size": 8, "trial_name": None,
        "trial_params": None, **extra,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    return path


def write_mlflow_run(root: Path, experiment_id: str, run_id: str, metrics: Mapping[str, Sequence[tuple]],
                     params: Mapping[str, Any] | None = None, run_name: str | None = None) -> Path:
    """MLflow FileStore: mlruns/<exp>/<run>/{meta.yaml, metrics/<key>, params/<key>, tags/}.
    Metric lines are ``f"{timestamp} {value} {step}\\n"`` (Python str of the float)."""
    import yaml

    exp = root / experiment_id
    exp.mkdir(parents=True, exist_ok=True)
    if not (exp / "meta.yaml").exists():
        (exp / "meta.yaml").write_text(yaml.safe_dump({"experiment_id": experiment_id, "name": "Default",
                                                        "lifecycle_stage": "active"}))
    run = exp / run_id
    for sub in ("metrics", "params", "tags", "artifacts"):
        (run / sub).mkdir(parents=True, exist_ok=True)
    meta = {"run_id": run_id, "run_uuid": run_id, "experiment_id": experiment_id, "status": 3,
            "lifecycle_stage": "active", "artifact_uri": f"file://{run}/artifacts", "start_time": 0}
    if run_name is not None:
        meta["run_name"] = run_name
        (run / "tags" / "mlflow.runName").write_text(run_name)
    (run / "meta.yaml").write_text(yaml.safe_dump(meta))
    for key, points in metrics.items():
        f = run / "metrics" / key
        f.parent.mkdir(parents=True, exist_ok=True)
        with f.open("a") as fh:
            for ts, value, step in points:
                fh.write(f"{ts} {value} {step}\n")
    for key, value in (params or {}).items():
        f = run / "params" / key
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(str(value))
    return run


def write_llamafactory_jsonl(path: Path, entries: Sequence[Mapping[str, Any]]) -> Path:
    """LLaMA-Factory LogCallback: one json.dumps(logs) per line, appended as training runs."""
    with path.open("a", encoding="utf-8") as fh:
        for e in entries:
            fh.write(json.dumps(dict(e), ensure_ascii=False) + "\n")
    return path


def write_history_json(path: Path, history: Mapping[str, Sequence[float]]) -> Path:
    """``json.dump(history.history, f)`` (NaN written as the bare literal NaN)."""
    with path.open("w") as fh:
        json.dump({k: list(v) for k, v in history.items()}, fh)
    return path


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every file and dir under root, to show that reading wrote nothing."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            st = os.stat(os.path.join(dirpath, n))
            out[os.path.join(dirpath, n)] = (st.st_size, st.st_mtime_ns)
    return out
