"""Regenerate tests/data/text/{lightning_tqdm,lightning_tqdm_diverge,lightning_rich,keras_fit}/ with the real printers.

    python scripts/make_textlog_fixtures.py [--only lightning|lightning-diverge|keras]

Each is what a training script printed, as ``nohup python train.py > train.log 2>&1`` keeps it
(stdout and stderr, not a terminal), and ``expected.json`` what the script logged, which the
text-reader tests compare against after the printer's own rounding. Too slow for every test
session (a Lightning or Keras start takes 10-30 s here), so the small output is committed.

- ``lightning_tqdm/train.log``: a Lightning ``Trainer`` with ``TQDMProgressBar`` (the default
  when rich is not installed),
  4 epochs of 8 batches, ``train_loss`` logged every step and ``val_loss`` every epoch (both
  ``prog_bar=True``), a CSVLogger (so the bar shows ``v_num``).
- ``lightning_rich/wide.log`` and ``narrow.log``: the same with ``RichProgressBar(leave=True)``
  (one finished bar per epoch) on a 200- and an 80-column console; on 80 columns rich wraps the
  metrics onto the next line. expected.json: ``trainer.progress_bar_metrics`` at each epoch end,
  with the epoch and ``trainer.global_step``.
- ``lightning_tqdm_diverge/train.log``: the tqdm run with the LR raised to 1e6 from epoch 2, so
  the loss overflows: the bar prints ``train_loss=inf.0`` / ``nan.0`` (Lightning pads each number
  to 5 characters).
- ``keras_fit/verbose1.log`` and ``verbose2.log``: Keras 3 (torch backend) ``model.fit`` of a
  one-layer regression, 3 epochs with a validation split, ``verbose=1`` and ``verbose=2``;
  expected.json is the returned ``History.history``. Needs ``pip install keras`` (with
  ``KERAS_BACKEND=torch`` it uses the installed torch; the dev extra installs it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "text"

LIGHTNING_SCRIPT = r'''
import json, sys, torch, lightning as L
from lightning.pytorch.callbacks import Callback, RichProgressBar, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

class Model(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)
    def training_step(self, batch, i):
        x, y = batch
        if DIVERGE and self.current_epoch >= 2:  # an LR far too high: the loss overflows to inf, then NaN
            for group in self.optimizers().optimizer.param_groups:
                group["lr"] = 1e6
        loss = torch.nn.functional.mse_loss(self.lin(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss
    def validation_step(self, batch, i):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.lin(x), y), prog_bar=True)
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)

DIVERGE = sys.argv[3:] == ["diverge"]

class Record(Callback):  # what the bar shows at each epoch's end, unrounded
    def __init__(self):
        self.epochs = []
    def on_train_epoch_end(self, trainer, module):
        self.epochs.append({"epoch": trainer.current_epoch, "global_step": trainer.global_step,
                            **{k: float(v) for k, v in trainer.progress_bar_metrics.items()}})

torch.manual_seed(0)
x = torch.randn(64, 4)
y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * torch.randn(64, 1)
data = DataLoader(TensorDataset(x, y), batch_size=8)
record = Record()
# named: Lightning 2.6 picks the rich bar by default when rich is installed
bars = [RichProgressBar(leave=True) if sys.argv[1] == "rich" else TQDMProgressBar()]
trainer = L.Trainer(max_epochs=4, accelerator="cpu", callbacks=[record, *bars], logger=CSVLogger("."),
                    enable_checkpointing=False, enable_model_summary=False, log_every_n_steps=1)
trainer.fit(Model(), data, data)
with open(sys.argv[2], "w") as fh:
    json.dump(record.epochs, fh, indent=1)
'''

KERAS_SCRIPT = r'''
import json, os, sys
os.environ["KERAS_BACKEND"] = "torch"
import numpy as np, keras
keras.utils.set_random_seed(0)
x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
y = x @ np.array([[1.0], [-2.0], [0.5], [3.0]], dtype="float32")
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse", metrics=["mae"])
history = model.fit(x, y, epochs=3, batch_size=8, validation_split=0.25, verbose=int(sys.argv[1]))
with open(sys.argv[2], "w") as fh:
    json.dump(history.history, fh, indent=1)
'''


def _run(script: str, args: list[str], log: Path, env: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as tmp, log.open("wb") as out:
        subprocess.run([sys.executable, "-c", script, *args], stdout=out, stderr=subprocess.STDOUT,
                       cwd=tmp, env={**os.environ, **env}, check=True)


def make_lightning() -> None:
    for name, bar, logs in (("lightning_tqdm", "tqdm", {"train.log": "200"}),
                            ("lightning_rich", "rich", {"wide.log": "200", "narrow.log": "80"})):
        out = DATA / name
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        expected: list = []
        for log, columns in logs.items():
            exp = out / f"{log}.json"
            _run(LIGHTNING_SCRIPT, [bar, str(exp)], out / log, {"COLUMNS": columns, "TQDM_MININTERVAL": "0"})
            expected.append(json.loads(exp.read_text()))
            exp.unlink()
        # the runs are seeded: each log of a directory shows the same numbers
        assert all(e == expected[0] for e in expected), "runs of the same seed differ"
        (out / "expected.json").write_text(json.dumps(expected[0], indent=1) + "\n")


def make_lightning_diverge() -> None:
    out = DATA / "lightning_tqdm_diverge"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    _run(LIGHTNING_SCRIPT, ["tqdm", str(out / "expected.json"), "diverge"], out / "train.log",
         {"COLUMNS": "200", "TQDM_MININTERVAL": "0"})


def make_keras() -> None:
    out = DATA / "keras_fit"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for verbose in (1, 2):
        _run(KERAS_SCRIPT, [str(verbose), str(out / "expected.json")], out / f"verbose{verbose}.log", {})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--only", choices=["lightning", "lightning-diverge", "keras"])
    args = p.parse_args(argv)
    if args.only in (None, "lightning"):
        make_lightning()
    if args.only in (None, "lightning", "lightning-diverge"):
        make_lightning_diverge()
    if args.only in (None, "keras"):
        make_keras()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
