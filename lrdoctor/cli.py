"""The ``lrdoctor`` command line: thin; parses, calls the library, picks the output, exits.

Each subcommand lives in its own module under :mod:`lrdoctor.commands` and is imported only when
used, so ``lrdoctor inspect`` never pays for torch or matplotlib.

Exit codes: 0 ok; 1 ``diagnose`` found something at or above ``--fail-on``; 2 usage or input error
(one line on stderr naming the file and location; a traceback only with ``--debug``).
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Sequence

import click

from .commands.common import silence_stdout as _silence_stdout
from .errors import LrdoctorError

#: subcommand -> "module:attribute" of its click command
COMMANDS = {
    "inspect": "lrdoctor.commands.inspect:inspect_cmd",
    "export": "lrdoctor.commands.export:export_cmd",
    "diagnose": "lrdoctor.commands.diagnose:diagnose_cmd",
    "rules": "lrdoctor.commands.rules:rules_cmd",
    "report": "lrdoctor.commands.report:report_cmd",
    "verify": "lrdoctor.commands.verify:verify_cmd",
    "watch": "lrdoctor.commands.watch:watch_cmd",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lrdoctor")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
def cli(debug: bool, quiet: bool) -> None:
    """Diagnose PyTorch training runs offline from their logs."""


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"lrdoctor: {record.levelname.lower()}: {record.getMessage()}"


def _setup_logging(debug: bool, quiet: bool) -> None:
    root = logging.getLogger("lrdoctor")
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine() if not debug else logging.Formatter("%(name)s: %(levelname)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.ERROR if quiet else logging.WARNING)
    root.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (tests call this directly)."""
    args = list(sys.argv[1:] if argv is None else argv)
    # --debug and --quiet are accepted anywhere on the line, not only before the subcommand.
    debug = "--debug" in args
    quiet = "-q" in args or "--quiet" in args
    args = [a for a in args if a not in ("--debug",)]
    _setup_logging(debug, quiet)
    try:
        rv = cli.main(args=args, prog_name="lrdoctor", standalone_mode=False)
    except LrdoctorError as exc:
        if debug:
            raise
        click.echo(f"lrdoctor: error: {exc}", err=True)
        return 2
    except click.exceptions.Abort as exc:
        click.echo("lrdoctor: aborted", err=True)
        # click turns Ctrl-C into Abort; a SIGTERM turned into an interrupt carries its own code (143)
        return getattr(exc.__cause__, "exit_code", 130)
    except click.ClickException as exc:
        if debug:
            raise
        msg = exc.format_message()
        ctx_help = ""
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            ctx_help = f" (see '{exc.ctx.command_path} --help')"
        click.echo(f"lrdoctor: error: {msg}{ctx_help}", err=True)
        return exc.exit_code if exc.exit_code != 1 else 2
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except BrokenPipeError:
        _silence_stdout()
        return 0
    except SystemExit as exc:
        # With standalone_mode=False click re-raises every error but one: a closed stdout pipe
        # (EPIPE), which it turns into sys.exit(1). `lrdoctor export runs -o - | head` is fine.
        if exc.code == 1:
            _silence_stdout()
            return 0
        raise
    except OSError as exc:
        # An output path that cannot be written (missing directory, permissions, /proc) or an
        # input that vanished mid-read: the user's problem, told in one line.
        if debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        click.echo(f"lrdoctor: error: {where}{exc.strerror or exc}", err=True)
        return 2
    except KeyboardInterrupt as exc:
        # Ctrl-C: 128 + SIGINT; a SIGTERM turned into an interrupt carries its own (143)
        return getattr(exc, "exit_code", 130)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        # `lrdoctor diagnose runs | head -1`: the reader left; that is not a failure.
        _silence_stdout()
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())
