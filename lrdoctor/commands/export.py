"""``lrdoctor export PATH -o out.csv|out.parquet``: every point of every run as one tidy table."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import UsageError
from .common import load_runs, report_unreadable, run_input_options

#: The issue's tidy columns, then ``step_axis``: what ``step`` counts for that run ("step", or
#: "epoch" for Keras logs, "row" never: row-numbered logs say "step"). One table holds runs of
#: both kinds, so the axis is a column rather than the name of the step column.
COLUMNS = ["run", "tag", "step", "wall_time", "value", "step_axis"]


@click.command("export")
@run_input_options
@click.option("-o", "--output", required=True, metavar="FILE",
              help="Output file: .csv (or - for stdout) or .parquet (needs pyarrow).")
@click.pass_context
def export_cmd(ctx: click.Context, path: str, fmt: str | None, strict: bool, roles: tuple[str, ...],
               roles_config: str | None, output: str) -> int:
    """Write all scalars under PATH with columns run, tag, step, wall_time, value, step_axis.

    step_axis says what the step column counts for that run: "step", or "epoch" (Keras logs).

    Every point is written, tags keep their logged names, NaN and +-inf are kept (in CSV as
    nan, inf, -inf, which pandas and numpy read back).
    """
    import pandas as pd

    out = Path(output)
    kind = "csv" if output == "-" or out.suffix.lower() == ".csv" else (
        "parquet" if out.suffix.lower() in (".parquet", ".pq") else None)
    if kind is None:
        raise UsageError(f"-o {output}: use a .csv or .parquet file name")
    if kind == "parquet":
        from .._optional import require

        require("pyarrow", "parquet output (or write .csv)")
    runs, errors = load_runs(path, fmt, strict)
    frames = [run.scalars.assign(run=run.name, step_axis=run.step_axis)[COLUMNS] for run in runs]
    table = pd.concat(frames, ignore_index=True)
    if kind == "parquet":
        table.to_parquet(out, index=False)
    else:
        # repr-precision floats ("%.17g" would add noise digits; pandas writes the shortest repr)
        target = sys.stdout if output == "-" else out
        table.to_csv(target, index=False, na_rep="nan", lineterminator="\n")
    if output != "-":
        click.echo(f"wrote {len(table)} points from {len(runs)} runs to {out}", err=True)
    return report_unreadable(errors)
