"""PyTorch code for a config patch, generated from the patch so the two cannot disagree.

A snippet assumes only that ``model`` and ``optimizer`` exist; it imports what it needs, names
every number it uses as a constant, and is pasteable right after the optimizer is built. It
defines small hook functions (``scheduler_step``, ``clip_gradients``, ``on_eval``,
``skip_batch``, ``should_stop``, ``restore_best``) and ends with a commented training loop that
shows where each is called. Torch defaults that do the wrong thing for a one-shot schedule are set
explicitly: LinearLR's start_factor (1/3 by default), CosineAnnealingLR rising again past T_max
and OneCycleLR raising past total_steps (both held at their final LR by ``scheduler_step``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Schedulers that must not be stepped past their horizon, and how it is computed from kwargs.
_HORIZON = {
    "CosineAnnealingLR": ("T_max", 0, "CosineAnnealingLR rises again past T_max: hold its floor"),
    "OneCycleLR": ("total_steps", -1, "OneCycleLR raises ValueError past total_steps: hold its final LR"),
}
_NO_SCHEDULER = (None, "", "constant", "none", "None")


def lit(v: Any) -> str:
    """A Python literal for a patch value (floats round-trip exactly)."""
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (list, tuple)):
        inner = ", ".join(lit(x) for x in v)
        return f"({inner},)" if isinstance(v, tuple) and len(v) == 1 else (
            f"({inner})" if isinstance(v, tuple) else f"[{inner}]")
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{lit(k)}: {lit(x)}" for k, x in v.items()) + "}"
    return repr(v)


def _kwargs(d: Mapping[str, Any], skip: tuple[str, ...] = ("type",)) -> str:
    return ", ".join(f"{k}={lit(v)}" for k, v in d.items() if k not in skip)


def snippet(patch: Mapping[str, Any], header: str = "", unit: str = "step", eval_every: int | None = None,
            axis: str | None = None, steps_per_epoch: int | None = None, epoch_base: int = 0) -> str:
    """The code building exactly ``patch`` on an existing ``optimizer`` (see module doc).

    ``unit`` is what the patch's counts count (``"step"`` or ``"epoch"``: how often the scheduler
    is stepped); ``axis`` what the log's x axis counts (defaults to ``unit``). An epoch-axis run gets
    an epoch loop with the optimizer steps inside it; its eval cadence ``eval_every`` is then in
    epochs, and ``early_stop_step`` is shown as epochs (``steps_per_epoch`` each). ``epoch_base`` is
    the number the log gives its first epoch (Keras: 0)."""
    axis = axis or unit
    lines: list[str] = []
    imports = ["import torch"]
    if header:
        lines += [f"# {h}" for h in header.splitlines()]
    _optimizer(patch, lines)
    _lr(patch, lines)
    has_sched, plateau = _scheduler(patch, lines, imports, unit)
    clip = _clip(patch, lines)
    _resume(patch, lines)
    early = "early_stop_step" in patch or "early_stop_epoch" in patch
    evals = plateau or early
    if evals:
        if eval_every:
            lines += ["", f"EVAL_EVERY = {int(eval_every)}  # the run's eval cadence, in {axis}s"]
        _on_eval(patch, lines, imports, plateau, early)
    skip = _skip(patch, lines)
    if axis == "epoch":
        stop = _stop_epochs(patch, lines, steps_per_epoch, epoch_base)
    else:
        stop = _stop(patch, lines)
    if "batch_size" in patch:
        lines += ["", f"BATCH_SIZE = {int(patch['batch_size'])}  # rebuild your DataLoader with batch_size=BATCH_SIZE"]

    hooks = dict(skip=skip, clip=clip, sched=has_sched, evals=evals, stop=stop, early=early)
    loop = _epoch_loop(unit, eval_every, epoch_base, **hooks) if axis == "epoch" else _step_loop(**hooks)
    if not (skip or clip or has_sched or evals or stop):
        loop = []  # nothing to call from the loop: the change is made once, right here
    if not any("torch." in line for line in lines):
        imports.remove("import torch")
    imports.sort(key=lambda s: ("torch" in s, s.startswith("from"), s))  # stdlib first, isort-like
    head = imports + [""] if imports else []
    return "\n".join(head + lines + ([""] + loop if loop else [])).lstrip("\n") + "\n"


_BODY = ["optimizer.zero_grad()", "loss = loss_fn(model(batch.x), batch.y)", "loss.backward()"]


def _step_loop(*, skip: bool, clip: bool, sched: bool, evals: bool, stop: bool, early: bool) -> list[str]:
    """A commented loop, one iteration per optimizer step counted from 1 (like the logged steps
    the patch's numbers come from)."""
    loop = ["# Training loop, one iteration per optimizer step:",
            "#     for step, batch in enumerate(loader, start=1):"]
    if skip:
        loop += ["#         if skip_batch(step):  # the data advances, the model does not", "#             continue"]
    loop += [f"#         {x}" for x in _BODY]
    if clip:
        loop.append("#         grad_norm = clip_gradients()  # the norm before clipping: log it")
    loop.append("#         optimizer.step()")
    if sched:
        loop.append("#         scheduler_step()")
    if evals:
        loop += ["#         if step % EVAL_EVERY == 0:", "#             on_eval(step, evaluate(model))"]
    if stop:
        loop.append("#         if should_stop(step):")
        if early:
            loop.append("#             restore_best()")
        loop.append("#             break")
    return loop


def _epoch_loop(unit: str, eval_every: int | None, base: int, *, skip: bool, clip: bool, sched: bool,
                evals: bool, stop: bool, early: bool) -> list[str]:
    """A commented loop for an epoch-axis run: epochs outside, optimizer steps inside; the
    scheduler is stepped per optimizer step or per epoch as the patch's counts say (``unit``)."""
    first = "0-based, like the log's" if base == 0 else "0-based; the log's are 1-based"
    loop = ["# Training loop, epochs outside, optimizer steps inside:",
            "#     step = 0  # optimizer steps done",
            f"#     for epoch in range(num_epochs):  # {first}",
            "#         for batch in loader:"]
    if skip:
        loop += ["#             if skip_batch(step + 1):  # the data advances, the model does not",
                 "#                 continue"]
    loop += [f"#             {x}" for x in _BODY]
    if clip:
        loop.append("#             grad_norm = clip_gradients()  # the norm before clipping: log it")
    loop += ["#             optimizer.step()", "#             step += 1"]
    if sched and unit == "step":
        loop.append("#             scheduler_step()  # once per optimizer step")
    if sched and unit == "epoch":
        loop.append("#         scheduler_step()  # once per epoch, after its last optimizer step")
    if evals:
        if eval_every and eval_every > 1:
            loop += ["#         if (epoch + 1) % EVAL_EVERY == 0:", "#             on_eval(epoch, evaluate(model))"]
        else:
            loop.append("#         on_eval(epoch, evaluate(model))  # validate after every epoch")
    if stop:
        loop.append("#         if should_stop(epoch + 1, step):  # epochs done, optimizer steps done")
        if early:
            loop.append("#             restore_best()")
        loop.append("#             break")
    return loop


def _stop_epochs(patch: Mapping[str, Any], lines: list[str], spe: int | None, base: int) -> bool:
    """``should_stop(epochs_done, steps_done)`` for an epoch loop; early stopping counts epochs."""
    epochs, early_step, max_steps = patch.get("early_stop_epoch"), patch.get("early_stop_step"), \
        patch.get("max_steps")
    if epochs is None and early_step is not None and spe:
        epochs = -(-int(early_step) // spe)
        note = f"  # early_stop_step {int(early_step)} at {spe} optimizer steps per epoch"
    else:
        note = ""
    if epochs is None and early_step is None and max_steps is None:
        return False
    lines.append("")
    conds = []
    if epochs is not None:
        last = int(epochs) - 1 + base
        lines.append(f"EARLY_STOP_EPOCHS = {int(epochs)}{note}")
        lines.append(f"# Epochs trained, counted from 1: stops after the epoch the log numbers {last} "
                     f"(its epochs are {'0' if base == 0 else '1'}-based).")
        conds.append("epochs_done >= EARLY_STOP_EPOCHS")
    elif early_step is not None:
        lines.append(f"EARLY_STOP_STEP = {int(early_step)}")
        conds.append("steps_done >= EARLY_STOP_STEP")
    if max_steps is not None:
        lines.append(f"MAX_STEPS = {int(max_steps)}")
        conds.append("steps_done >= MAX_STEPS")
    lines += ["", "def should_stop(epochs_done, steps_done=0):",
              '    """Call after each epoch\'s validation with the epochs and optimizer steps done so far."""',
              f"    return {' or '.join(conds)}"]
    return True


def _optimizer(patch: Mapping[str, Any], lines: list[str]) -> None:
    opt = patch.get("optimizer")
    if not opt:
        if "weight_decay" in patch:
            lines += ["", f"WEIGHT_DECAY = {lit(float(patch['weight_decay']))}",
                      "for group in optimizer.param_groups:",
                      "    group[\"weight_decay\"] = WEIGHT_DECAY"]
        return
    kw = {k: v for k, v in opt.items() if k != "type"}
    if isinstance(kw.get("betas"), list):
        kw["betas"] = tuple(kw["betas"])
    lines.append("")
    if "weight_decay" in patch:
        lines.append(f"WEIGHT_DECAY = {lit(float(patch['weight_decay']))}")
    lines.append(f"# Rebuild as {opt['type']} over the same parameter groups; every group keeps its LR.")
    lines.append(f"optimizer = torch.optim.{opt['type']}(")
    lines.append("    [{\"params\": g[\"params\"], \"lr\": g[\"lr\"]} for g in optimizer.param_groups],")
    for k, v in kw.items():
        lines.append(f"    {k}={lit(v)},")
    if "weight_decay" in patch:
        lines.append("    weight_decay=WEIGHT_DECAY,")
    lines.append(")")


def _lr(patch: Mapping[str, Any], lines: list[str]) -> None:
    if "lr" in patch:
        lines += ["", f"PEAK_LR = {lit(float(patch['lr']))}",
                  "# Scale every group alike, so ratios between param groups are kept.",
                  "_lr_scale = PEAK_LR / optimizer.param_groups[0][\"lr\"]",
                  "for group in optimizer.param_groups:",
                  "    group[\"lr\"] *= _lr_scale"]
    if "lr_scale" in patch:
        lines += ["", f"LR_SCALE = {lit(float(patch['lr_scale']))}",
                  "for group in optimizer.param_groups:",
                  "    group[\"lr\"] *= LR_SCALE"]


def _scheduler(patch: Mapping[str, Any], lines: list[str], imports: list[str], unit: str) -> tuple[bool, bool]:
    sched = dict(patch.get("scheduler") or {})
    stype = sched.get("type")
    warm = int(patch.get("warmup_steps") or 0)
    if stype in _NO_SCHEDULER and not warm:
        return False, False
    imports.append("from torch.optim import lr_scheduler")
    lines.append("")
    # the constants are named for what the scheduler's steps count (optimizer steps or epochs)
    span = "STEPS" if unit == "step" else "EPOCHS"
    if warm:
        sf = float(patch.get("warmup_start_factor", 0.01))
        lines += [f"WARMUP_{span} = {warm}",
                  f"WARMUP_START_FACTOR = {lit(sf)}  # explicit: LinearLR's default start_factor is 1/3",
                  "warmup = lr_scheduler.LinearLR(optimizer, start_factor=WARMUP_START_FACTOR, end_factor=1.0, "
                  f"total_iters=WARMUP_{span})"]
    doc = ('    """Call once per optimizer step, right after optimizer.step()."""' if unit == "step" else
           '    """Call once per epoch, after its last optimizer.step()."""')
    if stype == "ReduceLROnPlateau":
        lines.append(f"plateau = lr_scheduler.ReduceLROnPlateau(optimizer, {_kwargs(sched)})")
        if warm:
            lines += ["", "def scheduler_step():", doc,
                      f"    if warmup.last_epoch < WARMUP_{span}:", "        warmup.step()"]
        return bool(warm), True
    if stype in _NO_SCHEDULER:
        lines.append(f"scheduler = warmup  # after WARMUP_{span} it stays at the peak (end_factor=1.0)")
        lines += ["", "def scheduler_step():", doc, "    scheduler.step()"]
        return True, False
    main = f"lr_scheduler.{stype}(optimizer, {_kwargs(sched)})"
    if warm:
        lines.append(f"decay = {main}")
        lines.append(f"scheduler = lr_scheduler.SequentialLR(optimizer, [warmup, decay], milestones=[WARMUP_{span}])")
    else:
        lines.append(f"scheduler = {main}")
    horizon = _HORIZON.get(stype)
    if horizon is not None and horizon[0] in sched:
        key, offset, why = horizon
        total = int(sched[key]) + offset
        lines.append(f"SCHEDULE_{span} = {f'WARMUP_{span} + ' if warm else ''}{total}  # {why}")
        lines += ["", "def scheduler_step():", doc,
                  f"    if scheduler.last_epoch < SCHEDULE_{span}:", "        scheduler.step()"]
    else:
        lines += ["", "def scheduler_step():", doc, "    scheduler.step()"]
    return True, False


def _clip(patch: Mapping[str, Any], lines: list[str]) -> bool:
    norm, value = patch.get("clip_grad_norm"), patch.get("clip_grad_value")
    if norm is None and value is None:
        return False
    lines.append("")
    if norm is not None:
        lines.append(f"CLIP_GRAD_NORM = {lit(float(norm))}")
    if value is not None:
        lines.append(f"CLIP_GRAD_VALUE = {lit(float(value))}")
    lines += ["", "def clip_gradients():",
              '    """Call between loss.backward() and optimizer.step(); returns the norm before clipping."""']
    if value is not None:
        lines.append("    torch.nn.utils.clip_grad_value_(model.parameters(), clip_value=CLIP_GRAD_VALUE)")
    if norm is not None:
        lines.append("    return torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=CLIP_GRAD_NORM)")
    else:
        lines.append("    return None")
    return True


def _on_eval(patch: Mapping[str, Any], lines: list[str], imports: list[str], plateau: bool, early: bool) -> None:
    lines.append("")
    if early:
        imports.append("import copy")
        lines += ["_best = {\"val_loss\": float(\"inf\"), \"step\": None, \"state\": None}", ""]
    lines += ["def on_eval(step, val_loss):", '    """Call after each evaluation with the validation loss."""']
    if plateau:
        lines.append("    plateau.step(val_loss)  # patience counts these calls, i.e. evaluations")
    if early:
        lines += ["    if val_loss < _best[\"val_loss\"]:",
                  "        _best.update(val_loss=val_loss, step=step, state=copy.deepcopy(model.state_dict()))"]
    if early:
        lines += ["", "def restore_best():", '    """Load the weights of the best evaluation seen."""',
                  "    if _best[\"state\"] is not None:", "        model.load_state_dict(_best[\"state\"])",
                  "    return _best[\"step\"]"]


def _skip(patch: Mapping[str, Any], lines: list[str]) -> bool:
    ranges = patch.get("skip_batches")
    if not ranges:
        return False
    pairs = [(int(a), int(b)) for a, b in ranges]
    lines += ["", f"SKIP_BATCHES = {lit(pairs)}  # inclusive ranges of batch indices",
              "# Resume from the checkpoint saved at or before the first skipped batch, then:", "",
              "def skip_batch(step):",
              "    return any(first <= step <= last for first, last in SKIP_BATCHES)"]
    return True


def _stop(patch: Mapping[str, Any], lines: list[str]) -> bool:
    early, max_steps = patch.get("early_stop_step"), patch.get("max_steps")
    if early is None and max_steps is None:
        return False
    lines.append("")
    conds = []
    if early is not None:
        lines.append(f"EARLY_STOP_STEP = {int(early)}")
        conds.append("step >= EARLY_STOP_STEP")
    if max_steps is not None:
        lines.append(f"MAX_STEPS = {int(max_steps)}")
        conds.append("step >= MAX_STEPS")
    lines += ["", "def should_stop(step):", '    """Call after each optimizer step with the number of steps done."""',
              f"    return {' or '.join(conds)}"]
    return True


def _resume(patch: Mapping[str, Any], lines: list[str]) -> None:
    """Resuming with the LR schedule intact (``restore_scheduler_state``), or re-warming up after
    a restart (``rewarmup_steps``). ``scheduler`` is the run's existing LR scheduler."""
    if patch.get("restore_scheduler_state"):
        lines += ["", "# Checkpoints carry the LR scheduler's state (`scheduler` is your scheduler), so a",
                  "# resumed run continues its schedule instead of starting its warmup/decay again.",
                  "def save_checkpoint(path, step):",
                  '    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),',
                  '                "scheduler": scheduler.state_dict(), "step": step}, path)',
                  "", "",
                  "def load_checkpoint(path):",
                  '    """Call after building model, optimizer and scheduler; returns the step to resume after."""',
                  '    ckpt = torch.load(path, map_location="cpu")',
                  '    model.load_state_dict(ckpt["model"])',
                  '    optimizer.load_state_dict(ckpt["optimizer"])',
                  '    scheduler.load_state_dict(ckpt["scheduler"])',
                  '    return ckpt["step"]']
    if patch.get("rewarmup_steps"):
        lines += ["", f"REWARMUP_STEPS = {int(patch['rewarmup_steps'])}",
                  f"REWARMUP_START_FACTOR = {lit(float(patch.get('warmup_start_factor', 0.01)))}",
                  "", "",
                  "def rewarmup(scheduler):",
                  '    """Right after resuming with a restarted schedule: ramp the LR up over REWARMUP_STEPS,',
                  '    then hand over to `scheduler` (use the returned scheduler from then on)."""',
                  "    warm = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=REWARMUP_START_FACTOR,",
                  "                                             end_factor=1.0, total_iters=REWARMUP_STEPS)",
                  "    return torch.optim.lr_scheduler.SequentialLR(optimizer, [warm, scheduler], milestones=[REWARMUP_STEPS])"]
