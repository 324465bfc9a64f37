"""Cross-process invalidation of in-process caches: a persist in one process reaches every other's cache.

Two buses, one contract (:class:`InvalidationBus`):

- :class:`RedisInvalidationBus` (with a distributed cache): invalidations are published on a Redis
  pub/sub channel in the same round trip as the distributed cache's tombstones; each process keeps one
  subscription and applies them within milliseconds. A subscription that breaks, or whose PINGs go
  unanswered for three ``ping_interval`` periods, marks the bus unhealthy and clears the cache; it is
  cleared again once the subscription is back (whatever was published meanwhile is lost).
- :class:`SqliteInvalidationLog` (embedded, no Redis): invalidations are rows of an ``invalidations``
  table in a SQLite file of the data directory, polled every ``poll_interval`` (250 ms) by each process
  and pruned after ``retention_seconds``. A poller that has not succeeded for ``stale_after`` seconds marks
  the bus unhealthy; when it catches up it clears the cache instead of trusting the log.

While a bus is unhealthy the :class:`~online_feature_store.feature_store.FeatureStore` neither serves from
nor fills its in-process cache, so the staleness bound holds whatever fails. See docs/caching.md.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from online_feature_store.errors import UnavailableError

__all__ = [
    "Gate",
    "InvalidationBus",
    "OnInvalidate",
    "OnReset",
    "RedisInvalidationBus",
    "SqliteInvalidationLog",
]

log = logging.getLogger(__name__)

OnInvalidate = Callable[[str, list[str]], None]
"""Called with an entity label and ``encode_key`` strings invalidated by another process."""
OnReset = Callable[[], None]
"""Called when invalidations may have been missed: the whole in-process cache must go."""
Gate = Callable[[float | None], None]
"""Told how long the bus is healthy from now: seconds, ``None`` (until told otherwise) or 0 (not now). A bus
with a ``keep_gate(gate)`` method reports its health this way (the native read path reads it without
asking Python per request); the :class:`InvalidationBus` protocol does not require it."""


class InvalidationBus(Protocol):
    """Carries invalidations between the processes sharing a store."""

    @property
    def healthy(self) -> bool:
        """True while invalidations from other processes are known to arrive in time."""

    def start(self, on_invalidate: OnInvalidate, on_reset: OnReset) -> None:
        """Starts receiving (idempotent)."""

    def publish(self, entity: str, names: Sequence[str]) -> None:
        """Tells the other processes that ``names`` of ``entity`` changed (never raises)."""

    def close(self) -> None:
        """Stops receiving and releases connections."""


class RedisInvalidationBus:
    """Invalidations over Redis pub/sub on ``channel``, published through the distributed cache
    (``cache``: a :class:`~online_feature_store.cache.redis_cache.DistributedCache`)."""

    def __init__(self, cache: Any, *, channel: str = "ofs:c:invalidations", ping_interval: float = 1.0):
        self.cache = cache
        self.channel = channel
        self.ping_interval = ping_interval
        self._healthy = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._on_invalidate: OnInvalidate = lambda _e, _k: None
        self._on_reset: OnReset = lambda: None
        self._gate: Gate = lambda _s: None

    @property
    def healthy(self) -> bool:
        """True while subscribed and the subscription answers its PINGs."""
        return self._healthy

    def keep_gate(self, gate: Gate) -> None:
        """Reports every change of :attr:`healthy` to ``gate`` (before :meth:`start`)."""
        self._gate = gate

    def start(self, on_invalidate: OnInvalidate, on_reset: OnReset) -> None:
        """Subscribes from a daemon thread (healthy once the subscription is confirmed)."""
        with self._lock:
            if self._thread is not None:
                return
            self._on_invalidate, self._on_reset = on_invalidate, on_reset
            self._thread = threading.Thread(target=self._run, name="ofs-invalidation-sub", daemon=True)
            self._thread.start()

    def publish(self, entity: str, names: Sequence[str]) -> None:
        """Publishes through the cache's guarded connection (kept and replayed if Redis is down)."""
        self.cache.invalidate(entity, [], self.channel, message_names=list(names))

    def _run(self) -> None:
        from redis.exceptions import RedisClusterException, RedisError

        conn = self.cache.subscriber_connection()
        backoff = 0.05
        try:
            while not self._stop.is_set():
                pubsub: Any = None
                try:
                    pubsub = conn.connect().pubsub()
                    pubsub.subscribe(self.channel)
                    last_seen = next_ping = time.monotonic()
                    while not self._stop.is_set():
                        msg = pubsub.get_message(timeout=min(0.25, self.ping_interval))
                        now = time.monotonic()
                        if msg is not None:
                            last_seen = now
                            if msg["type"] == "subscribe":
                                self._on_reset()  # anything published before this point is lost
                                self._healthy, backoff = True, 0.05
                                self._gate(None)
                            elif msg["type"] == "message":
                                self._deliver(msg["data"])
                        if now - last_seen > 3 * self.ping_interval:
                            raise UnavailableError("invalidation subscription stopped answering")
                        if now >= next_ping:
                            pubsub.ping()
                            next_ping = now + self.ping_interval
                except (RedisError, RedisClusterException, OSError, UnavailableError) as e:
                    if not self._stop.is_set():
                        log.warning("invalidation subscription on %s lost: %s", self.cache.where, e)
                finally:
                    if self._healthy:
                        self._healthy = False
                        self._gate(0)
                        self._on_reset()
                    if pubsub is not None:
                        _close_quietly(pubsub)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 1.0)
        finally:
            conn.close()

    def _deliver(self, data: bytes) -> None:
        try:
            doc = json.loads(data)
            entity, names, source = doc["entity"], doc["keys"], doc["source"]
        except (ValueError, KeyError, TypeError) as e:
            log.warning("ignoring malformed invalidation on %s: %s", self.channel, e)
            return
        if source != self.cache.source:
            self._on_invalidate(entity, list(names))

    def close(self) -> None:
        """Stops the subscription thread."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=5.0)


class SqliteInvalidationLog:
    """Invalidations as rows of a SQLite table (``path``), polled by every process on this host."""

    def __init__(
        self,
        path: str | Path,
        *,
        poll_interval: float = 0.25,
        stale_after: float = 1.0,
        retention_seconds: float = 60.0,
    ) -> None:
        self.path = Path(path)
        self.poll_interval = poll_interval
        self.stale_after = stale_after
        self.retention_seconds = retention_seconds
        self.source = uuid.uuid4().hex
        self._write_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None
        self._last_prune = 0.0
        self._last_ok = 0.0
        self._running = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._gate: Gate = lambda _s: None

    def keep_gate(self, gate: Gate) -> None:
        """Reports :attr:`healthy` to ``gate`` as a deadline after each successful poll (before
        :meth:`start`)."""
        self._gate = gate

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # Invalidations matter only to live processes: a crash of the host loses their caches too.
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS invalidations (id INTEGER PRIMARY KEY AUTOINCREMENT,"
            " at REAL NOT NULL, source TEXT NOT NULL, entity TEXT NOT NULL, keys TEXT NOT NULL)"
        )
        return conn

    @property
    def healthy(self) -> bool:
        """True while the last successful poll is less than ``stale_after`` seconds old."""
        return self._running and time.monotonic() - self._last_ok < self.stale_after

    def start(self, on_invalidate: OnInvalidate, on_reset: OnReset) -> None:
        """Reads the log's end synchronously, then polls from a daemon thread."""
        with self._start_lock:
            if self._thread is not None:
                return
            reader = self._connect()
            row = reader.execute("SELECT COALESCE(MAX(id), 0) FROM invalidations").fetchone()
            self._last_ok, self._running = time.monotonic(), True
            self._gate(self.stale_after)
            self._thread = threading.Thread(
                target=self._run,
                args=(reader, int(row[0]), on_invalidate, on_reset),
                name="ofs-invalidation-log",
                daemon=True,
            )
            self._thread.start()

    def _run(
        self, reader: sqlite3.Connection, last_id: int, on_invalidate: OnInvalidate, on_reset: OnReset
    ) -> None:
        try:
            while not self._stop.wait(self.poll_interval):
                try:
                    rows = reader.execute(
                        "SELECT id, source, entity, keys FROM invalidations WHERE id > ? ORDER BY id",
                        (last_id,),
                    ).fetchall()
                except sqlite3.Error as e:
                    log.warning("invalidation log %s unreadable: %s", self.path, e)
                    continue
                if time.monotonic() - self._last_ok > self.stale_after:
                    on_reset()  # late: rows may have been pruned unseen, and reads bypassed the cache
                for row_id, source, entity, keys in rows:
                    last_id = row_id
                    if source != self.source:
                        on_invalidate(entity, json.loads(keys))
                self._last_ok = time.monotonic()
                self._gate(self.stale_after)
        finally:
            self._running = False
            self._gate(0)
            reader.close()

    def publish(self, entity: str, names: Sequence[str]) -> None:
        """Appends one row (and prunes rows older than the retention now and then); never raises."""
        now = time.time()
        try:
            with self._write_lock:
                if self._writer is None:
                    self._writer = self._connect()
                w = self._writer
                w.execute(
                    "INSERT INTO invalidations (at, source, entity, keys) VALUES (?, ?, ?, ?)",
                    (now, self.source, entity, json.dumps(list(names))),
                )
                if now - self._last_prune > self.retention_seconds / 4:
                    self._last_prune = now
                    w.execute("DELETE FROM invalidations WHERE at < ?", (now - self.retention_seconds,))
        except sqlite3.Error as e:
            # The others' caches then expire by their TTL; the write itself succeeded.
            log.warning("invalidation log %s not written: %s", self.path, e)

    def close(self) -> None:
        """Stops polling and closes the connections."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        with self._write_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None


def _close_quietly(pubsub: Any) -> None:
    from redis.exceptions import RedisError

    try:
        pubsub.close()
    except (RedisError, OSError) as e:  # the connection is already gone
        log.debug("closing a broken subscription: %s", e)
