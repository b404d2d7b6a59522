"""Statistics and verdict logic of the verification harness."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from lrdoctor.errors import VerifyError
from lrdoctor.model import Proposal, VerdictKind
from lrdoctor.verify.protocol import VerifyConfig, budget_for
from lrdoctor.verify.stats import finite_scores, fisher_symptom, paired_target, smoothed_final
from lrdoctor.verify.verdict import ArmResult, decide, lowers_lr


def test_fisher_exact_one_sided_values():
    # 5/5 vs 0/5: the only more extreme table is itself, p = 1 / C(10, 5)
    assert fisher_symptom([True] * 5, [False] * 5).p_value == pytest.approx(1 / 252)
    # 4/5 vs 0/5 -> p = C(5,4) / C(10,4)
    assert fisher_symptom([True] * 4 + [False], [False] * 5).p_value == pytest.approx(5 / 210)
    # 3/5 vs 0/5 cannot reach 0.05 (why the baseline must reproduce in most seeds)
    assert fisher_symptom([True] * 3 + [False] * 2, [False] * 5).p_value > 0.05
    # no difference: p = 1
    assert fisher_symptom([True] * 5, [True] * 5).p_value == pytest.approx(1.0)


def test_paired_wilcoxon_floor_and_direction():
    base = [1.0, 1.1, 0.9, 1.05, 0.95]
    better = [b - 0.2 - 0.01 * i for i, b in enumerate(base)]
    t = paired_target(base, better)
    assert t.p_less == pytest.approx(1 / 32)  # exact one-sided floor with 5 pairs
    assert t.p_greater > 0.9
    assert t.ci[1] < 0 and t.p_better == pytest.approx(1.0)
    t3 = paired_target(base[:3], better[:3])
    assert t3.p_less == pytest.approx(1 / 8)  # 3 seeds can never reach 0.05


def test_nonfinite_scores_rank_worst_and_bootstrap_stays_finite():
    b, c = finite_scores([math.nan, math.inf, 2.0], [0.5, 0.4, 0.3])
    assert all(math.isfinite(x) for x in (*b, *c))
    assert b[0] > 2.0 and b[1] > 2.0
    t = paired_target([math.nan] * 5, [0.5, 0.4, 0.3, 0.45, 0.35])
    assert t.nonfinite_baseline == 5 and t.ci[1] < 0 and math.isfinite(t.ci[0])


def test_smoothed_final_any_nonfinite_is_inf():
    assert smoothed_final([3.0, 2.0, 1.0, 1.0], window=2) == 1.0
    assert smoothed_final([1.0, math.nan, 1.0], window=1) == math.inf


def test_budget_from_onset_with_margin_and_cap():
    cfg = VerifyConfig(min_fraction=0)
    assert budget_for(cfg, onset=200, original_steps=1000) == 300  # 200 + 0.5*200
    assert budget_for(cfg, onset=40, original_steps=1000) == 90  # margin at least 50 steps
    assert budget_for(cfg, onset=200, original_steps=1000, last_event=400) == 500  # past the last spike
    assert budget_for(VerifyConfig(), onset=1, original_steps=1000) == 500  # a trend needs half the run
    assert budget_for(VerifyConfig(max_fraction=0.5, min_fraction=0), onset=300, original_steps=1000) == 450
    assert budget_for(VerifyConfig(max_fraction=0.5, min_fraction=0), onset=900, original_steps=1000) == 950  # margin kept
    assert budget_for(VerifyConfig(budget_steps=77), onset=900, original_steps=1000) == 77
    assert budget_for(cfg, onset=None, original_steps=400) == 400
    assert budget_for(cfg, onset=85, original_steps=91) == 135  # a diverged run's logs stop early


def test_seed_counts(caplog):
    with pytest.raises(VerifyError):
        VerifyConfig(seeds=2).check()
    with caplog.at_level("WARNING"):
        VerifyConfig(seeds=3).check()
    assert "cannot reach p < 0.05" in caplog.text


PROP = Proposal("lower_peak_lr", "lower_peak_lr", "lower LR", "", {"lr": 1e-3}, "")


def arms(symptoms, targets, seeds=range(5)):
    return [ArmResult(s, True, bool(h), (), float(t), "val_loss") for s, h, t in zip(seeds, symptoms, targets, strict=True)]


def test_confirmed_when_symptom_gone_and_not_worse():
    v = decide("divergence", PROP, arms([1] * 5, [math.inf] * 5), arms([0] * 5, [0.5] * 5), VerifyConfig(),
               base_lr=1e-2)
    assert v.verdict is VerdictKind.CONFIRMED
    assert v.p_value == pytest.approx(1 / 252) and v.p_better == 1.0 and v.seeds == (0, 1, 2, 3, 4)
    # baseline finals are all inf: the CI is on substituted scores, and the reason says which
    assert "baseline inf vs candidate 0.5" in v.reason
    assert "non-finite finals (baseline 5/5, candidate 0/5) ranked as worst, scored 1.5" in v.reason
    assert v.ci == (pytest.approx(-1.0), pytest.approx(-1.0)) and v.details["nonfinite_score"] == 1.5


def test_reason_says_nothing_about_nonfinite_when_all_finals_are_finite():
    v = decide("divergence", PROP, arms([1] * 5, [2.0] * 5), arms([0] * 5, [0.5, 0.6, 0.4, 0.5, 0.5]),
               VerifyConfig(), base_lr=1e-2)
    assert "non-finite" not in v.reason and "nonfinite_score" not in v.details
    assert paired_target([2.0] * 3, [1.0] * 3).nonfinite_score is None


def test_inconclusive_when_baseline_does_not_reproduce():
    v = decide("divergence", PROP, arms([1, 1, 0, 0, 0], [1] * 5), arms([0] * 5, [1] * 5), VerifyConfig())
    assert v.verdict is VerdictKind.INCONCLUSIVE and "2/5" in v.reason


def test_noop_is_rejected():
    same = [1.0, 1.2, 0.9, 1.1, 1.0]
    v = decide("plateau", PROP, arms([1] * 5, same), arms([1] * 5, same), VerifyConfig())
    assert v.verdict is VerdictKind.REJECTED and "not removed" in v.reason


def test_lr_lowering_fix_that_ends_worse_is_rejected_with_reason():
    v = decide("loss-spike", PROP, arms([1] * 5, [1.0, 1.1, 0.9, 1.0, 1.05]),
               arms([0] * 5, [1.5, 1.6, 1.4, 1.5, 1.55]), VerifyConfig(), base_lr=1e-2)
    assert lowers_lr(PROP, 1e-2)
    assert v.verdict is VerdictKind.REJECTED and "ends worse" in v.reason and "small LRs" in v.reason


def test_errors_carry_the_stderr_tail():
    bad = [ArmResult(0, False, error="exit code 3\nCUDA error: out of memory", logdir="/x")] + arms([1] * 4, [1] * 4,
                                                                                                  range(1, 5))
    v = decide("divergence", PROP, bad, arms([0] * 5, [1] * 5), VerifyConfig())
    assert v.verdict is VerdictKind.ERROR and "out of memory" in v.reason


def test_healthy_run_harmful_patch_rejected_and_harmless_inconclusive():
    harm = Proposal("lr_x10", "custom", "", "", {"lr_scale": 10}, "")
    v = decide(None, harm, arms([0] * 5, [0.2] * 5), arms([1] * 5, [math.inf] * 5), VerifyConfig())
    assert v.verdict is VerdictKind.REJECTED
    v = decide(None, harm, arms([0] * 5, [0.2, 0.3, 0.2, 0.25, 0.2]), arms([0] * 5, [0.2, 0.3, 0.2, 0.25, 0.2]),
               VerifyConfig())
    assert v.verdict is VerdictKind.INCONCLUSIVE


def test_gradient_rules_judge_the_applied_norm_after_clipping():
    import numpy as np

    from lrdoctor.model import Run, make_scalars
    from lrdoctor.verify.runner import applied_grad_norm

    steps = np.arange(1, 6)
    df = make_scalars("grad_norm", steps, None, [1.0, 50.0, np.nan, np.inf, 2.0])
    df = pd.concat([df, make_scalars("loss", steps, None, [5.0, 4, 3, 2, 1])], ignore_index=True)
    run = Run("r", "/x", "jsonl", scalars=df)
    got = applied_grad_norm(run, 3.0)
    g = got.series("grad_norm")["value"].to_numpy()
    assert g[0] == 1.0 and g[1] == 3.0 and np.isnan(g[2]) and np.isinf(g[3]) and g[4] == 2.0
    assert got.series("loss")["value"].tolist() == [5.0, 4, 3, 2, 1]
    assert applied_grad_norm(run, None) is run


def test_verdict_json_round_trip_keeps_curves_and_their_non_finite_points(tmp_path):
    """What ``verify --json`` writes is strict JSON, and the report's loader gets the curves back
    with NaN/inf as floats (the markers of a diverged rerun) and the required keys unchanged."""
    import dataclasses
    import json

    import numpy as np

    from lrdoctor.report.verdicts import load_verdicts
    from lrdoctor.verify.runner import RunVerification, curves_detail, display_curve

    steps = np.arange(1, 2001)
    values = np.exp(steps / 300.0)
    values[1500:] = np.nan
    values[1499] = np.inf
    curve = display_curve(steps, values)
    assert len(curve[0]) <= 510 and math.isinf(max(curve[1])) and any(math.isnan(x) for x in curve[1])
    assert 1 in curve[0] and 2000 in curve[0]
    base = [ArmResult(s, True, target=math.inf, target_role="train_loss", curves=(("train_loss", *curve),))
            for s in (0, 1, 2)]
    cand = [ArmResult(s, True, target=0.5, target_role="train_loss", curves=(("train_loss", (1.0, 2.0), (0.9, 0.5)),))
            for s in (0, 1, 2)]
    v = decide("divergence", Proposal(id="p", kind="lower_peak_lr", summary="", rationale="", config={"lr": 0.1},
                                      code=""), base, cand, VerifyConfig(seeds=3))
    v = dataclasses.replace(v, curves=curves_detail(base, cand, "train_loss"))
    text = json.dumps({"runs": [RunVerification("r", (v,)).to_dict()]}, allow_nan=False)
    (path := tmp_path / "v.json").write_text(text)
    (back,) = load_verdicts(path)["r"]
    assert back == v  # rule, proposal, verdict, seeds, p-value, CI, P(better), reason
    got = back.curves
    assert got.metric == "train_loss" and [c.seed for c in got.baseline] == [0, 1, 2]
    ys = np.asarray(got.baseline[1].values)
    assert ys.dtype == np.float64 and np.isinf(ys).sum() == 1 and np.isnan(ys).any()
    assert got.candidate[2].values == (0.9, 0.5) and got.candidate[2].steps == (1.0, 2.0)
    assert json.loads(text)["runs"][0]["verdicts"][0]["details"]["curves"]["candidate"]["2"] == \
        {"steps": [1.0, 2.0], "values": [0.9, 0.5]}  # the JSON shape verify writes
