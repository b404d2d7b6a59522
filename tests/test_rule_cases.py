"""Rule pass/fail cases as data (sqlfluff-style): tests/rule_cases/<rule>.yaml.

Each file names a rule and holds cases. A case gives series by role -- literal ``values``
(optionally ``steps``), or an ``expr`` of ``t`` (the step array) and ``rng`` evaluated with numpy,
plus ``set: {index: value}`` point overrides -- and what the rule must report: ``fires: false``,
or ``fires: true`` with any of ``start_step``, ``end_step``, ``start_between``, ``steps``,
``steps_include``, ``evidence`` (approximate), ``severity`` (default: the rule's),
``message_has`` (substrings), or ``skipped: "missing role: ..."``. ``params`` are --set overrides;
``step_axis: epoch`` makes the case a run indexed by epoch (a Keras log: every point an epoch mean).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from lrdoctor.engine.runner import run_rule
from lrdoctor.engine.spec import apply_overrides, load_rules
from lrdoctor.model import Finding, Run, SkippedRule, make_scalars
from lrdoctor.roles import RoleView

CASES_DIR = Path(__file__).parent / "rule_cases"
RULES = {r.name: r for r in load_rules()}


def _cases():
    for path in sorted(CASES_DIR.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        for name, case in doc["cases"].items():
            yield pytest.param(doc["rule"], case, id=f"{doc['rule']}:{name}")


def build_series(spec: dict) -> tuple[np.ndarray, np.ndarray]:
    if "values" in spec:
        values = np.asarray(spec["values"], dtype=np.float64)
        steps = np.asarray(spec.get("steps", np.arange(len(values)) * spec.get("every", 1)), dtype=np.int64)
    else:
        n, every = int(spec["n"]), int(spec.get("every", 1))
        t = np.arange(n, dtype=np.int64) * every
        rng = np.random.default_rng(spec.get("seed", 0))
        namespace = {"np": np, "t": t.astype(np.float64), "rng": rng, "n": n}
        values = np.broadcast_to(np.asarray(eval(spec["expr"], namespace), dtype=np.float64), (n,)).copy()
        steps = t
    for idx, v in (spec.get("set") or {}).items():
        values[int(idx)] = float(v)
    return steps, values


def build_run(series: dict, step_axis: str = "step") -> Run:
    parts = [make_scalars(role, *_sv(spec)) for role, spec in series.items()]
    return Run(name="case", source="case", format="test", scalars=pd.concat(parts, ignore_index=True),
               step_axis=step_axis)


def _sv(spec):
    steps, values = build_series(spec)
    return steps, None, values


@pytest.mark.parametrize(("rule_name", "case"), list(_cases()))
def test_rule_case(rule_name: str, case: dict) -> None:
    rule = RULES[rule_name]
    if case.get("params"):
        rule = apply_overrides([rule], {rule_name: case["params"]})[0]
    out = run_rule(rule, RoleView.of(build_run(case["series"], case.get("step_axis", "step"))))
    if "skipped" in case:
        assert isinstance(out, SkippedRule) and out.reason == case["skipped"], out
        return
    if not case["fires"]:
        assert out is None, f"unexpected finding: {out}"
        return
    assert isinstance(out, Finding), f"expected a finding, got {out}"
    assert out.rule == rule_name and out.message
    assert out.severity.value == case.get("severity", rule.severity.value), out
    for text in case.get("message_has", []):
        assert text in out.message, out.message
    if "end_step" in case:
        assert out.end_step == case["end_step"], out
    if "start_step" in case:
        assert out.start_step == case["start_step"], out
    if "start_between" in case:
        lo, hi = case["start_between"]
        assert lo <= out.start_step <= hi, out
    if "steps" in case:
        assert list(out.steps) == case["steps"], out
    for s in case.get("steps_include", []):
        assert s in out.steps, out
    for key, want in (case.get("evidence") or {}).items():
        got = out.evidence[key]
        if isinstance(want, float):
            assert got == pytest.approx(want, rel=0.05), (key, got)
        else:
            assert got == want, (key, got)


def test_every_rule_has_cases() -> None:
    covered = {yaml.safe_load(p.read_text())["rule"] for p in CASES_DIR.glob("*.yaml")}
    assert set(RULES) <= covered
