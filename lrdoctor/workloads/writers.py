"""Pluggable log writers: one class per format, each writing the layout the real tool writes.

Every writer gets every trained step (``train``) and every evaluation (``evaluate``) and decides
itself what its tool would record: most log the step's values every ``cfg.log_every`` steps; the
HF writer averages the loss over each logging interval (and, like ``logging_nan_inf_filter=True``,
hides a NaN/inf loss behind the running average, while ``grad_norm`` shows it); the Keras writer
writes one row per epoch of ``cfg.epoch_steps`` steps with epoch means.

=================  ===========================================================  ==================
format             files (under the run directory)                              tags
=================  ===========================================================  ==================
tensorboard        events.out.tfevents.* (torch.utils.tensorboard.SummaryWriter)  train/loss,
                                                                                   train/grad_norm,
                                                                                   train/lr, val/loss,
                                                                                   val/acc
tensorboardx       events.out.tfevents.* (tensorboardX.SummaryWriter)           Loss/train, Loss/val,
                                                                                Accuracy/val,
                                                                                grad_norm, learning_rate
lightning_csv      metrics.csv + hparams.yaml (CSVLogger; sorted header)        train_loss, val_loss,
                                                                                val_acc, lr-<Opt>,
                                                                                grad_2.0_norm_total
hf_trainer_state   trainer_state.json (log_history; NaN literals)               loss, grad_norm,
                                                                                learning_rate,
                                                                                eval_loss, eval_accuracy
keras_csv          training.log (CSVLogger: epoch,... CRLF, epoch axis)         loss, grad_norm,
                                                                                learning_rate,
                                                                                val_loss, val_accuracy
mlflow             mlruns/0/<run_id>/{metrics,params,tags}/, meta.yaml          train_loss, val_loss,
                                                                                val_acc, grad_norm, lr
jsonl              metrics.jsonl (one object per log call, "step" key)          train_loss, grad_norm,
                                                                                lr, val_loss, val_acc
=================  ===========================================================  ==================

``run_dirs`` lists the directories that hold the log files; train() puts ``lrdoctor-run.json``
in the log directory and in each of those.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from .config import WorkloadConfig

FORMATS = ("tensorboard", "tensorboardx", "lightning_csv", "hf_trainer_state", "keras_csv", "mlflow", "jsonl",
           "wandb", "mlflow_sqlite", "text")  # the last three: tracker_writers.py


class Writer:
    format = ""

    def __init__(self, logdir: Path, cfg: WorkloadConfig):
        self.logdir = Path(logdir)
        self.cfg = cfg
        self.logdir.mkdir(parents=True, exist_ok=True)

    @property
    def run_dirs(self) -> list[Path]:
        return [self.logdir]

    def train(self, step: int, loss: float, grad_norm: float, lr: float, wall: float) -> None:
        if step % self.cfg.log_every == 0:
            self._train(step, loss, grad_norm, lr, wall)

    def _train(self, step: int, loss: float, grad_norm: float, lr: float, wall: float) -> None:
        raise NotImplementedError

    def evaluate(self, step: int, val_loss: float, val_metric: float, wall: float) -> None:
        raise NotImplementedError

    def close(self, step: int, wall: float) -> None:
        pass


class _TBWriter(Writer):
    tags = ("train/loss", "train/grad_norm", "train/lr", "val/loss", "val/acc")

    def _make(self):
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(log_dir=str(self.logdir))

    def __init__(self, logdir: Path, cfg: WorkloadConfig):
        super().__init__(logdir, cfg)
        self.w = self._make()

    def _train(self, step, loss, grad_norm, lr, wall):
        for tag, v in zip(self.tags[:3], (loss, grad_norm, lr), strict=True):
            self.w.add_scalar(tag, v, step, walltime=wall)

    def evaluate(self, step, val_loss, val_metric, wall):
        self.w.add_scalar(self.tags[3], val_loss, step, walltime=wall)
        self.w.add_scalar(self.tags[4], val_metric, step, walltime=wall)

    def close(self, step, wall):
        self.w.flush()
        self.w.close()


class TensorBoardWriter(_TBWriter):
    format = "tensorboard"


class TensorBoardXWriter(_TBWriter):
    format = "tensorboardx"
    tags = ("Loss/train", "grad_norm", "learning_rate", "Loss/val", "Accuracy/val")

    def _make(self):
        from tensorboardX import SummaryWriter

        return SummaryWriter(logdir=str(self.logdir))


class LightningCSVWriter(Writer):
    """CSVLogger's layout: header = sorted union of keys; train and val rows interleaved, blank cells."""

    format = "lightning_csv"

    def __init__(self, logdir: Path, cfg: WorkloadConfig, nested: bool = False):
        super().__init__(logdir, cfg)
        self.dir = self.logdir / "lightning_logs" / "version_0" if nested else self.logdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict[str, Any]] = []
        self.lr_key = f"lr-{cfg.optimizer['type']}"

    @property
    def run_dirs(self):
        return [self.dir]

    def _epoch(self, step: int) -> int:
        return (step - 1) // self.cfg.epoch_steps

    def _train(self, step, loss, grad_norm, lr, wall):
        # Lightning's own step column counts from 0; ours keeps the 1-based step of every other
        # format so labels and paired reruns line up across formats.
        self.rows.append({"epoch": self._epoch(step), "grad_2.0_norm_total": grad_norm, self.lr_key: lr,
                          "step": step, "train_loss": loss})

    def evaluate(self, step, val_loss, val_metric, wall):
        self.rows.append({"epoch": self._epoch(step), "step": step, "val_acc": val_metric, "val_loss": val_loss})

    def close(self, step, wall):
        keys = sorted(set().union(*self.rows)) if self.rows else ["epoch", "step"]
        with open(self.dir / "metrics.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(self.rows)
        (self.dir / "hparams.yaml").write_text(yaml.safe_dump(_flat_hparams(self.cfg), sort_keys=False))


class HFTrainerStateWriter(Writer):
    format = "hf_trainer_state"

    def __init__(self, logdir: Path, cfg: WorkloadConfig):
        super().__init__(logdir, cfg)
        self.history: list[dict[str, Any]] = []
        self.acc = 0.0
        self.n = 0
        self.last_logged = 0
        self.total = 0.0
        self.total_n = 0

    def _epoch(self, step: int) -> float:
        return round(step / self.cfg.epoch_steps, 4)

    def train(self, step, loss, grad_norm, lr, wall):
        if not math.isfinite(loss):
            # Trainer's logging_nan_inf_filter: a NaN/inf step counts as the running average.
            loss = self.acc / max(1, self.n) if self.n else 0.0
        self.acc += loss
        self.n += 1
        self.total += loss
        self.total_n += 1
        if step % self.cfg.log_every == 0:
            self.history.append({"epoch": self._epoch(step), "grad_norm": grad_norm, "learning_rate": lr,
                                 "loss": round(self.acc / self.n, 4), "step": step})
            self.acc, self.n = 0.0, 0

    def evaluate(self, step, val_loss, val_metric, wall):
        self.history.append({"epoch": self._epoch(step), "eval_accuracy": val_metric, "eval_loss": val_loss,
                             "eval_runtime": 0.05, "eval_samples_per_second": 10240.0,
                             "eval_steps_per_second": 40.0, "step": step})

    def close(self, step, wall):
        self.history.append({"epoch": self._epoch(step), "step": step, "total_flos": 0.0,
                             "train_loss": self.total / max(1, self.total_n), "train_runtime": 1.0,
                             "train_samples_per_second": 1.0, "train_steps_per_second": 1.0})
        state = {
            "best_global_step": None, "best_metric": None, "best_model_checkpoint": None,
            "epoch": self._epoch(step), "eval_steps": self.cfg.eval_every, "global_step": step,
            "is_hyper_param_search": False, "is_local_process_zero": True, "is_world_process_zero": True,
            "log_history": self.history, "logging_steps": self.cfg.log_every, "max_steps": self.cfg.max_steps,
            "num_input_tokens_seen": 0,
            "num_train_epochs": math.ceil(self.cfg.max_steps / self.cfg.epoch_steps),
            "save_steps": 500, "stateful_callbacks": {}, "total_flos": 0.0,
            "train_batch_size": self.cfg.batch_size, "trial_name": None, "trial_params": None,
        }
        (self.logdir / "trainer_state.json").write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")


class KerasCSVWriter(Writer):
    """keras.callbacks.CSVLogger: ``epoch`` then sorted keys, csv's excel dialect (CRLF)."""

    format = "keras_csv"

    def __init__(self, logdir: Path, cfg: WorkloadConfig):
        super().__init__(logdir, cfg)
        self.rows: list[dict[str, Any]] = []
        self.buf: dict[str, list[float]] = {"loss": [], "grad_norm": []}
        self.lr = math.nan
        self.val: dict[str, float] = {}
        self.pending: int | None = None

    def train(self, step, loss, grad_norm, lr, wall):
        if self.pending is not None:
            self._flush(self.pending)
        self.buf["loss"].append(loss)
        self.buf["grad_norm"].append(grad_norm)
        self.lr = lr
        if step % self.cfg.epoch_steps == 0:
            # Keras evaluates at the end of the epoch and writes one row with both: wait for
            # an evaluation at this same step before writing.
            self.pending = step

    def evaluate(self, step, val_loss, val_metric, wall):
        self.val = {"val_accuracy": val_metric, "val_loss": val_loss}
        if self.pending == step:
            self._flush(step)

    def _flush(self, step: int) -> None:
        if not self.buf["loss"]:
            return
        row: dict[str, Any] = {k: sum(v) / len(v) for k, v in self.buf.items()}
        row["learning_rate"] = self.lr
        row.update(self.val or {"val_accuracy": math.nan, "val_loss": math.nan})
        row["epoch"] = (step - 1) // self.cfg.epoch_steps
        self.rows.append(row)
        self.buf = {"loss": [], "grad_norm": []}
        self.pending = None

    def close(self, step, wall):
        self._flush(step)
        if not self.rows:
            return
        keys = ["epoch", *sorted(k for k in self.rows[0] if k != "epoch")]
        with open(self.logdir / "training.log", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)  # excel dialect: lines end in \r\n, as Keras writes
            w.writeheader()
            w.writerows(self.rows)


class MLflowMetrics(Writer):
    """The metric names an MLflow logging script uses (file store and SQLite store alike)."""

    def _log(self, name: str, value: float, step: int, wall: float) -> None:
        raise NotImplementedError

    def _train(self, step, loss, grad_norm, lr, wall):
        self._log("train_loss", loss, step, wall)
        self._log("grad_norm", grad_norm, step, wall)
        self._log("lr", lr, step, wall)

    def evaluate(self, step, val_loss, val_metric, wall):
        self._log("val_loss", val_loss, step, wall)
        self._log("val_acc", val_metric, step, wall)


class MLflowWriter(MLflowMetrics):
    format = "mlflow"

    def __init__(self, logdir: Path, cfg: WorkloadConfig):
        super().__init__(logdir, cfg)
        self.run_id = hashlib.sha1(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:32]
        self.exp = self.logdir / "mlruns" / "0"
        self.run = self.exp / self.run_id
        for sub in ("metrics", "params", "tags", "artifacts"):
            (self.run / sub).mkdir(parents=True, exist_ok=True)
        self.lines: dict[str, list[str]] = {}
        self.start = None

    @property
    def run_dirs(self):
        return [self.run]

    def _log(self, name: str, value: float, step: int, wall: float) -> None:
        if self.start is None:
            self.start = int(wall * 1000)
        self.lines.setdefault(name, []).append(f"{int(wall * 1000)} {float(value)} {step}\n")

    def close(self, step, wall):
        for name, lines in self.lines.items():
            (self.run / "metrics" / name).write_text("".join(lines))
        for k, v in _flat_hparams(self.cfg).items():
            (self.run / "params" / k).write_text(str(v))
        (self.run / "tags" / "mlflow.runName").write_text(f"{self.cfg.workload}-{self.cfg.seed}")
        end = int(wall * 1000)
        start = self.start or end
        uri = self.run.resolve().as_uri()
        (self.run / "meta.yaml").write_text(yaml.safe_dump({
            "artifact_uri": uri + "/artifacts", "end_time": end, "entry_point_name": "",
            "experiment_id": "0", "lifecycle_stage": "active", "run_id": self.run_id,
            "run_name": f"{self.cfg.workload}-{self.cfg.seed}", "run_uuid": self.run_id, "source_name": "",
            "source_type": 4, "source_version": "", "start_time": start, "status": 3, "tags": [],
            "user_id": "lrdoctor",
        }))
        (self.exp / "meta.yaml").write_text(yaml.safe_dump({
            "artifact_location": self.exp.resolve().as_uri(), "creation_time": start, "experiment_id": "0",
            "last_update_time": end, "lifecycle_stage": "active", "name": "Default",
        }))


class JSONLWriter(Writer):
    format = "jsonl"

    def __init__(self, logdir: Path, cfg: WorkloadConfig):
        super().__init__(logdir, cfg)
        self.f = open(self.logdir / "metrics.jsonl", "w")  # noqa: SIM115 - closed in close()

    def _train(self, step, loss, grad_norm, lr, wall):
        self.f.write(json.dumps({"step": step, "train_loss": loss, "grad_norm": grad_norm, "lr": lr,
                                 "time": round(wall, 3)}) + "\n")

    def evaluate(self, step, val_loss, val_metric, wall):
        self.f.write(json.dumps({"step": step, "val_loss": val_loss, "val_acc": val_metric,
                                 "time": round(wall, 3)}) + "\n")

    def close(self, step, wall):
        self.f.close()


WRITERS: dict[str, Callable[[Path, WorkloadConfig], Writer]] = {
    w.format: w for w in (TensorBoardWriter, TensorBoardXWriter, LightningCSVWriter, HFTrainerStateWriter,
                          KerasCSVWriter, MLflowWriter, JSONLWriter)
}


def make_writer(fmt: str, logdir: str | os.PathLike, cfg: WorkloadConfig) -> Writer:
    from ..errors import UsageError
    from .tracker_writers import TRACKER_WRITERS  # they subclass Writer: imported once it exists

    WRITERS.update({w.format: w for w in TRACKER_WRITERS})
    if fmt not in WRITERS:
        raise UsageError(f"unknown log format {fmt!r} (known: {', '.join(FORMATS)})")
    return WRITERS[fmt](Path(logdir), cfg)


def _flat_hparams(cfg: WorkloadConfig) -> dict[str, Any]:
    """Config as flat scalar params (what Lightning's hparams.yaml and MLflow params hold)."""
    out: dict[str, Any] = {}
    for k, v in cfg.to_dict().items():
        if isinstance(v, dict):
            for kk, vv in v.items():
                out[f"{k}.{kk}"] = vv if isinstance(vv, (int, float, str, bool)) or vv is None else str(vv)
        elif isinstance(v, (list, tuple)):
            out[k] = str(v)
        else:
            out[k] = v
    return out
