"""Per-layer gradient norms (the ``layer_grad_norm`` family): which layers vanish, which burst first.

The total gradient norm is dominated by the layers with the largest gradients, usually the last
ones: a deep stack whose early layers get 1e-6 of the last layers' gradient shows a total norm
that looks normal. Per-layer norms (Lightning's ``grad_norm`` utility logs one per parameter)
show it directly. Parameters are grouped into layers (``net.3.weight`` and ``net.3.bias`` are
layer ``net.3``; their norms combine as the root sum of squares, exact for 2-norms, a size
otherwise), in the model order the family carries (:func:`lrdoctor.roles.model_order`).
"""

from __future__ import annotations

import functools
import re
import warnings
from dataclasses import dataclass

import numpy as np

from ..model import SeriesFamily
from .base import MAD_TO_SIGMA, odd_window, trailing_median

_PARAM_SUFFIX = re.compile(r"\.(weight|bias)$")


@dataclass(frozen=True)
class LayerNorms:
    """Layer norms aligned on the steps every member logged: ``values[i, j]`` is layer ``j`` at
    ``steps[i]``."""

    names: tuple[str, ...]
    steps: np.ndarray
    values: np.ndarray


def layer_norms(family: SeriesFamily) -> LayerNorms | None:
    """Group the family's parameters into layers and align them on their common steps (None when
    they share fewer than two steps)."""
    common = functools.reduce(np.intersect1d, [np.asarray(m.steps, dtype=np.int64) for m in family.members])
    if len(common) < 2:
        return None
    layers: dict[str, list[np.ndarray]] = {}
    for name, member in zip(family.names, family.members, strict=True):
        steps = np.asarray(member.steps, dtype=np.int64)
        vals = np.asarray(member.values, dtype=np.float64)[np.searchsorted(steps, common)]
        layers.setdefault(_PARAM_SUFFIX.sub("", name) or name, []).append(vals)
    names = tuple(layers)
    values = np.column_stack([np.sqrt(np.sum(np.square(np.column_stack(v)), axis=1)) for v in layers.values()])
    return LayerNorms(names, common, values)


def vanishing_layers(family: SeriesFamily, *, max_layer_ratio: float, early_layer_fraction: float,
                     edge_fraction: float, min_layers: int, min_points: int) -> dict | None:
    """How far the early layers' gradients sit below the late layers', over the stable part.

    ``None`` when the family cannot judge (fewer than ``min_layers`` layers with a gradient, or
    fewer than ``min_points`` steps after the first ``edge_fraction``): the caller then falls back
    to the total norm. Otherwise a dict whose ``vanishing`` says whether the median over steps of
    (largest norm among the first ``early_layer_fraction`` of the layers) / (largest among the
    last as many) is below ``max_layer_ratio``; the max on the early side means *every* early
    layer is that far below. Layers whose norm is 0 at every step (frozen, unused) are left out.
    """
    ln = layer_norms(family)
    if ln is None:
        return None
    skip = max(1, int(len(ln.steps) * edge_fraction))  # the initial transient is no "stable part"
    steps, v = ln.steps[skip:], ln.values[skip:]
    finite = np.all(np.isfinite(v), axis=1)
    steps, v = steps[finite], v[finite]
    alive = np.any(v > 0, axis=0)
    names = [n for n, a in zip(ln.names, alive, strict=True) if a]
    v = v[:, alive]
    if len(names) < min_layers or len(steps) < min_points:
        return None
    g = max(1, int(round(len(names) * early_layer_fraction)))
    late = v[:, -g:].max(axis=1)
    ok = late > 0
    steps, v, late = steps[ok], v[ok], late[ok]
    if len(steps) < min_points:
        return None
    ratio = v[:, :g].max(axis=1) / late
    med_ratio = float(np.median(ratio))
    med = np.median(v, axis=0)
    late_level = float(np.median(late))
    # the onset: from which step on the ratio stays below, judged from the run's first step
    with np.errstate(divide="ignore", invalid="ignore"):
        every = ln.values[:, alive]
        ratio_all = every[:, :g].max(axis=1) / every[:, -g:].max(axis=1)
    above = np.nonzero(~(ratio_all < max_layer_ratio))[0]
    onset = int(ln.steps[min(int(above[-1] + 1) if len(above) else 0, len(ln.steps) - 1)])
    low = [n for n, m in zip(names, med, strict=True) if m < max_layer_ratio * late_level]
    return {
        "vanishing": med_ratio < max_layer_ratio,
        "layer_ratio": med_ratio,
        "early_layers": names[:g],
        "late_layers": names[-g:],
        "vanishing_layers": low,
        "layer_norms": {n: float(m) for n, m in zip(names, med, strict=True)},
        "late_norm": late_level,
        "layers": len(names),
        "dead_layers": [n for n, a in zip(ln.names, alive, strict=True) if not a],
        "layer_order": family.order,
        "first_step": int(steps[0]),
        "last_step": int(steps[-1]),
        "onset_step": onset,
    }


def first_bursting_layers(family: SeriesFamily, until_step: int, *, baseline_window: int,
                          ratio_over_baseline: float, z_threshold: float, max_named: int = 3) -> dict | None:
    """The layer(s) whose own norm burst first, at or before ``until_step`` (the total norm's first
    burst) and within one baseline window of it; each layer judged as the total is (ratio over the
    median of the points before it, and robust z in log space). Ties at the first step are ranked
    by their ratio; at most ``max_named`` are named. None when no layer burst there."""
    ln = layer_norms(family)
    if ln is None:
        return None
    n = len(ln.steps)
    with np.errstate(divide="ignore", invalid="ignore"):
        lg = np.log(np.where(ln.values > 0, ln.values, np.nan))
    w = odd_window(n, baseline_window, fraction=0.25, minimum=5)
    base = np.column_stack([trailing_median(np.nan_to_num(lg[:, j], nan=-np.inf), w) for j in range(lg.shape[1])])
    resid = lg - base
    resid[: min(3, n)] = np.nan
    resid[~np.isfinite(resid)] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a layer with no finite residual: spread NaN -> 0
        spread = MAD_TO_SIGMA * np.nanmedian(np.abs(resid - np.nanmedian(resid, axis=0)), axis=0)
    thresh = np.maximum(np.log(ratio_over_baseline), z_threshold * np.nan_to_num(spread))
    last = int(np.searchsorted(ln.steps, until_step, side="right"))
    first = max(0, last - w)
    hit = np.nan_to_num(resid[first:last], nan=-np.inf) > thresh
    rows = np.nonzero(hit.any(axis=1))[0]
    if not len(rows):
        return None
    i = first + int(rows[0])
    cols = np.nonzero(hit[rows[0]])[0]
    cols = cols[np.argsort(-resid[i, cols])][:max_named]
    return {
        "first_layers": [ln.names[j] for j in cols],
        "layer_onset_step": int(ln.steps[i]),
        "layer_ratios": {ln.names[j]: float(np.exp(resid[i, j])) for j in cols},
        "layer_values": {ln.names[j]: float(ln.values[i, j]) for j in cols},
        "layer_baselines": {ln.names[j]: float(np.exp(base[i, j])) for j in cols},
        "layers_bursting": int(hit[rows[0]].sum()),
        "layers": len(ln.names),
    }
