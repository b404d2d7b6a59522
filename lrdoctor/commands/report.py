"""``lrdoctor report PATH -o report.html``: diagnose the runs under PATH and write one HTML page."""

from __future__ import annotations

import sys

import click

from .common import (
    load_runs,
    report_unreadable,
    role_overrides,
    rule_selection_options,
    run_input_options,
    selected_rules,
)


@click.command("report")
@run_input_options
@click.option("-o", "--output", "output", default="report.html", show_default=True,
              type=click.Path(dir_okay=False, writable=True), help="Where to write the HTML page.")
@click.option("--title", default=None, help="Page title (default: the run's name or the run count).")
@rule_selection_options
@click.option("--max-figures", type=click.IntRange(min=0), default=100, show_default=True,
              help="Draw learning curves for at most this many runs (the most severe first).")
@click.option("--max-points", type=click.IntRange(min=20), default=1000, show_default=True,
              help="Points per curve after min/max downsampling (spikes and NaNs always kept).")
@click.option("--figure-format", type=click.Choice(["png", "svg"]), default="png", show_default=True,
              help="PNG keeps large reports small; SVG stays sharp when zoomed.")
@click.option("--verdicts", "verdicts_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Include verification results: the JSON printed by 'lrdoctor verify --json'.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=None,
              help="Worker processes for diagnosing and drawing (default: all cores, at most 4 for drawing).")
def report_cmd(path, fmt, strict, roles, roles_config, output, title, rule_dirs, sets, select, ignore,
               max_figures, max_points, figure_format, verdicts_file, jobs) -> int:
    """Write a self-contained HTML report for the runs under PATH.

    One page, no network needed to view it: per run the learning curves with each finding drawn
    on them, the proposed fixes with copyable code, and for a sweep a sortable table, overlaid
    curves and loss against learning rate.
    """
    from ..engine.diagnose import diagnose_runs
    from ..report import write_report

    verdicts = None
    if verdicts_file:
        from ..report.verdicts import read_verdicts

        verdicts = read_verdicts(verdicts_file)  # before the slow part: a bad file fails fast
    rules = selected_rules(rule_dirs, sets, select, ignore)
    overrides = role_overrides(roles, roles_config)
    runs, errors = load_runs(path, fmt, strict, progress=False)
    diagnoses = diagnose_runs(runs, rules=rules, role_overrides=overrides, jobs=jobs,
                              progress=sys.stderr.isatty())
    import os

    workers = min(4, jobs or os.cpu_count() or 1)
    out = write_report(diagnoses, output, verdicts=verdicts, title=title, source_path=str(path), max_figures=max_figures, max_points=max_points,
                       figure_format=figure_format, workers=workers, not_read=errors)
    n = len(diagnoses)
    click.echo(f"wrote {out} ({n} run{'' if n == 1 else 's'}, {out.stat().st_size / 1e6:.1f} MB)", err=True)
    # The page holds the runs that could be read; the ones that could not are named, and exit 2.
    return report_unreadable(errors)
