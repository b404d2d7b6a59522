"""Rerun worker processes that can always be stopped, with everything they started.

Each worker is a spawned Python process that makes itself a session (and process-group) leader
before it runs anything, so a rerun's command and whatever that command starts share the
worker's process group. Killing that group (``os.killpg``) stops the whole rerun: used when a rerun
outlives its timeout, when ``verify`` is interrupted (Ctrl-C, SIGTERM) and when it finishes (a
command may leave a background child behind). Being in their own sessions, the workers do not get
the terminal's Ctrl-C themselves: the parent decides, and kills them.

If the parent dies without cleaning up (SIGKILL), Linux tells each worker (``PR_SET_PDEATHSIG``)
and the worker kills its own group.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

#: What a signal death probably means, for the ERROR verdict's reason.
SIGNAL_HINTS = {
    signal.SIGKILL: "the kernel's out-of-memory killer sends this when memory runs out",
    signal.SIGSEGV: "a crash in native code",
    signal.SIGABRT: "an abort in native code",
}


def signal_text(returncode: int) -> str:
    """``-9`` -> "killed by signal SIGKILL (the kernel's out-of-memory killer ...)"."""
    try:
        sig = signal.Signals(-returncode)
    except ValueError:
        return f"killed by signal {-returncode}"
    hint = SIGNAL_HINTS.get(sig)
    return f"killed by signal {sig.name}" + (f" ({hint})" if hint else "")


def kill_group(pid: int) -> None:
    """SIGKILL the process group led by ``pid`` (gone already: nothing to do)."""
    if hasattr(os, "killpg"):  # not on Windows, where only the worker itself is killed
        with suppress(OSError):
            os.killpg(pid, signal.SIGKILL)


def _die_with_parent() -> None:
    """Linux: when the parent dies, SIGTERM us; the handler takes our whole group down."""
    parent = os.getppid()
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM))
    except (OSError, AttributeError):  # not Linux: the parent's cleanup is the only one
        return
    signal.signal(signal.SIGTERM, lambda *_: os.killpg(0, signal.SIGKILL))
    if os.getppid() != parent:  # it died before prctl took effect
        os.killpg(0, signal.SIGKILL)


def worker_main(conn: Any, init: Any = None) -> None:
    """Body of a worker process: ``(fn, task)`` in; ``("started", None)`` then ``("ok", result)`` or
    ``("err", exception)`` out; until ``None`` or the parent goes away."""
    if hasattr(os, "setsid"):
        os.setsid()
        _die_with_parent()
    if init is not None:
        init()
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        fn, task = msg
        conn.send(("started", None))  # the timeout counts from here, not from the worker's start-up
        try:
            reply: tuple[str, Any] = ("ok", fn(task))
        except Exception as exc:  # noqa: BLE001 - reported for this task; the worker goes on
            reply = ("err", exc)
        try:
            conn.send(reply)
        except Exception as exc:  # noqa: BLE001 - an unpicklable result or exception
            conn.send(("err", RuntimeError(f"{type(exc).__name__}: {exc} (while returning {reply[0]})")))


class Worker:
    """One worker process and its connection (parent side)."""

    def __init__(self, ctx: Any, init: Any = None):
        parent, child = ctx.Pipe()
        self.conn = parent
        self.process = ctx.Process(target=worker_main, args=(child, init), daemon=False)
        self.process.start()
        child.close()
        self.index: int | None = None  # the task it runs
        self.timeout_s: float | None = None
        self.deadline: float | None = None  # set when the task has started

    def submit(self, index: int, fn: Any, task: Any, timeout_s: float | None) -> None:
        self.index, self.timeout_s, self.deadline = index, timeout_s or None, None
        self.conn.send((fn, task))

    def started(self) -> None:
        if self.timeout_s is not None:
            self.deadline = time.monotonic() + float(self.timeout_s)

    def kill(self) -> None:
        """Stop the worker and every process of its group, then reap it."""
        pid = self.process.pid
        if pid is not None:
            # a group outlives its leader while a member lives: this also reaches a command's
            # background child after the worker itself has died
            kill_group(pid)
            with suppress(OSError):
                self.process.kill()  # in case it died before os.setsid()
        self.process.join(5)
        with suppress(OSError):
            self.conn.close()


class Terminated(KeyboardInterrupt):
    """SIGTERM, unwinding like Ctrl-C; the command exits 128 + SIGTERM."""

    exit_code = 128 + int(signal.SIGTERM)


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler's stop, ``kill``) unwinds like Ctrl-C for the block, so the executors'
    cleanup kills the reruns (by default SIGTERM ends the process at once, leaving the workers to the
    parent-death signal, which only Linux has)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise Terminated(f"signal {signal.Signals(signum).name}")

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
