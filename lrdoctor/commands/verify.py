"""``lrdoctor verify RUN``: confirm or reject proposals with short paired reruns."""

from __future__ import annotations

import json
import sys

import click

from ..errors import UsageError
from ..verify.cost import summary_line
from .common import report_unreadable, role_overrides, run_input_options, selected_rules


def _print(results, out) -> None:
    colours = {"CONFIRMED": "green", "REJECTED": "red", "INCONCLUSIVE": "yellow", "ERROR": "magenta"}
    for r in results:
        click.echo(click.style(r.name, bold=True), file=out)
        if not r.verdicts:
            click.echo("  nothing to verify (no finding with a proposal)", file=out)
        for v in r.verdicts:
            stats = [f"n={len(v.seeds)}"]
            if v.p_value is not None:
                stats.append(f"p={v.p_value:.3g}")
            if v.ci is not None:
                stats.append(f"CI=[{v.ci[0]:.3g}, {v.ci[1]:.3g}]")
            if v.p_better is not None:
                stats.append(f"P(better)={v.p_better:.2f}")
            head = click.style(f"{v.verdict.value:<12}", fg=colours[v.verdict.value])
            click.echo(f"  {head} {v.rule or '(healthy)'} / {v.proposal_id}  {'  '.join(stats)}", file=out)
            click.echo(f"               {v.reason}", file=out)
            for line in detail_lines(v.details):
                click.echo(f"               {line}", file=out)
    line = summary_line([r.cost for r in results])
    if line:
        click.echo(line, file=out)


def detail_lines(details: dict) -> list[str]:
    """Where the reruns started, the ladder's rungs, what they cost, where they are."""
    lines = []
    fork = details.get("fork")
    if fork:
        lines.append(f"start: {fork['note']}")
    for r in details.get("ladder", ()):
        lr = "?" if r["lr"] is None else f"{r['lr']:.3g}"
        lines.append(f"rung {r['rung']}: lr={lr} {r['verdict']}{' (confirmed)' if r['confirmed'] else ''}, symptom in "
                     f"{r['candidate_hits']}/{r['n']} seeds (baseline {r['baseline_hits']}/{r['n']}), "
                     f"p={r['fisher_p']:.3g} vs Holm level {r['holm_level']:.3g}")
    c = details.get("cost")
    if c:
        ratio = f" = {100 * c['ratio']:.1f}% of the original run's {c['original_steps']:,} steps" if c["ratio"] else ""
        lines.append(f"cost: {c['reruns']} reruns, baseline {c['baseline_steps']:,} + candidate "
                     f"{c['candidate_steps']:,} = {c['total_steps']:,} steps{ratio}")
    if "out" in details:
        lines.append(f"reruns: {details['out']}")
    return lines


@click.command("verify")
@run_input_options
@click.option("--proposal", "proposal_id", default=None, metavar="ID",
              help="Verify this proposal of each finding (default: the top proposal of each finding; "
                   "'patch': only --patch).")
@click.option("--rule", default=None, metavar="RULE", help="Only verify findings of this rule.")
@click.option("--patch", "patch_json", default=None, metavar="JSON",
              help='Also verify this config patch (e.g. \'{"lr_scale": 10}\', or \'{}\' as a no-op control); on a '
                   "run without findings it is checked for harm.")
@click.option("--seeds", type=click.IntRange(min=3), default=5, show_default=True,
              help="Paired seeds per arm (3 allowed, but a paired test cannot then reach p < 0.05).")
@click.option("--budget-steps", type=click.IntRange(min=1), default=None,
              help="Steps per rerun (default: past the onset plus a recovery margin).")
@click.option("--rerun-timeout", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Kill a rerun (with its child processes) after this long; 0: never. Default: 5x the time "
                   "the original run took for the same steps (at least 120 s) when its logs hold wall "
                   "times, else never.")
@click.option("--out", "out_dir", default="lrdoctor-verify", show_default=True, type=click.Path(file_okay=False),
              help="Where reruns and their logs go (never inside the input run); finished reruns are reused.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where reruns train (auto: CUDA when torch sees a GPU).")
@click.option("--executor", "executor_kind", type=click.Choice(["local", "ray"]), default="local",
              show_default=True, help="local: a process pool; ray: a Ray cluster (pip install 'lrdoctor[ray]').")
@click.option("--ray-address", default=None, metavar="ADDR", help="Ray cluster address (default: start a local one).")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=None,
              help="Parallel reruns for --executor local (default: all cores).")
@click.option("--train", "train", default=None, metavar="CMD",
              help="Rerun command template, e.g. \"python train.py --lr {lr} --max-steps {max_steps} "
                   "--seed {seed} --logdir {logdir} --resume {resume_from} --start-step {start_step}\" "
                   "({max_steps} is the absolute step to stop at; also given LRDOCTOR_* env vars for "
                   "lrdoctor.Controller).")
@click.option("--checkpoints", "checkpoints", default=None, metavar="PATTERN",
              help="The original run's checkpoints, a glob with {step} for the step number (e.g. "
                   "\"runs/x/ckpt-{step}.pt\"); default: found in the run directory (lrdoctor's own, HF "
                   "checkpoint-{step}/, Lightning *step={step}*.ckpt). Reruns fork from the latest one at or "
                   "before the finding's onset minus a margin.")
@click.option("--no-fork", is_flag=True, help="Always rerun from step 0, even when checkpoints exist.")
@click.option("--base-lr", type=float, default=None, metavar="LR",
              help="With --train: the original run's peak LR, the baseline reruns' {lr} (default: the configured "
                   "LR, else the highest LR logged - short of the peak for a run that stopped during its warmup).")
@click.option("--rules", "rule_dirs", multiple=True, type=click.Path(exists=True, file_okay=False),
              metavar="DIR", help="Also load the rule YAML files in DIR (as for diagnose; reruns use the same rules).")
@click.option("--set", "sets", multiple=True, metavar="RULE.PARAM=VALUE",
              help="Override a rule's detector parameter (as for diagnose).")
@click.option("--json", "as_json", is_flag=True, help="Print the verdicts as JSON on stdout.")
def verify_cmd(path, fmt, strict, roles, roles_config, proposal_id, rule, patch_json, seeds, budget_steps,
               rerun_timeout, out_dir, device, executor_kind, ray_address, jobs, train, checkpoints, no_fork, base_lr,
               rule_dirs, sets, as_json) -> int:
    """Rerun each run under PATH briefly, with and without each proposal on the same seeds, and give
    each proposal a verdict: CONFIRMED, REJECTED, INCONCLUSIVE or ERROR.

    Exit status: 0 verified (whatever the verdicts), 1 some verdict is ERROR, 2 usage or input error
    (including a run under PATH that could not be read: the others are verified first).
    """
    from ..verify.entry import verify_path
    from ..verify.procs import terminate_as_interrupt

    patch = None
    if patch_json is not None:
        try:
            patch = json.loads(patch_json)
        except ValueError as exc:
            raise UsageError(f"--patch is not valid JSON: {exc}") from exc
        if not isinstance(patch, dict):
            raise UsageError("--patch must be a JSON object (a config patch)")
    rules = selected_rules(rule_dirs, sets, (), ())
    try:
        with terminate_as_interrupt():
            results, unreadable = verify_path(
                path, proposal_id=proposal_id, rule=rule, patch=patch, seeds=seeds, budget_steps=budget_steps,
                rerun_timeout=rerun_timeout, out=out_dir, device=device, executor=executor_kind,
                ray_address=ray_address, jobs=jobs, train=train, fmt=fmt, strict=strict,
                role_overrides=role_overrides(roles, roles_config), rules=rules,
                checkpoints=checkpoints, fork=not no_fork, base_lr=base_lr,
            )
    except KeyboardInterrupt as exc:
        click.echo(f"lrdoctor: interrupted: every rerun was stopped; finished reruns under {out_dir} are kept "
                   "and a repeated verify resumes from them", err=True)
        # this one line, not click's "Aborted!" as well; 130 for Ctrl-C, 143 for SIGTERM
        raise click.exceptions.Exit(getattr(exc, "exit_code", 130)) from None
    if as_json:
        click.echo(json.dumps({"runs": [r.to_dict() for r in results]}, indent=2))
    else:
        _print(results, sys.stdout)
    # the runs that could be read were verified; the unreadable ones still make the exit status 2
    if report_unreadable(unreadable):
        return 2
    return int(any(v.verdict.value == "ERROR" for r in results for v in r.verdicts))
