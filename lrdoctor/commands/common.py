"""Options shared by the subcommands that read runs."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator

import click

from ..roles import load_roles_config, parse_role_overrides


def run_input_options(f: Callable) -> Callable:
    """PATH argument plus --format / --strict / --role / --roles-config."""
    f = click.option(
        "--roles-config", type=click.Path(exists=True, dir_okay=False),
        help="YAML file mapping role: tag (e.g. train_loss: my/loss).",
    )(f)
    f = click.option(
        "--role", "roles", multiple=True, metavar="ROLE=TAG",
        help="Use TAG for ROLE (train_loss, val_loss, grad_norm, lr, val_metric). Repeatable.",
    )(f)
    f = click.option(
        "--strict", is_flag=True,
        help="Treat corrupt records (CRC mismatch, garbage bytes) as errors instead of skipping them.",
    )(f)
    f = click.option(
        "--format", "fmt", default=None, metavar="FORMAT",
        help="Force a reader instead of sniffing (see 'lrdoctor inspect --help' for the list).",
    )(f)
    f = click.argument("path", type=click.Path(exists=True, file_okay=True, dir_okay=True))(f)
    return f


def role_overrides(roles: tuple[str, ...], roles_config: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    if roles_config:
        out.update(load_roles_config(roles_config))
    out.update(parse_role_overrides(roles))
    return out


def rule_selection_options(f: Callable) -> Callable:
    """--rules DIR / --set RULE.PARAM=VALUE / --select RULE / --ignore RULE (diagnose, report)."""
    f = click.option("--ignore", multiple=True, metavar="RULE", help="Do not run these rules (repeatable).")(f)
    f = click.option("--select", multiple=True, metavar="RULE",
                     help="Run only these rules (name or code; repeatable).")(f)
    f = click.option("--set", "sets", multiple=True, metavar="RULE.PARAM=VALUE",
                     help="Override a rule's detector parameter, e.g. plateau.window=51 (repeatable).")(f)
    f = click.option("--rules", "rule_dirs", multiple=True, type=click.Path(exists=True, file_okay=False),
                     metavar="DIR", help="Also load the rule YAML files in DIR (repeatable).")(f)
    return f


def selected_rules(rule_dirs, sets, select, ignore) -> list:
    """The rules to run, checked before any log is read so a bad --set fails fast."""
    from ..engine.spec import apply_overrides, load_rules, parse_set, select_rules
    from ..errors import UsageError
    from ..proposals import check_rules

    rules = apply_overrides(select_rules(load_rules(rule_dirs), select, ignore), parse_set(sets))
    check_rules(rules)
    if not rules:
        raise UsageError("no rules left to run after --select/--ignore")
    return rules


def load_runs(path: str, fmt: str | None, strict: bool, progress: bool | None = None) -> tuple[list, list]:
    """Every readable run under PATH, and one error per run that could not be read (the
    commands report those after their output, see :func:`report_unreadable`). ``progress``
    defaults to whether stderr is a terminal."""
    import sys

    from ..readers import discover_with_errors

    show = sys.stderr.isatty() if progress is None else progress
    return discover_with_errors(path, format=fmt, strict=strict, progress=show)


def report_unreadable(errors: list) -> int:
    """One stderr line per run that could not be read (shown even with -q); exit code 2 if any.
    What was left out for no fault of the input (:class:`~lrdoctor.errors.LeftOut`: a run with no
    metrics beside others, a file named like a log that no reader knows) is a note line instead,
    and leaves the exit code alone."""
    from ..errors import EmptyRunError, LeftOut

    for exc in errors:
        if isinstance(exc, LeftOut):
            click.echo(f"lrdoctor: note: {'left out' if isinstance(exc, EmptyRunError) else 'not read'}: {exc}",
                       err=True)
    failed = [exc for exc in errors if not isinstance(exc, LeftOut)]
    for exc in failed:
        click.echo(f"lrdoctor: error: run not read: {exc}", err=True)
    return 2 if failed else 0


def silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again (see the
    Python docs on SIGPIPE)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


@contextlib.contextmanager
def reader_may_leave() -> Iterator[None]:
    """Printing to a pipe whose reader left (``lrdoctor diagnose runs | head -1``): the rest of
    the output is dropped, and the command goes on to what it does after printing (the --html
    page, the unreadable-run lines) and to its own exit code, which a job script may test
    (``set -o pipefail``): a run with an error must not exit 0 because ``head`` stopped reading."""
    try:
        yield
    except BrokenPipeError:
        silence_stdout()
