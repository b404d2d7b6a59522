"""The numbers a proposal is computed from, read off one run.

Everything here is derived from the run itself: the logged LR at and before a finding's onset
(else the configured LR from hparams or the built-in workload's config), the optimizer, betas,
batch size and weight decay from hparams, the run's length, its eval cadence (the steps at which
``val_loss`` was logged) and the grad-norm distribution of the stable stretch before the onset.
No torch here: proposals are computed from logs alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..model import Finding
from ..roles import RoleView
from ..runfacts import as_float, as_int, as_pair, hparams_of, lookup, optimizer_name
from .common import as_logged
from .grads import GradStats, centred_median, grad_blowup, grad_stats

#: Optimizers whose update is normalised per coordinate (warmup 2/(1-beta2), sqrt batch scaling).
ADAPTIVE = frozenset({"Adam", "AdamW", "RMSprop", "Adagrad", "Adamax", "NAdam", "RAdam", "Adafactor"})


@dataclass(frozen=True)
class Needs:
    """Facts a kind of finding needs computed (declared by its proposal policy)."""

    #: the finding's own steps are bursts: leave them out of the stable stretch's grad statistics
    excludes_finding_steps: bool = False
    #: an instability: the stable stretch ends where the grad norm first blew up, when earlier
    grad_blowup_ends_stable: bool = False
    #: a blow-up: find the last healthy step and the largest LR in force up to it
    healthy_edge: bool = False


@dataclass(frozen=True)
class RunContext:
    unit: str  # "step" or "epoch": what the run's x axis counts
    first_step: int
    last_step: int
    onset: int  # the finding's start (or the run's end when it has none)
    stable_end: int  # last step of the stable stretch before the onset
    # LR
    lr_source: str | None  # "lr role 'train/lr'", "hparams 'optimizer.lr'", None when unknown
    lr_logged: bool
    lr_at_onset: float | None
    lr_stable: float | None  # LR in force at the end of the stable stretch
    lr_peak: float | None  # the largest LR of the whole run (configured LR when not logged)
    lr_constant: bool | None  # LR never moved more than 1% from onset back to the start
    existing_warmup: int | None  # steps the logged LR took to climb to its peak (None: no warmup)
    lr_decayed: bool | None  # logged LR at the onset is below half its peak, after the peak
    # optimizer and data
    optimizer: str | None
    betas: tuple[float, float] | None
    momentum: float | None
    weight_decay: float | None
    batch_size: int | None
    world_size: int | None
    grad_accum: int | None
    # cadence and gradients
    eval_steps: np.ndarray  # steps at which val_loss was logged
    eval_every: int | None
    grad_stable: GradStats | None
    grad_at_onset: float | None  # largest finite grad norm within the finding's steps
    grad_median_in_finding: float | None = None
    grad_unstable_from: int | None = None  # grad norm blew up here, before the finding's onset
    lr_peak_source: str | None = None  # set when the peak is the configured one, not a logged value
    steps_per_epoch: int | None = None  # for epoch-axis runs, from hparams or the workload config
    # The last healthy point before the onset: the best smoothed train loss (the detector's
    # best_step when it gives one), moved earlier to the stable stretch's end when the grad norm
    # had blown up before it; lr_healthy is the largest logged LR in force up to there.
    best_step: int | None = None
    healthy_step: int | None = None
    lr_healthy: float | None = None
    warmup_foot: bool = False  # the onset (or healthy step) is at a visible warmup's foot
    lr_peak_before: float | None = None  # the largest logged LR up to the onset
    grad_logged: bool = False  # a grad_norm role exists (its values may all be non-finite)
    epoch_base: int = 0  # epoch-axis runs: the number the log gives its first epoch (Keras: 0)

    @property
    def total_steps(self) -> int:
        return max(self.last_step - self.first_step + 1, 1)

    @property
    def adaptive(self) -> bool:
        return self.optimizer in ADAPTIVE

    @property
    def beta2(self) -> float | None:
        return self.betas[1] if self.betas else None

    @property
    def effective_batch(self) -> int | None:
        if self.batch_size is None:
            return None
        return self.batch_size * (self.world_size or 1) * (self.grad_accum or 1)


# --------------------------------------------------------------------------- series helpers


def value_in_force(steps: np.ndarray, values: np.ndarray, step: int) -> float | None:
    """The last finite value logged at or before ``step`` (the first one when none is)."""
    ok = np.isfinite(values)
    steps, values = steps[ok], values[ok]
    if len(steps) == 0:
        return None
    i = int(np.searchsorted(steps, step, side="right")) - 1
    return float(values[max(i, 0)])


def stable_window(first: int, onset: int) -> tuple[int, int]:
    """The stretch a run was still healthy in: it skips the first 10% before the onset (initial
    transient) and a margin of 5% just before it (instability starts before it is detected)."""
    span = max(onset - first, 1)
    start = first + span // 10
    end = max(onset - max(span // 20, 1), start)
    return start, end


def best_loss_step(view: RoleView, onset: int, hint: object = None) -> int | None:
    """Step of the lowest smoothed train loss before ``onset`` (running median over ~10% of the
    points, 9 at most, like the divergence detector); ``hint`` (the detector's own best_step)
    wins when it is a step before the onset."""
    if isinstance(hint, (int, float, np.integer)) and not isinstance(hint, bool) and hint <= onset:
        return int(hint)
    s = view.deduped("train_loss")
    if s is None:
        return None
    m = np.isfinite(s.values) & (s.steps < onset)
    if not m.any():
        m = np.isfinite(s.values) & (s.steps <= onset)
    if not m.any():
        return None
    steps, x = s.steps[m], s.values[m]
    w = min(9, max(3, len(x) // 10)) | 1
    return int(steps[int(np.argmin(centred_median(x, w)))])


def _warmup_length(steps: np.ndarray, values: np.ndarray) -> int | None:
    ok = np.isfinite(values)
    steps, values = steps[ok], values[ok]
    if len(values) < 3:
        return None
    peak = values.max()
    if peak <= 0 or values[0] > 0.5 * peak:
        return None
    reach = int(np.argmax(values >= 0.99 * peak))
    return int(steps[reach] - steps[0]) or None


def _span(finding: Finding, view: RoleView, params: dict) -> tuple[int, int, int]:
    """(first step, last step, onset): the train loss's span, stretched to the planned length (a
    run killed after it diverged is shorter than planned: schedules span the planned length)."""
    run = view.run
    loss = view.deduped("train_loss")
    if loss is not None and len(loss):
        first, last = int(loss.steps.min()), int(loss.steps.max())
    elif len(run.scalars):
        first, last = int(run.scalars["step"].min()), int(run.scalars["step"].max())
    else:
        first, last = 0, 0
    planned = lookup(params, "max_steps")
    planned = as_int(planned[1]) if planned is not None else None
    if planned is not None and run.step_axis == "epoch":
        spe = lookup(params, "steps_per_epoch")
        spe = as_int(spe[1]) if spe is not None else None
        planned = -(-planned // spe) if spe else None
    if planned is not None and last - first + 1 < planned <= 100 * max(last, 1):
        last = first + planned - 1
    onset = finding.start_step if finding.start_step is not None else last
    return first, last, int(min(max(onset, first), last))


@dataclass(frozen=True)
class _LrFacts:
    at_onset: float | None = None
    stable: float | None = None
    peak: float | None = None
    constant: bool | None = None
    decayed: bool | None = None
    warmup: int | None = None
    source: str | None = None
    peak_source: str | None = None
    peak_before: float | None = None


def _lr_facts(view: RoleView, params: dict, onset: int, stable_end: int) -> _LrFacts:
    """The LR around the onset: the logged series wins; hparams give only the configured (peak) value."""
    lr_series = view.deduped("lr")
    if lr_series is None or not np.isfinite(lr_series.values).any():
        hit = lookup(params, "lr")
        if hit is not None and as_float(hit[1]) and as_float(hit[1]) > 0:
            lr = as_float(hit[1])
            return _LrFacts(at_onset=lr, stable=lr, peak=lr, source=f"hparams '{hit[0]}'")
        return _LrFacts()
    st, vals = lr_series.steps, lr_series.values
    lr_at = value_in_force(st, vals, onset)
    before = np.isfinite(vals) & (st <= onset)
    seen = vals[before] if before.any() else vals[np.isfinite(vals)][:1]
    peak_before = float(seen.max())
    # The peak is the largest LR of the whole run: an onset inside a warmup must not make
    # the warmup's first, tiny LR pass for the peak.
    lr_peak = float(vals[np.isfinite(vals)].max())
    constant = bool(np.ptp(seen) <= 0.01 * abs(peak_before)) if peak_before else True
    decayed = bool(lr_at is not None and peak_before > 0 and lr_at < 0.5 * peak_before)
    hit = lookup(params, "lr")
    conf = as_float(hit[1]) if hit is not None else None
    rising = not constant and lr_at is not None and lr_at >= 0.95 * lr_peak
    peak_source = None
    if conf is not None and rising and lr_peak * (1 + 1e-6) < conf <= 100 * lr_peak:
        # Stopped while still warming up: the schedule's peak is the configured one.
        lr_peak, peak_source = conf, f"hparams '{hit[0]}'"
    return _LrFacts(lr_at, value_in_force(st, vals, stable_end), lr_peak, constant, decayed, _warmup_length(st, vals),
                    f"lr role '{lr_series.tag}'", peak_source, peak_before)


def _betas(params: dict, opt: str | None) -> tuple[float, float] | None:
    hit = lookup(params, "betas")
    betas = as_pair(hit[1]) if hit is not None else None
    if betas is None:
        b1, b2 = (as_float(h[1]) if (h := lookup(params, k)) is not None else None for k in ("beta1", "beta2"))
        if b2 is not None:
            betas = (b1 if b1 is not None else 0.9, b2)
    if betas is None and opt in ("Adam", "AdamW", "NAdam", "RAdam", "Adamax"):
        betas = (0.9, 0.999)  # torch's default when hparams name the optimizer but not its betas
    return betas


def _grad_at_finding(view: RoleView, finding: Finding, onset: int) -> tuple[float | None, float | None]:
    """(largest, median) finite grad norm over the finding's stretch and marked steps."""
    gs = view.deduped("grad_norm")
    if gs is None:
        return None, None
    hi = finding.end_step if finding.end_step is not None else onset
    m = (gs.steps >= onset) & (gs.steps <= max(hi, onset)) & np.isfinite(gs.values)
    if finding.steps:
        m |= np.isin(gs.steps, np.asarray(finding.steps)) & np.isfinite(gs.values)
    if not m.any():
        return None, None
    return float(gs.values[m].max()), float(np.median(gs.values[m]))


class _WarmupFoot:
    """Whether a step is at the foot of a visible warmup: the LR had not yet risen off its first
    value, or every step so far was skipped by mixed precision's GradScaler (leading non-finite
    grad norms: no update applied any LR yet). Instability there comes from the optimizer's state
    and the loss scale settling, not from the LR's size, so the LR there is no stability edge to
    cut the peak from."""

    def __init__(self, view: RoleView, warmup: int | None):
        self.lr = view.deduped("lr")
        self.warmup = warmup
        ok = np.isfinite(self.lr.values) if self.lr is not None else None
        self.first_lr = float(self.lr.values[ok][0]) if ok is not None and ok.any() else None
        self.skipped_until = _leading_skips(view)

    def __call__(self, step: int) -> bool:
        if not self.warmup or self.first_lr is None or self.lr is None:
            return False
        if self.skipped_until is not None and step <= self.skipped_until:
            return True
        at = value_in_force(self.lr.steps, self.lr.values, step)
        return at is not None and at <= self.first_lr * (1 + 1e-9)


def _healthy_edge(view: RoleView, finding: Finding, onset: int, stable_end: int, unstable: int | None,
                  foot: _WarmupFoot) -> tuple[int | None, int | None, float | None]:
    """(best step, healthy step, largest LR up to it): the last healthy point before a blow-up."""
    best = best_loss_step(view, onset, finding.evidence.get("best_step"))
    if best is None:
        return None, None, None
    # a grad norm that blew up before the loss's best ends the healthy stretch there
    healthy = min(best, stable_end) if unstable is not None else best
    lr_series, lr_healthy = view.deduped("lr"), None
    if lr_series is not None:
        m = np.isfinite(lr_series.values) & (lr_series.steps <= healthy)
        if m.any():
            lr_healthy = float(lr_series.values[m].max())
        else:
            lr_healthy = value_in_force(lr_series.steps, lr_series.values, healthy)
        if foot(healthy):
            lr_healthy = None  # the cut then comes from the LR at the onset
    return best, healthy, lr_healthy


def build_context(finding: Finding, view: RoleView, needs: Needs = Needs()) -> RunContext:
    """The run's numbers around one finding; ``needs`` (from the rule's proposal policy) says
    which facts its kind of finding needs beyond the common ones."""
    run = view.run
    params = hparams_of(run)
    first, last, onset = _span(finding, view, params)
    exclude = list(finding.steps) if needs.excludes_finding_steps else []
    start, stable_end = stable_window(first, onset)
    unstable = None
    if needs.grad_blowup_ends_stable:
        # The loss often shows an instability later than the gradients do: end the stable
        # stretch where the grad norm first blew up, when that came earlier.
        unstable = grad_blowup(view, start, stable_end, exclude)
        if unstable is not None:
            stable_end = max(start, unstable - max((unstable - first) // 20, 1))
    lr = _lr_facts(view, params, onset, stable_end)

    def get(name: str, conv):
        hit = lookup(params, name)
        return conv(hit[1]) if hit is not None else None

    opt = get("optimizer", optimizer_name)
    lr_series = view.deduped("lr")
    warm = lr.warmup if lr_series is not None else get("warmup_steps", as_int)
    val = view.deduped("val_loss")
    eval_steps = np.unique(val.steps[np.isfinite(val.values)]) if val is not None else np.array([], np.int64)
    g_at, g_med = _grad_at_finding(view, finding, onset)
    foot = _WarmupFoot(view, warm)
    best, healthy, lr_healthy = (_healthy_edge(view, finding, onset, stable_end, unstable, foot)
                                 if needs.healthy_edge else (None, None, None))
    epoch = run.step_axis == "epoch"
    return RunContext(
        unit="epoch" if epoch else "step",
        first_step=first, last_step=last, onset=onset, stable_end=stable_end,
        lr_source=lr.source, lr_logged=lr_series is not None and lr.source is not None
        and lr.source.startswith("lr role"),
        # logged LRs at the precision they were logged with (float32 0.01 is 0.00999999977)
        lr_at_onset=as_logged(lr.at_onset), lr_stable=as_logged(lr.stable), lr_peak=as_logged(lr.peak),
        lr_constant=lr.constant,
        existing_warmup=warm, lr_decayed=lr.decayed,
        optimizer=opt, betas=_betas(params, opt), momentum=get("momentum", as_float),
        weight_decay=get("weight_decay", as_float), batch_size=get("batch_size", as_int),
        world_size=get("world_size", as_int), grad_accum=get("grad_accum", as_int),
        eval_steps=eval_steps, eval_every=int(np.median(np.diff(eval_steps))) if len(eval_steps) >= 2 else None,
        grad_stable=grad_stats(view, start, stable_end, exclude, guard=max((onset - first) // 50, 2)),
        grad_at_onset=g_at, grad_median_in_finding=g_med, grad_unstable_from=unstable,
        lr_peak_source=lr.peak_source,
        steps_per_epoch=get("steps_per_epoch", as_int) if epoch else None,
        lr_peak_before=as_logged(lr.peak_before), best_step=best, healthy_step=healthy,
        lr_healthy=as_logged(lr_healthy),
        warmup_foot=foot(onset), grad_logged=view.deduped("grad_norm") is not None,
        epoch_base=_epoch_base(run) if epoch else 0,
    )


def _leading_skips(view: RoleView) -> int | None:
    """Last step of the run of non-finite grad norms the run starts with while its loss is
    finite (GradScaler calibrating its loss scale), None when it starts with a finite one."""
    g, loss = view.deduped("grad_norm"), view.deduped("train_loss")
    if g is None or not len(g) or np.isfinite(g.values[0]):
        return None
    fin = np.isfinite(g.values)
    end = int(np.argmax(fin)) if fin.any() else len(fin)
    last = int(g.steps[end - 1])
    if loss is not None:
        m = (loss.steps <= last)
        if m.any() and not np.isfinite(loss.values[m]).all():
            return None  # the loss blew up too: a real failure, not loss-scale calibration
    return last


def _epoch_base(run) -> int:
    """What the log numbers its first epoch: 0 for Keras (CSVLogger, history.json) and for any
    log whose first epoch is 0, else 1."""
    steps = run.scalars["step"] if len(run.scalars) else []
    if str(run.format).startswith("keras") or (len(steps) and int(min(steps)) == 0):
        return 0
    return 1
