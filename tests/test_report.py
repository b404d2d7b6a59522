"""The HTML report: escaping of log-controlled text, self-containment, downsampling, figures.

Runs come from real TensorBoard event files written by torch's SummaryWriter and read back by
lrdoctor's readers; diagnoses come from the real rule engine.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markupsafe import escape

from lrdoctor.downsample import downsample, minmax_indices
from lrdoctor.model import (
    Diagnosis,
    Finding,
    Proposal,
    RerunCurves,
    SeedCurve,
    Severity,
    Verdict,
    VerdictKind,
)
from lrdoctor.report import render_report, write_report
from lrdoctor.roles import resolve_roles

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'


# ---- helpers shared with test_report_browser.py -------------------------------------------------

def curves(n: int, lr: float, *, diverge_at: int | None = None, seed: int = 0) -> dict[str, list[tuple[int, float]]]:
    """A plausible training: loss decaying at a speed set by the LR, val every 50 steps."""
    rng = np.random.default_rng(seed)
    s = np.arange(n)
    loss = 2.3 * np.exp(-s * lr * 10) + 0.25 + 0.03 * rng.standard_normal(n)
    grad = 1.0 + 0.2 * np.abs(rng.standard_normal(n))
    if diverge_at is not None:
        ramp = np.exp(np.clip(s - diverge_at, 0, None) / 15.0)
        loss = loss * ramp
        grad = grad * ramp
        loss[diverge_at + 120:] = np.nan
    val = s[::50]
    out = {
        "train/loss": list(zip(s.tolist(), loss.tolist(), strict=True)),
        "train/grad_norm": list(zip(s.tolist(), grad.tolist(), strict=True)),
        "train/lr": [(int(i), lr * min(1.0, (i + 1) / 50)) for i in s],
        "val/loss": [(int(i), float(loss[i] + 0.08)) for i in val],
    }
    return out


def write_tb(logdir: Path, points: dict[str, list[tuple[int, float]]]) -> Path:
    from torch.utils.tensorboard import SummaryWriter

    logdir.mkdir(parents=True, exist_ok=True)
    with SummaryWriter(log_dir=str(logdir), flush_secs=3600, max_queue=10_000) as w:
        rows = sorted((step, i, tag, v) for i, (tag, pts) in enumerate(points.items()) for step, v in pts)
        for step, _, tag, v in rows:
            w.add_scalar(tag, v, step)
    return logdir


def read_runs(path: Path):
    from lrdoctor.readers import discover

    fn = getattr(discover, "discover", discover)
    return sorted(fn(str(path)), key=lambda r: r.name)


def diagnose(runs):
    from lrdoctor.engine.diagnose import diagnose_runs

    return diagnose_runs(runs, jobs=1)


def sweep_dir(root: Path, lrs=(1e-3, 3e-3, 1e-2, 3e-2), n: int = 400) -> Path:
    for i, lr in enumerate(lrs):
        write_tb(root / f"lr_{lr:g}", curves(n, lr, diverge_at=250 if lr >= 3e-2 else None, seed=i))
    return root


class Tags(HTMLParser):
    """Every start tag with its attributes, as the browser's tokenizer sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def parse(html: str) -> list[tuple[str, dict[str, str | None]]]:
    p = Tags()
    p.feed(html)
    return p.tags


# ---- escaping -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def evil_diagnosis(tmp_path_factory) -> Diagnosis:
    root = tmp_path_factory.mktemp("evil")
    pts = curves(200, 0.3)
    evil_points = {f"train/loss{SCRIPT}": pts["train/loss"], f"val/loss{IMG}": pts["val/loss"],
                   "train/grad_norm": pts["train/grad_norm"]}
    (run,) = read_runs(write_tb(root / "run", evil_points))
    assert any(SCRIPT in t for t in run.tags), run.tags  # the reader kept the tag as logged
    run = dataclasses.replace(run, name=f"run{IMG}", hparams={f"lr{SCRIPT}": IMG, "note": SCRIPT})
    proposal = Proposal(id=f"p{IMG}", kind="lower_peak_lr", summary=f"Lower the LR {SCRIPT}",
                        rationale=IMG, config={"lr": 1e-3, "scheduler": {"type": SCRIPT, IMG: IMG}}, code=f"lr = 1e-3  # {SCRIPT}\n# {IMG}")
    finding = Finding(rule="loss-spike", severity=Severity.WARNING, start_step=40, end_step=60, steps=(50,),
                      message=f"loss jumped {SCRIPT} {IMG}", evidence={SCRIPT: IMG, "ratio": 3.0},
                      proposals=(proposal,), code="LRD002", title=f"Spike {IMG}")
    return Diagnosis(run=run, findings=(finding,), skipped_rules=(), roles=resolve_roles(run.tags))


def test_log_text_cannot_inject_markup(evil_diagnosis):
    verdict = Verdict(rule="loss-spike", proposal_id=f"p{IMG}", kind="lower_peak_lr",
                      verdict=VerdictKind.CONFIRMED, seeds=(0, 1, 2), p_value=0.03, ci=(-0.2, -0.1),
                      p_better=0.9, reason=SCRIPT, details={IMG: SCRIPT})
    html = render_report([evil_diagnosis, evil_diagnosis], verdicts={evil_diagnosis.run.name: [verdict]},
                         title=f"t{SCRIPT}", workers=1)
    tags = parse(html)
    scripts = [a for t, a in tags if t == "script"]
    assert len(scripts) == 2 and all(a.get("nonce") for a in scripts)  # only the page's own two
    imgs = [a for t, a in tags if t == "img"]
    assert imgs and all(a.get("src", "").startswith("data:image/") and "lrd-fig" in a.get("class", "") for a in imgs)
    assert not any(k.startswith("on") for _, a in tags for k in a)
    assert SCRIPT not in html and "<img src=x" not in html
    # ...but the text is shown, escaped, where the user expects it (tag table, message, code).
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 6
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in html


def test_csp_allows_only_own_scripts_and_no_network(evil_diagnosis):
    html = render_report([evil_diagnosis], workers=1)
    (csp,) = [a["content"] for t, a in parse(html) if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    nonce = re.search(r"'nonce-([^']+)'", csp).group(1)
    assert "default-src 'none'" in csp and "img-src data:" in csp
    assert all(a.get("nonce") == nonce for t, a in parse(html) if t == "script")


# ---- self-containment and figures ---------------------------------------------------------------

@pytest.fixture(scope="module")
def sweep_diagnoses(tmp_path_factory):
    return diagnose(read_runs(sweep_dir(tmp_path_factory.mktemp("sweep"))))


@pytest.fixture(scope="module")
def sweep_html(sweep_diagnoses) -> str:
    return render_report(sweep_diagnoses, workers=1)


def test_report_is_self_contained(sweep_html):
    refs = [(k, v) for _, a in parse(sweep_html) for k, v in a.items() if k in ("src", "href") and v]
    assert refs
    for k, v in refs:
        assert v.startswith(("#", "data:image/png;base64,", "data:image/svg+xml;base64,")), (k, v[:60])
    assert not re.search(r"(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", sweep_html.replace("http-equiv", ""))
    assert "@import" not in sweep_html and "url(" not in sweep_html


def test_every_run_gets_its_figure_and_the_sweep_its_plots(sweep_diagnoses, sweep_html):
    figs = {a["data-fig"]: a["src"] for t, a in parse(sweep_html) if t == "img"}
    runs = [a for t, a in parse(sweep_html) if t == "section" and "run" in a.get("class", "").split()]
    assert len(runs) == len(sweep_diagnoses) == 4
    for a in runs:
        assert f"{a['id']}-curves" in figs
    assert "index-lr" in figs and "index-overlay" in figs
    for src in figs.values():
        png = base64.b64decode(src.split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000
    # The diverged run is found by the engine and shown first, with its messages and fixes.
    (diverged,) = [d for d in sweep_diagnoses if d.run.name.startswith("lr_0.03")]
    assert diverged.worst is Severity.ERROR and runs[0]["data-run"] == diverged.run.name
    for d in sweep_diagnoses:
        for f in d.findings:
            assert str(escape(f.message)) in sweep_html
    assert 'class="copy"' in sweep_html
    assert "Stable range" in sweep_html


def test_max_figures_caps_drawing_and_says_so(sweep_diagnoses):
    html = render_report(sweep_diagnoses, max_figures=1, workers=1)
    figs = [a["data-fig"] for t, a in parse(html) if t == "img"]
    assert sum(f.endswith("-curves") for f in figs) == 1
    assert "Figure not drawn" in html


def test_svg_figures_and_verification_sections(sweep_diagnoses, tmp_path):
    d = sweep_diagnoses[0]
    steps = list(range(0, 200, 10))
    curves_ = RerunCurves("train_loss",
                          tuple(SeedCurve(s, tuple(steps), tuple(np.linspace(2, 5, 20))) for s in range(3)),
                          tuple(SeedCurve(s, tuple(steps), tuple(np.linspace(2, 0.5, 20))) for s in range(3)))
    v = Verdict(rule="divergence", proposal_id="x", kind="lower_peak_lr", verdict=VerdictKind.CONFIRMED,
                seeds=(0, 1, 2), p_value=0.01, ci=(-1.0, -0.5), p_better=0.99, reason="symptom gone",
                details={"fisher_p": 0.01, "baseline_target": [1.0, 2.0, 3.0]}, curves=curves_)
    out = write_report([d], tmp_path / "sub" / "r.html", verdicts={d.run.name: [v]}, figure_format="svg",
                       workers=1)
    html = out.read_text()
    figs = {a["data-fig"]: a["src"] for t, a in parse(html) if t == "img"}
    assert figs[f"{_key(html)}-verify-0"].startswith("data:image/svg+xml;base64,")
    assert "CONFIRMED" in html and "fisher_p" in html
    assert not list((tmp_path / "sub").glob("*.tmp"))
    assert "No verification results" in render_report([d], verdicts={}, workers=1)
    assert "Not run for this report" in render_report([d], workers=1)


def test_runs_with_missing_roles_still_render(tmp_path):
    pts = curves(120, 0.1)
    write_tb(tmp_path / "only_train", {"loss": pts["train/loss"]})
    write_tb(tmp_path / "unknown_tags", {"foo/bar": pts["train/loss"]})
    diagnoses = diagnose(read_runs(tmp_path))
    html = render_report(diagnoses, workers=1)
    figs = [a["data-fig"] for t, a in parse(html) if t == "img"]
    assert sum(f.endswith("-curves") for f in figs) == 1
    assert "No curves to draw" in html
    assert "index-lr" not in figs and "index-overlay" not in figs  # no LR known; not one task


def _key(html: str) -> str:
    return next(a["id"] for t, a in parse(html) if t == "section" and "run" in a.get("class", "").split())


def test_report_command_writes_the_page(tmp_path, capsys):
    from lrdoctor.cli import main

    sweep_dir(tmp_path / "logs", lrs=(1e-3, 3e-2), n=300)
    out = tmp_path / "report.html"
    assert main(["report", str(tmp_path / "logs"), "-o", str(out), "--jobs", "1"]) == 0
    html = out.read_text()
    assert "lr_0.001" in html and "lr_0.03" in html and html.rstrip().endswith("</html>")
    assert "wrote" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "logs"), "-o", str(out), "--figure-format", "gif"]) == 2

    # Verdicts as 'lrdoctor verify --json' prints them are shown next to the proposal they judge.
    d = next(d for d in diagnose(read_runs(tmp_path / "logs")) if d.findings)
    f = d.findings[0]
    v = Verdict(rule=f.rule, proposal_id=f.proposals[0].id, kind=f.proposals[0].kind, verdict=VerdictKind.REJECTED,
                seeds=(0, 1, 2, 3, 4), p_value=0.2, ci=(0.1, 0.3), p_better=0.1, reason="ends worse")
    vfile = tmp_path / "verdicts.json"
    vfile.write_text(json.dumps({"runs": [{"name": d.run.name, "verdicts": [v.to_dict()]}]}))
    assert main(["report", str(tmp_path / "logs"), "-o", str(out), "--verdicts", str(vfile), "-j", "1"]) == 0
    html = out.read_text()
    assert html.count(">REJECTED<") == 2 and "ends worse" in html  # badge on the fix + verification card
    vfile.write_text("{}")
    assert main(["report", str(tmp_path / "logs"), "-o", str(out), "--verdicts", str(vfile)]) == 2
    assert "not a verdicts file" in capsys.readouterr().err


def test_parallel_rendering_gives_the_same_figures(sweep_diagnoses, monkeypatch):
    from lrdoctor.report import plots

    serial = render_report(sweep_diagnoses, workers=1)
    monkeypatch.setattr(plots, "PARALLEL_MIN_FIGURES", 1)
    parallel = render_report(sweep_diagnoses, workers=2)
    strip = re.compile(r'nonce="[^"]*"|nonce-[\w-]*|generated [^<]*')
    assert strip.sub("", serial) == strip.sub("", parallel)


# ---- downsampling -------------------------------------------------------------------------------

values_st = st.lists(
    st.one_of(st.floats(-1e6, 1e6), st.sampled_from([np.nan, np.inf, -np.inf])), min_size=0, max_size=400
)


@settings(max_examples=200, deadline=None)
@given(values=values_st, max_points=st.integers(4, 60))
def test_downsampling_keeps_extremes_and_nonfinite(values, max_points):
    v = np.asarray(values, dtype=np.float64)
    idx = minmax_indices(v, max_points)
    assert np.all(np.diff(idx) > 0) and (len(v) == 0 or (idx[0] == 0 and idx[-1] == len(v) - 1))
    kept = v[idx]
    finite = np.isfinite(v)
    if finite.any():
        assert v[finite].min() in kept and v[finite].max() in kept
    buckets = max(1, max_points // 2)
    width = -(-len(v) // buckets) if len(v) > max_points else 1
    for kind in (np.isnan, lambda x: x == np.inf, lambda x: x == -np.inf):
        where = np.flatnonzero(kind(v))
        kept_where = idx[kind(kept)]
        for i in where:  # every non-finite point has a kept one of its kind within one bucket
            assert np.any(np.abs(kept_where - i) < width)
    # a bucket keeps at most min, max and three non-finite markers (+ first/last overall)
    assert len(idx) <= max(len(v) if len(v) <= max_points else 0, 5 * buckets + 2)
    if len(v) > max_points and finite.all():
        assert len(idx) <= max_points + 2


def test_downsampling_keeps_a_one_step_spike_a_stride_would_lose():
    v = np.ones(1_000_000)
    v[123_457] = 50.0
    v[900_001] = np.nan
    steps, vals = downsample(np.arange(len(v)) * 10, v, 1000)
    assert len(vals) <= 1003 and 50.0 in vals and 1_234_570 in steps
    assert np.isnan(vals).sum() == 1 and steps[np.isnan(vals)][0] == 9_000_010
    assert v[::1000].max() == 1.0 and not np.isnan(v[::1000]).any()  # a plain stride would miss both


# ---- verdicts paired with runs whatever PATH named them; figures that read true -------------------

SAMPLES = Path(__file__).resolve().parent.parent / "sample_logs"


@pytest.mark.skipif(not (SAMPLES / "healthy-mlp-tensorboard").is_dir(), reason="sample_logs absent")
def test_verdicts_pair_with_runs_by_source_path_and_unmatched_ones_are_named(tmp_path, capsys):
    import shutil

    from lrdoctor.cli import main

    logs = tmp_path / "logs"
    shutil.copytree(SAMPLES / "healthy-mlp-tensorboard", logs / "team" / "healthy")
    shutil.copytree(SAMPLES / "overfitting-cnn-keras", logs / "overfit")
    # verify on the run itself names it "healthy"; report on logs/ names it "team/healthy"
    assert main(["verify", str(logs / "team" / "healthy"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    (entry,) = data["runs"]
    assert entry["source"] == str((logs / "team" / "healthy").resolve())
    report_names = {r.name for r in read_runs(logs)}
    assert entry["name"] not in report_names  # the case the name alone cannot pair
    v = Verdict(rule="", proposal_id="patch", kind="patch", verdict=VerdictKind.INCONCLUSIVE, seeds=(0, 1, 2),
                p_value=0.5, ci=None, p_better=0.5, reason="no difference <b>either way</b>")
    entry["verdicts"] = [v.to_dict()]
    data["runs"].append({"name": "ghost<run>", "source": str(tmp_path / "elsewhere"), "verdicts": [v.to_dict()]})
    vfile = tmp_path / "v.json"
    vfile.write_text(json.dumps(data))
    out = tmp_path / "r.html"
    assert main(["report", str(logs), "-o", str(out), "--verdicts", str(vfile), "-j", "1"]) == 0
    err = capsys.readouterr().err  # the CLI's log handler writes warnings to stderr
    html = out.read_text()
    assert "no difference &lt;b&gt;either way&lt;/b&gt;" in html
    assert "verified: 1 of 2 runs" in html and "verification not run" not in html
    assert "the verdicts file has no entry for it" in html  # the overfit run: honest, not "verified"
    assert f"verdicts for run ghost<run> match no run under {logs}" in err
    assert "ghost&lt;run&gt;" in html and 'id="lrd-unmatched-verdicts"' in html
    # Nothing matches: the header says so instead of dropping the badge.
    vfile.write_text(json.dumps({"runs": [data["runs"][1]]}))
    assert main(["report", str(logs), "-o", str(out), "--verdicts", str(vfile), "-j", "1"]) == 0
    html = out.read_text()
    assert "no verdicts for these runs" in html and "verified:" not in html


def _drawn(fig):
    fig.canvas.draw()
    return fig


@pytest.mark.skipif(not (SAMPLES / "plateau-gru-mlflow").is_dir(), reason="sample_logs absent")
def test_tick_labels_write_real_values_with_no_offset_text():
    from lrdoctor.report.data import build_run_view
    from lrdoctor.report.plots import run_figure

    (d,) = diagnose(read_runs(SAMPLES / "plateau-gru-mlflow"))
    view = build_run_view(0, d, None, max_points=1000, with_figure=True)
    fig = _drawn(run_figure(view.figure))
    lr_ax = next(ax for ax in fig.axes if ax.get_title(loc="left") == "Learning rate")
    labels = [t.get_text() for t in lr_ax.get_yticklabels() if t.get_text()]
    assert "1e-6" in labels, labels  # an LR of 1e-6 reads as 1e-6, not 1.00 under a "1e-6" corner text
    for ax in fig.axes:
        assert ax.yaxis.get_offset_text().get_text() == "", ax.get_title(loc="left")
        assert ax.xaxis.get_offset_text().get_text() == "", ax.get_title(loc="left")
    ticks = [t.get_text() for t in lr_ax.get_yticklabels() if t.get_text()]
    assert len(set(ticks)) == len(ticks)  # enough digits to tell the ticks apart


def test_real_value_formatter_over_offsets_and_scales():
    from lrdoctor.report.plots import real_value_formatter

    f = real_value_formatter()
    f.set_locs([100000, 100020, 100040])
    assert [f(x) for x in (100000, 100020)] == ["100,000", "100,020"]
    f.set_locs([2.3450, 2.3455, 2.3460])
    assert f(2.3455) == "2.3455" and f(2.345) == "2.345"
    f.set_locs([9.6e-7, 1e-6, 1.04e-6])
    assert f(9.6e-7) == "9.6e-7" and f(1e-6) == "1e-6"


def test_verification_curves_with_one_finite_point_are_drawn_as_markers():
    from lrdoctor.report.plots import VerifySpec, verify_figure

    steps = np.arange(30.0)
    broke = np.full(30, np.nan)
    broke[0] = 2.3  # one logged value, then NaN: a line of one point draws nothing
    ok = np.linspace(2.3, 0.5, 30)
    spec = VerifySpec("divergence · x", "step", "train_loss", ((0, steps, broke), (1, steps, broke)),
                      ((0, steps, ok), (1, steps, ok)))
    fig = _drawn(verify_figure(spec))
    for ax in fig.axes:
        base = next(line for line in ax.get_lines() if line.get_linestyle() == "--")
        assert len(base.get_xdata()) == 1 and base.get_marker() not in (None, "None", "", " ")
        cand = next(line for line in ax.get_lines() if line.get_linestyle() == "-")
        assert cand.get_marker() in (None, "None", "", " ")  # 30 points still read as a line


@pytest.mark.skipif(not (SAMPLES / "overfitting-cnn-keras").is_dir(), reason="sample_logs absent")
def test_workload_config_stands_in_for_missing_hparams_and_val_rise_is_visible():
    from lrdoctor.report.data import build_run_view
    from lrdoctor.report.plots import run_figure

    (d,) = diagnose(read_runs(SAMPLES / "overfitting-cnn-keras"))
    assert not d.run.hparams and d.run.origin["config"]
    view = build_run_view(0, d, None, max_points=1000, with_figure=True)
    assert view.hparams_origin == "workload config (lrdoctor-run.json)"
    assert ("lr", str(d.run.origin["config"]["lr"])) in view.hparams
    html = render_report([d], workers=1)
    assert "from the workload config (lrdoctor-run.json)" in html
    # val loss 0.72 -> 1.07 beside a train loss falling to 1e-4: on its own linear axis, labelled
    fig = _drawn(run_figure(view.figure))
    twin = next(ax for ax in fig.axes if ax.get_ylabel() == "val loss")
    assert twin.get_yscale() == "linear"
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any(t.startswith("best 0.72") for t in texts) and any(t.startswith("latest 1.0") for t in texts)
