"""Library entry point behind ``lrdoctor verify``: path -> diagnosis -> proposals -> verdicts."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import LrdoctorError, UsageError
from ..model import Diagnosis, Proposal
from ..patch import ConfigPatch
from .executors import make_executor
from .protocol import VerifyConfig, resolve_device
from .runner import DEFAULT_OUT, RunVerification, resolved_source, verify_items

log = logging.getLogger(__name__)

#: Id of the proposal made from ``patch=`` (``--patch``).
PATCH_ID = "patch"


def select_items(diagnoses: Sequence[Diagnosis], proposal_id: str | None = None, rule: str | None = None,
                 patch: dict[str, Any] | None = None):
    """(run, finding or None, proposals) to verify: per finding its top proposal (or ``proposal_id``),
    plus ``patch`` as an extra proposal; a run without findings gets only ``patch``, checked for harm."""
    extra = (Proposal(id=PATCH_ID, kind="custom", summary="config patch", rationale="given by the user",
                      config=ConfigPatch.of(patch), code="") if patch is not None else None)
    items, seen_ids = [], set()
    for d in diagnoses:
        findings = [f for f in d.findings if rule is None or f.rule == rule]
        for f in findings:
            seen_ids.update(p.id for p in f.proposals)
            if proposal_id is not None:
                props = [p for p in f.proposals if p.id == proposal_id]
            else:
                props = list(f.proposals[:1])
            if extra is not None:
                props.append(extra)
            if props:
                items.append((d.run, f, props))
        if not findings and extra is not None and rule is None:
            items.append((d.run, None, [extra]))
    if proposal_id not in (None, PATCH_ID) and not any(p.id == proposal_id for _, _, ps in items for p in ps):
        known = ", ".join(sorted(seen_ids)) or "none"
        raise UsageError(f"--proposal {proposal_id}: no finding has that proposal (proposals found: {known})")
    return items


def rerun_diagnoser(rules, role_overrides: Mapping[str, str] | None = None):
    """Diagnose reruns with the same rules, each rule judged on its own (no superseding: a
    baseline whose spikes turned into a divergence still shows its instability)."""
    from dataclasses import replace

    from ..engine.diagnose import diagnose_runs

    own = [replace(r, superseded_by=()) for r in rules]

    def fn(runs):
        return diagnose_runs(runs, rules=own, role_overrides=role_overrides, jobs=1, proposals=False)

    return fn


def verify_path(
    path: str | Path,
    *,
    proposal_id: str | None = None,
    rule: str | None = None,
    patch: dict[str, Any] | None = None,
    seeds: int = 5,
    budget_steps: int | None = None,
    rerun_timeout: float | None = None,
    out: str | Path = DEFAULT_OUT,
    device: str = "auto",
    executor: str = "local",
    ray_address: str | None = None,
    jobs: int | None = None,
    train: str | None = None,
    fmt: str | None = None,
    strict: bool = False,
    role_overrides: Mapping[str, str] | None = None,
    rules=None,
    checkpoints: str | None = None,
    fork: bool = True,
    base_lr: float | None = None,
) -> tuple[list[RunVerification], list[LrdoctorError]]:
    """Diagnose the runs under ``path`` and verify the selected proposals: one entry per run read,
    and one error (naming the file) per run under ``path`` that could not be read -- it does not
    stop the others. Nothing readable at all (or any unreadable run with ``strict``) raises, as
    for ``discover``.

    ``rerun_timeout``: seconds before a rerun is killed as hung (0: never; None: derived from the
    run's logged wall time, see :mod:`lrdoctor.verify.timeouts`).
    """
    from ..engine.diagnose import diagnose_runs
    from ..engine.spec import load_rules
    from ..readers import discover_with_errors

    cfg = VerifyConfig(seeds=seeds, budget_steps=budget_steps, device=resolve_device(device),
                       rerun_timeout_s=rerun_timeout, fork=fork, checkpoints=checkpoints, base_lr=base_lr).check()
    rules = list(rules) if rules is not None else load_rules()
    runs, errors = discover_with_errors(str(path), format=fmt, strict=strict)
    diagnoses = diagnose_runs(runs, rules=rules, role_overrides=role_overrides, jobs=1, proposals=True)
    items = select_items(diagnoses, proposal_id, rule, patch)
    results: list[RunVerification] = []
    if items:
        n_tasks = 2 * cfg.seeds * sum(len(p) for _, _, p in items)
        jobs = jobs or max(1, min(os.cpu_count() or 1, n_tasks))
        with make_executor(executor, jobs=jobs, ray_address=ray_address, device=cfg.device) as ex:
            results = verify_items(items, rerun_diagnoser(rules, role_overrides), cfg, out=out, executor=ex,
                                   train=train)
    done = {r.name for r in results}
    if checkpoints and not any(v.details.get("fork", {}).get("checkpoint") for r in results for v in r.verdicts):
        log.warning("--checkpoints %s: no rerun forked from a matching checkpoint (see each verdict's start)",
                    checkpoints)
    return results + [RunVerification(d.run.name, (), resolved_source(d.run))
                      for d in diagnoses if d.run.name not in done], errors
