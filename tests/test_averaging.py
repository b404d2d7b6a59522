"""Which series are epoch means, and over how many steps (lrdoctor.averaging)."""

from __future__ import annotations

import numpy as np

from lrdoctor.averaging import steps_per_point
from lrdoctor.model import Series


def _s(tag: str, steps) -> Series:
    steps = np.asarray(steps, dtype=np.int64)
    return Series(tag, steps, np.ones(len(steps)))


def test_epoch_tags_average_their_step_spacing_and_samples_do_not():
    ends = [e * 50 + 49 for e in range(10)]
    assert steps_per_point(_s("grad_norm_epoch", ends)) == 50  # Lightning on_epoch: <name>_epoch
    assert steps_per_point(_s("train/epoch_loss", ends)) == 50  # Keras TensorBoard: epoch_<name>
    assert steps_per_point(_s("grad_norm", ends)) == 1  # HF logs one step's norm every 50 steps
    # Lightning on_step=False, on_epoch=True keeps the bare name: one point per epoch of the epoch tag
    epoch = Series("epoch", np.asarray(ends, dtype=np.int64), np.arange(10, dtype=np.float64))
    assert steps_per_point(_s("grad_norm", ends), epoch=epoch) == 50
    two_per_epoch = Series("epoch", np.arange(0, 500, 25, dtype=np.int64), np.repeat(np.arange(10.0), 2))
    assert steps_per_point(_s("grad_norm", range(0, 500, 25)), epoch=two_per_epoch) == 1


def test_epoch_indexed_logs_need_the_steps_per_epoch_from_hparams():
    assert steps_per_point(_s("loss", range(30)), step_axis="epoch") == 1  # unknown: per-step thresholds
    assert steps_per_point(_s("loss", range(30)), step_axis="epoch", steps_per_epoch=391) == 391
