"""Optimizers and LR schedules from a :class:`WorkloadConfig`, shared by the workloads, verification
and the in-script Controller.

``build_optimizer(params, cfg)`` -> a torch optimizer with ``lr=cfg.lr``, ``weight_decay`` and the
extra kwargs in ``cfg.optimizer`` (SGD gets ``momentum=0.9`` unless given).

``build_scheduler(optimizer, cfg)`` -> an LR scheduler stepped once per optimizer step, or None
for a constant LR without warmup. Warmup is ``SequentialLR([LinearLR(start_factor=
cfg.warmup_start_factor, end_factor=1, total_iters=W), main], milestones=[W])``; the main
scheduler's own step counts exclude the warmup. Defaults where torch's are wrong for per-step use
(all relative to ``S = cfg.max_steps - cfg.warmup_steps``):

============================  ==========================================================
LinearLR                      start_factor=1.0, end_factor=0.0, total_iters=S (linear decay)
StepLR                        step_size=S//3, gamma=0.1
MultiStepLR                   milestones=[S//2, 3S//4], gamma=0.1
ExponentialLR                 gamma such that the LR falls 100x over S steps
CosineAnnealingLR             T_max=S, eta_min=0; held at eta_min after T_max (never rises)
CosineAnnealingWarmRestarts   T_0=max(1, S//4)
OneCycleLR                    max_lr=cfg.lr, total_steps=S; held at its final LR past total_steps
CyclicLR                      max_lr=cfg.lr, base_lr=cfg.lr/10, step_size_up=max(1, S//8),
                              cycle_momentum only when the optimizer has momentum
PolynomialLR                  total_iters=S, power=1.0
ReduceLROnPlateau             stepped by train() with the val loss at each eval (no warmup)
============================  ==========================================================
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import UsageError
from .config import WorkloadConfig


def build_optimizer(params, cfg: WorkloadConfig):
    import torch

    kw = {k: v for k, v in cfg.optimizer.items() if k != "type"}
    name = cfg.optimizer["type"]
    if name == "SGD":
        kw.setdefault("momentum", 0.9)
    if "betas" in kw:
        kw["betas"] = tuple(kw["betas"])
    cls = getattr(torch.optim, name)
    try:
        return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **kw)
    except TypeError as exc:
        raise UsageError(f"bad optimizer arguments for {name}: {exc}") from exc


def build_scheduler(optimizer, cfg: WorkloadConfig):
    from torch.optim import lr_scheduler as lrs

    main = _main_scheduler(optimizer, cfg)
    w = cfg.warmup_steps
    if isinstance(main, lrs.ReduceLROnPlateau):
        if w:
            raise UsageError("ReduceLROnPlateau cannot follow a warmup (SequentialLR does not support it)")
        return main
    if w <= 0:
        return main
    warm = lrs.LinearLR(optimizer, start_factor=cfg.warmup_start_factor, end_factor=1.0, total_iters=w)
    if main is None:
        main = lrs.ConstantLR(optimizer, factor=1.0, total_iters=0)
    return lrs.SequentialLR(optimizer, [warm, main], milestones=[w])


def restart_scheduler(optimizer, cfg: WorkloadConfig):
    """The scheduler a resume without its state builds: the decay from the top again, each group
    back at its initial (peak) LR at once -- the run's warmup was for its start -- or ramped up
    over ``cfg.rewarmup_steps`` when set (the re-warmup fix)."""
    for group in optimizer.param_groups:
        group["lr"] = group.get("initial_lr", group["lr"])
    return build_scheduler(optimizer, cfg.replace(warmup_steps=cfg.rewarmup_steps))


def _main_scheduler(optimizer, cfg: WorkloadConfig):
    from torch.optim import lr_scheduler as lrs

    spec = dict(cfg.scheduler)
    name = spec.pop("type", "constant")
    s = cfg.scheduler_steps
    if name in ("constant", None, "none", "ConstantLR") and not (name == "ConstantLR" and spec):
        return None
    if name == "LinearLR":
        spec.setdefault("start_factor", 1.0)
        spec.setdefault("end_factor", 0.0)
        spec.setdefault("total_iters", s)
        spec["start_factor"] = max(float(spec["start_factor"]), 1e-8)  # torch rejects 0
        return lrs.LinearLR(optimizer, **spec)
    if name == "StepLR":
        spec.setdefault("step_size", max(1, s // 3))
        spec.setdefault("gamma", 0.1)
        return lrs.StepLR(optimizer, **spec)
    if name == "MultiStepLR":
        spec.setdefault("milestones", [max(1, s // 2), max(2, 3 * s // 4)])
        spec.setdefault("gamma", 0.1)
        return lrs.MultiStepLR(optimizer, **spec)
    if name == "ExponentialLR":
        spec.setdefault("gamma", 0.01 ** (1.0 / s))
        return lrs.ExponentialLR(optimizer, **spec)
    if name == "CosineAnnealingLR":
        spec.setdefault("T_max", s)
        spec.setdefault("eta_min", 0.0)
        return _ClampedCosine(optimizer, **spec)
    if name == "CosineAnnealingWarmRestarts":
        spec.setdefault("T_0", max(1, s // 4))
        spec["T_0"] = int(spec["T_0"])
        return lrs.CosineAnnealingWarmRestarts(optimizer, **spec)
    if name == "OneCycleLR":
        spec.setdefault("max_lr", cfg.lr)
        spec.setdefault("total_steps", s)
        if "cycle_momentum" not in spec:
            spec["cycle_momentum"] = _has_momentum(optimizer)
        return _ClampedOneCycle(optimizer, **spec)
    if name == "CyclicLR":
        spec.setdefault("max_lr", cfg.lr)
        spec.setdefault("base_lr", cfg.lr / 10)
        spec.setdefault("step_size_up", max(1, s // 8))
        if "cycle_momentum" not in spec:
            spec["cycle_momentum"] = _has_momentum(optimizer)
        return lrs.CyclicLR(optimizer, **spec)
    if name == "PolynomialLR":
        spec.setdefault("total_iters", s)
        spec.setdefault("power", 1.0)
        return lrs.PolynomialLR(optimizer, **spec)
    if name == "ConstantLR":
        return lrs.ConstantLR(optimizer, **spec)
    if name == "ReduceLROnPlateau":
        return lrs.ReduceLROnPlateau(optimizer, **spec)
    raise UsageError(f"unsupported scheduler {name!r}")


def _has_momentum(optimizer) -> bool:
    d = optimizer.defaults
    return bool(d.get("momentum")) or "betas" in d


def _make_clamped_cosine():
    from torch.optim.lr_scheduler import CosineAnnealingLR as base

    class ClampedCosineAnnealingLR(base):
        """CosineAnnealingLR in closed form, held at eta_min after T_max (torch's rises again)."""

        def get_lr(self) -> list[float]:
            return self._get_closed_form_lr()

        def _get_closed_form_lr(self) -> list[float]:
            t = min(max(self.last_epoch, 0), self.T_max)
            c = (1 + math.cos(math.pi * t / self.T_max)) / 2
            return [self.eta_min + (b - self.eta_min) * c for b in self.base_lrs]

    return ClampedCosineAnnealingLR


def _make_clamped_onecycle():
    from torch.optim.lr_scheduler import OneCycleLR as base

    class ClampedOneCycleLR(base):
        """OneCycleLR held at its final LR past total_steps (torch raises ValueError there)."""

        def get_lr(self) -> list[float]:
            saved = self.last_epoch
            self.last_epoch = min(saved, self.total_steps - 1)
            try:
                return super().get_lr()
            finally:
                self.last_epoch = saved

    return ClampedOneCycleLR


_CLASSES: dict[str, Any] = {}


def _ClampedCosine(optimizer, **kw):  # noqa: N802 - reads like the class it builds
    if "cos" not in _CLASSES:
        _CLASSES["cos"] = _make_clamped_cosine()
    return _CLASSES["cos"](optimizer, **kw)


def _ClampedOneCycle(optimizer, **kw):  # noqa: N802
    if "one" not in _CLASSES:
        _CLASSES["one"] = _make_clamped_onecycle()
    return _CLASSES["one"](optimizer, **kw)


def current_lr(optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])
