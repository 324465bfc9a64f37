"""The embedded store: one SQLite file in WAL mode, durable once ``write`` returns.

Layout: one table ``blocks(entity, key, fg_id, block, expires_at)`` keyed by (entity, key, fg_id), where
``key`` is :func:`~online_feature_store.store.keys.encode_key` of the key values. WAL mode lets several
processes read while one writes; ``synchronous=FULL`` fsyncs the WAL at each commit, so an acknowledged
write survives kill -9 and power loss. Expired rows are hidden on read; :meth:`SqliteStore.purge_expired`
deletes them all, and writes sweep the table for them a slice at a time, once per ``purge_interval``
seconds (:data:`SWEEP_ROWS` rows per slice, in key order, wrapping around).

There is no index on the expiry: keeping one cost ~2 µs of CPU per written row (a third of an upsert, every
write moving the row's entry), while the sweep costs milliseconds a minute.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from online_feature_store._native import sqlite_unframe
from online_feature_store.errors import InvalidInputError, UnavailableError
from online_feature_store.registry.model import Entity
from online_feature_store.store._checks import check_fg_ids, check_keys, check_writes
from online_feature_store.store.base import BlockWrite, KeyValues
from online_feature_store.store.keys import encode_key

__all__ = ["SqliteStore"]

log = logging.getLogger(__name__)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS blocks (
        entity TEXT NOT NULL,
        key TEXT NOT NULL,
        fg_id INTEGER NOT NULL,
        block BLOB NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (entity, key, fg_id)
    ) WITHOUT ROWID""",
    # files written before the sweep replaced it had an expiry index, which every write paid for
    "DROP INDEX IF EXISTS blocks_expiry",
)
_UPSERT_ROWS = 1024
"""Rows per upsert statement at most (fewer where SQLite allows fewer than 5 times this many variables)."""
_FRAMED = (
    "SELECT CAST(group_concat(printf('%08x%04x%08x', length(CAST(key AS BLOB)), fg_id, length(block)) "
    "|| CAST(key AS BLOB) || block, '') AS BLOB) "
)
"""The rows of a read as one value (see :meth:`SqliteStore._read_rows`). In a UTF-8 database (SQLite's
default, which this store never changes) concatenating and casting between text and blob keeps the bytes
as they are."""
_PURGE = "DELETE FROM blocks WHERE expires_at > 0 AND expires_at < ?"
_SWEEP_END = (
    "SELECT entity, key, fg_id FROM blocks WHERE (entity, key, fg_id) > (?, ?, ?) "
    "ORDER BY entity, key, fg_id LIMIT 1 OFFSET ?"
)
_SWEEP_SLICE = (
    "DELETE FROM blocks WHERE (entity, key, fg_id) > (?, ?, ?) AND (entity, key, fg_id) <= (?, ?, ?) "
    "AND expires_at > 0 AND expires_at < ?"
)
_SWEEP_TAIL = (
    "DELETE FROM blocks WHERE (entity, key, fg_id) > (?, ?, ?) AND expires_at > 0 AND expires_at < ?"
)
_SWEEP_START = ("", "", -1)
"""Before every row: entity labels are never empty."""
SWEEP_ROWS = 50_000
"""Rows one opportunistic sweep step looks at: ~20 ms here for rows of 265-byte blocks (a 1M-row table
is swept every 20 minutes at the default ``purge_interval``)."""
# SQLITE_MAX_VARIABLE_NUMBER is 999 on SQLite < 3.32; stay under it whatever the build.
_MAX_VARIABLES = 900


@functools.cache
def _upsert(rows: int) -> str:
    """One statement upserting ``rows`` rows of 5 values each; later rows of the same (key, FG) win."""
    values = ",".join(["(?,?,?,?,?)"] * rows)
    return (
        f"INSERT INTO blocks(entity, key, fg_id, block, expires_at) VALUES {values} "
        "ON CONFLICT(entity, key, fg_id) DO UPDATE SET "
        "block = excluded.block, expires_at = excluded.expires_at"
    )


def _upsert_rows(conn: sqlite3.Connection) -> int:
    """The largest power of two ≤ :data:`_UPSERT_ROWS` whose statement stays within the variable limit."""
    try:
        limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)  # type: ignore[attr-defined,unused-ignore]
    except AttributeError:  # Python < 3.11
        limit = 999
    rows = _UPSERT_ROWS
    while rows > 1 and 5 * rows > limit:
        rows //= 2
    return rows


class SqliteStore:
    """FG blocks in one SQLite file; safe to share between threads (one connection per thread) and to
    open from several processes at once."""

    def __init__(
        self, path: str | os.PathLike[str], *, busy_timeout: float = 10.0, purge_interval: float = 60.0
    ):
        """``busy_timeout``: seconds a write waits for another process's write lock before failing
        with ``UnavailableError``. ``purge_interval``: seconds between opportunistic purges (0 = never)."""
        self.path = Path(path)
        self._busy_timeout = busy_timeout
        self._purge_interval = purge_interval
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._pid = os.getpid()
        self._closed = False
        self._next_purge = time.monotonic() + purge_interval
        self._sweep_from: tuple[str, str, int] = _SWEEP_START
        self._upsert_rows = 0
        self._utf8 = False
        with self._errors("open"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._conn()
            for stmt in _SCHEMA:
                conn.execute(stmt)
            (encoding,) = conn.execute("PRAGMA encoding").fetchone()
            self._utf8 = encoding == "UTF-8"

    # -- connections ----------------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise UnavailableError(f"sqlite store {self.path} is closed")
        if os.getpid() != self._pid:
            # A connection must never cross fork(): the child opens its own and leaves the parent's alone.
            with self._lock:
                self._pid = os.getpid()
                self._connections = []
                self._local = threading.local()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.DataError as e:
            raise InvalidInputError(f"sqlite store {self.path}: {what}: {e}") from e
        except sqlite3.Error as e:
            if "too big" in str(e):
                raise InvalidInputError(f"sqlite store {self.path}: {what}: {e}") from e
            raise UnavailableError(f"sqlite store {self.path}: {what} failed: {e}") from e
        except OSError as e:
            raise UnavailableError(f"sqlite store {self.path}: {what} failed: {e}") from e

    # -- BlockStore -----------------------------------------------------------------------------------

    def ensure(self, entities: Sequence[Entity]) -> None:
        """Nothing to do: one table holds every entity (created when the store opens)."""

    def read(self, entity: Entity, keys: Sequence[KeyValues], fg_ids: Sequence[int]) -> list[list[bytes]]:
        """Blocks in batched ``IN`` queries (~900 keys and FGs each); expired rows read as ``b""``."""
        check_keys(entity, keys)
        check_fg_ids(entity, fg_ids)
        encoded = [encode_key(k) for k in keys]
        fgs = list(dict.fromkeys(fg_ids))
        found: dict[tuple[str, int], bytes] = {}
        if encoded and fgs:
            unique = list(dict.fromkeys(encoded))
            chunk = max(1, _MAX_VARIABLES - len(fgs) - 2)
            fg_marks = ",".join("?" * len(fgs))
            now = int(time.time())
            with self._errors("read"):
                conn = self._conn()
                many = len(unique) > chunk
                if many:  # one snapshot for all chunks
                    conn.execute("BEGIN")
                try:
                    for i in range(0, len(unique), chunk):
                        part = unique[i : i + chunk]
                        where = (
                            "FROM blocks WHERE entity = ? "
                            f"AND key IN ({','.join('?' * len(part))}) AND fg_id IN ({fg_marks}) "
                            "AND (expires_at = 0 OR expires_at >= ?)"
                        )
                        self._read_rows(conn, where, (entity.label, *part, *fgs, now), found)
                finally:
                    if conn.in_transaction:
                        conn.execute("COMMIT")
        return [[found.get((k, fg), b"") for fg in fg_ids] for k in encoded]

    def _read_rows(
        self,
        conn: sqlite3.Connection,
        where: str,
        params: Sequence[object],
        found: dict[tuple[str, int], bytes],
    ) -> None:
        """Adds the (key, FG) → block rows matching ``where`` to ``found``, as one framed value.

        Python's ``sqlite3`` releases the GIL around every step, one per result row; with another thread
        busy in Python, each re-acquisition can wait a switch interval (a 100-key, 3-FG read took ~1 s
        against a thread spinning in Python, 0.6 ms alone). So SQLite concatenates the rows into one
        value (``_FRAMED``: a fixed-width hex header of key length, FG id and block length, then the
        key's and the block's bytes), returned in one step and split natively (``sqlite_unframe``).
        When the rows together exceed SQLite's length limit (very large blocks), or in a database not
        encoded in UTF-8 (not one this store created), they are read row by row instead."""
        row = None
        if self._utf8:
            # "string or blob too big": the same rows are read one by one below (any other fault of the
            # query raises there)
            with contextlib.suppress(sqlite3.DataError):
                row = conn.execute(_FRAMED + where, params).fetchone()
        if row is None:
            for key, fg_id, block in conn.execute("SELECT key, fg_id, block " + where, params):
                found[(key, fg_id)] = block
            return
        if row[0] is not None:  # None: no row matched
            sqlite_unframe(row[0], found)

    def write(self, entity: Entity, writes: Sequence[BlockWrite]) -> None:
        """All ``writes`` in one transaction, fsynced before returning (later writes of the same
        (key, FG) in one call win)."""
        check_writes(entity, writes)
        if not writes:
            return
        label = entity.label
        values = [
            v
            for w in writes
            for v in (label, encode_key(w.key) if w.name is None else w.name, w.fg_id, w.block, w.expires_at)
        ]
        count = len(writes)
        with self._errors("write"):
            conn = self._conn()
            # Many rows per statement, not executemany: Python's sqlite3 releases the GIL around every
            # step, and with another thread busy in Python each re-acquisition can wait a whole switch
            # interval (5 ms per row measured with one busy thread; ~0.02 ms per row in 1,024-row
            # statements). Full statements first, then the rest in power-of-two pieces, so a
            # connection caches a dozen statements at most.
            size = self._upsert_rows or _upsert_rows(conn)
            self._upsert_rows = size
            conn.execute("BEGIN IMMEDIATE")
            try:
                at = 0
                while at < count:
                    while size > count - at:
                        size //= 2
                    conn.execute(_upsert(size), values[5 * at : 5 * (at + size)])
                    at += size
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        if self._purge_interval > 0 and time.monotonic() >= self._next_purge:
            self._next_purge = time.monotonic() + self._purge_interval
            try:
                self.sweep_step()
            except UnavailableError as e:  # the write itself succeeded; the next step will catch up
                log.warning("opportunistic purge of %s failed: %s", self.path, e)

    def purge_expired(self, now: int | None = None) -> int:
        """Deletes every row expired at ``now`` (default: the current time), scanning the whole table;
        returns how many."""
        with self._errors("purge"):
            cur = self._conn().execute(_PURGE, (int(time.time()) if now is None else now,))
            return cur.rowcount

    def sweep_step(self, now: int | None = None, rows: int = SWEEP_ROWS) -> int:
        """Deletes the rows expired at ``now`` among the next ``rows`` rows in key order after the last
        step's, starting over after the last row; returns how many. Writes call it every
        ``purge_interval`` seconds, so the whole table is swept in bounded slices."""
        at = int(time.time()) if now is None else now
        start = self._sweep_from
        with self._errors("purge"):
            conn = self._conn()
            end = conn.execute(_SWEEP_END, (*start, rows - 1)).fetchone()
            if end is None:  # the rest of the table: the next step starts over
                cur = conn.execute(_SWEEP_TAIL, (*start, at))
                self._sweep_from = _SWEEP_START
            else:
                cur = conn.execute(_SWEEP_SLICE, (*start, *end, at))
                self._sweep_from = (end[0], end[1], end[2])
            return cur.rowcount

    def ping(self) -> None:
        """Raises ``UnavailableError`` unless the file can be queried."""
        with self._errors("ping"):
            self._conn().execute("SELECT count(*) FROM sqlite_master").fetchone()

    def close(self) -> None:
        """Closes every thread's connection."""
        with self._lock:
            self._closed = True
            conns, self._connections = self._connections, []
        for conn in conns:
            conn.close()
