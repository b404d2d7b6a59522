"""A readable terminal summary of diagnoses (rich; colour only when stdout is a terminal)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import IO

from ..model import Diagnosis, Finding

_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}
#: proposals shown per finding (the rest are in --json and the HTML report)
TOP_PROPOSALS = 2
#: reader annotations shown per run (all of them are in --json)
TOP_ANNOTATIONS = 5


def _span(f: Finding, axis: str) -> str:
    if f.start_step is None:
        return ""
    if f.end_step is None or f.end_step == f.start_step:
        return f"{axis} {f.start_step}"
    return f"{axis}s {f.start_step}-{f.end_step}"


def render(diagnoses: Sequence[Diagnosis], file: IO[str] | None = None, *, color: bool | None = None) -> None:
    """Per run: its findings (severity, code, rule, step span, message, top proposals) and a
    one-line summary of the rules it skipped; then a total line."""
    from rich.console import Console
    from rich.markup import escape

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            # rich's own answer is sys.exit(1) at once; the caller decides instead (diagnose still
            # writes its --html page and exits with its findings' code: see reader_may_leave)
            self.quiet = True
            raise BrokenPipeError

    console = _Console(file=file, force_terminal=color, no_color=color is False, soft_wrap=True, highlight=False)
    totals: Counter[str] = Counter()
    for d in diagnoses:
        run = d.run
        console.print(f"[bold]{escape(run.name)}[/bold]  [dim]{escape(run.source)} ({escape(run.format)})[/dim]")
        if not d.findings:
            console.print("  [green]ok[/green]  no findings")
        for f in d.findings:
            sev = f.severity.value
            totals[sev] += 1
            code = f"{f.code} " if f.code else ""
            span = _span(f, run.step_axis)
            console.print(
                f"  [{_STYLE[sev]}]{sev:<7}[/]  {code}[bold]{f.rule}[/bold]"
                + (f"  [dim]{span}[/dim]" if span else "")
            )
            console.print(f"           {escape(f.message)}")
            if len(f.steps) > 1:
                shown = ", ".join(str(s) for s in f.steps[:8])
                more = f", ... ({len(f.steps)} listed)" if len(f.steps) > 8 else ""
                console.print(f"           [dim]at {run.step_axis}s {shown}{more}[/dim]")
            for p in sorted(f.proposals, key=lambda p: p.rank)[:TOP_PROPOSALS]:
                console.print(f"           [green]->[/green] {escape(p.summary)}")
            for e in f.proposal_errors:
                console.print(f"           [magenta]proposal error[/magenta] {escape(e)}")
        if d.skipped_rules:
            reasons: dict[str, list[str]] = {}
            for s in d.skipped_rules:
                reasons.setdefault(s.reason, []).append(s.rule)
            text = "; ".join(f"{', '.join(rules)} ({reason})" for reason, rules in reasons.items())
            console.print(f"  [dim]skipped: {escape(text)}[/dim]")
        _annotations(console, d, escape)
        console.print()
    n = len(diagnoses)
    parts = [f"{totals[s]} {s}{'s' if totals[s] != 1 else ''}" for s in ("error", "warning", "info") if totals[s]]
    console.print(f"{n} run{'s' if n != 1 else ''} diagnosed: " + (", ".join(parts) if parts else "no findings"))


def _annotations(console, d: Diagnosis, escape) -> None:
    """What the reader noticed (non-numeric cells, restarts, duplicates, corrupt records)."""
    notes = d.run.annotations
    for a in notes[:TOP_ANNOTATIONS]:
        where = ", ".join(x for x in (a.path, a.location) if x)
        console.print(f"  [magenta]note[/magenta]  {escape(a.kind)}: {escape(a.message)}"
                      + (f"  [dim]({escape(where)})[/dim]" if where else ""))
    if len(notes) > TOP_ANNOTATIONS:
        console.print(f"  [dim]... {len(notes) - TOP_ANNOTATIONS} more notes (see --json)[/dim]")
