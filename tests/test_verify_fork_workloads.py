"""Forking on, built-in workloads that save checkpoints: a rollback-and-skip proposal is judged on
reruns that train past the batches it skips, the no-op control is never CONFIRMED, and LR x10 on
a tuned healthy run is REJECTED."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from lrdoctor.cli import main  # noqa: E402


def _verdicts(capsys) -> dict[str, dict]:
    (r,) = json.loads(capsys.readouterr().out)["runs"]
    return {v["proposal_id"]: v for v in r["verdicts"]}


@pytest.fixture(scope="module")
def spike_run(tmp_path_factory):
    """1,200 steps, a poisoned batch at step 900, a checkpoint every 100 steps. Its rollback skips
    60 batches either side of the spike (840-960), past the usual stop of a forked rerun (the
    spike + 50): reruns that stopped there would end inside the skipped batches."""
    from lrdoctor.workloads.recipes import recipe_config
    from lrdoctor.workloads.training import train

    d = tmp_path_factory.mktemp("fork-workloads")
    cfg = recipe_config("loss-spike", "mlp_regressor", 0, max_steps=1200, poison_steps=(900,))
    train(cfg.replace(checkpoint_every=100), d / "spike", "jsonl", "cpu")
    return d / "spike"


def test_rollback_reruns_train_past_the_skipped_batches_and_the_noop_is_not_confirmed(spike_run, tmp_path, capsys):
    rc = main(["verify", str(spike_run), "--rule", "loss-spike", "--patch", "{}", "--jobs", "2",
               "--out", str(tmp_path / "v"), "--json"])
    got = _verdicts(capsys)
    assert rc == 0 and set(got) == {"loss-spike:rollback_skip", "patch"}
    top, noop = got["loss-spike:rollback_skip"], got["patch"]
    ((a, b),) = _top_patch(spike_run)["skip_batches"]
    assert a < 900 < b
    fork = top["details"]["fork"]
    assert fork["checkpoint_kind"] == "lrdoctor" and 0 < fork["start_step"] <= min(a, 900 - 100)
    assert fork["stop_step"] >= b + 50 and f"past the skipped batches {a}-{b}" in fork["note"]
    assert noop["details"]["fork"] == fork  # one fork per finding, the baseline shared
    assert top["verdict"] == "CONFIRMED", top["reason"]
    for curve in top["details"]["symptom_curves"]["candidate"].values():  # every candidate trained after the skip
        assert curve["steps"][0] == fork["start_step"] + 1 and curve["steps"][-1] == fork["stop_step"]
        assert not any(a <= s <= b for s in curve["steps"])
    assert noop["verdict"] == "REJECTED" and "not removed" in noop["reason"], noop["reason"]

    # a budget that ends inside the skipped batches cannot judge the rollback: said, not CONFIRMED
    rc = main(["verify", str(spike_run), "--rule", "loss-spike", "--budget-steps", str(b - fork["start_step"] - 10),
               "--jobs", "2", "--out", str(tmp_path / "short"), "--json"])
    short = _verdicts(capsys)["loss-spike:rollback_skip"]
    assert rc == 0 and short["verdict"] == "INCONCLUSIVE", short["reason"]
    assert short["reason"].startswith(f"the reruns stop at step {b - 10}, inside the batches the candidate skips "
                                      f"({a}-{b})")


def _top_patch(run) -> dict:
    from lrdoctor.engine.diagnose import diagnose_runs
    from lrdoctor.readers import discover

    (d,) = diagnose_runs(discover(str(run)), proposals=True)
    f = next(f for f in d.findings if f.rule == "loss-spike")
    return f.proposals[0].config.to_dict()


def test_lr_x10_on_a_tuned_healthy_workload_with_checkpoints_is_rejected(tmp_path, capsys):
    """Forking on and checkpoints saved, but no finding to fork before: the whole run from step 0
    (harm may come from any phase), as said in the verdict."""
    from lrdoctor.workloads.recipes import recipe_config
    from lrdoctor.workloads.training import train

    train(recipe_config("healthy", "mlp_regressor", 0).replace(checkpoint_every=100), tmp_path / "healthy", "jsonl",
          "cpu")
    assert any((tmp_path / "healthy" / "lrdoctor-checkpoints").iterdir())
    rc = main(["verify", str(tmp_path / "healthy"), "--patch", '{"lr_scale": 10}', "--jobs", "2",
               "--out", str(tmp_path / "v"), "--json"])
    (v,) = _verdicts(capsys).values()
    assert rc == 0 and v["verdict"] == "REJECTED", v["reason"]
    fork = v["details"]["fork"]
    assert fork["start_step"] == 0 and fork["checkpoint"] is None and "no finding" in fork["note"]
    assert fork["budget_steps"] == 600  # the whole run
