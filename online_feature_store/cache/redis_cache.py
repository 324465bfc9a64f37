"""The distributed cache tier: Redis (standalone or Cluster) between the in-process cache and the stores.

One value per entity key, ``ofs:c:<entity>:<key>`` (the store's values are ``ofs:s:…``, so the two can share
one Redis and a cache operation can never touch stored data). The value is a CSDB of the key's cached FG
blocks, as the store returned them (zstd kept: smaller on the wire); an empty entry is a negative entry (the
store has nothing for that FG). A key is a hit when its value holds every requested FG.

- **Reads**: one ``MGET`` of the request's distinct keys; on a cluster one pipelined ``MGET`` per slot,
  written to every node before any reply is read (one round trip per node, the nodes overlapped).
- **Backfill** after a miss runs on a small executor, off the request path; when ``backfill_queue`` jobs
  are already waiting the new one is dropped and counted. Each key is set by a compare-and-set script that
  only writes if the value is still the one the read saw, merging the FGs already cached (union of FGs).
- **Invalidation** (strong mode) replaces the written keys by a *tombstone* (``\\x00`` + random bytes)
  living ``tombstone_seconds``. A backfill whose read happened before the write saw another value, so its
  compare-and-set fails: a slow reader can never put the pre-write value back. Backfills older than half
  the tombstone life are dropped for the same reason.
- **Failures**: every call goes through a :class:`~online_feature_store.cache.breaker.CircuitBreaker` with
  short timeouts (``socket_timeout`` 50 ms by default) and no retries. A failed or refused read is a miss
  of the whole tier (the request reads the stores, never defaults); a failed invalidation is kept (up to
  ``pending_limit`` keys) and replayed before this process uses Redis again.

Connections and cluster handling are the Redis store's
(:class:`~online_feature_store.store.redis_store.RedisStore`).
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qs, urlsplit

from online_feature_store._native import csdb_encode, csdb_entries, csdb_lookup
from online_feature_store.cache.breaker import CLOSED, CircuitBreaker
from online_feature_store.errors import CorruptBlockError, InvalidInputError, UnavailableError
from online_feature_store.store import redis_pipeline as pipeline
from online_feature_store.store.keys import escape
from online_feature_store.store.redis_store import RedisStore

__all__ = ["NAMESPACE", "CacheListener", "DistributedCache", "Lookup"]

NAMESPACE = "c"
"""Key namespace of cached values (``ofs:c:…``)."""

TIER = "distributed"
"""The tier label in metrics."""

_T = TypeVar("_T")

log = logging.getLogger(__name__)

# Sets KEYS[1] to ARGV[2] (PX ARGV[3]) only if its value is still ARGV[1] ('' = absent).
_CAS_SCRIPT = """
local cur = redis.call('GET', KEYS[1])
if (cur or '') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""

_TOMBSTONE = 0
"""First byte of a tombstone; CSDB values start with their layout (1 or 2)."""


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
    (``None`` on a miss) and the raw value read (``b""`` when absent), which a backfill must still find."""

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
        self.listener: CacheListener = listener if listener is not None else _NoListener()
        """Where errors, breaker changes and drops are reported (set by the FeatureStore using it)."""
        self._redis = RedisStore(
            url,
            cluster_nodes=cluster_nodes,
            pool_size=pool_size,
            connect_timeout=connect_timeout,
            socket_timeout=socket_timeout,
            retries=0,  # the breaker decides; a retry would only double the wait of a request
        )
        self.url = url
        self.cluster_nodes = tuple(cluster_nodes or ())
        self.breaker = CircuitBreaker(
            failure_threshold=failure_threshold,
            reset_seconds=reset_seconds,
            on_change=lambda state: self.listener.cache_breaker(TIER, state),
        )
        self.tombstone_seconds = tombstone_seconds
        self._tombstone_ms = int(tombstone_seconds * 1000)
        self._backfill_slots = threading.BoundedSemaphore(backfill_queue)
        self._executor = ThreadPoolExecutor(backfill_workers, thread_name_prefix="ofs-cache-backfill")
        self._pending_lock = threading.Lock()
        self._pending: set[str] = set()  # redis keys whose tombstone could not be written
        self._pending_messages: list[tuple[str, bytes]] = []  # (channel, message) not yet published
        self._pending_limit = pending_limit
        self._running: set[Future[None]] = set()
        self._refresh_slots = False
        self.source = uuid.uuid4().hex
        """This process's id in published invalidations (its own messages are ignored)."""

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
        """Where the cache lives, for messages."""
        return self.url or "cluster " + ",".join(self.cluster_nodes)

    @staticmethod
    def prefix(entity: str) -> str:
        """``ofs:c:<entity>:``; a key's Redis name is the prefix followed by its ``encode_key`` string."""
        return f"ofs:{NAMESPACE}:{escape(entity)}:"

    # -- guarded calls ----------------------------------------------------------------------------
    def _call(self, op: str, fn: Callable[[Any], _T]) -> tuple[bool, _T | None]:
        """``(True, fn(client))``, or ``(False, None)`` when the breaker refuses or the call fails."""
        if not self.breaker.allow():
            self.listener.cache_error(TIER, op)
            return False, None
        try:
            client, _ = self._redis._connect()
            if self._pending:
                self._replay(client)
            with self._redis._errors(op):
                result = fn(client)
        except UnavailableError:
            self.breaker.failure()
            self.listener.cache_error(TIER, op)
            return False, None
        except BaseException:
            self.breaker.failure()  # never leave an admitted trial call unanswered
            raise
        self.breaker.success()
        return True, result

    def _mget(self, client: Any, names: list[str]) -> list[bytes | None]:
        if self.url is not None:
            values: list[bytes | None] = client.mget(names)
            return values
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        if self._refresh_slots:
            # after a connection failure the topology may have changed (failover): re-read the slot map
            client.nodes_manager.initialize()
            self._refresh_slots = False
        try:
            return pipeline.cluster_mget(client, names)
        except (RedisConnectionError, RedisTimeoutError):
            self._refresh_slots = True
            raise

    def _send(
        self, client: Any, commands: list[tuple[bytes | None, bytes]], redo: Callable[[Any], Any]
    ) -> None:
        """Sends packed ``commands`` in one round trip per node; after a redirection, ``redo(client)``
        repeats the work through redis-py."""
        try:
            pipeline.send(client, commands, cluster=self.url is None)
        except pipeline.RedirectedError:
            redo(client)

    # -- read ---------------------------------------------------------------------------------------
    def get_many(self, entity: str, names: Sequence[str], fg_ids: Sequence[int]) -> Lookup | None:
        """Blocks of ``fg_ids`` for each key (``names``: ``encode_key`` strings, duplicates allowed), in one
        round trip per node; ``None`` when Redis cannot be used now (the caller reads the stores)."""
        if not names:
            return Lookup([], [], time.monotonic())
        prefix = self.prefix(entity)
        unique = list(dict.fromkeys(names))
        at = time.monotonic()
        ok, values = self._call("read", lambda c: self._mget(c, [prefix + n for n in unique]))
        if not ok or values is None:
            return None
        found: dict[str, tuple[list[bytes] | None, bytes]] = {}
        for name, value in zip(unique, values, strict=False):
            if value is None:
                found[name] = (None, b"")
                continue
            row: list[bytes] | None = None
            if value[:1] != bytes([_TOMBSTONE]):
                try:
                    blocks = csdb_lookup(value, fg_ids)
                except CorruptBlockError:
                    self.listener.cache_error(TIER, "decode")  # overwritten by the next backfill
                else:
                    if all(b is not None for b in blocks):
                        row = [b for b in blocks if b is not None]
            found[name] = (row, value)
        return Lookup([found[n][0] for n in names], [found[n][1] for n in names], at)

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
        if not self._backfill_slots.acquire(blocking=False):
            self.listener.cache_dropped(TIER, "backfill")
            return
        job = partial(
            self._backfill, entity, list(names), list(seen), at, list(fg_ids), list(blocks), ttl_seconds
        )
        try:
            future = self._executor.submit(job, jitter_percent)
        except RuntimeError:  # closed
            self._backfill_slots.release()
            return
        with self._pending_lock:
            self._running.add(future)
        future.add_done_callback(self._backfill_done)

    def _backfill_done(self, future: Future[None]) -> None:
        with self._pending_lock:
            self._running.discard(future)
        self._backfill_slots.release()
        error = future.exception() if not future.cancelled() else None
        if error is not None:  # the guarded call reports Redis failures itself; this is a bug
            log.error("distributed cache backfill failed", exc_info=error)
            self.listener.cache_error(TIER, "backfill")

    def wait_backfills(self, timeout: float = 10.0) -> bool:
        """Waits until the backfills queued so far have run (tests, benchmarks); False on timeout."""
        with self._pending_lock:
            running = list(self._running)
        _done, not_done = wait(running, timeout=timeout)
        return not not_done

    def _backfill(
        self,
        entity: str,
        names: list[str],
        seen: list[bytes],
        at: float,
        fg_ids: list[int],
        blocks: list[bytes],
        ttl_seconds: int,
        jitter_percent: int,
    ) -> None:
        if time.monotonic() - at > self.tombstone_seconds / 2:
            # A write's tombstone may have expired since the read: the compare-and-set could no longer
            # tell a pre-write value from a current one.
            self.listener.cache_dropped(TIER, "backfill")
            return
        n = len(fg_ids)
        prefix = self.prefix(entity)
        jitter = ttl_seconds * jitter_percent / 100
        commands: dict[str, tuple[bytes, bytes, int]] = {}
        for i, name in enumerate(names):
            if name in commands:
                continue
            entries = dict(_entries(seen[i]))
            entries.update(zip(fg_ids, blocks[i * n : (i + 1) * n], strict=False))
            ttl_ms = max(1, int((ttl_seconds + random.uniform(-jitter, jitter)) * 1000))
            commands[name] = (seen[i], csdb_encode(sorted(entries.items())), ttl_ms)

        script = _CAS_SCRIPT.encode()
        packed: list[tuple[bytes | None, bytes]] = []
        for name, (old, value, ttl_ms) in commands.items():
            key = (prefix + name).encode()
            packed.append((key, pipeline.resp(b"EVAL", script, b"1", key, old, value, b"%d" % ttl_ms)))

        def redo(client: Any) -> None:
            pipe = client.pipeline(transaction=False)
            for name, (old, value, ttl_ms) in commands.items():
                pipe.execute_command("EVAL", _CAS_SCRIPT, 1, prefix + name, old, value, ttl_ms)
            pipe.execute()

        self._call("backfill", lambda client: self._send(client, packed, redo))

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
        if not names and channel is None:
            return True
        prefix = self.prefix(entity)
        keys = [prefix + n for n in dict.fromkeys(names)]
        published = names if message_names is None else message_names
        message = self.message(entity, published) if channel is not None else None
        messages = [(channel, message)] if channel is not None and message is not None else []
        ok, _ = self._call("invalidate", lambda client: self._tombstones(client, keys, messages))
        if not ok:
            self._keep(keys, channel, message)
        return ok

    def message(self, entity: str, names: Sequence[str]) -> bytes:
        """The published form of one invalidation."""
        return json.dumps({"source": self.source, "entity": entity, "keys": list(names)}).encode()

    def _keep(self, keys: list[str], channel: str | None, message: bytes | None) -> None:
        with self._pending_lock:
            room = self._pending_limit - len(self._pending)
            if room < len(keys) or len(self._pending_messages) >= self._pending_limit:
                # beyond the bound the cached copies expire by their TTL (documented in docs/caching.md)
                self.listener.cache_dropped(TIER, "invalidate")
            self._pending.update(keys[: max(room, 0)])
            room_for_message = len(self._pending_messages) < self._pending_limit
            if channel is not None and message is not None and room_for_message:
                self._pending_messages.append((channel, message))

    def _replay(self, client: Any) -> None:
        """Sends the invalidations that failed earlier (raises as the guarded call would)."""
        with self._pending_lock:
            keys, self._pending = self._pending, set()
            messages, self._pending_messages = self._pending_messages, []
        try:
            with self._redis._errors("invalidate"):
                self._tombstones(client, list(keys), messages)
        except UnavailableError:
            with self._pending_lock:
                self._pending |= keys
                self._pending_messages[:0] = messages
            raise

    def _tombstones(self, client: Any, keys: list[str], messages: list[tuple[str, bytes]]) -> None:
        """Replaces ``keys`` by a fresh tombstone (unique per call: no ABA for the CAS) and publishes
        ``messages``, in one round trip per node."""
        tombstone = bytes([_TOMBSTONE]) + os.urandom(15)
        px = b"%d" % self._tombstone_ms
        packed: list[tuple[bytes | None, bytes]] = []
        for key in keys:
            k = key.encode()
            packed.append((k, pipeline.resp(b"SET", k, tombstone, b"PX", px)))
        for channel, message in messages:
            packed.append((None, pipeline.resp(b"PUBLISH", channel.encode(), message)))

        def redo(client: Any) -> None:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.execute_command("SET", key, tombstone, "PX", self._tombstone_ms)
            for channel, message in messages:
                pipe.execute_command("PUBLISH", channel, message)
            pipe.execute()

        self._send(client, packed, redo)

    @property
    def pending_invalidations(self) -> int:
        """Keys whose invalidation waits for Redis to come back."""
        return len(self._pending)

    @property
    def healthy(self) -> bool:
        """True while the breaker is closed."""
        return self.breaker.state == CLOSED

    def ping(self) -> bool:
        """One guarded PING: whether Redis answers now (also lets a half-open breaker close)."""
        ok, _ = self._call("ping", lambda c: c.ping())
        return ok

    def client(self) -> Any:
        """The underlying redis-py client (connected on first use)."""
        return self._redis._connect()[0]

    def subscriber_connection(self) -> RedisStore:
        """A separate connection holder for a long-lived subscription (longer socket timeout than the data
        path); its ``_connect()`` gives the client."""
        return RedisStore(
            self.url, cluster_nodes=self.cluster_nodes or None, pool_size=2, socket_timeout=1.0, retries=0
        )

    def close(self) -> None:
        """Waits for running backfills, drops queued ones and closes the connections."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        close_connections(self._redis)


def close_connections(conn: RedisStore) -> None:
    """Closes a :class:`RedisStore`'s client and its sockets (redis-py's ``close()`` leaves a connection
    pool it was handed open, so a standalone client's sockets would leak)."""
    client = conn._client
    conn.close()
    if client is not None and conn.url is not None:
        client.connection_pool.disconnect()


_FLOAT_OPTIONS = {"socket_timeout", "connect_timeout", "reset_seconds", "tombstone_seconds"}
_INT_OPTIONS = {"pool_size", "failure_threshold", "backfill_queue", "backfill_workers", "pending_limit"}


def _entries(value: bytes) -> list[tuple[int, bytes]]:
    """The FG entries of a cached value (none for an absent value, a tombstone or a corrupt value)."""
    if not value or value[0] == _TOMBSTONE:
        return []
    try:
        return csdb_entries(value)
    except CorruptBlockError:
        return []
