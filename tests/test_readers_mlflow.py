"""MLflow file store reader on runs laid out as mlflow's FileStore writes them."""

from __future__ import annotations

import numpy as np
from reader_fixtures import write_mlflow_run

from lrdoctor.readers import discover


def same(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return a.shape == b.shape and bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))


def test_mlflow_run_round_trip(tmp_path):
    loss = [(1700000000000 + 10 * i, v, i) for i, v in enumerate([2.0, 1.5, float("nan"), 1.0, float("inf")])]
    val = [(1700000000005 + 20 * i, 1.9 - i / 10, 2 * i) for i in range(3)]
    run_dir = write_mlflow_run(tmp_path / "mlruns", "0", "a1b2c3", {"train/loss": loss, "val_loss": val},
                               params={"lr": "0.001", "optimizer": "adam", "epochs": "3"}, run_name="brave-owl")
    assert (run_dir / "metrics" / "train" / "loss").is_file()
    [run] = discover(tmp_path / "mlruns")
    assert run.format == "mlflow" and run.name == "brave-owl"
    assert run.hparams == {"lr": 0.001, "optimizer": "adam", "epochs": 3}
    for tag, pts in (("train/loss", loss), ("val_loss", val)):
        s = run.series(tag)
        assert s["step"].tolist() == [p[2] for p in pts]
        assert same(s["value"], [p[1] for p in pts])
        assert same(s["wall_time"], [p[0] / 1000 for p in pts])
    # merged across metric files in logged (time) order
    assert np.all(np.diff(run.scalars["wall_time"].to_numpy()) >= 0)
    assert not run.annotations


def test_mlflow_experiment_tree_names_and_resumed_metric(tmp_path):
    root = tmp_path / "mlruns"
    write_mlflow_run(root, "0", "r1", {"loss": [(1, 1.0, 0), (2, 0.5, 1)]})
    write_mlflow_run(root, "1", "r2", {"loss": [(1, 1.0, 0), (2, 0.5, 1), (3, 0.7, 0)]}, run_name="same")
    write_mlflow_run(root, "1", "r3", {"loss": [(1, 1.0, 0)]}, run_name="same")
    runs = discover(root)
    assert [r.name for r in runs] == ["0/r1", "1/r2", "1/r3"]  # shared run names fall back to paths
    r2 = runs[1]
    assert r2.series("loss")["step"].tolist() == [0, 1, 0]
    notes = {a.kind: a for a in r2.annotations}
    assert set(notes) == {"restart", "duplicate_steps"}  # step 0 again, with another value
    assert notes["restart"].location == "line 3" and notes["duplicate_steps"].location == "line 3"


def test_mlflow_run_in_a_sweep_is_named_by_its_path_and_run_name(tmp_path):
    """The opaque mlruns/<exp>/<run_id> part is replaced by the run's name; the path above stays,
    so two sweeps' runs with the same MLflow name stay apart."""
    from lrdoctor.readers import discover

    for sweep in ("lr_1e-3", "lr_1e-2"):
        write_mlflow_run(tmp_path / sweep / "mlruns", "0", f"id{sweep[-1]}", {"loss": [(1, 1.0, 0), (2, 0.5, 1)]},
                         run_name="baseline")
    names = sorted(r.name for r in discover(tmp_path))
    assert names == ["lr_1e-2/baseline", "lr_1e-3/baseline"]
