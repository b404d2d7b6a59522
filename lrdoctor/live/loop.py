"""The live guard inside :class:`lrdoctor.Controller` (a plain PyTorch loop)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .guard import Guard, GuardOptions, scale_optimizer_lr


def guard_options(live: str | GuardOptions | dict[str, Any]) -> GuardOptions:
    """``"stop"``, a :class:`GuardOptions`, or its fields as a dict."""
    if isinstance(live, GuardOptions):
        return live
    if isinstance(live, str):
        return GuardOptions(action=live)
    return GuardOptions(**live)


class ControllerHooks:
    """The trainer operations a guard needs, on a Controller's model, optimizer and scheduler."""

    def __init__(self, ctl: Any, logdir: str | Path | None) -> None:
        self.ctl = ctl
        self.logdir = Path(logdir) if logdir is not None else None

    def state(self) -> dict[str, Any]:
        c = self.ctl
        return {"model": c.model.state_dict() if c.model is not None else None,
                "optimizer": c.optimizer.state_dict(),
                "scheduler": c.scheduler.state_dict() if c.scheduler is not None else None}

    def load_state(self, state: dict[str, Any]) -> None:
        c = self.ctl
        if c.model is None:
            raise ValueError("a rollback needs the model: Controller(optimizer, model, live='rollback')")
        c.model.load_state_dict(state["model"])
        c.optimizer.load_state_dict(state["optimizer"])
        if c.scheduler is not None and state["scheduler"] is not None:
            c.scheduler.load_state_dict(state["scheduler"])

    def scale_lr(self, factor: float) -> None:
        scale_optimizer_lr(self.ctl.optimizer, self.ctl.scheduler, factor)

    def set_clip_grad_norm(self, value: float) -> None:
        self.ctl.clip_grad_norm = value

    def stop(self, step: int) -> str | None:
        if self.logdir is None:
            return None
        import torch

        path = self.logdir / f"lrdoctor-stop-step={step}.pt"
        torch.save(self.state(), path)
        return str(path)


def make_guard(ctl: Any, live: str | GuardOptions | dict[str, Any], logdir: str | Path | None,
               name: str) -> tuple[Guard, ControllerHooks]:
    return Guard(guard_options(live), logdir=logdir, name=name), ControllerHooks(ctl, logdir)
