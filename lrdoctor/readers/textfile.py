"""Bytes of a log file as text, safely: only regular files are opened, encodings come from the
byte-order mark, bytes that are not UTF-8 are located (byte offset and line) instead of becoming
a traceback, and JSON numbers of any length parse.

Logs arrive copied from clusters and Windows machines: UTF-16 with a BOM (PowerShell, Excel),
Latin-1 cells, a half-written multibyte character at a cut. Each reader decides what a bad byte
costs (a skipped line, a cell that is no number, or the file); this module says where it is.
"""

from __future__ import annotations

import codecs
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import LogFormatError

#: BOM -> codec, longest first (the UTF-32-LE BOM starts with the UTF-16-LE one).
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
#: Python refuses int("9" * 4301) (CVE-2020-10735); a longer integer in a log is beyond float
#: range anyway and reads as the infinity it is.
_MAX_INT_DIGITS = 4000
_LINE_ENDS = re.compile(r"\r\n|\r|\n")


def check_regular(path: Path) -> os.stat_result:
    """The file's stat, or a LogFormatError when it is no regular file (a FIFO, a device such as
    ``/dev/zero`` behind a symlink, a socket): reading one could block forever or never end."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise LogFormatError(f"cannot read: {exc.strerror or exc}", path=str(path)) from exc
    if not stat.S_ISREG(st.st_mode):
        raise LogFormatError(f"not a regular file ({kind_of(st.st_mode)}); not read", path=str(path))
    return st


def kind_of(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a plain file"


def read_bytes(path: Path) -> bytes:
    """The whole file; LogFormatError (naming the file) when it is no regular file or unreadable.

    Reads at most the size it had when opened: a log still being appended to is read as it was.
    """
    size = check_regular(path).st_size
    try:
        with open(path, "rb") as fh:
            return fh.read(size)
    except OSError as exc:
        raise LogFormatError(f"cannot read: {exc.strerror or exc}", path=str(path)) from exc


@dataclass(frozen=True)
class CutLine:
    """A file whose last line has no line end (a log still being written, or cut short)."""

    line: int  # that line's 1-based number
    text: str  # what it holds (for the annotation)
    complete: bytes  # the file's bytes without it: every line up to and with its line end


def cut_line(path: Path) -> CutLine | None:
    """The file's last line when it has no line end and holds more than blanks, else None.

    A row cut mid-number (``50,15`` of ``50,15.0812``) parses as a plausible value, so a table
    reader must not read that line. Only the last bytes are read when the file ends with a line
    end (the usual case); UTF-16/32 files are decoded whole to find their last character.
    """
    size = check_regular(path).st_size
    try:
        with open(path, "rb") as fh:
            codec = encoding_of(fh.read(4))
            if codec == "utf-8-sig":
                fh.seek(max(size - 1, 0))
                if fh.read(1) in (b"\n", b"\r", b""):
                    return None
    except OSError as exc:
        raise LogFormatError(f"cannot read: {exc.strerror or exc}", path=str(path)) from exc
    data = read_bytes(path)
    if codec == "utf-8-sig":
        start = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
        complete, rest = data[:start], data[start:].decode("utf-8", errors="replace")
        # "\r\n", "\n" and a lone "\r" each end one line
        ends = complete.count(b"\n") + complete.count(b"\r") - complete.count(b"\r\n")
    else:
        text = data.decode(codec, errors="replace")
        start = max(text.rfind("\n"), text.rfind("\r")) + 1
        complete, rest = text[:start].encode(codec), text[start:]
        ends = len(_LINE_ENDS.findall(text, 0, start))
    if not rest.strip():
        return None
    return CutLine(ends + 1, rest, complete)


def encoding_of(head: bytes) -> str:
    """The codec a byte-order mark announces; UTF-8 (BOM optional) without one."""
    for bom, codec in _BOMS:
        if head.startswith(bom):
            return codec
    return "utf-8-sig"


def where(data: bytes, offset: int) -> str:
    """``line L, byte N`` of a byte offset (both 1-based line, 0-based byte as elsewhere)."""
    line = data.count(b"\n", 0, offset) + 1
    return f"line {line}, byte {offset}"


def decode(data: bytes, path: Path | str, errors: str = "strict") -> str:
    """Text of a log's bytes. With ``errors="strict"`` bytes that are not in the file's encoding
    are a LogFormatError naming the line and byte; other values are Python's error handlers
    (``"surrogateescape"`` keeps them findable per line, ``"replace"`` shows them as U+FFFD)."""
    codec = encoding_of(data[:4])
    try:
        return data.decode(codec, errors=errors)
    except UnicodeDecodeError as exc:
        start = exc.start + (3 if codec == "utf-8-sig" and data.startswith(codecs.BOM_UTF8) else 0)
        raise LogFormatError(f"not {_name(codec)} text: byte {data[start:start + 1]!r} cannot be decoded",
                             path=str(path), location=where(data, start)) from exc


def first_bad_byte(data: bytes) -> int | None:
    """Offset of the first byte that is not valid UTF-8, or None."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start
    return None


def has_escapes(line: str) -> bool:
    """Whether a line decoded with ``surrogateescape`` held bytes that are not UTF-8."""
    if line.isascii():
        return False
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _name(codec: str) -> str:
    return {"utf-8-sig": "UTF-8", "utf-16": "UTF-16", "utf-32": "UTF-32"}.get(codec, codec)


def _int(text: str) -> int | float:
    return int(text) if len(text) <= _MAX_INT_DIGITS else float(text)


def loads(text: str) -> Any:
    """``json.loads`` that reads an integer of any length (beyond float range: +-inf)."""
    return json.loads(text, parse_int=_int)


def load_json(path: Path, what: str) -> Any:
    """A whole-file JSON log; every way it can be bad is a LogFormatError naming line and column."""
    data = read_bytes(path)
    text = decode(data, path)
    try:
        return loads(text)
    except json.JSONDecodeError as exc:
        raise LogFormatError(f"cannot parse {what}: {exc.msg}", path=str(path),
                             location=f"line {exc.lineno}, column {exc.colno}") from exc
    except RecursionError as exc:
        raise LogFormatError(f"cannot parse {what}: nested too deeply", path=str(path)) from exc
    except ValueError as exc:  # e.g. a float literal Python rejects
        raise LogFormatError(f"cannot parse {what}: {exc}", path=str(path)) from exc


def clean_name(name: str) -> str:
    """A tag name that can be printed and written: a lone surrogate (``"\\ud800"`` in JSON) is
    shown as its escape rather than crashing every UTF-8 output."""
    if name.isascii():
        return name
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return name.encode("utf-8", "backslashreplace").decode("utf-8")
    return name
