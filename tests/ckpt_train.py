"""A plain user training script with its own checkpoints (not collected by pytest).

It knows nothing of lrdoctor: it saves ``{"model", "optimizer", "step"}`` with ``torch.save`` to
``<ckpt-dir>/ckpt_<step>.pt`` every ``--ckpt-every`` steps and resumes from ``--resume PATH
--start-step N``; it runs until the absolute step ``--max-steps`` and writes ``metrics.csv``
(step, train_loss, grad_norm, lr) into ``--logdir`` (on through NaN, as a plain script does, or
stopping at the first NaN/inf loss with ``--stop-on-nan``). The LR warms up linearly from 0 to ``--lr``
over ``--warmup`` steps (0: constant); ``--hidden`` is the MLP's width (wider: sharper, diverges
sooner at a given LR). The batch of step t is drawn from a generator seeded with
(seed, t), so a resumed run with the original seed replays the original exactly, and another
seed changes what comes after the fork. Verified in tests with::

    --train "python ckpt_train.py --resume {resume_from} --start-step {start_step}
             --max-steps {max_steps} --lr {lr} --seed {seed} --logdir {logdir} --warmup 6000"
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lr", type=float, required=True)
    ap.add_argument("--max-steps", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--logdir", required=True)
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--resume", default="")
    ap.add_argument("--start-step", type=int, default=0)
    ap.add_argument("--ckpt-every", type=int, default=0)
    ap.add_argument("--ckpt-dir", default=None)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--stop-on-nan", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    g = torch.Generator().manual_seed(1234)  # the data set is the same for every seed
    x = torch.randn(1024, 8, generator=g)
    y = torch.tanh(x @ torch.randn(8, 1, generator=g)) + 0.1 * torch.randn(1024, 1, generator=g)
    torch.manual_seed(args.seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, args.hidden), torch.nn.Tanh(),
                                torch.nn.Linear(args.hidden, 1))
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    start = 0
    if args.resume:
        state = torch.load(args.resume, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start = int(state["step"])
        if start != args.start_step:
            print(f"checkpoint is at step {start}, not {args.start_step}", file=sys.stderr)
            return 2
    ckpt_dir = Path(args.ckpt_dir or Path(args.logdir) / "ckpt")
    logdir = Path(args.logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    with open(logdir / "metrics.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "train_loss", "grad_norm", "lr"])
        for step in range(start + 1, args.max_steps + 1):
            lr = args.lr * min(1.0, step / args.warmup) if args.warmup else args.lr
            for group in opt.param_groups:
                group["lr"] = lr
            idx = torch.randint(0, len(x), (32,), generator=torch.Generator().manual_seed(args.seed * 100_003 + step))
            loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), math.inf))
            opt.step()
            w.writerow([step, float(loss.detach()), norm, lr])
            if args.stop_on_nan and not math.isfinite(float(loss.detach())):
                break
            if args.ckpt_every and step % args.ckpt_every == 0:
                ckpt_dir.mkdir(parents=True, exist_ok=True)
                torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step},
                           ckpt_dir / f"ckpt_{step}.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
