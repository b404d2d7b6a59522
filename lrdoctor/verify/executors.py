"""Where reruns execute: in this process, a local process pool, or a Ray cluster.

An executor takes a module-level function and a list of picklable tasks and yields
``(index, outcome)`` pairs as the tasks finish, where ``outcome`` is either the function's return
value or the exception that stopped it (a crashed worker never takes the other reruns down).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..errors import VerifyError

log = logging.getLogger(__name__)


class Executor:
    """Runs ``fn(task)`` for every task; subclasses decide where."""

    name = "base"

    def run(self, fn: Callable[[Any], Any], tasks: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        raise NotImplementedError

    def close(self) -> None:
        """Release workers; the executor may not be used afterwards."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SerialExecutor(Executor):
    """Runs tasks one by one in this process (debugging, and ``--jobs 1``)."""

    name = "serial"

    def run(self, fn, tasks):
        for i, task in enumerate(tasks):
            try:
                yield i, fn(task)
            except Exception as exc:  # noqa: BLE001 - reported per task, the others go on
                yield i, exc


def _init_worker() -> None:
    # Each worker is one rerun at a time; several torch threads per worker on a small machine
    # only fight each other (and change nothing in the numbers).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


class LocalPoolExecutor(Executor):
    """A ``concurrent.futures`` process pool, one torch thread per worker."""

    name = "local"

    def __init__(self, jobs: int | None = None):
        self.jobs = max(1, int(jobs or os.cpu_count() or 1))
        self._pool = None

    def _ensure(self):
        if self._pool is None:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            # spawn: forking a parent that may hold CUDA state or torch threads is unsafe
            self._pool = ProcessPoolExecutor(
                max_workers=self.jobs, mp_context=mp.get_context("spawn"), initializer=_init_worker,
            )
        return self._pool

    def run(self, fn, tasks):
        from concurrent.futures import as_completed

        if not tasks:
            return
        pool = self._ensure()
        futures = {pool.submit(fn, t): i for i, t in enumerate(tasks)}
        try:
            for fut in as_completed(futures):
                exc = fut.exception()
                yield futures[fut], exc if exc is not None else fut.result()
        finally:
            for fut in futures:
                fut.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class RayExecutor(Executor):
    """Ray tasks, one CPU each and ``gpus_per_task`` GPUs when reruns go to CUDA.

    ``address=None`` starts (or joins) a local Ray instance; ``"auto"`` or ``"ray://host:10001"``
    joins a cluster. lrdoctor must be importable on the workers (install it there, or pass a
    ``runtime_env``).
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, gpus_per_task: float = 0.0, cpus_per_task: float = 1.0,
                 runtime_env: dict | None = None):
        try:
            import ray
        except ImportError as exc:
            raise VerifyError("--executor ray needs Ray: pip install 'lrdoctor[ray]'") from exc
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

    def run(self, fn, tasks):
        ray = self._ray
        if not tasks:
            return
        remote = ray.remote(num_cpus=self.cpus_per_task, num_gpus=self.gpus_per_task, max_retries=0)(_ray_call)
        refs = {remote.remote(fn, t): i for i, t in enumerate(tasks)}
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
            for ref in pending:
                ray.cancel(ref, force=True)

    def close(self) -> None:
        if self._started_here and self._ray.is_initialized():
            self._ray.shutdown()


def _ray_call(fn, task):
    _init_worker()
    return fn(task)


def make_executor(kind: str, *, jobs: int | None = None, ray_address: str | None = None,
                  device: str = "cpu") -> Executor:
    kind = (kind or "local").lower()
    if kind == "local":
        if jobs == 1:
            return SerialExecutor()
        return LocalPoolExecutor(jobs)
    if kind == "ray":
        return RayExecutor(ray_address, gpus_per_task=1.0 if device == "cuda" else 0.0)
    if kind == "serial":
        return SerialExecutor()
    raise VerifyError(f"--executor must be local or ray, got {kind!r}")
