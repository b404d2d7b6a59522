"""In-script integration: two lines let ``lrdoctor verify`` rerun any PyTorch training loop.

::

    ctl = lrdoctor.Controller.from_env(optimizer, model)     # after building the optimizer
    for batch in loader:
        loss = compute_loss(model, batch)
        ctl.step(loss)          # replaces: optimizer.zero_grad(); loss.backward(); optimizer.step()
        if ctl.should_stop:
            break

``ctl.step(loss)`` does the backward pass, measures the total gradient norm (before clipping),
clips, steps the optimizer and the LR schedule, zeroes the gradients and logs ``train_loss``,
``grad_norm`` and ``lr``. ``ctl.log(val_loss=...)`` records evaluation numbers.

Under ``lrdoctor verify --train "python train.py"`` the harness passes the rerun in environment
variables (named in :mod:`lrdoctor.verify.env`): the config patch in ``LRDOCTOR_VERIFY_CONFIG``
(LR or LR scale, optimizer, weight decay, warmup, scheduler, clipping), the budget in
``LRDOCTOR_MAX_STEPS``, the seed in ``LRDOCTOR_SEED`` (torch, numpy and random are seeded in
``from_env``; call :func:`seed_from_env` before building the model to seed its initialisation too)
and the log directory in
``LRDOCTOR_LOGDIR``. At the budget ``should_stop`` turns true and, with ``raise_at_budget=True``,
:class:`StopTraining` is raised (it subclasses ``SystemExit`` with code 0, so an unhandled one ends
the script cleanly).

Without those variables the controller is a pass-through: the optimizer is untouched, nothing
stops, and metrics go to ``logdir`` when one is given (else only to ``logging`` at debug level).
Metrics are JSON Lines (``lrdoctor-metrics.jsonl``: ``{"step", "train_loss", "grad_norm", "lr"}``
per step), which ``lrdoctor diagnose`` reads like any other log.

``Controller(..., live="warn" | "stop" | "rollback")`` (or a :class:`lrdoctor.live.guard.GuardOptions`)
also runs lrdoctor's rules while the loop trains, as the Lightning and HF callbacks do (see
:mod:`lrdoctor.live.guard`): ``should_stop`` turns true on ``stop``; ``rollback`` restores the
model, optimizer and scheduler in place.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
from pathlib import Path
from typing import Any

from ..patch import IN_LOOP, OUTSIDE_LOOP, ConfigPatch
from .env import ENV_CONFIG, ENV_LOGDIR, ENV_LOGGED_PEAK_LR, ENV_MAX_STEPS, ENV_RESUME_FROM, ENV_SEED

log = logging.getLogger(__name__)

METRICS_FILE = "lrdoctor-metrics.jsonl"


def _positive(text: str | None) -> float | None:
    try:
        v = float(text) if text else None
    except ValueError:
        return None
    return v if v is not None and math.isfinite(v) and v > 0 else None


class StopTraining(SystemExit):
    """The rerun budget is reached. Exits the script with code 0 when left unhandled."""

    def __init__(self, step: int):
        super().__init__(0)
        self.step = step


class Controller:
    def __init__(self, optimizer, model=None, *, patch: dict[str, Any] | None = None,
                 max_steps: int | None = None, logdir: str | os.PathLike | None = None,
                 scheduler=None, seed: int | None = None, raise_at_budget: bool = False,
                 log_every: int = 1, active: bool = True, live: Any = None, checkpoint_every: int = 0,
                 keep: int = 3, checkpoint_dir: str | os.PathLike | None = None, resume_from: str | None = None,
                 stop_on_nonfinite: bool = False, reference_lr: float | None = None):
        self.model = model
        self.optimizer = optimizer
        self.patch = dict(patch or {})
        self.max_steps = max_steps
        self.seed = seed
        self.raise_at_budget = raise_at_budget
        self.log_every = max(1, int(log_every))
        self.active = active
        self.step_count = 0
        self.scheduler = scheduler
        self.clip_grad_norm: float | None = None
        self.clip_grad_value: float | None = None
        self._file = None
        if logdir is not None:
            Path(logdir).mkdir(parents=True, exist_ok=True)
            self._file = open(Path(logdir) / METRICS_FILE, "a", buffering=1)  # noqa: SIM115 - lives with self
        # checkpoints a later `lrdoctor verify` forks from (see workloads/checkpointing.py)
        self._keeper = _keeper(checkpoint_every, keep, checkpoint_dir, logdir)
        self._nonfinite = False
        self.stop_on_nonfinite = stop_on_nonfinite  # verify's reruns: a NaN/inf loss decides the outcome
        #: the largest LR the original run logged (LRDOCTOR_LOGGED_PEAK_LR): with the optimizer's
        #: starting LR, what a patch's ``lr`` (a new peak) is measured against
        self.reference_lr = reference_lr
        if resume_from:
            from ..workloads.checkpointing import resume_script

            self.step_count = resume_script(resume_from, model, optimizer, scheduler, seed)
            log.info("controller resumed %s at step %d", resume_from, self.step_count)
        #: the step training (re)starts from: 0, or the checkpoint's step under a forked rerun
        self.start_step = self.step_count
        if self.patch:
            self._apply(self.patch)
        # the rules while it trains (lrdoctor.live.guard): live="warn" | "stop" | "rollback" | GuardOptions
        self.guard = self._hooks = None
        if live is not None:
            from ..live.loop import make_guard

            self.guard, self._hooks = make_guard(self, live, logdir, Path(logdir).name if logdir else "train")

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_env(cls, optimizer, model=None, *, scheduler=None, logdir: str | None = None,
                 raise_at_budget: bool = False, env: dict[str, str] | None = None,
                 log_every: int = 1, live: Any = None, checkpoint_every: int = 0, keep: int = 3) -> Controller:
        """Read the harness's environment variables; a pass-through when they are absent.

        ``scheduler`` is the script's own LR scheduler: the controller steps it, and replaces it
        when the harness passes a warmup or a scheduler. ``checkpoint_every``/``keep`` save
        checkpoints in the pass-through (a normal training); under verify the controller resumes
        the checkpoint the harness chose (``LRDOCTOR_RESUME_FROM``) by itself and saves none.
        """

        env = os.environ if env is None else env
        raw = env.get(ENV_CONFIG)
        if raw is None and ENV_LOGDIR not in env:
            return cls(optimizer, model, scheduler=scheduler, logdir=logdir, active=False, log_every=log_every,
                       live=live, checkpoint_every=checkpoint_every, keep=keep)
        try:
            patch = json.loads(raw) if raw else {}
        except ValueError as exc:
            raise ValueError(f"{ENV_CONFIG} is not valid JSON: {exc}") from exc
        max_steps = env.get(ENV_MAX_STEPS) or patch.get("max_steps")
        seed = env.get(ENV_SEED, patch.get("seed"))
        seed = None if seed in (None, "") else int(seed)
        if seed is not None:
            seed_everything(seed)
        patch = {k: v for k, v in patch.items() if k not in ("max_steps", "seed", "start_step", "resume_from")}
        return cls(
            optimizer, model, patch=patch, max_steps=int(max_steps) if max_steps else None,
            logdir=env.get(ENV_LOGDIR) or logdir, scheduler=scheduler, seed=seed,
            raise_at_budget=raise_at_budget, log_every=log_every, live=live,
            resume_from=env.get(ENV_RESUME_FROM) or None, stop_on_nonfinite=True,
            reference_lr=_positive(env.get(ENV_LOGGED_PEAK_LR)),
        )

    def _base_config(self, max_steps: int):
        from ..workloads.config import OPTIMIZERS, WorkloadConfig

        opt = self.optimizer
        name = type(opt).__name__
        group = opt.param_groups[0]
        kwargs: dict[str, Any] = {"type": name if name in OPTIMIZERS else "SGD"}
        for k in ("momentum", "betas", "eps", "nesterov", "alpha"):
            if k in group and k in opt.defaults:
                kwargs[k] = list(group[k]) if isinstance(group[k], tuple) else group[k]
        return WorkloadConfig(
            lr=float(group.get("initial_lr", group["lr"])), optimizer=kwargs,
            weight_decay=float(group.get("weight_decay", 0.0) or 0.0), max_steps=max(1, max_steps),
        )

    def _apply(self, patch: dict[str, Any]) -> None:
        from ..workloads.schedules import build_optimizer, build_scheduler

        unknown = set(patch) - set(IN_LOOP) - set(OUTSIDE_LOOP)
        if unknown:
            log.warning("controller ignores patch keys it cannot apply in a script: %s", ", ".join(sorted(unknown)))
        for key in OUTSIDE_LOOP:
            if key in patch:
                log.warning("controller cannot apply %r from inside the loop; the script must read it from "
                            "%s itself", key, ENV_CONFIG)
        base = self._base_config(self.max_steps or 1_000_000)
        cfg = base.apply_patch(ConfigPatch.of({k: v for k, v in patch.items() if k in IN_LOOP}))
        opt_changed = "optimizer" in patch and cfg.optimizer != base.optimizer
        if opt_changed:
            if self.model is None:
                raise ValueError("changing the optimizer type needs Controller.from_env(optimizer, model)")
            self.optimizer = build_optimizer(self.model.parameters(), cfg)
        else:
            factor = cfg.lr / base.lr
            if "lr" in patch and self.reference_lr and not ("warmup_steps" in patch or "scheduler" in patch):
                # the script's own schedule stays, and the patch's lr is the new peak of its LR curve:
                # the larger of the optimizer's starting LR (a warmup, or a run that died during it,
                # never logged its peak) and the largest LR the original run logged (a schedule that
                # multiplies the LR, x20 at some step, peaks above its start). The curve scales by it.
                factor = float(patch["lr"]) / max(base.lr, self.reference_lr)
            for g in self.optimizer.param_groups:
                peak = float(g.get("initial_lr", g["lr"]))
                # resumed mid-run: the current LR moves by the factor (a chainable schedule goes on
                # from there); from step 0 the LR restarts at the new peak
                g["lr"] = (float(g["lr"]) if self.step_count else peak) * factor
                g.pop("initial_lr", None)  # schedulers built below record the new LR as initial
                if "weight_decay" in patch:
                    g["weight_decay"] = cfg.weight_decay
                g["_lrdoctor_peak"] = peak * factor
        if "warmup_steps" in patch or "scheduler" in patch or (opt_changed and self.scheduler is not None):
            self.scheduler = build_scheduler(self.optimizer, cfg)
            _fast_forward(self.scheduler, self.step_count)
        elif self.scheduler is not None and ("lr" in patch or "lr_scale" in patch):
            # the script's own scheduler keeps its shape but from the new peak
            self.scheduler.base_lrs = [g.get("_lrdoctor_peak", g["lr"]) for g in self.optimizer.param_groups]
        for g in self.optimizer.param_groups:
            g.pop("_lrdoctor_peak", None)
        self.clip_grad_norm = cfg.clip_grad_norm
        self.clip_grad_value = cfg.clip_grad_value
        log.info("controller applied patch %s", json.dumps(patch, sort_keys=True))

    # ---------------------------------------------------------------- the loop

    @property
    def should_stop(self) -> bool:
        if self.guard is not None and self.guard.stopped:
            return True
        if not self.active:
            return False
        # under verify a NaN/inf loss ends the rerun: it stays NaN/inf, its outcome is decided
        return (self._nonfinite and self.stop_on_nonfinite) or (self.max_steps is not None
                                                                 and self.step_count >= self.max_steps)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _params(self):
        for g in self.optimizer.param_groups:
            yield from (p for p in g["params"] if p.grad is not None)

    def step(self, loss) -> float:
        """Backward, measure, clip, step, schedule, zero, log. Returns the grad norm before clipping."""
        import torch

        if self.should_stop:
            raise StopTraining(self.step_count)
        loss.backward()
        params = list(self._params())
        if params:
            # clip_grad_norm_ returns the total norm before clipping; inf max_norm measures only
            max_norm = self.clip_grad_norm if self.clip_grad_norm is not None else math.inf
            gnorm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        else:
            gnorm = 0.0
        if self.clip_grad_value is not None:
            torch.nn.utils.clip_grad_value_(params, self.clip_grad_value)
        lr = self.lr
        if self.guard is not None and self.guard.skipping:  # a rollback skips the batches after it
            self.optimizer.zero_grad(set_to_none=True)
            self.guard.skipped_one()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step_count += 1
        if self.scheduler is not None and not _is_plateau(self.scheduler):
            self.scheduler.step()
        loss_value = float(loss.detach())
        if self.step_count % self.log_every == 0 or not math.isfinite(loss_value):
            self.log(train_loss=loss_value, grad_norm=gnorm, lr=lr)
        self._nonfinite = self._nonfinite or not math.isfinite(loss_value)
        if self.guard is not None:
            self.guard.observe(self.step_count, {"train_loss": loss_value, "grad_norm": gnorm, "lr": lr}, self._hooks)
        if self._keeper is not None:
            from ..workloads.checkpointing import script_payload

            self._keeper.observe(self.step_count, loss_value)
            self._keeper.save_if_due(self.step_count, not self._nonfinite,
                                     lambda: script_payload(self.model, self.optimizer, self.scheduler, self.seed))
        if self.should_stop and self.raise_at_budget:
            raise StopTraining(self.step_count)
        return gnorm

    def log(self, step: int | None = None, **metrics: float) -> None:
        """Record metrics (e.g. ``val_loss=...``) at ``step`` (default: the current step)."""
        row = {"step": self.step_count if step is None else int(step)}
        # json.dumps writes NaN/Infinity literals; lrdoctor's JSONL reader keeps them as NaN/inf
        row.update({k: float(v) for k, v in metrics.items()})
        if self._file is not None:
            self._file.write(json.dumps(row) + "\n")
        else:
            log.debug("step %s: %s", row["step"], metrics)
        if "val_loss" in metrics and self.guard is not None:
            self.guard.engine.add(row["step"], {"val_loss": float(metrics["val_loss"])})
        if "val_loss" in metrics and self.scheduler is not None and _is_plateau(self.scheduler):
            self.scheduler.step(metrics["val_loss"])

    def close(self) -> None:
        if self.guard is not None and not self.guard.stopped and not self.guard.finished:
            self.guard.finish()
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> Controller:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _is_plateau(sched) -> bool:
    return type(sched).__name__ == "ReduceLROnPlateau"


def _keeper(every: int, keep: int, directory, logdir):
    if not every:
        return None
    from ..workloads.checkpointing import DIR_NAME, CheckpointKeeper

    if directory is None and logdir is None:
        raise ValueError("checkpoint_every needs a logdir or a checkpoint_dir to save into")
    return CheckpointKeeper(Path(directory) if directory is not None else Path(logdir) / DIR_NAME, int(every), int(keep))


def _fast_forward(sched, steps: int) -> None:
    """Step a schedule built at a fork to the fork's step (the same updates as an unforked run)."""
    import warnings

    if sched is None or _is_plateau(sched) or not steps:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()": intended
        for _ in range(steps):
            sched.step()


def seed_from_env(default: int | None = None, env: dict[str, str] | None = None) -> int | None:
    """Seed python, numpy and torch with ``LRDOCTOR_SEED`` (else ``default``) and return it.

    Call it before building the model and data loader so that each paired seed of a verify rerun
    gets its own initialisation and data order (``from_env`` seeds too, but after the model exists).
    """

    env = os.environ if env is None else env
    raw = env.get(ENV_SEED)
    seed = int(raw) if raw not in (None, "") else default
    if seed is not None:
        seed_everything(seed)
    return seed


def seed_everything(seed: int) -> None:
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:
        pass
    import torch

    torch.manual_seed(seed)


def __getattr__(name: str) -> Any:
    # The HF callback lives with the other framework integrations, so that importing the
    # controller (``lrdoctor.Controller``) never imports transformers.
    if name == "HFVerifyCallback":
        from ..integrations.hf import HFVerifyCallback

        return HFVerifyCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def hf_training_overrides(env: dict[str, str] | None = None) -> dict[str, Any]:
    """TrainingArguments keyword overrides from the harness's patch (empty outside ``verify``)."""

    env = os.environ if env is None else env
    if ENV_CONFIG not in env:
        return {}
    patch = json.loads(env[ENV_CONFIG])
    out: dict[str, Any] = {"output_dir": env.get(ENV_LOGDIR), "logging_steps": 1,
                           "logging_nan_inf_filter": False}
    if env.get(ENV_MAX_STEPS):
        out["max_steps"] = int(env[ENV_MAX_STEPS])
    if env.get(ENV_SEED):
        out["seed"] = int(env[ENV_SEED])
    for src, dst in (("lr", "learning_rate"), ("weight_decay", "weight_decay"),
                     ("warmup_steps", "warmup_steps"), ("clip_grad_norm", "max_grad_norm")):
        if src in patch:
            out[dst] = patch[src]
    return out
