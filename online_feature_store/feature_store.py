"""``FeatureStore``: the feature store as an in-process library (embedded mode, no gRPC hop).

It reads the registry (kept current by a :class:`~online_feature_store.registry.RegistryWatcher`), compiles
each revision once into a native :class:`~online_feature_store._native.Catalog`, and moves blocks between
the stores and the native engine: keys, names and blocks are Python objects, feature values never are.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from online_feature_store._native import BlockCache, Catalog
from online_feature_store.cache.invalidation import (
    InvalidationBus,
    RedisInvalidationBus,
    SqliteInvalidationLog,
)
from online_feature_store.cache.redis_cache import DistributedCache
from online_feature_store.embeddings import Embeddings, Q8Values, is_native
from online_feature_store.errors import InvalidInputError
from online_feature_store.keys import key_rows
from online_feature_store.limits import (
    DEFAULT_MAX_KEYS_PER_REQUEST,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_ROWS_PER_PERSIST,
    make_limits,
)
from online_feature_store.registry.backend import RegistryBackend
from online_feature_store.registry.connect import open_registry
from online_feature_store.registry.model import Entity
from online_feature_store.registry.snapshot import Snapshot
from online_feature_store.registry.watcher import RegistryWatcher
from online_feature_store.results import RetrieveResult
from online_feature_store.settings import data_dir, registry_url
from online_feature_store.store.base import BlockStore, BlockWrite, KeyValues
from online_feature_store.store.keys import encode_key
from online_feature_store.types import DataType

__all__ = [
    "DEFAULT_MAX_KEYS_PER_REQUEST",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_MAX_ROWS_PER_PERSIST",
    "FeatureStore",
    "FeatureStoreMetrics",
    "PreparedWrite",
    "compile_catalog",
    "make_limits",
]

_T = TypeVar("_T")


class FeatureStoreMetrics:
    """What a :class:`FeatureStore` reports to whoever embeds it (the server exports it to Prometheus).
    Every hook is a no-op here, so the library itself has no metrics dependency."""

    def request(self, entity: str, rows: int) -> None:
        """A retrieve or persist of ``rows`` keys of ``entity`` passed planning."""

    def store_call(self, store_id: str, op: str, seconds: float, failed: bool) -> None:
        """One ``read`` or ``write`` call to store ``store_id`` took ``seconds`` (``failed``: it raised)."""

    def feature_status(self, entity: str, feature_group: str, found: int, missing: int, expired: int) -> None:
        """Rows of a retrieve answered with stored data, with defaults (nothing stored) or expired data."""

    def cache_lookup(self, tier: str, entity: str, hits: int, misses: int) -> None:
        """Keys of one read of ``entity`` found (``hits``) or not in cache tier ``tier`` (``in_process``,
        ``distributed``)."""

    def cache_error(self, tier: str, op: str) -> None:
        """A call ``op`` (``read``, ``backfill``, ``invalidate``, …) to cache tier ``tier`` failed or was
        refused by its open circuit breaker; the request went on without the tier."""

    def cache_breaker(self, tier: str, state: str) -> None:
        """The circuit breaker of cache tier ``tier`` moved to ``state`` (``closed``, ``half-open``,
        ``open``)."""

    def cache_dropped(self, tier: str, op: str) -> None:
        """Background cache work ``op`` was dropped (its queue was full, or it was too old to be safe)."""


class _CacheEvents:
    """Forwards the distributed cache's events to whatever ``fs.metrics`` is at the time (a server plugs
    its metrics in after the FeatureStore is built)."""

    def __init__(self, fs: FeatureStore) -> None:
        self._fs = fs

    def cache_error(self, tier: str, op: str) -> None:
        self._fs.metrics.cache_error(tier, op)

    def cache_breaker(self, tier: str, state: str) -> None:
        self._fs.metrics.cache_breaker(tier, state)

    def cache_dropped(self, tier: str, op: str) -> None:
        self._fs.metrics.cache_dropped(tier, op)


def compile_catalog(snapshot: Snapshot) -> Catalog:
    """Compiles a registry snapshot for the native engine (once per revision)."""
    entities = [(e.label, [k.label for k in e.keys]) for e in snapshot.state.entities]
    fgs = []
    for e in snapshot.state.entities:
        for g in e.feature_groups:
            versions = [
                (
                    v,
                    [f.label for f in feats],
                    [f.string_length for f in feats] if g.data_type.is_string else [],
                    [f.vector_length for f in feats] if g.data_type.is_vector else [],
                    [f.default for f in feats],
                )
                for v, feats in sorted(g.versions.items())
            ]
            fgs.append((e.label, g.id, g.label, int(g.data_type), g.active_version, g.ttl_seconds, versions))
    in_process = [
        (e.label, p.ttl_seconds, p.jitter_percent, [g.id for g in e.feature_groups if g.in_process_cache])
        for e in snapshot.state.entities
        if (p := e.in_process_cache).enabled and p.ttl_seconds > 0
    ]
    return Catalog(snapshot.revision, entities, fgs, in_process_cache=in_process)


@dataclass(frozen=True)
class PreparedWrite:
    """A validated ``persist.Query`` with its blocks built and nothing written yet: the result of
    :meth:`FeatureStore.prepare_wire`, written by :meth:`FeatureStore.write_prepared`."""

    snapshot: Snapshot
    entity: str
    writes: Mapping[str, list[BlockWrite]]
    """The blocks to write, by store id."""
    names: list[str]
    """The distinct keys, encoded (``store.keys.encode_key``): what a strong-mode write invalidates."""
    blocks: int


class FeatureStore:
    """Retrieve and persist features in-process, against the same registry and stores as the servers.

    ``registry`` is a registry URL (``sqlite:///…``, ``etcd://…``; default ``$OFS_REGISTRY`` or the SQLite
    file in the data directory) or an open backend. ``data_directory`` holds the embedded registry and
    stores (default ``$OFS_DATA_DIR``, else ``~/.local/share/online-feature-store``; a relative one, here
    or in a ``sqlite:`` URL, is taken from the working directory, as by every ``ofs`` command).
    ``stores`` overrides the store a registry store id resolves to (mainly for tests and embedding).

    Caches (docs/caching.md): ``cache_bytes`` bounds the in-process cache (0 = none);
    ``distributed_cache`` is a ``redis://…`` / ``redis-cluster://…`` URL (or a
    :class:`~online_feature_store.cache.DistributedCache`) for the Redis tier; ``invalidation`` carries
    persists to other processes' in-process caches: ``True`` picks Redis pub/sub with a distributed cache,
    else a SQLite log in the data directory; ``False`` keeps invalidation local; or pass a bus.

    Limits (docs/serving.md#limits), each checked before any store read or block is built, else
    :class:`~online_feature_store.errors.ResourceExhaustedError` naming the size and the limit:
    ``max_keys_per_request`` keys per retrieve, ``max_rows_per_persist`` rows per persist,
    ``max_message_bytes`` for a retrieve response (estimated from the plan: keys times the largest row the
    schema allows) and for the blocks one persist builds.
    """

    def __init__(
        self,
        registry: str | RegistryBackend | None = None,
        *,
        data_directory: str | os.PathLike[str] | None = None,
        stores: Mapping[str, BlockStore] | None = None,
        poll_interval: float = 1.0,
        metrics: FeatureStoreMetrics | None = None,
        cache_bytes: int = 256 * 1024 * 1024,
        distributed_cache: str | DistributedCache | None = None,
        invalidation: InvalidationBus | bool = True,
        max_keys_per_request: int = DEFAULT_MAX_KEYS_PER_REQUEST,
        max_rows_per_persist: int = DEFAULT_MAX_ROWS_PER_PERSIST,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.metrics = metrics if metrics is not None else FeatureStoreMetrics()
        """Observability hooks (no-ops unless a service plugs its own in)."""
        self.limits = make_limits(max_keys_per_request, max_rows_per_persist, max_message_bytes)
        """The limits every request is held to (a server sets its own)."""
        self._cache = BlockCache(cache_bytes) if cache_bytes > 0 else None
        self._data_dir = data_dir(data_directory)  # absolute: a relative one from the working directory
        # Distributed cache tier (docs/caching.md): a URL (redis://…, redis-cluster://…) or an instance.
        self._remote: DistributedCache | None = None
        self._owns_remote = isinstance(distributed_cache, str)
        if isinstance(distributed_cache, str):
            self._remote = DistributedCache.from_url(distributed_cache, listener=_CacheEvents(self))
        elif distributed_cache is not None:
            self._remote = distributed_cache
            self._remote.listener = _CacheEvents(self)
        # Cross-process invalidation of in-process caches: Redis pub/sub with a distributed cache, else a
        # SQLite log in the data directory (processes of one host). A process without a cache of its own
        # still publishes its writes; receiving starts on first in-process cache use.
        self._bus: InvalidationBus | None = None
        if invalidation is True:
            if self._remote is not None:
                self._bus = RedisInvalidationBus(self._remote)
            else:
                self._bus = SqliteInvalidationLog(self._data_dir / "invalidations.db")
        elif invalidation is not False:
            self._bus = invalidation
        self._bus_started = False
        # Per-entity invalidation counters (and one for whole-cache resets): a read that started before
        # an invalidation must not put what it read into the in-process cache after it.
        self._generation: dict[str, int] = {}
        self._resets = 0
        self._backend = (
            open_registry(registry_url(registry, self._data_dir))
            if registry is None or isinstance(registry, str)
            else registry
        )
        self._owns_backend = registry is None or isinstance(registry, str)
        self._lock = threading.Lock()
        self._compiled: tuple[int, Catalog] | None = None
        # Each new revision is compiled by the watcher thread as it arrives, off the request path.
        self._watcher = RegistryWatcher(
            self._backend, poll_interval=poll_interval, on_change=self._precompile
        )
        self._catalog(self._watcher.snapshot)
        self._stores: dict[str, BlockStore] = dict(stores or {})
        self._owned_stores: list[BlockStore] = []

    # -- plumbing ---------------------------------------------------------------------------------
    @property
    def snapshot(self) -> Snapshot:
        """The registry snapshot currently served."""
        return self._watcher.snapshot

    @property
    def registry_healthy(self) -> bool:
        """False while the registry cannot be reached (the last good snapshot is still served)."""
        return self._watcher.healthy

    def _precompile(self, snapshot: Snapshot) -> None:
        self._catalog(snapshot)

    def _catalog(self, snapshot: Snapshot) -> Catalog:
        compiled = self._compiled
        if compiled is not None and compiled[0] == snapshot.revision:
            return compiled[1]
        with self._lock:
            if self._compiled is None or self._compiled[0] != snapshot.revision:
                self._compiled = (snapshot.revision, compile_catalog(snapshot))
            return self._compiled[1]

    def _store(self, snapshot: Snapshot, store_id: str) -> BlockStore:
        store = self._stores.get(store_id)
        if store is not None:
            return store
        with self._lock:
            if store_id not in self._stores:
                spec = snapshot.stores.get(store_id)
                if spec is None:
                    raise InvalidInputError(f"feature group store {store_id!r} is not in the registry")
                from online_feature_store.store import open_store

                opened = open_store(spec, data_directory=self._data_dir)
                opened.ensure(snapshot.state.entities)
                self._stores[store_id] = opened
                self._owned_stores.append(opened)
            return self._stores[store_id]

    def store(self, store_id: str) -> BlockStore:
        """The open store behind registry store ``store_id`` (opened on first use)."""
        return self._store(self.snapshot, store_id)

    @staticmethod
    def _canonical_keys(keys: Sequence[Any], perm: Sequence[int]) -> list[KeyValues]:
        """Key rows as text (the one rule of :mod:`online_feature_store.keys`), in canonical order."""
        return key_rows(keys, len(perm), perm)

    # -- API --------------------------------------------------------------------------------------
    def retrieve(
        self,
        entity: str,
        keys: Sequence[Any],
        features: Mapping[str, Sequence[str]],
        *,
        keys_schema: Sequence[str] | None = None,
        embeddings: Embeddings = "float32",
    ) -> RetrieveResult:
        """Features of ``keys`` (rows of key values in ``keys_schema`` order, default the entity's key
        order; plain values for single-key entities) for ``features`` = ``{fg: [feature, …]}`` (a feature
        may be ``"label@DataTypeFP16"`` for retrieval-time quantization; ``"emb@BF16"`` / ``"emb@Q8"``
        name the vector form on a vector feature). ``embeddings``: ``"float32"`` widens bf16 and
        dequantizes Q8 to float32 arrays; ``"native"`` returns bf16 as ``ml_dtypes.bfloat16`` and Q8 as
        :class:`~online_feature_store.embeddings.Q8Values` (docs/embeddings.md)."""
        native = is_native(embeddings)
        snapshot = self.snapshot
        catalog = self._catalog(snapshot)
        ent = snapshot.entity(entity)
        schema = list(keys_schema) if keys_schema is not None else [k.label for k in ent.keys]
        request = [(fg, list(labels)) for fg, labels in features.items()]
        if self._cache is not None and self._bus_healthy():
            # Every key cached in process: lookup and assembly in one native call, no store round trip.
            hit = catalog.retrieve_cached(
                self._cache, entity, schema, request, keys, limits=self.limits, native=native
            )
            if hit is not None:
                self.metrics.cache_lookup("in_process", entity, len(keys), 0)
                return self._result(snapshot, entity, features, hit, len(keys))
        # Planned and held to the limits before a key is converted or a store read.
        planned = catalog.plan(entity, schema, request, keys=len(keys), limits=self.limits)
        canonical = self._canonical_keys(keys, catalog.key_permutation(entity, schema))
        self.metrics.request(entity, len(canonical))
        blocks = self._read(snapshot, ent, canonical, [fg_id for fg_id, _ in planned])
        now = int(time.time())
        results = catalog.retrieve(
            entity, schema, request, blocks, now=now, limits=self.limits, native=native
        )
        values: dict[str, Any] = {}
        status: dict[str, npt.NDArray[np.uint8]] = {}
        for (fg, _labels), (_fg_id, columns), (vals, st) in zip(request, planned, results, strict=False):
            values[fg] = _shape(vals, len(canonical), columns)
            status[fg] = st
            found, missing, expired = (int(c) for c in np.bincount(st, minlength=3)[:3])
            self.metrics.feature_status(entity, fg, found, missing, expired)
        return RetrieveResult(entity, dict(features), values, status, snapshot.revision)

    def _result(
        self,
        snapshot: Snapshot,
        entity: str,
        features: Mapping[str, Sequence[str]],
        hit: list[tuple[Any, npt.NDArray[np.uint8], int, int, int]],
        n_keys: int,
    ) -> RetrieveResult:
        """The :class:`RetrieveResult` of an answer assembled (and shaped) natively."""
        self.metrics.request(entity, n_keys)
        values: dict[str, Any] = {}
        status: dict[str, npt.NDArray[np.uint8]] = {}
        for fg, (vals, st, found, missing, expired) in zip(features, hit, strict=False):
            values[fg] = Q8Values.from_native(vals) if isinstance(vals, tuple) else vals
            status[fg] = st
            self.metrics.feature_status(entity, fg, found, missing, expired)
        return RetrieveResult(entity, dict(features), values, status, snapshot.revision)

    def _read(self, snapshot: Snapshot, ent: Entity, keys: list[KeyValues], fg_ids: list[int]) -> list[bytes]:
        """Blocks key-major (``[k * len(fg_ids) + f]``): from the in-process cache, then the distributed
        cache, then the stores; a tier is used when the entity's policy enables it and every requested FG
        is flagged for it. Misses are backfilled, the distributed tier in the background."""
        local = self._local_tier(snapshot, ent, fg_ids)
        remote = self._remote_tier(snapshot, ent, fg_ids)
        if local is None and remote is None:
            return self._read_stores(snapshot, ent, keys, fg_ids)
        n = len(fg_ids)
        label = ent.label
        names = [encode_key(k) for k in keys]
        mark = (self._resets, self._generation.get(label, 0))
        rows: list[list[bytes] | None] = (
            local.get_many(label, names, fg_ids) if local is not None else [None] * len(keys)
        )
        missed = [i for i, r in enumerate(rows) if r is None]
        if local is not None:
            self.metrics.cache_lookup("in_process", label, len(keys) - len(missed), len(missed))
        to_store = missed
        lookup = remote.get_many(label, [names[i] for i in missed], fg_ids) if remote and missed else None
        if lookup is not None:
            to_store = []
            for i, row in zip(missed, lookup.rows, strict=False):
                if row is None:
                    to_store.append(i)
                else:
                    rows[i] = row
            self.metrics.cache_lookup("distributed", label, len(missed) - len(to_store), len(to_store))
        if to_store:
            fetched = self._read_stores(snapshot, ent, [keys[i] for i in to_store], fg_ids)
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
            if (self._resets, self._generation.get(label, 0)) != mark or not self._bus_healthy():
                # An invalidation arrived while this read ran: what it read may predate the write.
                local.invalidate(label, put)
        return blocks

    def _local_tier(self, snapshot: Snapshot, ent: Entity, fg_ids: list[int]) -> BlockCache | None:
        """The in-process cache when it may serve this read (policy, FG flags, invalidation bus up)."""
        policy = ent.in_process_cache
        if (
            self._cache is None
            or not policy.enabled
            or policy.ttl_seconds <= 0
            or not all(snapshot.feature_group(ent.label, f).in_process_cache for f in fg_ids)
        ):
            return None
        return self._cache if self._bus_healthy() else None

    def _remote_tier(self, snapshot: Snapshot, ent: Entity, fg_ids: list[int]) -> DistributedCache | None:
        """The distributed cache when the entity's policy and every requested FG's flag enable it."""
        policy = ent.distributed_cache
        if (
            self._remote is None
            or not policy.enabled
            or policy.ttl_seconds <= 0
            or not all(snapshot.feature_group(ent.label, f).distributed_cache for f in fg_ids)
        ):
            return None
        return self._remote

    def _bus_healthy(self) -> bool:
        """Whether other processes' invalidations reach this process's cache in time (starts the bus)."""
        bus = self._bus
        if bus is None:
            return True
        if not self._bus_started:
            self._bus_started = True
            bus.start(self._invalidated_elsewhere, self._reset_local)
        return bus.healthy

    def _invalidate_local(self, entity: str, names: list[str]) -> None:
        # The generation moves first: a read that checks it after this point drops what it put.
        self._generation[entity] = self._generation.get(entity, 0) + 1
        if self._cache is not None:
            self._cache.invalidate(entity, names)

    def _invalidated_elsewhere(self, entity: str, names: list[str]) -> None:
        self._invalidate_local(entity, names)

    def _reset_local(self) -> None:
        self._resets += 1
        if self._cache is not None:
            self._cache.clear()

    def _read_stores(
        self, snapshot: Snapshot, ent: Entity, keys: list[KeyValues], fg_ids: list[int]
    ) -> list[bytes]:
        """Blocks key-major (``[k * len(fg_ids) + f]``), one store read per store involved."""
        by_store: dict[str, list[int]] = {}
        for i, fg_id in enumerate(fg_ids):
            by_store.setdefault(snapshot.feature_group(ent.label, fg_id).store_id, []).append(i)
        n = len(fg_ids)
        blocks: list[bytes] = [b""] * (len(keys) * n)
        for store_id, idx in by_store.items():
            read = partial(self._store(snapshot, store_id).read, ent, keys, [fg_ids[i] for i in idx])
            rows = self._store_call(store_id, "read", read)
            for k, row in enumerate(rows):
                for j, i in enumerate(idx):
                    blocks[k * n + i] = row[j]
        return blocks

    def _write(
        self,
        snapshot: Snapshot,
        store_id: str,
        ent: Entity,
        writes: list[BlockWrite],
        *,
        invalidate: bool = True,
        names: list[str] | None = None,
    ) -> None:
        """Writes, then (``invalidate``: strong mode) drops the written keys from this process's cache and
        the distributed cache, and tells the other processes to drop them from theirs. ``names``: the
        written keys already encoded and distinct, when the caller has them."""
        self._store_call(store_id, "write", partial(self._store(snapshot, store_id).write, ent, writes))
        if not invalidate:
            return
        if names is None:
            names = list(dict.fromkeys(encode_key(w.key) for w in writes))
        self._invalidate_local(ent.label, names)
        bus = self._bus if ent.in_process_cache.enabled else None
        if self._remote is not None and ent.distributed_cache.enabled:
            # tombstones and the pub/sub message in one round trip per node
            channel = bus.channel if isinstance(bus, RedisInvalidationBus) else None
            self._remote.invalidate(ent.label, names, channel)
            if bus is not None and channel is None:
                bus.publish(ent.label, names)
        elif bus is not None:
            bus.publish(ent.label, names)

    def _store_call(self, store_id: str, op: str, call: Callable[[], _T]) -> _T:
        """``call()``, timed and reported to the metrics hooks (errors included) under ``store_id``."""
        started = time.perf_counter()
        failed = True
        try:
            result = call()
            failed = False
            return result
        finally:
            self.metrics.store_call(store_id, op, time.perf_counter() - started, failed)

    def retrieve_wire(self, query: bytes, *, decoded: bool = False) -> bytes:
        """A serialized ``retrieve.Query`` in, the serialized ``retrieve.Result`` out (the gRPC path);
        with ``decoded``, a ``retrieve.DecodedResult`` with every cell rendered as a string."""
        snapshot = self.snapshot
        counted: list[bool] = []

        def read(entity: str, keys: list[list[str]], fg_ids: list[int]) -> list[bytes]:
            counted.append(True)
            self.metrics.request(entity, len(keys))
            return self._read(snapshot, snapshot.entity(entity), [tuple(k) for k in keys], fg_ids)

        # One native call: parse and plan, answer from the in-process cache or read() the blocks, build
        # the response bytes.
        cache = self._cache if self._cache is not None and self._bus_healthy() else None
        out, entity, n_keys, counts = self._catalog(snapshot).retrieve_wire(
            query, read, now=int(time.time()), decoded=decoded, cache=cache, limits=self.limits
        )
        if not counted:  # answered from the in-process cache
            self.metrics.request(entity, n_keys)
            self.metrics.cache_lookup("in_process", entity, n_keys, 0)
        for fg, found, missing, expired in counts:
            self.metrics.feature_status(entity, fg, found, missing, expired)
        return out

    def persist_wire(self, query: bytes, *, saturate: bool = False, invalidate: bool = True) -> int:
        """A serialized ``persist.Query`` in (the gRPC and Kafka path): validated whole, then written.
        ``invalidate=False`` leaves cached copies of the written keys to expire by their TTL (eventual
        mode) instead of dropping them (strong mode). Returns the number of blocks written."""
        return self.write_prepared([self.prepare_wire(query, saturate=saturate)], invalidate=invalidate)

    def prepare_wire(self, query: bytes, *, saturate: bool = False) -> PreparedWrite:
        """The first half of :meth:`persist_wire`: validates a serialized ``persist.Query`` whole and
        builds its blocks (natively, without the GIL), writing nothing. Raises ``InvalidInputError`` /
        ``NotFoundError`` for a request that can never be stored."""
        snapshot = self.snapshot
        catalog = self._catalog(snapshot)
        entity, blocks, names = catalog.persist_wire(
            query, now=int(time.time()), saturate=saturate, limits=self.limits
        )
        # The native tuples are (key, fg id, block, expires_at): BlockWrite's fields, so _make takes them
        # as they are (the ingest path's per-row Python is kept to this).
        make = BlockWrite._make
        stores = {fg_id: snapshot.feature_group(entity, fg_id).store_id for fg_id in {b[1] for b in blocks}}
        by_store: dict[str, list[BlockWrite]] = {}
        if len(set(stores.values())) == 1:
            by_store[next(iter(stores.values()))] = list(map(make, blocks))
        else:
            for b in blocks:
                by_store.setdefault(stores[b[1]], []).append(make(b))
        return PreparedWrite(snapshot, entity, by_store, names, len(blocks))

    def write_prepared(self, prepared: Sequence[PreparedWrite], *, invalidate: bool = True) -> int:
        """The second half of :meth:`persist_wire`, for many requests at once: one store write (one
        transaction where the store has them) and one invalidation per store and entity. Where requests
        write the same (key, FG), the later one in ``prepared`` wins, as within one store write. Returns
        the number of blocks."""
        groups: dict[tuple[int, str, str], tuple[Snapshot, list[BlockWrite], list[str]]] = {}
        for p in prepared:
            self.metrics.request(p.entity, len(p.names))
            for store_id, writes in p.writes.items():
                group = groups.setdefault((id(p.snapshot), p.entity, store_id), (p.snapshot, [], []))
                group[1].extend(writes)
                group[2].extend(p.names)
        for (_, entity, store_id), (snapshot, writes, names) in groups.items():
            if len(prepared) > 1:
                names = list(dict.fromkeys(names))
            ent = snapshot.entity(entity)
            self._write(snapshot, store_id, ent, writes, invalidate=invalidate, names=names)
        return sum(p.blocks for p in prepared)

    def persist(
        self,
        entity: str,
        feature_group: str,
        keys: Sequence[Any],
        values: Any,
        *,
        keys_schema: Sequence[str] | None = None,
        saturate: bool = False,
        invalidate: bool = True,
    ) -> int:
        """Writes one row of ``feature_group`` per key. ``values``: an array of shape ``(keys, features)``
        (``(keys, features, length)`` for vectors) in the active version's feature order, a list of rows
        for strings, or a pandas DataFrame whose columns are feature labels (missing features get their
        defaults). Every value is validated before anything is written; ``invalidate`` as in
        :meth:`persist_wire`. Returns the number of rows."""
        self.limits.check_rows(len(keys), f"persist to feature group {entity}/{feature_group}")
        snapshot = self.snapshot
        catalog = self._catalog(snapshot)
        ent = snapshot.entity(entity)
        fg = snapshot.feature_group(entity, feature_group)
        schema = list(keys_schema) if keys_schema is not None else [k.label for k in ent.keys]
        canonical = self._canonical_keys(keys, catalog.key_permutation(entity, schema))
        for key in canonical:
            if "" in key:
                raise InvalidInputError(f"key {key!r} of entity {entity!r} has an empty value")
        rows = len(canonical)
        now = int(time.time())
        flat = _flatten(values, fg, rows)
        blocks = catalog.encode_rows(
            entity, feature_group, flat, rows, now=now, saturate=saturate, limits=self.limits
        )
        expires_at = now + fg.ttl_seconds if fg.ttl_seconds else 0
        writes = [BlockWrite(k, fg.id, b, expires_at) for k, b in zip(canonical, blocks, strict=False)]
        self.metrics.request(entity, rows)
        self._write(snapshot, fg.store_id, ent, writes, invalidate=invalidate)
        return rows

    def close(self) -> None:
        """Stops the registry watch and closes what this object opened."""
        if self._bus is not None:
            self._bus.close()
        if self._remote is not None and self._owns_remote:
            self._remote.close()
        self._watcher.close()
        for s in self._owned_stores:
            s.close()
        if self._owns_backend:
            self._backend.close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _shape(vals: Any, n_keys: int, columns: Sequence[tuple[str, int, int]]) -> Any:
    widths = [w for _, _, w in columns]
    if isinstance(vals, tuple):  # Q8 codes and scales (embeddings="native")
        codes, scales = vals
        shaped = _shape(codes, n_keys, columns)
        return Q8Values(shaped, scales.reshape(n_keys, len(columns)), tuple(widths))
    if isinstance(vals, list):  # strings
        per_row = sum(widths)
        rows = [vals[i * per_row : (i + 1) * per_row] for i in range(n_keys)]
        if all(DataType(t).is_vector for _, t, _ in columns):
            out = []
            for r in rows:
                cells, at = [], 0
                for w in widths:
                    cells.append(r[at : at + w])
                    at += w
                out.append(cells)
            return out
        return rows
    arr = np.asarray(vals)
    if columns and DataType(columns[0][1]).is_vector and len(set(widths)) == 1:
        return arr.reshape(n_keys, len(columns), widths[0])
    return arr.reshape(n_keys, sum(widths))


def _flatten(values: Any, fg: Any, rows: int) -> Any:
    """Row-major flat values of every feature of the active version."""
    labels = [f.label for f in fg.features]
    if hasattr(values, "columns") and hasattr(values, "to_numpy"):  # a pandas DataFrame
        unknown = [c for c in values.columns if c not in labels]
        if unknown:
            raise InvalidInputError(f"feature group {fg.label!r} has no features {unknown}")
        if len(values.columns) == 0:
            # Every feature would get its default: a write that wipes the rows (as persist.Query
            # refuses an FG with no feature_labels).
            raise InvalidInputError(f"feature group {fg.label!r}: the DataFrame has no feature columns")
        from online_feature_store._native import decode_cell

        cols: list[Any] = []
        for f in fg.features:
            if f.label in values.columns:
                cols.append(values[f.label].to_numpy())
                continue
            default = decode_cell(int(fg.data_type), f.default, vector_length=f.vector_length)
            if fg.data_type.is_vector:
                cols.append([default] * rows)
            else:
                cols.append([default[0]] * rows if fg.data_type.is_string else np.full(rows, default[0]))
        if not fg.data_type.is_string and not fg.data_type.is_vector:
            # Numbers stay in numpy columns: no Python object per value.
            return np.column_stack(cols).reshape(-1)
        values = [list(r) for r in zip(*cols, strict=False)]
    if fg.data_type.is_string:
        out: list[str] = []
        for row in values:
            for cell in row:
                if isinstance(cell, str):
                    out.append(cell)
                else:
                    out.extend(cell)
        return out
    try:
        arr = np.asarray(values)
    except ValueError:  # vectors of different lengths (numpy 2 refuses to build a ragged array)
        arr = np.asarray(values, dtype=object)
    if arr.dtype == object:
        arr = np.asarray([np.concatenate([np.ravel(c) for c in row]) for row in values])
    return arr.reshape(-1)
