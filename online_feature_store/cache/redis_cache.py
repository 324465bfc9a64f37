"""The distributed cache tier: Redis (standalone or Cluster) between the in-process cache and the stores.

The client is native (``rust/src/store/redis_cache.rs``, redis-rs, reached through
:class:`~online_feature_store._native.RedisCache`): reads run in the core with the GIL released, backfills
run on the core's runtime, off the request path. This class is its configuration and its Python face;
it forwards the tier's events (errors, breaker changes, drops), which the core keeps in a bounded queue,
to the metrics hooks after each call.

One value per entity key, ``ofs:c:<entity>:<key>`` (the store's values are ``ofs:s:…``, so the two can share
one Redis and a cache operation can never touch stored data). The value is a CSDB of the key's cached FG
blocks, as the store returned them (zstd kept: smaller on the wire); an empty entry is a negative entry (the
store has nothing for that FG). A key is a hit when its value holds every requested FG.

- **Reads**: one ``MGET`` of the request's distinct keys; on a cluster one ``MGET`` per slot, sent to the
  nodes concurrently (pipelined per node: one round trip per node, the nodes overlapped).
- **Backfill** after a miss is queued to ``backfill_workers`` tasks of the core's runtime; when
  ``backfill_queue`` jobs are already waiting the new one is dropped and counted. Each key is set by a
  compare-and-set script that only writes if the value is still the one the read saw, merging the FGs
  already cached (union of FGs).
- **Invalidation** (strong mode) replaces the written keys by a *tombstone* (``\\x00`` + random bytes)
  living ``tombstone_seconds``, and publishes the message, in one round trip per node. A backfill whose
  read happened before the write saw another value, so its compare-and-set fails: a slow reader can never
  put the pre-write value back. Backfills older than half the tombstone life are dropped for the same
  reason.
- **Failures**: every call goes through the core's circuit breaker (the semantics of
  :class:`~online_feature_store.cache.breaker.CircuitBreaker`) with short timeouts (``socket_timeout``
  50 ms by default) and no retries. A failed or refused read is a miss of the whole tier (the request
  reads the stores, never defaults); a failed invalidation is kept (up to ``pending_limit`` keys) and
  replayed before this process uses Redis again.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from online_feature_store._native import RedisCache
from online_feature_store.cache.redis_client import RedisConnection
from online_feature_store.errors import InvalidInputError
from online_feature_store.store.keys import escape

__all__ = ["NAMESPACE", "CacheListener", "DistributedCache", "Lookup"]

NAMESPACE = "c"
"""Key namespace of cached values (``ofs:c:…``)."""

TIER = "distributed"
"""The tier label in metrics."""


class CacheListener(Protocol):
    """Receives the cache's events (``FeatureStoreMetrics`` implements it)."""

    def cache_error(self, tier: str, op: str) -> None:
        """A cache call ``op`` failed (or was refused by the open breaker)."""

    def cache_breaker(self, tier: str, state: str) -> None:
        """The tier's breaker changed to ``state`` (``closed``, ``half-open``, ``open``)."""

    def cache_dropped(self, tier: str, op: str) -> None:
        """Background work ``op`` was dropped (queue full, or too old to be safe)."""


class _NoListener:
    def cache_error(self, tier: str, op: str) -> None:
        pass

    def cache_breaker(self, tier: str, state: str) -> None:
        pass

    def cache_dropped(self, tier: str, op: str) -> None:
        pass


@dataclass(frozen=True)
class Lookup:
    """What one :meth:`DistributedCache.get_many` saw: per requested key, the blocks of the requested FGs
    (``None`` on a miss) and the raw value read (``b""`` when absent), which a backfill must still find;
    ``at``: when the read was sent (the core's clock, for :meth:`DistributedCache.backfill`)."""

    rows: list[list[bytes] | None]
    seen: list[bytes]
    at: float


class DistributedCache:
    """The Redis cache tier, standalone (``url``) or Redis Cluster (``cluster_nodes``).

    ``socket_timeout`` and ``connect_timeout`` (seconds) bound how long a request waits for Redis before it
    goes to the stores; ``failure_threshold`` consecutive failures open the breaker for ``reset_seconds``.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        cluster_nodes: Sequence[str] | None = None,
        socket_timeout: float = 0.05,
        connect_timeout: float = 0.05,
        pool_size: int = 32,
        failure_threshold: int = 3,
        reset_seconds: float = 2.0,
        backfill_queue: int = 1024,
        backfill_workers: int = 2,
        tombstone_seconds: float = 10.0,
        pending_limit: int = 100_000,
        listener: CacheListener | None = None,
    ) -> None:
        if backfill_queue < 1 or backfill_workers < 1:
            raise InvalidInputError("backfill_queue and backfill_workers must be >= 1")
        if tombstone_seconds <= 0:
            raise InvalidInputError(f"tombstone_seconds must be > 0, got {tombstone_seconds}")
        if failure_threshold < 1:
            raise InvalidInputError(f"failure_threshold must be >= 1, got {failure_threshold}")
        if reset_seconds <= 0:
            raise InvalidInputError(f"reset_seconds must be > 0, got {reset_seconds}")
        if (url is None) == (not cluster_nodes):
            raise InvalidInputError("a distributed cache needs exactly one of url or cluster_nodes")
        self.listener: CacheListener = listener if listener is not None else _NoListener()
        """Where errors, breaker changes and drops are reported (set by the FeatureStore using it)."""
        self.url = url
        self.cluster_nodes = tuple(cluster_nodes or ())
        self.tombstone_seconds = tombstone_seconds
        self.source = uuid.uuid4().hex
        """This process's id in published invalidations (its own messages are ignored)."""
        self.native = RedisCache(
            url,
            cluster_nodes=list(self.cluster_nodes) or None,
            pool_size=pool_size,
            connect_timeout=connect_timeout,
            socket_timeout=socket_timeout,
            failure_threshold=failure_threshold,
            reset_seconds=reset_seconds,
            backfill_queue=backfill_queue,
            backfill_workers=backfill_workers,
            tombstone_seconds=tombstone_seconds,
            pending_limit=pending_limit,
            source=self.source,
        )
        """The native client: what the native read path calls."""
        self._admin: RedisConnection | None = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> DistributedCache:
        """``redis://host:port/db`` or ``redis-cluster://host:port,host:port``, options as query parameters
        (``?socket_timeout=0.05&reset_seconds=2``; any keyword of the constructor taking a number)."""
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        unknown = set(query) - _FLOAT_OPTIONS - _INT_OPTIONS
        if unknown:
            raise InvalidInputError(f"distributed cache URL {url!r}: unknown options {sorted(unknown)}")
        numbers: dict[str, Any] = {}
        for k, v in query.items():
            try:
                numbers[k] = float(v[-1]) if k in _FLOAT_OPTIONS else int(v[-1])
            except ValueError:
                raise InvalidInputError(
                    f"distributed cache URL {url!r}: {k}={v[-1]!r} is not a number"
                ) from None
        numbers.update(options)
        if parts.scheme == "redis-cluster":
            return cls(cluster_nodes=parts.netloc.split(","), **numbers)
        if parts.scheme in ("redis", "rediss", "unix"):
            return cls(parts._replace(query="").geturl(), **numbers)
        raise InvalidInputError(
            f"distributed cache URL {url!r}: expected redis://host:port/db or redis-cluster://host:port,…"
        )

    @property
    def where(self) -> str:
        """Where the cache lives, for messages (a password in the URL redacted)."""
        return self.native.describe()

    @staticmethod
    def prefix(entity: str) -> str:
        """``ofs:c:<entity>:``; a key's Redis name is the prefix followed by its ``encode_key`` string."""
        return f"ofs:{NAMESPACE}:{escape(entity)}:"

    def drain_events(self) -> None:
        """Hands the events the core queued since the last call to :attr:`listener`, in order (the native
        read path calls the client without this class; its caller drains after each read)."""
        for kind, what in self.native.take_events():
            if kind == "error":
                self.listener.cache_error(TIER, what)
            elif kind == "breaker":
                self.listener.cache_breaker(TIER, what)
            else:
                self.listener.cache_dropped(TIER, what)

    # -- read ---------------------------------------------------------------------------------------
    def get_many(self, entity: str, names: Sequence[str], fg_ids: Sequence[int]) -> Lookup | None:
        """Blocks of ``fg_ids`` for each key (``names``: ``encode_key`` strings, duplicates allowed), in one
        round trip per node; ``None`` when Redis cannot be used now (the caller reads the stores)."""
        try:
            got = self.native.get_many(entity, list(names), list(fg_ids))
        finally:
            self.drain_events()
        if got is None:
            return None
        rows, seen, at = got
        return Lookup(rows, seen, at)

    # -- backfill -----------------------------------------------------------------------------------
    def backfill(
        self,
        entity: str,
        names: Sequence[str],
        seen: Sequence[bytes],
        at: float,
        fg_ids: Sequence[int],
        blocks: Sequence[bytes],
        ttl_seconds: int,
        jitter_percent: int,
    ) -> None:
        """Caches ``blocks`` (key-major, ``len(fg_ids)`` per key, ``b""`` = nothing stored) of the keys
        ``names`` in the background; ``seen``/``at`` come from the :class:`Lookup` that missed them."""
        if not names or ttl_seconds <= 0:
            return
        try:
            self.native.backfill(
                entity, list(names), list(seen), at, list(fg_ids), list(blocks), ttl_seconds, jitter_percent
            )
        finally:
            self.drain_events()

    def wait_backfills(self, timeout: float = 10.0) -> bool:
        """Waits until the backfills queued so far have run (tests, benchmarks); False on timeout."""
        deadline = time.monotonic() + timeout
        while self.native.backfills_pending and time.monotonic() < deadline:
            time.sleep(0.001)
        self.drain_events()
        return not self.native.backfills_pending

    # -- invalidation -------------------------------------------------------------------------------
    def invalidate(
        self,
        entity: str,
        names: Sequence[str],
        channel: str | None = None,
        *,
        message_names: Sequence[str] | None = None,
    ) -> bool:
        """Tombstones the keys ``names`` of ``entity`` and (``channel``) publishes the invalidation of
        ``message_names`` (default ``names``) to the other processes, in one round trip per node. Never
        raises: when Redis cannot be reached the keys and the message are kept and replayed before this
        process's next use of Redis. Returns whether it was delivered now."""
        try:
            return self.native.invalidate(
                entity, list(names), channel, None if message_names is None else list(message_names)
            )
        finally:
            self.drain_events()

    def message(self, entity: str, names: Sequence[str]) -> bytes:
        """The published form of one invalidation."""
        return self.native.message(entity, list(names))

    @property
    def pending_invalidations(self) -> int:
        """Keys whose invalidation waits for Redis to come back."""
        return self.native.pending_invalidations

    @property
    def healthy(self) -> bool:
        """True while the breaker is closed."""
        return self.native.healthy

    @property
    def breaker_state(self) -> str:
        """``closed``, ``half-open`` or ``open``."""
        return self.native.breaker_state

    def ping(self) -> bool:
        """One guarded PING: whether Redis answers now (also lets a half-open breaker close)."""
        try:
            return self.native.ping()
        finally:
            self.drain_events()

    def client(self) -> Any:
        """A redis-py client of the cache's Redis (tests and tools; the data path is native)."""
        if self._admin is None:
            self._admin = self.subscriber_connection()
        return self._admin.connect()

    def subscriber_connection(self) -> RedisConnection:
        """A separate redis-py connection holder for a long-lived subscription (longer socket timeout
        than the data path); its ``connect()`` gives the client."""
        return RedisConnection(
            self.url, cluster_nodes=self.cluster_nodes or None, pool_size=2, socket_timeout=1.0, retries=0
        )

    def close(self) -> None:
        """Drops queued backfills and closes the connections."""
        self.native.close()
        self.drain_events()
        if self._admin is not None:
            self._admin.close()


_FLOAT_OPTIONS = {"socket_timeout", "connect_timeout", "reset_seconds", "tombstone_seconds"}
_INT_OPTIONS = {"pool_size", "failure_threshold", "backfill_queue", "backfill_workers", "pending_limit"}
