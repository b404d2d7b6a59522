"""Watching the processes a rerun command started (tests/verify_misbehave.py writes their pids)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def pids(tmp: Path) -> list[int]:
    f = tmp / "pids"
    return [int(x) for x in f.read_text().split()] if f.exists() else []


def alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped is dead: it runs nothing and holds nothing)."""
    if Path("/proc/self/stat").exists():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def survivors(ps: list[int], wait_s: float = 5.0) -> list[int]:
    end = time.monotonic() + wait_s
    while (left := [p for p in ps if alive(p)]) and time.monotonic() < end:
        time.sleep(0.1)
    return left


def wait_for(cond, what: str, timeout_s: float = 90.0) -> None:
    end = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
