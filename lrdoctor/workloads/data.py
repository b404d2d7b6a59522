"""Synthetic data made locally and deterministically from the seed (nothing is downloaded).

- regression (mlp_regressor): 16 standard-normal features, a fixed smooth nonlinear target
  (sines plus pairwise products), plus Gaussian noise of std ``label_noise`` on training targets.
  deep_sigmoid_mlp gets the same inputs with clean 0/1 targets (is the target above 0?).
- images: 1x12x12 "images" of 4 classes: each class is a smoothed random prototype, each sample
  that prototype shifted by up to 2 pixels plus pixel noise; ``label_noise`` flips that fraction of
  training labels.
- chars: a character corpus from a small English-like grammar (subject, verb, object, adjectives,
  numbers, punctuation); ``train_size`` / ``val_size`` windows of SEQ_LEN+1 characters.

The function that makes the target, the prototypes and the grammar are fixed (seed 1234) so every
seed learns the same task; the samples and the batch order come from ``cfg.seed``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import WorkloadConfig

SEQ_LEN = 32
N_FEATURES = 16
N_CLASSES = 4
IMG = 12
_TASK_SEED = 1234

_SUBJ = ["the cat", "a dog", "my friend", "the old man", "she", "he", "the bird", "our teacher",
         "a small child", "the farmer", "every student", "the king"]
_VERB = ["sees", "likes", "finds", "wants", "keeps", "paints", "reads", "builds", "takes", "hears"]
_OBJ = ["the ball", "a red box", "the river", "an apple", "the letter", "a tall tree", "the moon",
        "a quiet song", "the green door", "some bread"]
_ADV = ["today", "again", "slowly", "at night", "every day", "with care", "in the rain", "quickly"]
VOCAB = sorted(set("".join(_SUBJ + _VERB + _OBJ + _ADV) + " .,?!0123456789\n"))


@dataclass(frozen=True)
class Dataset:
    task: str  # "regression" | "classification" | "lm"
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    n_in: int  # features, channels or vocabulary size
    n_out: int


def make_dataset(cfg: WorkloadConfig) -> Dataset:
    rng = np.random.default_rng([cfg.seed, 17])
    if cfg.workload in ("mlp_regressor", "deep_sigmoid_mlp"):
        return _regression(cfg, rng)
    if cfg.workload == "cnn_classifier":
        return _images(cfg, rng)
    return _chars(cfg, rng)


def _regression(cfg: WorkloadConfig, rng: np.random.Generator) -> Dataset:
    task = np.random.default_rng(_TASK_SEED)
    w = task.normal(size=(N_FEATURES, 8)) / np.sqrt(N_FEATURES)
    pairs = task.integers(0, N_FEATURES, size=(6, 2))

    def target(x: np.ndarray) -> np.ndarray:
        y = np.sin(x @ w).sum(1) + 0.3 * (x[:, pairs[:, 0]] * x[:, pairs[:, 1]]).sum(1)
        return y / 1.6  # std ~1.4 before label noise

    xt = rng.normal(size=(cfg.train_size, N_FEATURES))
    xv = rng.normal(size=(cfg.val_size, N_FEATURES))
    yt = target(xt) + cfg.label_noise * rng.normal(size=cfg.train_size)
    yv = target(xv)  # validation is clean: it measures the function, not the noise
    f32 = np.float32
    if cfg.workload == "deep_sigmoid_mlp":
        # Binary targets (is the clean target above its median?) for the sigmoid output unit.
        yt, yv = (target(xt) > 0).astype(f32), (yv > 0).astype(f32)
        return Dataset("binary", xt.astype(f32), yt[:, None], xv.astype(f32), yv[:, None], N_FEATURES, 1)
    return Dataset("regression", xt.astype(f32), yt.astype(f32)[:, None], xv.astype(f32),
                   yv.astype(f32)[:, None], N_FEATURES, 1)


def _images(cfg: WorkloadConfig, rng: np.random.Generator) -> Dataset:
    task = np.random.default_rng(_TASK_SEED)
    proto = task.normal(size=(N_CLASSES, IMG + 4, IMG + 4))
    # Smooth with a 3x3 box filter so classes differ in shapes, not single pixels.
    k = sum(np.roll(np.roll(proto, i, 1), j, 2) for i in (-1, 0, 1) for j in (-1, 0, 1)) / 3.0

    def sample(n: int, flip: float) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, N_CLASSES, size=n)
        dx, dy = rng.integers(0, 5, size=n), rng.integers(0, 5, size=n)
        x = np.stack([k[c, a:a + IMG, b:b + IMG] for c, a, b in zip(y, dx, dy, strict=True)])
        x = x + 1.6 * rng.normal(size=x.shape)
        if flip > 0:
            m = rng.random(n) < flip
            y = np.where(m, rng.integers(0, N_CLASSES, size=n), y)
        return x[:, None].astype(np.float32), y.astype(np.int64)

    xt, yt = sample(cfg.train_size, cfg.label_noise)
    xv, yv = sample(cfg.val_size, 0.0)
    return Dataset("classification", xt, yt, xv, yv, 1, N_CLASSES)


def sentence(rng: np.random.Generator) -> str:
    s = f"{rng.choice(_SUBJ)} {rng.choice(_VERB)} {rng.choice(_OBJ)}"
    if rng.random() < 0.5:
        s += f" {rng.choice(_ADV)}"
    if rng.random() < 0.2:
        s += f", {int(rng.integers(2, 99))} times"
    return s + rng.choice([".", ".", ".", "!", "?"]) + rng.choice([" ", " ", "\n"])


def _corpus(n_chars: int, rng: np.random.Generator) -> np.ndarray:
    parts: list[str] = []
    total = 0
    while total < n_chars:
        s = sentence(rng)
        parts.append(s)
        total += len(s)
    idx = {c: i for i, c in enumerate(VOCAB)}
    return np.array([idx[c] for c in "".join(parts)[:n_chars]], dtype=np.int64)


def _chars(cfg: WorkloadConfig, rng: np.random.Generator) -> Dataset:
    text_t = _corpus(cfg.train_size * 8 + SEQ_LEN + 1, rng)
    text_v = _corpus(cfg.val_size * 8 + SEQ_LEN + 1, rng)

    def windows(text: np.ndarray, n: int) -> np.ndarray:
        starts = rng.integers(0, len(text) - SEQ_LEN - 1, size=n)
        return np.stack([text[s:s + SEQ_LEN + 1] for s in starts])

    wt, wv = windows(text_t, cfg.train_size), windows(text_v, cfg.val_size)
    if cfg.label_noise > 0:
        m = rng.random(wt[:, 1:].shape) < cfg.label_noise
        wt[:, 1:] = np.where(m, rng.integers(0, len(VOCAB), size=m.shape), wt[:, 1:])
    return Dataset("lm", wt[:, :-1], wt[:, 1:], wv[:, :-1], wv[:, 1:], len(VOCAB), len(VOCAB))


class BatchOrder:
    """Fixed data order per seed: a new permutation each pass over the training set."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.bs = n, min(batch_size, n)
        self.seed = seed
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, 29, epoch]).permutation(self.n)}
        return self._perms[epoch]

    def indices(self, step: int) -> np.ndarray:
        """Indices of the batch for 1-based ``step`` (batches never straddle two passes)."""
        per_epoch = self.n // self.bs
        epoch, k = divmod(step - 1, per_epoch)
        return self._perm(epoch)[k * self.bs:(k + 1) * self.bs]
