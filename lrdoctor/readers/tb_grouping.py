"""Which event files of one TensorBoard run directory belong together.

A directory often holds several ``events.out.tfevents.*`` files, and they mean different things:

* a *copy*: every point of one file is in another (a Lightning ``version_N`` holding a truncated
  early copy beside the full later file) -- the copy is dropped, or the run's points would
  all be doubled;
* a *continuation*: a later file whose tags start past the start of the earlier ones -- a resumed
  run, or HuggingFace's second file with only the end-of-run eval -- belongs to the same run;
* a *new attempt*: a later file that logs a tag of the earlier files again from its first step
  with other values -- another ``fit`` (Keras ``Logs/train`` collects one file per process) --
  is a run of its own, ``name#1``, ``name#2``, ... like an appended Keras CSV.

Only the files directly in the run directory are grouped this way; subdirectories (``add_scalars``,
``add_hparams``, Keras ``train/`` + ``validation/``) are kept with every attempt only when there is
one, as before.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from .base import RunSource


def _points(fs) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for i, tag in enumerate(fs.tag_names):
        m = fs.tag_id == i
        if m.any():
            out[tag] = (fs.step[m], fs.value[m])
    return out


def _contained(small: dict, big: dict) -> bool:
    """Every (tag, step, value) point of ``small`` is in ``big``."""
    if not small:
        return False
    for tag, (s, v) in small.items():
        if tag not in big:
            return False
        bs, bv = big[tag]
        order = np.argsort(bs, kind="stable")
        j = np.clip(np.searchsorted(bs[order], s), 0, len(bs) - 1)
        hit = (bs[order][j] == s) & ((bv[order][j] == v) | (np.isnan(bv[order][j]) & np.isnan(v)))
        if not bool(hit.all()):
            return False
    return True


def _starts_again(new: dict, attempt: dict) -> bool:
    """``new`` logs a tag of ``attempt`` again from that tag's first step, with other values."""
    for tag, (s, v) in new.items():
        if tag in attempt and len(s):
            first = int(attempt[tag][0].min())
            if int(s.min()) <= first and not _contained({tag: (s, v)}, {tag: attempt[tag]}):
                return True
    return False


def group_files(source: RunSource, decode, order) -> list[RunSource]:
    """The run sources ``source`` stands for: copies dropped, attempts split (see module doc).
    ``decode(path) -> FileScalars``; ``order(path)`` sorts a run's files by the writer's time."""
    root = Path(source.root)
    if root.is_file() or len(source.files) < 2:
        return [source]
    files = sorted(source.files, key=order)
    top = [f for f in files if Path(f).parent == root]
    if len(top) < 2:
        return [source]
    pts = {f: _points(decode(f)) for f in top}
    copies = {b for b in top for a in top if a != b and _contained(pts[b], pts[a])
              and (not _contained(pts[a], pts[b]) or order(a) > order(b))}
    attempts: list[list[Path]] = []
    merged: list[dict] = []
    for f in (f for f in top if f not in copies):
        if attempts and not _starts_again(pts[f], merged[-1]):
            attempts[-1].append(f)
            for tag, (s, v) in pts[f].items():
                old = merged[-1].get(tag)
                merged[-1][tag] = (np.concatenate([old[0], s]), np.concatenate([old[1], v])) if old else (s, v)
        else:
            attempts.append([f])
            merged.append(dict(pts[f]))
    note = (f"{len(copies)} event file(s) whose every point is in another file of the run (a copy) left "
            f"out: {', '.join(sorted(Path(c).name for c in copies))}") if copies else None
    sub = [f for f in files if Path(f).parent != root]
    grouping = (*source.grouping, *([note] if note else []))
    if len(attempts) == 1:
        return [replace(source, files=tuple([*attempts[0], *sub]), grouping=grouping)]
    if sub:
        # several attempts and subdirectory files: which attempt they belong to is unknown, so
        # the directory stays one run as before (its restart notes say so)
        return [replace(source, files=tuple(f for f in files if f not in copies), grouping=grouping)]
    return [replace(source, name=f"{source.name}#{k}", files=tuple(a),
                    grouping=(*grouping, f"event file(s) {', '.join(Path(f).name for f in a)}: attempt {k} of "
                                         f"{len(attempts)} (each later attempt logs its tags again from their "
                                         "first step)"))
            for k, a in enumerate(attempts, start=1)]
