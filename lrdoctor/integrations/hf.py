"""A HuggingFace ``TrainerCallback`` that checks lrdoctor's rules while ``Trainer.train`` runs.

::

    from lrdoctor.integrations.hf import LRDoctorCallback
    trainer = Trainer(..., callbacks=[LRDoctorCallback(action="stop")])

It feeds what the Trainer logs (``loss``, ``grad_norm``, which the Trainer measures before
clipping, ``learning_rate``, ``eval_loss``) from ``on_log``, so it checks as often as the Trainer
logs (``logging_steps``; every step gives the rules the most to go on). Set
``logging_nan_inf_filter=False``: by default the Trainer replaces a NaN/inf loss by the running
average before logging it, and only the grad norm still shows the blow-up. ``stop`` sets
``control.should_save`` and ``control.should_training_stop`` (the Trainer saves its checkpoint,
then stops); ``rollback`` restores the model, optimizer and scheduler state in place and skips
batches by dropping their gradients in ``on_pre_optimizer_step``. Findings and interventions
are appended to ``lrdoctor-findings.jsonl`` in ``output_dir``, beside the Trainer's checkpoints
and ``trainer_state.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._optional import require
from ..live.guard import Guard, GuardOptions, drop_gradients, scale_optimizer_lr

TrainerCallback = require("transformers", "lrdoctor.integrations.hf").TrainerCallback

#: Trainer log keys -> the tags lrdoctor's roles resolve
_KEYS = {"loss": "train_loss", "grad_norm": "grad_norm", "learning_rate": "lr", "eval_loss": "val_loss"}


class _Hooks:
    def __init__(self, args: Any, control: Any, model: Any, optimizer: Any, scheduler: Any, output_dir: Path) -> None:
        self.args, self.control, self.model = args, control, model
        self.optimizer, self.scheduler, self.output_dir = optimizer, scheduler, output_dir

    def state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None}

    def load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])

    def scale_lr(self, factor: float) -> None:
        scale_optimizer_lr(self.optimizer, self.scheduler, factor)

    def set_clip_grad_norm(self, value: float) -> None:
        self.args.max_grad_norm = value  # read by the Trainer at every step

    def stop(self, step: int) -> str | None:
        self.control.should_save = True
        self.control.should_training_stop = True
        return str(self.output_dir / f"checkpoint-{step}")


class LRDoctorCallback(TrainerCallback):
    """Check lrdoctor's rules every ``check_every`` steps; on a confirmed finding at or above
    ``severity`` take ``action`` (``warn``, ``stop`` or ``rollback``; see
    :class:`lrdoctor.live.guard.GuardOptions` for the rest)."""

    def __init__(self, action: str = "warn", *, severity: str = "error", check_every: int = 10,
                 logdir: str | Path | None = None, **options: Any) -> None:
        self.options = GuardOptions(action=action, severity=severity, check_every=check_every, **options)
        self.logdir = logdir
        self.guard: Guard | None = None
        self._hooks: _Hooks | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        logdir = Path(self.logdir or args.output_dir)
        self.guard = Guard(self.options, logdir=logdir, name=logdir.name)

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.guard is not None and self.guard.skipping:
            drop_gradients(kwargs["model"].parameters())
            self.guard.skipped_one()

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None,
               **kwargs: Any) -> None:
        if self.guard is None or self.guard.stopped or not logs:
            return
        metrics = {_KEYS[k]: float(v) for k, v in logs.items() if k in _KEYS and isinstance(v, (int, float))}
        if not metrics:
            return
        if "train_loss" not in metrics:  # an evaluation: recorded, checked with the next training log
            self.guard.engine.add(state.global_step, metrics)
            return
        self.guard.observe(state.global_step, metrics, self._trainer_hooks(args, control, kwargs))

    def _trainer_hooks(self, args: Any, control: Any, kwargs: dict[str, Any]) -> _Hooks:
        """The hooks on this Trainer's objects, built again only when one of them changes (on_log
        runs at every step: what it does there is the callback's cost per step)."""
        h, model, opt, sched = self._hooks, kwargs.get("model"), kwargs.get("optimizer"), kwargs.get("lr_scheduler")
        if (h is None or h.args is not args or h.control is not control or h.model is not model
                or h.optimizer is not opt or h.scheduler is not sched):
            h = self._hooks = _Hooks(args, control, model, opt, sched, Path(args.output_dir))
        return h

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.guard is not None and not self.guard.stopped:
            self.guard.finish()




class HFVerifyCallback(TrainerCallback):
    """Stops a HuggingFace Trainer at the ``lrdoctor verify`` harness's budget. The Trainer does the
    logging (``trainer_state.json``, which lrdoctor reads); LR/clipping come from the patch through
    ``TrainingArguments`` -- see :func:`lrdoctor.verify.controller.hf_training_overrides`."""

    def __init__(self, env: dict[str, str] | None = None):
        import os

        from ..verify.env import ENV_MAX_STEPS

        env = os.environ if env is None else env
        self.max_steps = int(env[ENV_MAX_STEPS]) if env.get(ENV_MAX_STEPS) else None

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.max_steps is not None and state.global_step >= self.max_steps:
            control.should_training_stop = True
        return control
