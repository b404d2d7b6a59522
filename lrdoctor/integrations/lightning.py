"""A Lightning ``Callback`` that checks lrdoctor's rules while ``Trainer.fit`` runs.

::

    from lrdoctor.integrations.lightning import LRDoctorCallback
    trainer = L.Trainer(callbacks=[LRDoctorCallback(action="rollback", check_every=10)])

It feeds what the training computes anyway: the training step's loss, the total gradient norm
before clipping (measured in ``on_before_optimizer_step``, which Lightning calls before it clips),
the LR the update used, and ``val_loss`` from the validation loop, then acts as
:mod:`lrdoctor.live.guard` describes. ``stop`` saves ``checkpoints/lrdoctor-stop-step=N.ckpt``
with ``Trainer.save_checkpoint`` and sets ``trainer.should_stop``; ``rollback`` restores the
module, optimizer and scheduler state in place. Findings and interventions are appended to
``lrdoctor-findings.jsonl`` in ``trainer.log_dir``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._optional import MissingDependencyError, require
from ..live.guard import Guard, GuardOptions, drop_gradients, grad_norm, scale_optimizer_lr

try:
    Callback = require("lightning.pytorch.callbacks", "lrdoctor.integrations.lightning").Callback
except MissingDependencyError:  # the standalone package name, else the error names `lightning`
    try:
        from pytorch_lightning.callbacks import Callback  # type: ignore[no-redef]
    except ImportError:
        raise MissingDependencyError("lrdoctor.integrations.lightning needs lightning: pip install lightning") from None


class _Hooks:
    def __init__(self, trainer: Any, module: Any, logdir: Path) -> None:
        self.trainer, self.module, self.logdir = trainer, module, logdir

    def _schedulers(self) -> list[Any]:
        return [c.scheduler for c in self.trainer.lr_scheduler_configs]

    def state(self) -> dict[str, Any]:
        return {"model": self.module.state_dict(),
                "optimizers": [o.state_dict() for o in self.trainer.optimizers],
                "schedulers": [s.state_dict() for s in self._schedulers()]}

    def load_state(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["model"])
        for o, sd in zip(self.trainer.optimizers, state["optimizers"], strict=True):
            o.load_state_dict(sd)
        for s, sd in zip(self._schedulers(), state["schedulers"], strict=True):
            s.load_state_dict(sd)

    def scale_lr(self, factor: float) -> None:
        scheds = self._schedulers()
        for i, o in enumerate(self.trainer.optimizers):
            scale_optimizer_lr(o, scheds[i] if i < len(scheds) else None, factor)

    def set_clip_grad_norm(self, value: float) -> None:
        self.trainer.gradient_clip_val = value
        self.trainer.gradient_clip_algorithm = "norm"

    def stop(self, step: int) -> str | None:
        path = self.logdir / "checkpoints" / f"lrdoctor-stop-step={step}.ckpt"
        self.trainer.save_checkpoint(path)
        self.trainer.should_stop = True
        return str(path)


class LRDoctorCallback(Callback):
    """Check lrdoctor's rules every ``check_every`` steps; on a confirmed finding at or above
    ``severity`` take ``action`` (``warn``, ``stop`` or ``rollback``; see
    :class:`lrdoctor.live.guard.GuardOptions` for the rest)."""

    def __init__(self, action: str = "warn", *, severity: str = "error", check_every: int = 10,
                 logdir: str | Path | None = None, measure_grad_norm: bool = True, **options: Any) -> None:
        self.options = GuardOptions(action=action, severity=severity, check_every=check_every, **options)
        self.logdir = logdir
        self.measure_grad_norm = measure_grad_norm
        self.guard: Guard | None = None
        self._hooks: _Hooks | None = None
        self._step: dict[str, float] = {}

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        logdir = Path(self.logdir or trainer.log_dir or trainer.default_root_dir)
        self.guard = Guard(self.options, logdir=logdir, name=logdir.name)
        self._hooks = _Hooks(trainer, pl_module, logdir)

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        if self.guard is None:
            return
        self._step = {"lr": float(optimizer.param_groups[0]["lr"])}
        if self.guard.skipping:
            drop_gradients(pl_module.parameters())
            self.guard.skipped_one()
        elif self.measure_grad_norm:
            self._step["grad_norm"] = grad_norm(pl_module.parameters())

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.guard is None or self.guard.stopped:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        metrics = {"train_loss": float(loss), **self._step}
        self._step = {}
        self.guard.observe(trainer.global_step, metrics, self._hooks)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if self.guard is None or trainer.sanity_checking:
            return
        val = trainer.callback_metrics.get("val_loss")
        if val is not None:
            self.guard.engine.add(trainer.global_step, {"val_loss": float(val)})

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if self.guard is not None and not self.guard.stopped:
            self.guard.finish()
