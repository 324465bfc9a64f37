"""The embedded registry backend: one SQLite file (WAL), no services.

Each entity, store and caller is one JSON document in ``docs``; ``meta.revision`` counts applied changes. An
apply is one ``BEGIN IMMEDIATE`` transaction, so concurrent applies from threads or processes serialize and
none is lost. Watchers poll the counter (one indexed read) every ``poll_interval`` seconds.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from online_feature_store.errors import UnavailableError
from online_feature_store.registry.backend import Change, plan_docs
from online_feature_store.registry.model import RegistryState
from online_feature_store.registry.serde import state_from_docs
from online_feature_store.registry.snapshot import Snapshot
from online_feature_store.registry.validate import HasData

__all__ = ["SqliteRegistry"]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS docs (kind TEXT NOT NULL, name TEXT NOT NULL, doc TEXT NOT NULL, "
    "PRIMARY KEY (kind, name))",
    "CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO meta (k, v) VALUES ('revision', 0)",
)


class SqliteRegistry:
    """The registry in the SQLite file at ``path`` (created with its parent directory when missing)."""

    def __init__(self, path: str | Path, *, poll_interval: float = 0.2, busy_timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.poll_interval = poll_interval
        self._busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = self._connect()
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA:
                self._conn.execute(statement)
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._conn.close()
            raise UnavailableError(f"cannot open registry {self.path}: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        # autocommit mode: transactions are explicit BEGIN/COMMIT below
        return sqlite3.connect(
            self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )

    @property
    def url(self) -> str:
        """``sqlite:///<absolute path>``."""
        return f"sqlite://{self.path.resolve()}"

    def __enter__(self) -> SqliteRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self, conn: sqlite3.Connection) -> tuple[RegistryState, int]:
        rows = conn.execute("SELECT kind, name, doc FROM docs").fetchall()
        (revision,) = conn.execute("SELECT v FROM meta WHERE k = 'revision'").fetchone()
        return state_from_docs({(kind, name): doc for kind, name, doc in rows}), int(revision)

    def load(self) -> Snapshot:
        """The current state, read in one transaction."""
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                state, revision = self._read(self._conn)
            finally:
                self._conn.execute("COMMIT")
        return Snapshot(state, revision)

    def revision(self) -> int:
        """The change counter."""
        with self._lock:
            return self._revision(self._conn)

    @staticmethod
    def _revision(conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT v FROM meta WHERE k = 'revision'").fetchone()[0])

    def apply(self, change: Change, *, has_data: HasData | None = None) -> int:
        """Validate and apply ``change`` in one write transaction; the new revision."""
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                current, revision = self._read(conn)
                _, puts, deletes = plan_docs(current, change, has_data)
                if puts or deletes:
                    conn.executemany(
                        "INSERT OR REPLACE INTO docs (kind, name, doc) VALUES (?, ?, ?)",
                        [(kind, name, doc) for (kind, name), doc in puts.items()],
                    )
                    conn.executemany("DELETE FROM docs WHERE kind = ? AND name = ?", deletes)
                    revision += 1
                    conn.execute("UPDATE meta SET v = ? WHERE k = 'revision'", (revision,))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return revision

    def watch(self, callback: Callable[[], None]) -> None:
        """Poll the revision every ``poll_interval`` seconds on a private connection; call back on change."""
        thread = threading.Thread(
            target=self._poll, args=(callback,), name="ofs-registry-sqlite-watch", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _poll(self, callback: Callable[[], None]) -> None:
        conn = self._connect()
        try:
            seen: int | None = None
            while not self._stop.is_set():
                try:
                    revision = self._revision(conn)
                except sqlite3.Error:
                    revision = -1  # let the callback's own load report the error
                if revision != seen:  # the first read too: a change may have come before this thread ran
                    callback()
                    seen = revision
                self._stop.wait(self.poll_interval)
        finally:
            conn.close()

    def close(self) -> None:
        """Stop the watch threads and close the connection."""
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        with self._lock:
            self._conn.close()
