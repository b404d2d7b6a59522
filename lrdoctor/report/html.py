"""The HTML report: one jinja2 Environment (autoescaped), one self-contained page.

Everything that came from a log (run names, tags, hparams, messages, evidence) reaches the page
only through autoescaped template variables; figures are base64 data URIs in ``<img>``; a
Content-Security-Policy allows no network at all and only the page's own nonce-tagged scripts.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import secrets
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..model import Diagnosis, Verdict
from .data import RunView, build_run_view, short
from .plots import OverlaySpec, VerifySpec, render_all
from .sweep import comparable_key, lr_sweep, run_lr
from .verdicts import RunVerdicts, as_entries, match_verdicts

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"


def fmt_num(x: Any, digits: int = 4) -> str:
    if x is None:
        return "—"
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    try:
        f = float(x)
    except (TypeError, ValueError):
        return short(x, 80)
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    if f != 0 and (abs(f) < 1e-3 or abs(f) >= 1e6):
        return f"{f:.{max(1, digits - 2)}e}"
    return f"{f:.{digits}g}"


def fmt_value(x: Any) -> str:
    """Evidence and statistics values: numbers compact, short lists inline, the rest truncated."""
    if isinstance(x, (list, tuple, np.ndarray)):
        items = list(x)
        shown = ", ".join(fmt_value(v) for v in items[:8])
        return f"[{shown}{', …' if len(items) > 8 else ''}]" + (f" ({len(items)} items)" if len(items) > 8 else "")
    if isinstance(x, (int, float, np.integer, np.floating)) or x is None:
        return fmt_num(x)
    return short(x, 160)


def fmt_steps(steps: Sequence[int], limit: int = 12) -> str:
    steps = list(steps)
    text = ", ".join(f"{int(s):,}" for s in steps[:limit])
    return text + (f", … ({len(steps)} in all)" if len(steps) > limit else "")


def fmt_lr(x: Any) -> str:
    return "—" if x is None else f"{float(x):.3g}"


def pretty_json(x: Any) -> str:
    # a ConfigPatch (any Mapping that is not a dict) as its JSON form, anything else as text
    return json.dumps(x, indent=2, sort_keys=False, default=lambda o: dict(o) if isinstance(o, Mapping) else str(o))


@lru_cache(maxsize=1)
def environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,  # every template, whatever its extension: log text is never trusted
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(num=fmt_num, lr=fmt_lr, value=fmt_value, steps=fmt_steps, pretty_json=pretty_json)
    return env


def _verify_spec(v: Verdict, step_axis: str) -> VerifySpec | None:
    """Baseline/candidate curves per seed, from the verdict's typed record (None: none recorded)."""
    c = v.curves
    if c is None or not (c.baseline or c.candidate):
        return None

    def arm(curves) -> tuple:
        return tuple((s.seed, np.asarray(s.steps, dtype=np.float64), np.asarray(s.values, dtype=np.float64))
                     for s in curves)

    return VerifySpec(f"{v.rule} · {v.proposal_id}", step_axis, c.metric, arm(c.baseline), arm(c.candidate))


def _verdict_stats(v: Verdict) -> list[tuple[str, str]]:
    rows = [("seeds", f"{len(v.seeds)} ({', '.join(str(s) for s in v.seeds)})"), ("p-value", fmt_num(v.p_value)),
            ("CI", "—" if v.ci is None else f"[{fmt_num(v.ci[0])}, {fmt_num(v.ci[1])}]"),
            ("P(candidate better)", fmt_num(v.p_better))]
    for k, x in (v.details or {}).items():
        if isinstance(x, (int, float, str, bool, np.number)) or x is None:
            rows.append((str(k), fmt_value(x)))
        elif isinstance(x, (list, tuple)) and len(x) <= 16 and all(isinstance(i, (int, float)) for i in x):
            rows.append((str(k), fmt_value(x)))
    return rows


def render_report(
    diagnoses: Sequence[Diagnosis],
    *,
    verdicts: Mapping[str, list[Verdict]] | Sequence[RunVerdicts] | None = None,
    title: str | None = None,
    source_path: str | None = None,
    max_points: int = 1000,
    max_figures: int = 100,
    figure_format: str = "png",
    workers: int = 1,
    not_read: Sequence[Exception] = (),
) -> str:
    """The report as one self-contained HTML string.

    ``verdicts`` maps a run's name (or source path) to its verdicts, or is the entries of
    :func:`~lrdoctor.report.verdicts.read_verdicts`; None means verification was not run and the
    page says so. Entries that match no run (by source path, else name) are logged and named on
    the page; ``source_path`` (the PATH the runs came from) makes that message say where. Runs are shown worst first; only the first ``max_figures`` get
    learning-curve figures (drawing is ~0.2 s a run), the rest keep their table row and findings.
    ``workers > 1`` draws figures in a process pool when there are many (call it under an
    ``if __name__ == "__main__":`` guard: the workers start by forkserver and import ``__main__``).
    ``not_read`` are the errors of the runs under the path that were not read or left out (the
    second list of :func:`~lrdoctor.readers.discover_with_errors`): listed on the page with why.
    """
    if figure_format not in ("png", "svg"):
        raise ValueError(f"figure_format must be 'png' or 'svg', not {figure_format!r}")
    matched: dict[int, tuple[Verdict, ...]] = {}
    unmatched: list[str] = []
    if verdicts is not None:
        matched, missed = match_verdicts([d.run for d in diagnoses], as_entries(verdicts))
        where = source_path or "the report's path"
        for e in missed:
            log.warning("verdicts for run %s match no run under %s", e.name, where)
            unmatched.append(e.name + (f" ({e.source})" if e.source and e.source != e.name else ""))
    order = sorted(range(len(diagnoses)), key=lambda i: (-_rank(diagnoses[i]), diagnoses[i].run.name))
    views: list[RunView] = []
    for pos, i in enumerate(order):
        views.append(build_run_view(i, diagnoses[i], matched.get(i), max_points=max_points,
                                    with_figure=pos < max_figures))

    jobs: list[tuple[str, object]] = []
    slots: list[tuple[str, str]] = []  # (owner key, slot name) per job
    sweep = lr_sweep(views) if len(views) > 1 else None
    overlay_count = 0
    if len(views) > 1:
        if sweep is not None:
            jobs.append(("lr", sweep))
            slots.append(("index", "lr"))
        # Overlay only runs of one task: losses of different models on one axis say nothing.
        groups: dict[tuple, list[RunView]] = {}
        for v in views:
            groups.setdefault(comparable_key(v), []).append(v)
        group = max(groups.values(), key=len)
        runs = tuple((v.run.name, run_lr(v.run), *v.overlay) for v in group)
        if len(group) > 1 and any(r[2] is not None or r[3] is not None for r in runs):
            jobs.append(("overlay", OverlaySpec(group[0].run.step_axis, runs)))
            slots.append(("index", "overlay"))
            overlay_count = len(group)
    verify_rows: dict[str, list[dict[str, Any]]] = {}
    for v in views:
        if v.figure is not None:
            jobs.append(("run", v.figure))
            slots.append((v.key, "curves"))
        rows = []
        for k, verdict in enumerate(v.verdicts or ()):
            spec = _verify_spec(verdict, v.run.step_axis)
            slot = f"verify-{k}"
            if spec is not None:
                jobs.append(("verify", spec))
                slots.append((v.key, slot))
            rows.append({"verdict": verdict, "stats": _verdict_stats(verdict), "slot": slot})
        verify_rows[v.key] = rows
    # Sharp on high-density screens while the page is small; 1x past that to bound size and time.
    dpi = 150 if len(jobs) <= 24 else 100
    figures: dict[str, dict[str, str]] = {}
    for (owner, slot), uri in zip(slots, render_all(jobs, fmt=figure_format, dpi=dpi, workers=workers), strict=True):
        figures.setdefault(owner, {})[slot] = uri

    totals = {s: sum(v.counts[s] for v in views) for s in ("error", "warning", "info")}
    page = environment().get_template("report.html.j2").render(
        title=title or _default_title(diagnoses),
        views=views,
        figures=figures,
        verify_rows=verify_rows,
        verification_run=verdicts is not None,
        verified_runs=sum(1 for v in views if v.verdicts is not None),
        unmatched_verdicts=unmatched,
        not_read=[_not_read_row(e) for e in not_read],
        source_path=source_path,
        sweep=sweep,
        overlay_count=overlay_count,
        lr_of={v.key: run_lr(v.run) for v in views},
        totals=totals,
        healthy=sum(1 for v in views if not v.diagnosis.findings),
        max_figures=max_figures,
        nonce=secrets.token_urlsafe(16),
        version=__version__,
        generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )
    return page


def write_report(
    diagnoses: Sequence[Diagnosis],
    path: str | os.PathLike,
    *,
    verdicts: Mapping[str, list[Verdict]] | Sequence[RunVerdicts] | None = None,
    title: str | None = None,
    **kwargs: Any,
) -> Path:
    """Render and write the report atomically (a ``.html.tmp`` beside it, then rename)."""
    html = render_report(diagnoses, verdicts=verdicts, title=title, **kwargs)
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp") if path.suffix != ".html" else path.with_suffix(".html.tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, path)
    log.info("wrote %s (%.1f MB)", path, len(html) / 1e6)
    return path


def _not_read_row(exc: Exception) -> dict[str, str]:
    """One line of the page's list of what under the path is not in the report, and why."""
    from ..errors import EmptyRunError, LeftOut

    status = "left out" if isinstance(exc, EmptyRunError) else "not read" if isinstance(exc, LeftOut) else "error"
    where = str(getattr(exc, "path", None) or "")
    if where and getattr(exc, "location", None):
        where += f" ({exc.location})"  # type: ignore[attr-defined]
    return {"status": status, "where": where, "why": getattr(exc, "message", None) or str(exc)}


def _rank(d: Diagnosis) -> int:
    return 0 if d.worst is None else d.worst.rank + 1


def _default_title(diagnoses: Sequence[Diagnosis]) -> str:
    if len(diagnoses) == 1:
        return f"lrdoctor report: {diagnoses[0].run.name}"
    return f"lrdoctor report: {len(diagnoses)} runs"
