"""Checkpoints for forked reruns: workload save/resume, retention, discovery, the fork plan, the ladder."""

from __future__ import annotations

import numpy as np
import pytest

from lrdoctor.errors import UsageError, VerifyError
from lrdoctor.model import Proposal, Verdict, VerdictKind
from lrdoctor.verify import VerifyConfig
from lrdoctor.verify.checkpoints import (
    Checkpoint,
    find_checkpoints,
    pattern_checkpoints,
    plan_fork,
    skipped_span,
    stops_inside_skip,
)
from lrdoctor.verify.ladder import combine, direction, next_config, weighted_holm, weights


@pytest.fixture(scope="module")
def spike_run(tmp_path_factory):
    """A loss-spike workload run (spikes at 250 and 400) saving a checkpoint every 40 steps."""
    pytest.importorskip("torch")
    from lrdoctor.workloads.recipes import recipe_config
    from lrdoctor.workloads.training import train

    d = tmp_path_factory.mktemp("spike")
    cfg = recipe_config("loss-spike", "mlp_regressor", seed=0, max_steps=480).replace(checkpoint_every=40,
                                                                                      checkpoint_keep=2)
    return cfg, train(cfg, d / "run", "jsonl", "cpu"), d


def _ckpt(d, step):
    return d / "run" / "lrdoctor-checkpoints" / f"step-{step}.pt"


def test_resume_with_the_original_seed_replays_the_run_bit_for_bit(spike_run, tmp_path, torch_one_thread):
    from lrdoctor.workloads.training import train

    cfg, orig, d = spike_run
    res = train(cfg.replace(checkpoint_every=0), tmp_path / "same", "jsonl", "cpu", resume=_ckpt(d, 200),
                stop_step=420)
    h, r = orig.history, res.history
    assert r.steps[0] == 201 and r.steps[-1] == 420
    at = np.isin(h.steps, r.steps)
    assert np.array_equal(h.train_loss[at], r.train_loss)  # exact, not approximate
    assert np.array_equal(h.grad_norm[at], r.grad_norm) and np.array_equal(h.lr[at], r.lr)
    ev = np.isin(h.eval_steps, r.eval_steps)
    assert np.array_equal(h.val_loss[ev], r.val_loss[: ev.sum()])


def test_another_seed_varies_what_follows_the_fork_and_both_arms_share_it(spike_run, tmp_path, torch_one_thread):
    from lrdoctor.workloads.training import train

    cfg, orig, d = spike_run
    runs = [train(cfg.replace(checkpoint_every=0, seed=3).apply_patch(patch), tmp_path / f"s3-{i}", "jsonl", "cpu",
                  resume=_ckpt(d, 200), stop_step=230) for i, patch in enumerate(({}, {}, {"lr_scale": 0.5}))]
    a, b, c = (x.history for x in runs)
    assert np.array_equal(a.train_loss, b.train_loss)  # same seed after the fork: same rerun
    assert not np.array_equal(a.train_loss, orig.history.train_loss[200:230])  # a new batch order
    assert a.train_loss[0] == c.train_loss[0]  # step 201's batch and weights are shared; the LR differs
    assert np.allclose(c.lr, 0.5 * a.lr)


def test_retention_keeps_the_last_n_and_those_before_a_spike(spike_run):
    _, _, d = spike_run
    kept = sorted(int(p.stem.split("-")[1]) for p in (d / "run" / "lrdoctor-checkpoints").glob("*.pt"))
    assert kept[-2:] == [440, 480]  # keep=2
    # spikes at 250 and 400: the checkpoints still there in the 100 + 2x40 steps before each survive
    # (the keeper holds the last 100 + 40 steps' worth whatever keep says, so a fork 100 steps back exists)
    assert {120, 160, 200, 240, 280, 320, 360, 400} <= set(kept)
    assert 40 not in kept and 80 not in kept


def test_checkpoint_loading_is_safe(tmp_path):
    torch = pytest.importorskip("torch")
    from lrdoctor.workloads.checkpointing import load_checkpoint

    class Evil:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    torch.save({"format": "lrdoctor-checkpoint", "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(VerifyError, match="evil.pt"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(VerifyError, match="not an lrdoctor checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_discovery_of_own_hf_lightning_and_pattern_checkpoints(tmp_path):
    run = tmp_path / "run"
    (run / "lrdoctor-checkpoints").mkdir(parents=True)
    for s in (100, 300, 200):
        (run / "lrdoctor-checkpoints" / f"step-{s}.pt").write_bytes(b"")
    (run / "metrics.jsonl").write_text("")
    assert [c.step for c in find_checkpoints(run / "metrics.jsonl")] == [100, 200, 300]

    hf = tmp_path / "hf"
    for s in (500, 1000):
        (hf / f"checkpoint-{s}").mkdir(parents=True)
    (hf / "trainer_state.json").write_text("{}")
    got = find_checkpoints(hf / "checkpoint-1000" / "trainer_state.json")  # a copy inside a checkpoint
    assert [(c.step, c.kind) for c in got] == [(500, "hf"), (1000, "hf")]

    pl = tmp_path / "lightning_logs" / "version_0"
    (pl / "checkpoints").mkdir(parents=True)
    (pl / "metrics.csv").write_text("")
    (pl / "checkpoints" / "epoch=1-step=400.ckpt").write_bytes(b"")
    (pl / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert [(c.step, c.kind) for c in find_checkpoints(pl / "metrics.csv")] == [(400, "lightning")]

    own = tmp_path / "mine"
    own.mkdir()
    for s in (50, 150):
        (own / f"ckpt_{s}.pt").write_bytes(b"")
    (own / "ckpt_best.pt").write_bytes(b"")
    assert [c.step for c in pattern_checkpoints(str(own / "ckpt_{step}.pt"))] == [50, 150]
    with pytest.raises(UsageError, match="step"):
        pattern_checkpoints(str(own / "ckpt_*.pt"))
    (tmp_path / "empty").mkdir()
    assert find_checkpoints(tmp_path / "empty" / "metrics.csv") == ()


def test_fork_plan_budget_and_the_reasons_to_start_at_zero():
    cfg = VerifyConfig()
    cks = [Checkpoint(s, f"c{s}", "lrdoctor") for s in (1000, 1100, 1200, 1300)]
    f = plan_fork(cfg, "loss-spike", 1250, 1290, 2000, cks, judged="event")
    # latest at or before 1250 - 100; to the last event + max(50, 0.5 * (1290 - 1100))
    assert (f.start_step, f.stop_step, f.checkpoint.path) == (1100, 1290 + 95, "c1100")
    # divergence: NaN stays NaN, the rerun passes the onset, not the NaN stretch to the run's end
    d = plan_fork(cfg, "divergence", 1250, 2000, 2000, cks, judged="onset")
    assert (d.start_step, d.stop_step) == (1100, 1250 + 75)
    for rule, judged, onset, found, why in (("plateau", "trend", 1250, cks, "whole curve"),
                                            ("divergence", "onset", 1050, cks, "before step 950"),
                                            ("divergence", "onset", 1250, [], "no checkpoint found"),
                                            (None, None, None, cks, "no finding")):
        z = plan_fork(cfg, rule, onset, None, 2000, found, judged=judged)
        assert z.start_step == 0 and z.checkpoint is None and why in z.note and "step 0" in z.note
    assert "cannot resume" in plan_fork(cfg, "divergence", 1250, None, 2000, cks, "cannot resume", "onset").note


def test_fork_runs_past_the_batches_a_rollback_skips_and_starts_before_them():
    cfg = VerifyConfig()
    cks = [Checkpoint(s, f"c{s}", "lrdoctor") for s in (1000, 1100, 1200, 1300)]
    plain = plan_fork(cfg, "loss-spike", 1250, 1250, 2000, cks, judged="event")
    assert (plain.start_step, plain.stop_step) == (1100, 1250 + 75)
    # a rollback skipping 1150-1350 would cover that whole rerun: the reruns go the same margin past 1350
    f = plan_fork(cfg, "loss-spike", 1250, 1250, 2000, cks, judged="event", skipped=(1150, 1350))
    assert (f.start_step, f.stop_step) == (1100, 1350 + 75) and "past the skipped batches 1150-1350" in f.note
    assert stops_inside_skip({"skip_batches": [[1150, 1350]]}, 1100, plain.stop_step) == (1150, 1350)
    assert stops_inside_skip({"skip_batches": [[1150, 1350]]}, 1100, f.stop_step) is None
    assert stops_inside_skip({"lr": 0.1}, 1100, 1200) is None
    # a window over by the last event leaves the margin after it as it was
    assert plan_fork(cfg, "loss-spike", 1250, 1250, 2000, cks, judged="event", skipped=(1150, 1240)) == plain
    # a skip that starts before the usual fork moves the fork before it (else it would be a no-op)
    early = plan_fork(cfg, "loss-spike", 1250, 1250, 2000, cks, judged="event", skipped=(1050, 1300))
    assert early.start_step == 1000
    none = plan_fork(cfg, "loss-spike", 1250, 1250, 2000, cks, judged="event", skipped=(900, 1300))
    assert none.start_step == 0 and "the first skipped batch, 900" in none.note
    assert skipped_span([{"skip_batches": [[5, 9], [40, 60]]}, {"lr": 1.0}, {"skip_batches": [[2, 3]]}]) == (2, 60)
    assert skipped_span([{"lr": 1.0}]) is None


def _rung(verdict: str, base_hits: int, cand_hits: int, p: float) -> Verdict:
    return Verdict(rule="divergence", proposal_id="x", kind="lower_peak_lr", verdict=VerdictKind(verdict),
                   seeds=(0, 1, 2, 3, 4), p_value=p, ci=None, p_better=None, reason=verdict.lower(),
                   details={"fisher_p": p, "baseline_symptom": [True] * base_hits + [False] * (5 - base_hits),
                            "candidate_symptom": [True] * cand_hits + [False] * (5 - cand_hits)})


def test_weighted_holm_and_the_ladder_verdict():
    w = weights(3)
    assert w[0] == pytest.approx(0.8) and sum(w) == pytest.approx(1.0)
    # a lone first rung at 5 seeds accepts what a plain 0.05 test accepts (0.024 yes, 0.083 no)
    assert weighted_holm([0.0238, 1, 1], w, 0.05)[0] == [True, False, False]
    assert weighted_holm([0.0833, 1, 1], w, 0.05)[0] == [False, False, False]
    # a later rung needs p <= 0.005 alone; after it is rejected the first rung gets 0.05 * 0.8 / 0.9
    rej, level = weighted_holm([0.5, 0.004, 1], w, 0.05)
    assert rej == [False, True, False] and level[1] == pytest.approx(0.005) and level[0] == pytest.approx(0.05 * 0.8 / 0.9)
    rej, level = weighted_holm([0.03, 0.006, 1], w, 0.05)  # the first rung rejected passes its weight on
    assert rej == [True, True, False] and level[1] == pytest.approx(0.025)
    assert weighted_holm([0.006, 0.03, 1], w, 0.05)[0] == [True, False, False]

    prop = Proposal("x", "lower_peak_lr", "lower LR", "", {"lr": 0.6}, "")
    raise_ = Proposal("y", "raise", "", "", {"lr_scale": 10}, "")
    assert direction(prop, 2.0) == -1 and direction(raise_, 1e-4, may_raise=True) == 1 and direction(raise_, 1e-4) == 0
    assert direction(Proposal("n", "noop", "", "", {}, ""), 2.0) == 0
    assert next_config({"lr": 0.6}, -1, 3.0) == {"lr": pytest.approx(0.2)}
    assert next_config({"lr_scale": 10}, 1, 3.0) == {"lr_scale": 30}
    rungs = [_rung("INCONCLUSIVE", 5, 2, 0.083), _rung("CONFIRMED", 5, 0, 0.004), _rung("CONFIRMED", 5, 0, 0.004)]
    v = combine(rungs, [{"lr": 0.6}, {"lr": 0.2}, {"lr": 0.2 / 3}], 2.0, alpha=0.05, n_rungs=3, steps=[10, 10, 10])
    assert v.verdict is VerdictKind.CONFIRMED
    assert v.details["largest_confirmed_lr"] == pytest.approx(0.2)
    table = v.details["ladder"]
    assert [r["rung"] for r in table] == [1, 2, 3] and [r["confirmed"] for r in table] == [False, True, True]
    assert [r["candidate_hits"] for r in table] == [2, 0, 0] and table[0]["fisher_p"] == 0.083
    # a rung whose own verdict is CONFIRMED but which Holm does not reject is not confirmed
    lone = combine([_rung("CONFIRMED", 5, 1, 0.045)], [{"lr": 0.6}], 2.0, alpha=0.05, n_rungs=3, steps=[1])
    assert lone.verdict is VerdictKind.INCONCLUSIVE and lone.details["largest_confirmed_lr"] is None
