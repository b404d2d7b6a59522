"""Detectors write the step-axis word as ``{axis}`` in their prose; every finding on the bundled
sample runs shows it filled in (message and evidence alike: JSON and the HTML page print the
evidence as it is)."""

from __future__ import annotations

import json
from pathlib import Path

import lrdoctor

SAMPLES = Path(__file__).resolve().parents[1] / "sample_logs"


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def test_no_finding_on_the_samples_leaves_the_axis_placeholder():
    diagnoses = lrdoctor.diagnose(lrdoctor.load_runs(SAMPLES))
    findings = [f for d in diagnoses for f in d.findings]
    with_detail = [f for f in findings if isinstance(f.evidence.get("detail"), str)]
    assert with_detail, "no sample finding carries a prose detail: the test checks nothing"
    for f in findings:
        texts = [f.message, *_strings(f.evidence)]
        assert not any("{axis}" in t for t in texts), (f.rule, texts)
        assert "{axis}" not in json.dumps(f.evidence)
