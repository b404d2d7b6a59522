"""What a loss-spike finding's curves say about its cause: bad batches or unstable updates.

A bad batch shows its loss *before* any update is made from it (the loss is computed, then the
gradient), so nothing done to the update -- clipping included -- removes that spike; only not
training on the batch does (roll back and skip). An unstable update shows up the other way round:
the gradient norm bursts first and the loss jumps on the steps after it, or bursts recur all over
the run; clipping caps exactly those updates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..model import Finding
from ..roles import RoleView
from .common import MIN_LEVEL_POINTS, fmt
from .context import RunContext

#: Rollback distance before a spike (PaLM: ~100 steps), shrunk for short runs.
ROLLBACK_STEPS = 100
#: A grad norm this many times the stable stretch's p99 is a burst.
BURST_OVER_P99 = 2.0
#: Logged points before a spike looked at for a burst that came first.
LEAD_POINTS = 3
#: Share of the points outside the spikes' windows that may be bursts before they "recur".
RECUR_SHARE = 0.01
#: Losses before a finding whose median is its level (recovery is judged against it).
LEVEL_POINTS = 10


def rollback_distance(ctx: RunContext) -> int:
    return int(min(ROLLBACK_STEPS, max(ctx.total_steps // 20, 5)))


def incidents(steps: list[int], gap: int) -> list[list[int]]:
    """Spike steps grouped into incidents: an aftershock within ``gap`` steps joins its spike."""
    out: list[list[int]] = []
    for s in sorted(set(steps)):
        if out and s - out[-1][-1] <= gap:
            out[-1].append(s)
        else:
            out.append([s])
    return out


def _before(view: RoleView, ctx: RunContext) -> np.ndarray:
    """The last LEVEL_POINTS finite train losses before the finding: its level."""
    s = view.deduped("train_loss")
    if s is None:
        return np.zeros(0)
    return s.values[(s.steps < ctx.onset) & np.isfinite(s.values)][-LEVEL_POINTS:]


def recovered(view: RoleView, ctx: RunContext, f: Finding) -> bool:
    """Whether the train loss ends finite and back near its level before the finding (within 2x;
    the level is the median of the last LEVEL_POINTS losses before it, judged only from
    MIN_LEVEL_POINTS of them), or at least an order of magnitude below the worst loss during it."""
    s = view.deduped("train_loss")
    if s is None or not len(s) or not np.isfinite(s.values[-1]):
        return False
    ok = np.isfinite(s.values)
    before = _before(view, ctx)
    end = f.end_step if f.end_step is not None else ctx.onset
    during = s.values[(s.steps >= ctx.onset) & (s.steps <= end + 1) & ok]
    last = s.values[-1]
    near = len(before) >= MIN_LEVEL_POINTS and last <= 2 * np.median(before)
    down = len(during) > 0 and last <= 0.1 * during.max()
    return bool(near or down)


def recovery_note(view: RoleView, ctx: RunContext) -> str:
    """What a proposal says when the level before the finding was too short to trust ("" when not)."""
    n = len(_before(view, ctx))
    if n >= MIN_LEVEL_POINTS or view.deduped("train_loss") is None:
        return ""
    return (f" Only {n} train loss{'' if n == 1 else 'es'} before {ctx.unit} {ctx.onset}, too few to know the "
            f"level it ran at ({MIN_LEVEL_POINTS} needed): whether the run recovered is judged only by its "
            f"loss ending 10× below the worst one during the finding.")


@dataclass(frozen=True)
class SpikePattern:
    incidents: int
    recovered: bool
    preceded: tuple[int, float] | None  # (step, grad norm) of a burst just before a spike
    recurring: int | None  # bursts outside the spikes' windows, when they recur (None: they don't)
    persistent: float | None  # median grad norm after the first spike, when persistently high
    grad_known: bool
    p99: float | None

    @property
    def isolated(self) -> bool:
        """Few spikes, each recovered from, with nothing in the grad norm pointing at the updates."""
        return (self.incidents <= 3 and self.recovered and self.preceded is None
                and self.recurring is None and self.persistent is None)

    @property
    def unstable_updates(self) -> bool:
        return self.preceded is not None or self.recurring is not None

    def why_rollback(self, ctx: RunContext) -> str:
        grad = (f" The grad norm was within {BURST_OVER_P99:g}× the stable p99 ({fmt(self.p99)}) in the "
                f"{LEAD_POINTS} points before each spike and not persistently high after, so no update "
                f"blew up first." if self.grad_known else "")
        return (f" Ranked first:{grad} A bad batch's loss is logged before any update is made from it, "
                f"so clipping cannot remove its spike (only damp the aftermath); skipping the batch does.")

    def why_clip(self, ctx: RunContext) -> str:
        parts = []
        if self.preceded is not None:
            s, g = self.preceded
            parts.append(f"the grad norm burst to {fmt(g)} ({fmt(g / self.p99)}× the stable p99) at {ctx.unit} "
                         f"{s}, before the loss jumped")
        if self.recurring is not None:
            parts.append(f"{self.recurring} grad-norm bursts (> {BURST_OVER_P99:g}× the stable p99) recur "
                         f"outside the spikes")
        return (f" Ranked first: {' and '.join(parts)} -- updates too large for the curvature, which "
                f"clipping caps.")


def spike_pattern(f: Finding, ctx: RunContext, view: RoleView) -> SpikePattern:
    spikes = sorted(set(f.steps) or ({ctx.onset}))
    back = rollback_distance(ctx)
    groups = incidents(spikes, back)
    rec = recovered(view, ctx, f)
    g, st = ctx.grad_stable, view.deduped("grad_norm")
    if g is None or st is None or g.p99 <= 0:
        return SpikePattern(len(groups), rec, None, None, None, False, None)
    steps, vals = st.steps, st.values
    ok = np.isfinite(vals)
    high = BURST_OVER_P99 * g.p99
    preceded = None
    for grp in groups:
        i = int(np.searchsorted(steps, grp[0]))
        lead = slice(max(i - LEAD_POINTS, 0), i)
        v = vals[lead][ok[lead]]
        if len(v) and v.max() > high:
            j = int(np.argmax(np.where(ok[lead], vals[lead], -np.inf)))
            preceded = (int(steps[lead][j]), float(vals[lead][j]))
            break
    windows = np.zeros(len(steps), dtype=bool)
    for grp in groups:
        windows |= (steps >= grp[0] - back) & (steps <= grp[-1] + back)
    outside = ok & ~windows & (steps >= g.first_step)
    n_out = int(outside.sum())
    bursts = int((vals[outside] > high).sum())
    recurring = bursts if n_out and bursts >= 3 and bursts > RECUR_SHARE * n_out else None
    after = outside & (steps > spikes[0])
    med = float(np.median(vals[after])) if after.sum() >= MIN_LEVEL_POINTS else None
    persistent = med if med is not None and med > BURST_OVER_P99 * g.p50 else None
    return SpikePattern(len(groups), rec, preceded, recurring, persistent, True, g.p99)
