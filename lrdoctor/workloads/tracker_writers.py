"""Log writers that go through the real trackers (``wandb``, ``mlflow``) or print as a plain loop.

=================  ===========================================================  ==================
format             files (under the run directory)                              tags
=================  ===========================================================  ==================
wandb              wandb/offline-run-<ts>-<id>/run-<id>.wandb (wandb, offline)  train/loss,
                                                                                train/grad_norm,
                                                                                train/lr, val/loss,
                                                                                val/acc
mlflow_sqlite      mlflow.db (mlflow's SQLite store)                            train_loss, val_loss,
                                                                                val_acc, grad_norm, lr
text               train.log (nanoGPT-style prints: ``iter N: loss ...``)       loss, grad_norm, lr,
                                                                                val loss, val acc
=================  ===========================================================  ==================

The wandb and mlflow writers need those packages (``pip install 'lrdoctor[trackers]'``); lrdoctor
reads their files without them. They log real wall time (the trackers stamp it themselves).
"""

from __future__ import annotations

import os
from pathlib import Path

from .config import WorkloadConfig
from .writers import MLflowMetrics, Writer, _flat_hparams


def _need(module: str):
    import importlib

    from ..errors import UsageError

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise UsageError(f"writing {module} logs needs the {module} package "
                         "(pip install 'lrdoctor[trackers]')") from exc


class WandbWriter(Writer):
    format = "wandb"

    def __init__(self, logdir: Path, cfg: WorkloadConfig):
        super().__init__(logdir, cfg)
        wandb = _need("wandb")
        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(project="lrdoctor", mode="offline", dir=str(self.logdir), reinit="create_new",
                              name=f"{cfg.workload}-{cfg.seed}", config=_flat_hparams(cfg),
                              settings=wandb.Settings(console="off", x_disable_stats=True,
                                                      disable_code=True, disable_git=True))

    @property
    def run_dirs(self):
        return [Path(self.run.dir).parent]

    def _train(self, step, loss, grad_norm, lr, wall):
        self.run.log({"train/loss": loss, "train/grad_norm": grad_norm, "train/lr": lr}, step=step)

    def evaluate(self, step, val_loss, val_metric, wall):
        self.run.log({"val/loss": val_loss, "val/acc": val_metric}, step=step)

    def close(self, step, wall):
        self.run.finish()
        # finish() can return before wandb's service has written the last records of an offline
        # run (seen on a loaded machine); teardown waits for it, so the file is whole on return
        _need("wandb").teardown()


class MLflowSQLiteWriter(MLflowMetrics):
    format = "mlflow_sqlite"

    def __init__(self, logdir: Path, cfg: WorkloadConfig):
        super().__init__(logdir, cfg)
        self.mlflow = _need("mlflow")
        self.client = self.mlflow.MlflowClient(tracking_uri=f"sqlite:///{(self.logdir / 'mlflow.db').resolve()}")
        exp = self.client.get_experiment_by_name("lrdoctor")
        exp_id = exp.experiment_id if exp else self.client.create_experiment(
            "lrdoctor", artifact_location=(self.logdir / "mlartifacts").resolve().as_uri())
        self.run_id = self.client.create_run(exp_id, run_name=f"{cfg.workload}-{cfg.seed}").info.run_id
        self.metrics: list = []

    def _log(self, name: str, value: float, step: int, wall: float) -> None:
        from mlflow.entities import Metric

        self.metrics.append(Metric(name, float(value), int(wall * 1000), step))

    def close(self, step, wall):
        from mlflow.entities import Param

        params = [Param(k, str(v)) for k, v in _flat_hparams(self.cfg).items()]
        for i in range(0, len(self.metrics), 1000):  # MLflow's own batch limit
            self.client.log_batch(self.run_id, metrics=self.metrics[i:i + 1000], params=params if i == 0 else [])
        self.client.set_terminated(self.run_id)


class TextWriter(Writer):
    """What a plain training loop prints (nanoGPT's format), as ``python train.py > train.log``."""

    format = "text"

    def __init__(self, logdir: Path, cfg: WorkloadConfig):
        super().__init__(logdir, cfg)
        self.f = open(self.logdir / "train.log", "w")  # noqa: SIM115 - closed in close()

    def _train(self, step, loss, grad_norm, lr, wall):
        print(f"iter {step}: loss {loss:.4f}, grad_norm {grad_norm:.4f}, lr {lr:.4e}", file=self.f)

    def evaluate(self, step, val_loss, val_metric, wall):
        print(f"step {step}: val loss {val_loss:.4f}, val acc {val_metric:.4f}", file=self.f)

    def close(self, step, wall):
        self.f.close()


TRACKER_WRITERS = (WandbWriter, MLflowSQLiteWriter, TextWriter)
