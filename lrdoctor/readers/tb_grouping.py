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
``add_hparams``) are kept with every attempt only when there is one, as before. Keras's layout is
the exception: a run made of ``train/`` + ``validation/`` alone (no file of its own) that was fit
several times into one ``log_dir`` holds one file per fit in each half. Each half is grouped as
above, and each validation attempt joins the train attempt that started last before it (by the
first wall time in its files): attempt k is train file k with the validation file of the same fit.
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


def _attempts(files: list[Path], pts: dict) -> tuple[list[list[Path]], set[Path]]:
    """``files`` (in the writer's order) as attempts, and the copies left out."""
    copies = {b for b in files for a in files if a != b and _contained(pts[b], pts[a])
              and (not _contained(pts[a], pts[b]) or files.index(a) > files.index(b))}
    attempts: list[list[Path]] = []
    merged: list[dict] = []
    for f in (f for f in files if f not in copies):
        if attempts and not _starts_again(pts[f], merged[-1]):
            attempts[-1].append(f)
            for tag, (s, v) in pts[f].items():
                old = merged[-1].get(tag)
                merged[-1][tag] = (np.concatenate([old[0], s]), np.concatenate([old[1], v])) if old else (s, v)
        else:
            attempts.append([f])
            merged.append(dict(pts[f]))
    return attempts, copies


def _copy_note(copies: set[Path]) -> list[str]:
    return [f"{len(copies)} event file(s) whose every point is in another file of the run (a copy) left "
            f"out: {', '.join(sorted(Path(c).name for c in copies))}"] if copies else []


def group_files(source: RunSource, decode, order) -> list[RunSource]:
    """The run sources ``source`` stands for: copies dropped, attempts split (see module doc).
    ``decode(path) -> FileScalars``; ``order(path)`` sorts a run's files by the writer's time."""
    root = Path(source.root)
    if root.is_file() or len(source.files) < 2:
        return [source]
    files = sorted(source.files, key=order)
    top = [f for f in files if Path(f).parent == root]
    if not top:
        return _split_halves(source, files, decode)
    if len(top) < 2:
        return [source]
    pts = {f: _points(decode(f)) for f in top}
    attempts, copies = _attempts(top, pts)
    note = _copy_note(copies)[0] if copies else None
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


def _split_halves(source: RunSource, files: list[Path], decode) -> list[RunSource]:
    """Keras's ``train/`` + ``validation/`` fit several times into one log_dir (see module doc)."""
    from .discovery import SPLIT_DIRS

    root = Path(source.root)
    halves: dict[Path, list[Path]] = {}
    for f in files:
        halves.setdefault(Path(f).parent, []).append(f)
    if len(halves) < 2 or any(d.parent != root or d.name not in SPLIT_DIRS for d in halves):
        return [source]
    decoded = {f: decode(f) for f in files}
    start = {f: float(decoded[f].wall_time.min()) if len(decoded[f].wall_time) else float("inf") for f in files}
    split: dict[Path, list[list[Path]]] = {}
    copies: set[Path] = set()
    for d, fs in halves.items():
        split[d], gone = _attempts(fs, {f: _points(decoded[f]) for f in fs})
        copies |= gone
    grouping = (*source.grouping, *_copy_note(copies))
    if all(len(a) == 1 for a in split.values()):
        return [replace(source, files=tuple(f for f in files if f not in copies), grouping=grouping)]
    # the half with the most attempts (train/: every fit writes it) anchors; each attempt of the
    # other halves joins the anchor attempt that started last before it
    anchor = max(split, key=lambda d: (len(split[d]), d.name == "train"))
    firsts = np.array([start[a[0]] for a in split[anchor]])
    runs: list[list[Path]] = [list(a) for a in split[anchor]]
    for d, attempts in split.items():
        if d == anchor:
            continue
        for a in attempts:
            k = max(int(np.searchsorted(firsts, start[a[0]], side="right")) - 1, 0)
            runs[k].extend(a)
    n = len(runs)
    return [replace(source, name=f"{source.name}#{k}", files=tuple(r),
                    grouping=(*grouping, f"event file(s) {', '.join(Path(f).parent.name + '/' + Path(f).name for f in r)}: "
                                         f"fit {k} of {n} into one Keras log_dir (each later fit logs its tags "
                                         "again from their first step; a validation file joins the train file "
                                         "that started last before it)"))
            for k, r in enumerate(runs, start=1)]
