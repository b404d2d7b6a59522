"""The failure kinds found on real public logs (issue 15), each on a file written by a real writer
(torch's SummaryWriter, Lightning's CSVLogger, a Keras-style CSVLogger file), diagnosed end to end.
The curves are generated here with the shapes seen on the real logs (which are never copied)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lrdoctor.api import diagnose
from tests.tb_writers import write_torch


def _rules(path: Path) -> dict[str, object]:
    (d,) = diagnose(path)
    return {f.rule: f for f in d.findings}


def _lightning_csv(tmp_path: Path, rows: list[tuple[int, dict[str, float]]]) -> Path:
    from lightning.pytorch.loggers import CSVLogger

    logger = CSVLogger(str(tmp_path), name="run")
    for step, metrics in rows:
        logger.log_metrics(metrics, step=step)
    logger.save()
    return Path(logger.log_dir)


def test_spike_on_a_loss_spanning_decades_is_found(tmp_path):
    # a physics-informed loss falling 1e10 -> 1e4 with multiplicative noise; a 50x jump late in
    # the run is invisible on a linear scale (the early values set the noise and the range)
    rng = np.random.default_rng(0)
    t = np.arange(600)
    loss = 10.0 ** (10 - 6 * t / 600) * np.exp(0.1 * rng.standard_normal(600))
    loss[450] *= 50
    loss[451] *= 8
    logdir = _lightning_csv(tmp_path, [(int(i), {"mean_loss": float(v)}) for i, v in zip(t, loss, strict=True)])
    found = _rules(logdir)
    assert "loss-spike" in found and found["loss-spike"].steps == (450,), found
    assert found["loss-spike"].evidence["log_domain"] is True


def test_spike_that_decays_back_is_a_spike_not_divergence(tmp_path):
    # x7000 jump at step 600 that decays back over ~200 steps to the end of the run, still a few
    # times its old level there: the loss did not "rise and stay there"
    rng = np.random.default_rng(1)
    t = np.arange(800)
    late = np.clip(t - 600, 0, None)
    loss = 0.02 * (1 + 0.05 * rng.standard_normal(800))
    loss = loss + np.where(t >= 600, 140.0 * np.exp(-late / 15.0) + 0.3 * np.exp(-late / 300.0), 0.0)
    write_torch(tmp_path, {"train/loss": list(zip(t.tolist(), loss.tolist(), strict=True))})
    found = _rules(tmp_path)
    assert "divergence" not in found, found["divergence"].message
    assert found["loss-spike"].steps == (600,)


def test_spikes_before_a_final_divergence_are_reported_beside_it(tmp_path):
    # two blow-ups that recover, then a third that ends in NaN: the user hears both stories
    rng = np.random.default_rng(2)
    t = np.arange(800)
    loss = 1.0 * np.exp(-t / 300) + 0.2 + 0.01 * rng.standard_normal(800)
    loss[300], loss[301] = 6.0, 2.0
    loss[500], loss[501] = 9.0, 3.0
    loss[770:780] = np.geomspace(1.0, 1e4, 10)
    loss[780:] = np.nan
    write_torch(tmp_path, {"loss": list(zip(t.tolist(), loss.tolist(), strict=True))})
    found = _rules(tmp_path)
    assert "divergence" in found
    assert found["loss-spike"].steps == (300, 500)
