"""Continue a workload from a checkpoint, possibly under a patched config (a verify candidate).

What carries over and why:

* model weights - always;
* optimizer *state* (momentum buffers, Adam moments) - when the optimizer type is unchanged; its
  hyper-parameters (LR, betas, weight decay) are the patched config's, so a candidate's change
  applies from the fork on. A new optimizer type starts with empty state (nothing to carry);
* the LR schedule - rebuilt from the patched config and stepped forward to the checkpoint's step,
  so a lowered peak LR moves the whole curve and the unpatched arm has exactly the original LR at
  every step (the same sequence of scheduler updates, hence the same floating-point values). A
  ``ReduceLROnPlateau`` depends on past val losses, not on the step count: its state is loaded and
  the LR scaled by the patch's factor;
* RNG streams - restored when the paired seed is the checkpointed run's (the rerun then replays the
  original run bit for bit); any other seed reseeds them from (seed, step), so what comes after the
  fork (batch order, dropout, poison draws) varies with the seed and is shared by both arms;
* the best val loss (and best weights, for ``early_stop_step``).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

from .checkpointing import reseed, restore_rng
from .config import WorkloadConfig

log = logging.getLogger(__name__)


def restore(ckpt: dict[str, Any], cfg: WorkloadConfig, orig: WorkloadConfig, model, opt, sched,
            gen) -> tuple[float, Any, Any]:
    """Load ``ckpt`` into freshly built ``model``/``opt``/``sched``; returns the best val loss, the
    best weights and the scheduler to go on with (a replayed schedule restart builds a new one)."""

    step = int(ckpt["step"])
    model.load_state_dict(ckpt["model"])
    if cfg.optimizer["type"] == orig.optimizer["type"]:
        sd = opt.state_dict()
        sd["state"] = ckpt["optimizer"]["state"]  # keep the patched param_groups (LR, betas, ...)
        opt.load_state_dict(sd)
    else:
        log.info("optimizer changed from %s to %s at the fork: it starts with empty state",
                 orig.optimizer["type"], cfg.optimizer["type"])
    if sched is not None:
        if type(sched).__name__ == "ReduceLROnPlateau":
            if ckpt.get("scheduler") is not None and cfg.scheduler == orig.scheduler:
                sched.load_state_dict(ckpt["scheduler"])
            factor = cfg.lr / orig.lr
            for g, old in zip(opt.param_groups, ckpt["optimizer"]["param_groups"], strict=False):
                g["lr"] = float(old["lr"]) * factor
        else:
            with warnings.catch_warnings():
                # "lr_scheduler.step() before optimizer.step()": intended, this replays the schedule
                warnings.simplefilter("ignore")
                for t in range(1, step + 1):
                    sched.step()
                    if t == getattr(cfg, "schedule_restart_step", None):
                        from .schedules import restart_scheduler

                        sched = restart_scheduler(opt, cfg)  # the workload's fault, replayed as it happened
    if cfg.seed == orig.seed:
        restore_rng(ckpt["rng"], {"poison": gen})
    else:
        reseed(cfg.seed, step, {"poison": gen})
    best_state = ckpt.get("best_state")
    return float(ckpt.get("best_val", float("inf"))), best_state, sched
