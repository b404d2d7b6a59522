"""A missing optional dependency is named in one line before any work starts (exit 2).

Each case runs the real CLI in a fresh interpreter where a meta-path finder makes the package
unimportable exactly as when it is not installed (``sys.modules[name] = None`` would not do:
scipy looks torch up in ``sys.modules`` and trips over the None), as a user who ran
``pip install lrdoctor`` without the extra would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_logs"


def run_without(blocked: list[str], argv: list[str], cwd: Path, entry: str = "lrdoctor.cli",
                body: str = "") -> subprocess.CompletedProcess:
    code = ("import importlib.abc, sys\n"
            "class Blocker(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path, target=None):\n"
            f"        if name.partition('.')[0] in {blocked!r}:\n"
            "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
            "sys.meta_path.insert(0, Blocker())\n"
            + (body or f"from {entry} import main\nsys.exit(main({argv!r}))\n"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=120)


@pytest.mark.parametrize("blocked, argv, message", [
    (["torch"], ["verify", str(SAMPLE / "divergence-mlp-lightning"), "--out", "v"],
     "lrdoctor: error: rerunning a built-in workload needs torch: pip install 'lrdoctor[torch]'"),
    (["torch"], ["verify", str(SAMPLE / "divergence-mlp-lightning"), "--device", "cuda", "--out", "v"],
     "lrdoctor: error: --device cuda needs torch: pip install 'lrdoctor[torch]'"),
    (["ray"], ["verify", str(SAMPLE / "divergence-mlp-lightning"), "--executor", "ray", "--out", "v"],
     "lrdoctor: error: --executor ray needs ray: pip install 'lrdoctor[ray]'"),
    (["pyarrow"], ["export", str(SAMPLE / "divergence-mlp-lightning"), "-o", "v/points.parquet"],
     "lrdoctor: error: parquet output (or write .csv) needs pyarrow: pip install 'lrdoctor[parquet]'"),
    (["tensorboardX"], ["verify", str(SAMPLE / "loss-spike-cnn-tensorboardx"), "--out", "v"],
     "lrdoctor: error: rerunning a built-in workload in the tensorboardx format needs tensorboardX: "
     "pip install tensorboardX"),
], ids=["torch", "torch-cuda", "ray", "pyarrow", "tensorboardX"])
def test_missing_dependency_is_one_line_before_any_work(tmp_path, blocked, argv, message):
    proc = run_without(blocked, argv, tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [message]
    assert not (tmp_path / "v").exists()  # no rerun (and no export) was started


def test_workloads_without_torch_is_one_line(tmp_path):
    proc = run_without(["torch"], ["run", "divergence", "--out", "v"], tmp_path, entry="lrdoctor.workloads.__main__")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "lrdoctor.workloads: error: training a built-in workload needs torch: pip install 'lrdoctor[torch]'"]
    assert not (tmp_path / "v").exists()


@pytest.mark.parametrize("blocked, module, message", [
    (["transformers"], "lrdoctor.integrations.hf",
     "lrdoctor.integrations.hf needs transformers: pip install transformers"),
    (["lightning", "pytorch_lightning"], "lrdoctor.integrations.lightning",
     "lrdoctor.integrations.lightning needs lightning: pip install lightning"),
], ids=["hf", "lightning"])
def test_integration_without_its_framework_names_it(tmp_path, blocked, module, message):
    body = ("try:\n"
            f"    import {module}\n"
            "except ImportError as exc:  # still an ImportError for code that guards the import\n"
            "    print(exc)\n")
    proc = run_without(blocked, [], tmp_path, body=body)
    assert proc.returncode == 0 and proc.stdout.strip() == message, proc.stderr


def test_require_reports_a_broken_install_with_its_own_message():
    from lrdoctor._optional import MissingDependencyError, require

    with pytest.raises(MissingDependencyError, match=r"^demo needs lrdoctor_no_such_mod: pip install lrdoctor_no_such_mod$"):
        require("lrdoctor_no_such_mod", "demo")
    assert require("json", "demo").dumps([1]) == "[1]"
