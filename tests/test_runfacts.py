"""One answer to "what was this run's LR, length, clip threshold": proposals, verify and the report
read the same run facts (lrdoctor.runfacts), nested hparams included."""

from __future__ import annotations

import numpy as np

from lrdoctor.model import Finding, Run, Severity, make_scalars
from lrdoctor.proposals.context import build_context
from lrdoctor.roles import RoleView
from lrdoctor.runfacts import base_lr, clip_threshold, hparams_of, planned_steps


def _run(hparams: dict, *, origin: dict | None = None, name: str = "run", logged_lr: float | None = 0.05) -> Run:
    n = 200
    steps = np.arange(n)
    loss = 2.0 * np.exp(-steps / 50) + 0.1
    tags, st, vals = ["loss"] * n, [steps], [loss]
    if logged_lr is not None:
        tags += ["lr"] * n
        st.append(steps)
        vals.append(np.linspace(logged_lr / 10, logged_lr, n))  # a warmup: peak at the end
    scal = make_scalars(tags, np.concatenate(st), None, np.concatenate(vals))
    return Run(name=name, source="mem", format="csv", scalars=scal, hparams=hparams, origin=origin)


NESTED = {"optimizer": {"type": "AdamW", "lr": 3e-4, "betas": [0.9, 0.95]},
          "trainer": {"max_steps": 5000, "gradient_clip_val": 0.5}}


def test_nested_hparams_give_lr_length_clip_and_optimizer():
    run = _run(NESTED)
    assert base_lr(run) == 3e-4  # not the logged LR's peak 0.05
    assert planned_steps(run) == 5000
    assert clip_threshold(run) == 0.5
    assert hparams_of(run)["optimizer"] == "AdamW"


def test_verify_proposals_and_report_agree_on_nested_hparams():
    from lrdoctor.report.sweep import run_lr
    from lrdoctor.verify.backends import CommandBackend
    from lrdoctor.verify.runner import backend_for, run_length

    run = _run(NESTED, logged_lr=None)
    backend = backend_for(run, "python train.py --lr {lr} --max-steps {max_steps} --logdir {logdir}")
    assert isinstance(backend, CommandBackend)
    assert backend.base["lr"] == 3e-4 and backend.base["clip_grad_norm"] == 0.5
    assert run_length(run) == 5000
    assert run_lr(run) == 3e-4
    f = Finding("plateau", Severity.WARNING, 10, 199, (), "", {})
    ctx = build_context(f, RoleView.of(run))
    assert (ctx.lr_peak, ctx.optimizer, ctx.betas) == (3e-4, "AdamW", (0.9, 0.95))


def test_logged_lr_peak_when_nothing_is_configured_and_workload_config_otherwise():
    assert base_lr(_run({})) == 0.05
    assert base_lr(_run({}, origin={"workload": "mlp", "config": {"lr": 0.2, "max_steps": 300}})) == 0.2
    assert planned_steps(_run({}, origin={"workload": "mlp", "config": {"max_steps": 300}})) == 300
    # a scheduler's LR is not the run's LR
    assert base_lr(_run({"scheduler": {"max_lr": 9.0}}, logged_lr=None)) is None


def test_peak_lr_unseen_only_when_the_lr_comes_from_logs_that_end_while_it_rises():
    from lrdoctor.runfacts import peak_lr_unseen

    def logged(lr: np.ndarray) -> Run:
        steps = np.arange(len(lr))
        scal = make_scalars(["loss"] * len(lr) + ["lr"] * len(lr), np.concatenate([steps, steps]), None,
                            np.concatenate([np.linspace(2, 1, len(lr)), lr]))
        return Run(name="r", source="mem", format="csv", scalars=scal)

    n = 200
    assert peak_lr_unseen(_run({}))  # a warmup cut off at its last point
    assert not peak_lr_unseen(_run(NESTED))  # the configured peak is known
    assert not peak_lr_unseen(logged(np.full(n, 2.0)))  # constant
    warm_then_flat = np.minimum(np.linspace(0, 2, n), 1.0)
    assert not peak_lr_unseen(logged(warm_then_flat))
    cosine = 0.5 * (1 + np.cos(np.linspace(0, np.pi, n)))
    assert not peak_lr_unseen(logged(np.concatenate([np.linspace(0, 1, 20), cosine])))


def test_a_run_that_logged_steps_from_zero_ran_one_more_step_than_its_last():
    """No configured length: a loop that logged steps 0..199 ran 200 steps (the rerun's
    {max_steps}); one that logged 1..200 ran 200 too."""
    from dataclasses import replace

    from lrdoctor.verify.runner import run_length

    run = _run({})
    assert run_length(run) == 200
    s = run.scalars.copy()
    s["step"] = s["step"] + 1
    assert run_length(replace(run, scalars=s)) == 200
