"""What ``verify`` writes under ``--out``: one holder at a time, and files that are whole or absent.

* :func:`out_lock` - an exclusive ``flock`` on ``OUT/.lrdoctor-verify.lock`` for the whole
  verification. The kernel releases it when the holder exits, however it exits (a crash, SIGKILL),
  so a stale lock never blocks anyone; the file keeps who took it last (pid, host, start time)
  so a second ``verify`` can say who holds it.
* :func:`write_atomic` - temp file, fsync, ``os.replace``: a "finished" marker is never half
  written, on a full disk or a kill mid-write; a write that fails leaves the old state and no temp.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from ..errors import VerifyError

log = logging.getLogger(__name__)
LOCK_NAME = ".lrdoctor-verify.lock"
#: errnos that mean the disk (or the user's quota) is full: one clear error, not an ERROR per rerun
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def write_error(path: Path, exc: OSError) -> VerifyError:
    """A failed write under --out as one line (a full disk says so)."""
    why = exc.strerror or str(exc)
    if exc.errno in DISK_FULL:
        why += "; free some space or use another --out (finished reruns are kept and reused)"
    return VerifyError(f"cannot write {path}: {why}")


def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all; an OSError becomes a :class:`VerifyError`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())  # a full disk may only show here (delayed allocation, NFS)
        os.replace(tmp, path)
    except OSError as exc:
        with suppress(OSError):
            tmp.unlink()
        raise write_error(path, exc) from exc


def _holder(text: str) -> str:
    try:
        who = json.loads(text)
        return f"pid {who['pid']} on {who['host']}, started {who['started']}"
    except (ValueError, KeyError, TypeError):
        return "a process that left no details"


@contextmanager
def out_lock(out: str | Path) -> Iterator[Path]:
    """Hold ``OUT``'s lock for the block, or raise :class:`VerifyError` naming who holds it."""
    out = Path(out)
    try:
        import fcntl
    except ImportError:  # Windows: no flock; concurrent runs are the user's to avoid
        yield out
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise write_error(out / LOCK_NAME, exc) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            with open(out / LOCK_NAME, encoding="utf-8", errors="replace") as fh:
                who = _holder(fh.read(4096))
            raise VerifyError(f"--out {out} is in use by another 'lrdoctor verify' ({who}); wait for it to "
                              "finish or use another --out") from None
        except OSError as exc:  # a filesystem without locks (some NFS mounts): warn, do not refuse
            log.warning("cannot lock --out %s (%s): a second verify on it would not be stopped", out,
                        exc.strerror or exc)
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S %z")}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        except OSError as exc:
            raise write_error(out / LOCK_NAME, exc) from exc
        yield out
    finally:
        os.close(fd)  # releases the lock; the file stays (unlinking it would race a new holder)
