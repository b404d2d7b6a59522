"""Figures as explicit matplotlib ``Figure`` objects (never pyplot), inlined as data URIs.

No global state is touched (no pyplot, no rcParams), so figures render safely in worker processes
and several reports can be built at once. Figures go into ``<img src="data:...">``: an image
element never runs script, whatever text a log put into an SVG.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..downsample import downsample
from .data import ROLE_STYLE, SEVERITY_COLOR, Curve, RunFigureSpec
from .figstyle import (
    MUTED,
    PALETTE,
    new_figure,
    real_value_formatter,
    style_axes,
    tick_label,
    to_data_uri,
    use_log_y,
    wants_log,
)
from .sweep import LrSweep

log = logging.getLogger(__name__)

MAX_MARKERS = 120
#: Below this many figures a process pool's start-up (importing matplotlib) costs more than it saves.
PARALLEL_MIN_FIGURES = 16

def _nonfinite_markers(ax, steps: np.ndarray, values: np.ndarray, color: str, label: str | None) -> bool:
    """Mark NaN/+inf at the top edge and -inf at the bottom edge: a line would just stop there.

    Each stretch of consecutive non-finite points gets one × at its start and a bar along its
    extent, so a run that stays NaN for 10,000 steps reads as one event, not a smear of markers.
    """
    if label is not None and label in ax.get_legend_handles_labels()[1]:
        label = None
    trans = ax.get_xaxis_transform()
    top = np.isnan(values) | (values == np.inf)
    bottom = values == -np.inf
    for mask, y in ((top, 0.97), (bottom, 0.03)):
        if not mask.any():
            continue
        idx = np.flatnonzero(mask)
        breaks = np.diff(idx) > 1
        starts, ends = idx[np.r_[True, breaks]], idx[np.r_[breaks, True]]
        ax.scatter(steps[starts], np.full(len(starts), y), transform=trans, marker="x", s=24, color=color,
                   linewidths=1.4, zorder=6, label=label, clip_on=False)
        long = ends > starts
        if long.any():
            ax.hlines(np.full(long.sum(), y), steps[starts[long]], steps[ends[long]], transform=trans,
                      colors=color, linewidths=2.5, alpha=0.45, zorder=6, clip_on=False)
        label = None
    return bool(top.any() or bottom.any())


def _plot_curve(ax, c: Curve, color: str | None = None, label: str | None = None, **kw) -> None:
    color = color or ROLE_STYLE[c.role][1]
    finite = np.isfinite(c.values)
    ax.plot(c.steps[finite], c.values[finite], color=color, linewidth=kw.pop("linewidth", 1.3),
            label=label or f"{ROLE_STYLE[c.role][0]} ({c.tag})", **kw)
    if not finite.all():
        _nonfinite_markers(ax, c.steps, c.values, "#dc2626", "NaN / inf")


def _marker_values(c: Curve, steps: np.ndarray) -> np.ndarray:
    """The curve's value at each flagged step; NaN where the curve itself is non-finite there
    (the NaN bar already marks those steps, a circle interpolated from elsewhere would mislead)."""
    finite = np.isfinite(c.values)
    if finite.sum() == 0:
        return np.full(len(steps), np.nan)
    out = np.interp(steps, c.steps[finite], c.values[finite])
    nearest = np.clip(np.searchsorted(c.steps, steps), 0, len(c.steps) - 1)
    out[~finite[nearest]] = np.nan
    return out


def _label_point(ax, x: float, y: float, text: str, color: str, ha: str = "center") -> None:
    if np.isfinite(y):
        ax.annotate(text, xy=(x, y), xytext=(-4 if ha == "right" else 0, 7 if ha == "center" else -3),
                    textcoords="offset points", ha=ha, va="bottom" if ha == "center" else "top",
                    fontsize=7.5, color=color, fontweight="bold", zorder=7,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})


def _draw_marks(axes: dict, spec: RunFigureSpec, curves: dict[str, Curve], xmax: float) -> None:
    first = next(iter(axes.values()))
    # "val_loss" is a twin of the loss panel when present: its x span is already shaded there.
    span_axes = [a for k, a in axes.items() if k != "val_loss"]
    for m in spec.marks:
        color = SEVERITY_COLOR.get(m.severity, MUTED)
        start = m.start if m.start is not None else (min(m.steps) if m.steps else None)
        end = m.end if m.end is not None else (max(m.steps) if m.steps else xmax)
        if start is not None:
            for ax in span_axes:
                if end > start:
                    ax.axvspan(start, end, color=color, alpha=0.10, linewidth=0, zorder=0)
                else:
                    ax.axvline(start, color=color, alpha=0.5, linewidth=1, zorder=0)
            first.annotate(str(m.number), xy=(start, 1.0), xycoords=first.get_xaxis_transform(),
                           xytext=(2, -2), textcoords="offset points", va="top", ha="left", fontsize=8,
                           fontweight="bold", color="white",
                           bbox={"boxstyle": "round,pad=0.25", "fc": color, "ec": "none"})
        if m.steps and m.role in curves:
            steps = np.asarray(m.steps, dtype=np.float64)
            if len(steps) > MAX_MARKERS:
                steps = steps[np.linspace(0, len(steps) - 1, MAX_MARKERS).astype(int)]
            ax = axes.get(m.role) or (axes.get("loss") if m.role in ("train_loss", "val_loss") else None)
            if ax is not None:
                ys = _marker_values(curves[m.role], steps)
                ax.scatter(steps, ys, s=26, facecolor="white", edgecolor=color, linewidths=1.4, zorder=5)
                if m.style == "best-and-latest" and len(steps) <= 3:
                    # Best and latest val loss with their values: the rise is the finding, and on a
                    # panel scaled for the train loss it can look flat.
                    c = curves[m.role]
                    for x, y in zip(steps, ys, strict=True):
                        _label_point(ax, x, y, f"best {tick_label(float(y), 3)}", color)
                    fin = np.flatnonzero(np.isfinite(c.values))
                    if len(fin) and c.steps[fin[-1]] not in steps:
                        x, y = c.steps[fin[-1]], c.values[fin[-1]]
                        ax.scatter([x], [y], s=26, facecolor="white", edgecolor=color, linewidths=1.4, zorder=5)
                        _label_point(ax, x, y, f"latest {tick_label(float(y), 3)}", color, ha="right")


def _squashed(part: np.ndarray, whole: np.ndarray) -> bool:
    """Whether ``part`` fills under a fifth of a log axis scaled for ``whole`` (decades), e.g.
    a val loss rising 0.72 -> 1.07 beside a train loss falling to 1e-4: it would read as flat."""
    p, w = part[np.isfinite(part) & (part > 0)], whole[np.isfinite(whole) & (whole > 0)]
    if len(p) < 2 or len(w) < 2:
        return False
    return math.log10(p.max() / p.min()) < 0.2 * math.log10(w.max() / w.min())


def _val_twin(ax, c: Curve):
    """The val loss on its own linear right-hand axis, ticks in its colour."""
    color = ROLE_STYLE[c.role][1]
    tax = ax.twinx()
    _plot_curve(tax, c, marker="o" if c.n_points <= 60 else None, markersize=3,
                label=f"{ROLE_STYLE[c.role][0]} ({c.tag}), right axis")
    tax.yaxis.set_major_formatter(real_value_formatter())
    tax.tick_params(labelsize=8, colors=color)
    for side in ("top", "left", "bottom"):
        tax.spines[side].set_visible(False)
    tax.spines["right"].set_color(color)
    tax.set_ylabel("val loss", fontsize=8.5, color=color)
    return tax


def run_figure(spec: RunFigureSpec):
    """Loss (train + val) across the top; val metric, grad norm and LR side by side below."""
    curves = {c.role: c for c in spec.curves}
    lower = [r for r in ("val_metric", "grad_norm", "lr") if r in curves]
    has_loss = "train_loss" in curves or "val_loss" in curves
    ncols = max(1, len(lower))
    rows = int(has_loss) + int(bool(lower))
    fig = new_figure(10, 3.1 * int(has_loss) + 2.5 * int(bool(lower)) + 0.2)
    heights = [3.1] * int(has_loss) + [2.5] * int(bool(lower))
    values = twin = log_y = None
    if has_loss:
        values = np.concatenate([curves[r].values for r in ("train_loss", "val_loss") if r in curves])
        log_y = wants_log(values)
        twin = log_y and "train_loss" in curves and "val_loss" in curves and _squashed(curves["val_loss"].values, values)
    gs = fig.add_gridspec(rows, ncols, height_ratios=heights, left=0.07, right=0.94 if twin else 0.985, top=0.93 if rows == 1 else 0.95,
                          bottom=0.17 if rows == 1 else 0.09, hspace=0.42, wspace=0.26)
    axes: dict = {}
    xlabel = spec.step_axis
    if has_loss:
        ax = fig.add_subplot(gs[0, :])
        axes["loss"] = ax
        for r in ("train_loss", "val_loss"):
            if r in curves and not (twin and r == "val_loss"):
                _plot_curve(ax, curves[r], marker="o" if curves[r].n_points <= 60 else None, markersize=3)
        if log_y:
            use_log_y(ax)
        title = "Loss" + (" (log scale)" if log_y else "")
        if twin:
            title = "Loss (train: log scale, left axis; val: linear, right axis)"
        style_axes(ax, title, xlabel if not lower else None, "train loss" if twin else "loss")
        handles, labels = ax.get_legend_handles_labels()
        if twin:
            axes["val_loss"] = _val_twin(ax, curves["val_loss"])
            h2, l2 = axes["val_loss"].get_legend_handles_labels()
            handles, labels = handles + h2, labels + l2
        # Above the axes, right of the title: never over the curves or the NaN bars.
        ax.legend(handles, labels, fontsize=8, frameon=False, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=4,
                  borderaxespad=0.1, handlelength=1.5, columnspacing=1.2)
    from matplotlib.ticker import MaxNLocator

    for i, r in enumerate(lower):
        ax = fig.add_subplot(gs[rows - 1, i])
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5 if len(lower) > 1 else 8, integer=True))
        axes[r] = ax
        _plot_curve(ax, curves[r], marker="o" if curves[r].n_points <= 60 else None, markersize=3)
        log_y = wants_log(curves[r].values)
        if log_y:
            use_log_y(ax)
        style_axes(ax, ROLE_STYLE[r][0].capitalize() + (" (log)" if log_y else ""), xlabel, curves[r].tag[:40])
    xmin = min(float(c.steps.min()) for c in spec.curves if len(c.steps))
    xmax = max(float(c.steps.max()) for c in spec.curves if len(c.steps))
    _draw_marks(axes, spec, curves, xmax)
    pad = (xmax - xmin) * 0.02 or 1.0
    for ax in axes.values():  # one x range for every panel, so a span lines up across them
        ax.set_xlim(xmin - pad, xmax + pad)
    return fig


@dataclass(frozen=True)
class OverlaySpec:
    step_axis: str
    runs: tuple[tuple[str, float | None, Curve | None, Curve | None], ...]  # name, lr, train, val


def overlay_figure(spec: OverlaySpec):
    """Train and val loss of every run on shared axes: one LineCollection per panel, so a
    1,000-run sweep draws as fast as a handful of runs."""
    from matplotlib.collections import LineCollection

    roles = [(2, "train loss"), (3, "val loss")]
    roles = [(i, label) for i, label in roles if any(r[i] is not None for r in spec.runs)]
    fig = new_figure(10, 3.6)
    if not roles:
        return fig
    lrs = [r[1] for r in spec.runs if r[1] is not None]
    by_lr = len(set(lrs)) >= 2 and len(lrs) == len(spec.runs)
    cmap = norm = None
    if by_lr:
        import matplotlib.colors as mcolors
        from matplotlib import colormaps

        cmap = colormaps["viridis"]
        norm = mcolors.LogNorm(vmin=min(lrs), vmax=max(lrs))
    many = len(spec.runs) > 12
    if by_lr:
        run_colors = [tuple(c) for c in cmap(norm(np.array([r[1] for r in spec.runs], dtype=float)))]
    else:
        run_colors = [PALETTE[k % len(PALETTE)] for k in range(len(spec.runs))]
    gs = fig.add_gridspec(1, len(roles), left=0.07, right=0.9 if by_lr else 0.985, top=0.9, bottom=0.15, wspace=0.22)
    for j, (i, label) in enumerate(roles):
        ax = fig.add_subplot(gs[0, j])
        segments, colors, values, bad_x, bad_c = [], [], [], [], []
        for k, run in enumerate(spec.runs):
            c = run[i]
            if c is None:
                continue
            color = run_colors[k]
            finite = np.isfinite(c.values)
            if finite.any():
                segments.append(np.column_stack([c.steps[finite], c.values[finite]]))
                colors.append(color)
                values.append(c.values[finite])
            if not finite.all():  # first non-finite point of the run: where it broke
                bad_x.append(c.steps[np.argmax(~finite)])
                bad_c.append(color)
        if segments:
            lc = LineCollection(segments, colors=colors, linewidths=0.8 if many else 1.3, alpha=0.55 if many else 0.9)
            ax.add_collection(lc)
            ax.autoscale_view()
        if bad_x:
            ax.scatter(bad_x, np.full(len(bad_x), 0.97), transform=ax.get_xaxis_transform(), marker="x", s=24,
                       color=bad_c, linewidths=1.4, zorder=6, clip_on=False)
        allv = np.concatenate(values) if values else np.array([])
        if wants_log(allv):
            use_log_y(ax)
        style_axes(ax, f"{label.capitalize()}, all runs", spec.step_axis, label)
        if not many and not by_lr:
            from matplotlib.lines import Line2D

            handles = [Line2D([], [], color=PALETTE[k % len(PALETTE)]) for k in range(len(spec.runs))]
            ax.legend(handles, [r[0][:40] for r in spec.runs], fontsize=7, frameon=False)
    if by_lr:
        from matplotlib.cm import ScalarMappable

        cax = fig.add_axes((0.915, 0.15, 0.015, 0.75))
        cb = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=cax)
        cb.set_label("learning rate", fontsize=8, color=MUTED)
        cb.ax.tick_params(labelsize=7)
    return fig


def lr_figure(sweep: LrSweep):
    fig = new_figure(10, 3.4)
    ax = fig.add_axes((0.07, 0.16, 0.9, 0.72))
    pts = sweep.points
    ys = np.array([p.loss if p.loss is not None else np.nan for p in pts], dtype=float)
    xs = np.array([p.lr for p in pts])
    stable = np.array([p.stable for p in pts])
    if sweep.stable_range is not None:
        lo, hi = sweep.stable_range
        ax.axvspan(lo / 1.3, hi * 1.3, color="#16a34a", alpha=0.10, linewidth=0, label="stable range")
    # Median per LR, over stable runs only: the line shows the trend the user tunes along.
    uniq = np.unique(xs[stable & np.isfinite(ys)])
    if len(uniq) > 1:
        med = [np.median(ys[(xs == u) & stable & np.isfinite(ys)]) for u in uniq]
        ax.plot(uniq, med, color="#9ca3af", linewidth=1, zorder=1)
    # A legend entry only for what is drawn: an empty scatter leaves a label with no marker.
    ok = stable & np.isfinite(ys)
    if ok.any():
        ax.scatter(xs[ok], ys[ok], s=30, color="#2563eb", zorder=3, label="stable")
    bad = ~stable & np.isfinite(ys)
    if bad.any():
        ax.scatter(xs[bad], ys[bad], s=40, marker="x", color="#dc2626", linewidths=1.5, zorder=3, label="unstable")
    nf = ~np.isfinite(ys)
    if nf.any():
        ax.scatter(xs[nf], np.full(nf.sum(), 0.97), transform=ax.get_xaxis_transform(), marker="x", s=40,
                   color="#dc2626", linewidths=1.5, zorder=3, clip_on=False, label="diverged (NaN/inf)")
    if sweep.best is not None:
        # Behind the run's own dot (and larger), so the best run still shows as a stable point.
        ax.scatter([sweep.best.lr], [sweep.best.loss], s=320, marker="*", color="#ca8a04", edgecolor="white",
                   zorder=2, label=f"best: lr={sweep.best.lr:.3g}")
    ax.set_xscale("log")
    from matplotlib.ticker import NullLocator

    ax.xaxis.set_minor_locator(NullLocator())
    if wants_log(ys):
        use_log_y(ax)
    style_axes(ax, f"{sweep.loss_label.capitalize()} vs learning rate", "learning rate", sweep.loss_label)
    ax.legend(fontsize=8, frameon=False, loc="best")
    return fig


@dataclass(frozen=True)
class VerifySpec:
    title: str
    step_axis: str
    metric: str
    # seed -> (steps, values) per arm
    baseline: tuple[tuple[int, np.ndarray, np.ndarray], ...]
    candidate: tuple[tuple[int, np.ndarray, np.ndarray], ...]


def verify_figure(spec: VerifySpec):
    seeds = sorted({s for s, _, _ in spec.baseline} | {s for s, _, _ in spec.candidate})[:6]
    n = max(1, len(seeds))
    fig = new_figure(10, 2.5)
    gs = fig.add_gridspec(1, n, left=0.06, right=0.99, top=0.82, bottom=0.2, wspace=0.25)
    base = {s: (x, y) for s, x, y in spec.baseline}
    cand = {s: (x, y) for s, x, y in spec.candidate}
    first = None
    for i, seed in enumerate(seeds):
        ax = fig.add_subplot(gs[0, i], sharey=first)
        first = first or ax
        values = []
        for arm, color, style, label in ((base, "#6b7280", "--", "baseline"), (cand, "#2563eb", "-", "candidate")):
            if seed in arm:
                x, y = arm[seed]
                x, y = downsample(np.asarray(x), np.asarray(y, dtype=float), 400)
                finite = np.isfinite(y)
                values.append(y[finite])
                # A rerun that broke after a few points is a dot or two, not a line: mark every point.
                few = int(finite.sum()) < 20
                ax.plot(x[finite], y[finite], style, color=color, linewidth=1.2, label=label,
                        marker="o" if few else None, markersize=3.5 if few else None)
                if not finite.all():
                    _nonfinite_markers(ax, x, y, "#dc2626", None)
        if i == 0 and values and wants_log(np.concatenate(values)):
            use_log_y(ax)
        style_axes(ax, f"seed {seed}", spec.step_axis, spec.metric if i == 0 else None)
        if i == 0:
            ax.legend(fontsize=7, frameon=False)
    return fig


# ---- rendering, optionally in worker processes -------------------------------------------------

_DRAW: dict[str, Callable] = {"run": run_figure, "overlay": overlay_figure, "lr": lr_figure, "verify": verify_figure}


def _render(job: tuple[str, object, str, int]) -> str:
    kind, spec, fmt, dpi = job
    return to_data_uri(_DRAW[kind](spec), fmt, dpi)


def render_all(jobs: Sequence[tuple[str, object]], *, fmt: str = "png", dpi: int = 100, workers: int = 1) -> list[str]:
    """Render ``(kind, spec)`` jobs to data URIs, in order; in a process pool when ``workers > 1``."""
    items = [(kind, spec, fmt, dpi) for kind, spec in jobs]
    if workers > 1 and len(items) >= max(PARALLEL_MIN_FIGURES, 2 * workers):
        import multiprocessing as mp

        try:
            ctx = mp.get_context("forkserver")
            ctx.set_forkserver_preload([__name__, "matplotlib.backends.backend_agg"])  # import once, fork workers
            with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                return list(pool.map(_render, items, chunksize=max(1, math.ceil(len(items) / (8 * workers)))))
        except (OSError, RuntimeError) as exc:  # e.g. no /dev/shm in a sandbox: draw here instead
            log.warning("figure workers unavailable (%s); drawing in this process", exc)
    return [_render(item) for item in items]
