"""``lrdoctor verify`` end to end: real trainings rerun through each backend, real verdicts."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from lrdoctor.cli import main  # noqa: E402

SCRIPT = str(Path(__file__).with_name("verify_train.py"))
PY = shlex.quote(sys.executable)
TEMPLATE = f"{PY} {shlex.quote(SCRIPT)} --lr {{lr}} --max-steps {{max_steps}} --seed {{seed}} --logdir {{logdir}}"


REQUIRED = {"rule", "proposal_id", "kind", "verdict", "seeds", "p_value", "ci", "p_better", "reason"}


def verdicts(capsys, save: Path | None = None, err: list[str] | None = None) -> list[dict]:
    """The verdicts of a ``verify --json`` run; its stderr (the warnings) appended to ``err``."""
    cap = capsys.readouterr()
    text = cap.out
    if err is not None:
        err.append(cap.err)
    if save is not None:
        save.write_text(text)
    out = json.loads(text)
    assert set(out) == {"runs"}
    got = [v for r in out["runs"] for v in r["verdicts"]]
    assert all(set(v) == REQUIRED | {"details"} for v in got)
    return got


def write_script_run(d: Path) -> Path:
    """A run of the tiny script at an LR that diverges (SGD momentum 0.9, lr 0.5), logged as CSV."""
    subprocess.run([sys.executable, SCRIPT, "--lr", "0.5", "--max-steps", "300", "--seed", "0", "--logdir", str(d)],
                   check=True, timeout=120)
    return d


@pytest.fixture(scope="module")
def _script_run_cache() -> dict[str, Path]:
    return {}


@pytest.fixture
def script_run(_script_run_cache, tmp_path_factory) -> Path:
    """The script run, trained once per module but re-made if its directory has gone (a pytest run
    sharing the default basetemp may prune it); tests only read it."""
    d = _script_run_cache.get("run")
    if d is None or not (d / "metrics.csv").is_file():
        d = _script_run_cache["run"] = write_script_run(tmp_path_factory.mktemp("script_run") / "lr0.5")
    return d


def test_workload_divergence_good_fix_confirmed_noop_control_not(tmp_path, capsys):
    """A built-in workload's run (way a). The candidates are fixed patches so that this test checks
    the harness, not the proposal ranking (the top proposals are scored by the benchmark)."""
    from lrdoctor.workloads.recipes import recipe_config
    from lrdoctor.workloads.training import train

    run = tmp_path / "divergence"
    train(recipe_config("divergence", "mlp_regressor", seed=0), run, "jsonl", "cpu")
    out = tmp_path / "verify"
    base = ["verify", str(run), "--rule", "divergence", "--proposal", "patch", "--seeds", "5", "--jobs", "2",
            "--out", str(out), "--device", "auto", "--json"]
    assert main([*base, "--patch", '{"lr": 0.1}']) == 0  # 30x lower peak LR: a fix that works
    vfile = tmp_path / "verdicts.json"
    (good,) = verdicts(capsys, save=vfile)
    assert good["verdict"] == "CONFIRMED", good["reason"]
    assert good["seeds"] == [0, 1, 2, 3, 4] and good["p_value"] < 0.05
    assert good["ci"][1] < 0 and good["p_better"] > 0.9
    assert main([*base, "--patch", "{}"]) == 0  # no-op control, sharing the baseline reruns
    (noop,) = verdicts(capsys)
    assert noop["verdict"] == "REJECTED" and "not removed" in noop["reason"]
    assert sorted(p.name for p in run.iterdir()) == ["lrdoctor-run.json", "metrics.jsonl"]  # input untouched
    markers = sorted(out.rglob("lrdoctor-rerun.done"))
    assert len(markers) == 15  # 5 baselines shared by both patches + 5 candidates each
    before = [m.stat().st_mtime_ns for m in markers]
    assert main([*base, "--patch", "{}"]) == 0  # repeated: nothing is redone, same verdict
    assert verdicts(capsys)[0]["verdict"] == "REJECTED"
    assert [m.stat().st_mtime_ns for m in markers] == before

    # the saved --json feeds the report: per-seed baseline vs candidate curves of the target metric
    curves = good["details"]["curves"]
    assert curves["metric"] == good["details"]["target_role"] == "val_loss"
    assert sorted(curves["baseline"]) == sorted(curves["candidate"]) == ["0", "1", "2", "3", "4"]
    for arm in ("baseline", "candidate"):
        for c in curves[arm].values():
            assert 2 <= len(c["steps"]) == len(c["values"]) <= 500 and c["steps"] == sorted(c["steps"])
    assert "nan" in curves["baseline"]["0"]["values"] or "inf" in curves["baseline"]["0"]["values"]
    train_curves = good["details"]["symptom_curves"]  # divergence is judged on the train loss
    assert train_curves["metric"] == "train_loss" and sorted(train_curves["candidate"]) == ["0", "1", "2", "3", "4"]
    assert len(train_curves["candidate"]["0"]["steps"]) > len(curves["candidate"]["0"]["steps"])
    html = tmp_path / "report.html"
    assert main(["report", str(run), "-o", str(html), "--verdicts", str(vfile), "-j", "1"]) == 0
    page = html.read_text()
    assert 'data-fig="' in page and '-verify-0"' in page and 'alt="baseline and candidate reruns per seed"' in page
    assert "did not record per-seed curves" not in page and "CONFIRMED" in page


def test_command_template_confirms_lower_lr(script_run, tmp_path, capsys):
    """Way b: placeholders filled per arm, on a run that is not a workload's (CSV written by the script)."""
    rc = main(["verify", str(script_run), "--rule", "divergence", "--proposal", "patch", "--patch", '{"lr": 0.02}',
               "--budget-steps", "100", "--train", TEMPLATE, "--jobs", "2", "--out", str(tmp_path / "v"), "--json"])
    (v,) = verdicts(capsys)
    assert rc == 0 and v["verdict"] == "CONFIRMED", v["reason"]
    lrs = set()
    for f in (tmp_path / "v").rglob("command.json"):
        argv = json.loads(f.read_text())["argv"]
        assert argv[argv.index("--max-steps") + 1] == "100"
        lrs.add(argv[argv.index("--lr") + 1])
    assert lrs == {"0.5", "0.02"}  # baseline arm: the run's own LR (read from its logged lr)


def test_controller_env_protocol_three_seeds(script_run, tmp_path, capsys, caplog):
    """Way c: no placeholders; the script's Controller takes LR, budget, seed and logdir from the env.
    With 3 seeds even a perfect fix stays at Fisher p = 1/20: INCONCLUSIVE, as the protocol warns."""
    train = f"{PY} {shlex.quote(SCRIPT)} --controller --lr 0.5 --max-steps 1000"
    rc = main(["verify", str(script_run), "--rule", "divergence", "--proposal", "patch", "--patch", '{"lr": 0.02}',
               "--seeds", "3", "--budget-steps", "100", "--train", train, "--jobs", "2", "--out", str(tmp_path / "v"),
               "--json"])
    (v,) = verdicts(capsys)
    assert rc == 0 and v["verdict"] == "INCONCLUSIVE", v["reason"]
    assert "3/3 vs candidate 0/3" in v["reason"] and v["p_value"] == pytest.approx(0.05)
    assert v["p_better"] == 1.0
    logs = sorted((tmp_path / "v").rglob("lrdoctor-metrics.jsonl"))
    assert len(logs) == 6
    for f in logs:
        rows = [json.loads(line.replace("NaN", '"nan"').replace("Infinity", '"inf"')) for line in f.read_text().splitlines()]
        if "baseline" in str(f):  # lr 0.5 diverges: the controller stops at the first NaN/inf loss
            assert len(rows) < 100 and not isinstance(rows[-1]["train_loss"], float)
            assert all(isinstance(r["train_loss"], float) for r in rows[:-1])
        else:
            assert len(rows) == 100  # stopped at the budget


def test_failing_command_gives_error_verdict_with_stderr(script_run, tmp_path, capsys):
    rc = main(["verify", str(script_run), "--rule", "divergence", "--seeds", "3", "--jobs", "1",
               "--train", f"{PY} {shlex.quote(SCRIPT)} --fail --logdir {{logdir}}", "--out", str(tmp_path), "--json"])
    (v,) = verdicts(capsys)
    assert rc == 1 and v["verdict"] == "ERROR"
    assert "out of memory (simulated)" in v["reason"] and "exit code 3" in v["reason"]


def test_unreadable_run_reported_and_exit_2_after_verifying_the_rest(script_run, tmp_path, capsys):
    runs = tmp_path / "runs"
    shutil.copytree(script_run, runs / "lr0.5")
    (runs / "broken").mkdir()
    (runs / "broken" / "trainer_state.json").write_text('{"log_history": [{"step": 1, "loss"')  # cut mid-write
    rc = main(["verify", str(runs), "--rule", "divergence", "--seeds", "3", "--jobs", "1",
               "--train", f"{PY} {shlex.quote(SCRIPT)} --fail --logdir {{logdir}}", "--out", str(tmp_path / "v"),
               "--json"])
    cap = capsys.readouterr()
    (run,) = json.loads(cap.out)["runs"]
    assert rc == 2 and "lr0.5" in run["name"] and [v["verdict"] for v in run["verdicts"]] == ["ERROR"]
    (line,) = [x for x in cap.err.splitlines() if x.startswith("lrdoctor: error:")]
    assert line.startswith("lrdoctor: error: run not read: ") and str(runs / "broken" / "trainer_state.json") in line


def test_command_that_writes_no_logs_names_the_logdir(script_run, tmp_path, capsys):
    rc = main(["verify", str(script_run), "--rule", "divergence", "--seeds", "3", "--jobs", "1",
               "--train", TEMPLATE + " --no-logs", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if x.startswith("lrdoctor: error:")]
    assert rc == 2 and "wrote no logs" in line and str(tmp_path) in line
    assert len(list(tmp_path.rglob("lrdoctor-rerun.done"))) == 1  # stopped at the first rerun


def test_run_without_a_way_to_rerun_says_the_three_ways(script_run, tmp_path, capsys):
    rc = main(["verify", str(script_run), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "lrdoctor-run.json" in err and "--train" in err and "Controller.from_env" in err


def test_out_inside_the_input_run_is_refused(script_run, capsys):
    rc = main(["verify", str(script_run), "--train", TEMPLATE, "--out", str(script_run / "verify")])
    assert rc == 2 and "inside the input run" in capsys.readouterr().err
    assert not (script_run / "verify").exists()


def test_bad_template_placeholder_fails_before_any_rerun(script_run, tmp_path, capsys):
    rc = main(["verify", str(script_run), "--train", TEMPLATE + " --x {learning_rate}", "--out", str(tmp_path)])
    assert rc == 2 and "{learning_rate}" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("word, said", [
    ("--x={lr", "expected '}' before end of string"),
    ("--x=}", "Single '}' encountered"),
    ("--x={lr!x}", "{lr!x} has a conversion or format spec"),
    ("--x={lr!r}", "{lr!r} has a conversion or format spec"),
    ("--x={lr:.3}", "{lr:.3} has a conversion or format spec"),
    ("--x={}", "empty placeholder {}"),
])
def test_template_brace_mistakes_fail_in_one_line_before_any_rerun(script_run, tmp_path, capsys, word, said):
    """Unbalanced braces, ``{}`` and conversions/format specs are template errors found while
    checking it (before: a traceback, or for ``{lr!x}`` a traceback as every rerun's reason)."""
    rc = main(["verify", str(script_run), "--train", f"{TEMPLATE} {word}", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2
    assert said in err and repr(word) in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_template_literal_braces_are_kept(tmp_path):
    """``{{``/``}}`` stay a literal brace in the command (a JSON argument, say)."""
    from lrdoctor.verify.backends import CommandBackend

    backend = CommandBackend(f"{TEMPLATE} --extra {{{{\"a\":1}}}}")
    assert backend.placeholders_used() == {"lr", "max_steps", "seed", "logdir"}


def _argvs(out: Path) -> list[list[str]]:
    return [json.loads(f.read_text())["argv"] for f in sorted(out.rglob("command.json"))]


def test_command_that_ignores_the_lr_is_inconclusive_not_rejected(script_run, tmp_path, capsys):
    """A template that never passes the LR (the script keeps its own 0.5): every candidate rerun
    trains the baseline's numbers. That is no evidence against the fix: INCONCLUSIVE, said before
    the reruns too, and the LR ladder does not climb (its rungs would be ignored the same way)."""
    train = f"{PY} {shlex.quote(SCRIPT)} --lr 0.5 --max-steps {{max_steps}} --seed {{seed}} --logdir {{logdir}}"
    out = tmp_path / "v"
    rc = main(["verify", str(script_run), "--rule", "divergence", "--seeds", "3", "--budget-steps", "60",
               "--train", train, "--jobs", "2", "--out", str(out), "--json"])
    err: list[str] = []
    vs = verdicts(capsys, err=err)
    top = vs[0]
    assert rc == 0 and top["verdict"] == "INCONCLUSIVE", top["reason"]
    assert "did not apply the patch" in top["reason"] and top["details"]["unchanged"] is True
    assert "has no {lr}, {lr_scale} or {config_json}" in err[0]
    assert err[0].count("has no {lr}") == 1  # said once, not per proposal
    # one rung per proposal: no climb down an LR ladder the command ignores
    rungs = {Path(*p.relative_to(out).parts[:2]) for p in out.rglob("command.json")}
    assert len(rungs) == 1 + len(vs)  # the shared baseline + one candidate directory per proposal


def test_command_that_ignores_the_seed_is_inconclusive(script_run, tmp_path, capsys):
    """A template without {seed}: the script seeds 0 in every rerun, so the 3 'paired seeds' are
    three copies of one run and a Fisher p over them would be about nothing."""
    train = f"{PY} {shlex.quote(SCRIPT)} --lr {{lr}} --max-steps {{max_steps}} --logdir {{logdir}}"
    out = tmp_path / "v"
    rc = main(["verify", str(script_run), "--rule", "divergence", "--proposal", "patch", "--patch", '{"lr": 0.02}',
               "--seeds", "3", "--budget-steps", "60", "--train", train, "--jobs", "2", "--out", str(out), "--json"])
    err: list[str] = []
    (v,) = verdicts(capsys, err=err)
    assert rc == 0 and v["verdict"] == "INCONCLUSIVE", v["reason"]
    assert "3 seeds logged identical losses" in v["reason"] and v["p_value"] is None
    assert "has no {seed}" in err[0]
    assert all("--seed" not in argv for argv in _argvs(out))


def test_verdict_with_a_seeded_template_is_unaffected(script_run, tmp_path, capsys):
    """The control for the two above: the full template gives distinct losses per seed and arm,
    no warning, and a verdict on the statistics."""
    rc = main(["verify", str(script_run), "--rule", "divergence", "--proposal", "patch", "--patch", '{"lr": 0.02}',
               "--seeds", "3", "--budget-steps", "60", "--train", TEMPLATE, "--jobs", "2", "--out",
               str(tmp_path / "v"), "--json"])
    err: list[str] = []
    (v,) = verdicts(capsys, err=err)
    assert rc == 0 and "unchanged" not in v["details"] and "3/3 vs candidate 0/3" in v["reason"], v["reason"]
    assert "has no {" not in err[0]
