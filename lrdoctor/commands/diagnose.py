"""``lrdoctor diagnose PATH``: run the rules on every run under PATH."""

from __future__ import annotations

import sys

import click

from .common import (
    load_runs,
    reader_may_leave,
    report_unreadable,
    role_overrides,
    rule_selection_options,
    run_input_options,
    selected_rules,
)

FAIL_ON = ("error", "warning", "info", "never")


def exit_code(diagnoses, fail_on: str) -> int:
    """1 when any finding is at or above ``fail_on`` (never: always 0), else 0."""
    if fail_on == "never":
        return 0
    from ..model import Severity

    bar = Severity(fail_on).rank
    return int(any(f.severity.rank >= bar for d in diagnoses for f in d.findings))


@click.command("diagnose")
@run_input_options
@click.option("--json", "as_json", is_flag=True, help="Print the diagnosis as JSON on stdout.")
@click.option(
    "--fail-on", type=click.Choice(FAIL_ON), default="error", show_default=True,
    help="Exit 1 when a finding of at least this severity is found (never: always exit 0).",
)
@rule_selection_options
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=None,
              help="Worker processes for many runs (default: all cores).")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar on stderr (default: when stderr is a terminal).")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Also write the self-contained HTML report to FILE.")
def diagnose_cmd(path, fmt, strict, roles, roles_config, as_json, fail_on, rule_dirs, sets, select, ignore,
                 jobs, progress, html_path) -> int:
    """Diagnose the training runs under PATH (a log file, a run directory, or a tree of runs).

    Exit status: 0 no finding at or above --fail-on, 1 there is one, 2 usage or input error
    (including a run under PATH that could not be read: the others are still diagnosed).
    """
    from ..engine.diagnose import diagnose_runs

    rules = selected_rules(rule_dirs, sets, select, ignore)
    overrides = role_overrides(roles, roles_config)
    show_progress = progress if progress is not None else sys.stderr.isatty()
    runs, errors = load_runs(path, fmt, strict, show_progress)
    diagnoses = diagnose_runs(runs, rules=rules, role_overrides=overrides, jobs=jobs, progress=show_progress)
    with reader_may_leave():
        if as_json:
            from ..output.json_out import dumps

            click.echo(dumps(diagnoses, errors=errors))
        else:
            from ..output.terminal import render

            render(diagnoses, sys.stdout)
            sys.stdout.flush()  # inside: a reader that left is found here, not after the exit code
    if html_path:
        import os

        from ..report import write_report

        write_report(diagnoses, html_path, workers=min(4, jobs or os.cpu_count() or 1), source_path=str(path),
                     not_read=errors)
    # after the rest, one line each (shown even with -q)
    return report_unreadable(errors) or exit_code(diagnoses, fail_on)
