"""``lrdoctor rules``: list the rules; ``lrdoctor rules explain NAME``: one rule's page."""

from __future__ import annotations

import sys

import click

from ..errors import UsageError


def _load(rule_dirs):
    from ..engine.spec import load_rules
    from ..proposals import check_rules

    rules = load_rules(rule_dirs)
    check_rules(rules)
    return rules


@click.group("rules", invoke_without_command=True)
@click.option("--rules", "rule_dirs", multiple=True, type=click.Path(exists=True, file_okay=False),
              metavar="DIR", help="Also load the rule YAML files in DIR (repeatable).")
@click.pass_context
def rules_cmd(ctx: click.Context, rule_dirs) -> int:
    """List the rules (name, code, severity, title)."""
    ctx.obj = {"rule_dirs": rule_dirs}
    if ctx.invoked_subcommand is not None:
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False, show_edge=False)
    for col in ("code", "name", "severity", "requires", "title"):
        table.add_column(col)
    for r in _load(rule_dirs):
        table.add_row(r.code, r.name, r.severity.value, ", ".join(r.requires), r.title)
    # no wrapping into a fixed 80 columns when piped
    width = None if sys.stdout.isatty() else 200
    Console(file=sys.stdout, width=width, highlight=False).print(table)
    return 0


@rules_cmd.command("explain")
@click.argument("name")
@click.option("--rules", "rule_dirs", multiple=True, type=click.Path(exists=True, file_okay=False),
              metavar="DIR", help="Also load the rule YAML files in DIR (repeatable).")
@click.pass_context
def explain_cmd(ctx: click.Context, name: str, rule_dirs) -> int:
    """Print one rule's documentation (what / why / example / fix) and its parameters."""
    # --rules may come before the subcommand (group option), after it, or both
    rules = _load(tuple((ctx.obj or {}).get("rule_dirs", ())) + tuple(rule_dirs))
    rule = next((r for r in rules if name in (r.name, r.code)), None)
    if rule is None:
        import difflib

        close = difflib.get_close_matches(name, [r.name for r in rules], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UsageError(f"unknown rule {name!r}{hint}; 'lrdoctor rules' lists them")
    out = [
        f"{rule.code} {rule.name}: {rule.title}",
        f"severity: {rule.severity.value}   requires: {', '.join(rule.requires)}"
        + (f"   optional: {', '.join(rule.optional)}" if rule.optional else ""),
        "",
    ]
    for key in ("what", "why", "example", "fix"):
        out += [f"{key.capitalize()}:", *_wrap(rule.doc[key]), ""]
    if rule.live.doc:
        out += ["While it trains (lrdoctor watch, callbacks):", *_wrap(rule.live.doc), ""]
    out.append(f"Parameters (detector {rule.kind}; override with --set {rule.name}.PARAM=VALUE):")
    out += [f"  {k} = {v!r}" for k, v in rule.params.items()]
    if rule.proposals:
        from ..proposals import POLICIES

        out += ["", f"Proposals (the kinds planned; the run's evidence ranks them): {', '.join(rule.proposals)}"]
        if rule.proposal_policy is not None:
            # _load checked every rule's policy (check_rules): it is one of POLICIES
            out.append(f"Ranking policy: {rule.proposal_policy} ({POLICIES[rule.proposal_policy].doc})")
    facts = []
    if rule.symptom:
        facts.append(f"symptom judged on {rule.symptom}")
    if rule.unstable_in_sweep:
        facts.append("marks a run unstable in an LR sweep")
    if rule.markers != "points":
        facts.append(f"markers: {rule.markers}")
    if facts:
        out += ["", "Also: " + "; ".join(facts)]
    out += ["", f"Defined in {rule.path}"]
    click.echo("\n".join(out))
    return 0


def _wrap(text: str) -> list[str]:
    import textwrap

    return textwrap.wrap(" ".join(text.split()), width=96, initial_indent="  ", subsequent_indent="  ")
