"""Streaming screens (lrdoctor.detectors.screens) are exact: whenever one says its detector cannot
fire, the detector run on the same prefix finds nothing. Checked on every prefix (in strides) of
the sample logs and of curves made to sit near the thresholds, and both ways: the screens must
also let through the prefixes where the detector does fire."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lrdoctor.api import load_runs
from lrdoctor.engine.registry import detector_info, get_detector
from lrdoctor.engine.spec import load_rules
from lrdoctor.model import Series
from lrdoctor.roles import RoleView

SAMPLES = Path(__file__).resolve().parents[1] / "sample_logs"
SCREENED = ("divergence", "exploding-gradients")


def _rules():
    return {r.name: r for r in load_rules() if r.name in SCREENED}


def _curves(seed: int, n: int = 300) -> dict[str, np.ndarray]:
    """A falling loss and its grad norm, with what the two detectors look for close to their
    thresholds: loss blow-ups of 2-20x its best (some to NaN), grad-norm jumps of 3-30x, zeros."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    loss = 2.0 * np.exp(-t / rng.uniform(30, 200)) + rng.uniform(0.05, 0.5)
    loss *= np.exp(rng.normal(0, rng.uniform(0.01, 0.3), n))
    grad = np.exp(rng.normal(0, rng.uniform(0.05, 0.6), n)) * rng.uniform(0.1, 5)
    kind = seed % 6
    at = int(rng.integers(20, n - 20))
    if kind == 1:  # sustained blow-up by a factor near the 5x threshold
        loss[at:] *= rng.uniform(2.0, 20.0)
    elif kind == 2:  # grad-norm bursts near the 10x ratio
        for i in rng.integers(5, n, 4):
            grad[i] *= rng.uniform(3.0, 30.0)
    elif kind == 3:  # non-finite values
        loss[at] = np.nan if seed % 2 else np.inf
        grad[rng.integers(0, n)] = np.inf
    elif kind == 5:  # a collapse: back 60-100% of the way to the early level, for good
        loss[at:] = loss[at:] + rng.uniform(0.6, 1.0) * (loss[0] - loss[at])
    elif kind == 4:  # a loss that touches zero, a grad norm with zeros
        loss[at:] = np.maximum(loss[at:] - loss[at], 0.0)
        grad[rng.integers(0, n, 5)] = 0.0
    return {"train_loss": loss, "grad_norm": grad}


def _sample_curves():
    for run in load_runs(SAMPLES):
        view = RoleView.of(run)
        out = {role: view.deduped(role) for role in ("train_loss", "grad_norm")}
        if out["train_loss"] is not None or out["grad_norm"] is not None:
            yield run.name, {r: s for r, s in out.items() if s is not None}


def _check_prefixes(name: str, curves: dict[str, Series], tally: dict[str, list[int]]) -> None:
    """Feed each screened rule's screen the curves in chunks; at each prefix compare with the detector."""
    for rule in _rules().values():
        fn = get_detector(rule.kind)
        params = {**detector_info(rule.kind).params, **rule.params}
        screen = fn.__lrdoctor_screen__(params)
        n = max(len(s) for s in curves.values())
        fed = dict.fromkeys(curves, 0)
        stride = max(1, n // 80)
        for end in [*range(1, n, stride), n]:
            prefix = {}
            for role, s in curves.items():
                k = int(np.searchsorted(s.steps, s.steps[min(end, len(s)) - 1], side="right")) if end <= len(s) else len(s)
                if role in screen.roles:
                    screen.feed(role, s.values[fed[role]:k].tolist())
                    fed[role] = k
                prefix[role] = Series(s.tag, s.steps[:k], s.values[:k])
            args = {r: prefix[r] for r in detector_info(rule.kind).roles if r in prefix}
            if any(r not in args or len(args[r]) == 0 for r in rule.requires):
                continue
            quiet = screen.quiet({})
            found = fn(**args, **rule.params)
            assert not (quiet and found is not None), (name, rule.name, end, found)
            tally[rule.name][0 if quiet else (1 if found is None else 2)] += 1


@pytest.fixture(scope="module")
def tally():
    return {name: [0, 0, 0] for name in SCREENED}  # quiet, let through (nothing found), let through (found)


def test_screens_never_hide_a_finding_on_the_sample_logs(tally):
    runs = list(_sample_curves())
    assert len(runs) >= 8
    for name, curves in runs:
        _check_prefixes(name, curves, tally)


def test_screens_never_hide_a_finding_near_the_thresholds(tally):
    for seed in range(60):
        curves = {role: Series(role, np.arange(1, len(v) + 1), v) for role, v in _curves(seed).items()}
        _check_prefixes(f"seed {seed}", curves, tally)
    for rule, (quiet, through, found) in tally.items():
        # not vacuous: most prefixes are screened out, and the findings were there to hide
        assert quiet > through, (rule, tally[rule])
        assert found >= 20, (rule, tally[rule])



def test_a_subnormal_loss_is_never_screened_out():
    """Below the smallest normal float the screens' margins round away: the detector judges it."""
    rule = _rules()["divergence"]
    fn = get_detector(rule.kind)
    params = {**detector_info(rule.kind).params, **rule.params}
    x = np.array([1e-323] * 40 + [5e-323] * 60)
    screen = fn.__lrdoctor_screen__(params)
    screen.feed("train_loss", x.tolist())
    assert fn(train_loss=Series("l", np.arange(100), x), **rule.params) is not None
    assert not screen.quiet({})
