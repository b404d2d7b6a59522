"""The report in a real browser: headless Chromium (Debian's ``chromium`` package).

The page carries a self-test (run when opened with ``#selftest``): it clicks every sortable
header and a copy button, measures each figure as laid out, collects any script error or
``console.error``, and writes the result as JSON into ``<pre id="lrd-selftest">``, which
``--dump-dom`` prints once the page's virtual time budget has run out. A screenshot is saved
for humans under ``tests/artifacts/`` (git-ignored).
"""

from __future__ import annotations

import html as htmllib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_report import diagnose, read_runs, sweep_dir

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "") if p and os.path.exists(p)), None)
ARTIFACTS = Path(__file__).parent / "artifacts"

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)"),
    pytest.mark.slow,
]


def chromium(args: list[str], profile: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio", f"--user-data-dir={profile}",
        "--enable-logging=stderr", "--v=0", *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, "LANG": "C.UTF-8"})


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    from lrdoctor.report import write_report

    root = tmp_path_factory.mktemp("browser")
    diagnoses = diagnose(read_runs(sweep_dir(root / "logs")))
    assert any(d.findings for d in diagnoses)
    return write_report(diagnoses, root / "report.html", workers=1)


def console_lines(stderr: str, page: Path) -> list[str]:
    """Console messages Chromium logged for our page (it logs them as ...:CONSOLE...] "msg", source: URL)."""
    return [line for line in stderr.splitlines() if "CONSOLE" in line and page.name in line]


def test_renders_without_errors_and_figures_are_visible(report, tmp_path):
    url = report.resolve().as_uri() + "#selftest"
    proc = chromium(["--window-size=1400,1000", "--virtual-time-budget=10000", "--dump-dom", url], tmp_path / "profile")
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = re.search(r'<pre id="lrd-selftest"[^>]*data-done="1"[^>]*>(.*?)</pre>', proc.stdout, re.S)
    assert m, "self-test did not finish: " + proc.stdout[-500:] + proc.stderr[-1500:]
    result = json.loads(htmllib.unescape(m.group(1)))
    assert result["errors"] == []
    assert console_lines(proc.stderr, report) == []
    figs = result["figures"]
    assert len(figs) >= 6  # 4 runs + LR plot + overlay
    for f in figs:
        assert f["complete"] and min(f["natural"]) > 100 and f["shown"][0] > 500 and f["shown"][1] > 100, f
    assert len(result["sorted"]) >= 6 and all(s.endswith(("ascending", "descending")) for s in result["sorted"])
    assert result["copy"] in ("0", "1")  # the button reported an outcome (clipboard or fallback) without throwing


def test_screenshot_for_humans(report, tmp_path):
    shot = tmp_path / "report.png"
    proc = chromium(["--window-size=1400,3000", f"--screenshot={shot}", report.resolve().as_uri()], tmp_path / "profile")
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    from matplotlib.image import imread

    img = imread(shot)
    assert img.shape[:2] == (3000, 1400)
    assert img[..., :3].std() > 0.05  # not a blank page
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / "report.png")
