"""The 20 real logs in ../shared/real_logs (never copied into the repo) all read, with the tags,
point counts and roles their manifest describes. Skipped when the folder is absent."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from lrdoctor.readers import discover, supported_formats
from lrdoctor.roles import resolve_roles

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "real_logs"
pytestmark = [pytest.mark.real_logs,
              pytest.mark.skipif(not (REAL / "manifest.tsv").is_file(), reason="no ../shared/real_logs")]

FORMATS = {"tfevents": "tensorboard", "lightning_csv": "lightning_csv", "keras_csv": "keras_csv",
           "other_csv": "csv", "hf_trainer_state": "hf_trainer_state"}

# short_id -> (points per tag for the tags the manifest counts, roles that must resolve to these tags)
EXPECTED: dict[str, tuple[dict[str, int], dict[str, str]]] = {
    "tb01_bullseye_v15": ({"train_loss_step": 234, "val_loss": 17, "epoch": 268, "hp_metric": 1},
                          {"train_loss": "train_loss_step", "val_loss": "val_loss", "val_metric": "val_acc"}),
    "tb03_yolo_helmet_exp2": ({"train/obj_loss": 150, "val/obj_loss": 150, "x/lr0": 150},
                              {"train_loss": "train/box_loss", "val_loss": "val/box_loss", "lr": "x/lr0",
                               "val_metric": "metrics/mAP_0.5"}),
    "tb04_yolo_helmet_exp": ({"train/box_loss": 3, "metrics/mAP_0.5:0.95": 3}, {"lr": "x/lr0"}),
    "tb06_qbm_v16": ({"loss": 360, "quant_error": 360}, {"train_loss": "loss"}),
    "tb08_hf_lain": ({"train/loss": 6, "train/learning_rate": 6, "train/train_loss": 1},
                     {"train_loss": "train/loss", "lr": "train/learning_rate"}),
    "pl01_slm_v0_head": ({"train_loss_step": 2814, "val_loss": 10, "train_loss_epoch": 10},
                         {"train_loss": "train_loss_step", "val_loss": "val_loss"}),
    "pl03_slm_v12_old": ({"train_loss_step": 97, "val_loss": 17},
                         {"train_loss": "train_loss_step", "val_loss": "val_loss"}),
    "pl04_slm_v26_old": ({"train_loss_step": 45, "val_loss": 8},
                         {"train_loss": "train_loss_step", "val_loss": "val_loss"}),
    "pl06_pinn_v13": ({"mean_loss": 535}, {"train_loss": "mean_loss"}),
    "pl07_pinn_v19": ({"mean_loss": 800}, {"train_loss": "mean_loss"}),
    "pl09_pendulum_v28": ({"train_loss_step": 6400, "train_loss_epoch": 10000},
                          {"train_loss": "train_loss_step"}),
    "keras02_dm22_hsinhung": ({"loss": 50, "val_loss": 50},
                              {"train_loss": "loss", "val_loss": "val_loss", "val_metric": "val_accuracy"}),
    "keras03_aes_plateau": ({"loss": 38, "val_loss": 38, "learning_rate": 38},
                            {"train_loss": "loss", "val_loss": "val_loss", "lr": "learning_rate"}),
    "keras06_aes_cnn_healthy": ({"loss": 100, "val_loss": 100},
                                {"train_loss": "loss", "val_loss": "val_loss", "lr": "learning_rate"}),
    "csv02_cifar_numpy": ({"train_loss": 50, "val_acc": 50},
                          {"train_loss": "train_loss", "val_loss": "val_loss", "val_metric": "val_acc"}),
    "csv03_cs336_sparse_wide": ({"train/loss": 40, "eval/loss": 10, "summary/final_eval_loss": 1},
                                {"train_loss": "train/loss", "val_loss": "eval/loss",
                                 "grad_norm": "train/grad_norm_before_clip", "lr": "train/learning_rate"}),
    "hf02_jaong_cpt": ({"loss": 10, "eval_loss": 10, "predict_loss": 10, "train_loss": 1},
                       {"train_loss": "loss", "val_loss": "eval_loss", "grad_norm": "grad_norm",
                        "lr": "learning_rate"}),
    "hf04_kevin_compressor": ({"loss": 100, "grad_norm": 100},
                              {"train_loss": "loss", "grad_norm": "grad_norm", "lr": "learning_rate"}),
    "hf05_mt5_az_news": ({"loss": 700, "eval_loss": 70},
                         {"train_loss": "loss", "val_loss": "eval_loss", "lr": "learning_rate"}),
    "hf07_star_eagle_gradspikes": ({"loss": 2000, "grad_norm": 2000, "lr": 2000},
                                   {"train_loss": "loss", "grad_norm": "grad_norm", "lr": "lr"}),
}


def manifest() -> list[dict[str, str]]:
    with (REAL / "manifest.tsv").open(newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def manifest_tags(row: dict[str, str]) -> list[str] | None:
    """The manifest's tag list where it is a plain list (not prose)."""
    text = row["tags_or_columns"].split(" (")[0]
    if ":" in text and row["format"] != "tfevents" or text[:2].isdigit():
        return None
    tags = [t.strip() for t in text.split(",")]
    axis = {"lightning_csv": "step", "keras_csv": "epoch", "other_csv": "epoch"}.get(row["format"])
    return sorted(t for t in tags if t != axis)


@pytest.fixture(scope="module")
def runs():
    if "tensorboard" not in supported_formats():
        pytest.skip("TensorBoard reader not available yet")
    return {r.name: r for r in discover(REAL)}


def test_manifest_covers_expectations():
    # the folder grew from 20 to 37 logs; the later 17 are scored by benchmarks/detection_quality.py
    assert set(EXPECTED) <= {r["short_id"] for r in manifest()}


@pytest.mark.parametrize("short_id", sorted(EXPECTED))
def test_real_log_reads(short_id):
    row = next(r for r in manifest() if r["short_id"] == short_id)
    fmt = FORMATS[row["format"]]
    if fmt not in supported_formats():
        pytest.skip(f"{fmt} reader not available yet")
    [run] = discover(REAL / short_id, strict=True)
    assert run.name == short_id and run.format == fmt
    counts = run.scalars.groupby("tag").size().to_dict()
    want_counts, want_roles = EXPECTED[short_id]
    for tag, n in want_counts.items():
        assert counts.get(tag) == n, tag
    tags = manifest_tags(row)
    if tags is not None:
        assert sorted(run.tags) == tags
    roles = resolve_roles(run.tags)
    for role, tag in want_roles.items():
        assert roles.get(role) == tag, role
    # nothing silently replaced: every point of these files is finite as logged
    assert not [a for a in run.annotations if a.kind in ("non_numeric", "corrupt_record", "truncated")]


def test_whole_tree_at_once(runs):
    # every log of the tree is read in one discover (a log appended by several fits is several
    # runs, name#1, name#2, ...)
    ids = {r["short_id"] for r in manifest()}
    assert set(EXPECTED) <= set(runs) and {name.split("#")[0] for name in runs} == ids
