"""Orchestration: plan the paired reruns of every proposal, run them, read them back, decide.

Layout under ``--out`` (default ``./lrdoctor-verify/``), one directory per rerun::

    OUT/<run>/baseline-<fork>/seed<k>/            shared by every proposal with that fork and budget
    OUT/<run>/<rule>--<proposal id>-<config hash>-<fork>/seed<k>/
        (<fork> is b<budget> from step 0, f<start step>-b<budget> from a checkpoint)
        logs/                 what the rerun logged (read back with lrdoctor's readers)
        lrdoctor-rerun.done   written when it finished; a repeat with the same digest skips it
        stdout.log stderr.log command.json error.log   (command backend / failures)
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LrdoctorError, VerifyError
from ..jsonsafe import json_safe
from ..model import Diagnosis, Finding, Proposal, Run, Verdict, VerdictKind
from ..patch import ConfigPatch
from ..roles import RoleView
from ..runfacts import (
    base_lr,
    clip_threshold,
    configured,
    hparams_of,
    logged_peak_lr,
    peak_lr_unseen,
    planned_steps,
)
from .backends import (
    CommandBackend,
    RerunOutcome,
    RerunTask,
    WorkloadBackend,
    finished,
    run_rerun,
    task_digest,
    write_error_log,
)
from .checkpoints import FORKABLE, Fork, find_checkpoints, plan_fork, skipped_span, stops_inside_skip
from .cost import RunCost, distinct_steps, verdict_cost
from .executors import Executor, RerunKilled, RerunTimeout, SerialExecutor
from .outdir import out_lock
from .protocol import VerifyConfig
from .readback import CURVE_POINTS, applied_grad_norm, curves_detail, display_curve, logged_span, read_back  # noqa: F401 (re-exported)
from .timeouts import rerun_timeout
from .verdict import ArmResult, decide

log = logging.getLogger(__name__)

DEFAULT_OUT = "lrdoctor-verify"
HOW_TO_RERUN = (
    "cannot rerun {name}: set it up one of three ways: (a) a run directory written by an lrdoctor "
    "workload (it holds lrdoctor-run.json); (b) --train \"python train.py --lr {{lr}} --max-steps {{max_steps}} "
    "--seed {{seed}} --logdir {{logdir}}\"; (c) --train \"python train.py\" with "
    "lrdoctor.Controller.from_env(optimizer, model) and ctl.step(loss) in the script"
)


@dataclass(frozen=True)
class RunVerification:
    name: str
    verdicts: tuple[Verdict, ...]
    #: the run's log path, resolved: its name depends on the PATH it was found under, so
    #: 'lrdoctor report' pairs verdicts with runs by this path
    source: str | None = None
    cost: RunCost | None = None  # what verifying it cost (None: nothing was rerun)

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` shape; each verdict's ``details`` (statistics per seed, rerun curves) rides
        along under "details", strict JSON (non-finite numbers as "nan"/"inf"/"-inf" strings)."""
        return {"name": self.name,
                "verdicts": [{**v.to_dict(), "details": json_safe(v.details_json())} for v in self.verdicts],
                "source": self.source, "cost": self.cost.to_dict() if self.cost else None}


@dataclass(frozen=True)
class _Job:
    run: Run
    rule: str | None
    proposal: Proposal
    budget: int
    baseline: tuple[str, ...]
    candidate: tuple[str, ...]
    base_lr: float | None
    symptom_role: str | None  # the role the finding's rule declares its symptom on
    fork: Fork  # start step 0 and no checkpoint when the reruns start from scratch
    original_steps: int | None
    raises_lr: bool = False  # the finding's rule may be cured by a higher LR (the ladder may climb up)


@dataclass
class _Plan:
    tasks: dict[str, RerunTask] = field(default_factory=dict)
    jobs: list[_Job] = field(default_factory=list)
    said: set[str] = field(default_factory=set)  # warnings already logged (one per verify, not per run)


def _short_hash(config: dict) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:6]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "run"


def run_length(run: Run) -> int | None:
    """The original run's length: its configured max_steps when known, else its last logged step
    (plus one when it logged a step 0: a loop that counts from 0 and logged 0..299 ran 300 steps)."""
    planned = planned_steps(run)
    if planned is not None:
        return planned
    first, last = logged_span(run)
    return None if last is None else last + (1 if first == 0 else 0)


def backend_for(run: Run, train: str | None, *, fmt: str | None = None, cwd: str | None = None,
                lr: float | None = None):
    """How to rerun ``run``; ``lr`` (``--base-lr``) is the baseline's ``{lr}`` instead of the run's own."""
    if train:
        base: dict[str, Any] = {"lr": lr if lr is not None else base_lr(run)}
        params = hparams_of(run)
        for key in ("weight_decay", "batch_size", "warmup_steps"):
            hit = configured(run, key, params)
            if hit is not None:
                base[key] = hit[1]
        clip = clip_threshold(run)
        if clip is not None:
            base["clip_grad_norm"] = clip
        peak = logged_peak_lr(run)
        if peak is not None:
            base["logged_peak_lr"] = peak
        return CommandBackend(train, base=base, cwd=cwd)
    if run.origin is not None and run.origin.config is not None:
        return WorkloadBackend(run.origin, fmt=fmt)
    raise VerifyError(HOW_TO_RERUN.format(name=run.name))


def onset_of(finding: Finding) -> int | None:
    if finding.start_step is not None:
        return int(finding.start_step)
    return int(min(finding.steps)) if finding.steps else None


def last_event_of(finding: Finding) -> int | None:
    """Where the finding ends: its last point event or the end of its stretch (a trend rule such
    as overfitting grows over its whole stretch, so a rerun that stops early under-reproduces it)."""
    ends = [int(s) for s in finding.steps]
    if finding.end_step is not None:
        ends.append(int(finding.end_step))
    return max(ends) if ends else None


def _check_out(out: Path, runs: Sequence[Run]) -> None:
    out_r = out.resolve()
    for run in runs:
        src = Path(run.source).resolve()
        root = src if src.is_dir() else src.parent
        if out_r == root or root in out_r.parents:
            raise VerifyError(f"--out {out} is inside the input run {run.source}; reruns never write there")


def steps_trained(run: Run) -> int | None:
    """Optimizer steps the original run actually trained (its last logged train-loss step, plus
    one when it logged a step 0, as in :func:`run_length`; a diverged run stops early), the
    denominator of the cost ratio."""
    s = RoleView.of(run).get("train_loss")
    if s is not None and len(s):
        return int(np.max(s.steps)) + (1 if int(np.min(s.steps)) == 0 else 0)
    return run_length(run)


def fork_for(run: Run, finding: Finding | None, cfg: VerifyConfig, backend,
             proposals: Sequence[Proposal] = ()) -> Fork:
    """Where this finding's reruns start (a checkpoint before the onset and before any batch the
    proposals skip, else step 0) and how long."""
    rule = finding.rule if finding is not None else None
    onset = onset_of(finding) if finding is not None else None
    last = last_event_of(finding) if finding is not None else None
    judged = finding.judged if finding is not None else None
    found: tuple = ()
    why = None
    if cfg.fork and rule is not None and onset is not None and judged in FORKABLE:
        found = find_checkpoints(run.source, cfg.checkpoints)
        usable = tuple(c for c in found if backend.resumable(c.kind) is None)
        if found and not usable:
            why = backend.resumable(found[0].kind)
        found = usable or found
    fork = plan_fork(cfg, rule, onset, last, run_length(run), found, why, judged,
                     skipped_span([p.config for p in proposals]))
    log.info("%s: %s", run.name, fork.note)
    return fork


def _add_job(p: _Plan, run: Run, finding: Finding | None, prop: Proposal, fork: Fork, backend, cfg: VerifyConfig,
             run_dir: Path, lr: float | None, original_steps: int | None) -> _Job:
    rule = finding.rule if finding is not None else None
    keys: dict[str, list[str]] = {"baseline": [], "candidate": []}
    budget = fork.budget_steps
    tag = f"f{fork.start_step}-b{budget}" if fork.checkpoint is not None else f"b{budget}"
    resume = fork.checkpoint.path if fork.checkpoint is not None else None
    start = fork.start_step
    timeout_s = rerun_timeout(run, budget, cfg.rerun_timeout_s)
    for arm, patch, sub in (
        ("baseline", ConfigPatch(), f"baseline-{tag}"),
        ("candidate", prop.config,
         f"{_safe(rule or 'healthy')}--{_safe(prop.id)}-{_short_hash(prop.config.to_dict())}-{tag}"),
    ):
        for seed in cfg.seed_list():
            key = str(run_dir / sub / f"seed{seed}")
            if key not in p.tasks:
                p.tasks[key] = RerunTask(
                    key=key, arm=arm, seed=seed, max_steps=budget, patch=patch, rerun_dir=key,
                    device=cfg.device, backend=backend,
                    digest=task_digest(backend, patch, budget, seed, cfg.device, start, resume),
                    timeout_s=timeout_s, start_step=start, resume_from=resume,
                )
            keys[arm].append(key)
    job = _Job(run, rule, prop, budget, tuple(keys["baseline"]), tuple(keys["candidate"]), lr,
               finding.symptom_role if finding is not None else None, fork, original_steps,
               finding.raises_lr if finding is not None else False)
    p.jobs.append(job)
    return job


def plan(
    items: Sequence[tuple[Run, Finding | None, Sequence[Proposal]]],
    cfg: VerifyConfig,
    out: Path,
    train: str | None = None,
) -> _Plan:
    """Every rerun needed, deduplicated (a baseline is shared by the proposals of one fork and budget)."""
    p = _Plan()
    for run, finding, proposals in items:
        lr = cfg.base_lr if cfg.base_lr is not None and train else base_lr(run)
        backend = backend_for(run, train, lr=lr)
        backend.require()  # a missing torch is one line now, not a traceback per rerun
        if isinstance(backend, CommandBackend) and cfg.base_lr is None and peak_lr_unseen(run):
            log.warning("%s: the baseline reruns' {lr} is %.3g, the last LR the run logged, and its LR was still "
                        "rising there (stopped during warmup?): if your command's LR is a peak its schedule "
                        "reaches later, the baseline does not replay the original run; pass --base-lr PEAK",
                        run.name, lr)
        if isinstance(backend, CommandBackend):
            lr_needed = any("lr_scale" in pr.config or "lr" in pr.config for pr in proposals)
            backend.check(lr_needed=lr_needed)
            for warning in backend.warnings(lr_needed=lr_needed):
                if warning not in p.said:
                    p.said.add(warning)
                    log.warning("%s", warning)
        fork = fork_for(run, finding, cfg, backend, proposals)
        trained = steps_trained(run)
        for prop in proposals:
            _add_job(p, run, finding, prop, fork, backend, cfg, out / _safe(run.name), lr, trained)
    return p


def _progress(total: int):
    if not sys.stderr.isatty() or total == 0:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    prog = Progress(TextColumn("verify"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=Console(stderr=True), transient=True)
    prog.start()
    prog.add_task("reruns", total=total)
    return prog


def execute(tasks: Sequence[RerunTask], executor: Executor) -> dict[str, RerunOutcome]:
    """Run what is not finished yet; a rerun with a matching marker is reused as is."""
    outcomes: dict[str, RerunOutcome] = {}
    todo = []
    for t in tasks:
        if finished(t):
            outcomes[t.key] = RerunOutcome(t.key, True, t.logdir, reused=True)
        else:
            todo.append(t)
    if len(outcomes):
        log.info("reusing %d finished reruns", len(outcomes))
    prog = _progress(len(todo))
    results = executor.run(run_rerun, todo, [t.timeout_s for t in todo])
    try:
        for i, res in results:
            t = todo[i]
            if isinstance(res, LrdoctorError):
                raise res  # cannot write under --out (a full disk): one error, the other reruns stop
            if isinstance(res, BaseException):
                # the worker could not report (timed out, killed by a signal): its reason is the error
                why = str(res) if isinstance(res, (RerunTimeout, RerunKilled)) else f"{type(res).__name__}: {res}"
                write_error_log(t.rerun_dir, why + "\n")
                res = RerunOutcome(t.key, False, t.logdir, returncode=None, stderr_tail=why)
            outcomes[t.key] = res
            if res.ok and not any(Path(t.logdir).iterdir()):
                # a misconfigured command: every other rerun would do the same, so stop now
                raise VerifyError(
                    f"the rerun finished but wrote no logs in {t.logdir}; the command must write its logs "
                    "into {logdir} (or LRDOCTOR_LOGDIR, which lrdoctor.Controller uses)"
                )
            log.debug("rerun %s: %s in %.1fs", t.key, "ok" if res.ok else "failed", res.seconds)
            if prog is not None:
                prog.advance(prog.task_ids[0])
    finally:
        # an error above closes the executor's generator now, which kills the reruns still running
        getattr(results, "close", lambda: None)()
        if prog is not None:
            prog.stop()
    return outcomes


def verify_items(
    items: Sequence[tuple[Run, Finding | None, Sequence[Proposal]]],
    diagnose_fn: Callable[[list[Run]], list[Diagnosis]],
    cfg: VerifyConfig,
    *,
    out: str | Path = DEFAULT_OUT,
    executor: Executor | None = None,
    train: str | None = None,
) -> list[RunVerification]:
    """Verify each (run, finding, proposals) item; ``finding=None`` checks proposals on a healthy run."""
    from .ladder import climb

    cfg = cfg.check(warn=False)  # verify_path already checked it and warned once
    out = Path(out)
    _check_out(out, [run for run, _, _ in items])
    p = plan(items, cfg, out, train)
    executor = executor or SerialExecutor()
    arms: dict[str, ArmResult] = {}
    run_of: dict[str, Run] = {}

    def settle(jobs: Sequence[_Job]) -> None:
        """Run and read back every rerun of ``jobs`` not read yet."""
        for job in jobs:
            run_of.update({k: job.run for k in (*job.baseline, *job.candidate)})
        todo = [p.tasks[k] for k in dict.fromkeys(k for job in jobs for k in (*job.baseline, *job.candidate))
                if k not in arms]
        outcomes = execute(todo, executor)
        for t in todo:
            arms[t.key] = read_back(t, outcomes[t.key], diagnose_fn, cfg, clip_threshold(run_of[t.key]))

    def judge(job: _Job) -> Verdict:
        def mark(a: ArmResult, rule=job.rule) -> ArmResult:
            # without a finding, any rule that judges a symptom counts (its file declares one)
            return replace(a, symptom=(rule in a.rules) if rule else bool(a.symptom_rules))

        base, cand = [mark(arms[k]) for k in job.baseline], [mark(arms[k]) for k in job.candidate]
        v = decide(job.rule, job.proposal, base, cand, cfg, base_lr=job.base_lr)
        start = job.fork.start_step
        inside = stops_inside_skip(job.proposal.config, start, start + job.budget)
        if inside is not None and v.verdict is not VerdictKind.ERROR:
            v = replace(v, verdict=VerdictKind.INCONCLUSIVE, p_value=None, reason=(
                f"the reruns stop at step {start + job.budget}, inside the batches the candidate skips "
                f"({inside[0]}-{inside[1]}): it never trains past them, so its reruns cannot tell whether skipping "
                f"helps; raise --budget-steps past step {inside[1]} (was: {v.reason})"))
        role = next((a.target_role for a in (*base, *cand) if a.target_role), "train_loss")
        extra = {"budget_steps": job.budget, "out": str(Path(job.candidate[0]).parent),
                 "steps": {"baseline": sum(a.steps for a in base), "candidate": sum(a.steps for a in cand)}}
        symptom, symptom_curves = job.symptom_role, None
        if symptom and symptom != role and any(a.curve(symptom) for a in (*base, *cand)):
            # the target is often a sparse val loss; the series the rule fired on shows the symptom itself
            symptom_curves = curves_detail(base, cand, symptom)
        # a new Verdict with the run-level details and the curves: a built verdict is never changed
        return replace(v, details={**v.details, **extra}, curves=curves_detail(base, cand, role),
                       symptom_curves=symptom_curves)

    def add_rung(job: _Job, config: dict) -> _Job:
        rung = replace(job.proposal, config=ConfigPatch.of(config))
        finding = _RungFinding(job.rule, job.symptom_role, job.raises_lr)
        return _add_job(p, job.run, finding, rung, job.fork, p.tasks[job.baseline[0]].backend, cfg,  # type: ignore[arg-type]
                        out / _safe(job.run.name), job.base_lr, job.original_steps)

    by_run: dict[str, list[Verdict]] = {}
    with out_lock(out):  # a second verify on this --out stops here, naming this one
        settle(list(p.jobs))
        for job, v, rung_verdicts in climb(list(p.jobs), judge, add_rung, settle, cfg):
            extra: dict[str, Any] = {"cost": verdict_cost(rung_verdicts, job.original_steps),
                                     "fork": job.fork.to_dict()}
            by_run.setdefault(job.run.name, []).append(replace(v, details={**v.details, **extra}))
    runs = {run.name: run for run, _, _ in items}
    steps = {k: a.steps for k, a in arms.items()}
    costs = {}
    for n, r in runs.items():
        keys = [k for k in arms if run_of[k].name == n]
        if keys:
            costs[n] = RunCost(len(keys), distinct_steps(keys, steps), steps_trained(r))
    return [RunVerification(n, tuple(by_run.get(n, ())), resolved_source(r), costs.get(n)) for n, r in runs.items()]


@dataclass(frozen=True)
class _RungFinding:
    """What :func:`_add_job` reads of a finding, for a ladder rung (same rule, same fork)."""

    rule: str | None
    symptom_role: str | None
    raises_lr: bool


def resolved_source(run: Run) -> str:
    return str(Path(run.source).resolve())
