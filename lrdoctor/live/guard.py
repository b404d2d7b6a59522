"""What a training does about a finding while it runs: warn, stop, or roll back and skip.

:class:`Guard` is the part every integration shares (the Lightning and HuggingFace callbacks,
:class:`lrdoctor.Controller`): it feeds the metrics the trainer already computes to the live
engine every step, checks the rules every ``check_every`` steps, and on a confirmed finding at or
above ``severity`` takes ``action``:

* ``warn``: log it and append it to ``lrdoctor-findings.jsonl`` in the run's log directory;
* ``stop``: the same, then the trainer saves a checkpoint and stops through its own mechanism;
* ``rollback``: restore the last in-memory snapshot taken before the finding's onset (the
  batches between it and now are not replayed: the data stream goes on), skip ``skip_after``
  more batches, and apply the patch of the best-ranked proposal that can be applied in a running
  loop (``lr``/``lr_scale``: the LR curve is scaled, never raised; ``clip_grad_norm``). After
  ``max_rollbacks`` rollbacks the next such finding stops the run instead.

Every finding and intervention is a record in ``lrdoctor-findings.jsonl``, which discovery reads
back as the run's annotations: ``lrdoctor diagnose`` afterwards shows where and why the run was
stopped or rolled back. The trainer-specific operations are a :class:`TrainerHooks` object.

Snapshots are deep copies of the model, optimizer and scheduler state, kept in memory (the
``keep`` most recent, one every ``checkpoint_every`` steps) and only when the action is
``rollback``: they are for tiny-to-moderate models; checkpoints on disk are the trainer's own.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..model import Finding, Proposal
from ..readers.base import FINDINGS_FILE
from .engine import EventKind, LiveEngine, LiveEvent, at_least, rules_reaching

log = logging.getLogger(__name__)

ACTIONS = ("warn", "stop", "rollback")
#: patch keys a running loop can apply (the rest need a restart: warmup, scheduler, batch size)
LIVE_PATCH_KEYS = ("lr", "lr_scale", "clip_grad_norm")
#: a loss this many times its best so far is checked at the next interval even over the overhead
#: budget: the divergence rule confirms a blow-up of 100x at once (rules/divergence.yaml, live)
URGENT_RATIO = 100.0


@dataclass(frozen=True)
class GuardOptions:
    action: str = "warn"
    severity: str = "error"  # act on confirmed findings at or above this
    check_every: int = 10  # steps between rule checks
    #: the checks' share of the training thread's CPU time is kept under this (CPU, not wall
    #: time: other work on the machine must not buy the checks more room): a check that would go
    #: over waits (None: check every ``check_every`` steps whatever it costs). A non-finite loss
    #: or grad norm, or a loss URGENT_RATIO x its best, is checked at the next interval regardless.
    #: 0.5% for the checks leaves room under 1% for what runs at every step (feeding the points)
    max_overhead: float | None = 0.005
    max_rollbacks: int = 3
    apply_patch: bool = True  # rollback: apply the best live-applicable proposal's patch
    skip_after: int = 0  # rollback: batches skipped after restoring
    checkpoint_every: int = 25  # rollback: steps between in-memory snapshots
    keep: int = 8  # rollback: snapshots kept
    rules: Sequence[Any] | None = None
    overrides: Mapping[str, Mapping[str, Any]] | None = None
    role_overrides: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}, not {self.action!r}")
        if self.severity not in ("info", "warning", "error"):
            raise ValueError(f"severity must be info, warning or error, not {self.severity!r}")
        if self.max_overhead is not None and not 0 < self.max_overhead <= 1:
            raise ValueError("max_overhead must be in (0, 1], or None")
        for name in ("check_every", "checkpoint_every", "keep"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1")


class TrainerHooks(Protocol):
    """What a guard needs from the trainer it watches."""

    def state(self) -> dict[str, Any]:
        """The model, optimizer and scheduler state (live references; the guard copies them)."""
        ...

    def load_state(self, state: dict[str, Any]) -> None: ...

    def scale_lr(self, factor: float) -> None: ...

    def set_clip_grad_norm(self, value: float) -> None: ...

    def stop(self, step: int) -> str | None:
        """Save a checkpoint and ask the trainer to stop; the checkpoint's path if known."""
        ...


@dataclass
class _Snapshot:
    step: int
    state: dict[str, Any]
    lr_scale: float


@dataclass
class Guard:
    options: GuardOptions = field(default_factory=GuardOptions)
    logdir: str | Path | None = None
    name: str = "train"
    rollbacks: int = field(default=0, init=False)
    stopped: bool = field(default=False, init=False)
    finished: bool = field(default=False, init=False)
    records: list[dict[str, Any]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        from ..engine.spec import apply_overrides, load_rules

        o = self.options
        # only the rules that can give a finding this guard acts on (and their superseders): the
        # others' findings would be dropped below ``severity`` anyway, at a cost every check.
        # --set values are applied to every rule first, so a typo is an error whatever it names
        every = apply_overrides(list(o.rules) if o.rules is not None else load_rules(), o.overrides)
        self.engine = LiveEngine(name=self.name, rules=rules_reaching(every, o.severity),
                                 role_overrides=o.role_overrides)
        self._next_check: int | None = None
        self._snapshots: list[_Snapshot] = []
        self._skip_left = 0
        self._lr_scale = 1.0  # cumulative LR factor applied by rollbacks
        self._regime_lr_peak = 0.0  # the largest LR logged since the last rollback
        self._clip: float | None = None
        self._best_loss = math.inf
        self._last_check = 0.0  # CPU time of the last check
        self._check_seconds = 0.0  # CPU time spent checking ...
        self._t0: float | None = None  # ... out of the training thread's CPU time since the first step
        self.checks = 0

    # ------------------------------------------------------------------ the loop

    @property
    def skipping(self) -> bool:
        """Whether the current batch is to be skipped (its gradients dropped before the update)."""
        return self._skip_left > 0

    def skipped_one(self) -> None:
        self._skip_left = max(0, self._skip_left - 1)

    def observe(self, step: int, metrics: Mapping[str, float], hooks: TrainerHooks | None = None) -> list[LiveEvent]:
        """Feed one step's metrics; every ``check_every`` steps check the rules and act."""
        if self.stopped:
            return []
        self.engine.add(step, metrics)
        lr = metrics.get("lr")
        if lr is not None and math.isfinite(lr):
            self._regime_lr_peak = max(self._regime_lr_peak, float(lr))
        if self._next_check is None:
            self._next_check = step + self.options.check_every
            self._t0 = time.thread_time()
        events: list[LiveEvent] = []
        # the clock is read only when a check is due: a thread's CPU time is a system call, the
        # dearest part of feeding a step
        now = time.thread_time() if step >= self._next_check else None
        if now is not None and (self._urgent(metrics) or self._within_budget(now)):
            self._next_check = step + self.options.check_every
            events = self.engine.check()
            self.checks += 1
            self._last_check = time.thread_time() - now
            self._check_seconds += self._last_check
            self._handle(events, step, hooks)
        if (hooks is not None and self.options.action == "rollback" and not self.stopped
                and step % self.options.checkpoint_every == 0 and _all_finite(metrics)):
            self._snapshot(step, hooks)
        return events

    def _urgent(self, metrics: Mapping[str, float]) -> bool:
        loss = metrics.get("train_loss")
        if loss is not None and math.isfinite(loss):
            self._best_loss = min(self._best_loss, loss)
        if not _all_finite(metrics):
            return True
        return loss is not None and self._best_loss > 0 and loss >= URGENT_RATIO * self._best_loss

    def _within_budget(self, now: float) -> bool:
        """Whether one more check (costing what the last one did) keeps the checks under budget."""
        budget = self.options.max_overhead
        if budget is None or self._t0 is None:
            return True
        # the next check is estimated at the dearer of the last one and the mean so far: a check
        # that re-runs the whole-run rules costs more than one that does not
        estimate = max(self._last_check, self._check_seconds / self.checks) if self.checks else 0.0
        return self._check_seconds + estimate <= budget * (now - self._t0)

    @property
    def overhead(self) -> float:
        """The share of the training thread's CPU time spent checking so far."""
        if self._t0 is None:
            return 0.0
        return self._check_seconds / max(time.thread_time() - self._t0, 1e-9)

    def finish(self) -> list[LiveEvent]:
        """The training ended: the last check (findings still standing are final), warned only."""
        self.finished = True
        events = self.engine.finish()
        for e in events:
            if e.kind is EventKind.NEW and at_least(e.finding.severity, self.options.severity):
                self._warn(e)
        return events

    # ------------------------------------------------------------------ acting

    def _handle(self, events: list[LiveEvent], step: int, hooks: TrainerHooks | None) -> None:
        for e in events:
            if e.kind is not EventKind.NEW or not at_least(e.finding.severity, self.options.severity):
                continue
            self._warn(e)
            action = self.options.action
            if hooks is None or action == "warn":
                continue
            if action == "rollback" and self.rollbacks < self.options.max_rollbacks and self._rollback(e, step, hooks):
                return  # the engine now holds the restored prefix: the other events are stale
            if action == "rollback":
                why = (f"after {self.rollbacks} rollback(s), the limit" if self.rollbacks >= self.options.max_rollbacks
                       else "no snapshot from before the onset")
                self._stop(e, step, hooks, f"{why}; stopping instead")
            else:
                self._stop(e, step, hooks, "")
            return

    def _warn(self, e: LiveEvent) -> None:
        f = e.finding
        top = _ranked(f.proposals)[:1]
        summary = (f"{f.code or ''} {f.rule} from step {f.start_step}: {f.message}"
                   + (f"; top proposal: {top[0].summary}" if top else ""))
        log.warning("lrdoctor: %s (seen at step %s)", summary, e.at_step)
        self._record({"event": "finding", "at_step": e.at_step, "rule": f.rule, "code": f.code,
                      "severity": f.severity.value, "start_step": f.start_step, "end_step": f.end_step,
                      "message": f.message, "proposals": [p.id for p in _ranked(f.proposals)],
                      "summary": summary})

    def _stop(self, e: LiveEvent, step: int, hooks: TrainerHooks, note: str) -> None:
        path = hooks.stop(step)
        self.stopped = True
        f = e.finding
        summary = (f"stopped at step {step}: {f.rule} ({f.code}) from step {f.start_step}"
                   + (f"; checkpoint {path}" if path else "") + (f"; {note}" if note else ""))
        log.warning("lrdoctor: %s", summary)
        self._record({"event": "stop", "at_step": step, "rule": f.rule, "start_step": f.start_step,
                      "checkpoint": path, "summary": summary})

    def _snapshot(self, step: int, hooks: TrainerHooks) -> None:
        self._snapshots.append(_Snapshot(step, state_copy(hooks.state()), self._lr_scale))
        del self._snapshots[: -self.options.keep]

    def _rollback(self, e: LiveEvent, step: int, hooks: TrainerHooks) -> bool:
        f = e.finding
        onset = f.start_step if f.start_step is not None else step
        # the loss logged at step s was computed with the weights after s - 1 updates
        good = [s for s in self._snapshots if s.step < onset - 1]
        if not good:
            return False
        snap = good[-1]
        patch, applied_from = self._live_patch(f) if self.options.apply_patch else ({}, None)
        hooks.load_state(state_copy(snap.state))
        factor = patch.get("lr_scale", 1.0)
        self._lr_scale *= factor
        if self._lr_scale != snap.lr_scale:
            hooks.scale_lr(self._lr_scale / snap.lr_scale)
        if "clip_grad_norm" in patch:
            self._clip = min(self._clip or math.inf, float(patch["clip_grad_norm"]))
            hooks.set_clip_grad_norm(self._clip)
        self._snapshots = [s for s in self._snapshots if s.step <= snap.step]
        self._skip_left = self.options.skip_after
        self._regime_lr_peak = 0.0
        self.rollbacks += 1
        self.engine.truncate(snap.step)
        skipped = f"batches of steps {snap.step + 1}-{step} are not replayed" + (
            f", the next {self.options.skip_after} are skipped" if self.options.skip_after else "")
        what = (f"; applied {json.dumps(patch, sort_keys=True)} from {applied_from.id} ({applied_from.summary})"
                if applied_from is not None else "; no proposal applicable in a running loop" if
                self.options.apply_patch else "")
        summary = (f"rolled back at step {step} to the snapshot of step {snap.step}: {f.rule} ({f.code}) "
                   f"from step {onset}; {skipped}{what} (rollback {self.rollbacks} of at most "
                   f"{self.options.max_rollbacks})")
        log.warning("lrdoctor: %s", summary)
        self._record({"event": "rollback", "at_step": step, "to_step": snap.step, "rule": f.rule,
                      "start_step": onset, "skip_after": self.options.skip_after, "patch": patch,
                      "proposal": applied_from.id if applied_from is not None else None, "summary": summary})
        return True

    def _live_patch(self, f: Finding) -> tuple[dict[str, float], Proposal | None]:
        """The patch of the best-ranked proposal a running loop can apply, as an LR factor and clip."""
        for p in _ranked(f.proposals):
            cfg = p.config or {}
            out: dict[str, float] = {}
            if "lr" in cfg and self._regime_lr_peak > 0:
                out["lr_scale"] = min(1.0, float(cfg["lr"]) / self._regime_lr_peak)
            elif "lr_scale" in cfg:
                out["lr_scale"] = min(1.0, float(cfg["lr_scale"]))
            if cfg.get("clip_grad_norm"):
                out["clip_grad_norm"] = float(cfg["clip_grad_norm"])
            if out:
                return out, p
        return {}, None

    def _record(self, rec: dict[str, Any]) -> None:
        from ..jsonsafe import json_safe

        rec = {"run": self.name, **rec}
        self.records.append(rec)
        if self.logdir is None:
            return
        path = Path(self.logdir) / FINDINGS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(json_safe(rec), allow_nan=False) + "\n")


def state_copy(state: Any) -> Any:
    """A copy of a state tree (state dicts of the model, optimizer, scheduler): tensors cloned,
    containers rebuilt (an OrderedDict keeps its ``_metadata``, which ``load_state_dict`` reads),
    anything else deep-copied. Hand-written because ``copy.deepcopy`` spends most of its time on
    memo bookkeeping: on the tiny transformer's state (30 tensors, Adam's moments) it takes
    2.5 ms where this takes 0.5 ms, paid at every snapshot of a rollback guard."""
    import torch

    if isinstance(state, torch.Tensor):
        return state.detach().clone()
    if type(state) in (dict, OrderedDict):
        out = type(state)()
        for k, v in state.items():
            out[k] = state_copy(v)
        meta = getattr(state, "_metadata", None)
        if meta is not None:
            out._metadata = copy.deepcopy(meta)  # type: ignore[attr-defined]
        return out
    if isinstance(state, list):
        return [state_copy(v) for v in state]
    if isinstance(state, tuple) and type(state) is tuple:
        return tuple(state_copy(v) for v in state)
    if state is None or isinstance(state, (bool, int, float, str)):
        return state
    return copy.deepcopy(state)


def _ranked(proposals: Sequence[Proposal]) -> list[Proposal]:
    return sorted(proposals, key=lambda p: p.rank)


def _all_finite(metrics: Mapping[str, float]) -> bool:
    return all(math.isfinite(v) for v in metrics.values())


def scale_optimizer_lr(optimizer: Any, scheduler: Any, factor: float) -> None:
    """Scale the whole LR curve: every group's LR and the absolute LRs a torch scheduler keeps
    (``base_lrs``; OneCycleLR/CyclicLR keep theirs in the groups)."""
    for g in optimizer.param_groups:
        for key in ("lr", "initial_lr", "max_lr", "min_lr", "base_lr"):
            if isinstance(g.get(key), (int, float)):
                g[key] = g[key] * factor
    if scheduler is not None and hasattr(scheduler, "base_lrs"):
        scheduler.base_lrs = [lr * factor for lr in scheduler.base_lrs]
    if scheduler is not None and hasattr(scheduler, "_last_lr"):
        scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]


def grad_norm(parameters: Any) -> float:
    """The total L2 norm of the gradients (what ``clip_grad_norm_`` returns, before clipping)."""
    import torch

    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    with torch.no_grad():
        return float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))


def drop_gradients(parameters: Any) -> None:
    """Skip this batch: with no gradients the optimizer leaves the weights and its state alone."""
    for p in parameters:
        p.grad = None
