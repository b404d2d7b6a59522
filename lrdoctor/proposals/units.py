"""Epoch-axis runs (Keras logs) in the step counts the patch schema uses.

A proposal is computed on the log's own x axis. The patch schema counts optimizer steps (the
verification harness steps schedulers once per optimizer step), so when the run's steps per
epoch are known (hparams ``steps_per_epoch`` or a built-in workload's ``epoch_steps``) the
counts are converted; when they are not, the patch stays in epochs and the snippet steps its
scheduler once per epoch.
"""

from __future__ import annotations

from ..patch import ConfigPatch

# Scheduler kwargs that are durations in scheduler steps.
_DURATIONS = ("T_max", "T_0", "total_steps", "step_size", "total_iters", "step_size_up", "step_size_down")


def epochs_to_steps(config: ConfigPatch, spe: int) -> ConfigPatch:
    """The patch with epoch counts turned into optimizer steps (``early_stop_epoch``, a count of
    epochs trained, becomes ``early_stop_step``)."""
    out = config.to_dict()
    if out.get("warmup_steps"):
        out["warmup_steps"] = int(out["warmup_steps"]) * spe
    sched = out.get("scheduler")
    if isinstance(sched, dict):
        for k in _DURATIONS:
            if isinstance(sched.get(k), int):
                sched[k] = sched[k] * spe
        if isinstance(sched.get("milestones"), list):
            sched["milestones"] = [int(m) * spe for m in sched["milestones"]]
    if out.get("early_stop_epoch") is not None:
        # the harness applies steps; the snippet turns them back into epochs
        out["early_stop_step"] = int(out.pop("early_stop_epoch")) * spe
    if out.get("max_steps") is not None:
        out["max_steps"] = int(out["max_steps"]) * spe
    if out.get("skip_batches"):
        out["skip_batches"] = [[a * spe + 1, (b + 1) * spe] for a, b in out["skip_batches"]]
    return ConfigPatch.of(out)
