"""Which character separates a CSV log's cells (comma, tab or semicolon), and whether its numbers
are written with a decimal comma, told from the file's text.

``df.to_csv(sep="\\t")``, ``.tsv`` exports and spreadsheets in European locales (``;`` between
cells, ``0,123`` for a number) all reach lrdoctor as "CSV". The delimiter is the one that splits
the header into named columns *and* splits the first data rows into as many cells: a comma CSV
whose text cells hold ``;`` or tabs still reads as commas (its rows do not split on them the way
its header does), and a ``;`` file's decimal commas never split its header. A ``.tsv`` name only
breaks a tie. :mod:`csv.Sniffer` is not used: it picks any character that repeats evenly (a
letter, a space) and raises on files it cannot decide, where this must pick one of three or none.

A decimal comma is read only in a file whose delimiter is not the comma, and only when no number
in it is written with a decimal point: a file that writes both (``0,5`` and ``1.500``) cannot
say which ``1,500`` means, and is an error naming both lines rather than a misread.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import LogFormatError
from .textfile import check_regular, encoding_of, read_bytes

DELIMITERS = (",", "\t", ";")
#: Rows after the header that vote for a delimiter (their cell count must match the header's).
SAMPLE_ROWS = 20


@dataclass(frozen=True)
class Dialect:
    delimiter: str = ","
    decimal: str = "."


COMMA = Dialect()


def delimiter_of(text: str, path: Path | str | None = None) -> str | None:
    """The delimiter of a CSV whose first characters are ``text``, or None when none of ``,``,
    tab, ``;`` splits its first line into two cells or more."""
    lines = [ln for ln in text.lstrip("\r\n").splitlines() if ln.strip()]
    if not lines:
        return None
    # The last line of a head may be cut mid-row; with other rows to vote it is not counted.
    header, rows = lines[0], lines[1:SAMPLE_ROWS + 1]
    if len(rows) > 1 and len(lines) <= SAMPLE_ROWS + 1 and not text.endswith(("\n", "\r")):
        rows = rows[:-1]
    order = DELIMITERS
    if path is not None and Path(path).suffix.lower() == ".tsv":
        order = ("\t", ",", ";")
    best, best_score = None, -1
    for d in order:
        width = _cells(header, d)
        if width < 2:
            continue
        score = sum(_cells(r, d) == width for r in rows)
        if score > best_score:  # ties keep the earlier (more usual) delimiter
            best, best_score = d, score
    return best


def _cells(line: str, delimiter: str) -> int:
    if delimiter not in line:
        return 1
    try:
        return len(next(csv.reader([line], delimiter=delimiter)))
    except (csv.Error, StopIteration):
        return 0


def _number(delimiter: str, point: str) -> re.Pattern[str]:
    """A whole cell holding a number written with ``point`` between its digits."""
    d, p = re.escape(delimiter), re.escape(point)
    return re.compile(rf'(?:^|{d})[ "]*[-+]?\d*{p}\d+(?:[eE][-+]?\d+)?[ "]*(?={d}|\r|\n|$)', re.MULTILINE)


def decimal_of(text: str, delimiter: str, path: Path | str) -> str:
    """``","`` when the numbers of ``text`` (a whole file with ``delimiter``) use a decimal comma,
    else ``"."``; LogFormatError naming the file and both lines when it writes both."""
    if delimiter == ",":
        return "."
    comma = _number(delimiter, ",").search(text)
    if comma is None:
        return "."
    point = _number(delimiter, ".").search(text)
    if point is None:
        return ","
    (a, ta), (b, tb) = sorted((_line(text, m.start()), _cell(m.group())) for m in (comma, point))
    raise LogFormatError(
        f"numbers written with a decimal comma and with a decimal point ({ta!r} and {tb!r}): cannot "
        "tell which a number like '1,500' means; export with one decimal mark", path=str(path),
        location=f"line {a}" if a == b else f"lines {a} and {b}")


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _cell(match: str) -> str:
    return match.strip().strip(";\t").strip(' "')


def header_of(head: bytes, path: Path | None = None) -> list[str] | None:
    """The stripped column names of a CSV (comma, tab or semicolon separated; see
    :mod:`csv_dialect`) from its first bytes, or None."""
    text = head_text(head)
    return None if text is None else _header_names(text, path)


def head_text(head: bytes) -> str | None:
    """The first bytes of a CSV as text (None for binary), decoded as the whole file will be."""
    codec = encoding_of(head)
    if codec != "utf-8-sig":  # Windows tools write UTF-16
        width = 4 if codec == "utf-32" else 2
        return head[: len(head) // width * width].decode(codec, errors="ignore")
    if b"\x00" in head or not head.strip():
        return None
    # A byte that is not UTF-8 (a Latin-1 "é") is read as U+FFFD, as the whole file will be.
    return head.decode("utf-8-sig", errors="replace")


def _header_names(text: str, path: Path | None) -> list[str] | None:
    first = text.lstrip("\r\n").splitlines()[0] if text.strip() else ""
    delimiter = delimiter_of(text, path)
    if delimiter is None:
        return None
    try:
        names = next(csv.reader(io.StringIO(first), delimiter=delimiter))
    except (csv.Error, StopIteration):
        return None
    names = [n.strip() for n in names]
    if len(names) < 2 or sum(1 for n in names if n) < len(names) - 1:
        return None
    # A header row has names, not numbers, and not a printed line that happens to hold commas
    # ("step 100: train loss 2.31, val loss 2.40", "Epoch [1/10], Step [100/600], Loss: 0.23").
    if any(_is_number(n) or _PRINTED.search(n) for n in names if n):
        return None
    return names


def dialect_of(path: Path, source: Path | bytes) -> Dialect:
    """The delimiter and decimal mark of the CSV log at ``path`` (parsing ``source``). Only a file
    that is not comma-separated is decoded whole, to look for decimal commas."""
    if isinstance(source, Path):
        check_regular(path)
        with path.open("rb") as fh:
            head = fh.read(65536)
    else:
        head = source[:65536]
    text = head_text(head)
    delimiter = (delimiter_of(text, path) if text else None) or ","
    if delimiter == ",":
        return COMMA
    data = read_bytes(path) if isinstance(source, Path) else source
    whole = data.decode(encoding_of(data[:4]), errors="replace")
    return Dialect(delimiter, decimal_of(whole, delimiter, path))


#: "Loss: 0.23", "step=100", "loss 2.3456", "[1/10]"; not "metrics/mAP_0.5:0.95" (a YOLO column name)
_PRINTED = re.compile(r"[A-Za-z_)\]]\s*(?::\s+|=\s*)[-+]?\.?\d|\s[-+]?\d+\.\d+\S*$|\[\s*\d+\s*/\s*\d+\s*\]")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
