"""Unstable epoch means: a loss that reached a low epoch early and then bounced far above it.

Kept apart from :mod:`.divergence`, which reports it, so that each module stays small.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import spearman_trend


@dataclass(frozen=True)
class Unstable:
    best: int  # index of the lowest epoch mean
    level: float  # the median of the epoch means after it
    low: float  # their minimum and maximum
    high: float
    turns: int  # direction changes between two large moves, from the best on
    moves: int  # epoch-to-epoch moves from the best on
    trend: float  # rank trend of the epoch means after the best (-1: falling steadily)


def unstable_epoch_means(x: np.ndarray, *, best_within: float, min_drop: float, ratio: float, min_after: int,
                         swing: float, min_turns: float, max_trend: float) -> Unstable | None:
    """Epoch means of a positive loss that reached their lowest point in the first ``best_within``
    of the run, at most ``1 - min_drop`` of the first epoch's mean, and then spent the rest of the
    run (``min_after`` points at least) with a median ``ratio`` x that lowest point or more,
    *bouncing*: at least ``min_turns`` of the epoch-to-epoch moves from the best on are turns
    (the loss changes direction between two moves of ``swing`` or more, relative), and the epochs
    after the best have no downward trend (rank trend above ``max_trend``).

    A higher median alone is not instability: a curriculum (easy data first), a loss term whose
    weight ramps up (Mean Teacher, KL annealing), progressive resizing or a rising augmentation
    schedule lift a healthy run's epoch means on purpose, then the loss falls smoothly or holds.
    Those rise at a few scheduled epochs; an LR too high to descend swings up and down every few
    epochs (an outside tester's Keras SGD run: 8 turns in 23 moves after its best, rank trend -0.3).
    The raw points, not a running median: each is already the mean of an epoch's steps, and on a
    25-epoch log a running median would wipe out the one epoch that shows how far it got."""
    n = len(x)
    if n < 2 or not bool(np.all(x > 0)):
        return None  # "x times its best" and relative moves need the loss's own zero
    b = int(np.argmin(x))
    after = x[b + 1:]
    if b == 0 or b >= best_within * n or len(after) < min_after:
        return None
    best = float(x[b])
    if best > (1.0 - min_drop) * float(x[0]):
        return None  # never fell far from its first epoch: nothing learned to lose
    level = float(np.median(after))
    if level < ratio * best:
        return None
    d = np.diff(np.log(x[b:]))
    big = np.abs(d) >= np.log1p(swing)
    turns = int(np.sum(big[1:] & big[:-1] & (np.sign(d[1:]) != np.sign(d[:-1]))))
    trend = spearman_trend(after)
    if turns < min_turns * len(d) or trend <= max_trend:
        return None  # a scheduled rise, then a smooth fall or a hold: not bouncing
    return Unstable(b, level, float(np.min(after)), float(np.max(after)), turns, len(d), trend)
