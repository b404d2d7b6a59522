"""A Lightning ``Callback`` that checks lrdoctor's rules while ``Trainer.fit`` runs.

::

    from lrdoctor.integrations.lightning import LRDoctorCallback
    trainer = L.Trainer(callbacks=[LRDoctorCallback(action="rollback", check_every=10)])

It feeds what the training computes anyway: the training step's loss, the total gradient norm
before clipping, the LR the update used, and ``val_loss`` from the validation loop, then acts as
:mod:`lrdoctor.live.guard` describes. Lightning does not hand out the grad norm: when it clips by
norm (``gradient_clip_val``) the callback keeps the norm that clipping computes and discards;
otherwise it measures it in ``on_before_optimizer_step`` (before any clipping), over the
optimizer's parameters. ``stop`` saves ``checkpoints/lrdoctor-stop-step=N.ckpt``
with ``Trainer.save_checkpoint`` and sets ``trainer.should_stop``; ``rollback`` restores the
module, optimizer and scheduler state in place. Findings and interventions are appended to
``lrdoctor-findings.jsonl`` in ``trainer.log_dir``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._optional import MissingDependencyError, require
from ..live.guard import Guard, GuardOptions, drop_gradients, grad_norm, scale_optimizer_lr

try:  # the base implementation whose body _keep_clip_norm repeats
    from lightning.pytorch.plugins.precision import Precision as _Precision
except ImportError:  # the standalone pytorch_lightning package
    _Precision = None

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


def _params(optimizer: Any) -> list[Any]:
    """The optimizer's parameters (what clipping takes): a module's parameters() walks every
    submodule, a cost of its own at every step of a small model."""
    return [p for g in optimizer.param_groups for p in g["params"]]


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
        self._plugin: Any = None  # the precision plugin whose clip_grad_by_norm reports to us
        self._from_clip = False  # this step's grad norm is to come from Lightning's clipping
        self._optimizer: Any = None  # this step's optimizer

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        logdir = Path(self.logdir or trainer.log_dir or trainer.default_root_dir)
        self.guard = Guard(self.options, logdir=logdir, name=logdir.name)
        self._hooks = _Hooks(trainer, pl_module, logdir)
        if self.measure_grad_norm:
            self._keep_clip_norm(trainer)

    def _keep_clip_norm(self, trainer: Any) -> None:
        """Have the precision plugin's clipping by norm hand us the total norm it computes (and
        Lightning discards): measuring it again costs a few % of a small model's step. Only over
        the base implementation, whose body this repeats; other plugins are measured instead."""
        plugin = getattr(trainer, "precision_plugin", None)
        if _Precision is None or plugin is None or type(plugin).clip_grad_by_norm is not _Precision.clip_grad_by_norm:
            return
        import torch

        def clip_grad_by_norm(optimizer: Any, clip_val: float) -> None:
            norm = torch.nn.utils.clip_grad_norm_(plugin.main_params(optimizer), clip_val)
            if self._from_clip:
                self._step["grad_norm"] = float(norm)
                self._from_clip = False

        plugin.clip_grad_by_norm = clip_grad_by_norm
        self._plugin = plugin

    def _clips_by_norm(self, trainer: Any) -> bool:
        clip = trainer.gradient_clip_val
        # GradClipAlgorithmType is a str enum: "value" or "norm" (None: norm)
        return (self._plugin is not None and clip is not None and clip > 0
                and (trainer.gradient_clip_algorithm or "norm") != "value")

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        if self.guard is None:
            return
        self._step = {"lr": float(optimizer.param_groups[0]["lr"])}
        self._from_clip = False
        if self.guard.skipping:
            drop_gradients(pl_module.parameters())
            self.guard.skipped_one()
        elif self.measure_grad_norm:
            self._optimizer = optimizer
            if self._clips_by_norm(trainer):
                self._from_clip = True  # Lightning clips right after this hook
            else:
                self._step["grad_norm"] = grad_norm(_params(optimizer))

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.guard is None or self.guard.stopped:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        if self._from_clip:  # no clipping by norm came through the plugin (a custom
            # configure_gradient_clipping?): measure now, and before clipping from the next step
            self._from_clip = False
            self._plugin_unused()
            self._step["grad_norm"] = grad_norm(_params(self._optimizer))
        metrics = {"train_loss": float(loss), **self._step}
        self._step = {}
        self.guard.observe(trainer.global_step, metrics, self._hooks)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if self.guard is None or trainer.sanity_checking:
            return
        val = trainer.callback_metrics.get("val_loss")
        if val is not None:
            self.guard.engine.add(trainer.global_step, {"val_loss": float(val)})

    def _plugin_unused(self) -> None:
        if self._plugin is not None:
            del self._plugin.clip_grad_by_norm  # the class's own method again
            self._plugin = None

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._plugin_unused()

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self._plugin_unused()
        if self.guard is not None and not self.guard.stopped:
            self.guard.finish()
