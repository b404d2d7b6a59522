"""Forked verification: a plain user script with its own checkpoints (``tests/ckpt_train.py``),
resumed through ``{resume_from}``/``{start_step}`` with ``{max_steps}`` as the absolute stop step;
``--no-fork`` and a trend rule plan reruns from step 0; the LR ladder climbs only while a rung
leaves the symptom in some seed."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from lrdoctor.cli import main  # noqa: E402

SCRIPT = str(Path(__file__).with_name("ckpt_train.py"))
PY = shlex.quote(sys.executable)
# 800 steps whose warmup ramps into an unstable LR: the loss blows up at ~85% of the run
ORIGINAL = ("--lr", "0.85", "--max-steps", "800", "--warmup", "800", "--ckpt-every", "50")


def template(*extra: str) -> str:
    return (f"{PY} {shlex.quote(SCRIPT)} --resume {{resume_from}} --start-step {{start_step}} --max-steps {{max_steps}} "
            f"--lr {{lr}} --seed {{seed}} --logdir {{logdir}} " + " ".join(extra))


@pytest.fixture(scope="module")
def diverged(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("fork")
    subprocess.run([sys.executable, SCRIPT, "--logdir", str(d / "run"), "--seed", "0", *ORIGINAL,
                    "--ckpt-dir", str(d / "ckpt")], check=True, timeout=300)
    return d / "run", d / "ckpt"


def test_plain_script_forks_from_its_own_checkpoints_and_says_what_it_cost(diverged, tmp_path, capsys):
    run, ckpt = diverged
    args = ["verify", str(run), "--rule", "divergence", "--seeds", "3", "--train", template("--warmup", "800"),
            "--checkpoints", str(ckpt / "ckpt_{step}.pt"), "--jobs", "2", "--out", str(tmp_path / "v")]
    rc = main([*args, "--json"])
    out = json.loads(capsys.readouterr().out)
    (r,) = out["runs"]
    (v,) = r["verdicts"]
    assert rc == 0 and v["verdict"] != "ERROR", v["reason"]
    fork, cost = v["details"]["fork"], v["details"]["cost"]
    assert fork["checkpoint"] == str(ckpt / f"ckpt_{fork['start_step']}.pt") and fork["checkpoint_kind"] == "pattern"
    onset = _finding(run, "divergence").start_step
    assert fork["start_step"] == (onset - 100) // 50 * 50 > 0  # the latest checkpoint 100 steps before the onset
    assert fork["budget_steps"] < 800 - fork["start_step"] + 100
    # every rerun resumed the chosen checkpoint and stopped at the absolute stop step
    argvs = [json.loads(f.read_text())["argv"] for f in (tmp_path / "v").rglob("command.json")]
    assert len(argvs) == 6
    for argv in argvs:
        start = int(argv[argv.index("--start-step") + 1])
        assert start == fork["start_step"] and argv[argv.index("--resume") + 1] == fork["checkpoint"]
        assert int(argv[argv.index("--max-steps") + 1]) == start + fork["budget_steps"]
    for f in (tmp_path / "v").rglob("metrics.csv"):
        assert int(f.read_text().splitlines()[1].split(",")[0]) == fork["start_step"] + 1
    # cost: each rerun's steps from its logs; the run's total counts each rerun once
    assert cost["baseline_steps"] == cost["candidate_steps"] == 3 * fork["budget_steps"]
    assert cost["total_steps"] == cost["baseline_steps"] + cost["candidate_steps"]
    assert cost["original_steps"] == 800 and cost["ratio"] == pytest.approx(cost["total_steps"] / 800)
    assert r["cost"] == {"reruns": 6, "steps": cost["total_steps"], "original_steps": 800,
                         "ratio": pytest.approx(cost["total_steps"] / 800)}
    main(args)  # every rerun reused; the text output ends with the cost line
    text = capsys.readouterr().out.strip().splitlines()
    pct = 100 * cost["total_steps"] / 800
    assert text[-1] == f"verification: 6 reruns, {cost['total_steps']:,} steps = {pct:.1f}% of the original run"
    assert any(line.strip().startswith(f"start: forked from the pattern checkpoint at step {fork['start_step']}")
               for line in text)


def _finding(run: Path, rule: str):
    from lrdoctor.engine.diagnose import diagnose_runs
    from lrdoctor.readers import discover

    (d,) = diagnose_runs(discover(str(run)), proposals=True)
    return next(f for f in d.findings if f.rule == rule)


def _planned(run: Path, tmp_path: Path, rule: str, **cfg):
    from lrdoctor.readers import discover
    from lrdoctor.verify.protocol import VerifyConfig
    from lrdoctor.verify.runner import plan

    finding = _finding(run, rule)
    (r,) = discover(str(run))
    return plan([(r, finding, finding.proposals[:1])], VerifyConfig(seeds=3, **cfg), tmp_path / "v",
                template("--warmup", "800"))


def test_no_fork_and_missing_checkpoints_plan_reruns_from_step_zero(diverged, tmp_path):
    run, ckpt = diverged
    forked = _planned(run, tmp_path, "divergence", checkpoints=str(ckpt / "ckpt_{step}.pt"))
    off = _planned(run, tmp_path, "divergence", checkpoints=str(ckpt / "ckpt_{step}.pt"), fork=False)
    none = _planned(run, tmp_path, "divergence", checkpoints=str(tmp_path / "nothing_{step}.pt"))
    assert all(t.resume_from and t.start_step > 0 for t in forked.tasks.values())
    for p, why in ((off, "forking off"), (none, "no checkpoint found")):
        assert all(t.resume_from is None and t.start_step == 0 for t in p.tasks.values())
        assert why in p.jobs[0].fork.note
        # from step 0 the command line and the digest are those of a verify without checkpoints
        t = next(iter(p.tasks.values()))
        vals = t.backend.values(t)
        assert vals["resume_from"] == "" and vals["start_step"] == "0" and vals["max_steps"] == str(t.max_steps)
        assert "start_step" not in t.full_patch() and "resume_from" not in t.full_patch()


def test_ladder_climbs_while_a_rung_leaves_the_symptom_and_stops_after_one_that_clears_it():
    from dataclasses import dataclass

    from lrdoctor.model import Proposal, Verdict, VerdictKind
    from lrdoctor.verify.ladder import climb
    from lrdoctor.verify.protocol import VerifyConfig

    @dataclass(frozen=True)
    class Job:
        rule: str | None
        proposal: Proposal
        base_lr: float | None = 1.0
        raises_lr: bool = False

    # candidate symptom per rung LR: 0.3 -> 3/5 seeds, 0.1 -> 0/5 (the baseline shows it in 5/5)
    hits = {0.3: 3, 0.1: 0}
    settled = []

    def judge(job):
        lr = round(float(job.proposal.config.get("lr_scale", 0.3)), 3)  # the clip patch leaves 3/5 too
        c = hits[lr]
        return Verdict(job.rule, job.proposal.id, "k", VerdictKind.CONFIRMED if c == 0 else VerdictKind.INCONCLUSIVE,
                       (0, 1, 2, 3, 4), None, None, None, f"lr {lr}",
                       {"baseline_symptom": [True] * 5, "candidate_symptom": [True] * c + [False] * (5 - c),
                        "fisher_p": 0.004 if c == 0 else 0.22, "steps": {"baseline": 500, "candidate": 500}})

    def add_rung(job, config):
        return Job(job.rule, Proposal(job.proposal.id, "k", "", "", config, ""), job.base_lr)

    lower = Job("divergence", Proposal("p", "k", "", "", {"lr_scale": 0.3}, ""))
    other = Job("divergence", Proposal("q", "k", "", "", {"clip_grad_norm": 1.0}, ""))
    got = list(climb([lower, other], judge, add_rung, settled.append, VerifyConfig()))
    (job, v, rungs), (job2, v2, rungs2) = got
    assert job is lower and len(rungs) == 2 and len(settled) == 1  # the second rung cleared it: no third
    assert v.verdict is VerdictKind.CONFIRMED and v.details["largest_confirmed_lr"] == pytest.approx(0.1)
    assert [r["confirmed"] for r in v.details["ladder"]] == [False, True]
    assert job2 is other and rungs2 == [v2] and "ladder" not in v2.details  # no LR in the patch: no ladder
