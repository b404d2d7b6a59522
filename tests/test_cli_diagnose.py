"""`lrdoctor diagnose` and `lrdoctor rules` end to end, on files written as the real tools write them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from lrdoctor.cli import main


def keras_csv(path, loss, val_loss):
    """As keras.callbacks.CSVLogger writes it: csv module, CRLF line ends, epoch from 0."""
    rows = ["epoch,loss,val_loss"] + [f"{i},{float(a)!r},{float(b)!r}" for i, (a, b) in enumerate(zip(loss, val_loss, strict=True))]
    path.write_bytes(("\r\n".join(rows) + "\r\n").encode())
    return path


def hf_state(path, losses, grad_norms, every=10):
    """As transformers.Trainer writes trainer_state.json (NaN written by json.dump as NaN)."""
    hist = [{"epoch": round(i * 0.01, 2), "grad_norm": float(g), "learning_rate": 5e-5, "loss": float(v),
             "step": (i + 1) * every}
            for i, (v, g) in enumerate(zip(losses, grad_norms, strict=True))]
    state = {"best_metric": None, "epoch": 1.0, "global_step": len(losses) * every, "log_history": hist,
             "logging_steps": every, "max_steps": len(losses) * every}
    path.mkdir(parents=True, exist_ok=True)
    (path / "trainer_state.json").write_text(json.dumps(state, indent=2))
    return path


@pytest.fixture
def sweep(tmp_path):
    """Three runs: overfitting (Keras CSV), diverged with a NaN grad norm (HF), healthy (HF)."""
    root = tmp_path / "sweep"
    root.mkdir()
    n = 30
    t = np.arange(n)
    (root / "overfit").mkdir()
    keras_csv(root / "overfit" / "training_log.csv", list(0.5 * np.exp(-t / 8) + 0.02), list(0.7 + np.maximum(0, t - 4) * 0.04))
    rng = np.random.default_rng(0)
    loss = list(2 * np.exp(-np.arange(80) / 20) + 0.5 + 0.01 * rng.standard_normal(80))
    gn = [1.0 + 0.05 * float(v) for v in rng.standard_normal(80)]
    hf_state(root / "healthy", loss, gn)
    gn_bad = list(gn)
    # HF hides the NaN loss (logging_nan_inf_filter); the grad norm stays NaN from step 610 on
    gn_bad[60:] = [float("nan")] * 20
    hf_state(root / "diverged", loss, gn_bad)
    return root


def _reject(token):
    raise AssertionError(f"non-standard JSON constant {token}")


def test_json_shape_and_exit_code(sweep, capsys):
    rc = main(["diagnose", str(sweep), "--json"])
    out = capsys.readouterr().out
    doc = json.loads(out, parse_constant=_reject)  # strict JSON although evidence holds NaN
    assert rc == 1  # divergence is an error
    assert list(doc) == ["runs"]
    runs = {r["name"]: r for r in doc["runs"]}
    assert set(runs) == {"overfit", "healthy", "diverged"}
    for r in runs.values():
        assert list(r) == ["name", "source", "format", "findings", "skipped_rules", "annotations"]
        for f in r["findings"]:
            assert list(f) == ["rule", "severity", "start_step", "end_step", "steps", "message", "evidence",
                               "proposals"]
    assert runs["healthy"]["findings"] == []
    div = {f["rule"]: f for f in runs["diverged"]["findings"]}
    assert set(div) == {"divergence"}  # exploding-gradients is superseded by divergence
    assert (div["divergence"]["severity"], div["divergence"]["start_step"]) == ("error", 610)
    over = [f for f in runs["overfit"]["findings"] if f["rule"] == "overfitting"]
    assert over and 0 <= over[0]["start_step"] <= 4 and over[0]["evidence"]["gap"] > 0
    assert runs["overfit"]["format"] == "keras_csv"
    assert {"rule": "exploding-gradients", "reason": "missing role: grad_norm"} in runs["overfit"]["skipped_rules"]


def test_nonfinite_evidence_is_written_as_strings(sweep, capsys):
    main(["diagnose", str(sweep / "diverged"), "--json", "--select", "exploding-gradients"])
    (f,) = json.loads(capsys.readouterr().out)["runs"][0]["findings"]
    assert f["evidence"]["max_ratio"] == "inf" and f["evidence"]["max_value"] == "nan"


@pytest.mark.parametrize(("fail_on", "rc"), [("error", 0), ("warning", 1), ("info", 1), ("never", 0)])
def test_fail_on(sweep, capsys, fail_on, rc):
    assert main(["diagnose", str(sweep / "overfit" / "training_log.csv"), "--fail-on", fail_on]) == rc


def test_terminal_summary(sweep, capsys):
    rc = main(["diagnose", str(sweep), "--fail-on", "never", "--jobs", "1"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "\x1b[" not in out  # no colour when not a terminal
    assert "LRD001 divergence" in out and "grad norm is nan from step 610" in out
    assert "overfitting" in out and "epochs" in out
    assert "no findings" in out
    assert "skipped: exploding-gradients, vanishing-gradients (missing role: grad_norm)" in out
    assert "3 runs diagnosed: 1 error, 1 warning" in out


def test_set_and_select_and_ignore(sweep, capsys):
    assert main(["diagnose", str(sweep), "--ignore", "divergence", "--ignore", "exploding-gradients"]) == 0
    capsys.readouterr()
    # min_rise switches the rise test off, gap_train_fall=1 (a 100% fall) the gap-opening one
    rc = main(["diagnose", str(sweep / "overfit" / "training_log.csv"), "--json", "--set", "overfitting.min_rise=10",
               "--set", "overfitting.gap_train_fall=1"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and not [f for f in doc["runs"][0]["findings"] if f["rule"] == "overfitting"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "plateau.windw=3"], "unknown parameter 'windw'"),
        (["--set", "plateau.window=big"], "expected an integer"),
        (["--select", "nope"], "unknown rule 'nope'"),
    ],
)
def test_usage_errors_exit_2(sweep, capsys, args, message):
    assert main(["diagnose", str(sweep), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lrdoctor: error: ") and message in err and len(err.strip().splitlines()) == 1


def test_user_rules_dir(sweep, tmp_path, capsys):
    rules = tmp_path / "myrules"
    rules.mkdir()
    (rules / "bad.yaml").write_text("name: bad\ncode: USR001\n")
    assert main(["diagnose", str(sweep), "--rules", str(rules)]) == 2
    assert "missing key 'title'" in capsys.readouterr().err


def test_tensorboard_run_with_nan(tmp_path, capsys):
    torch_tb = pytest.importorskip("torch.utils.tensorboard")
    logdir = tmp_path / "tb"
    with torch_tb.SummaryWriter(str(logdir)) as w:
        for step in range(100):
            loss = 1.0 / (1 + step / 10) if step < 70 else math.nan
            w.add_scalar("train/loss", loss, step)
    assert main(["diagnose", str(logdir), "--json"]) == 1
    (f,) = json.loads(capsys.readouterr().out)["runs"][0]["findings"]
    assert (f["rule"], f["start_step"], f["steps"][:2]) == ("divergence", 70, [70, 71])


def test_rules_list_and_explain(capsys):
    assert main(["rules"]) == 0
    out = capsys.readouterr().out
    for name in ("divergence", "loss-spike", "plateau", "overfitting", "exploding-gradients", "vanishing-gradients"):
        assert name in out
    assert "LRD001" in out
    assert main(["rules", "explain", "plateau"]) == 0
    out = capsys.readouterr().out
    for heading in ("What:", "Why:", "Example:", "Fix:", "window = 21"):
        assert heading in out
    assert main(["rules", "explain", "platea"]) == 2
    assert "did you mean 'plateau'" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["before", "after"])
def test_rules_explain_with_a_user_dir_replacing_a_builtin(tmp_path, capsys, where):
    mine = tmp_path / "mine"
    mine.mkdir()
    text = (Path(__file__).resolve().parents[1] / "rules" / "plateau.yaml").read_text()
    (mine / "plateau.yaml").write_text(text.replace("title: Training loss plateaus", "title: My stricter plateau", 1))
    args = ["rules", "--rules", str(mine), "explain", "plateau"] if where == "before" else \
        ["rules", "explain", "plateau", "--rules", str(mine)]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "My stricter plateau" in captured.out and f"Defined in {mine / 'plateau.yaml'}" in captured.out
    assert "replaces the built-in rule 'plateau' from rules/plateau.yaml" in captured.err


REAL = Path(__file__).resolve().parents[2] / "shared" / "real_logs"


@pytest.mark.real_logs
@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/real_logs not present")
@pytest.mark.parametrize(
    ("log", "expected"),
    [
        ("keras02_dm22_hsinhung", {"overfitting"}),  # val loss best at epoch 2, then +140%
        ("hf07_star_eagle_gradspikes", {"exploding-gradients"}),  # isolated 17x grad-norm spikes
        ("hf04_kevin_compressor", {"plateau"}),  # LoRA run whose loss never moves
        ("hf05_mt5_az_news", set()),  # healthy despite a first loss of 25
        ("pl07_pinn_v19", set()),  # healthy over 15 orders of magnitude
        ("tb04_yolo_helmet_exp", set()),  # 3 points: too short to say anything
        # 0.79 at epoch 0, then stuck at ln 2 (0.4% change); the val loss spikes at epochs 22 and 33
        ("keras03_aes_plateau", {"plateau", "loss-spike"}),
        ("pl06_pinn_v13", {"plateau"}),  # stuck at 3.8e25 (relative change 2e-4, smooth)
        ("pl09_pendulum_v28", set()),  # early minibatch noise, not spikes against the quiet tail
        ("tb06_qbm_v16", set()),  # noisy, but fell 27% after the drop: not 'never moved'
    ],
)
def test_real_logs(log, expected, capsys):
    main(["diagnose", str(REAL / log), "--json", "--fail-on", "never"])
    (run,) = json.loads(capsys.readouterr().out)["runs"]
    assert {f["rule"] for f in run["findings"] if f["severity"] != "info"} == expected


def test_reader_annotations_in_terminal_and_json(tmp_path, capsys):
    """A Keras CSV with a non-numeric cell: the reader's note reaches both outputs."""
    n = 20
    path = keras_csv(tmp_path / "training_log.csv", [1 / (i + 1) for i in range(n)], [1 / (i + 1) + 0.1 for i in range(n)])
    text = path.read_bytes().decode().replace("\r\n4,", "\r\n4,oops,", 1)
    text = text.replace("oops,0.2,", "oops,", 1)
    path.write_bytes(text.encode())
    assert main(["diagnose", str(path), "--json"]) == 0
    (run,) = json.loads(capsys.readouterr().out)["runs"]
    notes = [a for a in run["annotations"] if a["kind"] == "non_numeric"]
    assert notes and "oops" in notes[0]["message"] and set(notes[0]) == {"kind", "message", "path", "location"}
    assert main(["diagnose", str(path)]) == 0
    out = capsys.readouterr().out
    assert "note  non_numeric:" in out and "oops" in out


def test_set_scientific_notation_on_the_command_line(sweep, capsys):
    # z_threshold=1e9 switches loss-spike off; exit 0 with --fail-on warning proves it parsed
    rc = main(["diagnose", str(sweep / "healthy"), "--set", "loss-spike.z_threshold=1e9",
               "--set", "vanishing-gradients.max_norm=5e-2", "--set", "overfitting.rise_sigmas=inf", "--fail-on", "warning"])
    assert rc == 0, capsys.readouterr().err
    assert main(["diagnose", str(sweep), "--set", "plateau.window=0"]) == 2
    err = capsys.readouterr().err
    assert "plateau.window: must be >= 1, got 0" in err and len(err.strip().splitlines()) == 1


def test_unreadable_run_is_reported_and_exits_2_after_the_rest(sweep, capsys):
    (sweep / "broken").mkdir()
    (sweep / "broken" / "trainer_state.json").write_text('{"log_history": [{"step": 1, "loss"')  # cut mid-write
    assert main(["diagnose", str(sweep), "--json"]) == 2
    cap = capsys.readouterr()
    doc = json.loads(cap.out)
    assert {r["name"] for r in doc["runs"]} == {"overfit", "healthy", "diverged"}
    (err,) = doc["errors"]
    assert err["path"].endswith("trainer_state.json") and err["message"]
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lrdoctor: error: run not read: ") and "trainer_state.json" in lines[0]
    assert main(["diagnose", str(sweep), "--fail-on", "never"]) == 2
    cap = capsys.readouterr()
    assert "3 runs diagnosed" in cap.out and "run not read" in cap.err


def test_mixed_precision_skipped_steps_are_not_divergence(tmp_path, capsys):
    """A real fp16 GradScaler run: non-finite grad norms while it backs off its (large) initial
    scale and at two later overflows; the loss keeps falling. No divergence, at most info."""
    torch = pytest.importorskip("torch")
    from torch.utils.tensorboard import SummaryWriter

    nn = torch.nn
    torch.manual_seed(0)
    x, w = torch.randn(256, 16), torch.randn(16, 1)
    y = x @ w
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**24, growth_interval=50)
    bad = []
    with SummaryWriter(str(tmp_path / "amp")) as writer:
        for step in range(300):
            idx = torch.randint(0, 256, (32,))
            with torch.autocast("cpu", dtype=torch.float16):
                loss = nn.functional.mse_loss(model(x[idx]).float(), y[idx])
            opt.zero_grad()
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            gn = torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
            scaler.step(opt)
            scaler.update()
            writer.add_scalar("train/loss", loss.item(), step)
            writer.add_scalar("train/grad_norm", gn.item(), step)
            if not math.isfinite(gn.item()):
                bad.append(step)
    assert bad[:3] == [0, 1, 2] and max(bad) > 25  # the scenario really happened
    assert main(["diagnose", str(tmp_path / "amp"), "--json"]) == 0
    (run,) = json.loads(capsys.readouterr().out)["runs"]
    rules = {f["rule"]: f for f in run["findings"]}
    assert "divergence" not in rules
    late = [s for s in bad if s >= 25]
    eg = rules["exploding-gradients"]  # the skips past the start: reported, as info
    assert (eg["severity"], eg["evidence"]["kind"], eg["steps"]) == ("info", "skipped_steps", late)
    assert f"{len(late)} inf" in eg["message"] and "nan" not in eg["message"]
    assert eg["proposals"] == []  # GradScaler already handled those steps: nothing to change
