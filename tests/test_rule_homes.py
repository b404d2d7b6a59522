"""A rule's file says everything about the rule: no module outside the rule engine names a
built-in rule, the proposal kinds a rule file lists are the ones planned, and a rule added with
``--rules DIR`` is treated like a built-in one by diagnose, report and verify."""

from __future__ import annotations

import ast
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import lrdoctor
from lrdoctor.engine.diagnose import diagnose_runs
from lrdoctor.engine.spec import builtin_rules_dir, load_rules
from lrdoctor.model import Run, make_scalars
from lrdoctor.proposals import KINDS, POLICIES, propose
from lrdoctor.roles import RoleView

PACKAGE = Path(lrdoctor.__file__).parent
#: The fault recipes of the built-in workloads label the runs they write with the rule each is
#: meant to trigger: ground truth about the rules (like tests/rule_cases), not knowledge of them.
GROUND_TRUTH = {PACKAGE / "workloads" / "recipes.py"}


def _string_constants(path: Path) -> set[str]:
    return {n.value for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def test_no_module_outside_the_engine_names_a_builtin_rule():
    names = {r.name for r in load_rules()}
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if PACKAGE / "engine" in path.parents or path in GROUND_TRUTH:
            continue
        hits = names & _string_constants(path)
        if hits:
            offenders.append(f"{path.relative_to(PACKAGE.parent)}: {sorted(hits)}")
    assert not offenders, "rule names outside lrdoctor/engine/ (declare the fact in the rule's YAML):\n" + \
        "\n".join(offenders)


def test_rule_files_list_registered_kinds_and_policies_rank_only_listed_kinds():
    rules = load_rules()
    for rule in rules:
        assert rule.proposals, rule.name
        assert set(rule.proposals) <= set(KINDS), rule.name
        assert rule.proposal_policy in POLICIES, rule.name
    # a policy entry no rule file lists would be a planner that never runs
    for name, policy in POLICIES.items():
        listed = {k for r in rules if r.proposal_policy == name for k in r.proposals}
        assert set(policy.ranks) <= listed, name


def _run(n: int = 400, blow_at: int = 250, seed: int = 0) -> Run:
    """Loss falls, then blows up to NaN at ``blow_at``; grad norm and LR logged."""
    rng = np.random.default_rng(seed)
    steps = np.arange(n)
    loss = 2.0 * np.exp(-steps / 80) + 0.3 + 0.02 * rng.standard_normal(n)
    loss[blow_at:] = loss[blow_at] * np.exp(np.arange(n - blow_at) / 8.0)
    loss[blow_at + 40:] = np.nan
    grad = np.abs(1.0 + 0.1 * rng.standard_normal(n))
    grad[blow_at:] *= 50
    lr = np.full(n, 0.3)
    tags = ["train/loss"] * n + ["grad_norm"] * n + ["lr"] * n
    scal = make_scalars(tags, np.concatenate([steps] * 3), None, np.concatenate([loss, grad, lr]))
    return Run(name="blowup", source="mem", format="csv", scalars=scal, hparams={"optimizer": "SGD", "lr": 0.3})


@pytest.fixture(scope="module")
def user_rules(tmp_path_factory) -> Path:
    """A copy of the built-in divergence rule under another name and code, as a user would add it."""
    d = tmp_path_factory.mktemp("user_rules")
    data = yaml.safe_load((builtin_rules_dir() / "divergence.yaml").read_text())
    data.update(name="blow-up-copy", code="USR901", title="Copy of divergence")
    (d / "blow-up-copy.yaml").write_text(yaml.safe_dump(data))
    return d


def test_user_rule_is_diagnosed_and_proposed_like_the_original(user_rules):
    rules = load_rules([user_rules])
    (diag,) = diagnose_runs([_run()], rules=rules, jobs=1)
    by_rule = {f.rule: f for f in diag.findings}
    orig, copy = by_rule["divergence"], by_rule["blow-up-copy"]
    assert copy.code == "USR901"
    for attr in ("severity", "start_step", "end_step", "steps", "message", "evidence",
                 "symptom_role", "unstable_in_sweep", "markers"):
        assert getattr(copy, attr) == getattr(orig, attr), attr
    assert orig.proposals, "the original must propose something for the comparison to mean anything"
    strip = [(p.id.split(":", 1)[1], p.config, p.rank) for p in orig.proposals]
    assert [(p.id.split(":", 1)[1], p.config, p.rank) for p in copy.proposals] == strip
    assert all(p.id.startswith("blow-up-copy:") for p in copy.proposals)


def test_user_rule_lists_only_some_kinds_and_gets_only_those(user_rules, tmp_path):
    data = yaml.safe_load((user_rules / "blow-up-copy.yaml").read_text())
    data.update(proposals=["clip_grad_norm", "add_warmup"])
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(data))
    (rule,) = [r for r in load_rules([tmp_path]) if r.name == "blow-up-copy"]
    (diag,) = diagnose_runs([_run()], rules=[rule], jobs=1)
    (f,) = diag.findings
    assert {p.kind for p in f.proposals} <= {"clip_grad_norm", "add_warmup"}
    assert "clip_grad_norm" in {p.kind for p in f.proposals}
    assert [p.kind for p in propose(f, RoleView.of(_run()), rule)] == [p.kind for p in f.proposals]


def test_unknown_proposal_kind_in_a_user_rule_is_a_one_line_error(user_rules, tmp_path, capsys):
    from lrdoctor.cli import main

    data = yaml.safe_load((user_rules / "blow-up-copy.yaml").read_text())
    data.update(proposals=["lower_peak_lr", "clip_grad_nrom"])
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(data))
    csv = tmp_path / "log.csv"
    csv.write_text("step,loss\n0,1.0\n1,0.9\n")
    assert main(["diagnose", str(csv), "--rules", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "clip_grad_nrom" in err and "clip_grad_norm" in err and "Traceback" not in err


def test_user_rule_is_marked_in_the_report_like_the_original(user_rules, tmp_path):
    from lrdoctor.report import write_report
    from lrdoctor.report.data import build_run_view
    from lrdoctor.report.sweep import is_stable

    (diag,) = diagnose_runs([_run()], rules=load_rules([user_rules]), jobs=1)
    view = build_run_view(0, diag, None, max_points=200, with_figure=True)
    marks = {m.rule: m for m in view.figure.marks}
    orig, copy = marks["divergence"], marks["blow-up-copy"]
    assert (copy.role, copy.style, copy.steps) == (orig.role, orig.style, orig.steps) == \
        ("train_loss", "points", orig.steps)
    (only_copy,) = diagnose_runs([_run()], rules=[r for r in load_rules([user_rules]) if r.name == "blow-up-copy"],
                                 jobs=1)
    assert not is_stable(build_run_view(0, only_copy, None, max_points=200, with_figure=False))
    page = write_report([diag], tmp_path / "r.html").read_text()
    assert "blow-up-copy" in page and "USR901" in page


SCRIPT = str(Path(__file__).with_name("verify_train.py"))


def test_user_rule_is_verified_like_the_original(user_rules, tmp_path, capsys):
    """verify --rules DIR --rule COPY: the copy's top proposal is rerun, and the reruns are judged
    by the copy itself (its symptom shows in the baseline reruns, as the original's does)."""
    pytest.importorskip("torch")
    from lrdoctor.cli import main

    run = tmp_path / "lr0.5"
    subprocess.run([sys.executable, SCRIPT, "--lr", "0.5", "--max-steps", "300", "--seed", "0", "--logdir", str(run)],
                   check=True, timeout=120)
    template = (f"{shlex.quote(sys.executable)} {shlex.quote(SCRIPT)} --lr {{lr}} --max-steps {{max_steps}} "
                f"--seed {{seed}} --logdir {{logdir}}")
    (diag,) = lrdoctor.diagnose(run, rules=load_rules([user_rules]))
    top = {f.rule: f.proposals[0].id.split(":", 1)[1] for f in diag.findings}
    assert top["blow-up-copy"] == top["divergence"]
    rc = main(["verify", str(run), "--rules", str(user_rules), "--rule", "blow-up-copy", "--seeds", "3",
               "--budget-steps", "100", "--train", template, "--jobs", "2", "--out", str(tmp_path / "v"), "--json"])
    assert rc == 0
    (v,) = [v for r in json.loads(capsys.readouterr().out)["runs"] for v in r["verdicts"]]
    assert v["rule"] == "blow-up-copy" and v["proposal_id"] == f"blow-up-copy:{top['divergence']}"
    # the reruns are diagnosed with the user's rule too: the baseline shows its symptom
    assert v["details"]["baseline_symptom"] == [True] * 3
    assert all("blow-up-copy" in rules for rules in v["details"]["baseline_rules"])
    assert "blow-up-copy in baseline 3/3" in v["reason"]


def test_a_failing_planner_is_a_visible_proposal_error(monkeypatch, tmp_path):
    """Like a broken detector (a skipped rule with its reason), a planner that raises is shown
    with its finding in the terminal, the JSON and the HTML report; the other kinds still come."""
    import io

    from lrdoctor.output.json_out import dumps
    from lrdoctor.output.terminal import render
    from lrdoctor.report import write_report

    def boom(situation):
        raise RuntimeError("no grad norm for you")

    monkeypatch.setitem(POLICIES["blow-up"].ranks, "clip_grad_norm", boom)
    (diag,) = diagnose_runs([_run()], rules=[r for r in load_rules() if r.name == "divergence"], jobs=1)
    (f,) = diag.findings
    assert f.proposal_errors == ("clip_grad_norm: RuntimeError: no grad norm for you",)
    assert f.proposals and "clip_grad_norm" not in {p.kind for p in f.proposals}
    (doc,) = json.loads(dumps([diag]))["runs"]
    assert doc["findings"][0]["proposal_errors"] == list(f.proposal_errors)
    out = io.StringIO()
    render([diag], out, color=False)
    assert "proposal error clip_grad_norm: RuntimeError: no grad norm for you" in out.getvalue()
    page = write_report([diag], tmp_path / "r.html").read_text()
    assert "proposal error: clip_grad_norm: RuntimeError: no grad norm for you" in page
    # an ordinary finding's JSON keeps its shape
    monkeypatch.undo()
    (ok,) = diagnose_runs([_run()], rules=[r for r in load_rules() if r.name == "divergence"], jobs=1)
    assert "proposal_errors" not in json.loads(dumps([ok]))["runs"][0]["findings"][0]
