"""Orchestration: plan the paired reruns of every proposal, run them, read them back, decide.

Layout under ``--out`` (default ``./lrdoctor-verify/``), one directory per rerun::

    OUT/<run>/baseline-b<budget>/seed<k>/            shared by every proposal with that budget
    OUT/<run>/<rule>--<proposal id>-<config hash>-b<budget>/seed<k>/
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
from ..model import Diagnosis, Finding, Proposal, RerunCurves, Run, SeedCurve, Verdict
from ..patch import ConfigPatch
from ..roles import RoleView
from ..runfacts import base_lr, clip_threshold, configured, hparams_of, planned_steps
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
from .executors import Executor, RerunKilled, RerunTimeout, SerialExecutor
from .outdir import out_lock
from .protocol import VerifyConfig, budget_for
from .stats import smoothed_final
from .timeouts import rerun_timeout
from .verdict import ArmResult, decide

log = logging.getLogger(__name__)

DEFAULT_OUT = "lrdoctor-verify"
#: Points per rerun curve kept in ``Verdict.curves`` (the report draws at most ~400).
CURVE_POINTS = 500

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

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` shape; each verdict's ``details`` (statistics per seed, rerun curves) rides
        along under "details", strict JSON (non-finite numbers as "nan"/"inf"/"-inf" strings)."""
        return {"name": self.name,
                "verdicts": [{**v.to_dict(), "details": json_safe(v.details_json())} for v in self.verdicts],
                "source": self.source}


@dataclass(frozen=True)
class _Job:
    run: Run
    rule: str | None
    proposal: Proposal
    budget: int
    baseline: tuple[str, ...]
    candidate: tuple[str, ...]
    base_lr: float | None = None
    symptom_role: str | None = None  # the role the finding's rule declares its symptom on


@dataclass
class _Plan:
    tasks: dict[str, RerunTask] = field(default_factory=dict)
    jobs: list[_Job] = field(default_factory=list)


def _short_hash(config: dict) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:6]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "run"


def run_length(run: Run) -> int | None:
    """The original run's length: its configured max_steps when known, else its last logged step."""
    planned = planned_steps(run)
    if planned is not None:
        return planned
    view = RoleView.of(run)
    s = view.get("train_loss")
    steps = s.steps if s is not None and len(s) else run.scalars["step"].to_numpy()
    return int(np.max(steps)) if len(steps) else None


def applied_grad_norm(run: Run, clip: float | None) -> Run:
    """The run with its grad-norm role capped at the clip threshold.

    Logged grad norms are taken before clipping, so a clipped run still logs its bursts; what
    clipping changes is the gradient that reaches the optimizer. Gradient rules therefore judge
    ``min(norm, clip)`` - a NaN/inf norm stays NaN/inf (clipping does not repair it).
    """
    if clip is None:
        return run
    tag = RoleView.of(run).roles.get("grad_norm")
    if tag is None:
        return run
    df = run.scalars.copy()
    rows = (df["tag"] == tag).to_numpy()
    v = df.loc[rows, "value"].to_numpy()
    df.loc[rows, "value"] = np.where(np.isfinite(v), np.minimum(v, clip), v)
    return replace(run, scalars=df)


def backend_for(run: Run, train: str | None, *, fmt: str | None = None, cwd: str | None = None):
    if train:
        base: dict[str, Any] = {"lr": base_lr(run)}
        params = hparams_of(run)
        for key in ("weight_decay", "batch_size", "warmup_steps"):
            hit = configured(run, key, params)
            if hit is not None:
                base[key] = hit[1]
        if clip_threshold(run) is not None:
            base["clip_grad_norm"] = clip_threshold(run)
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


def plan(
    items: Sequence[tuple[Run, Finding | None, Sequence[Proposal]]],
    cfg: VerifyConfig,
    out: Path,
    train: str | None = None,
) -> _Plan:
    """Every rerun needed, deduplicated (a baseline is shared by the proposals of one budget)."""
    p = _Plan()
    for run, finding, proposals in items:
        backend = backend_for(run, train)
        backend.require()  # a missing torch is one line now, not a traceback per rerun
        lr = base_lr(run)
        if isinstance(backend, CommandBackend):
            backend.check(lr_needed=any("lr_scale" in pr.config or "lr" in pr.config for pr in proposals))
        rule = finding.rule if finding is not None else None
        budget = budget_for(cfg, onset_of(finding) if finding is not None else None, run_length(run),
                            last_event_of(finding) if finding is not None else None)
        run_dir = out / _safe(run.name)
        timeout_s = rerun_timeout(run, budget, cfg.rerun_timeout_s)
        for prop in proposals:
            keys: dict[str, list[str]] = {"baseline": [], "candidate": []}
            for arm, patch, sub in (
                ("baseline", ConfigPatch(), f"baseline-b{budget}"),
                ("candidate", prop.config,
                 f"{_safe(rule or 'healthy')}--{_safe(prop.id)}-{_short_hash(prop.config.to_dict())}-b{budget}"),
            ):
                for seed in cfg.seed_list():
                    rerun_dir = run_dir / sub / f"seed{seed}"
                    key = str(rerun_dir)
                    if key not in p.tasks:
                        p.tasks[key] = RerunTask(
                            key=key, arm=arm, seed=seed, max_steps=budget, patch=patch, rerun_dir=key,
                            device=cfg.device, backend=backend,
                            digest=task_digest(backend, patch, budget, seed, cfg.device), timeout_s=timeout_s,
                        )
                    keys[arm].append(key)
            p.jobs.append(_Job(run, rule, prop, budget, tuple(keys["baseline"]), tuple(keys["candidate"]), lr,
                               finding.symptom_role if finding is not None else None))
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


def _read_back(task: RerunTask, outcome: RerunOutcome, diagnose_fn, cfg: VerifyConfig,
               base_clip: float | None = None) -> ArmResult:
    from ..readers import discover

    if not outcome.ok:
        return ArmResult(task.seed, False, error=outcome.stderr_tail or "failed", logdir=task.logdir)
    try:
        runs = discover(task.logdir)
    except LrdoctorError as exc:
        runs, why = [], str(exc)
    else:
        why = "no runs found"
    if not runs:
        raise VerifyError(
            f"the rerun finished but wrote no logs lrdoctor can read in {task.logdir} ({why}); the command must "
            "write its logs into {logdir} (or LRDOCTOR_LOGDIR, which the Controller uses)"
        )
    run = max(runs, key=lambda r: len(r.scalars))
    clip = task.patch.get("clip_grad_norm", base_clip)
    (diag,) = diagnose_fn([applied_grad_norm(run, float(clip) if clip else None)])
    view = RoleView.of(run)
    if view.has("val_loss") and len(view["val_loss"]):
        role, window = "val_loss", cfg.smooth_window
    elif view.has("train_loss") and len(view["train_loss"]):
        role = "train_loss"
        window = max(cfg.smooth_window, len(view["train_loss"]) // 20)
    else:
        raise VerifyError(f"the rerun's logs in {task.logdir} have neither a train nor a val loss")
    target = smoothed_final(view[role].values, window)
    rules = tuple(sorted({f.rule for f in diag.findings}))
    symptoms = tuple(sorted({f.rule for f in diag.findings if f.symptom_role}))
    shown = tuple((r, *display_curve(view[r].steps, view[r].values))
                  for r in dict.fromkeys((role, "train_loss", "grad_norm")) if view.has(r) and len(view[r]))
    return ArmResult(task.seed, True, rules=rules, symptom_rules=symptoms, target=target, target_role=role, logdir=task.logdir,
                     curves=shown)


def display_curve(steps, values, max_points: int = CURVE_POINTS) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """A series cut to at most ~``max_points`` for the report, keeping each bucket's min, max and
    first NaN/inf (a plain stride would drop the one-step spike or the NaN the verdict is about)."""
    from ..downsample import downsample

    s, v = downsample(np.asarray(steps), np.asarray(values, dtype=np.float64), max_points)
    return tuple(s.tolist()), tuple(v.tolist())


def curves_detail(baseline: Sequence[ArmResult], candidate: Sequence[ArmResult], role: str) -> RerunCurves:
    """The reruns' curves of ``role`` per arm and seed, as the report draws them (seeds whose rerun
    did not log it are left out)."""
    def arm(results: Sequence[ArmResult]) -> tuple[SeedCurve, ...]:
        return tuple(SeedCurve(a.seed, tuple(c[0]), tuple(c[1])) for a in results if (c := a.curve(role)) is not None)

    return RerunCurves(role, arm(baseline), arm(candidate))


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
    cfg = cfg.check(warn=False)  # verify_path already checked it and warned once
    out = Path(out)
    _check_out(out, [run for run, _, _ in items])
    p = plan(items, cfg, out, train)
    executor = executor or SerialExecutor()
    arms: dict[str, ArmResult] = {}
    clips = {k: clip_threshold(job.run) for job in p.jobs for k in (*job.baseline, *job.candidate)}
    with out_lock(out):  # a second verify on this --out stops here, naming this one
        outcomes = execute(list(p.tasks.values()), executor)
        for key, task in p.tasks.items():
            arms[key] = _read_back(task, outcomes[key], diagnose_fn, cfg, clips.get(key))
    by_run: dict[str, list[Verdict]] = {}
    for job in p.jobs:
        def mark(a: ArmResult, rule=job.rule) -> ArmResult:
            # without a finding, any rule that judges a symptom counts (its file declares one)
            return replace(a, symptom=(rule in a.rules) if rule else bool(a.symptom_rules))

        base, cand = [mark(arms[k]) for k in job.baseline], [mark(arms[k]) for k in job.candidate]
        v = decide(job.rule, job.proposal, base, cand, cfg, base_lr=job.base_lr)
        role = next((a.target_role for a in (*base, *cand) if a.target_role), "train_loss")
        extra = {"budget_steps": job.budget, "out": str(Path(job.candidate[0]).parent)}
        symptom, symptom_curves = job.symptom_role, None
        if symptom and symptom != role and any(a.curve(symptom) for a in (*base, *cand)):
            # the target is often a sparse val loss; the series the rule fired on shows the symptom itself
            symptom_curves = curves_detail(base, cand, symptom)
        # a new Verdict with the run-level details and the curves: a built verdict is never changed
        by_run.setdefault(job.run.name, []).append(replace(
            v, details={**v.details, **extra}, curves=curves_detail(base, cand, role), symptom_curves=symptom_curves))
    runs = {run.name: run for run, _, _ in items}
    return [RunVerification(n, tuple(by_run.get(n, ())), resolved_source(r)) for n, r in runs.items()]


def resolved_source(run: Run) -> str:
    return str(Path(run.source).resolve())
