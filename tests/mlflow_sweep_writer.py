"""Writes MLflow sweeps with the real mlflow package, as a user's sweep script does: a parent run
that logs only a param and two nested child runs (``start_run(nested=True)``) that log metrics.

    python tests/mlflow_sweep_writer.py OUT

OUT/sql/mlflow.db (SQLite store, MLflow's default), OUT/file/mlruns (file store), and
OUT/none/mlflow.db: the same sweep where no run logged a metric. Run in a subprocess by
tests/test_mlflow_nested_runs.py (mlflow's tracking URI and active run are process globals).
"""

import os
import sys

os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"

import mlflow  # noqa: E402
from mlflow.entities import Metric  # noqa: E402


def sweep(uri: str, with_metrics: bool = True) -> None:
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("sweep")
    with mlflow.start_run(run_name="parent"):
        mlflow.log_param("n", 2)
        for lr in (0.5, 0.01):
            with mlflow.start_run(run_name=f"child-lr{lr}", nested=True):
                mlflow.log_param("lr", lr)
                if with_metrics:  # one batch: a log_metrics call per step is a transaction each
                    run_id = mlflow.active_run().info.run_id
                    mlflow.MlflowClient().log_batch(run_id, metrics=[
                        Metric(k, v, 1_700_000_000_000 + 1000 * s, s) for s in range(40)
                        for k, v in (("train_loss", 2.0 / (1 + s * lr)), ("lr", lr))])


if __name__ == "__main__":
    out = sys.argv[1]
    for d in ("sql", "file", "none"):
        os.makedirs(os.path.join(out, d), exist_ok=True)
    sweep(f"sqlite:///{out}/sql/mlflow.db")
    sweep(f"file://{out}/file/mlruns")
    sweep(f"sqlite:///{out}/none/mlflow.db", with_metrics=False)
