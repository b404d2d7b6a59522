"""``lrdoctor watch`` says once that it cannot read a path, not at every poll; again only when the
problem went away and came back."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from lrdoctor.cli import main
from lrdoctor.live.follow import TreeFollower


def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    (root / "good").mkdir(parents=True)
    (root / "good" / "metrics.csv").write_text(
        "step,train_loss\n" + "".join(f"{s},{1.0 / (s + 1)}\n" for s in range(30)))
    return root


def _unreadable_log(root: Path) -> Path:
    """A text log beside the good run that nobody may read (chmod 000)."""
    bad = root / "other" / "train.log"
    bad.parent.mkdir()
    bad.write_text("step=1 loss=2.0\nstep=2 loss=1.9\nstep=3 loss=1.8\n")
    bad.chmod(0)
    return bad


def _watch(root: Path, as_json: bool, capsys) -> tuple[int, list[str], str]:
    code = main(["watch", str(root), "--interval", "0.05", "--idle", "0.6", *(["--json"] if as_json else [])])
    out, err = capsys.readouterr()
    if as_json:
        for line in out.splitlines():
            json.loads(line)  # stdout stays JSON Lines: the warning is on stderr
    return code, err.splitlines(), out


def _polls(monkeypatch) -> list[int]:
    """Counts TreeFollower polls (the warning must have had many chances to repeat)."""
    count = [0]
    poll = TreeFollower._poll

    def counted(self):
        count[0] += 1
        return poll(self)

    monkeypatch.setattr(TreeFollower, "_poll", counted)
    return count


def _chmod_bites(path: Path) -> bool:
    """Whether a chmod 000 file is refused to this process: not to root (os.geteuid() == 0) with
    its usual capabilities; it is to root run without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH."""
    path.write_text("x")
    path.chmod(0)
    try:
        with path.open("rb"):
            return False
    except PermissionError:
        return True
    finally:
        path.chmod(0o644)


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_a_file_without_read_permission_is_warned_about_once(tmp_path, capsys, monkeypatch, as_json):
    if not _chmod_bites(tmp_path / "probe"):
        pytest.skip(f"chmod 000 does not stop this process (euid {os.geteuid()}): the tests below fail the read otherwise")
    root = _tree(tmp_path)
    bad = _unreadable_log(root)
    polls = _polls(monkeypatch)
    try:
        code, err, _ = _watch(root, as_json, capsys)
    finally:
        bad.chmod(0o644)
    warned = [ln for ln in err if str(bad) in ln]
    assert code == 0 and polls[0] >= 5
    assert len(warned) == 1 and "Permission denied" in warned[0], err


#: root without the capabilities that let it read any file: chmod 000 bites (CI runs as root)
_NO_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_a_file_without_read_permission_is_warned_about_once_by_root_without_dac_override(tmp_path, as_json):
    """The test above, for root: ``lrdoctor watch`` runs in a process without CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH (util-linux's setpriv), where a chmod 000 file is refused as to a user."""
    import shutil
    import subprocess
    import sys
    import time

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (a plain user runs the test above)")
    probe = tmp_path / "probe"
    probe.write_text("x")
    probe.chmod(0)
    tried = subprocess.run([*_NO_DAC, sys.executable, "-c", f"open({str(probe)!r}).read()"], capture_output=True)
    if tried.returncode == 0 or b"PermissionError" not in tried.stderr:
        pytest.skip(f"setpriv could not drop the capabilities here: {tried.stderr[-200:]!r}")
    root = _tree(tmp_path)
    bad = _unreadable_log(root)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]) + os.pathsep
           + os.environ.get("PYTHONPATH", "")}
    t0 = time.monotonic()
    done = subprocess.run([*_NO_DAC, sys.executable, "-m", "lrdoctor.cli", "watch", str(root), "--interval", "0.05",
                           "--idle", "0.6", *(["--json"] if as_json else [])],
                          capture_output=True, text=True, timeout=60, env=env)
    bad.chmod(0o644)
    warned = [ln for ln in done.stderr.splitlines() if str(bad) in ln]
    assert done.returncode == 0 and time.monotonic() - t0 > 0.6  # 12 polls at least
    assert len(warned) == 1 and "Permission denied" in warned[0], done.stderr


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_a_dangling_link_is_warned_about_once(tmp_path, capsys, monkeypatch, as_json):
    """A real failed read as any user, root included: a log named by a link whose target is gone."""
    root = _tree(tmp_path)
    link = root / "good" / "train.log"
    link.symlink_to(tmp_path / "gone.log")
    polls = _polls(monkeypatch)
    code, err, out = _watch(root, as_json, capsys)
    warned = [ln for ln in err if str(link) in ln]
    assert code == 0 and polls[0] >= 5
    assert len(warned) == 1 and warned[0].startswith("lrdoctor: warning:") and "cannot read" in warned[0], err


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_permission_denied_at_the_readers_boundary_is_warned_about_once(tmp_path, capsys, monkeypatch, as_json):
    """Root is never refused by chmod; here opening the file raises what a user without read
    permission gets, both when discovery sniffs it and when the follower reads what was appended."""
    root = _tree(tmp_path)
    denied = {root / "good" / "metrics.csv"}
    real_open = Path.open

    def refusing_open(self, *args, **kwargs):
        if self in denied:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    import builtins
    real_builtin_open = builtins.open

    def refusing_builtin_open(file, *args, **kwargs):
        if Path(file) in denied if isinstance(file, (str, os.PathLike)) else False:
            raise PermissionError(13, "Permission denied", str(file))
        return real_builtin_open(file, *args, **kwargs)

    (root / "second").mkdir()
    (root / "second" / "metrics.csv").write_text((root / "good" / "metrics.csv").read_text())
    monkeypatch.setattr(Path, "open", refusing_open)
    monkeypatch.setattr(builtins, "open", refusing_builtin_open)
    polls = _polls(monkeypatch)
    code, err, out = _watch(root, as_json, capsys)
    warned = [ln for ln in err if "good/metrics.csv" in ln]
    assert code == 0 and polls[0] >= 5
    assert len(warned) == 1 and "Permission denied" in warned[0], err


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_warned_again_only_when_the_problem_comes_back(tmp_path):
    root = _tree(tmp_path)
    link = root / "good" / "train.log"
    target = tmp_path / "train.log"
    link.symlink_to(target)
    handler = _Lines()
    logger = logging.getLogger("lrdoctor")
    logger.addHandler(handler)
    try:
        tree = TreeFollower(root)
        said = []
        for fix in (None, None, None, "write", None, "remove", None, None):
            if fix == "write":
                target.write_text("step=1 loss=2.0\nstep=2 loss=1.9\nstep=3 loss=1.8\n")
            elif fix == "remove":
                target.unlink()
            tree.poll()
            said.append(sum(str(link) in ln for ln in handler.lines))
            handler.lines.clear()
    finally:
        logger.removeHandler(handler)
    assert said == [1, 0, 0, 0, 0, 1, 0, 0]


def test_a_file_that_becomes_unreadable_while_followed_is_warned_about_once(tmp_path, monkeypatch):
    """Discovery found it readable; the follower's own read fails: a warning, not the end of watch."""
    root = _tree(tmp_path)
    log_file = root / "good" / "metrics.csv"
    tree = TreeFollower(root)
    assert len(tree.poll()) == 1
    handler = _Lines()
    logging.getLogger("lrdoctor").addHandler(handler)
    import builtins
    real_open = builtins.open

    def refusing(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and Path(file) == log_file:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    try:
        with log_file.open("a") as fh:
            fh.write("30,0.03\n")
        monkeypatch.setattr(builtins, "open", refusing)
        got = [tree.poll() for _ in range(4)]
        monkeypatch.setattr(builtins, "open", real_open)
        after = tree.poll()
    finally:
        logging.getLogger("lrdoctor").removeHandler(handler)
    assert got == [[], [], [], []]
    assert sum(str(log_file) in ln and "Permission denied" in ln for ln in handler.lines) == 1
    [(_, points)] = after
    assert points["step"].tolist() == [30]
