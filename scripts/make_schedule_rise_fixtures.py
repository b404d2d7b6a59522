"""Regenerate tests/data/keras_schedule_rises/*.csv with the real Keras CSVLogger.

    KERAS_BACKEND=torch python scripts/make_schedule_rise_fixtures.py

Healthy runs whose epoch-mean training loss rises on purpose after an early low (the shapes a
"loss went back up" test must not call divergence), plus one run that bounces after its best as
an LR far too high makes it. The curves are drawn, not trained (a training for each would take
minutes and the shape is what is tested); the files are what ``keras.callbacks.CSVLogger`` writes
for those epoch logs, driven as ``fit`` drives it. Needs ``pip install keras`` (torch backend);
a Keras start takes 10-30 s here, so the small output is committed.

- ``curriculum.csv``: 4 epochs on an easy subset (the loss falls to ~0.3), then the full data:
  the loss steps up to ~0.9 and falls smoothly for 36 epochs; accuracy rises.
- ``mean_teacher.csv``: cross-entropy falls fast while a consistency term's weight ramps up
  (the sigmoid ramp exp(-5 (1 - t/T)^2) over 20 epochs), so the total rises smoothly, then holds.
- ``progressive_resizing.csv``: image size 128, 192, 256 from epochs 0, 6, 16 of 30: the loss
  steps up at each resize and falls after it, to a floor above the first phase's lowest epoch.
- ``rising_regularisation.csv``: mixup/augmentation strength raised every 5 epochs after a fast
  first fall: the loss climbs in steps and settles.
- ``bouncing_high_lr.csv``: falls to a low epoch, then swings up and down around twice that
  level for the rest of the run (an SGD LR far too high to descend into the basin).
Every curve carries 1.5% multiplicative epoch-to-epoch noise (a fixed seed), as real epoch means do.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "keras_schedule_rises"


def curves() -> dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]:
    rng = np.random.default_rng(7)

    def noisy(x: np.ndarray) -> np.ndarray:
        return x * (1.0 + 0.015 * rng.standard_normal(len(x)))

    out: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]] = {}
    t = np.arange(40, dtype=np.float64)
    easy = 0.25 + 1.3 * np.exp(-np.arange(4) / 1.0)
    full = 0.35 + 0.55 * np.exp(-np.arange(36) / 12.0)
    acc = np.r_[0.6 + 0.35 * (1 - np.exp(-np.arange(4))), 0.7 + 0.2 * (1 - np.exp(-np.arange(36) / 12.0))]
    out["curriculum"] = (noisy(np.r_[easy, full]), {"accuracy": acc})
    ce = 0.08 + 2.2 * np.exp(-t / 1.5)
    w = np.exp(-5.0 * (1.0 - np.minimum(t, 20) / 20) ** 2)
    out["mean_teacher"] = (noisy(ce + 0.9 * w), {"accuracy": 1 - 0.85 * np.exp(-t / 4)})
    # each resize throws the loss up (larger images, stronger augmentation with them) and it falls
    # again, to a floor above the small images' one: the run's lowest epoch is the first phase's
    starts, firsts, floors = (0, 6, 16, 30), (2.3, 0.95, 0.9), (0.3, 0.45, 0.42)
    loss = np.empty(30)
    for s, e, first, floor in zip(starts[:-1], starts[1:], firsts, floors, strict=True):
        k = np.arange(e - s, dtype=np.float64)
        loss[s:e] = floor + (first - floor) * np.exp(-k / (1.0 if s == 0 else 3.0))
    out["progressive_resizing"] = (noisy(loss), {"accuracy": 1 - 0.7 * loss / loss.max()})
    strength = np.minimum(t // 5, 4)
    reg = 0.2 + 1.8 * np.exp(-t / 1.2) + 0.12 * strength * (1 - 0.5 * np.exp(-(t % 5)))
    out["rising_regularisation"] = (noisy(reg), {"accuracy": 1 - 0.8 * np.exp(-t / 3)})
    b = 0.45 + 0.9 * np.abs(np.sin(1.7 * t[:25] ** 1.1)) * rng.uniform(0.4, 1.6, 25)
    b[:2] = (1.9, 0.4)
    out["bouncing_high_lr"] = (noisy(b), {"accuracy": np.clip(1 - b / 2.5, 0, 1)})
    return out


def write(path: Path, loss: np.ndarray, extra: dict[str, np.ndarray]) -> None:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    cb = keras.callbacks.CSVLogger(str(path))
    cb.on_train_begin()
    for e, v in enumerate(loss):
        logs = {"loss": float(v), "learning_rate": 1e-3, **{k: float(a[e]) for k, a in extra.items()}}
        cb.on_epoch_end(e, logs)
    cb.on_train_end()


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (loss, extra) in curves().items():
        write(OUT / f"{name}.csv", loss, extra)


if __name__ == "__main__":
    main()
