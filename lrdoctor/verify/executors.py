"""Where reruns execute: in this process, a local process pool, or a Ray cluster.

An executor takes a module-level function and a list of picklable tasks and yields
``(index, outcome)`` pairs as the tasks finish, where ``outcome`` is either the function's return
value or the exception that stopped it (a crashed worker never takes the other reruns down).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .._optional import require
from ..errors import VerifyError
from .procs import Worker, signal_text

log = logging.getLogger(__name__)


class Executor:
    """Runs ``fn(task)`` for every task; subclasses decide where."""

    name = "base"

    def run(self, fn: Callable[[Any], Any], tasks: Sequence[Any],
            timeouts: Sequence[float | None] | None = None) -> Iterator[tuple[int, Any]]:
        """Yield ``(index, outcome)`` as tasks finish; ``timeouts[i]`` (seconds, None = none) bounds
        task ``i`` where the executor can stop it (not :class:`SerialExecutor`)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release workers; the executor may not be used afterwards."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SerialExecutor(Executor):
    """Runs tasks one by one in this process (debugging and tests): no timeouts, and a rerun that
    crashes the interpreter takes this process with it."""

    name = "serial"

    def run(self, fn, tasks, timeouts=None):
        for i, task in enumerate(tasks):
            try:
                yield i, fn(task)
            except Exception as exc:  # noqa: BLE001 - reported per task, the others go on
                yield i, exc


def _init_worker() -> None:
    # Each worker is one rerun at a time; several torch threads per worker on a small machine
    # only fight each other (and change nothing in the numbers). torch reads OMP_NUM_THREADS when
    # it is imported, so a worker whose reruns are commands never pays for importing it here.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


#: longest wait for a worker before checking timeouts and cancellation again
POLL_S = 0.5


class RerunTimeout(Exception):
    """A rerun outlived its timeout; it was killed with every process it started."""


class RerunKilled(Exception):
    """A rerun's process died from a signal (the OOM killer's SIGKILL, a segfault)."""


class LocalPoolExecutor(Executor):
    """Worker processes on this machine, one torch thread each, each rerun killable as a group.

    Not ``concurrent.futures``: its pool can neither stop one task at a timeout nor reach the
    processes a task starts. Here each worker leads its own process group (:mod:`.procs`); a
    rerun past its timeout, or every rerun on an interrupt, is killed with its whole group, and
    a worker lost that way (or to the OOM killer) is replaced for the next task.
    """

    name = "local"

    def __init__(self, jobs: int | None = None):
        import multiprocessing as mp

        self.jobs = max(1, int(jobs or os.cpu_count() or 1))
        # spawn: forking a parent that may hold CUDA state or torch threads is unsafe
        self._ctx = mp.get_context("spawn")
        self._idle: list[Worker] = []

    def run(self, fn, tasks, timeouts=None):
        from multiprocessing.connection import wait

        pending = list(range(len(tasks)))[::-1]
        busy: list[Worker] = []
        try:
            while pending or busy:
                while pending and len(busy) < self.jobs:
                    w = self._idle.pop() if self._idle else Worker(self._ctx, _init_worker)
                    i = pending.pop()
                    busy.append(w)
                    w.submit(i, fn, tasks[i], timeouts[i] if timeouts else None)
                deadlines = [w.deadline for w in busy if w.deadline is not None]
                # Bounded, never a blocking wait: Ray cancels a task by raising KeyboardInterrupt in
                # its thread, which Python delivers only between bytecodes, not inside select()
                wait_s = min([POLL_S, *(max(0.0, d - time.monotonic()) for d in deadlines)])
                wait([x for w in busy for x in (w.conn, w.process.sentinel)], timeout=wait_s)
                for w in list(busy):
                    got = self._collect(w)
                    if got is None:
                        continue
                    (outcome,) = got
                    busy.remove(w)
                    if isinstance(outcome, (RerunTimeout, RerunKilled)):
                        w.kill()
                    else:
                        self._idle.append(w)
                    yield w.index, outcome
        finally:
            # interrupted (Ctrl-C, SIGTERM) or abandoned by the caller: what still runs is killed,
            # with its children; what finished has already been written by its worker
            for w in busy:
                w.kill()

    @staticmethod
    def _collect(w: Worker) -> tuple[Any] | None:
        """``(outcome,)`` when the worker's task has one now, else None (still running)."""
        while w.conn.poll():
            try:
                status, value = w.conn.recv()
            except (EOFError, OSError):
                break  # died while answering: the exit code below says how
            if status != "started":
                return (value,)
            w.started()
        if not w.process.is_alive():
            code = w.process.exitcode
            if code is not None and code < 0:
                return (RerunKilled(f"the rerun's process was {signal_text(code)}"),)
            return (RerunKilled(f"the rerun's worker process exited with code {code}"),)
        if w.deadline is not None and time.monotonic() >= w.deadline:
            return (RerunTimeout(f"timed out after {w.timeout_s:g} s and was killed with its child processes "
                                 "(--rerun-timeout)"),)
        return None

    def close(self) -> None:
        for w in self._idle:
            w.kill()  # the group, too: a command may have left a background child behind
        self._idle = []


class RayExecutor(Executor):
    """Ray tasks, one CPU each and ``gpus_per_task`` GPUs when reruns go to CUDA.

    ``address=None`` starts (or joins) a local Ray instance; ``"auto"`` or ``"ray://host:10001"``
    joins a cluster. lrdoctor must be importable on the workers (install it there, or pass a
    ``runtime_env``).
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, gpus_per_task: float = 0.0, cpus_per_task: float = 1.0,
                 runtime_env: dict | None = None):
        ray = require("ray", "--executor ray")
        self._ray = ray
        self.gpus_per_task = float(gpus_per_task)
        self.cpus_per_task = float(cpus_per_task)
        self._started_here = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False}
            if address:
                kwargs["address"] = address
            if runtime_env:
                kwargs["runtime_env"] = runtime_env
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise VerifyError(f"cannot connect to Ray at {address or 'a local instance'}: {exc}") from exc
            self._started_here = True

    def run(self, fn, tasks, timeouts=None):
        ray = self._ray
        if not tasks:
            return
        remote = ray.remote(num_cpus=self.cpus_per_task, num_gpus=self.gpus_per_task, max_retries=0)(_ray_call)
        refs = {remote.remote(fn, t, timeouts[i] if timeouts else None): i for i, t in enumerate(tasks)}
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    try:
                        yield refs[ref], ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - a failed task is that rerun's error
                        yield refs[ref], exc
        finally:
            # A plain cancel raises KeyboardInterrupt inside a running task, whose one-worker pool
            # then kills the rerun's process group on that node; force only what ignores it.
            for ref in pending:
                ray.cancel(ref)
            if pending:
                _done, stuck = ray.wait(pending, num_returns=len(pending), timeout=10)
                for ref in stuck:
                    ray.cancel(ref, force=True)

    def close(self) -> None:
        if self._started_here and self._ray.is_initialized():
            self._ray.shutdown()


def _ray_call(fn, task, timeout_s):
    """On the Ray node: the rerun runs in a killable process group with its timeout, as locally.
    A failure comes back as the exception object (not raised), so it is not wrapped in Ray's."""
    with LocalPoolExecutor(1) as ex:
        ((_, out),) = ex.run(fn, [task], [timeout_s])
    return out


def make_executor(kind: str, *, jobs: int | None = None, ray_address: str | None = None,
                  device: str = "cpu") -> Executor:
    kind = (kind or "local").lower()
    if kind == "local":
        return LocalPoolExecutor(jobs)
    if kind == "ray":
        return RayExecutor(ray_address, gpus_per_task=1.0 if device == "cuda" else 0.0)
    if kind == "serial":
        return SerialExecutor()
    raise VerifyError(f"--executor must be local or ray, got {kind!r}")
