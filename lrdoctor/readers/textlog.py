"""Plain-text training output (``nohup.out``, ``slurm-1234.out``, ``train.log``): the metrics a
script printed, in the line shapes of :mod:`.textlog_shapes`.

Only lines a shape understands become points; every other line is skipped and counted, and
``inspect`` lists the shapes recognised and the skipped count (an annotation). The step is the
line's own counter: ``step``/``iter``/``iteration``/``global_step`` as printed; a batch counter
that restarts every epoch (``Epoch [2/10], Step [100/600]``, tqdm's ``10/10``) becomes
``(epoch - first epoch) * batches + batch``, said in an annotation; Keras's ``Epoch 3/20``
header gives the epoch of the lines after it (step axis ``epoch``, numbered as printed). A plain
tqdm bar's ``\r`` updates are read one by one (:func:`_tqdm_points`); Lightning's bars, which show
epoch-level metrics on every update, only at each epoch's end (:func:`_last_finished_bars`).
Lines without any counter (HuggingFace Trainer's ``{'loss': ...}`` dicts) are numbered by
occurrence, per metric, and an annotation says so: no step is ever invented. A counterless
shape is only read when its set of names recurs (one ``Namespace(lr=0.1, ...)`` is not a series).

The reader is last in sniffing order and needs several recognised lines, so it never takes a
file a structured reader knows.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import LogFormatError
from ..model import Annotation, Run
from .base import ReadOptions, RunSource
from .tabular import backwards_annotations, cap, duplicate_annotations, one_line, tidy_frame
from .textfile import encoding_of
from .textlog_bars import epochs_dropped, restart_reasons, restarting_totals, steps_hold
from .textlog_shapes import (
    BAR_SHAPES,
    DICT_SHAPE,
    NONFINITE,
    RICH_WRAPPED,
    Parsed,
    bar_parts,
    clean,
    parse_line,
    rich_pairs,
)

#: How much of a file sniffing looks at, and how many metric lines it must find there.
SNIFF_BYTES = 256 * 1024
SNIFF_MIN_LINES = 3
_DAMAGED = re.compile("[\ufffd\x00-\x07\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f]")


def _decode(raw: bytes) -> str | None:
    """The text of a log's bytes in the encoding its byte-order mark announces (Windows
    PowerShell's ``>`` writes UTF-16 LE with a BOM), else UTF-8; None for binary data (NUL bytes
    in a file without a BOM). A code unit cut by sniffing's partial read shows as U+FFFD."""
    codec = encoding_of(raw[:4])
    if codec == "utf-8-sig" and b"\x00" in raw[:4096]:
        return None
    text = raw.decode(codec, errors="replace")
    return None if "\x00" in text[:4096] else text


class TextLogReader:
    name = "text"
    description = "printed training output (HF Trainer dicts, nanoGPT 'iter N: loss ...', Keras, key=value, ...)"

    def sniff(self, path: Path, head: bytes) -> bool:
        if _decode(head) is None:
            return False
        try:
            with path.open("rb") as fh:
                text = _decode(fh.read(SNIFF_BYTES))
        except OSError:
            return False
        if text is None:
            return False
        # "\n" only: str.splitlines would also split at the "\r" of every progress-bar update
        lines = text.split("\n")[:-1] if len(text) >= SNIFF_BYTES else text.split("\n")
        found = 0
        for line in lines:
            # each "\r" update of a tqdm bar counts: a whole bar is one physical line
            for part in line.split("\r") if "\r" in line else (line,):
                got = parse_line(clean(part))
                if got is not None and (got.pairs or got.shape == BAR_SHAPES[1]):  # rich: metrics may wrap
                    found += 1
                    if found >= SNIFF_MIN_LINES:
                        return True
        return False

    def read(self, source: RunSource, options: ReadOptions) -> Run:
        path = source.files[0]
        spath = str(path)
        try:
            text = _decode(path.read_bytes())
        except OSError as exc:
            raise LogFormatError(f"cannot read: {one_line(exc)}", path=spath) from exc
        if text is None:
            raise LogFormatError("not a text file (NUL bytes)", path=spath)
        parsed: list[tuple[int, Parsed]] = []
        skipped = 0
        damaged: list[int] = []
        wrapped = -2  # the line a rich bar (or its wrapped metrics) was last seen on
        lightning = is_lightning(text)
        framed: list[tuple[int, int | None]] = []  # each printed dict: its index, the bar's step
        lines = text.split("\n")
        del text  # the lines hold it: a big log is not kept twice
        cut = lines.pop() if lines and lines[-1].strip() else None  # no newline yet: being written
        for lineno, line in enumerate(lines, start=1):
            if _DAMAGED.search(line):  # undecodable bytes or control characters: no trusted number
                damaged.append(lineno)
                continue
            cleaned = clean(line)
            got = parse_line(cleaned)
            if got is None and wrapped == lineno - 1 and RICH_WRAPPED.match(cleaned):
                parsed[-1] = (parsed[-1][0], rich_pairs(parsed[-1][1], cleaned))  # a rich bar's
                wrapped = lineno  # metrics, wrapped onto the next lines by a narrow console
                continue
            wrapped = lineno if got is not None and got.shape == BAR_SHAPES[1] else -2
            if "\r" in line and got is not None and got.shape == BAR_SHAPES[1]:
                # a rich bar redrawn in a terminal shows an epoch's end before its validation
                # ran (the previous epoch's val values): only printed, final rich bars are read
                got = None
            if "\r" in line and not lightning:  # every update of a plain tqdm bar is considered
                updates = _bar_updates(line)
                parsed += [(lineno, p) for p in updates]
                if got is not None and got.shape == BAR_SHAPES[0]:
                    got = None  # the last update, already among them
                if got is None and updates:
                    continue
            elif "\r" in line:  # Lightning's updates overwrite each other: every finished bar counts
                parsed += [(lineno, p) for p in map(parse_line, map(clean, line.split("\r")[:-1]))
                           if p is not None and p.shape == BAR_SHAPES[0] and _finished(p)]
            if got is None:
                skipped += int(bool(line.strip()))
            else:
                if got.shape == DICT_SHAPE:
                    framed.append((len(parsed), _framed_step(line, lines, lineno)))
                parsed.append((lineno, got))
        notes = _dict_steps(parsed, framed, spath)
        if damaged:
            if options.strict:
                raise LogFormatError("damaged line (undecodable bytes or control characters)", path=spath,
                                     location=f"line {damaged[0]}")
            notes.append(Annotation("damaged_line", f"{len(damaged)} line(s) with undecodable bytes or control "
                                    "characters skipped", path=spath, location=f"line {damaged[0]}"))
        if cut is not None:
            if not lightning and "\r" in cut:
                # a tqdm bar still drawing (or its process killed): the updates before its last
                # "\r" are whole; only the one being written may be cut
                parsed += [(len(lines) + 1, p) for p in _bar_updates(cut[:cut.rindex("\r")])]
            what = "the last line has no line end (a file still being written, or cut)"
            got = parse_line(clean(cut))
            if options.strict and got is not None and got.pairs:  # a metric line left out, not a bar's redraw
                raise LogFormatError(what, path=spath, location=f"line {len(lines) + 1}")
            notes.append(Annotation("truncated", f"{what}; not read", path=spath, location=f"line {len(lines) + 1}"))
        lines.clear()  # (held by this frame while the run is built: a third of a big log's memory)
        return _to_run(source, spath, parsed, skipped, notes, lightning, len(damaged))


def _framed_step(line: str, lines: list[str], lineno: int) -> int | None:
    """The step of a printed dict when it sits between tqdm's clearing of the bar and the bar's
    redraw: HF Trainer prints its logs with ``tqdm.write``, which clears the bar (``\\r``, blanks,
    ``\\r``), prints the dict and redraws the bar at its current counter, the global step the dict
    was logged at (``on_step_end`` moved it there before ``on_log``). Only then: with stdout
    block-buffered (Python's default for a file, ``nohup python train.py > out.log 2>&1``) the
    dicts reach the file in chunks, far from their own redraw, and the bar beside a dict is another
    step (measured: 8 of 49 right; the redraw before a dict is a throttled, older counter)."""
    parts = line.split("\r")
    last = max(k for k, part in enumerate(parts) if part.strip())
    if last == 0 or clean(parts[last - 1]).strip():
        return None
    for following in lines[lineno:lineno + 3]:  # the redraw starts the next line
        for part in following.split("\r"):
            shown = clean(part)
            if shown.strip():
                bar = bar_parts(shown)
                # Trainer's training bar is tqdm(total=max_steps), moved by update(): no
                # description, no postfix. A loop's bar ("Epoch 3", per-epoch counters) or an
                # iterator's (its counter synced only when drawn: stale) is no global step
                trainer = bar is not None and not bar[0] and "=" not in bar[3]
                return bar[1] if trainer else None
    return None


def _dict_steps(parsed: list[tuple[int, Parsed]], framed: list[tuple[int, int | None]],
                spath: str) -> list[Annotation]:
    """Printed dicts take the bar's step when every one of them was redrawn-framed by Trainer's
    bar (see :func:`_framed_step`) and those steps hold as global steps (:func:`steps_hold`); one
    that was not means stdout reached the file apart from the bar, so none does (a dict numbered by
    step beside dicts numbered by occurrence is no series)."""
    steps = [(k, step) for k, step in framed if step is not None]
    if not framed or len(steps) < len(framed) or not steps_hold(parsed, steps):
        return []
    for k, step in steps:
        lineno, p = parsed[k]
        parsed[k] = (lineno, replace(p, counters={**p.counters, "step": step}))
    return [Annotation("bar_step", f"{len(framed)} printed dicts take the step of the progress bar redrawn "
                       "right after each (HF Trainer prints its logs with tqdm.write, which clears the bar, "
                       "prints and redraws it at the global step)", path=spath)]


#: Lightning's own marks: the logger's version on its bar, its validation and sanity-check bars.
_LIGHTNING_MARKS = ("v_num=", "Validation DataLoader", "Sanity Checking")


def is_lightning(text: str) -> bool:
    """Whether the bars of a log are Lightning's: its bar shows every metric logged so far, also
    those logged once an epoch, so its updates are read differently from a plain tqdm loop's."""
    return any(mark in text for mark in _LIGHTNING_MARKS)


def _bar_updates(line: str) -> list[Parsed]:
    """The tqdm bars (with a postfix) among the ``\r``-separated updates of one physical line."""
    return [p for p in (parse_line(clean(part)) for part in line.split("\r"))
            if p is not None and p.shape == BAR_SHAPES[0]]


def _finished(p: Parsed) -> bool:
    return p.counters.get("batch") == p.counters.get("batches")


def _last_finished_bars(parsed: list[tuple[int, Parsed]], shapes: tuple[str, ...]) -> list[tuple[int, Parsed]]:
    """Lightning's bars show the latest value of each metric at every update, so a metric logged
    once an epoch sits on every update of the next epoch's bar: only each epoch's last finished
    bar (``a/a``, after that epoch's validation) is read, the others are not points."""
    last: dict[tuple[str, int | None], int] = {}
    for i, (_, p) in enumerate(parsed):
        if p.shape in shapes and _finished(p) and p.pairs:
            last[(p.shape, p.counters.get("epoch"))] = i
    keep = set(last.values())
    return [lp for i, lp in enumerate(parsed) if lp[1].shape not in shapes or i in keep]


def _tqdm_points(parsed: list[tuple[int, Parsed]]) -> list[tuple[int, Parsed]]:
    """The updates of plain tqdm bars that show a value set at their counter.

    tqdm prints the bar at every ``update()`` (the counter moves on, the postfix is the one set
    before) and at every ``set_postfix()`` (same counter, the new postfix), and once more at
    ``close()`` (same counter, same postfix). So an update is a point when its postfix differs from
    the bar's previous update, or when it redraws the same counter (a ``set_postfix``) and is not
    that closing redraw; a second point at one counter replaces the first. A value set without a
    redraw (``refresh=False``) is read where the bar next shows it; a value printed identically at
    two counters under tqdm's default ``mininterval`` (updates not drawn) is one point: the bar
    shows nothing that tells a new value from a repeated one there. A bar is its description and
    total; it starts again when its counter goes back."""
    groups: dict[tuple[str, int], list[list[int]]] = {}  # per bar, the runs of its updates
    for i, (_, p) in enumerate(parsed):
        if p.shape != BAR_SHAPES[0]:
            continue
        runs = groups.setdefault((p.desc, p.counters["batches"]), [])
        if not runs or p.counters["batch"] < parsed[runs[-1][-1]][1].counters["batch"]:
            runs.append([])
        runs[-1].append(i)
    keep: set[int] = set()
    for runs in groups.values():
        for run in runs:
            shown: Parsed | None = None
            point: int | None = None
            for j, i in enumerate(run):
                p = parsed[i][1]
                same = shown is not None and p.counters["batch"] == shown.counters["batch"]
                changed = shown is None or (p.pairs, p.counters.get("step")) != (shown.pairs, shown.counters.get("step"))
                if changed or (same and j < len(run) - 1):
                    if point is not None and parsed[point][1].counters["batch"] == p.counters["batch"]:
                        keep.discard(point)
                    keep.add(i)
                    point = i
                shown = p
    return [lp for i, lp in enumerate(parsed) if lp[1].shape != BAR_SHAPES[0] or i in keep]


def _one_rank(parsed: list[tuple[int, Parsed]], spath: str, notes: list[Annotation]) -> list[tuple[int, Parsed]]:
    """Several ranks printing the same metrics (``[rank0]: step 5 loss ...``, torchrun's
    ``[default1]:``) are several runs' values at the same steps: merged they would be one zig-zag
    series. The lowest rank is read (rank 0: the one that logs in most scripts), said in a note."""
    ranks = sorted({p.rank for _, p in parsed if p.rank is not None and p.pairs})
    if len(ranks) < 2:
        return parsed
    notes.append(Annotation("ranks", f"lines of {len(ranks)} ranks ({', '.join(map(str, ranks[:8]))}"
                            f"{', ...' if len(ranks) > 8 else ''}); only rank {ranks[0]}'s are read", path=spath))
    return [lp for lp in parsed if lp[1].rank in (None, ranks[0])]


#: The range of a step: a counter beyond a 64-bit integer is no step a run took.
_STEP_RANGE = (-(2 ** 63), 2 ** 63 - 1)


def _numbers(text: list[str]) -> np.ndarray:
    """The printed numbers as floats: one vectorised conversion, then the spellings it cannot read
    (``nan.0``, ``-Infinity``, ``NaN``: :data:`NONFINITE`) again, only those (lower-casing every
    value made two more copies of a big log's strings)."""
    values = pd.to_numeric(pd.Series(text, dtype=object), errors="coerce").to_numpy(dtype=np.float64, copy=True)
    odd = np.flatnonzero(np.isnan(values))
    if len(odd):
        again = pd.Series([text[i] for i in odd], dtype=object).str.lower().str.replace(*NONFINITE, regex=True)
        values[odd] = pd.to_numeric(again, errors="coerce").to_numpy(dtype=np.float64)
    return values


def _to_run(source: RunSource, spath: str, parsed: list[tuple[int, Parsed]], skipped: int,
            notes: list[Annotation], lightning: bool, damaged: int = 0) -> Run:
    read = parsed  # cleared once its points are listed: the parsed lines are the reader's largest memory
    if lightning:
        parsed = _last_finished_bars(parsed, BAR_SHAPES)
    else:
        restarts = restarting_totals(parsed)
        parsed = _last_finished_bars(epochs_dropped(_tqdm_points(parsed), restarts), BAR_SHAPES[1:])
    parsed = _one_rank(parsed, spath, notes)
    shapes = Counter(p.shape for _, p in parsed)
    # counterless shapes count only when their names recur
    sets = Counter(frozenset(k for k, _ in p.pairs) for _, p in parsed if not p.counters and p.pairs)
    tag: list[str] = []
    text: list[str] = []
    step: list[int] = []  # -1: no counter, numbered by occurrence below
    locs: list[int] = []
    keras_epoch: int | None = None
    first_epoch: dict[str, int] = {}
    lone = 0
    huge: list[int] = []  # lines whose step is beyond int64
    combined: set[str] = set()
    # per point: the description of the plain tqdm bar it was read from when its counter is the
    # batch within an epoch that the bar does not name (so its restarts are epochs, not resumes)
    epoch_bar: list[str | None] = []
    for lineno, p in parsed:
        if p.keras_epoch is not None:
            keras_epoch = p.keras_epoch
            continue
        if not p.pairs:
            continue  # an unfinished progress update: the epoch's last one carries its values
        c = p.counters
        if not c and p.shape.startswith("Keras") and keras_epoch is not None:
            s = keras_epoch
        elif "step" in c:
            s = c["step"]
        elif "batch" in c and "batches" in c and "epoch" in c:
            e0 = first_epoch.setdefault(p.shape, c["epoch"])
            s = (c["epoch"] - e0) * c["batches"] + c["batch"]
            combined.add(p.shape)
        elif "batch" in c:
            s = c["batch"]
        elif "epoch" in c:
            s = c["epoch"]
        else:
            if sets[frozenset(k for k, _ in p.pairs)] < 2 and p.shape != "python dict":
                lone += 1
                continue
            s = -1
        if not _STEP_RANGE[0] <= s <= _STEP_RANGE[1]:
            huge.append(lineno)
            continue
        bar = p.desc if p.shape == BAR_SHAPES[0] and not lightning and "step" not in c and "epoch" not in c else None
        for k, v in p.pairs:
            tag.append(k)
            text.append(v)
            step.append(s)
            locs.append(lineno)
            epoch_bar.append(bar)
    if not tag:
        also = f", {damaged} more with undecodable bytes or control characters" if damaged else ""
        also += f", {len(huge)} with a step beyond a 64-bit integer" if huge else ""
        raise LogFormatError(f"no metric lines recognised ({skipped} lines skipped{also})", path=spath)
    if huge:
        notes.append(Annotation("step_out_of_range", f"{len(huge)} line(s) with a step counter beyond a 64-bit "
                                "integer skipped", path=spath, location=f"line {huge[0]}"))
    listed = "; ".join(f"{n} x {shape}" for shape, n in shapes.most_common())
    physical = len({lineno for lineno, _ in parsed})
    # a tqdm bar's "\r" updates share one physical line: each update is counted, not the line
    what = "lines" if physical == len(parsed) else f"lines and progress-bar updates (on {physical} line{'s' * (physical != 1)})"
    notes.append(Annotation("line_shapes", f"recognised {sum(shapes.values())} {what} ({listed}); "
                            f"{skipped + lone} lines skipped", path=spath))
    read.clear()
    parsed.clear()
    codes, names = pd.factorize(pd.Series(tag), sort=False)
    values = _numbers(text)
    steps = np.asarray(step, dtype=np.int64)
    loc = np.asarray(locs, dtype=np.int64)
    free = steps < 0
    if free.any():
        # occurrence index per metric: the n-th printed value of a name is point n
        order = np.argsort(codes[free], kind="stable")
        grp = codes[free][order]
        starts = np.r_[0, np.flatnonzero(np.diff(grp)) + 1]
        occ = np.arange(len(grp)) - np.repeat(starts, np.diff(np.r_[starts, len(grp)]))
        idx = np.flatnonzero(free)[order]
        steps[idx] = occ
        which = sorted({str(names[c]) for c in np.unique(codes[free])})
        notes.append(Annotation("no_step_counter", f"lines without a step counter ({', '.join(which[:8])}"
                                f"{', ...' if len(which) > 8 else ''}): each metric's points are numbered by "
                                "occurrence (0, 1, 2, ...), not by training step", path=spath,
                                location=f"line {int(loc[free][0])}"))
    for shape in sorted(combined):
        notes.append(Annotation("combined_step", f"{shape}: the batch counter restarts every epoch; step = "
                                "(epoch - first epoch) x batches per epoch + batch", path=spath))
    axis = "epoch" if shapes and all(s.startswith("Keras") for s in shapes) else "step"
    counted = ~free
    if counted.any():
        notes += backwards_annotations(steps[counted], loc[counted], spath, axis=axis,
                                       reasons=restart_reasons(np.asarray(epoch_bar, dtype=object)[counted]))
    notes += duplicate_annotations(codes, steps, values, loc, list(names), spath)
    return Run(name=source.name, source=spath, format="text", scalars=tidy_frame(codes, list(names), steps, None, values),
               step_axis=axis, annotations=tuple(cap(notes)))

