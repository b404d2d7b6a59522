"""A tiny real PyTorch training used by the verification tests (not collected by pytest).

Two ways to drive it, matching two of ``lrdoctor verify``'s rerun backends:

* template: ``python verify_train.py --lr {lr} --max-steps {max_steps} --seed {seed}
  --logdir {logdir} --clip {clip_grad_norm}`` - writes ``metrics.csv`` (step,train_loss,grad_norm,lr);
* controller: ``python verify_train.py --controller`` - everything comes from the environment
  through :class:`lrdoctor.Controller`, which writes the logs.

``--fail`` exits 3 after printing to stderr; ``--no-logs`` trains but writes nothing.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

if "--fail" in sys.argv:  # fail fast, before paying for the torch import
    print("training crashed: CUDA error: out of memory (simulated)", file=sys.stderr)
    sys.exit(3)

import torch  # noqa: E402


def make_problem(seed: int):
    g = torch.Generator().manual_seed(1234)  # the data is the same for every seed
    x = torch.randn(512, 8, generator=g)
    w = torch.randn(8, 1, generator=g)
    y = x @ w + 0.1 * torch.randn(512, 1, generator=g)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    return x, y, model


def batches(x, y, seed: int, batch: int = 32):
    g = torch.Generator().manual_seed(seed)
    while True:
        idx = torch.randint(0, len(x), (batch,), generator=g)
        yield x[idx], y[idx]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--max-steps", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--logdir", default=None)
    ap.add_argument("--clip", type=float, default=0.0)
    ap.add_argument("--controller", action="store_true")
    ap.add_argument("--fail", action="store_true")
    ap.add_argument("--no-logs", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    if args.controller:
        import lrdoctor
        from lrdoctor.verify.controller import seed_from_env

        seed = seed_from_env(default=args.seed)  # before the model, so each paired seed has its own init
        x, y, model = make_problem(seed)
        opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
        ctl = lrdoctor.Controller.from_env(opt, model, logdir=args.logdir)
        data = batches(x, y, seed)
        for _ in range(args.max_steps):
            xb, yb = next(data)
            ctl.step(torch.nn.functional.mse_loss(model(xb), yb))
            if ctl.should_stop:
                break
        ctl.close()
        return 0

    x, y, model = make_problem(args.seed)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    rows = []
    data = batches(x, y, args.seed)
    for step in range(1, args.max_steps + 1):
        xb, yb = next(data)
        loss = torch.nn.functional.mse_loss(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip if args.clip > 0 else math.inf))
        rows.append((step, float(loss.detach()), norm, args.lr))
        opt.step()
    if not args.no_logs and args.logdir:
        Path(args.logdir).mkdir(parents=True, exist_ok=True)
        with open(Path(args.logdir) / "metrics.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["step", "train_loss", "grad_norm", "lr"])
            w.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
