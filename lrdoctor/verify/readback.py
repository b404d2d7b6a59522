"""Reading a finished rerun back: its logs -> re-diagnosis, target metric, steps run, curves."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from ..errors import LrdoctorError, VerifyError
from ..model import RerunCurves, Run, SeedCurve
from ..roles import RoleView
from .backends import RerunOutcome, RerunTask
from .protocol import VerifyConfig
from .stats import smoothed_final
from .verdict import ArmResult

#: Points per rerun curve kept in ``Verdict.curves`` (the report draws at most ~400).
CURVE_POINTS = 500

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


def read_back(task: RerunTask, outcome: RerunOutcome, diagnose_fn, cfg: VerifyConfig,
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
    first, last = logged_span(run)
    if task.resume_from and first is not None and first <= task.start_step:
        return ArmResult(task.seed, False, logdir=task.logdir, error=(
            f"asked to resume from step {task.start_step} ({task.resume_from}) but it logged step {first}: the "
            "command does not resume from {resume_from} / --start-step, so its steps do not line up"))
    steps = max(0, (last if last is not None else task.start_step) - task.start_step)
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
                     curves=shown, steps=steps, losses=losses_hash(view))


def losses_hash(view: RoleView) -> str:
    """A hash of the train and val losses (steps and values; not wall times, throughput or
    anything else that differs between two runs of the same numbers): decide() compares the
    reruns' to tell a command that ignored the candidate's patch or the seed."""
    import hashlib

    h = hashlib.blake2b(digest_size=12)
    for role in ("train_loss", "val_loss"):
        if view.has(role) and len(view[role]):
            s = view[role]
            h.update(role.encode())
            h.update(np.ascontiguousarray(s.steps, dtype=np.int64).tobytes())
            h.update(np.ascontiguousarray(s.values, dtype=np.float64).tobytes())
    return h.hexdigest()


def logged_span(run: Run) -> tuple[int | None, int | None]:
    """First and last step of a run's train loss (else of anything it logged)."""
    s = RoleView.of(run).get("train_loss")
    steps = s.steps if s is not None and len(s) else run.scalars["step"].to_numpy()
    return (int(np.min(steps)), int(np.max(steps))) if len(steps) else (None, None)


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
