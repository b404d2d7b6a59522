"""``report --verdicts FILE`` treats the file as untrusted: a bad or hostile file is one error line
naming the place in it (exit 2, before any run is read), and text in it is escaped on the page."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from lrdoctor.cli import main
from lrdoctor.readers import discover

SAMPLE = Path(__file__).resolve().parents[1] / "sample_logs" / "divergence-mlp-lightning"
SCRIPT = "<script>alert(1)</script>"


def good_verdict(**over) -> dict:
    v = {"rule": "divergence", "proposal_id": "divergence:lower_peak_lr", "kind": "lower_peak_lr",
         "verdict": "CONFIRMED", "seeds": [0, 1, 2, 3, 4], "p_value": 0.004, "ci": [-0.5, -0.1],
         "p_better": 0.97, "reason": "symptom gone",
         "details": {"budget_steps": 150, "curves": {"metric": "train_loss",
                                                     "baseline": {"0": {"steps": [1, 2], "values": [1.0, "nan"]}},
                                                     "candidate": {"0": {"steps": [1, 2], "values": [1.0, 0.9]}}}}}
    v.update(over)
    return v


def doc(*verdicts: dict, name: str = "divergence-mlp-lightning") -> dict:
    return {"runs": [{"name": name, "source": None, "verdicts": list(verdicts)}]}


def report(tmp_path: Path, content: str | bytes, capsys) -> tuple[int, str]:
    f = tmp_path / "verdicts.json"
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    rc = main(["report", str(SAMPLE), "-o", str(tmp_path / "r.html"), "--verdicts", str(f), "-j", "1"])
    return rc, capsys.readouterr().err


def nested(depth: int) -> list:
    x: list = [1]
    for _ in range(depth):
        x = [x]
    return x


def huge_curve() -> dict:
    n = 200_001
    return good_verdict(details={"curves": {"baseline": {"0": {"steps": list(range(n)), "values": [1.0] * n}}}})


@pytest.mark.parametrize("content, where, what", [
    ("{}", "runs", "expected an array, got null"),
    ('{"runs": {"a": 1}}', "runs", "expected an array, got an object"),
    (doc(good_verdict(p_value="high")), "runs[0].verdicts[0].p_value", "expected a number or null, got a string"),
    (doc(good_verdict(p_value=True)), "runs[0].verdicts[0].p_value", "expected a number or null, got a boolean"),
    (doc(good_verdict(seeds=["0"])), "runs[0].verdicts[0].seeds[0]", "expected a number, got a string"),
    (doc(good_verdict(ci=[1])), "runs[0].verdicts[0].ci", "expected 2 numbers, got 1"),
    (doc(good_verdict(verdict="<b>MAYBE</b>")), "runs[0].verdicts[0].verdict",
     "expected one of CONFIRMED, REJECTED, INCONCLUSIVE, ERROR, got '<b>MAYBE</b>'"),
    (doc(good_verdict(proposal_id=None)), "runs[0].verdicts[0].proposal_id", "expected a string, got null"),
    (doc(good_verdict(details=[1])), "runs[0].verdicts[0].details", "expected an object or null, got an array"),
    (doc(good_verdict(details={"curves": {"baseline": {"0": {"steps": [1, 2], "values": [1.0]}}}})),
     "runs[0].verdicts[0].details.curves.baseline.0", "2 steps but 1 values"),
    (doc(good_verdict(details={"curves": {"baseline": {"0": {"steps": [1], "values": [{"x": 1}]}}}})),
     "runs[0].verdicts[0].details.curves.baseline.0.values[0]", "expected a number, got an object"),
    (doc(good_verdict(details={"curves": {"baseline": {"x<y": {"steps": [1], "values": [1]}}}})),
     "runs[0].verdicts[0].details.curves.baseline", "seed 'x<y' is not an integer"),
    (doc(huge_curve()), "runs[0].verdicts[0].details.curves.baseline.0", "200,001 points, more than the 100,000"),
    ("[" * 100_000 + "]" * 100_000, "file", "nested too deeply to parse"),
    (json.dumps(doc(good_verdict(details={"deep": nested(40)}))),
     "file", "nested more than 32 levels deep"),
    ('{"runs": [', "line 1 column 11", "invalid JSON (Expecting value)"),
    (b'{"runs": []}\xff', "byte 12", "not UTF-8"),
], ids=["no-runs", "runs-object", "p-string", "p-bool", "seed-string", "ci-short", "verdict-html", "no-id",
        "details-array", "curve-lengths", "curve-object", "seed-name", "huge-curve", "deep-parse", "deep-tree",
        "truncated", "bad-utf8"])
def test_bad_verdicts_file_is_one_line_naming_where(tmp_path, capsys, content, where, what):
    text = content if isinstance(content, (str, bytes)) else json.dumps(content)
    t0 = time.perf_counter()
    rc, err = report(tmp_path, text, capsys)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"lrdoctor: error: {tmp_path / 'verdicts.json'}: not a verdicts file from "
                               f"'lrdoctor verify --json': {where}: {what}"), lines[0]
    assert not (tmp_path / "r.html").exists()  # refused before the runs are read and drawn
    assert time.perf_counter() - t0 < 20


def test_html_in_a_verdicts_file_is_escaped_on_the_page(tmp_path, capsys):
    (run,) = discover(str(SAMPLE))
    finding_rule = "divergence"
    long_reason = SCRIPT + "x" * 50_000
    v = good_verdict(rule=finding_rule, reason=long_reason, kind=SCRIPT,
                     details={"note": SCRIPT, "curves": {"metric": SCRIPT,
                                                         "baseline": {"0": {"steps": [1, 2], "values": [1, 2]}}}})
    data = {"runs": [{"name": run.name, "source": str(Path(run.source).resolve()), "verdicts": [v]},
                     {"name": SCRIPT, "source": None, "verdicts": [good_verdict()]}]}
    rc, err = report(tmp_path, json.dumps(data), capsys)
    assert rc == 0, err
    html = (tmp_path / "r.html").read_text()
    assert SCRIPT not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # shown, escaped: reason, kind, detail, run name
    assert "x" * 19_000 in html and "x" * 20_000 not in html  # a 50,000-character reason is cut
