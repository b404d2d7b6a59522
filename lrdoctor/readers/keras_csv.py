"""Keras CSVLogger: ``epoch,<sorted metric names>`` rows, one per epoch.

Keras writes through ``csv.DictWriter`` (CRLF line ends) and ``NA`` for a key an epoch did not log
(validation every k epochs). The step axis is the epoch.

With ``CSVLogger(append=True)`` every new ``fit`` adds its rows to the same file, so ``epoch``
restarts (at 0, or wherever ``initial_epoch`` says). Judging that file as one curve would judge a
meaningless concatenation, so each attempt becomes its own run, ``name#1``, ``name#2``, ...: an
attempt starts at every row whose epoch is not above the previous row's (a resumed fit that
continues with the next epoch stays in the same attempt).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from ..model import Annotation, Run
from .base import FilePart, ReadOptions, RunSource
from .csv_dialect import header_of
from .csvfile import csv_columns, read_wide_csv


class KerasCSVReader:
    name = "keras_csv"
    description = "Keras CSVLogger (epoch,<metrics> rows; step axis = epoch; appended runs split)"

    def sniff(self, path: Path, head: bytes) -> bool:
        names = header_of(head, path)
        if not names or names[0] != "epoch" or "step" in names:
            return False
        rest = names[1:]
        return rest == sorted(rest)

    def expand(self, source: RunSource) -> list[RunSource]:
        """One source per attempt when the file holds several (``name#1``, ``name#2``, ...)."""
        try:
            columns, n, locs, _ = csv_columns(source.files[0], strict=False, missing=("NA",))
        except Exception:  # noqa: BLE001 - unreadable: read() reports it as one run
            return [source]
        epoch = columns.get("epoch")
        if epoch is None or n < 2:
            return [source]
        e = np.where(epoch.present, epoch.values, np.nan)
        starts = [0, *(np.flatnonzero(e[1:] <= e[:-1]) + 1).tolist()]
        if len(starts) == 1:
            return [source]
        bounds = list(zip(starts, [*starts[1:], n], strict=True))
        return [replace(source, name=f"{source.name}#{k}",
                        part=FilePart((lo, hi), (int(locs[lo]), int(locs[hi - 1])), k, len(bounds)))
                for k, (lo, hi) in enumerate(bounds, start=1)]

    def read(self, source: RunSource, options: ReadOptions) -> Run:
        path = source.files[0]
        part = source.part
        table, notes, _ = read_wide_csv(path, strict=options.strict, step_names=("epoch",),
                                        missing=("NA",), rows=slice(*part.rows) if part else None)
        if part:
            a, b = part.lines
            notes.insert(0, Annotation(
                "attempt", f"attempt {part.attempt} of {part.attempts} appended to "
                "this CSVLogger file (epoch restarts); read as its own run", path=str(path),
                location=f"lines {a}-{b}"))
        return Run(name=source.name, source=str(path), format=self.name, scalars=table,
                   step_axis="epoch", annotations=tuple(notes))
