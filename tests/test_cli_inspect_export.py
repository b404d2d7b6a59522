"""``lrdoctor inspect`` and ``lrdoctor export`` through ``cli.main``."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from reader_fixtures import write_keras_csv, write_lightning_csv, write_trainer_state

from lrdoctor.cli import main
from lrdoctor.commands import inspect as inspect_mod
from lrdoctor.readers import supported_formats


@pytest.fixture()
def tree(tmp_path):
    rows = [{"train_loss_step": v, "epoch": 0, "step": i} for i, v in enumerate([2.0, float("nan"), 1.5, float("inf")])]
    rows.append({"val_loss": 1.7, "epoch": 0, "step": 3})
    write_lightning_csv(tmp_path / "logs" / "version_0", rows, hparams={"lr": 0.1})
    write_keras_csv(tmp_path / "logs" / "keras" / "training.log",
                    [{"loss": 1.0, "val_loss": 1.2}, {"loss": float("-inf"), "val_loss": 1.1}])
    write_trainer_state(tmp_path / "logs" / "hf" / "trainer_state.json",
                        [{"loss": 1.0, "grad_norm": 2.0, "learning_rate": 1e-4, "step": 5, "epoch": 0.5}],
                        global_step=5)
    return tmp_path / "logs"


def test_inspect_text(tree, capsys):
    assert main(["inspect", str(tree)]) == 0
    out = capsys.readouterr().out
    assert "run version_0" in out and "run keras" in out and "run hf" in out
    assert "lightning_csv" in out and "keras_csv" in out and "hf_trainer_state" in out
    assert "epochs      0 .. 1" in out
    assert "[1 nan, 1 inf]" in out
    assert "train_loss=train_loss_step" in out and "val_loss=val_loss" in out
    assert "grad_norm=grad_norm" in out and "lr=learning_rate" in out


def test_inspect_json_and_role_override(tree, capsys):
    assert main(["inspect", str(tree / "version_0"), "--json", "--role", "val_loss=train_loss_step"]) == 0
    [s] = json.loads(capsys.readouterr().out)
    assert s["name"] == "version_0" and s["format"] == "lightning_csv" and s["step_range"] == [0, 3]
    assert s["roles"]["val_loss"] == "train_loss_step" and s["hparams"] == 1
    tags = {t["tag"]: t for t in s["tags"]}
    assert tags["train_loss_step"] == {"tag": "train_loss_step", "points": 4, "nan": 1, "inf": 1,
                                       "first_step": 0, "last_step": 3}


def test_inspect_errors_exit_2(tree, tmp_path, capsys):
    assert main(["inspect", str(tree), "--role", "train_loss=nope"]) == 2
    assert "no run has a tag 'nope'" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["inspect", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"lrdoctor: error: no runs found under {tmp_path / 'empty'}"
    assert main(["inspect", str(tree), "--format", "nosuch"]) == 2
    assert "unknown format 'nosuch'" in capsys.readouterr().err


def test_inspect_help_lists_every_format():
    assert set(supported_formats()) <= set(inspect_mod.FORMATS)
    assert ", ".join(inspect_mod.FORMATS) in inspect_mod.inspect_cmd.help


def test_export_csv_round_trip(tree, tmp_path, capsys):
    out = tmp_path / "all.csv"
    assert main(["export", str(tree), "-o", str(out)]) == 0
    table = pd.read_csv(out)
    assert list(table.columns) == ["run", "tag", "step", "wall_time", "value", "step_axis"]
    from lrdoctor.readers import discover

    runs = discover(tree)
    assert len(table) == sum(len(r.scalars) for r in runs)
    for r in runs:
        mine = table[table["run"] == r.name]
        assert mine["tag"].tolist() == r.scalars["tag"].tolist()
        assert mine["step"].tolist() == r.scalars["step"].tolist()
        a, b = mine["value"].to_numpy(), r.scalars["value"].to_numpy()
        assert np.array_equal(a, b, equal_nan=True)
    text = out.read_text()
    for lit in ("nan", "inf", "-inf"):  # the value column, then step_axis
        assert re.search(rf",{lit},(step|epoch)\n", text), lit
    assert "wrote" in capsys.readouterr().err


def test_export_parquet(tree, tmp_path):
    pytest.importorskip("pyarrow")
    out = tmp_path / "all.parquet"
    assert main(["export", str(tree), "-o", str(out)]) == 0
    table = pd.read_parquet(out)
    assert table["value"].isna().sum() == 1 and np.isinf(table["value"]).sum() == 2


def test_export_bad_suffix(tree, tmp_path, capsys):
    assert main(["export", str(tree), "-o", str(tmp_path / "x.xlsx")]) == 2
    assert ".csv or .parquet" in capsys.readouterr().err


def _two_csv_runs(root):
    for name, tag in (("a", "my/loss"), ("b", "other/loss")):
        (root / name).mkdir(parents=True)
        (root / name / "log.csv").write_text(f"step,{tag}\n" + "".join(f"{i},{1.0 / (i + 1)}\n" for i in range(30)))


@pytest.mark.parametrize("cmd", ["inspect", "diagnose"])
def test_role_override_on_a_sweep_applies_where_the_tag_exists(tmp_path, capsys, cmd):
    _two_csv_runs(tmp_path)
    assert main([cmd, str(tmp_path), "--role", "train_loss=my/loss"]) == 0
    cap = capsys.readouterr()
    warned = [line for line in cap.err.splitlines() if "not applied" in line]
    assert len(warned) == 1 and "run b" in warned[0] and "'my/loss'" in warned[0]
    if cmd == "inspect":
        assert "train_loss=my/loss" in cap.out and "train_loss=other/loss" in cap.out


def test_errors_are_one_line_and_name_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("step,loss\n0,1.0\n1,0.5,7\n2,0.4\n")
    assert main(["inspect", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(bad) in err and "line 3" in err
    cfg = tmp_path / "roles.yaml"
    cfg.write_text("train_loss: [a\nval_loss: b\n")
    assert main(["inspect", str(bad), "--roles-config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(cfg) in err and "line " in err
    cfg.write_text("trian_loss: my/loss\n")
    assert main(["inspect", str(bad), "--roles-config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(cfg) in err and "'trian_loss'" in err and "--role" not in err
