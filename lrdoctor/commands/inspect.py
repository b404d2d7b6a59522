"""``lrdoctor inspect PATH``: what lrdoctor reads from a log, run by run."""

from __future__ import annotations

import json
from typing import Any

import click
import numpy as np

from ..errors import RoleSpecError
from ..model import Run
from .common import load_runs, report_unreadable, role_overrides, run_input_options


def summarize(run: Run, overrides: dict[str, str]) -> dict[str, Any]:
    """Everything ``inspect`` shows about one run, as plain data (also the ``--json`` output)."""
    from ..roles import resolve_roles_explained

    sc = run.scalars
    tags: list[dict[str, Any]] = []
    if len(sc):
        values = sc["value"].to_numpy()
        steps = sc["step"].to_numpy()
        codes, names = _codes(sc["tag"])
        k = len(names)
        count = np.bincount(codes, minlength=k)
        nan = np.bincount(codes, weights=np.isnan(values), minlength=k).astype(int)
        inf = np.bincount(codes, weights=np.isinf(values), minlength=k).astype(int)
        smin = np.full(k, np.iinfo(np.int64).max)
        smax = np.full(k, np.iinfo(np.int64).min)
        np.minimum.at(smin, codes, steps)
        np.maximum.at(smax, codes, steps)
        tags = [{"tag": str(names[i]), "points": int(count[i]), "nan": int(nan[i]), "inf": int(inf[i]),
                 "first_step": int(smin[i]), "last_step": int(smax[i])} for i in range(k)]
    usable = {r: t for r, t in overrides.items() if t in run.tags}
    explained = resolve_roles_explained(run.tags, overrides, run_name=run.name)
    roles = {r: t for r, (t, _) in explained.items()}
    return {
        "name": run.name,
        "format": run.format,
        "source": run.source,
        "step_axis": run.step_axis,
        "step_range": [int(sc["step"].min()), int(sc["step"].max())] if len(sc) else None,
        "points": int(len(sc)),
        "tags": tags,
        "roles": roles,
        "role_reasons": {r: why for r, (_, why) in explained.items()},
        "families": _families(run.tags),
        "unused_role_overrides": {r: t for r, t in overrides.items() if r not in usable},
        "hparams": len(run.hparams),
        "summary": {k: _short(v) for k, v in run.summary.items()},
        "origin": run.origin is not None,
        "annotations": [{"kind": a.kind, "message": a.message, "path": a.path, "location": a.location}
                        for a in run.annotations],
    }


def _families(tags: list[str]) -> dict[str, dict[str, Any]]:
    """Multi-tag roles (per-layer grad norms): their tags in the model order the rules use, and
    how that order was found."""
    from ..roles import FAMILY_ROLES, family_tags, model_order

    out = {}
    for role in FAMILY_ROLES:
        members, names = family_tags(role, tags)
        if members:
            order, how = model_order(names)
            out[role] = {"tags": [members[i] for i in order], "order": how}
    return out


def _short(v: Any) -> Any:
    """A summary value as shown: numbers as they are, anything long cut (a W&B summary may hold
    a whole table or caption)."""
    if isinstance(v, (bool, int, float)) or v is None:
        return v
    text = v if isinstance(v, str) else json.dumps(v, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _codes(tags):
    import pandas as pd

    return pd.factorize(tags, sort=False)


def render(s: dict[str, Any]) -> str:
    lines = [f"run {s['name']}",
             f"  format     {s['format']}",
             f"  source     {s['source']}"]
    rng = s["step_range"]
    lines.append(f"  {s['step_axis']}s      " + (f"{rng[0]} .. {rng[1]} ({s['points']} points)" if rng
                                                 else "none (no scalars)"))
    lines.append(f"  hparams    {s['hparams']}" + ("   origin: lrdoctor-run.json" if s["origin"] else ""))
    if s["summary"]:
        shown = ", ".join(f"{k}={v}" for k, v in list(s["summary"].items())[:8])
        more = f", ... ({len(s['summary'])} keys)" if len(s["summary"]) > 8 else ""
        lines.append(f"  summary    {shown}{more}")
    width = max((len(t["tag"]) for t in s["tags"]), default=0)
    lines.append(f"  tags ({len(s['tags'])}):")
    for t in s["tags"]:
        bad = ", ".join(f"{t[k]} {k}" for k in ("nan", "inf") if t[k])
        lines.append(f"    {t['tag']:<{width}}  {t['points']:>8} points  {s['step_axis']} "
                     f"{t['first_step']}..{t['last_step']}" + (f"  [{bad}]" if bad else ""))
    roles = ", ".join(f"{r}={t}" for r, t in s["roles"].items()) or "none resolved"
    lines.append(f"  roles      {roles}")
    for r, why in s.get("role_reasons", {}).items():
        # why each tag was chosen: an alias, a name pattern, or the loss family preferred
        lines.append(f"    {r:<11}{s['roles'][r]}: {why}")
    for r, fam in s.get("families", {}).items():
        first, last = fam["tags"][0], fam["tags"][-1]
        lines.append(f"    {r}: {len(fam['tags'])} tags, {first} .. {last} "
                     f"(model order: {'as logged' if fam['order'] == 'logged' else 'natural sort of the names'})")
    for r, t in s["unused_role_overrides"].items():
        lines.append(f"  (--role {r}={t} not applied: this run has no tag {t!r})")
    if s["annotations"]:
        lines.append(f"  annotations ({len(s['annotations'])}):")
        for a in s["annotations"]:
            where = ", ".join(x for x in (a["path"], a["location"]) if x)
            lines.append(f"    {a['kind']}: {a['message']}" + (f" ({where})" if where else ""))
    return "\n".join(lines)


#: Kept in sync with lrdoctor.readers.supported_formats() by a test (importing the readers here
#: would make every `lrdoctor --help` pay for pandas).
FORMATS = ("tensorboard", "wandb", "mlflow", "mlflow_sqlite", "hf_trainer_state", "lightning_csv", "keras_csv", "keras_history",
           "jsonl", "csv", "text")
HELP = f"""Show the runs found under PATH: format, tags, point counts, step range, resolved roles.

PATH is a log file, one run directory, or a tree of runs (a sweep).

Formats (for --format): {", ".join(FORMATS)}.
"""


@click.command("inspect", help=HELP)
@run_input_options
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_context
def inspect_cmd(ctx: click.Context, path: str, fmt: str | None, strict: bool, roles: tuple[str, ...],
                roles_config: str | None, as_json: bool) -> int:
    overrides = role_overrides(roles, roles_config)
    runs, errors = load_runs(path, fmt, strict)
    summaries = [summarize(run, overrides) for run in runs]
    for role, tag in overrides.items():
        if all(role in s["unused_role_overrides"] for s in summaries):
            raise RoleSpecError(f"--role {role}={tag}: no run has a tag {tag!r}")
    if as_json:
        click.echo(json.dumps(summaries, indent=2, default=str))
    else:
        click.echo("\n\n".join(render(s) for s in summaries))
    return report_unreadable(errors)


