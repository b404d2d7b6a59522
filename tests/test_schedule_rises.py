"""Healthy runs whose epoch-mean loss rises on purpose are not divergence; a bouncing one is.

The files are written by the real Keras CSVLogger (scripts/make_schedule_rise_fixtures.py): a
curriculum, a Mean Teacher consistency ramp, progressive resizing and a rising regularisation
schedule all lift the epoch means far above an early low (the median of the later epochs 1.5x
that low or more), then fall smoothly or hold; an LR far too high swings up and down instead.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lrdoctor.engine.diagnose import diagnose_runs
from lrdoctor.readers import discover

DATA = Path(__file__).parent / "data" / "keras_schedule_rises"


def _findings(name: str):
    [run] = discover(DATA / f"{name}.csv")
    assert run.format == "keras_csv" and run.step_axis == "epoch"
    [result] = diagnose_runs([run], proposals=False)
    return result.findings


@pytest.mark.parametrize("name", ["curriculum", "mean_teacher", "progressive_resizing", "rising_regularisation"])
def test_a_scheduled_rise_after_an_early_low_is_no_warning_or_error(name):
    loud = [(f.rule, f.severity) for f in _findings(name) if f.severity in ("warning", "error")]
    assert loud == []


def test_epoch_means_that_bounce_after_an_early_low_are_divergence():
    [div] = [f for f in _findings("bouncing_high_lr") if f.rule == "divergence"]
    assert div.severity == "error" and div.evidence["kind"] == "unstable"
    assert div.evidence["best_step"] == 1 and div.start_step == 2
    assert div.evidence["turns"] >= 6 and div.evidence["trend_after"] > -0.5
    assert "bounced between" in div.message and "turning" in div.message
