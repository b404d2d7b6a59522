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


def snippet(patch: Mapping[str, Any], header: str = "", unit: str = "step", eval_every: int | None = None) -> str:
    """The code building exactly ``patch`` on an existing ``optimizer`` (see module doc).

    ``eval_every`` is the run's eval cadence, stated in the snippet when it evaluates."""
    lines: list[str] = []
    imports = ["import torch"]
    loop: list[str] = []  # commented training loop, only with the hooks this snippet defines
    if header:
        lines += [f"# {h}" for h in header.splitlines()]
    _optimizer(patch, lines)
    _lr(patch, lines)
    has_sched, plateau = _scheduler(patch, lines, imports, unit)
    clip = _clip(patch, lines)
    early = "early_stop_step" in patch
    evals = plateau or early
    if evals:
        if eval_every:
            lines += ["", f"EVAL_EVERY = {int(eval_every)}  # the run's eval cadence, in {unit}s"]
        _on_eval(patch, lines, imports, plateau, early)
    skip = _skip(patch, lines)
    stop = _stop(patch, lines)
    if "batch_size" in patch:
        lines += ["", f"BATCH_SIZE = {int(patch['batch_size'])}  # rebuild your DataLoader with batch_size=BATCH_SIZE"]

    loop.append("# Training loop, one iteration per " + ("epoch:" if unit == "epoch" else "optimizer step:"))
    # Counted from 1 (optimizer steps done), like the logged steps the patch's numbers come from.
    loop.append(f"#     for {unit}, batch in enumerate(loader, start=1):")
    if skip:
        loop.append(f"#         if skip_batch({unit}):  # the data advances, the model does not")
        loop.append("#             continue")
    loop.append("#         optimizer.zero_grad()")
    loop.append("#         loss = loss_fn(model(batch.x), batch.y)")
    loop.append("#         loss.backward()")
    if clip:
        loop.append("#         grad_norm = clip_gradients()  # the norm before clipping: log it")
    loop.append("#         optimizer.step()")
    if has_sched:
        loop.append("#         scheduler_step()")
    if evals:
        loop.append(f"#         if {unit} % EVAL_EVERY == 0:")
        loop.append(f"#             on_eval({unit}, evaluate(model))")
    if stop:
        loop.append(f"#         if should_stop({unit}):")
        if early:
            loop.append("#             restore_best()")
        loop.append("#             break")
    if not (skip or clip or has_sched or evals or stop):
        loop = []  # nothing to call from the loop: the change is made once, right here
    if not any("torch." in line for line in lines):
        imports.remove("import torch")
    imports.sort(key=lambda s: ("torch" in s, s.startswith("from"), s))  # stdlib first, isort-like
    head = imports + [""] if imports else []
    return "\n".join(head + lines + ([""] + loop if loop else [])).lstrip("\n") + "\n"


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
    if warm:
        sf = float(patch.get("warmup_start_factor", 0.01))
        lines += [f"WARMUP_STEPS = {warm}",
                  f"WARMUP_START_FACTOR = {lit(sf)}  # explicit: LinearLR's default start_factor is 1/3",
                  "warmup = lr_scheduler.LinearLR(optimizer, start_factor=WARMUP_START_FACTOR, end_factor=1.0, "
                  "total_iters=WARMUP_STEPS)"]
    doc = f'    """Call once per optimizer {unit}, right after optimizer.step()."""'
    if stype == "ReduceLROnPlateau":
        lines.append(f"plateau = lr_scheduler.ReduceLROnPlateau(optimizer, {_kwargs(sched)})")
        if warm:
            lines += ["", "def scheduler_step():", doc,
                      "    if warmup.last_epoch < WARMUP_STEPS:", "        warmup.step()"]
        return bool(warm), True
    if stype in _NO_SCHEDULER:
        lines.append("scheduler = warmup  # after WARMUP_STEPS it stays at the peak (end_factor=1.0)")
        lines += ["", "def scheduler_step():", doc, "    scheduler.step()"]
        return True, False
    main = f"lr_scheduler.{stype}(optimizer, {_kwargs(sched)})"
    if warm:
        lines.append(f"decay = {main}")
        lines.append("scheduler = lr_scheduler.SequentialLR(optimizer, [warmup, decay], milestones=[WARMUP_STEPS])")
    else:
        lines.append(f"scheduler = {main}")
    horizon = _HORIZON.get(stype)
    if horizon is not None and horizon[0] in sched:
        key, offset, why = horizon
        total = int(sched[key]) + offset
        lines.append(f"SCHEDULE_STEPS = {'WARMUP_STEPS + ' if warm else ''}{total}  # {why}")
        lines += ["", "def scheduler_step():", doc,
                  "    if scheduler.last_epoch < SCHEDULE_STEPS:", "        scheduler.step()"]
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
