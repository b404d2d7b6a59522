"""Forked verification: a plain user script with its own checkpoints (``tests/ckpt_train.py``),
resumed through ``{resume_from}``/``{start_step}`` with ``{max_steps}`` as the absolute stop step;
``--no-fork`` and a trend rule plan reruns from step 0; the LR ladder climbs only while a rung
leaves the symptom in some seed."""

from __future__ import annotations

import json
import math
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from lrdoctor.cli import main  # noqa: E402

SCRIPT = str(Path(__file__).with_name("ckpt_train.py"))
PY = shlex.quote(sys.executable)
# 12,000 steps whose warmup ramps into an unstable LR: the loss blows up at ~73% of the run; a
# checkpoint every 50 steps in the script's own format (~10 s on one busy core)
STEPS = 12_000
ORIGINAL = ("--lr", "0.85", "--max-steps", str(STEPS), "--warmup", str(STEPS), "--ckpt-every", "50")


def template(*extra: str) -> str:
    return (f"{PY} {shlex.quote(SCRIPT)} --resume {{resume_from}} --start-step {{start_step}} --max-steps {{max_steps}} "
            f"--lr {{lr}} --seed {{seed}} --logdir {{logdir}} " + " ".join(extra))


@pytest.fixture(scope="module")
def diverged(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("fork")
    subprocess.run([sys.executable, SCRIPT, "--logdir", str(d / "run"), "--seed", "0", *ORIGINAL,
                    "--ckpt-dir", str(d / "ckpt")], check=True, timeout=300)
    return d / "run", d / "ckpt"


def _argvs(out: Path) -> list[list[str]]:
    return [json.loads(f.read_text())["argv"] for f in sorted(out.rglob("command.json"))]


def test_plain_script_late_divergence_confirmed_from_its_own_checkpoints_under_20_percent(diverged, tmp_path, capsys):
    """The issue's user script: its own checkpoint format found through --checkpoints, resumed via
    {resume_from}/{start_step}, {max_steps} the absolute stop step; the top proposal is CONFIRMED
    and the whole verification costs at most 20% of the original run's steps."""
    run, ckpt = diverged
    args = ["verify", str(run), "--rule", "divergence", "--train", template("--warmup", str(STEPS)),
            "--checkpoints", str(ckpt / "ckpt_{step}.pt"), "--jobs", "2", "--out", str(tmp_path / "v")]
    rc = main([*args, "--json"])
    out = json.loads(capsys.readouterr().out)
    (r,) = out["runs"]
    (v,) = r["verdicts"]
    assert rc == 0 and v["verdict"] == "CONFIRMED", v["reason"]
    fork, cost = v["details"]["fork"], v["details"]["cost"]
    assert fork["checkpoint"] == str(ckpt / f"ckpt_{fork['start_step']}.pt") and fork["checkpoint_kind"] == "pattern"
    onset = _finding(run, "divergence").start_step
    assert 0.6 * STEPS < onset < 0.9 * STEPS
    assert fork["start_step"] == (onset - 100) // 50 * 50  # the latest checkpoint 100 steps before the onset
    assert fork["budget_steps"] <= 100 + 50 + max(50, 0.5 * 150)  # past the onset plus the recovery margin
    # every rerun resumed the chosen checkpoint and stopped at the absolute stop step
    argvs = _argvs(tmp_path / "v")
    assert len(argvs) == 10 + 5 * (len(v["details"]["ladder"]) - 1)
    for argv in argvs:
        start = int(argv[argv.index("--start-step") + 1])
        assert start == fork["start_step"] and argv[argv.index("--resume") + 1] == fork["checkpoint"]
        assert int(argv[argv.index("--max-steps") + 1]) == start + fork["budget_steps"]
    for f in (tmp_path / "v").rglob("metrics.csv"):
        assert int(f.read_text().splitlines()[1].split(",")[0]) == fork["start_step"] + 1
    # cost: each rerun's steps from its logs (this script runs on through NaN, so every rerun runs its
    # whole budget); the run's total counts each rerun once
    n_cand = len(argvs) - 5
    assert cost["baseline_steps"] == 5 * fork["budget_steps"] and cost["candidate_steps"] == n_cand * fork["budget_steps"]
    assert cost["total_steps"] == cost["baseline_steps"] + cost["candidate_steps"]
    assert cost["original_steps"] == STEPS and cost["ratio"] == pytest.approx(cost["total_steps"] / STEPS)
    assert cost["ratio"] <= 0.20
    assert r["cost"] == {"reruns": len(argvs), "steps": cost["total_steps"], "original_steps": STEPS,
                         "ratio": pytest.approx(cost["total_steps"] / STEPS)}
    main(args)  # every rerun reused; the text output ends with the cost line
    text = capsys.readouterr().out.strip().splitlines()
    pct = 100 * cost["total_steps"] / STEPS
    assert pct <= 20.0
    assert text[-1] == f"verification: {len(argvs)} reruns, {cost['total_steps']:,} steps = {pct:.1f}% of the original run"
    assert any(line.strip().startswith(f"start: forked from the pattern checkpoint at step {fork['start_step']}")
               for line in text)
    assert len(_argvs(tmp_path / "v")) == len(argvs)  # nothing rerun the second time

    # the no-op control, forked from the same checkpoint and sharing the baseline reruns: never CONFIRMED
    assert main([*args, "--proposal", "patch", "--patch", "{}", "--json"]) == 0
    (noop,) = json.loads(capsys.readouterr().out)["runs"][0]["verdicts"]
    assert noop["verdict"] == "REJECTED" and "not removed" in noop["reason"], noop["reason"]
    assert noop["details"]["fork"] == fork and len(_argvs(tmp_path / "v")) == len(argvs) + 5


def test_constant_lr_divergence_climbs_the_ladder_to_the_largest_stable_lr(tmp_path, capsys):
    """The issue's new user: plain SGD (momentum 0.9) at a constant lr=2.0, NaN within 10 steps, no
    checkpoints. Reruns start at step 0 (said); the first cut (x1/3) still diverges, so the ladder
    climbs down and ends CONFIRMED at a rung, naming the largest LR that is stable."""
    run = tmp_path / "run"
    subprocess.run([sys.executable, SCRIPT, "--logdir", str(run), "--seed", "0", "--lr", "2.0", "--max-steps", "60",
                    "--hidden", "256"], check=True, timeout=120)
    losses = [float(line.split(",")[1]) for line in (run / "metrics.csv").read_text().splitlines()[1:11]]
    assert any(not math.isfinite(x) for x in losses)  # NaN within 10 steps
    args = ["verify", str(run), "--rule", "divergence", "--train", template("--hidden", "256"), "--jobs", "2",
            "--out", str(tmp_path / "v")]
    rc = main([*args, "--json"])
    (v,) = json.loads(capsys.readouterr().out)["runs"][0]["verdicts"]
    assert rc == 0 and v["verdict"] == "CONFIRMED", v["reason"]
    d = v["details"]
    assert d["fork"]["start_step"] == 0 and "no checkpoint found" in d["fork"]["note"]
    ladder = d["ladder"]
    assert len(ladder) >= 2 and ladder[0]["lr"] == pytest.approx(2.0 / 3, rel=0.02) and not ladder[0]["confirmed"]
    assert [r["rung"] for r in ladder] == list(range(1, len(ladder) + 1))
    for r in ladder:  # every rung with its own counts and p-values
        assert {"lr", "baseline_hits", "candidate_hits", "n", "fisher_p", "holm_level", "verdict", "confirmed"} <= set(r)
        assert r["n"] == 5 and r["baseline_hits"] == 5 and 0 <= r["candidate_hits"] <= 5
        assert 0 < r["fisher_p"] <= 1 and 0 < r["holm_level"] < 0.05
    assert ladder[0]["candidate_hits"] > 0  # why it climbed
    # x1/3 after a rung that helped in some seed, x1/9 after one that did not
    for a, b in zip(ladder, ladder[1:], strict=False):
        assert b["lr"] == pytest.approx(a["lr"] / (9 if a["candidate_hits"] >= a["baseline_hits"] else 3))
    confirmed = [r for r in ladder if r["confirmed"]]
    assert confirmed and confirmed[-1] is ladder[-1]  # it stops at the first rung that is confirmed
    best = max(confirmed, key=lambda r: r["lr"])
    assert best["candidate_hits"] == 0 and best["fisher_p"] <= best["holm_level"]
    assert d["largest_confirmed_lr"] == pytest.approx(best["lr"])
    assert v["reason"].startswith(f"largest LR confirmed: {best['lr']:.3g} (rung {best['rung']} of {len(ladder)}")
    assert d["cost"]["reruns"] == 5 * (1 + len(ladder))
    main(args)  # every rerun reused; the terminal says the same, rung by rung
    text = capsys.readouterr().out.strip().splitlines()
    assert text[-1].startswith(f"verification: {5 * (1 + len(ladder))} reruns, ") and "% of the original run" in text[-1]
    assert any(f"largest LR confirmed: {best['lr']:.3g}" in line for line in text)
    for r in ladder:
        line = next(x.strip() for x in text if x.strip().startswith(f"rung {r['rung']}: lr={r['lr']:.3g} "))
        assert f"symptom in {r['candidate_hits']}/5 seeds (baseline 5/5), p={r['fisher_p']:.3g}" in line
        assert ("(confirmed)" in line) == r["confirmed"]


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
                template("--warmup", str(STEPS)))


def test_no_fork_and_missing_checkpoints_plan_reruns_from_step_zero(diverged, tmp_path):
    run, ckpt = diverged
    forked = _planned(run, tmp_path, "divergence", checkpoints=str(ckpt / "ckpt_{step}.pt"))
    off = _planned(run, tmp_path, "divergence", checkpoints=str(ckpt / "ckpt_{step}.pt"), fork=False)
    none = _planned(run, tmp_path, "divergence", checkpoints=str(tmp_path / "nothing_{step}.pt"))
    assert all(t.resume_from and t.start_step > 0 for t in forked.tasks.values())
    for p, why in ((off, "forking off"), (none, "no checkpoint matched --checkpoints")):
        assert all(t.resume_from is None and t.start_step == 0 for t in p.tasks.values())
        assert why in p.jobs[0].fork.note
        # from step 0 the command line and the digest are those of a verify without checkpoints
        t = next(iter(p.tasks.values()))
        vals = t.backend.values(t)
        assert vals["resume_from"] == "" and vals["start_step"] == "0" and vals["max_steps"] == str(t.max_steps)
        assert "start_step" not in t.full_patch() and "resume_from" not in t.full_patch()


def test_run_stopped_in_warmup_says_its_logged_lr_is_short_of_the_peak_and_base_lr_sets_it(tmp_path, caplog, capsys):
    """A script that stops at the first NaN, during its warmup to lr=0.85: the highest LR it logged
    (~0.58) is not the --lr that replays it. lrdoctor says so; --base-lr gives the peak."""
    import logging

    from lrdoctor.readers import discover
    from lrdoctor.verify.protocol import VerifyConfig
    from lrdoctor.verify.runner import plan

    run = tmp_path / "run"
    subprocess.run([sys.executable, SCRIPT, "--logdir", str(run), "--seed", "0", "--lr", "0.85", "--max-steps", "2000",
                    "--warmup", "2000", "--stop-on-nan"], check=True, timeout=120)
    rows = (run / "metrics.csv").read_text().splitlines()[1:]
    last_lr = float(rows[-1].split(",")[3])
    assert len(rows) < 2000 and rows[-1].split(",")[1] == "nan" and last_lr < 0.8
    finding = _finding(run, "divergence")
    (r,) = discover(str(run))

    def baseline_lr(**cfg) -> tuple[str, float | None]:
        p = plan([(r, finding, finding.proposals[:1])], VerifyConfig(seeds=3, **cfg), tmp_path / "v",
                 template("--warmup", "2000"))
        t = p.tasks[p.jobs[0].baseline[0]]
        return t.backend.values(t)["lr"], p.jobs[0].base_lr

    with caplog.at_level(logging.WARNING, logger="lrdoctor"):
        lr, job_lr = baseline_lr()
    assert float(lr) == pytest.approx(last_lr) and job_lr == pytest.approx(last_lr)
    (warning,) = [m for m in caplog.messages if "--base-lr" in m]
    assert f"{{lr}} is {last_lr:.3g}" in warning and "still rising" in warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lrdoctor"):
        lr, job_lr = baseline_lr(base_lr=0.85)
    assert float(lr) == 0.85 and job_lr == 0.85 and not caplog.messages
    rc = main(["verify", str(run), "--train", template(), "--base-lr", "0", "--out", str(tmp_path / "v0")])
    assert rc == 2 and capsys.readouterr().err.strip().endswith("--base-lr must be positive, got 0.0")


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

    # candidate symptom per rung LR (the baseline shows it in 5/5): 0.3 -> 3/5 seeds, 0.1 -> 0/5; a
    # timid cut 0.9 -> 5/5 (no effect: the next rung is x1/9), 0.1 -> 0/5
    hits = {0.3: 3, 0.1: 0, 0.9: 5}
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
    timid = Job("divergence", Proposal("t", "k", "", "", {"lr_scale": 0.9}, ""))
    got = list(climb([lower, other, timid], judge, add_rung, settled.append, VerifyConfig()))
    (job, v, rungs), (job2, v2, rungs2), (job3, v3, rungs3) = got
    assert job is lower and len(rungs) == 2 and len(settled) == 1  # the second rung cleared it: no third
    assert v.verdict is VerdictKind.CONFIRMED and v.details["largest_confirmed_lr"] == pytest.approx(0.1)
    assert [r["confirmed"] for r in v.details["ladder"]] == [False, True]
    assert job2 is other and rungs2 == [v2] and "ladder" not in v2.details  # no LR in the patch: no ladder
    assert job3 is timid and [r["lr"] for r in v3.details["ladder"]] == [pytest.approx(0.9), pytest.approx(0.1)]
    assert v3.details["largest_confirmed_lr"] == pytest.approx(0.1)
