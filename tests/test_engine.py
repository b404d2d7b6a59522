"""The rule engine: rule-file validation, --set overrides, skipping, the entry-point registry."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lrdoctor.engine import registry
from lrdoctor.engine.diagnose import diagnose_runs
from lrdoctor.engine.runner import run_rule, run_rules
from lrdoctor.engine.spec import apply_overrides, load_rule_file, load_rules, parse_set, select_rules
from lrdoctor.errors import RuleSpecError
from lrdoctor.model import Finding, Run, SkippedRule, make_scalars
from lrdoctor.roles import RoleView

REPO = Path(__file__).resolve().parents[1]
PLATEAU = (REPO / "rules" / "plateau.yaml").read_text()


def _rule_file(tmp_path: Path, text: str, name: str = "myrule.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def _run(**series) -> Run:
    frames = [make_scalars(role, np.arange(len(v)), None, v) for role, v in series.items()]
    return Run("r", "src", "test", pd.concat(frames, ignore_index=True))


def test_builtin_rules_load_with_the_six_canonical_names():
    names = [r.name for r in load_rules()]
    assert {"divergence", "loss-spike", "plateau", "overfitting", "exploding-gradients",
            "vanishing-gradients"} <= set(names)
    codes = [r.code for r in load_rules()]
    assert len(set(codes)) == len(codes)


def test_unknown_parameter_names_the_file_and_suggests(tmp_path):
    p = _rule_file(tmp_path, PLATEAU.replace("window: 21", "windw: 21"), "plateau.yaml")
    with pytest.raises(RuleSpecError) as err:
        load_rule_file(p)
    assert str(err.value) == f"{p}: unknown parameter 'windw' for detector 'plateau' (did you mean 'window'?)"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("severity: warning", "severity: fatal", "severity 'fatal' must be error, warning or info"),
        ("requires: [train_loss]", "requires: [train_los]", "unknown role 'train_los'"),
        ("kind: plateau", "kind: plateu", "unknown detector kind 'plateu'"),
        ("code: LRD003", "code: 3", "code 3 must look like 'LRD001'"),
        ("    window: 21 ", "    window: wide ", "parameter 'window': expected an integer, got 'wide'"),
        ("name: plateau", "name: Plateau", "must be a lower-case slug"),
        ("title: ", "titel: ", "unknown key 'titel' (did you mean 'title'?)"),
        ("  fix: >", "  fixx: >", "'doc.fix' must be a non-empty string"),
        ("requires: [train_loss]", "requires: [val_loss]", "detector 'plateau' needs role 'train_loss'"),
        ("    window: 21 ", "    window: 0 ", "parameter 'window': must be >= 1, got 0"),
        ("    flat_drop_sigmas: 4.0 ", "    flat_drop_sigmas: -1 ", "parameter 'flat_drop_sigmas': must be >= 0, got -1"),
        ("    window: 21 ", "    window: 2.5 ", "parameter 'window': expected an integer, got 2.5"),
        ("    flat_drop_sigmas: 4.0 ", "    flat_drop_sigmas: .nan ", "parameter 'flat_drop_sigmas': expected a number"),
    ],
)
def test_invalid_rule_files(tmp_path, old, new, message):
    assert old in PLATEAU
    p = _rule_file(tmp_path, PLATEAU.replace(old, new, 1))
    with pytest.raises(RuleSpecError, match=re.escape(message)):
        load_rule_file(p)


def test_scientific_notation_in_rule_yaml(tmp_path):
    """PyYAML (YAML 1.1) reads 5e-2 and inf as strings; float parameters accept them anyway."""
    text = (REPO / "rules" / "vanishing-gradients.yaml").read_text()
    assert "max_norm: 0.05" in text
    p = _rule_file(tmp_path, text.replace("max_norm: 0.05", "max_norm: 5e-2").replace(
        "stall_drop_sigmas: 3.0", "stall_drop_sigmas: inf"), "vanishing-gradients.yaml")
    rule = load_rule_file(p)
    assert rule.params["max_norm"] == 0.05 and rule.params["stall_drop_sigmas"] == float("inf")


def test_out_of_range_error_is_one_line_naming_the_file(tmp_path):
    p = _rule_file(tmp_path, PLATEAU.replace("window: 21", "window: -5", 1), "plateau.yaml")
    with pytest.raises(RuleSpecError) as err:
        load_rule_file(p)
    assert str(err.value) == f"{p}: parameter 'window': must be >= 1, got -5"


@pytest.mark.parametrize(("item", "want"), [("loss-spike.z_threshold=1e9", 1e9), ("loss-spike.z_threshold=1e-3", 1e-3),
                                            ("loss-spike.z_threshold=inf", float("inf")), ("plateau.window=1e2", 100)])
def test_set_accepts_scientific_notation_and_inf(item, want):
    rule_name, param = item.split("=")[0].split(".")
    (rule,) = [r for r in apply_overrides(load_rules(), parse_set([item])) if r.name == rule_name]
    assert rule.params[param] == want and type(rule.params[param]) is type(want)


@pytest.mark.parametrize(("item", "message"), [
    ("loss-spike.z_threshold=0", "--set loss-spike.z_threshold: must be > 0, got 0 (rule loss-spike from rules/loss-spike.yaml)"),
    ("plateau.window=-3", "--set plateau.window: must be >= 1, got -3"),
    ("loss-spike.recover_fraction=1.5", "--set loss-spike.recover_fraction: must be between 0 and 1, got 1.5"),
    ("loss-spike.z_threshold=nan", "expected a number"),
])
def test_set_range_checks(item, message):
    with pytest.raises(RuleSpecError, match=re.escape(message)):
        apply_overrides(load_rules(), parse_set([item]))


def test_invalid_yaml_names_the_line(tmp_path):
    p = _rule_file(tmp_path, "name: x\ncode: [unclosed\n")
    with pytest.raises(RuleSpecError, match=r"myrule.yaml \(line \d+\): invalid YAML"):
        load_rule_file(p)


def test_user_rule_dir_adds_and_replaces_rules(tmp_path):
    _rule_file(tmp_path, PLATEAU.replace("code: LRD003", "code: LRD003").replace("window: 21", "window: 31"),
               "plateau.yaml")
    _rule_file(tmp_path, PLATEAU.replace("name: plateau", "name: plateau-strict").replace("LRD003", "USR001")
               .replace("flat_drop_sigmas: 4.0", "flat_drop_sigmas: 5.0"), "strict.yaml")
    rules = {r.name: r for r in load_rules([tmp_path])}
    assert rules["plateau"].params["window"] == 31
    assert rules["plateau-strict"].params["flat_drop_sigmas"] == 5.0
    assert rules["plateau-strict"].code == "USR001"


def test_duplicate_code_is_an_error(tmp_path):
    _rule_file(tmp_path, PLATEAU.replace("name: plateau", "name: other"), "other.yaml")
    with pytest.raises(RuleSpecError, match="code LRD003 is also used by rule 'plateau'"):
        load_rules([tmp_path])


def test_set_overrides_are_type_checked():
    rules = load_rules()
    out = {r.name: r for r in apply_overrides(rules, parse_set(["plateau.window=51", "divergence.ratio_over_best=8"]))}
    assert out["plateau"].params["window"] == 51
    assert out["divergence"].params["ratio_over_best"] == 8.0 and isinstance(out["divergence"].params["ratio_over_best"], float)
    with pytest.raises(RuleSpecError, match=r"--set plateau.windw: unknown parameter 'windw' \(did you mean 'window'\?\)"):
        apply_overrides(rules, parse_set(["plateau.windw=3"]))
    with pytest.raises(RuleSpecError, match="expected an integer, got 2.5"):
        apply_overrides(rules, parse_set(["plateau.window=2.5"]))
    with pytest.raises(RuleSpecError, match="unknown rule 'platau'"):
        apply_overrides(rules, parse_set(["platau.window=3"]))
    with pytest.raises(RuleSpecError, match="RULE.PARAM=VALUE"):
        parse_set(["window=3"])


def test_set_changes_what_fires():
    x = 2.3 + 0.05 * np.random.default_rng(0).standard_normal(40)
    view = RoleView.of(_run(train_loss=x))
    (rule,) = select_rules(load_rules(), ["plateau"])
    assert isinstance(run_rule(rule, view), Finding)
    assert run_rule(apply_overrides([rule], parse_set(["plateau.min_points=100"]))[0], view) is None


def test_missing_role_is_skipped_not_a_finding():
    d = run_rules(RoleView.of(_run(train_loss=np.linspace(2, 1, 50))), load_rules())
    skipped = {s.rule: s.reason for s in d.skipped_rules}
    assert skipped["overfitting"] == "missing role: val_loss"
    assert skipped["exploding-gradients"] == "missing role: grad_norm"
    assert "overfitting" not in {f.rule for f in d.findings}


def test_select_and_ignore():
    rules = load_rules()
    assert [r.name for r in select_rules(rules, ["plateau", "LRD001"])] == ["divergence", "plateau"]
    assert "plateau" not in [r.name for r in select_rules(rules, (), ["plateau"])]
    with pytest.raises(RuleSpecError, match="unknown rule 'nope'"):
        select_rules(rules, ["nope"])


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A real installed distribution (dist-info on sys.path) declaring two detectors."""
    (tmp_path / "lrd_plugin_demo.py").write_text(textwrap.dedent("""
        from lrdoctor.detectors.base import Evidence

        def always(train_loss, *, level: float = 1.0):
            return Evidence(int(train_loss.steps[0]), int(train_loss.steps[-1]), (), {"level": level})

        def broken(train_loss, *, level: float = 1.0):
            raise ZeroDivisionError("boom")
    """))
    dist = tmp_path / "lrd_plugin_demo-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lrd-plugin-demo\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[lrdoctor.detectors]\nalways_fires = lrd_plugin_demo:always\nbroken = lrd_plugin_demo:broken\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.refresh()
    yield tmp_path
    monkeypatch.undo()
    registry.refresh()


def _plugin_rule(kind: str, name: str, code: str) -> str:
    return textwrap.dedent(f"""\
        name: {name}
        code: {code}
        title: A third-party rule
        severity: info
        requires: [train_loss]
        detector: {{kind: {kind}, params: {{level: 2}}}}
        message: "level {{level}}"
        doc: {{what: w, why: w, example: e, fix: f}}
    """)


def test_entry_point_detectors_register_and_a_raising_one_is_skipped(plugin, tmp_path):
    assert "always_fires" in registry.kinds()
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    _rule_file(rules_dir, _plugin_rule("always_fires", "custom", "USR001"), "custom.yaml")
    _rule_file(rules_dir, _plugin_rule("broken", "crashy", "USR002"), "crashy.yaml")
    rules = select_rules(load_rules([rules_dir]), ["custom", "crashy", "divergence"])
    (d,) = diagnose_runs([_run(train_loss=np.linspace(2, 1, 20))], rules=rules, proposals=False)
    assert [(f.rule, f.message) for f in d.findings] == [("custom", "level 2.0")]
    assert d.skipped_rules == (SkippedRule("crashy", "detector error: ZeroDivisionError: boom"),)


def test_parallel_and_sequential_agree():
    rng = np.random.default_rng(1)
    runs = []
    for i in range(10):
        x = 2 * np.exp(-np.arange(300) / 60) + 0.3 + 0.01 * rng.standard_normal(300)
        if i % 2:
            x[150] = np.nan
        runs.append(Run(f"r{i}", "s", "test", make_scalars("loss", np.arange(300), None, x)))
    seq = diagnose_runs(runs, jobs=1, proposals=False)
    par = diagnose_runs(runs, jobs=2, proposals=False)
    assert [d.run.name for d in par] == [f"r{i}" for i in range(10)]
    assert [[f.to_dict() for f in d.findings] for d in seq] == [[f.to_dict() for f in d.findings] for d in par]
    assert [bool(d.findings) for d in seq] == [bool(i % 2) for i in range(10)]


def test_rules_ship_in_the_wheel_and_load_from_a_non_editable_install(tmp_path):
    pytest.importorskip("setuptools")  # the wheel is built offline, without build isolation
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(REPO / "pyproject.toml", src)
    readme = REPO / "README.md"
    (src / "README.md").write_text(readme.read_text() if readme.exists() else "lrdoctor\n")
    shutil.copytree(REPO / "rules", src / "rules")
    shutil.copytree(REPO / "lrdoctor", src / "lrdoctor", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    target = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True, capture_output=True)
    code = ("import lrdoctor, lrdoctor.engine.spec as s; print(lrdoctor.__file__); "
            "print(','.join(r.name for r in s.load_rules()))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": ""},
                         check=True, capture_output=True, text=True).stdout.splitlines()
    assert out[0].startswith(str(target))
    assert {"divergence", "plateau", "overfitting"} <= set(out[1].split(","))
