"""How the text reader numbers a plain tqdm bar's points and the dicts printed beside it: when a
description's ``Epoch N`` offsets the bar's counter, why its counter goes back, and when a dict
may take the step of the bar redrawn after it (see :mod:`.textlog`)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .textlog_shapes import BAR_SHAPES, Parsed


def _epoch_bar(p: Parsed) -> bool:
    return p.shape == BAR_SHAPES[0] and "epoch" in p.counters


def restarting_totals(updates: list[tuple[int, Parsed]]) -> set[int]:
    """The totals of the plain tqdm bars whose counter starts again at a new ``Epoch N`` (a bar
    per epoch), judged on every update with a postfix: at an epoch change the bar before had
    finished (``n == total``, close()'s redraw), or the counter went back, or it stayed while the
    postfix changed. One bar over the whole run, ``tqdm(total=...)`` with
    ``set_description(f"Epoch {e}")``, only moves on (its redraw at a new description repeats the
    counter and postfix)."""
    last: dict[int, Parsed] = {}  # per total: its last update
    restarts: set[int] = set()
    for _, p in updates:
        if _epoch_bar(p):
            c, before = p.counters, last.get(p.counters["batches"])
            if before is not None and before.counters["epoch"] != c["epoch"]:
                b = before.counters["batch"]
                if b == c["batches"] or c["batch"] < b or (c["batch"] == b and p.pairs != before.pairs):
                    restarts.add(c["batches"])
            last[c["batches"]] = p
    return restarts


def epochs_dropped(points: list[tuple[int, Parsed]], restarts: set[int]) -> list[tuple[int, Parsed]]:
    """A bar's ``Epoch N`` offsets its counter only when the counter restarts (see
    :func:`restarting_totals`); otherwise its counter is the step as printed, its epoch is dropped
    (an offset would make up steps), and a point repeating the one before (the redraw
    ``set_description`` makes) is no new point."""
    out: list[tuple[int, Parsed]] = []
    shown: dict[int, Parsed] = {}
    for lineno, p in points:
        if not _epoch_bar(p) or p.counters["batches"] in restarts:
            out.append((lineno, p))
            continue
        before = shown.get(p.counters["batches"])
        shown[p.counters["batches"]] = p
        if before is None or (before.counters["batch"], before.pairs) != (p.counters["batch"], p.pairs):
            out.append((lineno, replace(p, counters={k: v for k, v in p.counters.items() if k != "epoch"})))
    return out


def steps_hold(parsed: list[tuple[int, Parsed]], framed: list[tuple[int, int]]) -> bool:
    """Whether the bar's steps can be the dicts' global steps: they never go back over the file,
    and no metric gets one step twice with two values (Trainer's fractional epoch sits on a
    train and an eval dict at the same step with the same value). A bar that restarts each
    epoch, or whose counter is stale, gives repeated or going-back steps: then none is taken."""
    seen: dict[str, tuple[int, str]] = {}
    last = -1
    for k, step in framed:
        if step < last:
            return False
        last = step
        for name, value in parsed[k][1].pairs:
            if name in seen and seen[name][0] == step and seen[name][1] != value:
                return False
            seen[name] = (step, value)
    return True


def restart_reasons(bars: np.ndarray) -> list[str | None]:
    """Why the step goes back at each point: a plain tqdm bar without ``Epoch N`` that starts
    again (a new epoch's bar: its counter is the batch within the epoch), else the default."""
    out: list[str | None] = [None] * len(bars)
    for i in range(1, len(bars)):
        if bars[i] is not None and bars[i] == bars[i - 1]:
            name = f"'{bars[i]}' " if bars[i] else ""
            out[i] = (f"the tqdm bar {name}starts again, a new epoch's bar with no 'Epoch N' in its "
                      "description: its counter is the batch within the epoch")
    return out
