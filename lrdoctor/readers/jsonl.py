"""JSON Lines logs: one JSON object per line with a step-like key.

LLaMA-Factory's ``trainer_log.jsonl`` uses ``current_steps`` (plus ``total_steps``, ``loss``,
``lr``, ``epoch``, explicit ``null`` for what a line did not log, and times as text such as
``"elapsed_time": "0:01:02"``). A line that is not valid JSON (a run still being written leaves a
truncated last line) is reported and skipped, or an error under ``--strict``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from ..errors import LogFormatError
from ..model import Annotation, Run
from .base import ReadOptions, RunSource
from .records import records_to_columns
from .tabular import one_line, pick, to_steps, wall_time_column, wide_to_tidy
from .textfile import decode, has_escapes, loads, read_bytes

STEP_KEYS = ("current_steps", "step", "global_step", "steps", "iteration", "iter", "_step",
             "trainer/global_step", "current_step", "epoch")
_LINE_END = re.compile(r"\r\n|\r|\n")
_STEP_KEY_RX = re.compile(rb'"(' + b"|".join(re.escape(k.encode()) for k in STEP_KEYS) + rb')"\s*:')


class JSONLinesReader:
    name = "jsonl"
    description = "JSON Lines: one object per line with a step key (LLaMA-Factory trainer_log.jsonl, ...)"

    def sniff(self, path: Path, head: bytes) -> bool:
        text = head.lstrip()
        if not text.startswith(b"{"):
            return False
        first, *rest = re.split(rb"\r\n|\r|\n", text, maxsplit=1)  # any line end, as read() splits
        if rest:
            try:
                obj = json.loads(first)
            except (ValueError, UnicodeDecodeError):
                return False
            return isinstance(obj, dict) and any(k in obj for k in STEP_KEYS)
        # The first line does not fit in the head: trust the name and a step key in sight.
        return path.suffix == ".jsonl" and bool(_STEP_KEY_RX.search(first))

    def read(self, source: RunSource, options: ReadOptions) -> Run:
        path = source.files[0]
        spath = str(path)
        # Bytes that are not UTF-8 cost their line only (surrogateescape keeps them findable).
        lines = _LINE_END.split(decode(read_bytes(path), path, errors="surrogateescape"))
        if lines and not lines[-1]:
            lines.pop()
        records, locs, notes = [], [], []
        for no, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                if has_escapes(line):
                    raise ValueError("bytes that are not UTF-8")
                obj = loads(line)
            except (ValueError, RecursionError) as exc:
                last = no == len(lines)
                why = getattr(exc, "msg", None) or ("nested too deeply" if isinstance(exc, RecursionError)
                                                    else one_line(exc))
                if options.strict:
                    raise LogFormatError(f"invalid JSON: {why}", path=spath, location=f"line {no}") from exc
                notes.append(Annotation("truncated" if last else "corrupt_record",
                                        f"line is not valid JSON ({why}); skipped",
                                        path=spath, location=f"line {no}"))
                continue
            if not isinstance(obj, dict):
                notes.append(Annotation("corrupt_record", "line is not a JSON object; skipped",
                                        path=spath, location=f"line {no}"))
                continue
            records.append(obj)
            locs.append(no)
        locs_arr = np.asarray(locs, dtype=np.int64)
        cols, more = records_to_columns(records, spath, locs_arr, strict=options.strict)
        notes += more
        step_key = pick(list(cols), STEP_KEYS)
        if step_key is None:
            raise LogFormatError(f"no step key (one of {', '.join(STEP_KEYS)})", path=spath)
        steps, more = to_steps(cols[step_key], spath, locs_arr)
        notes += more
        wt_name, wall = wall_time_column(cols)
        metrics = [c for k, c in cols.items() if k not in (step_key, wt_name)]
        axis = "epoch" if step_key == "epoch" else "step"
        table, more = wide_to_tidy(steps, locs_arr, metrics, spath, wall_time=wall, axis=axis)
        return Run(name=source.name, source=spath, format=self.name, scalars=table,
                   step_axis=axis, annotations=tuple(notes + more))
