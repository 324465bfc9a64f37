"""``FeatureStore``: the feature store as an in-process library (embedded mode, no gRPC hop).

A facade over the parts that do the work, each in the module that owns it: the registry watch and its
compiled :class:`~online_feature_store._native.Catalog` (``registry/compiled.py``), the cache tiers
(``cache/tiers.py``), the open stores (``store/opened.py``) and the write path (``persist.py``). Keys,
names and blocks are Python objects here; feature values never are.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from online_feature_store._native import Catalog, EncodedRows, Tiers
from online_feature_store.cache.invalidation import InvalidationBus
from online_feature_store.cache.redis_cache import DistributedCache
from online_feature_store.cache.tiers import CacheTiers
from online_feature_store.embeddings import Embeddings, Q8Values, is_native
from online_feature_store.keys import key_rows
from online_feature_store.limits import (
    DEFAULT_MAX_KEYS_PER_REQUEST,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_ROWS_PER_PERSIST,
    make_limits,
)
from online_feature_store.metrics import FeatureStoreMetrics
from online_feature_store.persist import PreparedWrite, by_store, prepare_wire, rows_to_blocks
from online_feature_store.registry.backend import RegistryBackend
from online_feature_store.registry.compiled import CompiledRegistry
from online_feature_store.registry.connect import open_registry
from online_feature_store.registry.model import Entity
from online_feature_store.registry.snapshot import Snapshot
from online_feature_store.registry.watcher import RegistryWatcher
from online_feature_store.results import RetrieveResult
from online_feature_store.settings import data_dir, registry_url
from online_feature_store.store.base import BlockStore, BlockWrite, KeyValues
from online_feature_store.store.keys import encode_key
from online_feature_store.store.opened import OpenStores

__all__ = ["FeatureStore"]

StoreCalls = list[tuple[str, str, float, bool]]
ReadReport = tuple[str, int, tuple[int, int] | None, tuple[int, int] | None, StoreCalls]
"""What a native read or write did (``Tiers.retrieve``, ``Tiers.persist_wire``): ``(entity, keys,
in-process (hits, misses), distributed (hits, misses), [(store id, op, seconds, failed)])``."""


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
        directory = data_dir(data_directory)  # absolute: a relative one from the working directory
        # The parts ask for self.metrics at each call: a server plugs its hooks in after construction.
        self._caches = CacheTiers(
            cache_bytes, distributed_cache, invalidation, directory, lambda: self.metrics
        )
        self._owns_backend = registry is None or isinstance(registry, str)
        self._backend = (
            open_registry(registry_url(registry, directory))
            if registry is None or isinstance(registry, str)
            else registry
        )
        self._compiled = CompiledRegistry()
        self._revision_hooks: list[Callable[[Snapshot], None]] = []
        # Each new revision is compiled by the watcher thread as it arrives, off the request path.
        self._watcher = RegistryWatcher(self._backend, poll_interval=poll_interval, on_change=self._changed)
        self._compiled.precompile(self._watcher.snapshot)
        self._stores = OpenStores(stores, directory, lambda: self.metrics, self._caches.add_store)

    @property
    def snapshot(self) -> Snapshot:
        """The registry snapshot currently served."""
        return self._watcher.snapshot

    @property
    def registry_healthy(self) -> bool:
        """False while the registry cannot be reached (the last good snapshot is still served)."""
        return self._watcher.healthy

    def _catalog(self, snapshot: Snapshot) -> Catalog:
        return self._compiled.catalog(snapshot)

    def _changed(self, snapshot: Snapshot) -> None:
        self._compiled.precompile(snapshot)
        for hook in list(self._revision_hooks):
            hook(snapshot)

    def on_revision(self, hook: Callable[[Snapshot], None], *, remove: bool = False) -> None:
        """Calls ``hook(snapshot)`` from the registry watch with each new revision, once it is compiled
        (``remove``: stops that). A serving front takes its catalog (:meth:`catalog`) from here."""
        if remove:
            if hook in self._revision_hooks:
                self._revision_hooks.remove(hook)
        else:
            self._revision_hooks.append(hook)

    def catalog(self, snapshot: Snapshot) -> Catalog:
        """The native catalog of ``snapshot``'s revision (compiled once per revision)."""
        return self._catalog(snapshot)

    def native_tiers(self) -> Tiers | None:
        """The native read path for a serving front that calls it without Python, or None when its
        invalidation bus must be asked per request (a bus that does not keep the native gate)."""
        tiers = self._caches.tiers()
        return None if self._caches.asks_bus else tiers

    def native_read_done(self) -> None:
        """Reports what native reads queued (the distributed cache's errors and breaker changes)."""
        self._caches.after_native_read()

    def store(self, store_id: str) -> BlockStore:
        """The open store behind registry store ``store_id`` (opened on first use)."""
        return self._stores.get(self.snapshot, store_id)

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
        # The whole read natively (cache/tiers.py) when every tier it needs is native: one call.
        got, report, error = self._caches.tiers().retrieve(
            catalog,
            entity,
            schema,
            request,
            keys,
            limits=self.limits,
            native=native,
            time_left=self.metrics.time_left(),
        )
        if got is not None or error is not None:
            self._report(report)
            if error is not None:
                self.metrics.request(entity, len(keys))
                raise error
            assert got is not None
            return self._result(snapshot, entity, features, got, len(keys))
        cache = self._caches.serving()
        if cache is not None:
            # Every key cached in process: lookup and assembly in one native call, no store round trip.
            hit = catalog.retrieve_cached(
                cache, entity, schema, request, keys, limits=self.limits, native=native
            )
            if hit is not None:
                self.metrics.cache_lookup("in_process", entity, len(keys), 0)
                return self._result(snapshot, entity, features, hit, len(keys))
        # Planned and held to the limits before a key is converted or a store read.
        planned = catalog.plan(entity, schema, request, keys=len(keys), limits=self.limits)
        perm = catalog.key_permutation(entity, schema)
        canonical = key_rows(keys, len(perm), perm)
        self.metrics.request(entity, len(canonical))
        blocks = self._read(snapshot, ent, canonical, [fg_id for fg_id, _ in planned])
        now = int(time.time())
        results = catalog.retrieve(
            entity, schema, request, blocks, now=now, limits=self.limits, native=native
        )
        values: dict[str, Any] = {}
        status: dict[str, npt.NDArray[np.uint8]] = {}
        for (fg, _labels), (vals, st) in zip(request, results, strict=False):
            # Shaped natively (ofs_core::shape, the one rule); Q8's native form comes as a tuple.
            values[fg] = Q8Values.from_native(vals) if isinstance(vals, tuple) else vals
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

    def _report(self, report: ReadReport) -> None:
        """Reports what a native read did (cache lookups per tier, timed store calls) to the hooks."""
        entity, _keys, in_process, distributed, calls = report
        self._caches.after_native_read()
        if in_process is not None:
            self.metrics.cache_lookup("in_process", entity, *in_process)
        if distributed is not None:
            self.metrics.cache_lookup("distributed", entity, *distributed)
        for store_id, op, seconds, failed in calls:
            self.metrics.store_call(store_id, op, seconds, failed)

    def _answered_natively(self, report: ReadReport, error: BaseException | None) -> None:
        """A wire call the native tiers took whole: reports what it did, counts its request, and raises
        its error (a store failure, or the deadline before the store calls)."""
        self._report(report)
        self.metrics.request(report[0], report[1])
        if error is not None:
            raise error

    def _read(self, snapshot: Snapshot, ent: Entity, keys: list[KeyValues], fg_ids: list[int]) -> list[bytes]:
        """Blocks key-major (``[k * len(fg_ids) + f]``), through the cache tiers to the stores."""

        def read_stores(missed: list[KeyValues]) -> list[bytes]:
            return self._stores.read(snapshot, ent, missed, fg_ids)

        return self._caches.read(snapshot, ent, keys, fg_ids, read_stores)

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
        """Writes, then (``invalidate``: strong mode) drops the written keys from every cache tier, here
        and in the other processes. ``names``: the written keys already encoded and distinct, when the
        caller has them."""
        self._stores.write(snapshot, store_id, ent, writes)
        if invalidate:
            if names is None:
                names = list(dict.fromkeys(encode_key(w.key) for w in writes))
            self._caches.invalidate(ent, names)

    def retrieve_wire(self, query: bytes, *, decoded: bool = False) -> bytes:
        """A serialized ``retrieve.Query`` in, the serialized ``retrieve.Result`` out (the gRPC path);
        with ``decoded``, a ``retrieve.DecodedResult`` with every cell rendered as a string."""
        snapshot = self.snapshot
        catalog = self._catalog(snapshot)
        now = int(time.time())
        # The whole request natively (parse, tiers, response bytes) when every tier it needs is native.
        done, report, error = self._caches.tiers().retrieve_wire(
            catalog, query, now=now, decoded=decoded, limits=self.limits, time_left=self.metrics.time_left()
        )
        if done is not None or error is not None:
            self._answered_natively(report, error)
            assert done is not None
            out, entity, _n_keys, counts = done
            for fg, found, missing, expired in counts:
                self.metrics.feature_status(entity, fg, found, missing, expired)
            return out
        counted: list[bool] = []

        def read(entity: str, keys: list[list[str]], fg_ids: list[int]) -> list[bytes]:
            counted.append(True)
            self.metrics.request(entity, len(keys))
            return self._read(snapshot, snapshot.entity(entity), [tuple(k) for k in keys], fg_ids)

        # One native call: parse and plan, answer from the in-process cache or read() the blocks, build
        # the response bytes.
        out, entity, n_keys, counts = catalog.retrieve_wire(
            query,
            read,
            now=now,
            decoded=decoded,
            cache=self._caches.serving(),
            limits=self.limits,
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
        if invalidate:
            # The whole write natively (validate, build, store writes, invalidation and its publication)
            # when every tier it touches is native; else the same in Python below.
            snapshot = self.snapshot
            done, report, error = self._caches.tiers().persist_wire(
                self._catalog(snapshot),
                query,
                now=int(time.time()),
                saturate=saturate,
                limits=self.limits,
                time_left=self.metrics.time_left(),
            )
            if done is not None or error is not None:
                self._answered_natively(report, error)
                assert done is not None
                return done[2]
        return self.write_prepared([self.prepare_wire(query, saturate=saturate)], invalidate=invalidate)

    def prepare_wire(self, query: bytes, *, saturate: bool = False) -> PreparedWrite:
        """The first half of :meth:`persist_wire`: validates a serialized ``persist.Query`` whole and
        builds its blocks (natively, without the GIL), writing nothing. Raises ``InvalidInputError`` /
        ``NotFoundError`` for a request that can never be stored."""
        snapshot = self.snapshot
        return prepare_wire(snapshot, self._catalog(snapshot), query, saturate=saturate, limits=self.limits)

    def write_prepared(self, prepared: Sequence[PreparedWrite], *, invalidate: bool = True) -> int:
        """The second half of :meth:`persist_wire`, for many requests at once: one store write (one
        transaction where the store has them) and one invalidation per store and entity. Where requests
        write the same (key, FG), the later one in ``prepared`` wins, as within one store write. Returns
        the number of blocks."""
        for p in prepared:
            self.metrics.request(p.entity, len(p.names))
        for w in by_store(prepared):
            ent = w.snapshot.entity(w.entity)
            self._write(w.snapshot, w.store_id, ent, w.writes, invalidate=invalidate, names=w.names)
        return sum(p.blocks for p in prepared)

    def write_encoded(
        self,
        snapshot: Snapshot,
        entity: str,
        batches: Sequence[EncodedRows],
        *,
        invalidate: bool = True,
    ) -> int:
        """Writes rows encoded by ``Catalog.encode_batch`` (the batch loaders' path: key names and blocks
        in native memory): one store write per store (one transaction where the store has them; a
        native store takes them without a Python object per row), then, with ``invalidate``, the
        written keys dropped from every cache tier as by :meth:`write_prepared`. Later rows of the same
        (key, FG) win. Returns the number of blocks."""
        ent = snapshot.entity(entity)
        rows = sum(len(b) for b in batches)
        self.metrics.request(entity, rows)
        by_store: dict[str, list[int]] = {}
        for fg_id in dict.fromkeys(fg for b in batches for fg, _expires in b.groups):
            by_store.setdefault(snapshot.feature_group(entity, fg_id).store_id, []).append(fg_id)
        for store_id, fg_ids in by_store.items():
            self._stores.write_encoded(snapshot, store_id, ent, batches, fg_ids)
        if invalidate:
            # The names only when a tier keeps keys (a loader without caches builds none per row).
            names = (
                list(dict.fromkeys(n for b in batches for n in b.names()))
                if self._caches.keeps_keys(ent)
                else []
            )
            self._caches.invalidate(ent, names)
        return sum(len(b) * len(b.groups) for b in batches)

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
        snapshot = self.snapshot
        fg, writes = rows_to_blocks(
            snapshot,
            self._catalog(snapshot),
            entity,
            feature_group,
            keys,
            values,
            keys_schema=keys_schema,
            saturate=saturate,
            limits=self.limits,
        )
        self.metrics.request(entity, len(writes))
        self._write(snapshot, fg.store_id, snapshot.entity(entity), writes, invalidate=invalidate)
        return len(writes)

    def close(self) -> None:
        """Stops the registry watch and closes what this object opened."""
        self._caches.close()
        self._watcher.close()
        self._stores.close()
        if self._owns_backend:
            self._backend.close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
