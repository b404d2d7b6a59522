"""The line shapes the text-log reader understands, each a regex and what it yields.

A shape turns one printed line into ``(counters, pairs)``: counters are the line's own step
numbers (``{"step": 100}``, ``{"epoch": 3, "batch": 100, "batches": 600}``), pairs the metrics
``[(name, text of the number)]``. Shapes are tried in order, most specific first; a line no shape
matches is skipped (and counted). Numbers are kept as printed text until one vectorised
conversion, so ``nan``/``inf`` stay what the script printed.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import dataclass

#: NaN and infinity as printers write them: ``nan``/``inf`` (Python, Keras, HF Trainer, rich bars),
#: ``nan.0``/``inf.0``/``-inf.`` (Lightning's tqdm bar pads every number to 5 characters), ``NaN``/
#: ``Infinity`` (JavaScript, Java); :data:`NONFINITE` strips the padding before conversion.
NUM = r"[-+]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|(?i:nan|inf(?:inity)?)(?:\.0*)?)"
#: ``nan.0`` -> ``nan``, ``-Infinity`` -> ``-inf`` (applied to lower-cased text).
NONFINITE = (r"^([-+]?)(nan|inf)(?:inity)?\.?0*$", r"\1\2")
#: A number that is a whole token (not the "100" of "100/600" nor part of a time "00:01").
_VALUE = rf"({NUM})(?:%|ms|s|it/s|s/it)?(?![\w/:.])"
#: Counter names: a pair with one of these names is the line's step, not a metric.
COUNTERS = {"step": "step", "global_step": "step", "steps": "step", "current_steps": "step", "iter": "step",
            "iteration": "step", "iterations": "step", "it": "step", "batch": "batch", "epoch": "epoch"}
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

#: A printed Python dict (``print(logs)``: single-quoted keys). A JSON object line is the JSON
#: Lines reader's, even when that file is damaged: the text reader never reinterprets it.
_DICT = re.compile(r"\{\s*'[^']+'\s*:.*\}")
#: transformers >= 4.46 prints floats as quoted text (``'loss': '2.31'``), older ones bare.
_DICT_PAIR = re.compile(rf"['\"]([^'\"]+)['\"]\s*:\s*(['\"]?)({NUM})\2\s*(?=[,}}])")
_TORCH = re.compile(r"Epoch\s*\[\s*(\d+)\s*/\s*(\d+)\s*\]\s*,?\s*(?:Step|Batch|Iter)\s*\[\s*(\d+)\s*/\s*(\d+)\s*\]",
                    re.IGNORECASE)
_COLON_PAIR = re.compile(rf"(?:^|[\s,|;\]\-])([A-Za-z][\w./ -]*?)\s*:\s*{_VALUE}")
_KERAS_EPOCH = re.compile(r"^\s*Epoch\s+(\d+)\s*/\s*(\d+)\s*$")
_KERAS_BAR = re.compile(r"^\s*(?:(\d+)/(\d+)\s+)?.*?\s-\s+[A-Za-z_][\w]*:\s*" + NUM)
_KERAS_PAIR = re.compile(rf"\s-\s+([A-Za-z_][\w]*):\s*{_VALUE}")
_LEAD = re.compile(r"^\s*(step|iter|iteration|it|global_step|epoch)\s*[:=]?\s*(\d+)(?:\s*/\s*\d+)?\s*[:,|\]]\s*(.*)$",
                   re.IGNORECASE)
_NAMED_PAIR = re.compile(rf"([A-Za-z][\w./-]*(?: [A-Za-z][\w./-]*)?)\s*[:=]?\s+{_VALUE}")
#: A tqdm bar after its ``{desc}: {percentage}%``: ``|{bar}| {n}/{total} [{elapsed}<{remaining}, {rate}{postfix}]``.
_BAR_TAIL = re.compile(r"\|[^|]*\|\s*(\d+)/(\d+)\s*\[([^\]]*)\]")
_EPOCH_DESC = re.compile(r"\bepoch\s*(\d+)", re.IGNORECASE)
#: Lightning's RichProgressBar: ``Epoch 3/9 ━━━━━╸━━ 32/32 0:00:01 • 0:00:00 45.2it/s v_num: 0 loss: 0.512``
_RICH = re.compile(r"^\s*Epoch\s+(\d+)/\S+\s+[\u2500-\u257f]+\s+(\d+)/(\d+)\s+(.*)$")
_RICH_PAIR = re.compile(rf"(?:^|\s)([A-Za-z_][\w./-]*):\s*{_VALUE}")
#: A line holding only ``name: value`` pairs: the metrics of a rich bar wrapped onto the next line.
RICH_WRAPPED = re.compile(rf"^\s*(?:[A-Za-z_][\w./-]*:\s*{NUM}\s*)+$")
DICT_SHAPE = "python dict"
#: Shapes of progress bars: only each epoch's finished bar is read (see textlog.py).
BAR_SHAPES = ("progress bar 'a/b [..., name=value]'", "rich progress bar 'Epoch e/E ━━ a/b ... name: value'")
_EQ_PAIR = re.compile(rf"(?:^|[\s,|;(\[])([A-Za-z_][\w./-]*)\s*=\s*{_VALUE}")


@dataclass(frozen=True)
class Parsed:
    shape: str
    counters: dict[str, int]
    pairs: list[tuple[str, str]]
    keras_epoch: int | None = None  # a Keras "Epoch 3/20" header: sets the epoch of later lines
    desc: str = ""  # a tqdm bar's description (``Epoch 3``): which bar an update belongs to


def clean(line: str) -> str:
    """The text a terminal would show last: ANSI codes gone, the last ``\\r`` segment with text."""
    line = _ANSI.sub("", line)
    if "\r" in line:
        parts = [p for p in line.split("\r") if p.strip()]
        line = parts[-1] if parts else ""
    return line.replace("\x08", "").rstrip("\n")


def _split(pairs: list[tuple[str, str]]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    counters: dict[str, int] = {}
    metrics: list[tuple[str, str]] = []
    for name, value in pairs:
        kind = COUNTERS.get(name.strip().lower())
        if kind and re.fullmatch(r"\d+", value):
            counters.setdefault(kind, int(value))
        else:
            metrics.append((name.strip(), value))
    return counters, metrics


def _dict_line(line: str) -> Parsed | None:
    m = _DICT.search(line)
    if not m:
        return None
    pairs = [(k, v) for k, _, v in _DICT_PAIR.findall(m.group(0))]
    if not pairs:
        return None
    try:  # a well-formed literal (nan/inf made names) is the strongest sign of a printed dict
        ast.parse(m.group(0), mode="eval")
    except SyntaxError:
        return None
    counters, metrics = _split(pairs)
    counters.pop("epoch", None)  # HF's fractional epoch is a metric, never a counter
    metrics = [(k, v) for k, v in pairs if COUNTERS.get(k.lower()) != "step"]
    return Parsed(DICT_SHAPE, counters, metrics)


def _torch_line(line: str) -> Parsed | None:
    m = _TORCH.search(line)
    if not m:
        return None
    rest = line[m.end():]
    pairs = [(k, v) for k, v in _COLON_PAIR.findall(rest)]
    if not pairs:
        return None
    counters = {"epoch": int(m.group(1)), "batch": int(m.group(3)), "batches": int(m.group(4))}
    return Parsed("Epoch [e/E], Step [s/S], Name: value", counters, pairs)


def _keras_line(line: str) -> Parsed | None:
    m = _KERAS_EPOCH.match(line)
    if m:
        return Parsed("Keras 'Epoch e/E' header", {}, [], keras_epoch=int(m.group(1)))
    m = _KERAS_BAR.match(line)
    if not m:
        return None
    pairs = _KERAS_PAIR.findall(line)
    if not pairs:
        return None
    if m.group(1) and m.group(1) != m.group(2):
        return Parsed("Keras progress (epoch not finished)", {"partial": 1}, [])
    return Parsed("Keras epoch end ' - name: value'", {}, pairs)


def bar_parts(line: str) -> tuple[str, int, int, str] | None:
    """A tqdm bar's description, counter ``n``, ``total`` and the text inside its ``[...]``
    (elapsed, rate, postfix), or None: ``Epoch 1:  45%|████▌     | 90/200 [00:12<00:15, 7.10it/s, loss=0.312]``."""
    pct = line.find("%|")
    if pct < 0:
        return None
    # plain string scans, not a pattern: "(.*):\s*\d+%" backtracks over a long line
    head = line[:pct]
    desc = head.rstrip("0123456789")
    if not 1 <= len(head) - len(desc) <= 3:
        return None
    desc = desc.strip()
    if desc:
        if not desc.endswith(":") or "|" in desc:
            return None
        desc = desc[:-1].rstrip()
    m = _BAR_TAIL.match(line, pct + 1)
    if not m:
        return None
    return desc, int(m.group(1)), int(m.group(2)), m.group(3)


def _bar_line(line: str) -> Parsed | None:
    """A tqdm bar with a postfix (tqdm's own format; Lightning's ``TQDMProgressBar`` uses it
    too). The epoch is the description's ``Epoch N``; other descriptions name the bar."""
    parts = bar_parts(line)
    if parts is None:
        return None
    desc, n, total, inside = parts
    pairs = [(k, v) for k, v in _EQ_PAIR.findall(" " + inside.replace(",", " ")) if k != "v_num"]
    if not pairs:
        return None
    counters, metrics = _split(pairs)
    counters.update({"batch": n, "batches": total})
    epoch = _EPOCH_DESC.search(desc)
    if epoch:
        counters["epoch"] = int(epoch.group(1))
    return Parsed(BAR_SHAPES[0], counters, metrics, desc=desc) if metrics else None


def _rich_line(line: str) -> Parsed | None:
    m = _RICH.match(line)
    if not m:
        return None
    # kept without pairs too: a narrow console wraps the metrics onto the next line
    return rich_pairs(Parsed(BAR_SHAPES[1], {"epoch": int(m.group(1)), "batch": int(m.group(2)),
                                             "batches": int(m.group(3))}, []), m.group(4))


def rich_pairs(bar: Parsed, text: str) -> Parsed:
    """``bar`` with the ``name: value`` pairs of ``text`` added (``v_num``, the logger's version, is
    no metric)."""
    return Parsed(bar.shape, bar.counters, bar.pairs + [(k, v) for k, v in _RICH_PAIR.findall(text) if k != "v_num"])


def _lead_line(line: str) -> Parsed | None:
    m = _LEAD.match(line)
    if not m:
        return None
    pairs = _NAMED_PAIR.findall(m.group(3))
    if not pairs:
        return None
    counters, metrics = _split(pairs)
    counters.setdefault(COUNTERS[m.group(1).lower()], int(m.group(2)))
    return Parsed("counter first: 'iter N: name value, ...'", counters, metrics) if metrics else None


def _eq_line(line: str) -> Parsed | None:
    pairs = _EQ_PAIR.findall(line)
    if len(pairs) < 2:
        return None
    counters, metrics = _split(pairs)
    return Parsed("name=value ...", counters, metrics) if metrics else None


def _colon_line(line: str) -> Parsed | None:
    pairs = _COLON_PAIR.findall(line)
    if len(pairs) < 2:
        return None
    counters, metrics = _split(pairs)
    if not counters:  # "key: value" alone is too common in prose and config dumps
        return None
    return Parsed("name: value, ...", counters, metrics) if metrics else None


SHAPES: tuple[Callable[[str], Parsed | None], ...] = (
    _dict_line, _torch_line, _keras_line, _bar_line, _rich_line, _lead_line, _eq_line, _colon_line)


#: Longer lines are no metric line (an HF dict of 50 metrics is ~2,500 characters). The shapes'
#: findall patterns cost O(n^2) on some text (``"a " * n``: 1.6 s at n = 8,000 here), so a
#: damaged or binary file's megabyte "line" would hang the reader.
MAX_LINE = 4096


def parse_line(line: str) -> Parsed | None:
    if len(line) > MAX_LINE:
        return None
    for shape in SHAPES:
        got = shape(line)
        if got is not None:
            return got
    return None
