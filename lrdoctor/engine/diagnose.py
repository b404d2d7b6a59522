"""Diagnose many runs: rules on each, in parallel across cores when there are many."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from ..model import Diagnosis, Run
from ..roles import RoleView
from .runner import run_rules
from .spec import RuleSpec, apply_overrides, load_rules

log = logging.getLogger(__name__)

#: Below this many runs a process pool costs more than it saves.
PARALLEL_MIN_RUNS = 8


def _proposer() -> Callable | None:
    """lrdoctor.proposals.propose_with_errors, when that module is there and imports."""
    try:
        from ..proposals import propose_with_errors as propose
    except Exception as exc:  # noqa: BLE001 -- proposals are optional for a diagnosis
        log.debug("proposals unavailable: %s: %s", type(exc).__name__, exc)
        return None
    return propose


def diagnose_run(
    run: Run, rules: Sequence[RuleSpec], role_overrides: Mapping[str, str] | None = None,
    *, proposals: bool = True,
) -> Diagnosis:
    view = RoleView.of(run, role_overrides)
    return run_rules(view, rules, proposer=_proposer() if proposals else None)


#: The runs of the current parallel diagnosis, inherited by forked workers (no pickling of the
#: scalar tables: the workers read the parent's memory and send back only findings).
_SHARED: list[Run] = []


def _slim(d: Diagnosis) -> tuple:
    return d.findings, d.skipped_rules, d.roles


def _diagnose_chunk(
    indices: list[int], runs: list[Run] | None, rules: list[RuleSpec], role_overrides: dict[str, str] | None,
    proposals: bool,
) -> list[tuple]:
    source = runs if runs is not None else [_SHARED[i] for i in indices]
    return [_slim(diagnose_run(r, rules, role_overrides, proposals=proposals)) for r in source]


def _chunks(items: list, n: int) -> list[list]:
    size = max(1, -(-len(items) // n))
    return [items[i : i + size] for i in range(0, len(items), size)]


def _pool_context():
    """fork where the platform has it (workers inherit the runs), else the default (pickled)."""
    import multiprocessing

    try:
        return multiprocessing.get_context("fork"), True
    except ValueError:
        return None, False


def diagnose_runs(
    runs: Iterable[Run],
    *,
    rules: Sequence[RuleSpec] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    role_overrides: Mapping[str, str] | None = None,
    jobs: int | None = None,
    progress: bool = False,
    proposals: bool = True,
) -> list[Diagnosis]:
    """One Diagnosis per run, in input order.

    ``rules`` defaults to the built-in rules; ``overrides`` are ``--set`` values
    ({rule: {param: value}}). ``jobs`` worker processes (default: all cores) are used when there
    are at least PARALLEL_MIN_RUNS runs; ``progress`` shows a bar on stderr.
    """
    runs = list(runs)
    rule_list = list(rules) if rules is not None else load_rules()
    rule_list = apply_overrides(rule_list, overrides)
    roles = dict(role_overrides) if role_overrides else None
    jobs = jobs if jobs and jobs > 0 else (os.cpu_count() or 1)
    jobs = min(jobs, len(runs)) if runs else 1
    if jobs <= 1 or len(runs) < PARALLEL_MIN_RUNS:
        out = []
        with _Progress(len(runs), progress) as bar:
            for run in runs:
                out.append(diagnose_run(run, rule_list, roles, proposals=proposals))
                bar.advance()
        return out
    # several chunks per worker so the bar moves and uneven runs balance out
    chunks = _chunks(list(range(len(runs))), jobs * 4)
    ctx, forked = _pool_context()
    global _SHARED
    _SHARED = runs if forked else []
    results: list[tuple] = []
    try:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool, _Progress(len(runs), progress) as bar:
            futures = [
                pool.submit(_diagnose_chunk, c, None if forked else [runs[i] for i in c], rule_list, roles, proposals)
                for c in chunks
            ]
            for fut, chunk in zip(futures, chunks, strict=True):
                results.extend(fut.result())
                bar.advance(len(chunk))
    finally:
        _SHARED = []
    return [
        Diagnosis(run=run, findings=f, skipped_rules=sk, roles=ro)
        for run, (f, sk, ro) in zip(runs, results, strict=True)
    ]


class _Progress:
    """A rich progress bar on stderr when asked for (the CLI asks when stderr is a terminal or
    --progress is given); else nothing."""

    def __init__(self, total: int, enabled: bool):
        self.total = total
        self.enabled = enabled and total > 1
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import Progress

            self._bar = Progress(console=Console(stderr=True), transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task("diagnosing", total=self.total)
        return self

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, n)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
