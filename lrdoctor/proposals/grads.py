"""The grad-norm distribution a proposal is computed from: percentiles of a stable stretch (pre-clip
norms when clip_grad_norm_'s return value was logged), its isolated bursts, and where the norm
first blew up. Read from the run's one-point-per-step series, as the detectors see it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..averaging import with_averaging
from ..roles import RoleView
from .common import MIN_LEVEL_POINTS


@dataclass(frozen=True)
class GradStats:
    """Percentiles of the finite grad norms in a window (pre-clip norms when clip_grad_norm_'s
    return value was logged)."""

    first_step: int
    last_step: int
    n: int
    p50: float
    p90: float
    p95: float
    p99: float
    max: float
    ignored: int = 0  # non-finite grad norms left out of the window (GradScaler-skipped steps, overflow)
    whole_run: bool = False  # no finite norm before the window's end: taken over the whole run
    spikes: int = 0  # norms above SPIKE_X times their centred running median (isolated bursts)
    calm_p90: float | None = None  # p90 of the window without those spikes (None: no spike)
    fallback: str = ""  # why the statistics are not from the stable stretch asked for ("" when they are)
    averages: float = 1.0  # optimizer steps each logged norm averages (epoch means: lrdoctor.averaging)

    def percentile(self, q: int) -> float:
        return {50: self.p50, 90: self.p90, 95: self.p95, 99: self.p99}[q]


def grad_stats(view: RoleView, start: int, end: int, exclude: Iterable[int] = (),
               guard: int = 0) -> GradStats | None:
    s = view.deduped("grad_norm")
    if s is None:
        return None
    k = with_averaging(view, s).averages
    fin = np.isfinite(s.values)
    m = (s.steps >= start) & (s.steps <= end) & fin
    ignored = int(((s.steps >= start) & (s.steps <= end) & ~fin).sum())
    whole = False
    excl = np.asarray(sorted(set(exclude)), dtype=np.int64)
    if len(excl):
        idx = np.searchsorted(excl, s.steps)
        near_hi = np.abs(excl[np.minimum(idx, len(excl) - 1)] - s.steps) <= guard
        near_lo = np.abs(excl[np.maximum(idx - 1, 0)] - s.steps) <= guard
        m &= ~(near_hi | near_lo)
    vals = s.values[m]
    fallback = ""
    if len(vals) < MIN_STATS_POINTS:
        # Too short a stretch to take a p90 from (a 7-point window gave 0.11 for a run whose median
        # norm is 0.86): fall back to everything finite before the end, else the whole run.
        fallback = f"the stable stretch had only {len(vals)} grad norm(s), fewer than {MIN_STATS_POINTS}"
        m = (s.steps <= end) & fin
        ignored = int(((s.steps <= end) & ~fin).sum())
        if m.sum() < MIN_STATS_POINTS and fin.sum() > m.sum():
            # Too few finite norms before the onset too (or none: every step so far skipped by
            # GradScaler): the run's finite norms are still its own evidence, better than a default.
            m, ignored, whole = fin, int((~fin).sum()), True
        vals = s.values[m]
        if len(vals) == 0:
            return None
        fallback += f", so they are taken over {'the whole run' if whole else 'every norm before the onset'}"
    p50, p90, p95, p99 = np.percentile(vals, [50, 90, 95, 99])
    steps = s.steps[m]
    # Bursts against the local level, not the window's median: a norm that trends (shrinking
    # while the run converges, growing with a warmup) is ordinary, a lone 10-50x jump is not.
    # (epoch means keep SPIKE_X: their bursts are smaller, but so is their scatter below the
    # per-step norms a clip acts on, and a lower threshold would clip even more steps)
    spike = vals > SPIKE_X * centred_median(vals, SPIKE_WINDOW)
    # the burst-free p90 that may cap the threshold is a percentile too: as many norms as the p90
    calm = (float(np.percentile(vals[~spike], 90))
            if spike.any() and (~spike).sum() >= MIN_STATS_POINTS else None)
    return GradStats(int(steps.min()), int(steps.max()), int(len(vals)), float(p50), float(p90),
                     float(p95), float(p99), float(vals.max()), ignored, whole,
                     int(spike.sum()) if calm is not None else 0, calm, fallback, k)


#: Fewest grad norms a percentile (the clip threshold) is taken from; a shorter stable stretch
#: falls back to every norm before the onset, then to the whole run, and the proposal says so.
MIN_STATS_POINTS = 20


#: A grad norm above SPIKE_X times the centred running median of SPIKE_WINDOW norms around it is a
#: burst: under 3x is within the step-to-step scatter of minibatch norms (roughly log-normal with
#: a log-sd up to ~0.85, whose p90/p50 is ~3); the 9-norm window tolerates up to 4 bursts in it.
SPIKE_X = 3.0
SPIKE_WINDOW = 9


#: A grad norm this many times its early median marks the end of a stable stretch.
GRAD_BLOWUP = 10.0


def grad_blowup(view: RoleView, start: int, end: int, exclude: Iterable[int] = ()) -> int | None:
    """First step in [start, end] whose grad norm is non-finite or above GRAD_BLOWUP times the
    median of the first third of that stretch (isolated ``exclude`` steps ignored); None when
    that third holds fewer than MIN_LEVEL_POINTS finite norms."""
    s = view.deduped("grad_norm")
    if s is None:
        return None
    m = (s.steps >= start) & (s.steps <= end) & ~np.isin(s.steps, np.asarray(list(exclude), dtype=np.int64))
    steps, vals = s.steps[m], s.values[m]
    # Non-finite norms from the very start are mixed precision's loss-scale calibration
    # (GradScaler skips those steps and halves its scale), not a blow-up.
    lead = int(np.argmax(np.isfinite(vals))) if np.isfinite(vals).any() else len(vals)
    steps, vals = steps[lead:], vals[lead:]
    if len(vals) < 6:
        return None
    early = vals[: len(vals) // 3]
    early = early[np.isfinite(early)]
    if len(early) < MIN_LEVEL_POINTS:
        # a median of 2-4 early norms is no level (a warmup's first tiny norms would make every
        # later one a "blow-up"): the stable stretch is then not cut short
        return None
    bad = ~np.isfinite(vals) | (vals > GRAD_BLOWUP * float(np.median(early)))
    bad[: len(vals) // 3] &= ~np.isfinite(vals[: len(vals) // 3])
    return int(steps[np.argmax(bad)]) if bad.any() else None


def centred_median(x: np.ndarray, window: int) -> np.ndarray:
    """Centred running median, ends padded with the edge values (numpy only)."""
    h = window // 2
    if len(x) == 0 or h == 0:
        return x.astype(np.float64)
    padded = np.concatenate([np.full(h, x[0]), x, np.full(h, x[-1])])
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, 2 * h + 1), axis=1)


def layer_clip_note(view: RoleView, evidence: dict, unit: str) -> str:
    """What a global clip means for the layer(s) an exploding-gradients finding named as bursting
    first (empty when it named none): the total norm includes that layer's, so the global clip
    caps its burst too; torch's ``clip_grad_norm_`` also takes one module's parameters, at a
    threshold from that layer's own norms before the burst (p90, from MIN_STATS_POINTS norms at
    least), but no trainer config key clips one layer, so it is described, never patched."""
    from ..detectors.layers import layer_norms

    names = list(evidence.get("first_layers") or ())
    fam = view.family("layer_grad_norm") if names else None
    ln = layer_norms(fam) if fam is not None else None
    if ln is None:
        return ""
    onset = int(evidence["layer_onset_step"])
    ratios = evidence.get("layer_ratios") or {}
    said = ", ".join(f"{n} ({ratios[n]:.0f}× its baseline)" if n in ratios else n for n in names)
    note = (f" The first burst began in {said} at {unit} {onset}: its norm is part of the total, so "
            f"clipping the total caps it too.")
    j = ln.names.index(names[0]) if names[0] in ln.names else None
    if j is None:
        return note
    before = ln.values[ln.steps < onset, j]
    before = before[np.isfinite(before)]
    if len(before) < MIN_STATS_POINTS:
        return note + (f" A clip of that layer alone needs its own stable norms: only {len(before)} were logged "
                       f"before the burst (fewer than {MIN_STATS_POINTS}), so no per-layer threshold is given.")
    p90 = float(np.percentile(before, 90))
    return note + (f" To clip that layer alone, call torch.nn.utils.clip_grad_norm_("
                   f"model.get_submodule({names[0]!r}).parameters(), max_norm={p90:.2g}) before the optimizer "
                   f"step (p90 of its {len(before)} norms before the burst); no trainer config key clips one "
                   f"layer, so this is not part of the config patch.")
