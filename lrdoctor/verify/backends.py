"""How one rerun is executed: three backends, one task type.

a. :class:`WorkloadBackend` - the run came from a built-in workload (``lrdoctor-run.json`` became
   ``Run.origin``): its config is patched and trained again in the worker.
b. :class:`CommandBackend` with a template - ``--train "python train.py --lr {lr} --seed {seed}
   --logdir {logdir} --max-steps {max_steps}"``: placeholders are filled from the arm's config and
   the budget (see :data:`PLACEHOLDERS`); the command must write its logs into ``{logdir}``.
c. :class:`CommandBackend` without placeholders, for a script that uses
   :class:`lrdoctor.Controller`: everything travels in environment variables (:data:`ENV_*`).
   Both b and c get the environment variables, so a script may mix them.

The worker function :func:`run_rerun` never raises: it returns a :class:`RerunOutcome` with the
return code and the tail of stderr, and writes :data:`MARKER` into the rerun directory when the
rerun finished, so that a repeated ``lrdoctor verify`` does not redo it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shlex
import subprocess
import sys
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._optional import require
from ..errors import VerifyError
from ..origin import RunOrigin
from ..patch import ConfigPatch
from .env import (
    ENV_ARM,
    ENV_BASE_LR,
    ENV_BUDGET_STEPS,
    ENV_CONFIG,
    ENV_DEVICE,
    ENV_LOGDIR,
    ENV_LOGGED_PEAK_LR,
    ENV_MAX_STEPS,
    ENV_RESUME_FROM,
    ENV_SEED,
    ENV_START_STEP,
)
from .outdir import DISK_FULL, write_atomic
from .procs import signal_text

#: a note in the rerun's directory when the harness stopped its command (its loss stayed NaN/inf)
EARLY_STOP_FILE = "stopped-early.txt"
#: seconds a stopped command gets to exit after SIGTERM before it is killed
STOP_GRACE_S = 10.0

MARKER = "lrdoctor-rerun.done"
LOGS_SUBDIR = "logs"
STDERR_TAIL_LINES = 15

#: Placeholders a --train template may use. Knobs the arm does not set are filled from the run's
#: hparams when known, else with the neutral value shown (0 = off for clipping and warmup).
PLACEHOLDERS = {
    "lr": "peak LR (the proposal's 'lr', or the run's LR times 'lr_scale')",
    "lr_scale": "LR multiplier (1 in the baseline arm)",
    "max_steps": "the absolute step to stop at (start_step + budget_steps)",
    "budget_steps": "steps to run after the start (the rerun budget)",
    "start_step": "the step the rerun starts from (the checkpoint's step; 0 without one)",
    "resume_from": "path of the checkpoint to resume ('' when starting at step 0)",
    "seed": "the paired seed",
    "logdir": "directory the command must write its logs into",
    "warmup_steps": "linear warmup steps (0 = none)",
    "warmup_start_factor": "warmup start factor (0.01)",
    "clip_grad_norm": "gradient-norm clip (0 = none)",
    "clip_grad_value": "gradient-value clip (0 = none)",
    "weight_decay": "weight decay",
    "optimizer": "optimizer class name",
    "scheduler": "scheduler spec as JSON ('{\"type\": \"constant\"}' when none)",
    "batch_size": "batch size",
    "early_stop_step": "stop-and-restore-best step (0 = none)",
    "device": "cpu or cuda",
    "arm": "baseline or candidate",
    "config_json": "the arm's whole config patch as JSON (with max_steps and seed)",
}


@dataclass(frozen=True)
class RerunTask:
    """One rerun, picklable: sent to a process-pool or Ray worker."""

    key: str
    arm: str
    seed: int
    max_steps: int
    patch: ConfigPatch  # the arm's config patch (empty for the baseline); a mapping is validated into one
    rerun_dir: str
    device: str
    backend: WorkloadBackend | CommandBackend
    digest: str = ""
    timeout_s: float | None = None  # killed past this (executors that can: the local pool, Ray)
    start_step: int = 0  # the fork's step; max_steps is the budget after it
    resume_from: str | None = None  # the checkpoint to resume (None: start at step 0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "patch", ConfigPatch.of(self.patch))  # a mapping is validated into one

    @property
    def logdir(self) -> str:
        return str(Path(self.rerun_dir) / LOGS_SUBDIR)

    @property
    def stop_step(self) -> int:
        return int(self.start_step) + int(self.max_steps)

    def full_patch(self) -> dict[str, Any]:
        extra = ({"start_step": int(self.start_step), "resume_from": self.resume_from}
                 if self.resume_from else {})
        return {**self.patch.to_dict(), "max_steps": self.stop_step, "seed": int(self.seed), **extra}


@dataclass(frozen=True)
class RerunOutcome:
    key: str
    ok: bool
    logdir: str
    seconds: float = 0.0
    returncode: int | None = 0
    stderr_tail: str = ""
    reused: bool = False


def task_digest(backend: Any, arm_patch: Mapping[str, Any], max_steps: int, seed: int, device: str,
                start_step: int = 0, resume_from: str | None = None) -> str:
    """What makes a rerun the same rerun: a finished one with this digest is not redone."""
    fork = {"start_step": start_step, "resume_from": resume_from} if resume_from else {}
    blob = json.dumps(
        {"backend": backend.identity(), "patch": ConfigPatch.of(arm_patch).to_dict(), "max_steps": max_steps,
         "seed": seed, "device": device, **fork},
        sort_keys=True, default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def finished(task: RerunTask) -> bool:
    marker = Path(task.rerun_dir) / MARKER
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return data.get("digest") == task.digest and data.get("ok") is True


def _write_marker(task: RerunTask, seconds: float) -> None:
    # atomic: a half-written marker (full disk, a kill mid-write) must not mark a rerun finished
    write_atomic(Path(task.rerun_dir) / MARKER,
                 json.dumps({"digest": task.digest, "ok": True, "seconds": round(seconds, 3), "key": task.key}) + "\n")


def write_error_log(rerun_dir: str | Path, text: str) -> None:
    """``error.log`` of a failed rerun (whole or absent, like the marker)."""
    Path(rerun_dir).mkdir(parents=True, exist_ok=True)
    write_atomic(Path(rerun_dir) / "error.log", text)


def _tail(text: str, lines: int = STDERR_TAIL_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_rerun(task: RerunTask) -> RerunOutcome:
    """Execute one rerun (in a worker). A failed rerun comes back in the outcome; only a failure to
    write under ``--out`` (a full disk) raises, as a :class:`VerifyError` that stops verification."""
    logdir = Path(task.logdir)
    t0 = time.perf_counter()
    try:
        if logdir.exists():
            # an interrupted earlier attempt: its partial logs would be merged with the new ones
            import shutil

            shutil.rmtree(logdir)
        logdir.mkdir(parents=True)
        rc, err = task.backend.execute(task)
    except Exception:  # noqa: BLE001 - a rerun's crash is that rerun's ERROR, not the harness's
        rc, err = 1, traceback.format_exc()
    seconds = time.perf_counter() - t0
    if rc == 0:
        _write_marker(task, seconds)
    else:
        if any(f"[Errno {n}]" in err for n in DISK_FULL):
            # the training's own writes hit a full disk: every other rerun would too, so say it once
            raise VerifyError(f"the rerun in {task.rerun_dir} ran out of disk space ({_tail(err, 1)}); free "
                              "some space or use another --out (finished reruns are kept and reused)")
        write_error_log(task.rerun_dir, err)
    return RerunOutcome(task.key, rc == 0, str(logdir), seconds, rc, _tail(err) if rc != 0 else "")


# --------------------------------------------------------------------------------------------
# a. built-in workloads


@dataclass(frozen=True)
class WorkloadBackend:
    """Rerun a built-in workload from its ``lrdoctor-run.json`` (``Run.origin``)."""

    origin: RunOrigin  # a mapping is parsed into one
    fmt: str | None = None  # log format for the reruns; default: the original run's

    def __post_init__(self) -> None:
        object.__setattr__(self, "origin", RunOrigin.parse(self.origin))

    name = "workload"

    def identity(self) -> Any:
        return {"workload": self.origin.get("workload"), "config": self.origin.config, "fmt": self._fmt(),
                "code": _workloads_code_hash()}

    def _fmt(self) -> str:
        return self.fmt or self.origin.format or "jsonl"

    def require(self) -> None:
        """Name a missing dependency before any rerun starts."""
        require("torch", "rerunning a built-in workload")
        if self._fmt() == "tensorboardx":
            require("tensorboardX", "rerunning a built-in workload in the tensorboardx format")
        for fmt, package in (("wandb", "wandb"), ("mlflow_sqlite", "mlflow")):
            if self._fmt() == fmt:  # the tracker itself writes these reruns' logs
                require(package, f"rerunning a built-in workload in the {fmt} format")

    def execute(self, task: RerunTask) -> tuple[int, str]:
        from ..workloads.config import WorkloadConfig
        from ..workloads.training import train

        cfg = WorkloadConfig.from_dict(self.origin.config)
        if task.resume_from:
            # a fork continues the original run: its schedule keeps the original length, and
            # training stops at the fork's stop step
            cfg = cfg.apply_patch(task.patch)
        else:
            # the budget goes in as max_steps: length-relative scheduler defaults then follow the
            # budget, identically in both arms of a pair
            cfg = cfg.apply_patch(ConfigPatch.of(task.patch, max_steps=int(task.max_steps)))
        cfg = cfg.replace(seed=int(task.seed), num_threads=1 if task.device == "cpu" else cfg.num_threads,
                          checkpoint_every=0)
        # a NaN/inf loss stays NaN/inf: the rerun stops there (its outcome is decided)
        train(cfg, task.logdir, self._fmt(), task.device, resume=task.resume_from,
              stop_step=task.stop_step if task.resume_from else None, stop_on_nonfinite=True)
        return 0, ""

    def resumable(self, kind: str) -> str | None:
        """None when a checkpoint of ``kind`` can be resumed, else why not."""
        return None if kind == "lrdoctor" else f"a built-in workload resumes only its own checkpoints, not {kind}"


def _workloads_code_hash() -> str:
    """A changed workload implementation makes different reruns: finished ones are then redone."""
    h = hashlib.sha256()
    for f in sorted((Path(__file__).parents[1] / "workloads").glob("*.py")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# b./c. a user command (template placeholders and/or the Controller's environment variables)


class _Strict(dict):
    def __missing__(self, key: str) -> str:
        raise VerifyError(
            f"--train template uses unknown placeholder {{{key}}} (known: {', '.join(sorted(PLACEHOLDERS))})"
        )


def _fields(word: str) -> set[str]:
    """The placeholder names of one template word, checked so that filling it cannot fail later
    inside every rerun: unbalanced braces, ``{}``, and a conversion or format spec (``{lr!r}``,
    ``{lr:.3}``: values are already text, formatted as the run wants them) are refused."""
    import string

    names = set()
    try:
        parsed = list(string.Formatter().parse(word))
    except ValueError as exc:
        raise VerifyError(f"--train template word {word!r}: {exc} (a literal brace is written {{{{ or }}}})") from exc
    for _, name, spec, conversion in parsed:
        if name is None:
            continue  # literal text only
        if not name:
            raise VerifyError(f"--train template word {word!r}: empty placeholder {{}} (known: "
                              f"{', '.join(sorted(PLACEHOLDERS))})")
        if conversion or spec:
            bad = f"{{{name}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}"
            raise VerifyError(f"--train template word {word!r}: {bad} has a conversion or format spec; "
                              f"placeholders are plain names, e.g. {{{name}}}")
        names.add(name)
    return names


def _num(x: Any) -> str:
    if isinstance(x, float):
        return repr(x) if math.isfinite(x) else str(x)
    return str(x)


@dataclass(frozen=True)
class CommandBackend:
    """Run ``--train "CMD TEMPLATE"`` once per rerun (no shell: the template is split with shlex
    first and each word filled on its own, so values never need quoting)."""

    template: str
    base: dict[str, Any] = field(default_factory=dict)  # the run's own knobs (lr, weight_decay, ...)
    cwd: str | None = None

    name = "command"

    def identity(self) -> Any:
        return {"template": self.template, "base": self.base}

    def words(self) -> list[str]:
        try:
            words = shlex.split(self.template)
        except ValueError as exc:
            raise VerifyError(f"--train template cannot be parsed: {exc}") from exc
        if not words:
            raise VerifyError("--train template is empty")
        return words

    def placeholders_used(self) -> set[str]:
        """The placeholder names of the template; a VerifyError on one that cannot be filled."""
        used = set()
        for w in self.words():
            used |= _fields(w)
        return used

    def values(self, task: RerunTask) -> dict[str, str]:
        patch = task.full_patch()
        base = self.base
        scale = float(patch.get("lr_scale", 1.0))
        lr = patch.get("lr")
        if lr is None and base.get("lr") is not None:
            lr = float(base["lr"]) * scale
        sched = patch.get("scheduler", base.get("scheduler")) or {"type": "constant"}
        opt = patch.get("optimizer", base.get("optimizer"))
        opt_name = opt.get("type") if isinstance(opt, dict) else opt

        def knob(name: str, neutral: Any) -> Any:
            v = patch.get(name, base.get(name))
            return neutral if v is None else v

        return {
            "lr": _num(lr) if lr is not None else "",
            "lr_scale": _num(scale),
            "max_steps": str(task.stop_step),
            "budget_steps": str(int(task.max_steps)),
            "start_step": str(int(task.start_step)),
            "resume_from": task.resume_from or "",
            "seed": str(int(task.seed)),
            "logdir": task.logdir,
            "warmup_steps": _num(knob("warmup_steps", 0)),
            "warmup_start_factor": _num(knob("warmup_start_factor", 0.01)),
            "clip_grad_norm": _num(knob("clip_grad_norm", 0)),
            "clip_grad_value": _num(knob("clip_grad_value", 0)),
            "weight_decay": _num(knob("weight_decay", 0.0)),
            "optimizer": str(opt_name or ""),
            "scheduler": json.dumps(sched, sort_keys=True),
            "batch_size": _num(knob("batch_size", "")),
            "early_stop_step": _num(knob("early_stop_step", 0)),
            "device": task.device,
            "arm": task.arm,
            "config_json": json.dumps(patch, sort_keys=True),
        }

    def check(self, lr_needed: bool) -> None:
        """Fail early, before any rerun, on a template that cannot be filled."""
        used = self.placeholders_used()
        unknown = used - set(PLACEHOLDERS)
        if unknown:
            raise VerifyError(
                f"--train template uses unknown placeholder {{{sorted(unknown)[0]}}} "
                f"(known: {', '.join(sorted(PLACEHOLDERS))})"
            )
        if "lr" in used and lr_needed and self.base.get("lr") is None:
            raise VerifyError(
                "--train uses {lr} but the run's LR is unknown (not logged, not in hparams) and a proposal "
                "only scales it; pass the run's LR with --base-lr LR, or use {lr_scale} in the template or "
                "the Controller"
            )
        for name in ("batch_size",):
            if name in used and self.base.get(name) is None:
                raise VerifyError(f"--train uses {{{name}}} but the run's {name} is unknown (not in hparams)")

    def warnings(self, lr_needed: bool) -> list[str]:
        """What the template leaves to the environment variables alone. A template without
        placeholders runs a Controller script, which reads them all; one with placeholders may
        be a plain script that reads none, and then every arm or every seed is the same training
        (decide() reports that as INCONCLUSIVE after the reruns; this says it before them)."""
        used = self.placeholders_used()
        if not used:
            return []
        out = []
        if lr_needed and not used & {"lr", "lr_scale", "config_json"}:
            out.append("the --train template has no {lr}, {lr_scale} or {config_json}: a candidate's LR reaches "
                       "the command only as LRDOCTOR_CONFIG (which lrdoctor.Controller reads); a script that "
                       "reads neither trains the baseline's LR in every arm")
        if "seed" not in used:
            out.append("the --train template has no {seed}: the paired seeds reach the command only as "
                       "LRDOCTOR_SEED; a script that ignores it trains the same run in every seed")
        return out

    def resumable(self, kind: str) -> str | None:
        """None when the command can resume a checkpoint of ``kind``, else why not: the template
        must say where the checkpoint goes ({resume_from} or {start_step}); a template without
        placeholders runs a Controller script, which resumes lrdoctor's own checkpoints itself."""
        used = self.placeholders_used()
        if used & {"resume_from", "start_step"}:
            return None
        if not used and kind == "lrdoctor":
            return None
        return "the --train template has no {resume_from} (or {start_step}) to resume them with"

    def command(self, task: RerunTask) -> list[str]:
        vals = _Strict(self.values(task))
        return [w.format_map(vals) for w in self.words()]

    def env(self, task: RerunTask) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            ENV_CONFIG: json.dumps(task.full_patch(), sort_keys=True),
            ENV_LOGDIR: task.logdir,
            ENV_MAX_STEPS: str(task.stop_step),
            ENV_BUDGET_STEPS: str(int(task.max_steps)),
            ENV_START_STEP: str(int(task.start_step)),
            ENV_RESUME_FROM: task.resume_from or "",
            ENV_SEED: str(int(task.seed)),
            ENV_DEVICE: task.device,
            ENV_ARM: task.arm,
            "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"),
            "PYTHONUNBUFFERED": "1",
        })
        if self.base.get("lr") is not None:
            env[ENV_BASE_LR] = _num(float(self.base["lr"]))
        if self.base.get("logged_peak_lr") is not None:
            env[ENV_LOGGED_PEAK_LR] = _num(float(self.base["logged_peak_lr"]))
        return env

    def require(self) -> None:
        """The user's command brings its own dependencies."""

    def execute(self, task: RerunTask) -> tuple[int, str]:
        argv = self.command(task)
        rerun_dir = Path(task.rerun_dir)
        (rerun_dir / "command.json").write_text(json.dumps({"argv": argv}, indent=1) + "\n")
        # The command stays in the worker's process group (no new session): killing that group on
        # a timeout or an interrupt then reaches the command and everything it starts.
        with open(rerun_dir / "stdout.log", "wb") as out, open(rerun_dir / "stderr.log", "wb") as err:
            try:
                proc = subprocess.Popen(argv, stdout=out, stderr=err, env=self.env(task), cwd=self.cwd)
            except FileNotFoundError as exc:
                return 127, f"cannot run {argv[0]!r}: {exc}"
            stopped = _run_until_nonfinite(proc, task.logdir)
        if stopped is not None:
            # the training's outcome is in its logs (a divergence); how it ended is not a failure
            write_atomic(rerun_dir / EARLY_STOP_FILE, stopped + "\n")
            return 0, ""
        rc = proc.returncode
        stderr = (rerun_dir / "stderr.log").read_text(errors="replace")
        if rc < 0:
            return rc, f"{signal_text(rc)}\n{stderr}"
        if rc != 0:
            return rc, f"exit code {rc}\n{stderr}"
        return 0, ""


def _run_until_nonfinite(proc: subprocess.Popen, logdir: str) -> str | None:
    """Wait for the command, following its logs; stop it once its train loss has stayed NaN/inf
    (:mod:`lrdoctor.verify.earlystop`) and return why, else None when it ended by itself."""
    from .earlystop import POLL_S, NonfiniteWatch

    watch = NonfiniteWatch(logdir)
    while True:
        try:
            proc.wait(timeout=POLL_S)
            return None
        except subprocess.TimeoutExpired:
            why = watch.poll()
        if why is not None:
            _stop_tree(proc)
            return why


def _descendants(pid: int) -> list[int]:
    """Every process started by ``pid``, its children's children included (Linux: /proc; elsewhere
    none, and only the command itself is stopped)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # gone meanwhile
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, the rest does not
        fields = text[text.rfind(")") + 2:].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _stop_tree(proc: subprocess.Popen) -> None:
    """SIGTERM the command and everything it started (``sh -c "python train.py ..."``: the shell's
    training child too), so the script can flush its logs; SIGKILL what is left after the grace."""
    import signal

    tree = _descendants(proc.pid)
    for pid in [proc.pid, *tree]:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for pid in tree:
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def python_command(script: str, *args: str) -> str:
    """A --train template running ``script`` with this interpreter (for tests and examples)."""
    return " ".join(shlex.quote(x) for x in (sys.executable, script, *args))
