"""MLflow SQLite store (``mlflow.db``) written by mlflow itself with its default tracking URI.

The fixture is committed (tests/data/mlflow_sqlite, made by scripts/make_tracker_fixtures.py with
mlflow 3.17: creating a store runs ~60 schema migrations, too slow for every test session);
expected.json holds what the script passed to ``mlflow.log_metric``/``log_params``.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lrdoctor.cli import main
from lrdoctor.readers import discover, find_run_sources

DATA = Path(__file__).parent / "data" / "mlflow_sqlite"
DB = DATA / "mlflow.db"
SPECS = json.loads((DATA / "expected.json").read_text())


def test_every_run_and_point_as_logged():
    runs = discover(DB)
    assert len(runs) == len(SPECS)
    by_name = {r.name: r for r in runs}
    # two runs share the name "healthy-adam" (same experiment): told apart by their store path
    names = sorted(by_name)
    assert sum(n.endswith("/sgd-lr-0.5") for n in names) == 1
    for spec in SPECS:
        # params are logged as text; numbers among them are read as numbers
        matches = [r for r in runs if {k: str(v) for k, v in r.hparams.items()} == spec["params"]]
        [run] = matches
        assert run.format == "mlflow_sqlite" and sorted(run.tags) == sorted(spec["metrics"])
        for key, pts in spec["metrics"].items():
            s = run.series(key)
            assert s["step"].tolist() == [p[0] for p in pts]
            want = np.array([float(p[1]) for p in pts])
            assert np.array_equal(s["value"].to_numpy(), want, equal_nan=True), key


def test_nan_and_inf_come_back_as_logged(tmp_path):
    # MLflow stores NaN as 0 + is_nan and clamps inf to DBL_MAX; the reader undoes both
    db = tmp_path / "mlflow.db"
    shutil.copy(DB, db)
    con = sqlite3.connect(db)
    uuid = con.execute("SELECT run_uuid FROM runs WHERE name = 'sgd-lr-0.5'").fetchone()[0]
    con.execute("INSERT INTO metrics VALUES ('grad_norm', 1.7976931348623157e308, 1, ?, 7, 0)", (uuid,))
    con.execute("INSERT INTO metrics VALUES ('grad_norm', -1.7976931348623157e308, 2, ?, 8, 0)", (uuid,))
    con.execute("INSERT INTO metrics VALUES ('grad_norm', 0, 3, ?, 9, 1)", (uuid,))
    con.commit()
    con.close()
    [run] = [r for r in discover(db) if r.name.endswith("sgd-lr-0.5")]
    s = run.series("grad_norm")
    assert s["step"].tolist() == [7, 8, 9]
    assert s["value"].iloc[0] == np.inf and s["value"].iloc[1] == -np.inf and np.isnan(s["value"].iloc[2])


def test_names_like_file_store_runs(tmp_path):
    sweep = tmp_path / "sweep" / "lr"
    sweep.mkdir(parents=True)
    shutil.copy(DB, sweep / "mlflow.db")
    names = [s.name for s in find_run_sources(tmp_path / "sweep")]
    assert "lr/sgd-lr-0.5" in names
    # the two "healthy-adam" runs of experiment "baseline" cannot both be "lr/baseline/healthy-adam"
    assert sum(n.startswith("lr/baseline/") for n in names) == 2 and len(set(names)) == 3


def test_store_is_opened_read_only_and_never_changed(tmp_path):
    db = tmp_path / "mlflow.db"
    shutil.copy(DB, db)
    before = db.read_bytes()
    os.chmod(db, 0o444)
    os.chmod(tmp_path, 0o555)  # (for a non-root user) no journal file could be created either
    try:
        runs = discover(db)
    finally:
        os.chmod(tmp_path, 0o755)
    assert len(runs) == len(SPECS)
    assert db.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]


def test_deleted_runs_are_not_read(tmp_path):
    db = tmp_path / "mlflow.db"
    shutil.copy(DB, db)
    con = sqlite3.connect(db)
    con.execute("UPDATE runs SET lifecycle_stage = 'deleted' WHERE name = 'sgd-lr-0.5'")
    con.commit()
    con.close()
    assert not any(r.name.endswith("sgd-lr-0.5") for r in discover(db))


def test_not_an_mlflow_database_is_not_taken_for_one(tmp_path, capsys):
    other = tmp_path / "optuna.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE trials (id INTEGER)")
    con.commit()
    con.close()
    assert main(["inspect", str(other)]) == 2
    assert "not a log format" in capsys.readouterr().err


def test_diagnose_store_with_several_experiments_flags_the_diverging_run(capsys):
    main(["diagnose", str(DB), "--json"])
    doc = json.loads(capsys.readouterr().out)
    findings = {r["name"]: {f["rule"] for f in r["findings"]} for r in doc["runs"]}
    assert len(findings) == 3
    [div] = [n for n in findings if n.endswith("sgd-lr-0.5")]
    assert "divergence" in findings[div]
    assert all("divergence" not in f for n, f in findings.items() if n != div)


def test_timestamps_and_nan_flags_exact_and_damaged_cells_refused(tmp_path, capsys):
    # timestamp and is_nan travel packed in one integer (timestamp * 2 + is_nan): every timestamp
    # sign and size MLflow can hold comes back exactly, and a cell that cannot pack is an error
    db = tmp_path / "mlflow.db"
    shutil.copy(DB, db)
    con = sqlite3.connect(db)
    uuid = con.execute("SELECT run_uuid FROM runs WHERE name = 'sgd-lr-0.5'").fetchone()[0]
    times = [-(2**61) + 1, -3, 0, 2**53 + 1, 2**61 - 1]
    for i, t in enumerate(times):
        con.execute("INSERT INTO metrics VALUES ('clock', ?, ?, ?, ?, ?)", (float(i), t, uuid, i, i % 2))
    con.commit()
    con.close()
    [run] = [r for r in discover(db) if r.name.endswith("sgd-lr-0.5")]
    s = run.series("clock")
    assert s["step"].tolist() == list(range(len(times)))
    assert np.isnan(s["value"].to_numpy()).tolist() == [i % 2 == 1 for i in range(len(times))]
    assert s["value"].iloc[0::2].tolist() == [0.0, 2.0, 4.0]
    assert s["wall_time"].tolist() == [t / 1000.0 for t in times]
    for bad in ("'12:00'", str(2**61), "2"):
        broken = tmp_path / f"broken-{len(bad)}.db"
        shutil.copy(db, broken)
        con = sqlite3.connect(broken)
        con.execute("PRAGMA ignore_check_constraints = 1")  # a damaged store breaks them too
        column = "is_nan" if bad == "2" else "timestamp"
        con.execute(f"UPDATE metrics SET {column} = {bad} WHERE key = 'clock' AND step = 2")
        con.commit()
        con.close()
        assert main(["inspect", str(broken)]) == 2, bad
        err = capsys.readouterr().err
        assert "cannot read the MLflow database" in err and str(broken) in err and "Traceback" not in err


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=40),
       times=st.lists(st.integers(-(2**61) + 1, 2**61 - 1), min_size=40, max_size=40))
def test_random_doubles_and_timestamps_come_back_exactly(tmp_path_factory, values, times):
    # every finite double SQLite holds (subnormals, DBL_MAX's neighbours) and every packable
    # timestamp, as stored
    db = tmp_path_factory.mktemp("h") / "mlflow.db"
    shutil.copy(DB, db)
    con = sqlite3.connect(db)
    uuid = con.execute("SELECT run_uuid FROM runs WHERE name = 'sgd-lr-0.5'").fetchone()[0]
    con.executemany("INSERT INTO metrics VALUES ('h', ?, ?, ?, ?, 0)",
                    [(v, times[i], uuid, i) for i, v in enumerate(values)])
    con.commit()
    con.close()
    [run] = [r for r in discover(db) if r.name.endswith("sgd-lr-0.5")]
    s = run.series("h").sort_values("step")
    got = s["value"].to_numpy()
    want = np.array([np.inf if v == sys.float_info.max else -np.inf if v == -sys.float_info.max else v
                     for v in values])
    assert np.array_equal(got, want)
    nonzero = want != 0  # SQLite itself stores -0.0 as the integer 0
    assert got[nonzero].tobytes() == want[nonzero].tobytes()  # bit for bit: subnormals too
    assert s["wall_time"].tolist() == [t / 1000.0 for t in times[:len(values)]]
