"""Keras CSVLogger: ``epoch,<sorted metric names>`` rows, one per epoch.

Keras writes through ``csv.DictWriter`` (CRLF line ends), ``NA`` for a key an epoch did not log
(validation every k epochs), and in append mode keeps adding rows to the same file, so ``epoch``
restarts at 0: reported as a restart, every row kept. The step axis is the epoch.
"""

from __future__ import annotations

from pathlib import Path

from ..model import Run
from .base import ReadOptions, RunSource
from .csvfile import header_of, read_wide_csv


class KerasCSVReader:
    name = "keras_csv"
    description = "Keras CSVLogger (epoch,<metrics> rows; step axis = epoch)"

    def sniff(self, path: Path, head: bytes) -> bool:
        names = header_of(head)
        if not names or names[0] != "epoch" or "step" in names:
            return False
        rest = names[1:]
        return rest == sorted(rest)

    def read(self, source: RunSource, options: ReadOptions) -> Run:
        path = source.files[0]
        table, notes, _ = read_wide_csv(path, strict=options.strict, step_names=("epoch",),
                                        missing=("NA",))
        return Run(name=source.name, source=str(path), format=self.name, scalars=table,
                   step_axis="epoch", annotations=tuple(notes))
