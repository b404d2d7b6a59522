"""Overhead per training step of the live rules: the Lightning and HF callbacks and the Controller,
next to a bare loop, on the tiny transformer workload's step (CPU), in one run.

    python benchmarks/live_overhead.py [--steps 400] [--check-every 10]

Every trainer runs the same model (``transformer_lm`` of :mod:`lrdoctor.workloads`, its healthy
recipe's config), data and optimizer, and each is timed with and without lrdoctor (``warn``, so
nothing changes the training). Two numbers per integration:

* **in lrdoctor**: the time spent inside lrdoctor's hooks (perf_counter around each call), per
  step: what it adds, free of the trainer's own noise;
* **end to end**: the difference of the whole per-step times with and without it (noisy on a
  shared machine: the median of ``--repeats`` alternating runs).

Both are also given as a share of the bare loop's step (forward, backward, clip, step, schedule).
Times are the CPU time of the training thread (``time.thread_time``; torch runs one intra-op
thread here, in that thread), so that other work on a shared machine does not count: what
lrdoctor adds is CPU work in the training thread, and so is the step it is compared with.
At the default ``severity="error"`` a guard runs only the rules whose findings can reach it
(divergence, exploding-gradients), and their streaming screens skip the detectors while nothing
can fire; the ``severity=warning`` rows run the warning rules too (loss spikes, plateau, ...),
which have no screens. The rollback action adds a deep copy of the model and optimizer state every ``checkpoint_every``
steps; its row is measured the same way.
"""

from __future__ import annotations

import argparse
import functools
import logging
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lrdoctor.workloads import build_optimizer, build_scheduler, recipe_config  # noqa: E402
from lrdoctor.workloads.data import BatchOrder, make_dataset  # noqa: E402
from lrdoctor.workloads.models import build_model  # noqa: E402

clock = time.thread_time


class Timer:
    """Accumulates the time spent in wrapped callables."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, fn):
        @functools.wraps(fn)
        def timed(*a, **k):
            t0 = clock()
            try:
                return fn(*a, **k)
            finally:
                self.seconds += clock() - t0
        return timed


def setup(steps: int):
    cfg = recipe_config("healthy", "transformer_lm", seed=0).apply_patch({"max_steps": steps})
    data = make_dataset(cfg)
    torch.manual_seed(0)
    model = build_model(cfg.workload, data.n_in, data.n_out, cfg.model)
    opt = build_optimizer(model.parameters(), cfg)
    sched = build_scheduler(opt, cfg)
    xt, yt = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    order = BatchOrder(len(xt), cfg.batch_size, cfg.seed)
    batches = [(xt[i], yt[i]) for i in (order.indices(s) for s in range(1, steps + 1))]
    clip = cfg.clip_grad_norm or float("inf")
    return model, opt, sched, batches, clip


def loss_fn(out, y):
    return torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))


def bare(steps: int, **_) -> tuple[float, float]:
    model, opt, sched, batches, clip = setup(steps)
    t0 = clock()
    for xb, yb in batches:
        loss = loss_fn(model(xb), yb)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        float(loss.detach())
    return (clock() - t0) / steps, 0.0


def controller(steps: int, live: str | None, check_every: int, tmp: Path,
               budget: float | None = 0.005, severity: str = "error") -> tuple[float, float]:
    from lrdoctor.verify.controller import Controller

    model, opt, sched, batches, clip = setup(steps)
    ctl = Controller(opt, model, scheduler=sched, live=None if live is None else
                     {"action": live, "check_every": check_every, "max_overhead": budget,
                                                      "severity": severity})
    ctl.clip_grad_norm = clip
    timer = Timer()
    if ctl.guard is not None:
        ctl.guard.observe = timer.wrap(ctl.guard.observe)
    t0 = clock()
    for xb, yb in batches:
        ctl.step(loss_fn(model(xb), yb))
    dt = (clock() - t0) / steps
    ctl.close()
    return dt, timer.seconds / steps


def lightning(steps: int, live: str | None, check_every: int, tmp: Path,
              budget: float | None = 0.005, severity: str = "error") -> tuple[float, float]:
    measure = live != "warn, no grad norm"
    live = "warn" if live == "warn, no grad norm" else live
    import lightning as L

    from lrdoctor.integrations.lightning import LRDoctorCallback

    model, opt, sched, batches, clip = setup(steps)

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = model

        def training_step(self, batch, _):
            return loss_fn(self.model(batch[0]), batch[1])

        def configure_optimizers(self):
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    callbacks, timer = [], Timer()
    if live is not None:
        cb = LRDoctorCallback(live, check_every=check_every, logdir=tmp, max_overhead=budget,
                              measure_grad_norm=measure, severity=severity)
        for hook in ("on_before_optimizer_step", "on_train_batch_end", "on_validation_end"):
            setattr(cb, hook, timer.wrap(getattr(cb, hook)))
        callbacks.append(cb)
    clock = _StepClock()
    callbacks.append(clock)
    trainer = L.Trainer(max_steps=steps, callbacks=callbacks, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1,
                        gradient_clip_val=None if clip == float("inf") else clip)
    # batch_size=None: the loader hands over the prepared batches as they are
    trainer.fit(Module(), torch.utils.data.DataLoader(batches, batch_size=None))
    return clock.per_step(), timer.seconds / steps


def _StepClock():  # noqa: N802 - a Callback class built when lightning is imported
    import lightning as L

    class StepClock(L.Callback):
        """Times the training steps only (from the first batch to the last), not the set-up."""

        def on_train_batch_start(self, *a):
            if not hasattr(self, "t0"):
                self.t0, self.n = clock(), 0

        def on_train_batch_end(self, *a):
            self.n += 1
            self.t1 = clock()

        def per_step(self):
            return (self.t1 - self.t0) / max(self.n - 1, 1)

    return StepClock()


def hf(steps: int, live: str | None, check_every: int, tmp: Path,
       budget: float | None = 0.005, severity: str = "error") -> tuple[float, float]:
    import transformers

    from lrdoctor.integrations.hf import LRDoctorCallback

    model, opt, sched, batches, clip = setup(steps)

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x, labels):
            return {"loss": loss_fn(self.model(x), labels)}

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return len(batches)

        def __getitem__(self, i):
            return {"x": batches[i][0], "labels": batches[i][1]}

    args = transformers.TrainingArguments(
        output_dir=str(tmp / "hf"), max_steps=steps, per_device_train_batch_size=1, logging_steps=1,
        max_grad_norm=clip if clip != float("inf") else 1e9, save_strategy="no", report_to=[],
        use_cpu=True, disable_tqdm=True, remove_unused_columns=False, dataloader_drop_last=True,
        logging_nan_inf_filter=False)
    timer = Timer()
    callbacks = []
    if live is not None:
        cb = LRDoctorCallback(live, check_every=check_every, max_overhead=budget, severity=severity)
        for hook in ("on_log", "on_pre_optimizer_step"):
            setattr(cb, hook, timer.wrap(getattr(cb, hook)))
        callbacks.append(cb)
    # one batch per item: collate stacks a (1, B, T) tensor, squeezed back in the wrapper
    trainer = transformers.Trainer(model=Wrapped(), args=args, train_dataset=Data(), optimizers=(opt, sched),
                                   callbacks=callbacks, data_collator=_squeeze)
    trainer.remove_callback(transformers.trainer_callback.PrinterCallback)
    step_clock = _HFStepClock(transformers)
    trainer.add_callback(step_clock)
    trainer.train()
    return step_clock.per_step(), timer.seconds / steps


def _HFStepClock(transformers):  # noqa: N802 - a TrainerCallback class built when transformers is imported
    class StepClock(transformers.TrainerCallback):
        """CPU time of the training steps only (from the first step's start to the last's end)."""

        def on_step_begin(self, *a, **k):
            if not hasattr(self, "t0"):
                self.t0, self.n = clock(), 0

        def on_step_end(self, *a, **k):
            self.n += 1
            self.t1 = clock()

        def per_step(self):
            return (self.t1 - self.t0) / max(self.n - 1, 1)

    return StepClock()


def _squeeze(items):
    return {"x": items[0]["x"], "labels": items[0]["labels"]}


def measure(fn, steps, k, tmp, repeats, variants):
    """Median per-step time without lrdoctor, and per variant (live, budget, severity) the median
    per-step time and time inside lrdoctor; runs alternate so drifting machine load hits all alike."""
    without: list[float] = []
    with_: dict[tuple, list[float]] = {v: [] for v in variants}
    inside: dict[tuple, list[float]] = {v: [] for v in variants}
    for _ in range(repeats):
        without.append(fn(steps, live=None, check_every=k, tmp=tmp)[0])
        for live, budget, severity in variants:
            t, t_in = fn(steps, live=live, check_every=k, tmp=tmp, budget=budget, severity=severity)
            with_[(live, budget, severity)].append(t)
            inside[(live, budget, severity)].append(t_in)
    med = statistics.median
    return med(without), {v: (med(with_[v]), med(inside[v])) for v in variants}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--check-every", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for name in ("lightning", "lightning.pytorch", "transformers", "lrdoctor"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import tempfile

    import transformers
    transformers.logging.set_verbosity_error()
    k, steps = args.check_every, args.steps
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = statistics.median(bare(steps)[0] for _ in range(args.repeats))
        rows = [("bare loop (forward, backward, clip, step, schedule)", base, base, 0.0)]
        every = (None, "error", f"every {k} steps (max_overhead=None)")
        every_warning = (None, "warning", f"every {k} steps (max_overhead=None), severity=warning")
        budget = (0.005, "error", "default (max_overhead=0.005)")
        for name, fn, variants in (
                ("Controller", controller,
                 [("warn", every), ("warn", every_warning), ("warn", budget), ("rollback", budget)]),
                ("Lightning Trainer + LRDoctorCallback", lightning,
                 [("warn", every), ("warn", every_warning), ("warn", budget), ("warn, no grad norm", budget)]),
                ("HF Trainer + LRDoctorCallback", hf, [("warn", every), ("warn", every_warning), ("warn", budget)])):
            w0, got = measure(fn, steps, k, tmp, args.repeats, [(live, b[0], b[1]) for live, b in variants])
            for live, (b, severity, label) in variants:
                w1, inside = got[(live, b, severity)]
                rows.append((f"{name}, {live}, {label}", w0, w1, inside))
    print(f"tiny transformer workload (transformer_lm, healthy recipe), {steps} steps, check_every={k}, "
          f"{args.threads} torch thread(s), median of {args.repeats}\n")
    print("| trainer | step without lrdoctor (µs) | step with (µs) | in lrdoctor (µs/step) "
          "| in lrdoctor, % of bare step | end to end Δ, % of bare step |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, w0, w1, inside in rows:
        if inside == 0.0 and w0 == w1:
            print(f"| {label} | {w0 * 1e6:.0f} | – | – | – | – |")
            continue
        print(f"| {label} | {w0 * 1e6:.0f} | {w1 * 1e6:.0f} | {inside * 1e6:.1f} | "
              f"{100 * inside / base:.2f}% | {100 * (w1 - w0) / base:+.1f}% |")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())
