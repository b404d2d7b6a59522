"""Regenerate tests/data/wandb_stepmetric/: a W&B run logged the way Lightning's WandbLogger logs
(``define_metric("*", step_metric="trainer/global_step")``, the train loss, the LR and the
validation metrics in separate ``wandb.log`` calls, each with ``trainer/global_step``), with a
loss spike at optimizer step 100 of 200.

    python scripts/make_wandb_stepmetric_fixture.py

Needs the ``wandb`` package (the dev extra); the small output is committed because starting
wandb's core is too slow for every test session.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "wandb_stepmetric"
STEPS, SPIKE = 200, 100


#: run in a process of its own: its exit is what flushes wandb's core to the file
SCRIPT = f"""
import math, wandb
run = wandb.init(project="lrdoctor-fixtures", mode="offline", dir=".", name="lightning-style", config={{"lr": 0.01}})
run.define_metric("trainer/global_step")
run.define_metric("*", step_metric="trainer/global_step", step_sync=True)
for step in range({STEPS}):
    loss = 25.0 if step == {SPIKE} else 2.0 * math.exp(-step / 40) + 0.1 + 0.01 * math.sin(step)
    wandb.log({{"train_loss_step": loss, "trainer/global_step": step}})
    wandb.log({{"lr-Adam": 0.01, "trainer/global_step": step}})
    if step % 25 == 24:
        wandb.log({{"val_loss": loss * 1.1, "epoch": step // 25, "trainer/global_step": step}})
run.finish()
"""


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DISABLE_CODE": "true",
               "WANDB_DISABLE_GIT": "true", "WANDB__DISABLE_STATS": "true"}
        subprocess.run([sys.executable, "-c", SCRIPT], cwd=tmp, env=env, check=True)
        src = next(Path(tmp, "wandb").glob("offline-run-*"))
        if OUT.exists():
            shutil.rmtree(OUT)
        dest = OUT / "wandb" / src.name
        dest.mkdir(parents=True)
        for f in src.glob("*.wandb"):
            shutil.copy2(f, dest / f.name)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
