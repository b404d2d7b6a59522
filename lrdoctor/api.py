"""The library surface: the same steps the CLI runs, as functions.

    import lrdoctor
    runs = lrdoctor.load_runs("runs/")
    diagnoses = lrdoctor.diagnose("runs/")            # or diagnose(runs)
    lrdoctor.report(diagnoses, "report.html")
    results = lrdoctor.verify("runs/exp1")            # needs torch

Each function delegates to its stage's module; nothing here holds logic of its own.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .model import Diagnosis, Run


def load_runs(path: str | os.PathLike, *, format: str | None = None, strict: bool = False) -> list[Run]:
    """Every run under ``path`` (a log file, a run directory or a tree of runs)."""
    from .readers import discover

    return discover(path, format=format, strict=strict)


def diagnose(
    path_or_runs: str | os.PathLike | Iterable[Run],
    *,
    format: str | None = None,
    strict: bool = False,
    role_overrides: Mapping[str, str] | None = None,
    rules: Sequence[Any] | None = None,
    jobs: int | None = None,
) -> list[Diagnosis]:
    """Run the rules (and attach proposals) on each run; one :class:`Diagnosis` per run."""
    from .engine.diagnose import diagnose_runs

    if isinstance(path_or_runs, (str, os.PathLike)):
        runs = load_runs(path_or_runs, format=format, strict=strict)
    else:
        runs = list(path_or_runs)
    return diagnose_runs(runs, rules=rules, role_overrides=role_overrides, jobs=jobs)


def report(diagnoses: Sequence[Diagnosis], path: str | os.PathLike, **kwargs: Any) -> Path:
    """Write the self-contained HTML report for ``diagnoses`` to ``path``."""
    from .report import write_report

    return write_report(diagnoses, path, **kwargs)


def verify(path: str | os.PathLike, **kwargs: Any) -> list[Any]:
    """Short paired reruns of each finding's top proposal, one result per run read; runs under
    ``path`` that cannot be read are logged as warnings (see :func:`lrdoctor.verify.entry.verify_path`,
    which returns them)."""
    import logging

    from .verify.entry import verify_path

    results, unreadable = verify_path(path, **kwargs)
    for exc in unreadable:
        logging.getLogger(__name__).warning("run not read: %s", exc)
    return results
