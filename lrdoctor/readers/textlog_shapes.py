"""The line shapes the text-log reader understands, each a regex and what it yields.

A shape turns one printed line into ``(counters, pairs)``: counters are the line's own step
numbers (``{"step": 100}``, ``{"epoch": 3, "batch": 100, "batches": 600}``), pairs the metrics
``[(name, text of the number)]``. Shapes are tried in order, most specific first; a line no shape
matches is skipped (and counted). Numbers are kept as printed text until one vectorised
conversion, so ``nan``/``inf`` stay what the script printed.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass

from .textlog_prefix import strip_prefix

#: NaN and infinity as printers write them: ``nan``/``inf`` (Python, Keras, HF Trainer, rich bars),
#: ``nan.0``/``inf.0``/``-inf.`` (Lightning's tqdm bar pads every number to 5 characters), ``NaN``/
#: ``Infinity`` (JavaScript, Java); :data:`NONFINITE` strips the padding before conversion.
#: One way only to split a digit run (``\d+(?:\.\d*)?``, not ``\d+\.?\d*``): the latter backtracks
#: through every split of a long run of digits before giving up, quadratic in its length.
NUM = r"[-+]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|(?i:nan|inf(?:inity)?)(?:\.0*)?)"
#: ``nan.0`` -> ``nan``, ``-Infinity`` -> ``-inf`` (applied to lower-cased text).
NONFINITE = (r"^([-+]?)(nan|inf)(?:inity)?\.?0*$", r"\1\2")
#: A number that is a whole token (not the "100" of "100/600" nor part of a time "00:01").
_VALUE = rf"({NUM})(?:%|ms|s|it/s|s/it)?(?![\w/:.])"
#: Counter names: a pair with one of these names is the line's step, not a metric.
#: fairseq's ``num_updates`` is its global optimizer step (its ``epoch 001:  100 / 5000`` counts
#: batches of the epoch); Lightning logs ``trainer/global_step`` to its loggers.
COUNTERS = {"step": "step", "global_step": "step", "steps": "step", "current_steps": "step", "iter": "step",
            "iteration": "step", "iterations": "step", "it": "step", "num_updates": "step",
            "trainer/global_step": "step", "batch": "batch", "epoch": "epoch"}
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

#: A printed Python dict (``print(logs)``: single-quoted keys). A JSON object line is the JSON
#: Lines reader's, even when that file is damaged: the text reader never reinterprets it.
#: Its start; the dict runs to the line's last ``}`` (a pattern ``{...:.*}`` would scan to the end
#: of the line from every ``{'a':`` of a line without ``}``: quadratic).
_DICT_HEAD = re.compile(r"\{\s*'[^']+'\s*:")
#: transformers >= 4.46 prints floats as quoted text (``'loss': '2.31'``), older ones bare.
_DICT_PAIR = re.compile(rf"['\"]([^'\"]+)['\"]\s*:\s*(['\"]?)({NUM})\2\s*(?=[,}}])")
_TORCH = re.compile(r"Epoch\s*\[\s*(\d+)\s*/\s*(\d+)\s*\]\s*,?\s*(?:Step|Batch|Iter)\s*\[\s*(\d+)\s*/\s*(\d+)\s*\]",
                    re.IGNORECASE)
#: ``name: value`` pairs (``Step: 100, Loss: 0.23``, ``grad norm: inf``): a name starts at a letter
#: after the line's start or one of these, may hold blanks, and ends before ``\s*:``.
_COLON_DELIMS = re.compile(r"[\s,|;\]\-]")
_COLON_NAME_RUN = re.compile(r"[\w./ -]*")  # matched on the reversed line: the run of name characters before a colon
_INNER_START = re.compile(r"[ -][A-Za-z]")  # a name start inside that run: after a blank or a dash
_COLON_VALUE = re.compile(rf":\s*{_VALUE}")
_LETTER = re.compile(r"[A-Za-z]")
_KERAS_EPOCH = re.compile(r"^\s*Epoch\s+(\d+)\s*/\s*(\d+)\s*$")
#: Keras's progress line ``12/50 [=====>....] - ETA: 1s - loss: 0.41``: its counter, then a pair
#: (searched apart: ``^\s*(a/b\s+)?.*?\s-\s+name:`` splits a run of blanks every way, quadratic).
_KERAS_COUNT = re.compile(r"(\d+)/(\d+)\s")
_KERAS_HAS_PAIR = re.compile(r"\s-\s+[A-Za-z_]\w*:\s*" + NUM)
_KERAS_PAIR = re.compile(rf"\s-\s+([A-Za-z_][\w]*):\s*{_VALUE}")
# ("\s*(?:[:=]\s*)?", not "\s*[:=]?\s*": two blanks runs side by side split a run every way)
_LEAD = re.compile(r"^\s*(step|iter|iteration|it|global_step|epoch)\s*(?:[:=]\s*)?(\d+)(?:\s*/\s*\d+)?\s*[-:,|\]]\s*(.*)$",
                   re.IGNORECASE)
#: ``loss 2.3456``, ``val loss 3.1``, ``time 12.3ms``: a name starts at the first letter of a run of
#: name characters (the lookbehind and the non-letter prefix): from a later letter of the same run
#: the match could only fail the same way, and trying each one is quadratic in the run's length.
_GLUED_PAIR = re.compile(rf"(?:[^\WA-Za-z]|[./-])*([A-Za-z][\w./-]*(?: [A-Za-z][\w./-]*)?)\s*(?:[:=]\s*)?\s{_VALUE}")
_NAMED_PAIR = re.compile(r"(?<![\w./-])" + _GLUED_PAIR.pattern)
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


@dataclass(frozen=True, slots=True)  # slots: one per metric line, a big log holds millions
class Parsed:
    shape: str
    counters: dict[str, int]
    pairs: list[tuple[str, str]]
    keras_epoch: int | None = None  # a Keras "Epoch 3/20" header: sets the epoch of later lines
    desc: str = ""  # a tqdm bar's description (``Epoch 3``): which bar an update belongs to
    rank: int | None = None  # the process rank a ``[rank1]:`` / ``[default1]:`` prefix names


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
    end = line.rfind("}")
    m = _DICT_HEAD.search(line, 0, end) if end > 0 else None
    if not m:
        return None
    text = line[m.start():end + 1]
    pairs = [(k, v) for k, _, v in _DICT_PAIR.findall(text)]
    if not pairs:
        return None
    try:  # a well-formed literal (nan/inf made names) is the strongest sign of a printed dict
        ast.parse(text, mode="eval")
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
    pairs = colon_pairs(line[m.end():])
    if not pairs:
        return None
    counters = {"epoch": int(m.group(1)), "batch": int(m.group(3)), "batches": int(m.group(4))}
    return Parsed("Epoch [e/E], Step [s/S], Name: value", counters, pairs)


def _keras_line(line: str) -> Parsed | None:
    m = _KERAS_EPOCH.match(line)
    if m:
        return Parsed("Keras 'Epoch e/E' header", {}, [], keras_epoch=int(m.group(1)))
    if not _KERAS_HAS_PAIR.search(line):
        return None
    pairs = _KERAS_PAIR.findall(line)
    if not pairs:
        return None
    m = _KERAS_COUNT.match(line, len(line) - len(line.lstrip()))
    if m and _KERAS_HAS_PAIR.search(line, m.end()) and m.group(1) != m.group(2):
        return Parsed("Keras progress (epoch not finished)", {"partial": 1}, [])
    # a counter among the pairs (``... - Step: 5 - loss: 2.3``) is the line's step, never a metric
    counters, metrics = _split(pairs)
    return Parsed("Keras epoch end ' - name: value'", counters, metrics) if metrics else None


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
    pairs = named_pairs(m.group(3))
    if not pairs:
        return None
    counters, metrics = _split(pairs)
    counters.setdefault(COUNTERS[m.group(1).lower()], int(m.group(2)))
    return Parsed("counter first: 'iter N: name value, ...'", counters, metrics) if metrics else None


def named_pairs(text: str) -> list[tuple[str, str]]:
    """``findall`` of the name-value pattern, starting names only at the first letter of a run
    (:data:`_NAMED_PAIR`) or right after the previous value (``loss 0.5-lr 0.1``: the run of
    ``-lr`` starts inside the value's run, where findall went on looking)."""
    pairs: list[tuple[str, str]] = []
    pos = 0
    while True:
        m = (_GLUED_PAIR.match(text, pos) if pos else None) or _NAMED_PAIR.search(text, pos)
        if not m:
            return pairs
        pairs.append((m.group(1), m.group(2)))
        pos = m.end()


def _eq_line(line: str) -> Parsed | None:
    pairs = _EQ_PAIR.findall(line)
    if len(pairs) < 2:
        return None
    counters, metrics = _split(pairs)
    return Parsed("name=value ...", counters, metrics) if metrics else None


def colon_pairs(line: str) -> list[tuple[str, str]]:
    """Every ``name: value`` pair of a line, in one pass over its colons.

    The same pairs as ``findall`` of ``(?:^|[\\s,|;\\]\\-])([A-Za-z][\\w./ -]*?)\\s*:\\s*VALUE`` (the
    pattern this replaces), without its cost: a name may hold blanks, so that pattern tried every
    word of a run of words as a name's start, each scanning on to the next colon (quadratic on
    ``a a a ...``). All those starts end at the same colon and the same value, so only the
    leftmost one can match: it is found once per colon, scanning back over the run before it."""
    pairs: list[tuple[str, str]] = []
    rev = line[::-1]
    n = len(line)
    pos = 0  # where the last pair ended: a name's delimiter is at or after it
    for value in _COLON_VALUE.finditer(line):  # only colons with a value can end a pair
        colon = value.start()
        lo = max(pos, line.rfind(":", pos, colon) + 1)  # no name holds a colon
        end = lo + len(line[lo:colon].rstrip())  # the name ends before "\s*:"
        run = n - _COLON_NAME_RUN.match(rev, n - end).end()  # the run of name characters before it
        if run < end and _LETTER.match(line, run) and (run == pos == 0 or (run > pos and _COLON_DELIMS.match(line, run - 1))):
            start = run
        else:
            inner = _INNER_START.search(line, max(run, pos), end)
            if not inner:
                continue
            start = inner.start() + 1
        pairs.append((line[start:end], value.group(1)))
        pos = value.end()
    return pairs


def _colon_line(line: str) -> Parsed | None:
    pairs = colon_pairs(line)
    if len(pairs) < 2:
        return None
    counters, metrics = _split(pairs)
    if not counters:  # "key: value" alone is too common in prose and config dumps
        return None
    return Parsed("name: value, ...", counters, metrics) if metrics else None


_SPACED_NAME = re.compile(r"[A-Za-z_][\w./-]*")
_SPACED_VALUE = re.compile(rf"({NUM})(?:%|ms|s|it/s|s/it)?")
_SPACED_COUNTER = re.compile(r"(\d+)(?:/\d+)?")


def _spaced_line(line: str) -> Parsed | None:
    """``epoch 3 step 100 loss 2.3456 lr 1.00e-03``, ``Iteration 10/1000 loss 2.3``: blank-separated
    ``name value`` pairs. Ambiguous in general (prose has words and numbers too), so read only
    when the tokens alternate name/number strictly to the line's end and one name is a counter
    with a whole number (``10/1000`` is counter 10 of 1000): the step is never invented."""
    tokens = line.replace(",", " ").split()
    if len(tokens) < 4 or len(tokens) % 2:
        return None
    counters: dict[str, int] = {}
    metrics: list[tuple[str, str]] = []
    for name, value in zip(tokens[::2], tokens[1::2], strict=True):
        if not _SPACED_NAME.fullmatch(name):
            return None
        kind = COUNTERS.get(name.lower())
        count = _SPACED_COUNTER.fullmatch(value) if kind else None
        if count:
            counters.setdefault(kind, int(count.group(1)))
        elif number := _SPACED_VALUE.fullmatch(value):
            metrics.append((name, number.group(1)))  # the number without its unit
        else:
            return None
    return Parsed("name value ... (blank-separated)", counters, metrics) if counters and metrics else None


_SLASH_LEAD = re.compile(r"^\s*\[\s*(\d+)\s*/\s*\d+\s*\]\s*(.*)$")


def _slash_lead_line(line: str) -> Parsed | None:
    """``[10/2000] loss: 2.3 lr: 1e-3``: the bracketed counter that starts the line is its step."""
    m = _SLASH_LEAD.match(line)
    if not m:
        return None
    counters, metrics = _split(named_pairs(m.group(2)))
    counters.setdefault("step", int(m.group(1)))
    return Parsed("'[n/N] name: value'", counters, metrics) if metrics else None


def _json_line(line: str) -> Parsed | None:
    """A JSON object printed among other output (a nohup.out holding ``print(json.dumps(logs))``
    and the script's other prints; a file of JSON lines only is the JSON Lines reader's): its
    numbers, counters by name."""
    text = line.strip()
    if not (text.startswith("{") and text.endswith("}")):
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    # str() of a JSON number is the text the other shapes read (nan, inf and -inf included)
    pairs = [(str(k), str(v)) for k, v in obj.items() if isinstance(v, int | float) and not isinstance(v, bool)]
    counters, metrics = _split(pairs)
    return Parsed("JSON object line", counters, metrics) if metrics else None


SHAPES: tuple[Callable[[str], Parsed | None], ...] = (
    _dict_line, _torch_line, _lead_line, _keras_line, _bar_line, _rich_line, _eq_line, _colon_line,
    _slash_lead_line, _spaced_line, _json_line)


def parse_line(line: str) -> Parsed | None:
    """The first shape that reads ``line`` once a logging/launcher prefix is stripped
    (:func:`.textlog_prefix.strip_prefix`), or None. Every pattern here costs time linear in the
    line's length (checked on adversarial lines by benchmarks/text_line_cost.py), so a line of
    any length is tried: a damaged file's megabyte "line" costs about a second, not hours."""
    message, rank = strip_prefix(line)
    for shape in SHAPES:
        got = shape(message)
        if got is not None:
            # one string per metric name, not one per line (most of a big log's memory)
            return Parsed(got.shape, got.counters, [(sys.intern(k), v) for k, v in got.pairs], got.keras_epoch,
                          got.desc, rank)
    return None
