"""An LR logged as float32 (torch's SummaryWriter) is shown and proposed at the precision it was
logged with: 0.03 is 0.029999999329447746 in float32, and floored to two digits it read 0.029."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tb_writers import write_torch

from lrdoctor.api import diagnose
from lrdoctor.proposals.common import as_logged
from lrdoctor.readers import discover


def _diverging_at_a_jump(lr_before: float) -> dict:
    """A healthy loss at a constant LR, then LR 1.0 from step 150 and the loss climbs."""
    loss = [(s, 2.0 * math.exp(-s / 40) + 0.2 if s < 150 else 6.0 * 1.05 ** (s - 150)) for s in range(300)]
    lr = [(s, lr_before if s < 150 else 1.0) for s in range(300)]
    return {"train/loss": loss, "train/lr": lr}


@pytest.mark.parametrize("writer", [{}, {"new_style": True, "double_precision": True}],
                         ids=["float32 simple_value", "float64 tensor"])
def test_lowered_peak_from_a_float32_lr_is_the_lr_that_was_set(tmp_path, writer):
    write_torch(tmp_path / "run", _diverging_at_a_jump(0.03), **writer)

    [run] = discover(tmp_path / "run")
    logged = run.series("train/lr")["value"].to_numpy()[0]
    assert logged == (0.03 if writer else float(np.float32(0.03)))  # the file holds what the writer wrote
    [result] = diagnose(tmp_path / "run")
    [finding] = [f for f in result.findings if f.rule == "divergence"]
    [lower] = [p for p in finding.proposals if p.kind == "lower_peak_lr"]
    assert lower.summary == "lower peak LR 1 → 0.03"
    assert dict(lower.config) == {"lr": 0.03} and "PEAK_LR = 0.03\n" in lower.code
    assert "0.03 at step" in lower.rationale and "0.029" not in lower.rationale + lower.code


@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_a_float32_is_shown_as_its_shortest_decimal_and_stays_the_same_float32(x):
    got = as_logged(float(x))
    assert np.float32(got) == np.float32(x)
    assert float(f"{got:.9g}") == got  # at most 9 significant digits: all a float32 holds


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_a_float64_that_is_no_float32_is_left_alone(x):
    if float(np.float32(x)) != x:
        assert as_logged(x) == x


def test_as_logged_examples():
    assert as_logged(float(np.float32(0.01))) == 0.01 and as_logged(float(np.float32(3e-4))) == 3e-4
    assert as_logged(0.1) == 0.1 and as_logged(None) is None and as_logged(0.0) == 0.0
    assert math.isnan(as_logged(math.nan)) and as_logged(math.inf) == math.inf
