"""Figure basics shared by every report figure: a bare Agg ``Figure``, data URIs, axis styling
and tick labels that write the real values (no matplotlib offset/scale corner text)."""

from __future__ import annotations

import base64
import io
import math

import numpy as np

INK, MUTED, GRID = "#1f2937", "#6b7280", "#e5e7eb"
PALETTE = ("#2563eb", "#ea580c", "#16a34a", "#7c3aed", "#0891b2", "#db2777", "#ca8a04", "#4b5563",
           "#0d9488", "#9333ea")


def new_figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), facecolor="white")
    FigureCanvasAgg(fig)
    return fig


def to_data_uri(fig, fmt: str = "png", dpi: int = 100) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi, facecolor="white", metadata={"Software": None} if fmt == "png" else {"Date": None})
    mime = "image/svg+xml" if fmt == "svg" else "image/png"
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def tick_label(x: float, sig: int) -> str:
    if x == 0:
        return "0"
    if float(x).is_integer() and abs(x) < 1e7:
        return f"{int(x):,}"
    text = f"{x:.{sig}g}"
    if "e" in text:  # 1e-06 -> 1e-6: shorter, and reads as the value it is
        mant, exp = text.split("e")
        text = f"{mant}e{int(exp)}"
    return text


def real_value_formatter():
    """Tick labels that write the values themselves, with just enough significant digits to
    tell neighbouring ticks apart. Matplotlib's default moves a shared scale or offset ("1e-6",
    "+1e5") into a corner text that collides with the panel title and leaves ticks reading
    0.96-1.04 for an LR of 1e-6."""
    from matplotlib.ticker import Formatter

    class RealValueFormatter(Formatter):
        sig = 3

        def set_locs(self, locs):
            super().set_locs(locs)
            locs = np.asarray([v for v in locs if np.isfinite(v)], dtype=float)
            if len(locs) < 2:
                self.sig = 3
                return
            step = np.min(np.diff(np.sort(locs)))
            big = np.max(np.abs(locs))
            if step <= 0 or big <= 0:
                self.sig = 3
                return
            self.sig = int(min(10, max(2, math.ceil(math.log10(big / step)) + 1)))

        def __call__(self, x, pos=None):
            return tick_label(float(x), self.sig)

    return RealValueFormatter()


def _real_ticks(ax) -> None:
    """Real-value labels on every linear axis (log axes already label with their values)."""
    if ax.get_xscale() == "linear":
        ax.xaxis.set_major_formatter(real_value_formatter())
    if ax.get_yscale() == "linear":
        ax.yaxis.set_major_formatter(real_value_formatter())


def style_axes(ax, title: str | None = None, xlabel: str | None = None, ylabel: str | None = None) -> None:
    _real_ticks(ax)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color("#9ca3af")
    ax.tick_params(labelsize=8, colors=MUTED)
    ax.grid(True, color=GRID, linewidth=0.6)
    ax.set_axisbelow(True)
    if title:
        # A fixed y skips matplotlib's title auto-placement, a third of the drawing time.
        ax.set_title(title, fontsize=10, color=INK, loc="left", fontweight="bold", y=1.0, pad=6)
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=8.5, color=MUTED)
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=8.5, color=MUTED)


def use_log_y(ax) -> None:
    """Log y without minor ticks: they add no reading value and cost 100+ tick objects per axis."""
    from matplotlib.ticker import LogLocator, NullLocator

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(numticks=6))
    ax.yaxis.set_minor_locator(NullLocator())


def wants_log(values: np.ndarray) -> bool:
    """Log scale helps when every value is positive and they span more than two decades."""
    v = values[np.isfinite(values)]
    return len(v) > 1 and bool(v.min() > 0) and v.max() / v.min() > 100
