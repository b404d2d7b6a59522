"""Where a rerun starts: the checkpoints of the original run, and the fork chosen among them.

Checkpoints are found next to the run's logs (its directory and up to :data:`UP_LEVELS` parents,
the first level that has any wins), or from ``--checkpoints PATTERN`` (a glob with ``{step}`` in
place of the step number, e.g. ``runs/x/ckpt-{step}.pt``). Recognised in a run directory:

* ``lrdoctor-checkpoints/step-{step}.pt`` - written by the built-in workloads and by
  :class:`lrdoctor.Controller` (``checkpoint_every=``); lrdoctor resumes these itself;
* ``checkpoint-{step}/`` - HuggingFace Trainer's ``output_dir`` layout;
* ``*step={step}*.ckpt`` anywhere below the run directory - Lightning's ModelCheckpoint names
  (``epoch=3-step=1200.ckpt``).

Only the step number is read from a name: lrdoctor never unpickles a user's checkpoint (the
user's command loads it); its own format is loaded with ``torch.load(weights_only=True)``.

The fork (:func:`plan_fork`): rules that judge an event (divergence, loss spikes, gradient
bursts) rerun from the latest checkpoint at or before ``onset - fork_margin_steps`` to past the
finding's last event plus a recovery margin (and past the batches a rollback proposal skips, so
its candidate trains after them); rules that judge a trend over the run (plateau,
overfitting, vanishing gradients) keep the from-scratch budget, because their detectors compare a
curve with its own beginning (see :data:`FORKABLE`).
"""

from __future__ import annotations

import glob
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..workloads.checkpointing import DIR_NAME, step_of

UP_LEVELS = 3
#: How a finding's rule judges its symptom, which decides whether its reruns can fork (the caller
#: reads it from the rule; this module names no rule): "event" - a symptom at a step (spikes,
#: bursts): fork before the first event, run past the last; "onset" - a symptom that lasts once set
#: in (NaN stays NaN): fork before the onset and run past it, not through the finding's stretch to
#: the run's end; anything else (a trend judged against the curve's own beginning or its best over
#: the whole stretch, e.g. plateau or overfitting) - no fork, a fragment would not show it.
FORKABLE = ("event", "onset")
_HF = re.compile(r"^checkpoint-(\d+)$")
_LIGHTNING = re.compile(r"(?:^|[-_])step=(\d+)(?:[-_.]|$)")


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: str
    kind: str  # "lrdoctor" (resumed by lrdoctor itself), "hf", "lightning", "pattern"


@dataclass(frozen=True)
class Fork:
    """Where the reruns of one finding start and how many steps they run after that."""

    start_step: int
    budget_steps: int
    checkpoint: Checkpoint | None  # None: from step 0 (no usable checkpoint, or a trend rule)
    note: str  # why this start (said in the output)

    @property
    def stop_step(self) -> int:
        return self.start_step + self.budget_steps

    def to_dict(self) -> dict:
        return {"start_step": self.start_step, "stop_step": self.stop_step, "budget_steps": self.budget_steps,
                "checkpoint": self.checkpoint.path if self.checkpoint else None,
                "checkpoint_kind": self.checkpoint.kind if self.checkpoint else None, "note": self.note}


def pattern_checkpoints(pattern: str) -> tuple[Checkpoint, ...]:
    """Files or directories matching ``pattern``, whose ``{step}`` is a number."""
    if pattern.count("{step}") != 1:
        raise UsageError(f"--checkpoints {pattern!r}: the pattern needs '{{step}}' exactly once")
    head, tail = pattern.split("{step}")
    rx = re.compile(re.escape(head) + r"(\d+)" + re.escape(tail) + r"/?$")
    found = []
    for path in glob.glob(glob.escape(head) + "*" + glob.escape(tail)):
        m = rx.match(path)
        if m:
            found.append(Checkpoint(int(m.group(1)), path, "pattern"))
    return tuple(sorted(found, key=lambda c: c.step))


def _level(d: Path) -> list[Checkpoint]:
    out: list[Checkpoint] = []
    own = d / DIR_NAME
    if own.is_dir():
        out += [Checkpoint(s, str(f), "lrdoctor") for f in own.iterdir() if (s := step_of(f)) is not None]
    for f in d.iterdir() if d.is_dir() else ():
        m = _HF.match(f.name)
        if m and f.is_dir():
            out.append(Checkpoint(int(m.group(1)), str(f), "hf"))
    return out


def _lightning(d: Path, depth: int = 3) -> list[Checkpoint]:
    out = []
    for pat in ("*.ckpt", *("/".join(["*"] * k + ["*.ckpt"]) for k in range(1, depth + 1))):
        for f in d.glob(pat):
            m = _LIGHTNING.search(f.name)
            if m:
                out.append(Checkpoint(int(m.group(1)), str(f), "lightning"))
    return out


def find_checkpoints(source: str | Path, pattern: str | None = None) -> tuple[Checkpoint, ...]:
    """Checkpoints of the run logged at ``source`` (a log file or directory), oldest first."""
    if pattern:
        return pattern_checkpoints(pattern)
    src = Path(source)
    d = src if src.is_dir() else src.parent
    for level in (d, *list(d.parents)[:UP_LEVELS]):
        found = _level(level) or (_lightning(level) if level == d else [])
        if found:
            uniq = {c.path: c for c in found}
            return tuple(sorted(uniq.values(), key=lambda c: c.step))
    return ()


def choose(checkpoints: Sequence[Checkpoint], before: int) -> Checkpoint | None:
    """The latest checkpoint at or before step ``before``."""
    ok = [c for c in checkpoints if c.step <= before]
    return max(ok, key=lambda c: c.step) if ok else None


def skipped_span(configs: Sequence[Any]) -> tuple[int, int] | None:
    """First and last step of the batches any of these config patches skips (None: none skips)."""
    ranges = [(int(a), int(b)) for c in configs for a, b in (c.get("skip_batches") or ())]
    return (min(a for a, _ in ranges), max(b for _, b in ranges)) if ranges else None


def stops_inside_skip(config: Any, start: int, stop: int) -> tuple[int, int] | None:
    """The skipped stretch of ``config`` a rerun of steps ``start+1..stop`` ends inside (None: it
    trains after every stretch it enters). Such a candidate never trains past the batches it
    skips, so its rerun cannot tell whether skipping them helps."""
    for a, b in config.get("skip_batches") or ():
        if a <= stop <= b and b > start:
            return int(a), int(b)
    return None


def plan_fork(cfg, rule: str | None, onset: int | None, last_event: int | None, original_steps: int | None,
              checkpoints: Sequence[Checkpoint], resumable: str | None = None, judged: str | None = None,
              skipped: tuple[int, int] | None = None) -> Fork:
    """The start and budget of one finding's reruns. ``judged`` is how its rule judges the symptom
    (see :data:`FORKABLE`); ``resumable`` is None when the rerun command can resume a checkpoint,
    else why it cannot (said in the note). ``skipped`` is the first and last step of the batches
    the proposals skip (``skip_batches``, a rollback): the fork is at or before the first (a
    skip before the fork would be a no-op in the rerun) and the reruns run past the last."""
    from .protocol import budget_for, fork_budget

    scratch = budget_for(cfg, onset, original_steps, last_event)

    def from_zero(why: str) -> Fork:
        return Fork(0, scratch, None, f"{why}: reruns start at step 0")

    if rule is None or onset is None:
        return from_zero("no finding to fork before")
    if not cfg.fork:
        return from_zero("forking off")
    if judged not in FORKABLE:
        return from_zero(f"{rule} is judged over the whole curve")
    if not checkpoints:
        pattern = getattr(cfg, "checkpoints", None)
        return from_zero(f"no checkpoint matched --checkpoints {pattern}" if pattern
                         else "no checkpoint found (save some, or pass --checkpoints PATTERN)")
    if resumable is not None:
        return from_zero(f"{len(checkpoints)} checkpoints found but {resumable}")
    before = int(onset) - cfg.fork_margin_steps
    why_before = f"{cfg.fork_margin_steps} before the onset {onset}"
    if skipped is not None and skipped[0] < before:
        before, why_before = skipped[0], f"the first skipped batch, {skipped[0]}"
    chosen = choose(checkpoints, before)
    if chosen is None or chosen.step <= 0:
        return from_zero(f"no checkpoint at or before step {before} ({why_before}; the earliest is at step "
                         f"{checkpoints[0].step})")
    last = None if judged == "onset" else last_event
    budget = fork_budget(cfg, chosen.step, int(onset), last, skipped[1] if skipped is not None else None)
    past = ""
    if skipped is not None and budget > fork_budget(cfg, chosen.step, int(onset), last):
        past = f", past the skipped batches {skipped[0]}-{skipped[1]} so that the candidate trains after them"
    return Fork(chosen.step, budget, chosen,
                f"forked from the {chosen.kind} checkpoint at step {chosen.step} ({chosen.path}): steps "
                f"{chosen.step + 1}-{chosen.step + budget}{past}")
