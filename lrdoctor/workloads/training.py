"""One training loop for every workload: ``train(cfg, logdir, fmt, device="auto") -> TrainResult``.

Per step ``t`` (1-based): the batch for ``t`` from a fixed per-seed order (poisoned when
``t in cfg.poison_steps``: regression targets are multiplied by ``cfg.poison_scale``; images get
pixels x ``poison_scale`` and labels shifted by one class; LM targets become random characters); forward, backward; the total
gradient norm is taken *before* clipping (``clip_grad_norm_``'s return value), then clipping by
norm and/or value; optimizer step; scheduler step. A step inside ``cfg.skip_batches`` discards
its batch (no forward, no update, nothing logged) but the scheduler still steps, so step t has the
same LR as in the unpatched run. Evaluation every ``cfg.eval_every`` steps and at the end; a
``ReduceLROnPlateau`` scheduler is stepped there with the val loss. At ``cfg.early_stop_step`` the
best-val-loss weights are restored, evaluated and logged at that step, and training stops. After
the first non-finite loss, ``NAN_GRACE`` more steps are logged (so NaN shows in the logs), then a
final eval and a clean stop.

After training ``lrdoctor-run.json`` ({"workload", "config", "labels", "format", "step_axis",
"lrdoctor_version"}) goes into the log directory and each writer run directory; ``labels`` come from
the recipe named by ``cfg.recipe`` (see recipes.py) applied to the recorded history; for the
epoch-axis format (keras_csv) label steps are converted to 0-based epochs.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..origin import ORIGIN_FILE
from .config import WorkloadConfig
from .writers import make_writer

log = logging.getLogger(__name__)

NAN_GRACE = 5


@dataclass(frozen=True)
class History:
    steps: np.ndarray  # trained steps (int64)
    train_loss: np.ndarray
    grad_norm: np.ndarray
    lr: np.ndarray
    eval_steps: np.ndarray
    val_loss: np.ndarray
    val_metric: np.ndarray


@dataclass(frozen=True)
class TrainResult:
    config: WorkloadConfig
    logdir: str
    format: str
    history: History
    labels: tuple[dict[str, Any], ...]
    final_val_loss: float  # after early-stop restore when early_stop_step is set
    best_val_loss: float
    final_train_loss: float  # mean of the last 10% of trained steps (NaN if any is non-finite)
    diverged: bool  # a non-finite train loss occurred
    steps_done: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


def pick_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _seed_all(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def train(cfg: WorkloadConfig, logdir: str | Path, fmt: str = "tensorboard", device: str = "auto",
          clock=None, *, resume: str | Path | None = None, stop_step: int | None = None,
          stop_on_nonfinite: bool = False) -> TrainResult:
    """Run one workload and write its logs as ``fmt`` under ``logdir``.

    ``clock`` (a zero-argument callable returning seconds since the epoch) replaces time.time for
    logged wall times, e.g. to regenerate sample logs byte-stable where the format allows.
    ``cfg.num_threads`` (default 1) applies torch.set_num_threads for this call only.

    ``resume`` continues from a checkpoint (see checkpointing.py) at its step: the data set is the
    checkpointed run's; ``cfg`` is the rerun's config (a patched copy of the checkpointed one, whose
    ``max_steps`` still sets the schedule's length) and ``cfg.seed`` its paired seed: the
    checkpointed seed replays the original run exactly, another seed draws a new batch order and
    new RNG streams from the fork on. ``stop_step`` ends training early (absolute step);
    ``stop_on_nonfinite`` stops at the first NaN/inf loss (verify's reruns: it stays NaN/inf).
    """
    import torch

    threads = torch.get_num_threads()
    # One intra-op thread unless asked otherwise: these models are too small to gain from more,
    # and on a shared machine extra threads only spin (measured: 10x the CPU time under load).
    torch.set_num_threads(cfg.num_threads or 1)
    try:
        return _train(cfg, Path(logdir), fmt, device, clock or time.time, resume, stop_step, stop_on_nonfinite)
    finally:
        torch.set_num_threads(threads)


def _train(cfg: WorkloadConfig, logdir: Path, fmt: str, device: str, clock, resume, stop_step,
           stop_on_nonfinite) -> TrainResult:
    import torch
    import torch.nn.functional as F  # noqa: N812

    from .checkpointing import DIR_NAME, CheckpointKeeper
    from .data import BatchOrder, make_dataset
    from .models import build_model
    from .schedules import build_optimizer, build_scheduler, restart_scheduler

    t0 = time.perf_counter()
    dev = torch.device(pick_device(device))
    ckpt, orig, start = _resume_point(resume, cfg)
    _seed_all(cfg.seed)
    data = make_dataset(cfg.replace(seed=orig.seed))  # the data set the checkpointed model learnt
    model = build_model(cfg.workload, data.n_in, data.n_out, cfg.model).to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = build_optimizer(params, cfg)
    sched = build_scheduler(opt, cfg)
    plateau = sched is not None and type(sched).__name__ == "ReduceLROnPlateau"

    xt, yt = torch.from_numpy(data.x_train).to(dev), torch.from_numpy(data.y_train).to(dev)
    xv, yv = torch.from_numpy(data.x_val).to(dev), torch.from_numpy(data.y_val).to(dev)
    order = BatchOrder(len(xt), cfg.batch_size, cfg.seed)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed + 7)
    best: tuple[float, Any] = (math.inf, None)
    if ckpt is not None:
        from .resume import restore

        best_val, best_state, sched = restore(ckpt, cfg, orig, model, opt, sched, gen)
        best = (best_val, best_state)

    def loss_fn(out, y):
        if data.task in ("regression", "binary"):
            return F.mse_loss(out, y)
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))

    @torch.no_grad()
    def evaluate() -> tuple[float, float]:
        model.eval()
        tot, hit, n = 0.0, 0.0, 0
        for i in range(0, len(xv), 256):
            xb, yb = xv[i:i + 256], yv[i:i + 256]
            out = model(xb)
            tot += float(loss_fn(out, yb)) * len(xb)
            if data.task in ("regression", "binary"):
                # regression: |error| < 0.5; binary (sigmoid output): the same test is accuracy
                hit += float(((out - yb).abs() < 0.5).float().sum())
                n += yb.numel()
            else:
                hit += float((out.argmax(-1) == yb).float().sum())
                n += yb.numel()
        model.train()
        return tot / len(xv), hit / n

    writer = make_writer(fmt, logdir, cfg)
    rec: dict[str, list[float]] = {k: [] for k in ("steps", "train_loss", "grad_norm", "lr")}
    ev: dict[str, list[float]] = {k: [] for k in ("steps", "val_loss", "val_metric")}
    nan_left: int | None = None
    clip_norm = cfg.clip_grad_norm if cfg.clip_grad_norm is not None else math.inf
    step = start
    last, grace = _stops(cfg, stop_step, stop_on_nonfinite)
    keeper = CheckpointKeeper(logdir / DIR_NAME, cfg.checkpoint_every, cfg.checkpoint_keep)

    def do_eval(at: int) -> None:
        nonlocal best
        vl, vm = evaluate()
        ev["steps"].append(at)
        ev["val_loss"].append(vl)
        ev["val_metric"].append(vm)
        writer.evaluate(at, vl, vm, clock())
        if plateau and math.isfinite(vl):
            sched.step(vl)
        if math.isfinite(vl) and vl < best[0]:
            best = (vl, copy.deepcopy(model.state_dict()) if cfg.early_stop_step else None)

    model.train()
    for step in range(start + 1, last + 1):
        lr = float(opt.param_groups[0]["lr"])
        if not cfg.is_skipped(step):
            idx = torch.from_numpy(order.indices(step)).to(dev)
            xb, yb = xt[idx], yt[idx]
            if step in cfg.poison_steps:
                xb, yb = _poison(data.task, xb, yb, cfg, data.n_out, gen)
            loss = loss_fn(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gn = float(torch.nn.utils.clip_grad_norm_(params, clip_norm))
            if cfg.clip_grad_value is not None:
                torch.nn.utils.clip_grad_value_(params, cfg.clip_grad_value)
            opt.step()
            lv = float(loss.detach())
            for k, v in zip(rec, (step, lv, gn, lr), strict=True):
                rec[k].append(v)
            writer.train(step, lv, gn, lr, clock())
            keeper.observe(step, lv)
            if nan_left is None and not math.isfinite(lv):
                nan_left = grace
                log.info("non-finite loss at step %d; stopping after %d more steps", step, nan_left)
        if sched is not None and not plateau:
            sched.step()
            if step == cfg.schedule_restart_step:
                sched = restart_scheduler(opt, cfg)
        if cfg.early_stop_step is not None and step == cfg.early_stop_step:
            do_eval(step)
            if best[1] is not None:
                model.load_state_dict(best[1])
                do_eval(step)
            break
        if nan_left is not None:
            nan_left -= 1
            if nan_left < 0:
                do_eval(step)
                break
        if step % cfg.eval_every == 0 or step == last:
            do_eval(step)
        keeper.save_if_due(step, nan_left is None, lambda s=sched, b=best: _payload(cfg, model, opt, s, gen, b))
    writer.close(step, clock())

    hist = History(*(np.asarray(rec[k], dtype=np.int64 if k == "steps" else np.float64) for k in rec),
                   *(np.asarray(ev[k], dtype=np.int64 if k == "steps" else np.float64) for k in ev))
    from .recipes import label_run

    labels = tuple(label_run(cfg, hist))
    axis = "epoch" if fmt == "keras_csv" else "step"
    if axis == "epoch":
        labels = tuple(_to_epochs(lab, cfg.epoch_steps) for lab in labels)
    origin = {"workload": cfg.workload, "config": cfg.to_dict(), "labels": list(labels), "format": fmt,
              "step_axis": axis, "lrdoctor_version": _version()}
    text = json.dumps(origin, indent=2, allow_nan=True)
    for d in {Path(logdir), *writer.run_dirs}:
        (d / ORIGIN_FILE).write_text(text)

    n_tail = max(1, len(hist.train_loss) // 10)
    tail = hist.train_loss[-n_tail:]
    finite_vl = hist.val_loss[np.isfinite(hist.val_loss)]
    return TrainResult(
        config=cfg, logdir=str(logdir), format=fmt, history=hist, labels=labels,
        final_val_loss=float(hist.val_loss[-1]) if len(hist.val_loss) else math.nan,
        best_val_loss=float(finite_vl.min()) if len(finite_vl) else math.nan,
        final_train_loss=float(tail.mean()) if len(tail) else math.nan,
        diverged=bool(len(hist.train_loss) and not np.isfinite(hist.train_loss).all()),
        steps_done=step, seconds=time.perf_counter() - t0,
    )


def _stops(cfg: WorkloadConfig, stop_step: int | None, stop_on_nonfinite: bool) -> tuple[int, int]:
    """The last step to train, and how many steps to go on after a NaN/inf loss."""
    last = min(cfg.max_steps, stop_step) if stop_step is not None else cfg.max_steps
    return last, 0 if stop_on_nonfinite else NAN_GRACE


def _resume_point(resume, cfg: WorkloadConfig) -> tuple[dict[str, Any] | None, WorkloadConfig, int]:
    """The checkpoint to resume (None: start fresh), the config it was saved under, and its step."""
    if resume is None:
        return None, cfg, 0
    from .checkpointing import load_checkpoint

    ckpt = load_checkpoint(resume)
    return ckpt, WorkloadConfig.from_dict(json.loads(ckpt["config"])), int(ckpt["step"])


def _payload(cfg: WorkloadConfig, model, opt, sched, gen, best) -> dict[str, Any]:
    """What a workload checkpoint holds (see checkpointing.py)."""
    from .checkpointing import rng_state

    return {"config": json.dumps(cfg.to_dict()), "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict() if sched is not None else None,
            "rng": rng_state({"poison": gen}), "best_val": best[0], "best_state": best[1]}


def _poison(task: str, xb, yb, cfg: WorkloadConfig, n_out: int, gen):
    import torch

    scale = cfg.poison_scale
    if task == "regression":
        return xb, yb * scale
    if task == "binary":
        return xb * scale, 1 - yb
    if task == "classification":
        # Scaled pixels with shifted labels: confidently wrong, so the loss jumps (scaling alone
        # would only make a good classifier more confident).
        return xb * scale, (yb + 1) % n_out
    if cfg.poison_kind == "repeat":
        # One character repeated for the whole window: drives a recurrent state along its
        # dominant direction, the classic trigger of exploding gradients through time.
        c = torch.randint(0, n_out, (xb.shape[0], 1), generator=gen).to(xb.device)
        return c.expand_as(xb).contiguous(), c.expand_as(yb).contiguous()
    bad = torch.randint(0, n_out, yb.shape, generator=gen).to(yb.device)
    return xb, bad


def _to_epochs(label: dict[str, Any], epoch_steps: int) -> dict[str, Any]:
    def ep(s: int) -> int:
        return max(0, (int(s) - 1) // epoch_steps)

    out = dict(label)
    out["onset_step"] = ep(label["onset_step"])
    out["steps"] = sorted({ep(s) for s in label.get("steps", [])})
    return out


def _version() -> str:
    from .. import __version__

    return __version__
