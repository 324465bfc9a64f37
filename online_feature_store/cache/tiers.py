"""The cache tiers in front of the stores, as one :class:`~online_feature_store.FeatureStore` uses them: the
in-process cache (native :class:`~online_feature_store._native.BlockCache`), the distributed cache, and the
invalidation bus that keeps the in-process cache safe across processes (docs/caching.md).

A read goes in-process cache → distributed cache → stores, using a tier when the entity's policy enables it
and every requested FG is flagged for it; misses are backfilled (the distributed tier in the background).
A strong-mode write drops the written keys from every tier and tells the other processes; natively too
(one call per write, ``Tiers.persist_wire``) when its stores are native and the core can call its
distributed cache and publish on its bus.

Reads run natively (:attr:`CacheTiers.native`, ``rust/src/tiers.rs``: one call per request, the GIL
released) whenever every tier a request needs is native: its stores (registered by :meth:`add_store`)
and no distributed cache the core cannot call. Otherwise :meth:`CacheTiers.read` does the same in Python.
Both share the native invalidation marks and in-process cache, and the bus reports its health to the
native side (``keep_gate``), so neither asks Python per request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from online_feature_store._native import BlockCache, Store, Tiers
from online_feature_store.cache.invalidation import (
    InvalidationBus,
    RedisInvalidationBus,
    SqliteInvalidationLog,
)
from online_feature_store.cache.redis_cache import DistributedCache
from online_feature_store.metrics import FeatureStoreMetrics
from online_feature_store.registry.model import Entity
from online_feature_store.registry.snapshot import Snapshot
from online_feature_store.store.base import BlockStore, KeyValues
from online_feature_store.store.keys import encode_key

__all__ = ["CacheTiers"]

log = logging.getLogger(__name__)

ReadStores = Callable[[list[KeyValues]], list[bytes]]
"""Reads the blocks of these keys from the stores, key-major (what the tiers fall back to)."""


class _Events:
    """Forwards the distributed cache's events to whatever hooks ``metrics()`` gives at the time (a server
    plugs its metrics in after the FeatureStore is built)."""

    def __init__(self, metrics: Callable[[], FeatureStoreMetrics]) -> None:
        self._metrics = metrics

    def cache_error(self, tier: str, op: str) -> None:
        self._metrics().cache_error(tier, op)

    def cache_breaker(self, tier: str, state: str) -> None:
        self._metrics().cache_breaker(tier, state)

    def cache_dropped(self, tier: str, op: str) -> None:
        self._metrics().cache_dropped(tier, op)


class CacheTiers:
    """``cache_bytes`` bounds the in-process cache (0 = none); ``distributed_cache`` is a ``redis://…`` /
    ``redis-cluster://…`` URL or an instance (closed here only when opened here); ``invalidation``:
    ``True`` picks Redis pub/sub with a distributed cache, else a SQLite log in ``data_dir`` (processes of
    one host); ``False`` keeps invalidation local; or a bus. A process without a cache of its own still
    publishes its writes; receiving starts on first in-process cache use."""

    def __init__(
        self,
        cache_bytes: int,
        distributed_cache: str | DistributedCache | None,
        invalidation: InvalidationBus | bool,
        data_dir: Path,
        metrics: Callable[[], FeatureStoreMetrics],
    ) -> None:
        self._metrics = metrics
        self.local = BlockCache(cache_bytes) if cache_bytes > 0 else None
        """The in-process cache."""
        self.remote: DistributedCache | None = None
        """The distributed cache."""
        self._owns_remote = isinstance(distributed_cache, str)
        if isinstance(distributed_cache, str):
            self.remote = DistributedCache.from_url(distributed_cache, listener=_Events(metrics))
        elif distributed_cache is not None:
            self.remote = distributed_cache
            self.remote.listener = _Events(metrics)
        self.bus: InvalidationBus | None = None
        """Carries invalidations to and from the other processes."""
        if invalidation is True:
            if self.remote is not None:
                self.bus = RedisInvalidationBus(self.remote)
            else:
                self.bus = SqliteInvalidationLog(data_dir / "invalidations.db")
        elif invalidation is not False:
            self.bus = invalidation
        self._bus_started = False
        self.native = Tiers(self.local)
        """The native read path over the same caches; it also holds the invalidation marks: per-entity
        generations and a reset count, so a read that started before an invalidation does not put what it
        read into the in-process cache after it."""
        if self.remote is not None:
            if type(self.remote) is DistributedCache:
                self.native.set_remote(self.remote.native)  # the core calls the Redis client itself
            else:
                self.native.set_remote_elsewhere()  # a client of its own: reads using it take the Python path
        # Buses that report their health keep the native gate; any other bus is asked per request.
        self._ask_bus = self.bus is not None and not hasattr(self.bus, "keep_gate")
        if self.bus is not None:
            self.native.bus_healthy_for(0)  # not healthy before it is started and says so
        self._publish_natively()

    def _publish_natively(self) -> None:
        """Hands the bus to the native write path when the core can publish on it as the bus itself
        would: Redis pub/sub through the native distributed cache, or the host's SQLite log (rows with
        the bus's own source). A bus of another class (or a subclass) is told of writes by Python."""
        bus = self.bus
        if bus is None:
            return
        remote = self.remote
        if type(bus) is RedisInvalidationBus and bus.cache is remote and type(remote) is DistributedCache:
            self.native.set_bus_channel(bus.channel)
        elif type(bus) is SqliteInvalidationLog:
            self.native.set_bus_log(bus.path, bus.source, bus.retention_seconds)
        else:
            self.native.set_bus_elsewhere()

    @property
    def asks_bus(self) -> bool:
        """Whether the bus is asked per request (it does not keep the native gate itself)."""
        return self._ask_bus

    def add_store(self, store_id: str, store: BlockStore) -> None:
        """Registers an open store with the native read and write paths when it is native (see
        :func:`native_of`)."""
        native = native_of(store)
        if native is not None:
            self.native.set_store(store_id, native)
        writer = native_of(store, "write")
        if writer is not None:
            self.native.set_writer(store_id, writer)

    def tiers(self) -> Tiers:
        """The native read path, its bus started (first use) and its health gate current."""
        if not self._bus_started and self.local is not None:
            self.bus_healthy()
        if self._ask_bus and self.bus is not None and self._bus_started:
            self.native.bus_healthy_for(None if self.bus.healthy else 0)
        return self.native

    def after_native_read(self) -> None:
        """Reports what the distributed cache queued during native reads and writes (errors, breaker
        changes), and logs the native writes' failures to publish their invalidations."""
        if self.remote is not None:
            self.remote.drain_events()
        errors, failed = self.native.take_bus_errors()
        for message in errors:
            # The writes succeeded; the other processes' caches expire by their TTL.
            log.warning("%s", message)
        if failed > len(errors):
            log.warning("%d more invalidations not published", failed - len(errors))

    def serving(self) -> BlockCache | None:
        """The in-process cache, while it may answer a request whole (invalidations arrive in time)."""
        return self.local if self.local is not None and self.bus_healthy() else None

    def read(
        self,
        snapshot: Snapshot,
        ent: Entity,
        keys: list[KeyValues],
        fg_ids: list[int],
        read_stores: ReadStores,
    ) -> list[bytes]:
        """Blocks key-major (``[k * len(fg_ids) + f]``): from the in-process cache, then the distributed
        cache, then ``read_stores``. Misses are backfilled, the distributed tier in the background."""
        local = self._local_tier(snapshot, ent, fg_ids)
        remote = self._remote_tier(snapshot, ent, fg_ids)
        if local is None and remote is None:
            return read_stores(keys)
        n = len(fg_ids)
        label = ent.label
        names = [encode_key(k) for k in keys]
        mark = self.native.mark(label)
        rows: list[list[bytes] | None] = (
            local.get_many(label, names, fg_ids) if local is not None else [None] * len(keys)
        )
        missed = [i for i, r in enumerate(rows) if r is None]
        if local is not None:
            self._metrics().cache_lookup("in_process", label, len(keys) - len(missed), len(missed))
        to_store = missed
        lookup = remote.get_many(label, [names[i] for i in missed], fg_ids) if remote and missed else None
        if lookup is not None:
            to_store = []
            for i, row in zip(missed, lookup.rows, strict=False):
                if row is None:
                    to_store.append(i)
                else:
                    rows[i] = row
            self._metrics().cache_lookup("distributed", label, len(missed) - len(to_store), len(to_store))
        if to_store:
            fetched = read_stores([keys[i] for i in to_store])
            for m, i in enumerate(to_store):
                rows[i] = fetched[m * n : (m + 1) * n]
            if remote is not None and lookup is not None:
                seen_at = {i: j for j, i in enumerate(missed)}
                policy = ent.distributed_cache
                remote.backfill(
                    label,
                    [names[i] for i in to_store],
                    [lookup.seen[seen_at[i]] for i in to_store],
                    lookup.at,
                    fg_ids,
                    fetched,
                    policy.ttl_seconds,
                    policy.jitter_percent,
                )
        blocks = [b for r in rows if r is not None for b in r]
        if local is not None and missed:
            put = [names[i] for i in missed]
            policy = ent.in_process_cache
            local.put_many(
                label,
                put,
                fg_ids,
                [b for i in missed for b in rows[i] or ()],
                policy.ttl_seconds,
                policy.jitter_percent,
            )
            if self.native.mark(label) != mark or not self.bus_healthy():
                # An invalidation arrived while this read ran: what it read may predate the write.
                local.invalidate(label, put)
        return blocks

    def invalidate(self, ent: Entity, names: list[str]) -> None:
        """After a strong-mode write of the keys ``names`` (encoded, distinct): drops them from this
        process's cache and the distributed cache, and tells the other processes to drop them."""
        self._invalidate_local(ent.label, names)
        bus = self.bus if ent.in_process_cache.enabled else None
        if self.remote is not None and ent.distributed_cache.enabled:
            # tombstones and the pub/sub message in one round trip per node
            channel = bus.channel if isinstance(bus, RedisInvalidationBus) else None
            self.remote.invalidate(ent.label, names, channel)
            if bus is not None and channel is None:
                bus.publish(ent.label, names)
        elif bus is not None:
            bus.publish(ent.label, names)

    def keeps_keys(self, ent: Entity) -> bool:
        """Whether :meth:`invalidate` of ``ent`` uses the key names (a tier that may hold them, or a bus
        that tells other processes); without, a write may invalidate with no names."""
        return (
            self.local is not None
            or (self.remote is not None and ent.distributed_cache.enabled)
            or (self.bus is not None and ent.in_process_cache.enabled)
        )

    def bus_healthy(self) -> bool:
        """Whether other processes' invalidations reach this process's cache in time (starts the bus)."""
        bus = self.bus
        if bus is None:
            return True
        if not self._bus_started:
            self._bus_started = True
            keep_gate = getattr(bus, "keep_gate", None)
            if keep_gate is not None:
                keep_gate(self.native.bus_healthy_for)
            bus.start(self._invalidate_local, self._reset_local)
        return bus.healthy

    def _local_tier(self, snapshot: Snapshot, ent: Entity, fg_ids: list[int]) -> BlockCache | None:
        """The in-process cache when it may serve this read (policy, FG flags, invalidation bus up)."""
        policy = ent.in_process_cache
        if (
            self.local is None
            or not policy.enabled
            or policy.ttl_seconds <= 0
            or not all(snapshot.feature_group(ent.label, f).in_process_cache for f in fg_ids)
        ):
            return None
        return self.local if self.bus_healthy() else None

    def _remote_tier(self, snapshot: Snapshot, ent: Entity, fg_ids: list[int]) -> DistributedCache | None:
        """The distributed cache when the entity's policy and every requested FG's flag enable it."""
        policy = ent.distributed_cache
        if (
            self.remote is None
            or not policy.enabled
            or policy.ttl_seconds <= 0
            or not all(snapshot.feature_group(ent.label, f).distributed_cache for f in fg_ids)
        ):
            return None
        return self.remote

    def _invalidate_local(self, entity: str, names: list[str]) -> None:
        # The generation moves first: a read that checks it after this point drops what it put.
        self.native.invalidate_local(entity, names)

    def _reset_local(self) -> None:
        self.native.reset_local()

    def close(self) -> None:
        """Closes the bus, and the distributed cache if it was opened here."""
        if self.bus is not None:
            self.bus.close()
        if self.remote is not None and self._owns_remote:
            self.remote.close()


def native_of(store: BlockStore, op: str = "read") -> Store | None:
    """The native store that serves ``store``'s reads (``op="write"``: its writes): its ``native``
    attribute, when the class that defines the method is one of this package's store classes (a
    subclass elsewhere that overrides it, to count or fail calls, must see every call, so it stays on
    the Python path)."""
    native = getattr(store, "native", None)
    if not isinstance(native, Store):
        return None
    owner = next((c for c in type(store).__mro__ if op in vars(c)), None)
    if owner is None or not owner.__module__.startswith("online_feature_store.store."):
        return None
    return native
