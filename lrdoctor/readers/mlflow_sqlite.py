"""MLflow's SQLite tracking store: ``mlflow.db`` (the default store since MLflow 3.7).

One file holds every experiment and run: ``experiments``, ``runs`` (name, experiment,
lifecycle), ``metrics`` (key, value, timestamp ms, step, is_nan), ``params``. MLflow stores a
NaN as ``0`` with ``is_nan = 1`` and clamps +-inf to +-DBL_MAX (SQLite has no infinity); both are
turned back into what the script logged. Deleted runs and experiments (MLflow's trash) are
not read, as the file store's ``.trash`` is not.

The database is opened through a read-only URI (``mode=ro``): lrdoctor never writes it and never
takes more than the shared lock of one read transaction, so a training still logging to it is
not disturbed (SQLite's ``immutable=1`` would skip even that lock, but then a concurrent write
could be read half-done; it is used only when a read-only open is impossible, e.g. a database in
WAL mode on a read-only disk, and the run says so). One store becomes one run per MLflow run
(discovery asks :meth:`MLflowSQLiteReader.expand`), named like file-store runs: the database's
directory, then the run's name.
"""

from __future__ import annotations

import sqlite3
import sys
import urllib.parse
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import LogFormatError
from ..model import Annotation, Run
from .base import Appended, ReadOptions, RunSource
from .mlflow import PARENT_TAG, _scalar, relation
from .tabular import backwards_annotations, cap, duplicate_annotations, one_line, tidy_frame

SQLITE_MAGIC = b"SQLite format 3\x00"
_TABLES = {"experiments", "runs", "metrics", "params"}
_DBL_MAX = sys.float_info.max
#: sqlite3 decodes the messages of a damaged store's errors as UTF-8 and can fail doing so.
_DB_ERRORS = (sqlite3.DatabaseError, UnicodeDecodeError)


def connect(path: Path) -> tuple[sqlite3.Connection, str | None]:
    """A read-only connection, and a note when it had to be opened as immutable."""
    uri = "file:" + urllib.parse.quote(str(path.resolve()))
    try:
        con = sqlite3.connect(uri + "?mode=ro", uri=True, timeout=10)
        con.text_factory = _text
        con.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        return con, None
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc):
            raise LogFormatError(f"the MLflow database is locked by a writer ({one_line(exc)})",
                                 path=str(path)) from exc
        try:
            con = sqlite3.connect(uri + "?mode=ro&immutable=1", uri=True)
            con.text_factory = _text
            con.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        except _DB_ERRORS as exc2:
            raise LogFormatError(f"cannot open the SQLite database read-only: {one_line(exc2)}",
                                 path=str(path)) from exc2
        return con, (f"opened as immutable (a read-only open failed: {one_line(exc)}); a write "
                     "in progress while reading could be missed")
    except _DB_ERRORS as exc:
        raise LogFormatError(f"not a readable SQLite database: {one_line(exc)}", path=str(path)) from exc


def _text(raw: bytes) -> str:
    """TEXT cells as str; a damaged store's bytes that are not UTF-8 show as U+FFFD instead of
    raising out of sqlite3's row fetch."""
    return raw.decode("utf-8", errors="replace")


def is_mlflow_db(path: Path, head: bytes) -> bool:
    if not head.startswith(SQLITE_MAGIC):
        return False
    try:
        con, _ = connect(path)
    except LogFormatError:
        return False
    try:
        names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except _DB_ERRORS:
        return False
    finally:
        con.close()
    return _TABLES <= names


def _runs(con: sqlite3.Connection) -> list[tuple[str, str, str, str]]:
    """(run_uuid, run name, experiment id, experiment name) of every live run, oldest first."""
    return [(str(u), str(n or ""), str(e), str(en or "")) for u, n, e, en in con.execute(
        "SELECT r.run_uuid, r.name, r.experiment_id, e.name FROM runs r "
        "LEFT JOIN experiments e ON e.experiment_id = r.experiment_id "
        "WHERE r.lifecycle_stage = 'active' AND coalesce(e.lifecycle_stage, 'active') = 'active' "
        "ORDER BY r.start_time, r.run_uuid")]


class MLflowSQLiteReader:
    name = "mlflow_sqlite"
    description = "MLflow SQLite store (mlflow.db: every experiment and run in one file)"

    def sniff(self, path: Path, head: bytes) -> bool:
        return is_mlflow_db(path, head)

    def expand(self, source: RunSource) -> list[RunSource]:
        """One source per live run in the store, named ``<db directory>/<run name>``; names shared
        by several runs get their experiment (``<dir>/<experiment>/<run name>``), then the run id."""
        path = source.files[0]
        con, _ = connect(path)
        try:
            runs = _runs(con)
        except _DB_ERRORS as exc:
            raise LogFormatError(f"cannot read the MLflow runs table: {one_line(exc)}", path=str(path)) from exc
        finally:
            con.close()
        if not runs:
            raise LogFormatError("an MLflow database with no runs", path=str(path))
        first = Counter(n or u for u, n, _, _ in runs)
        second = Counter(f"{en}/{n or u}" for u, n, _, en in runs)
        out = []
        for uuid, name, exp_id, exp_name in runs:
            own = name or uuid
            if first[own] > 1:
                own = f"{exp_name or exp_id}/{own}"
                if second[own] > 1:
                    own = f"{exp_name or exp_id}/{uuid}"
            out.append(replace(source, name=f"{source.name}/{own}", run_id=uuid,
                               path_name=f"{source.name}/{path.name}/{exp_id}/{uuid}"))
        return out

    def describe(self, source: RunSource) -> str | None:
        """The run's experiment and parent or nested runs (``mlflow.parentRunId`` tags), for
        naming a run left out; None when the store cannot tell."""
        if source.run_id is None:
            return None
        try:
            con, _ = connect(source.files[0])
        except LogFormatError:
            return None
        try:
            exp = con.execute("SELECT e.name FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id "
                              "WHERE r.run_uuid = ?", (source.run_id,)).fetchone()
            parent = con.execute("SELECT coalesce(p.name, t.value) FROM tags t LEFT JOIN runs p "
                                 "ON p.run_uuid = t.value WHERE t.key = ? AND t.run_uuid = ?",
                                 (PARENT_TAG, source.run_id)).fetchone()
            children = [str(n) for (n,) in con.execute(
                "SELECT coalesce(r.name, r.run_uuid) FROM tags t JOIN runs r ON r.run_uuid = t.run_uuid "
                "WHERE t.key = ? AND t.value = ? AND r.lifecycle_stage = 'active' ORDER BY r.start_time",
                (PARENT_TAG, source.run_id))]
        except _DB_ERRORS:  # a store without a tags table (or a damaged one): no relation to tell
            return None
        finally:
            con.close()
        return relation(str(exp[0]) if exp and exp[0] else None, str(parent[0]) if parent else None, children)

    def read(self, source: RunSource, options: ReadOptions) -> Run:
        return self._read(source, None)[0]

    def read_appended(self, source: RunSource, options: ReadOptions, cursor: object = None) -> Appended:
        """The rows the run gained since ``cursor`` (None: all of them), for ``lrdoctor watch``.

        MLflow only ever inserts metric rows (``log_metric``/``log_batch``; a repeat of an
        existing row is dropped by the primary key, never updated), and ``metrics`` is a rowid
        table whose new rows take the highest rowid + 1. So while the run's own last row read
        is still there, every row logged since has a higher rowid, and one range search of the
        run_uuid index (``rowid > last``) fetches just those. Rows go away only when ``mlflow
        gc`` hard-deletes a (trashed) run, and rowids change only if the table is rebuilt
        (``mlflow db upgrade``'s migrations, a ``VACUUM``): the table's highest rowid going
        down, or the run's last row read no longer being that row, means one of those
        happened, and the run is read again whole."""
        if not isinstance(cursor, StoreCursor):
            cursor = None
        run, cur, rows, whole = self._read(source, cursor)
        return Appended(run=run, cursor=cur, whole=whole, rows_read=rows)

    def _read(self, source: RunSource, after: StoreCursor | None) -> tuple[Run, StoreCursor, int, bool]:
        path = source.files[0]
        spath = str(path)
        con, note = connect(path)
        try:
            con.execute("BEGIN")  # one read transaction: a consistent snapshot, one shared lock
            uuid = source.run_id
            if uuid is None:
                runs = _runs(con)
                if len(runs) != 1:
                    raise LogFormatError(f"the store holds {len(runs)} runs; read it through discovery "
                                         "(a directory or the file as PATH)", path=spath)
                uuid = runs[0][0]
            top = con.execute("SELECT max(rowid) FROM metrics").fetchone()[0] or 0
            rows = None
            if after is not None and top >= after.table_max and _same_row(con, after):
                rows = _rows_after(con, uuid, after.rowid)
            whole = rows is None
            if rows is None:
                rows = _rows(con, uuid, spath)
            scalars, notes = _points(rows, spath)
            params = {k: _scalar(v) for k, v in con.execute(
                "SELECT key, value FROM params WHERE run_uuid = ? ORDER BY key", (uuid,))}
            if after is not None and not whole and not len(rows.rowid):
                cursor = replace(after, table_max=top)
            else:
                cursor = _cursor_at(con, rows, top)
        except (*_DB_ERRORS, ValueError, TypeError, OverflowError) as exc:
            # a damaged store can hold a text or out-of-range cell where a number belongs
            raise LogFormatError(f"cannot read the MLflow database: {one_line(exc)}", path=spath) from exc
        finally:
            con.close()
        if note:
            notes.insert(0, Annotation("immutable_open", note, path=spath))
        run = Run(name=source.name, source=f"{spath}#{uuid}", format=self.name, scalars=scalars,
                  hparams=params, step_axis="step", annotations=tuple(cap(notes)))
        return run, cursor, len(rows.rowid), whole


@dataclass(frozen=True)
class StoreCursor:
    """Where a followed run was read up to (see :meth:`MLflowSQLiteReader.read_appended`)."""

    rowid: int  # the run's last row read (0: it had none)
    row: tuple | None  # (run, key, step, timestamp*2+is_nan, value) of that row: is it still that row?
    table_max: int  # the table's highest rowid then: lower later means rows were removed and renumbered


def _cursor_at(con: sqlite3.Connection, rows: _Rows, top: int) -> StoreCursor:
    if not len(rows.rowid):
        return StoreCursor(0, None, top)
    last = int(rows.rowid.max())
    return StoreCursor(last, _row(con, last), top)


def _row(con: sqlite3.Connection, rowid: int) -> tuple | None:
    return con.execute(f"SELECT run_uuid, key, step, {_TS_NAN}, value FROM metrics WHERE rowid = ?",
                       (rowid,)).fetchone()


def _same_row(con: sqlite3.Connection, cursor: StoreCursor) -> bool:
    return cursor.row is None or _row(con, cursor.rowid) == cursor.row


@dataclass(frozen=True)
class _Rows:
    """A run's metric rows in rowid order (the order the script logged them in)."""

    keys: list[str]  # sorted
    code: np.ndarray  # each row's key, as an index into ``keys``
    step: np.ndarray
    ts_nan: np.ndarray  # timestamp (ms) * 2 + is_nan
    value: np.ndarray
    rowid: np.ndarray


_POINT = np.dtype([("ts_nan", np.int64), ("value", np.float64)])
#: timestamp * 2 + is_nan as one cell (a cell fewer per row is ~15% of the fetch); NULL, and so a
#: read error, for a cell that would not pack exactly: a damaged store's text or blob (SQLite
#: orders them after every number, so BETWEEN refuses them), an is_nan outside 0/1, a timestamp
#: beyond +-2**61 ms. BETWEEN rather than typeof(): the function calls cost what the cell saved.
_TS_NAN = ("CASE WHEN is_nan IN (0, 1) AND timestamp BETWEEN -2305843009213693951 AND 2305843009213693951 "
           "THEN timestamp * 2 + is_nan END")
_ROW = np.dtype([("rowid", np.int64), ("step", np.int64), ("ts_nan", np.int64), ("value", np.float64)])


def _ints(text: str) -> np.ndarray:
    # group_concat of integers is a well-formed list (row counts are checked by the caller)
    return np.fromstring(text, dtype=np.int64, sep=",")


def _rows(con: sqlite3.Connection, uuid: str, spath: str) -> _Rows:
    """All of a run's rows. Speed (benchmarks/ingest_speed.py, 1M rows): sqlite3 builds a Python
    object per cell, which is most of the cost, so each row is fetched once with the numbers only
    the table holds (two cells: value, and timestamp and is_nan packed), in rowid order through
    the run_uuid index. Key and step come from the (run_uuid, key, step) index without touching
    the table: per key, its rowids and steps as two texts of integers (exact), aligned with each
    other, which place keys and steps on the rows. One query per key was ~2x slower (SQLite
    plans it through the run_uuid index, re-scanning the whole run for every key)."""
    groups = con.execute("SELECT key, group_concat(rowid), group_concat(step) FROM metrics "
                         "WHERE run_uuid = ? GROUP BY key ORDER BY key", (uuid,)).fetchall()
    keys = [str(k) for k, _, _ in groups]
    rowids = [_ints(str(r)) for _, r, _ in groups]
    gsteps = [_ints(str(s)) for _, _, s in groups]
    pts = np.fromiter(con.execute(f"SELECT {_TS_NAN}, value FROM metrics "
                                  "WHERE run_uuid = ? ORDER BY rowid", (uuid,)), dtype=_POINT)
    counts = [len(r) for r in rowids]
    if sum(counts) != len(pts) or counts != [len(s) for s in gsteps]:  # index and table disagree
        raise LogFormatError(f"the metrics index lists {sum(counts)} rows of run {uuid} but the table "
                             f"holds {len(pts)} (a damaged database)", path=spath)
    empty = np.zeros(0, np.int64)
    rowid = np.concatenate(rowids) if rowids else empty
    by_rowid = np.argsort(rowid)  # rowids are unique
    # a small integer type lets the stable sorts in _points use radix sort
    code = np.repeat(np.arange(len(keys), dtype=np.int32), counts)[by_rowid]
    step = (np.concatenate(gsteps) if gsteps else empty)[by_rowid]
    return _Rows(keys, code, step, pts["ts_nan"], pts["value"], rowid[by_rowid])


def _rows_after(con: sqlite3.Connection, uuid: str, after: int) -> _Rows:
    """The run's rows past rowid ``after``: a few per poll, so one plain fetch of every cell."""
    got = con.execute(f"SELECT rowid, key, step, {_TS_NAN}, value FROM metrics "
                      "WHERE run_uuid = ? AND rowid > ? ORDER BY rowid", (uuid, after)).fetchall()
    names = [str(r[1]) for r in got]
    keys = sorted(set(names))  # the order of the full read's ORDER BY key (code points, as SQLite's BINARY)
    index = {k: i for i, k in enumerate(keys)}
    code = np.fromiter((index[n] for n in names), dtype=np.int32, count=len(names))
    arr = np.array([(r[0], r[2], r[3], r[4]) for r in got], dtype=_ROW)
    return _Rows(keys, code, arr["step"], arr["ts_nan"], arr["value"], arr["rowid"])


def _points(rows: _Rows, spath: str):
    """The tidy table of ``rows`` (and notes on steps going back or repeating): logged order
    across keys, NaN and +-inf as logged. Whole runs and appended rows both come through here."""
    keys, codes, step = rows.keys, rows.code, rows.step
    # logged order across keys: by time, ties by key then insertion order
    ts = rows.ts_nan >> 1  # floor division by 2: exact for negative times too
    order = np.argsort(codes, kind="stable")
    order = order[np.argsort(ts[order], kind="stable")]
    codes, steps, wall = codes[order], step[order], ts[order] / 1000.0
    value = rows.value[order]
    nan = (rows.ts_nan[order] & 1) != 0
    if nan.any():
        value[nan] = np.nan
    value[value == _DBL_MAX] = np.inf  # MLflow's stand-ins for +-inf
    value[value == -_DBL_MAX] = -np.inf
    notes: list[Annotation] = []
    loc = np.arange(len(steps))
    by_key = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[by_key], np.arange(len(keys) + 1))
    increasing = True
    for c, key in enumerate(keys):  # a step going back within one metric: a resumed script
        sel = by_key[bounds[c]:bounds[c + 1]]
        increasing = increasing and bool(np.all(np.diff(steps[sel]) > 0))
        notes += backwards_annotations(steps[sel], sel, spath, axis=f"step of {key!r}", loc_label="row")
    if not increasing:  # steps rising within every metric cannot repeat (saves a 1M-row sort)
        notes += duplicate_annotations(codes, steps, value, loc, keys, spath, loc_label="row")
    return tidy_frame(codes, keys, steps, wall, value), notes
