"""What a user's disk does to a log file, as hypothesis strategies: cut short, bits flipped, bytes
inserted or deleted, re-encoded (UTF-16 with or without BOM, Latin-1), line ends mixed, invalid
UTF-8 dropped in, an enormous cell or line. Shared by the reader property tests."""

from __future__ import annotations

import codecs

from hypothesis import strategies as st

#: Damage that keeps the bytes' meaning (same text, other encoding or line ends): a reader may
#: fail on it, but what it reads must be exactly points of the intact file.
SAME_TEXT = ("utf16_bom", "utf16le", "utf16be", "latin1", "line_ends")

byte_damage = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), min_size=1, max_size=6)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=40)),
    st.tuples(st.just("delete"), st.floats(0, 1), st.integers(1, 60)),
)

bad_bytes = st.one_of(
    st.tuples(st.just("invalid_utf8"), st.floats(0, 1),
              st.sampled_from([b"\xff", b"\xfe\xff", b"\xc3", b"\xed\xa0\x80", b"\x80abc", b"\xff\xfe"])),
    st.tuples(st.just("huge"), st.floats(0, 1), st.sampled_from([b"9", b"x", b" ", b"\xff", b",", b"\n"]),
              st.integers(100_000, 2_000_000)),
)

#: For binary logs (event files, .wandb, SQLite): no re-encoding, which only text survives.
binary_damage = st.one_of(byte_damage, bad_bytes)

text_damage = st.one_of(
    bad_bytes,
    st.tuples(st.sampled_from(SAME_TEXT)),
    st.tuples(st.just("line_ends"), st.lists(st.sampled_from([b"\r\n", b"\r", b"\n"]), min_size=1, max_size=8)),
)

#: Everything, for text logs (CSV, JSON, JSON Lines, MLflow metric files).
any_damage = st.one_of(byte_damage, text_damage)


def damaged(data: bytes, how: tuple) -> bytes:
    """``data`` after the damage ``how`` (one value of the strategies above)."""
    kind, *args = how
    buf = bytearray(data)
    if kind == "truncate":
        return bytes(buf[: int(args[0] * len(buf))])
    if kind == "flip":
        for where, xor in args[0]:
            if buf:
                buf[min(int(where * len(buf)), len(buf) - 1)] ^= xor
        return bytes(buf)
    if kind in ("utf16_bom", "utf16le", "utf16be", "latin1"):
        text = data.decode("utf-8")
        if kind == "utf16_bom":
            return codecs.BOM_UTF16_LE + text.encode("utf-16-le")
        if kind == "latin1":
            return text.encode("latin-1", errors="replace")
        return text.encode("utf-16-le" if kind == "utf16le" else "utf-16-be")
    if kind == "line_ends":
        ends = args[0] if args else [b"\r\n", b"\r", b"\n"]
        lines = data.split(b"\n")
        out = bytearray()
        for i, line in enumerate(lines):
            out += line
            if i < len(lines) - 1:
                out += ends[i % len(ends)]
        return bytes(out)
    at = int(args[0] * len(buf))
    if kind in ("insert", "invalid_utf8"):
        return bytes(buf[:at]) + args[1] + bytes(buf[at:])
    if kind == "huge":
        return bytes(buf[:at]) + args[1] * args[2] + bytes(buf[at:])
    if kind == "delete":
        return bytes(buf[:at]) + bytes(buf[at + args[1]:])
    raise ValueError(f"unknown damage {kind!r}")
