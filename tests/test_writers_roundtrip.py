"""Every writer's output reads back through lrdoctor's readers to the values the training produced.

One short real training per format, chosen to end in NaN (a diverging run) so NaN survives the
round trip too. Expected values come from the run's own history, transformed the way each tool
transforms them (float32 event files; HF's per-interval loss mean, 4-digit rounding and NaN
filter; Keras's per-epoch means on the epoch axis).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")
readers = pytest.importorskip("lrdoctor.readers")

from lrdoctor.origin import ORIGIN_FILE  # noqa: E402
from lrdoctor.roles import RoleView, series_of  # noqa: E402
from lrdoctor.workloads import WorkloadConfig  # noqa: E402
from lrdoctor.workloads.recipes import recipe_config  # noqa: E402
from lrdoctor.workloads.training import train  # noqa: E402
from lrdoctor.workloads.writers import FORMATS  # noqa: E402

#: format -> (train loss, grad norm, lr, val loss, val metric) tags as each writer names them
TAGS = {
    "tensorboard": ("train/loss", "train/grad_norm", "train/lr", "val/loss", "val/acc"),
    "tensorboardx": ("Loss/train", "grad_norm", "learning_rate", "Loss/val", "Accuracy/val"),
    "lightning_csv": ("train_loss", "grad_2.0_norm_total", "lr-SGD", "val_loss", "val_acc"),
    "hf_trainer_state": ("loss", "grad_norm", "learning_rate", "eval_loss", "eval_accuracy"),
    "keras_csv": ("loss", "grad_norm", "learning_rate", "val_loss", "val_accuracy"),
    "mlflow": ("train_loss", "grad_norm", "lr", "val_loss", "val_acc"),
    "jsonl": ("train_loss", "grad_norm", "lr", "val_loss", "val_acc"),
    "wandb": ("train/loss", "train/grad_norm", "train/lr", "val/loss", "val/acc"),
    "mlflow_sqlite": ("train_loss", "grad_norm", "lr", "val_loss", "val_acc"),
    "text": ("loss", "grad_norm", "lr", "val loss", "val acc"),
}
#: formats written through a tracker package (skipped where it is not installed)
PACKAGE = {"wandb": "wandb", "mlflow_sqlite": "mlflow"}
FLOAT32 = {"tensorboard", "tensorboardx"}


def config(fmt: str) -> WorkloadConfig:
    # Reaches NaN before step 100 with these settings; HF logs every 3 steps to exercise its averaging.
    return recipe_config("divergence", "mlp_regressor", 0, lr=10.0, max_steps=100, eval_every=10, epoch_steps=10,
                         log_every=3 if fmt == "hf_trainer_state" else 1, num_threads=1)


@pytest.fixture(scope="module", params=FORMATS)
def written(request, tmp_path_factory):
    fmt = request.param
    if fmt in PACKAGE:
        pytest.importorskip(PACKAGE[fmt])
    d = tmp_path_factory.mktemp(fmt)
    res = train(config(fmt), d, fmt, device="cpu")
    runs = readers.discover(d)
    return fmt, res, runs


def expected(fmt: str, res) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    h, cfg = res.history, res.config
    tl, gn, lr, vl, vm = TAGS[fmt]
    out = {vl: (h.eval_steps, h.val_loss), vm: (h.eval_steps, h.val_metric)}
    if fmt == "keras_csv":
        epoch = (h.steps - 1) // cfg.epoch_steps
        eps = np.unique(epoch)
        out = {
            tl: (eps, np.array([h.train_loss[epoch == e].mean() for e in eps])),
            gn: (eps, np.array([h.grad_norm[epoch == e].mean() for e in eps])),
            lr: (eps, np.array([h.lr[epoch == e][-1] for e in eps])),
        }
        # the val columns carry the latest eval at each epoch end
        last_eval = [np.nonzero(h.eval_steps <= (e + 1) * cfg.epoch_steps)[0] for e in eps]
        out[vl] = (eps, np.array([h.val_loss[i[-1]] if len(i) else np.nan for i in last_eval]))
        return out
    every = cfg.log_every
    sel = h.steps % every == 0
    out[gn] = (h.steps[sel], h.grad_norm[sel])
    out[lr] = (h.steps[sel], h.lr[sel])
    if fmt == "hf_trainer_state":
        losses, acc = [], []
        for x in h.train_loss:  # Trainer's logging_nan_inf_filter + interval mean, rounded to 4 digits
            acc.append(x if np.isfinite(x) else (np.mean(acc) if acc else 0.0))
            if len(losses) * every + len(acc) == (len(losses) + 1) * every:
                losses.append(round(float(np.mean(acc)), 4))
                acc = []
        out[tl] = (h.steps[sel], np.array(losses))
    else:
        out[tl] = (h.steps[sel], h.train_loss[sel])
    return out


def test_one_run_with_its_origin(written):
    fmt, res, runs = written
    assert len(runs) == 1
    run = runs[0]
    assert run.origin is not None and run.origin["format"] == fmt
    assert WorkloadConfig.from_dict(run.origin["config"]) == res.config
    assert run.origin["labels"] and run.origin["labels"][0]["rule"] == "divergence"
    assert run.step_axis == ("epoch" if fmt == "keras_csv" else "step")


def printed(fmt: str, tag: str, values: np.ndarray) -> np.ndarray:
    """Values as the text writer prints them (``:.4f``, the LR ``:.4e``)."""
    if fmt != "text":
        return values
    spec = ".4e" if tag == "lr" else ".4f"
    return np.array([float(format(v, spec)) for v in values])


def test_values_round_trip(written):
    fmt, res, runs = written
    assert np.isnan(res.history.train_loss).any()  # the run did diverge, so NaN is in the logs
    scalars = runs[0].scalars
    for tag, (steps, values) in expected(fmt, res).items():
        values = printed(fmt, tag, values)
        s = series_of(scalars, tag)
        assert np.array_equal(s.steps, steps), (fmt, tag)
        want = values.astype(np.float32).astype(np.float64) if fmt in FLOAT32 else values
        np.testing.assert_allclose(s.values, want, rtol=1e-12, atol=0, equal_nan=True, err_msg=f"{fmt} {tag}")


def test_roles_resolve_to_the_written_tags(written):
    fmt, _, runs = written
    roles = RoleView.of(runs[0]).roles
    names = ("train_loss", "grad_norm", "lr", "val_loss", "val_metric")
    assert {r: roles.get(r) for r in names} == dict(zip(names, TAGS[fmt], strict=True))


def test_origin_file_is_valid_json(written):
    fmt, res, _ = written
    origin = json.loads((__import__("pathlib").Path(res.logdir) / ORIGIN_FILE).read_text())
    assert origin["workload"] == "mlp_regressor" and origin["step_axis"] in ("step", "epoch")
