"""Transient excursions: loss spikes that recover, and gradient-norm bursts."""

from __future__ import annotations

import numpy as np

from ..model import Series, SeriesFamily
from .base import (
    MAD_TO_SIGMA,
    Evidence,
    finite_part,
    group_events,
    listed,
    local_noise,
    median_of,
    noise_sigma,
    odd_window,
    param_ranges,
    rolling_median,
    trailing_median,
)
from .layers import first_bursting_layers
from .nonfinite import nonfinite_counts, persistent_nonfinite, times, value_word
from .screens import BurstScreen, screened_by


@param_ranges(window=">=1", noise_window=">=1", z_threshold=">0", min_rise_over_range=">=0", max_gap=">=0",
              recover_fraction="0..1", recover_within="(0..1]", max_events=">=0", ignore_start_fraction="[0..1)",
              log_domain_decades=">0", min_ratio_log_domain=">=1", min_ratio_epoch_means=">=1", min_points=">=0")
def loss_spike(
    train_loss: Series,
    grad_norm: Series | None = None,
    val_loss: Series | None = None,
    *,
    window: int = 21,
    noise_window: int = 41,
    z_threshold: float = 20.0,
    min_rise_over_range: float = 0.5,
    max_gap: int = 2,
    recover_fraction: float = 0.5,
    recover_within: float = 0.3,
    max_events: int = 20,
    ignore_start_fraction: float = 0.05,
    attribute_to_gradients: bool = True,
    log_domain_decades: float = 2.0,
    min_ratio_log_domain: float = 3.0,
    min_ratio_epoch_means: float = 1.5,
    judge_val_loss: bool = True,
    min_points: int = 12,
) -> Evidence | None:
    """Sudden jumps of the loss far above its recent level that come back down.

    Each point is compared with the median of the ``window`` points before it (a trailing
    baseline: a jump stands out however slowly it recovers). A point is a candidate when it is
    above that baseline by more than ``z_threshold`` robust standard deviations of the loss's
    *local* noise (running median over ``noise_window`` points of the absolute residuals around a
    running median, never below the whole run's level) *and* by ``min_rise_over_range`` of the curve's
    robust range (5th-95th percentile of the smoothed curve). The noise is local because
    minibatch noise scales with the loss level: one global level, dominated by a quiet converged
    tail, turns ordinary early noise into "spikes". Both scales move with the curve, so shifting
    or scaling the loss changes nothing. Candidates at most ``max_gap`` points
    apart form one event, starting at its first point (the bad step). An event is a spike when,
    within ``recover_within`` of the run (in points, at least 3), the loss falls back below the
    baseline plus ``recover_fraction`` of the jump -- a step up that stays up is not a spike
    (divergence, or a level shift). More than ``max_events`` events is heavy-tailed noise, not
    spikes: nothing is reported. The first ``ignore_start_fraction`` of the run (at least 3
    points) is not judged: warmup often lifts the loss above its first values, and there is no
    baseline yet. With ``attribute_to_gradients`` and a logged ``grad_norm``, a spike at a step
    where the gradient norm jumped by a larger factor than the loss did is an exploding gradient
    (reported by exploding-gradients), not counted here. ``steps`` lists each spike's first step.

    A positive loss whose smoothed curve spans ``log_domain_decades`` decades or more (p5 to p95;
    physics-informed losses go 1e10 -> 1e-4) is judged on ``log(loss)``: on a linear scale the
    early values set the noise and the range, and a 1000x jump late in the run is invisible.
    In the log domain the range test becomes a minimum jump ratio ``min_ratio_log_domain`` (a
    fraction of 14 decades would ask for a 1e7x jump); noise and recovery work unchanged on the
    log values, so a spike must be ``z_threshold`` robust sigmas of the *log* noise above its
    baseline and come back below the geometric midpoint of its jump. Points from where the loss or
    the grad norm stays non-finite on are divergence's, not judged here; spikes before it are
    reported beside the divergence (repeated blow-ups that recovered, then a final one).

    A training loss of epoch means (``train_loss.epoch_means``, :mod:`lrdoctor.averaging`) needs
    only ``min_ratio_epoch_means`` x its baseline where ``min_ratio_log_domain`` is asked: a one-step
    spike of ratio r averaged into an epoch of k steps shows as 1 + (r - 1) / k (a poisoned batch
    in a 20-step epoch of a GRU LM: 0.48 -> 0.96, 2x), and a Keras log does not say k. The noise
    test still has to pass, and epoch means are smooth, so their noise is small: a healthy
    epoch-level loss does not jump 20 local sigmas. The val loss is not an average of training
    steps, so it keeps the per-step ratio.

    With ``judge_val_loss`` and a logged ``val_loss``, a run whose train loss has no spike has its
    validation loss judged the same way (no gradient attribution): some spikes show only there
    (an eval after a damaging step), and epoch-level logs often have the val loss as their only
    other curve. The finding's ``series`` says which curve spiked.
    """
    params = {k: v for k, v in locals().items()
              if k not in ("train_loss", "grad_norm", "val_loss", "judge_val_loss", "min_ratio_epoch_means")}
    ev = _spikes(train_loss, grad_norm, **{**params, "min_ratio_log_domain": (
        min(min_ratio_log_domain, min_ratio_epoch_means) if train_loss.epoch_means else min_ratio_log_domain)})
    if ev is not None:
        return Evidence(ev.start_step, ev.end_step, ev.steps, {**ev.values, "series": "train loss"})
    if val_loss is None or not judge_val_loss:
        return None
    ev = _spikes(val_loss, None, **params)
    if ev is None:
        return None
    return Evidence(ev.start_step, ev.end_step, ev.steps, {**ev.values, "series": "val loss"})


def _spikes(
    train_loss: Series,
    grad_norm: Series | None,
    *,
    window: int,
    noise_window: int,
    z_threshold: float,
    min_rise_over_range: float,
    max_gap: int,
    recover_fraction: float,
    recover_within: float,
    max_events: int,
    ignore_start_fraction: float,
    attribute_to_gradients: bool,
    log_domain_decades: float,
    min_ratio_log_domain: float,
    min_points: int,
) -> Evidence | None:
    """The spikes of one loss curve (see :func:`loss_spike`, whose signature holds the defaults)."""
    steps, raw = finite_part(train_loss)
    n = len(raw)
    if n < min_points:
        return None
    w = odd_window(n, window, fraction=0.2, minimum=5)
    med = rolling_median(raw, w)
    positive = bool(np.all(raw > 0))
    p5, p95 = (float(p) for p in np.percentile(med, (5, 95)))  # one call: it costs ~50 µs on any length
    log_domain = positive and p95 >= 10.0**log_domain_decades * p5
    x = np.log(raw) if log_domain else raw
    if log_domain:
        med = rolling_median(x, w)
    global_sigma = noise_sigma(x, w, med)
    sigma = local_noise(x, odd_window(n, noise_window, fraction=0.25, minimum=w), med, floor=global_sigma)
    base = trailing_median(x, w)
    if log_domain:
        thresh = np.maximum(z_threshold * sigma, float(np.log(min_ratio_log_domain)))
    else:
        size = np.full(n, min_rise_over_range * (p95 - p5))  # p5/p95 of the linear curve's smoothed values
        if positive:
            # late in a falling run half the whole range is many times the current level: a
            # jump to min_ratio_log_domain x the trailing baseline is big enough (a per-step
            # spike averaged into an epoch mean shows as ~2-3x)
            size = np.minimum(size, np.nan_to_num((min_ratio_log_domain - 1.0) * base, nan=np.inf))
        thresh = np.maximum(z_threshold * sigma, size)
    if not bool(np.any(thresh > 0)):
        return None
    r = x - base
    first = min(n, max(3, int(ignore_start_fraction * n)))
    cand = np.nonzero(np.nan_to_num(r[first:], nan=-np.inf) > thresh[first:])[0] + first
    # judged (and recovered) only before the loss or grad norm stays non-finite
    cut = int(np.searchsorted(steps, _diverged_from(train_loss, grad_norm)))
    cand = cand[cand < cut]
    if len(cand) == 0:
        return None
    events = group_events(cand, max_gap=max_gap)
    if len(events) > max_events:
        return None
    # last index by which each event must have recovered; then one vectorised pass per event
    horizon = max(3, int(recover_within * n))
    starts, peaks, zs, ratios = [], [], [], []
    settled = 0  # index by which the previous spike's excursion was back near its baseline
    for ev in events:  # loops over events (at most max_events), never over steps
        i0 = int(ev[0])
        if i0 < settled:
            continue  # an aftershock inside the previous excursion, not a new spike
        b0 = float(base[i0])
        p = int(ev[np.argmax(x[ev])])
        level = b0 + recover_fraction * (float(x[p]) - b0)
        after = x[p + 1 : min(p + 1 + horizon, cut)]
        if not log_domain and b0 > 0 and len(after) and float(np.min(after)) > 0:
            # recovery of a positive loss is judged on the ratio scale (below the geometric
            # midpoint): 4e5 after a 9e5 jump from 19 is "half way back" only linearly
            if np.log(float(np.min(after))) > np.log(b0) + recover_fraction * np.log(x[p] / b0):
                continue
        elif len(after) == 0 or float(np.min(after)) > level:
            continue
        near = np.nonzero(after < b0 + thresh[i0])[0]
        settled = p + 1 + (int(near[0]) if len(near) else len(after))
        starts.append(i0)
        peaks.append(p)
        zs.append(float((x[p] - b0) / sigma[i0]) if sigma[i0] > 0 else float("inf"))
        if log_domain:
            ratios.append(float(np.exp(x[p] - b0)))
        else:
            ratios.append(float(x[p] / b0) if b0 > 0 and x[p] > 0 else float("nan"))
    if starts and grad_norm is not None and attribute_to_gradients:
        idx = np.asarray(starts)
        grad_jump = jump_ratios(grad_norm, steps[idx], window)
        if log_domain:
            loss_jump = np.exp(x[idx] - base[idx])
        else:
            loss_jump = x[idx] / base[idx] if bool(np.all(x > 0)) else np.full(len(idx), np.inf)
        keep = ~(grad_jump > loss_jump)
        starts = [s_ for s_, k in zip(starts, keep, strict=True) if k]
        peaks = [p_ for p_, k in zip(peaks, keep, strict=True) if k]
        zs = [z_ for z_, k in zip(zs, keep, strict=True) if k]
        ratios = [r_ for r_, k in zip(ratios, keep, strict=True) if k]
    if not starts:
        return None
    st = np.asarray(starts)
    big = int(np.argmax(np.asarray(x[peaks])))
    pk = peaks[big]
    unit = np.exp if log_domain else (lambda v: v)
    return Evidence(
        start_step=int(steps[st[0]]),
        end_step=int(steps[st[-1]]),
        steps=listed(steps[st]),
        values={
            "count": len(starts),
            "first_step": int(steps[st[0]]),
            "max_step": int(steps[pk]),
            "max_value": float(raw[pk]),
            "max_baseline": float(unit(base[starts[big]])),
            "max_ratio": ratios[big],
            "max_z": zs[big],
            # in the log domain the threshold and noise are in natural-log units of the loss
            "threshold": float(thresh[starts[big]]),
            "noise_sigma": float(sigma[starts[big]]),
            "global_noise_sigma": global_sigma,
            "log_domain": log_domain,
        },
    )


def _diverged_from(train_loss: Series, grad_norm: Series | None) -> float:
    """First step from which the loss or the grad norm stays non-finite (divergence's territory:
    HF's Trainer logs a diverged loss as finite values, so "spikes" there would recover to 0)."""
    out = float("inf")
    for s in (train_loss, grad_norm):
        i = persistent_nonfinite(s, start_points=0, max_skipped_run=10, end_points=3)
        if i is not None:
            out = min(out, float(np.asarray(s.steps)[i]))
    return out


def jump_ratios(series: Series | None, at_steps: np.ndarray, window: int) -> np.ndarray:
    """For each step in ``at_steps``: the value logged there over the median of the ``window``
    points before it (NaN where the series has no point at that step or is not positive)."""
    out = np.full(len(at_steps), np.nan)
    if series is None:
        return out
    s, v = finite_part(series)
    if len(v) < 4 or not bool(np.all(v > 0)):
        return out
    base = trailing_median(v, odd_window(len(v), window, fraction=0.25, minimum=5))
    j = np.clip(np.searchsorted(s, at_steps), 0, len(s) - 1)
    hit = s[j] == at_steps
    out[hit] = v[j][hit] / base[j][hit]
    return out


def _positive_log(series: Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    steps, g = finite_part(series)
    ok = g > 0
    return steps[ok], g[ok], np.log(g[ok])


@screened_by(BurstScreen)
@param_ranges(baseline_window=">=1", ratio_over_baseline=">0", z_threshold=">0", min_bursts=">=1",
              skip_start_points=">=0", max_skipped_run=">=0", end_points=">=1", max_skip_fraction="0..1",
              min_points=">=0", min_ratio_averaged=">=1")
def gradient_bursts(
    grad_norm: Series,
    train_loss: Series | None = None,
    layer_grad_norm: SeriesFamily | None = None,
    *,
    baseline_window: int = 51,
    ratio_over_baseline: float = 10.0,
    z_threshold: float = 6.0,
    min_bursts: int = 1,
    attribute_to_loss: bool = True,
    skip_start_points: int = 25,
    max_skipped_run: int = 10,
    end_points: int = 3,
    max_skip_fraction: float = 0.01,
    min_points: int = 12,
    min_ratio_averaged: float = 1.25,
) -> Evidence | None:
    """Gradient-norm bursts far above its robust baseline, or NaN/inf gradient norms.

    Non-finite grad norms that persist (to the last ``end_points`` points, or a run of more than
    ``max_skipped_run``; see :func:`lrdoctor.detectors.divergence.persistent_nonfinite`) fire at
    the rule's severity. Isolated ones are steps a mixed-precision GradScaler skipped: those in
    the first ``skip_start_points`` points (it backs its initial scale off) are ignored; later
    ones are reported as info (at most ``max_skip_fraction`` of the run) or warning, unless
    finite bursts are found too (those are reported, with the skips in evidence).

    The baseline of each point is the median of the ``baseline_window`` points before it (so a
    burst cannot hide in its own baseline, and the large norms at the start of training are the
    baseline of what follows, not bursts). A burst is a point at least ``ratio_over_baseline`` x
    its baseline and ``z_threshold`` robust standard deviations above it in log space (gradient
    norms are positive and span orders of magnitude). Fires on ``min_bursts`` bursts or more;
    every burst step is listed. With ``attribute_to_loss``, a burst at a step where the train loss
    jumped by a larger factor (over its own trailing median) than the gradient norm did is the
    gradient of a bad batch -- a loss spike, reported by loss-spike -- and is not counted: a bad
    batch moves the loss more than the gradient, an exploding gradient the other way round.

    Epoch means (``grad_norm.averages`` = k steps per point, :mod:`lrdoctor.averaging`): a one-step
    burst of ``ratio_over_baseline`` shows as 1 + (ratio - 1) / k in its epoch's mean (15x in a
    20-step epoch: 1.7x), so that is the ratio asked for, never below ``min_ratio_averaged`` (a
    smaller excess of a mean is within its ordinary drift); the z test is unchanged (the means'
    own, smaller, noise). A mean also holds the steps after a bad batch, so there a burst in the
    point after one whose loss jumped (by the burst ratio at least) more than its grad norm did is
    that batch's aftermath, counted with the loss spike.

    With per-layer norms (``layer_grad_norm``) the finding names the layer(s) that burst first:
    each layer's norm judged like the total, at or before the total's first burst and within one
    baseline window of it (:func:`lrdoctor.detectors.layers.first_bursting_layers`). Layers only
    name the source; whether the run has bursts is decided on the total norm.
    """
    skips = None
    v = np.asarray(grad_norm.values, dtype=np.float64)
    bad = ~np.isfinite(v)
    if bad.any():
        all_steps = np.asarray(grad_norm.steps, dtype=np.int64)
        from_i = persistent_nonfinite(grad_norm, start_points=skip_start_points,
                                      max_skipped_run=max_skipped_run, end_points=end_points)
        if from_i is not None:
            bad_steps = all_steps[bad]
            bad_steps = bad_steps[bad_steps >= all_steps[from_i]]
            return Evidence(
                start_step=int(bad_steps[0]),
                end_step=int(bad_steps[-1]),
                steps=listed(bad_steps),
                values={
                    "kind": "nonfinite",
                    "count": int(len(bad_steps)),
                    "first_step": int(bad_steps[0]),
                    "max_ratio": float("inf"),
                    "max_value": float("nan"),
                    "max_step": int(bad_steps[0]),
                    "baseline": float("nan"),
                    "detail": (
                        f"grad norm is {value_word(v[bad][-len(bad_steps):])} from {{axis}} {int(bad_steps[0])} on "
                        f"({nonfinite_counts(v[bad][-len(bad_steps):])}) and does not recover"
                    ),
                },
            )
        # skipped steps (mixed precision): the first ones are the GradScaler settling, not news
        later = np.nonzero(bad)[0]
        later = later[later >= skip_start_points]
        if len(later):
            share = len(later) / len(v)
            skips = Evidence(
                start_step=int(all_steps[later[0]]),
                end_step=int(all_steps[later[-1]]),
                steps=listed(all_steps[later]),
                values={
                    "kind": "skipped_steps",
                    "count": int(len(later)),
                    "share": share,
                    "first_step": int(all_steps[later[0]]),
                    "detail": (
                        f"grad norm is non-finite at {len(later)} isolated point(s) ({nonfinite_counts(v[later])}, "
                        f"{share:.1%} of the run) from {{axis}} {int(all_steps[later[0]])} while training goes on: "
                        "steps a mixed-precision GradScaler skipped? Frequent overflows waste steps"
                    ),
                },
                severity="info" if share <= max_skip_fraction else "warning",
            )
    steps, g, lg = _positive_log(grad_norm)
    n = len(g)
    if n < min_points:
        return skips
    w = odd_window(n, baseline_window, fraction=0.25, minimum=5)
    base = trailing_median(lg, w)
    resid = lg - base
    resid[: min(3, n)] = np.nan  # no baseline yet
    finite_resid = resid[np.isfinite(resid)]
    # robust spread of the log-residuals, from the typical points only
    spread = MAD_TO_SIGMA * median_of(np.abs(finite_resid - median_of(finite_resid)))
    k = max(float(grad_norm.averages), 1.0)
    ratio = max(1.0 + (ratio_over_baseline - 1.0) / k, min(min_ratio_averaged, ratio_over_baseline))
    thresh = max(float(np.log(ratio)), z_threshold * spread)
    burst = np.nonzero(np.nan_to_num(resid, nan=-np.inf) > thresh)[0]
    if len(burst) and train_loss is not None and attribute_to_loss:
        loss_jump = jump_ratios(train_loss, steps[burst], baseline_window)
        keep = ~(loss_jump >= np.exp(resid[burst]))
        if k > 1:
            # an epoch mean also holds the steps after a bad batch: a burst in the point after one
            # whose loss jumped (past the burst ratio) more than its grad norm is that aftermath
            prev = np.maximum(burst - 1, 0)
            prev_loss = jump_ratios(train_loss, steps[prev], baseline_window)
            keep &= ~((burst > 0) & (prev_loss >= np.exp(thresh)) & (prev_loss >= np.exp(resid[prev])))
        burst = burst[keep]
    if len(burst) < min_bursts:
        return skips
    worst = int(burst[np.argmax(resid[burst])])
    values = {
        "kind": "bursts",
        "count": int(len(burst)),
        "first_step": int(steps[burst[0]]),
        "max_step": int(steps[worst]),
        "max_value": float(g[worst]),
        "baseline": float(np.exp(base[worst])),
        "max_ratio": float(np.exp(resid[worst])),
        "ratio_threshold": float(np.exp(thresh)),
        "detail": (
            f"{len(burst)} grad-norm burst(s), the worst {float(g[worst]):.4g} at {{axis}} "
            f"{int(steps[worst])} ({times(float(np.exp(resid[worst])), 0)} its baseline "
            f"{float(np.exp(base[worst])):.3g})"
            + (f"; each point is the mean of ~{k:.0f} steps, so a {ratio_over_baseline:g}x one-step burst "
               f"shows as {ratio:.2g}x" if k > 1 else "")
        ),
        "steps_per_point": k,
    }
    if skips is not None:
        values["skipped_steps"] = skips.values["count"]
    first = None if layer_grad_norm is None else first_bursting_layers(
        layer_grad_norm, int(steps[burst[0]]), baseline_window=baseline_window,
        ratio_over_baseline=ratio, z_threshold=z_threshold)  # the ratio the total was judged by
    if first is not None:
        values.update(first)
        named = ", ".join(f"{n} ({times(r, 0)} its baseline {first['layer_baselines'][n]:.3g})"
                          for n, r in first["layer_ratios"].items())
        values["detail"] += (f"; the first burst began in {named} at {{axis}} {first['layer_onset_step']}"
                             f" ({first['layers_bursting']} of {first['layers']} layers burst there)")
    if train_loss is not None and len(train_loss):
        ls, lv = finite_part(train_loss)
        if len(ls):
            j = min(int(np.searchsorted(ls, steps[worst])), len(ls) - 1)
            values["loss_at_max"] = float(lv[j])
    return Evidence(
        start_step=int(steps[burst[0]]),
        end_step=int(steps[burst[-1]]),
        steps=listed(steps[burst]),
        values=values,
    )
