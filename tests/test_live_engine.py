"""The live engine: streaming the rules gives the offline answers (rule, onset), and its events."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lrdoctor.api import diagnose, load_runs
from lrdoctor.engine.livespec import parse_live
from lrdoctor.engine.spec import load_rules
from lrdoctor.errors import RuleSpecError
from lrdoctor.live.engine import EventKind, LiveEngine
from lrdoctor.live.replay import replay

SAMPLES = Path(__file__).resolve().parents[1] / "sample_logs"
CHECK_EVERY = 10


@pytest.fixture(scope="module")
def sample_runs():
    return load_runs(SAMPLES)


def test_replaying_every_sample_log_gives_the_offline_findings(sample_runs):
    assert len(sample_runs) == sum(d.is_dir() for d in SAMPLES.iterdir())  # one run per sample
    for run in sample_runs:
        offline = {f.rule: f for f in diagnose([run], jobs=1)[0].findings}
        rep = replay(run, CHECK_EVERY)
        assert set(rep.final) == set(offline), run.name
        reported = rep.reported()
        for rule, f in offline.items():
            # the onset the finding was reported with, while the log was still "being written"
            assert abs(reported[rule].finding.start_step - f.start_step) <= CHECK_EVERY, (run.name, rule)
            assert rep.final[rule].start_step == f.start_step


def test_replay_reads_the_facts_offline_rules_read_from_the_runs_origin():
    """An epoch-axis log whose lrdoctor-run.json says 20 steps per epoch: offline, a 1.8x epoch
    mean of the grad norm is a burst (a 17x one-step burst averaged over 20 steps); the live
    engine must judge it with the same fact, not as a per-step 1.8x."""
    from lrdoctor.model import Run, make_scalars
    from lrdoctor.origin import RunOrigin

    rng = np.random.default_rng(0)
    epochs = np.arange(60)
    loss = 2.0 * np.exp(-epochs / 30) + 0.3 + 0.003 * rng.standard_normal(60)
    grad = 1.0 + 0.01 * rng.standard_normal(60)
    grad[40] = 1.8
    scalars = make_scalars(np.array(["loss"] * 60 + ["grad_norm"] * 60, dtype=object),
                           np.concatenate([epochs, epochs]), None, np.concatenate([loss, grad]))
    origin = RunOrigin.parse({"workload": "gru_lm", "config": {"epoch_steps": 20}})
    run = Run("r", "r", "keras_csv", scalars, step_axis="epoch", origin=origin)
    offline = {f.rule: f for f in diagnose([run], jobs=1)[0].findings}
    assert set(offline) == {"exploding-gradients"}
    rep = replay(run, CHECK_EVERY)
    assert set(rep.final) == set(offline)
    assert rep.final["exploding-gradients"].start_step == offline["exploding-gradients"].start_step


def test_a_spike_is_not_reported_as_divergence_before_it_recovers(sample_runs):
    run = next(r for r in sample_runs if r.name.startswith("loss-spike"))
    rep = replay(run, CHECK_EVERY)
    assert [(e.kind, e.finding.rule) for e in rep.events] == [(EventKind.NEW, "loss-spike"),
                                                              (EventKind.UPDATED, "loss-spike")]
    first, second = rep.events
    assert first.finding.steps == (250,) and second.finding.steps == (250, 400)  # updated, not repeated
    assert first.at_step < 400


def _feed_until(engine, losses, start=0):
    events = []
    for i, v in enumerate(losses, start=start):
        engine.add(i, {"train_loss": v})
        if i % CHECK_EVERY == 0:
            events += engine.check()
    return events


def test_nan_loss_is_reported_at_the_first_check_and_a_blow_up_is_provisional_first():
    rng = np.random.default_rng(0)
    healthy = 2.0 * np.exp(-np.arange(200) / 60) + 0.3 + 0.01 * rng.standard_normal(200)
    eng = LiveEngine(proposals=False)
    assert _feed_until(eng, healthy) == []
    ev = _feed_until(eng, [float("nan")] * 3, start=200)
    assert [(e.kind, e.finding.rule) for e in ev] == [(EventKind.NEW, "divergence")]
    assert ev[0].finding.start_step <= 200

    # 10x its best and flat: held back until it has stood 50 more points (a bad batch's aftermath
    # can look like this for tens of points)
    eng = LiveEngine(proposals=False)
    _feed_until(eng, healthy)
    assert _feed_until(eng, 3.0 + 0.1 * rng.random(30), start=200) == []
    assert "divergence" in eng.provisional
    ev = _feed_until(eng, 3.0 + 0.1 * rng.random(60), start=230)
    assert [(e.kind, e.finding.rule) for e in ev] == [(EventKind.NEW, "divergence")]
    assert ev[0].at_step >= 200 + 50

    # 1e4x its best and not coming down: reported once it has stood 10 points
    eng = LiveEngine(proposals=False)
    _feed_until(eng, healthy)
    ev = _feed_until(eng, 3000.0 * (1 + 0.1 * rng.random(30)), start=200)
    assert [(e.kind, e.finding.rule) for e in ev] == [(EventKind.NEW, "divergence")]
    assert ev[0].at_step <= 200 + 10 + CHECK_EVERY

    # the same height falling steadily back (a spike recovering): not reported as divergence
    eng = LiveEngine(proposals=False)
    _feed_until(eng, healthy)
    decay = 3000.0 * np.exp(-np.arange(40) / 4.0) + 0.3
    assert not [e for e in _feed_until(eng, decay, start=200) if e.finding.rule == "divergence"]


def test_new_findings_carry_proposals():
    eng = LiveEngine()
    for i in range(120):
        eng.add(i, {"train_loss": 1.0 / (1 + i) if i < 100 else float("inf"), "lr": 0.1})
    (event,) = eng.check()
    assert event.finding.rule == "divergence" and event.finding.proposals
    assert event.to_dict()["event"] == "new" and event.to_dict()["proposals"][0]["id"].startswith("divergence:")


def test_every_builtin_rule_documents_what_it_reports_live():
    for rule in load_rules():
        assert len(rule.live.doc) > 40, rule.name


@pytest.mark.parametrize("bad", [{"confirm_points": -1}, {"confirm_growth": 0.5}, {"confirm_when": 3},
                                 {"confirm_point": 3}, "x"])
def test_bad_live_block_is_a_rule_spec_error(bad):
    with pytest.raises(RuleSpecError):
        parse_live(bad, "rules/x.yaml")


class _RecordingHooks:
    """Trainer hooks that only record what the guard asked for."""

    def __init__(self):
        self.calls = []

    def state(self):
        return {"w": np.zeros(3)}

    def load_state(self, state):
        self.calls.append("load_state")

    def scale_lr(self, factor):
        self.calls.append(("scale_lr", factor))

    def set_clip_grad_norm(self, value):
        self.calls.append(("clip", value))

    def stop(self, step):
        self.calls.append(("stop", step))
        return None


@pytest.mark.parametrize("action", ["stop", "rollback"])
def test_healthy_sample_runs_never_trigger_stop_or_rollback_at_the_default_severity(sample_runs, action):
    from lrdoctor.live.guard import Guard, GuardOptions

    healthy = [r for r in sample_runs if r.name.startswith("healthy")]
    assert len(healthy) == 2
    for run in healthy:
        guard, hooks = Guard(GuardOptions(action=action, max_overhead=None)), _RecordingHooks()
        sc = run.scalars
        for tag, step, value in zip(sc["tag"].astype(str), sc["step"], sc["value"], strict=True):
            guard.observe(int(step), {tag: float(value)}, hooks)
        guard.finish()
        assert guard.checks > 10 and hooks.calls == [] and not guard.stopped, run.name
        assert not [r for r in guard.records if r["event"] != "finding"]


def test_a_guard_runs_the_rules_that_can_reach_its_severity_and_their_superseders():
    """A detector never raises its rule's severity, so a guard that acts at ``error`` has no use
    for the warning and info rules while the training runs; it keeps what supersedes a kept rule
    (so a finding is dropped exactly when it is with every rule)."""
    from lrdoctor.live.guard import Guard, GuardOptions
    from lrdoctor.model import Severity

    every = {r.name: r for r in load_rules()}
    for severity in ("error", "warning", "info"):
        kept = {r.name for r in Guard(GuardOptions(severity=severity)).engine.rules}
        rank = Severity(severity).rank
        assert {n for n, r in every.items() if r.severity.rank >= rank} <= kept
        for name in kept:
            assert set(every[name].superseded_by) <= kept
            assert every[name].severity.rank >= rank or any(name in every[k].superseded_by for k in kept)
    at_error = {r.name for r in Guard(GuardOptions(severity="error")).engine.rules}
    assert "divergence" in at_error and "loss-spike" not in at_error and "plateau" not in at_error
    assert {r.name for r in Guard(GuardOptions(severity="info")).engine.rules} == set(every)
    # a --set value for a rule the guard does not run is still checked
    with pytest.raises(RuleSpecError, match="unknown parameter"):
        Guard(GuardOptions(severity="error", overrides={"plateau": {"no_such": 1}}))
    g = Guard(GuardOptions(severity="error", overrides={"plateau": {"min_points": 30},
                                                         "divergence": {"min_points": 9}}))
    assert {r.name: r.params.get("min_points") for r in g.engine._rules}["divergence"] == 9


def test_restated_points_update_a_reported_finding_instead_of_repeating_it():
    """A W&B run handed out again on its step key (``RunFollower.restated``): the engine forgets the
    points, keeps what it reported, and the next check says only what changed."""
    rng = np.random.default_rng(1)
    losses = np.r_[2.0 * np.exp(-np.arange(200) / 60) + 0.3 + 0.01 * rng.standard_normal(200), [np.nan] * 5]
    eng = LiveEngine(proposals=False)
    eng.extend("train_loss", 2 * np.arange(len(losses)) + 7, losses)  # W&B's _step: two log calls a step
    [first] = eng.check()
    assert first.kind is EventKind.NEW and first.finding.start_step >= 400
    eng.restate()
    assert eng.n_points == 0
    eng.extend("train_loss", np.arange(len(losses)), losses)  # trainer/global_step
    [again] = eng.check()
    assert again.kind is EventKind.UPDATED and again.finding.start_step == 200
    assert eng.check() == []
    eng.restate()
    eng.extend("train_loss", np.arange(200), losses[:200])  # the new axis undoes it: withdrawn
    assert [e.kind for e in eng.check(final=True)] == [EventKind.WITHDRAWN]
