"""Which character separates a CSV log's cells (comma, tab or semicolon), and whether its numbers
are written with a decimal comma, told from the file's text.

``df.to_csv(sep="\\t")``, ``.tsv`` exports and spreadsheets in European locales (``;`` between
cells, ``0,123`` for a number) all reach lrdoctor as "CSV". The delimiter is the one that splits
the header into named columns *and* splits the first data rows into as many cells: a comma CSV
whose text cells hold ``;`` or tabs still reads as commas (its rows do not split on them the way
its header does). When two split alike, the rows' content decides (:func:`delimiters_of`), and a
file it cannot decide is an error, not a guess. A ``.tsv`` name only breaks a tie.
:mod:`csv.Sniffer` is not used: it picks any character that repeats evenly (a letter, a space)
and raises on files it cannot decide, where this must pick one of three or none.

A decimal comma is read only in a file whose delimiter is not the comma, and is told by the number
columns (:func:`decimal_of`): a file whose varying number columns write both marks (``0,5`` and
``1.500``) cannot say which ``1,500`` means, and is an error naming both lines rather than a misread.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import LogFormatError
from .tabular import one_line
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
    best = delimiters_of(text, path)
    return best[0] if best else None


def delimiters_of(text: str, path: Path | str | None = None) -> tuple[str, ...]:
    """The delimiters that read the first characters of a CSV best, the likeliest first: one, or
    several when its content cannot tell them apart though it holds numbers (see
    :func:`dialect_of`), or none.

    First by how many rows split into the header's cell count; a tie (a ``;`` file whose decimal
    commas match the commas of its header names, ``step;loss, train`` over ``0;2,1``) by how many
    of those rows' cells are then numbers: the ``;`` reading gives ``0`` and ``2,1``, the comma
    one ``0;2`` and ``1``. A tie on both goes to the tab in a ``.tsv``, and with no number at stake
    to the more usual delimiter."""
    lines = [ln for ln in text.lstrip("\r\n").splitlines() if ln.strip()]
    if not lines:
        return ()
    # The last line of a head may be cut mid-row; with other rows to vote it is not counted.
    header, rows = lines[0], lines[1:SAMPLE_ROWS + 1]
    if len(rows) > 1 and len(lines) <= SAMPLE_ROWS + 1 and not text.endswith(("\n", "\r")):
        rows = rows[:-1]
    order = DELIMITERS
    if path is not None and Path(path).suffix.lower() == ".tsv":
        order = ("\t", ",", ";")
    scores = {}
    for d in order:
        width = _cells(header, d)
        if width >= 2:
            scores[d] = sum(_cells(r, d) == width for r in rows)
    if not scores:
        return ()
    top = max(scores.values())
    tied = [d for d in scores if scores[d] == top]  # in ``order``
    if len(tied) > 1:
        numbers = {d: _numbers(rows, d) for d in tied}
        most = max(numbers.values())
        tied = [d for d in tied if numbers[d] == most]
        if most == 0 or (order is not DELIMITERS and tied[0] == "\t"):  # nothing at stake, or a .tsv
            tied = tied[:1]
    return tuple(tied)


def _numbers(rows: list[str], delimiter: str) -> int:
    """How many cells of ``rows`` split by ``delimiter`` are numbers (in one decimal mark)."""
    kinds = [_kind(cell) for row in rows for cell in _split(row, delimiter)]
    plain = kinds.count("")
    if delimiter == ",":  # a comma file's decimal mark is the point
        return plain + kinds.count(".")
    return plain + max(kinds.count("."), kinds.count(","))


def _split(line: str, delimiter: str) -> list[str]:
    try:
        return next(csv.reader([line], delimiter=delimiter))
    except (csv.Error, StopIteration):
        return []


_PLAIN = re.compile(r"[-+]?(?:\d+(?:[eE][-+]?\d+)?|nan|inf|infinity)", re.IGNORECASE)
_WITH_POINT = r"[-+]?\d*\.\d+(?:[eE][-+]?\d+)?"
_WITH_COMMA = r"[-+]?\d*,\d+(?:[eE][-+]?\d+)?"
_MARKED = {".": re.compile(_WITH_POINT), ",": re.compile(_WITH_COMMA)}


def _kind(cell: str) -> str | None:
    """``""`` for a number with no decimal mark (``12``, ``1e-05``, ``nan``), ``"."`` or ``","``
    for one written with that mark, None for text."""
    cell = cell.strip()
    if _PLAIN.fullmatch(cell):
        return ""
    return next((mark for mark, pattern in _MARKED.items() if pattern.fullmatch(cell)), None)


def _cells(line: str, delimiter: str) -> int:
    return len(_split(line, delimiter)) if delimiter in line else 1


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
    return _decimal_by_column(text, delimiter, path)


def _decimal_by_column(text: str, delimiter: str, path: Path | str) -> str:
    """The decimal mark of a file holding cells written both ways, told by its number columns.

    A text column's cells never vote (``gpus=0,1``), nor does a column holding one value in every
    row when another column varies: a version ``1.2`` or a device list ``0,1`` is a label beside
    the metrics, which say the file's mark. Number columns that vary in both marks, or one column
    writing both, cannot say what ``1,500`` means: the error names a cell of each.
    """
    import pandas as pd  # only for a file with both marks: one vectorised split into columns

    # header=None and blank lines kept: row i is line i + 1 (a quoted cell holding a line end
    # would shift the lines named, not the decision)
    try:
        df = pd.read_csv(io.StringIO(text), sep=delimiter, header=None, dtype=str, keep_default_na=False,
                         skip_blank_lines=False, on_bad_lines="skip")
    except (pd.errors.ParserError, ValueError) as exc:  # a quote never closed
        raise LogFormatError(f"cannot parse CSV: {one_line(exc)}", path=str(path)) from exc
    votes: list[tuple[str, bool, int, str]] = []  # (mark, varies, first line, its cell)
    for j in df.columns:
        cells = df[j].iloc[1:].dropna().str.strip()  # NaN: a short row's missing cells
        cells = cells[cells != ""]
        marked = {m: cells.str.fullmatch(_MARKED[m].pattern) for m in ".,"}
        numbers = int(marked["."].sum() + marked[","].sum() + cells.str.fullmatch(_PLAIN.pattern, case=False).sum())
        if 2 * numbers <= len(cells):
            continue  # a text column
        firsts = {m: (int(hit.idxmax()) + 1, cells[hit.idxmax()]) for m, hit in marked.items() if hit.any()}
        if len(firsts) == 2:
            _both(path, firsts[","], firsts["."])
        for m, (line, cell) in firsts.items():
            votes.append((m, cells.nunique() > 1, line, cell))
    varying = {m: (line, cell) for m, varies, line, cell in reversed(votes) if varies}
    labels = {m: (line, cell) for m, varies, line, cell in reversed(votes) if not varies}
    for side in (varying, labels):
        if len(side) == 2:
            _both(path, side[","], side["."])
        if side:
            return next(iter(side))
    return "."


def _both(path: Path | str, comma: tuple[int, str], point: tuple[int, str]) -> None:
    (a, ta), (b, tb) = sorted((comma, point))
    raise LogFormatError(
        f"numbers written with a decimal comma and with a decimal point ({ta!r} and {tb!r}): cannot "
        "tell which a number like '1,500' means; export with one decimal mark", path=str(path),
        location=f"line {a}" if a == b else f"lines {a} and {b}")


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
    tied = delimiters_of(text, path) if text else ()
    if len(tied) > 1:
        raise LogFormatError(
            f"cannot tell whether its cells are separated by {' or '.join(map(repr, tied))}: the header "
            "and first rows split into as many cells, and as many numbers, either way; quote the "
            "header names or export with another separator", path=str(path), location="line 1")
    delimiter = tied[0] if tied else ","
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
