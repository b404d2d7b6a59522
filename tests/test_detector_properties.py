"""Hypothesis properties of the detectors, run through the real rules (defaults from rules/)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lrdoctor.engine.runner import run_rule
from lrdoctor.engine.spec import apply_overrides, load_rules
from lrdoctor.model import Finding, Run, make_scalars
from lrdoctor.roles import RoleView

RULES = {r.name: r for r in load_rules()}
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _run(values, steps=None, role: str = "train_loss") -> RoleView:
    values = np.asarray(values, dtype=np.float64)
    steps = np.arange(len(values)) if steps is None else steps
    return RoleView.of(Run("p", "p", "test", make_scalars(role, steps, None, values)))


def _where(out):
    """What a finding says, minus the numbers that scale with the loss."""
    if not isinstance(out, Finding):
        return out
    return (out.rule, out.start_step, out.end_step, out.steps, out.evidence.get("kind"))


# Loss-like curves: an exponential decay to a floor, noise, optional spikes, optional flat start.
# Values live on a 1/1024 grid so that shifting by an integer is exact in floating point: the
# property is about the detectors, not about rounding.
@st.composite
def curves(draw):
    n = draw(st.integers(min_value=3, max_value=400))
    seed = draw(st.integers(min_value=0, max_value=2**31 - 1))
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float64)
    amp = draw(st.floats(min_value=0.0, max_value=8.0))
    tau = draw(st.floats(min_value=2.0, max_value=500.0))
    floor = draw(st.floats(min_value=0.0, max_value=4.0))
    noise = draw(st.floats(min_value=0.0, max_value=0.5))
    x = amp * np.exp(-t / tau) + floor + noise * rng.standard_normal(n)
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        x[rng.integers(0, n)] += draw(st.floats(min_value=0.0, max_value=20.0))
    return np.round(x * 1024) / 1024


#: plateau with its relative-change, dip and chance-level tests off (all three use the loss's own
#: zero: "30% below the start" is a share of the level, and a curve shifted by 2 lands near ln 8):
#: what is left (noise units) is shift-invariant. A curve that crosses zero skips the relative tests
#: by itself, so without these overrides the same curve shifted above zero meets tests it did not.
PLATEAU_NOISE_ONLY = apply_overrides(
    [RULES["plateau"]], {"plateau": {"flat_relative_change": 0.0, "max_relative_change": float("inf"),
                                     "dip_relative_change": 0.0, "chance_max_classes": 0,
                                     "transient_max_rise": float("inf"), "transient_max_fall": 1.0}}
)[0]
#: loss-spike with its ratio tests off (log domain, and the >= 3x "big enough" of a positive
#: loss): both use the loss's own zero, so what is left is shift-invariant.
SPIKE_NOISE_ONLY = apply_overrides(
    [RULES["loss-spike"]], {"loss-spike": {"log_domain_decades": float("inf"), "min_ratio_log_domain": float("inf")}}
)[0]

#: plateau without its chance-level test (ln k is an absolute level, not scale-invariant).
PLATEAU_NO_CHANCE = apply_overrides([RULES["plateau"]], {"plateau": {"chance_max_classes": 0}})[0]


@SETTINGS
@given(x=curves(), shift=st.integers(min_value=-50, max_value=1000), log2_scale=st.integers(min_value=-20, max_value=20))
def test_spike_and_plateau_invariant_to_shift_and_scale(x, shift, log2_scale):
    scale = 2.0**log2_scale  # exact in floating point
    for rule in (SPIKE_NOISE_ONLY, PLATEAU_NOISE_ONLY):
        base = _where(run_rule(rule, _run(x)))
        assert _where(run_rule(rule, _run(x + shift))) == base, rule.name
        assert _where(run_rule(rule, _run(x * scale))) == base, rule.name


@SETTINGS
@given(x=curves(), log2_scale=st.integers(min_value=-20, max_value=20))
def test_plateau_and_spike_invariant_to_scale(x, log2_scale):
    """The full plateau and loss-spike rules measure ratios against the loss's own zero: scaling
    keeps them, shifting (deliberately) does not -- see the detectors' docs. Plateau's chance-level
    test (a loss sitting at ln k) compares with an absolute level on purpose, so it is off here and
    tested on its own (tests/test_failure_kinds.py)."""
    for rule in (PLATEAU_NO_CHANCE, RULES["loss-spike"]):
        base = _where(run_rule(rule, _run(x)))
        assert _where(run_rule(rule, _run(x * 2.0**log2_scale))) == base, rule.name


@SETTINGS
@given(level=st.floats(min_value=1e-6, max_value=1e25), n=st.integers(min_value=20, max_value=400),
       seed=st.integers(min_value=0, max_value=2**31 - 1))
def test_positive_loss_within_a_tenth_of_a_percent_is_a_plateau(level, n, seed):
    """A positive loss that changes by < 0.1% over the run never moved, however smooth it is
    (a PINN stuck at 3.8e25, a classifier at ln 2)."""
    rng = np.random.default_rng(seed)
    x = level * (1 - 0.0005 * np.arange(n) / n + 1e-5 * rng.standard_normal(n))
    out = run_rule(RULES["plateau"], _run(x))
    assert isinstance(out, Finding) and out.evidence["kind"] == "never_moves"


@SETTINGS
@given(
    start=st.floats(min_value=-1e6, max_value=1e26, allow_nan=False),
    decrements=st.lists(st.floats(min_value=0.0, max_value=1e24, allow_nan=False), min_size=1, max_size=300),
)
def test_monotonically_decreasing_loss_never_diverges(start, decrements):
    x = start - np.cumsum(decrements)
    assume(np.all(np.isfinite(x)))
    assert run_rule(RULES["divergence"], _run(x)) is None


@SETTINGS
@given(
    x=curves(),
    where=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
    bad=st.sampled_from([np.nan, np.inf, -np.inf]),
)
def test_nonfinite_loss_always_diverges(x, where, bad):
    i = int(where * len(x))
    x = x.copy()
    x[i] = bad
    out = run_rule(RULES["divergence"], _run(x))
    # the onset is the NaN, or earlier when the loss was already blowing up before it
    assert isinstance(out, Finding) and out.start_step <= i and i in out.steps


@SETTINGS
@given(x=curves(), seed=st.integers(min_value=0, max_value=1000))
def test_repeated_steps_of_a_resume_do_not_crash_any_rule(x, seed):
    """A resumed run re-logs a stretch of steps: every rule returns a Finding or None."""
    n = len(x)
    rng = np.random.default_rng(seed)
    a = int(rng.integers(0, n))
    steps = np.concatenate([np.arange(n), np.arange(a, n)])
    values = np.concatenate([x, x[a:] * 0.9])
    frames = [make_scalars(role, steps, None, values) for role in ("train_loss", "val_loss", "grad_norm", "lr")]
    view = RoleView.of(Run("r", "r", "test", pd.concat(frames, ignore_index=True)))
    for rule in RULES.values():
        out = run_rule(rule, view)
        assert out is None or isinstance(out, Finding), out


def test_a_blow_up_by_35_decades_reads_as_a_number():
    """A loss that went from 0.31 to 5e34 (a Lightning run at LR x400) is "1.7e+35x its best",
    not a 36-digit fixed-point ratio."""
    rng = np.random.default_rng(0)
    x = np.r_[2.0 * np.exp(-np.arange(60) / 15) + 0.3 + 0.01 * rng.standard_normal(60),
              np.geomspace(1.0, 5e34, 12), np.full(20, 5e34)]
    out = run_rule(RULES["divergence"], _run(x))
    assert isinstance(out, Finding)
    text = out.message + " " + str(out.evidence.get("detail", ""))
    assert "its best" in text and "e+3" in text, text
    assert not re.search(r"\d{12,}", text), text
