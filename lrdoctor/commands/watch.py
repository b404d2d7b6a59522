"""``lrdoctor watch PATH``: the rules on runs while they are being written."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from ..errors import NoRunsFoundError
from .common import role_overrides, rule_selection_options, run_input_options, selected_rules

EXIT_ON = ("error", "warning", "info", "never")
_STYLE = {"error": "red", "warning": "yellow", "info": "cyan"}


@click.command("watch")
@run_input_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event on stdout (JSON Lines).")
@click.option("--exit-on", type=click.Choice(EXIT_ON), default="never", show_default=True,
              help="Exit 1 at the first finding of at least this severity (a job script can then kill the training).")
@click.option("--interval", type=click.FloatRange(min=0.05), default=2.0, show_default=True,
              help="Seconds between polls.")
@click.option("--idle", type=click.FloatRange(min=0.0), default=300.0, show_default=True,
              help="End when no run has grown for this many seconds.")
@rule_selection_options
def watch_cmd(path, fmt, strict, roles, roles_config, as_json, exit_on, interval, idle, rule_dirs, sets,
              select, ignore) -> int:
    """Follow the runs under PATH while they are written and print each finding once, as it appears.

    Each poll reads only what was appended since the last one (whole records and lines; a
    half-written one waits for the next poll) and runs the rules on everything so far. A finding
    is printed when its rule's live policy confirms it ('lrdoctor rules explain NAME'), again as
    'updated' when it grows, and as 'withdrawn' if later points undo it. When no run has grown for
    --idle seconds the log is taken as complete: the last check gives diagnose's findings.

    Exit status: 0 when idle (or interrupted), 1 at the first finding at or above --exit-on,
    2 usage or input error, or no run appeared under PATH before it went idle. An empty file
    (a training that has just created it) is waited for.
    """
    from ..live.engine import EventKind, LiveEngine, at_least
    from ..live.follow import TreeFollower
    from ..readers import read_origin

    rules = selected_rules(rule_dirs, sets, select, ignore)
    overrides = role_overrides(roles, roles_config)
    tree = TreeFollower(path, format=fmt, strict=strict)
    engines: dict[str, LiveEngine] = {}
    last_growth = time.monotonic()

    def emit(events) -> bool:
        """Print events; True when one of them is a finding to exit on."""
        hit = False
        for e in events:
            _print(e, as_json)
            hit |= (exit_on != "never" and e.kind is not EventKind.WITHDRAWN
                    and at_least(e.finding.severity, exit_on))
        return hit

    started = time.monotonic()
    try:
        while True:
            # a file the training has just created, still empty, is a run not written yet
            grown = [] if _empty_file(path) else tree.poll()
            for follower, points in grown:
                eng = engines.get(follower.name)
                if eng is None:
                    eng = engines[follower.name] = LiveEngine(
                        name=follower.name, source=str(follower.source.root), rules=rules,
                        role_overrides=overrides, step_axis=follower.step_axis, hparams=follower.hparams,
                        origin=read_origin(follower.source)[0])  # a bad one: diagnose's note says so
                elif follower.restated:
                    eng.restate()  # the points below are all of the run's, on another step axis
                for tag, part in points.groupby("tag", sort=False):
                    eng.extend(str(tag), part["step"].to_numpy(), part["value"].to_numpy())
                if emit(eng.check()):
                    return 1
            now = time.monotonic()
            if grown:
                last_growth = now
            elif now - last_growth >= idle:
                break
            time.sleep(interval)
    except KeyboardInterrupt:
        if not engines:
            click.echo(f"lrdoctor: no run appeared under {path}", err=True)
            return 0
    if not engines:
        # a job script must not take a wrong path, or a training that never wrote, for a clean run
        raise NoRunsFoundError(f"no run appeared in the {time.monotonic() - started:.0f} s it was watched "
                               f"(--idle {idle:g})", path=str(path))
    hit = False
    for eng in engines.values():
        hit |= emit(eng.finish())
    return 1 if hit else 0


def _empty_file(path) -> bool:
    p = Path(path)
    try:
        return p.is_file() and p.stat().st_size == 0
    except OSError:
        return False


def _print(e, as_json: bool) -> None:
    if as_json:
        from ..jsonsafe import json_safe

        click.echo(json.dumps(json_safe(e.to_dict()), allow_nan=False), nl=True)
        return
    f = e.finding
    span = "" if f.start_step is None else (
        f"step {f.start_step}" if f.end_step in (None, f.start_step) else f"steps {f.start_step}-{f.end_step}")
    sev = click.style(f"{f.severity.value:<7}", fg=_STYLE[f.severity.value])
    kind = {"new": "", "updated": "updated ", "withdrawn": "withdrawn "}[e.kind.value]
    click.echo(f"{e.run}  {kind}{sev} {f.code or ''} {f.rule}  {span}  (seen at step {e.at_step})")
    if e.kind.value != "withdrawn":
        click.echo(f"    {f.message}")
        for p in sorted(f.proposals, key=lambda p: p.rank)[:2]:
            click.echo(f"    -> {p.summary}")
