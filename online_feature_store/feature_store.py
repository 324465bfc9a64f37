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
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from online_feature_store._native import BlockCache, Catalog
from online_feature_store.errors import InvalidInputError
from online_feature_store.registry.backend import RegistryBackend, data_dir, open_registry
from online_feature_store.registry.model import Entity
from online_feature_store.registry.snapshot import Snapshot
from online_feature_store.registry.watcher import RegistryWatcher
from online_feature_store.store.base import BlockStore, BlockWrite, KeyValues
from online_feature_store.store.keys import encode_key
from online_feature_store.types import DataType

__all__ = ["FeatureStore", "FeatureStoreMetrics", "RetrieveResult", "Status", "compile_catalog"]

FOUND, MISSING, EXPIRED = 0, 1, 2

_T = TypeVar("_T")


class Status:
    """Per key and feature group: what the returned values are."""

    FOUND = FOUND
    """Live stored data."""
    MISSING = MISSING
    """Nothing stored: the active version's defaults."""
    EXPIRED = EXPIRED
    """Stored data past its TTL: the active version's defaults."""


class FeatureStoreMetrics:
    """What a :class:`FeatureStore` reports to whoever embeds it (the server exports it to Prometheus).
    Every hook is a no-op here, so the library itself has no metrics dependency."""

    def request(self, entity: str, rows: int) -> None:
        """A retrieve or persist of ``rows`` keys of ``entity`` passed planning."""

    def store_call(self, store_id: str, op: str, seconds: float, failed: bool) -> None:
        """One ``read`` or ``write`` call to store ``store_id`` took ``seconds`` (``failed``: it raised)."""

    def feature_status(self, entity: str, feature_group: str, found: int, missing: int, expired: int) -> None:
        """Rows of a retrieve answered with stored data, with defaults (nothing stored) or expired data."""


@dataclass(frozen=True)
class RetrieveResult:
    """Features per FG: ``values[fg]`` has one row per requested key (in request order, duplicates kept)
    and one column per requested feature: shape ``(keys, features)``, or ``(keys, features, length)``
    for vector FGs; a list of rows for strings. ``status[fg]`` is a uint8 array of :class:`Status`."""

    entity: str
    features: Mapping[str, Sequence[str]]
    values: Mapping[str, Any]
    status: Mapping[str, npt.NDArray[np.uint8]]
    revision: int

    def to_pandas(self) -> Any:
        """One row per key, one column ``"<fg>.<feature>"`` per feature (vectors as arrays)."""
        import pandas as pd  # optional dependency

        columns: dict[str, Any] = {}
        for fg, labels in self.features.items():
            vals = self.values[fg]
            for i, label in enumerate(labels):
                col = [row[i] for row in vals] if isinstance(vals, list) else list(vals[:, i])
                columns[f"{fg}.{label.split('@')[0]}"] = col
        return pd.DataFrame(columns)


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
                    [f.string_length for f in feats] if g.data_type in _STRING_TYPES else [],
                    [f.vector_length for f in feats] if g.data_type.is_vector else [],
                    [f.default for f in feats],
                )
                for v, feats in sorted(g.versions.items())
            ]
            fgs.append((e.label, g.id, g.label, int(g.data_type), g.active_version, g.ttl_seconds, versions))
    return Catalog(snapshot.revision, entities, fgs)


_STRING_TYPES = (DataType.STRING, DataType.STRING_VECTOR)


class FeatureStore:
    """Retrieve and persist features in-process, against the same registry and stores as the servers.

    ``registry`` is a registry URL (``sqlite:///…``, ``etcd://…``; default ``$OFS_REGISTRY`` or the SQLite
    file in the data directory) or an open backend. ``stores`` overrides the store a registry store id
    resolves to (mainly for tests and embedding).
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
    ) -> None:
        self.metrics = metrics if metrics is not None else FeatureStoreMetrics()
        """Observability hooks (no-ops unless a service plugs its own in)."""
        self._cache = BlockCache(cache_bytes) if cache_bytes > 0 else None
        self._data_dir = Path(data_directory).resolve() if data_directory is not None else data_dir()
        if registry is None and data_directory is not None and not os.environ.get("OFS_REGISTRY"):
            registry = f"sqlite:///{self._data_dir / 'registry.db'}"
        self._backend = open_registry(registry) if registry is None or isinstance(registry, str) else registry
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
        single = len(perm) == 1
        out: list[KeyValues] = []
        for row in keys:
            if isinstance(row, (str, bytes, int, np.integer)):
                if not single:
                    raise InvalidInputError(
                        f"key {row!r} is a single value but the entity has {len(perm)} keys"
                    )
                row = (row,)
            if len(row) != len(perm):
                raise InvalidInputError(f"key {tuple(row)!r} has {len(row)} values, expected {len(perm)}")
            out.append(tuple(str(row[p]) for p in perm))
        return out

    # -- API --------------------------------------------------------------------------------------
    def retrieve(
        self,
        entity: str,
        keys: Sequence[Any],
        features: Mapping[str, Sequence[str]],
        *,
        keys_schema: Sequence[str] | None = None,
    ) -> RetrieveResult:
        """Features of ``keys`` (rows of key values in ``keys_schema`` order, default the entity's key
        order; plain values for single-key entities) for ``features`` = ``{fg: [feature, …]}`` (a feature
        may be ``"label@DataTypeFP16"`` for retrieval-time quantization)."""
        snapshot = self.snapshot
        catalog = self._catalog(snapshot)
        ent = snapshot.entity(entity)
        schema = list(keys_schema) if keys_schema is not None else [k.label for k in ent.keys]
        canonical = self._canonical_keys(keys, catalog.key_permutation(entity, schema))
        request = [(fg, list(labels)) for fg, labels in features.items()]
        planned = catalog.plan(entity, schema, request)
        self.metrics.request(entity, len(canonical))
        blocks = self._read(snapshot, ent, canonical, [fg_id for fg_id, _ in planned])
        now = int(time.time())
        results = catalog.retrieve(entity, schema, request, blocks, now=now)
        values: dict[str, Any] = {}
        status: dict[str, npt.NDArray[np.uint8]] = {}
        for (fg, _labels), (_fg_id, columns), (vals, st) in zip(request, planned, results):
            values[fg] = _shape(vals, len(canonical), columns)
            status[fg] = st
            found, missing, expired = (int(c) for c in np.bincount(st, minlength=3)[:3])
            self.metrics.feature_status(entity, fg, found, missing, expired)
        return RetrieveResult(entity, dict(features), values, status, snapshot.revision)

    def _read(self, snapshot: Snapshot, ent: Entity, keys: list[KeyValues], fg_ids: list[int]) -> list[bytes]:
        """Blocks key-major (``[k * len(fg_ids) + f]``): from the in-process cache when the entity enables
        it and every requested FG is cacheable, the misses (and everything else) from the stores."""
        policy = ent.in_process_cache
        cacheable = (
            self._cache is not None
            and policy.enabled
            and policy.ttl_seconds > 0
            and all(snapshot.feature_group(ent.label, f).in_process_cache for f in fg_ids)
        )
        if not cacheable or self._cache is None:
            return self._read_stores(snapshot, ent, keys, fg_ids)
        names = [encode_key(k) for k in keys]
        hits = self._cache.get_many(ent.label, names, fg_ids)
        missed = [i for i, h in enumerate(hits) if h is None]
        n = len(fg_ids)
        fetched = self._read_stores(snapshot, ent, [keys[i] for i in missed], fg_ids) if missed else []
        if missed:
            self._cache.put_many(
                ent.label,
                [names[i] for i in missed],
                fg_ids,
                fetched,
                policy.ttl_seconds,
                policy.jitter_percent,
            )
        blocks: list[bytes] = []
        from_store = iter(range(len(missed)))
        for h in hits:
            if h is None:
                m = next(from_store)
                blocks.extend(fetched[m * n : (m + 1) * n])
            else:
                blocks.extend(h)
        return blocks

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
    ) -> None:
        """Writes, then (``invalidate``: strong mode) drops the written keys from the caches."""
        self._store_call(store_id, "write", partial(self._store(snapshot, store_id).write, ent, writes))
        if invalidate and self._cache is not None:  # strong consistency in this process; others: see docs
            self._cache.invalidate(ent.label, list({encode_key(w.key) for w in writes}))

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
        entities: list[str] = []

        def read(entity: str, keys: list[list[str]], fg_ids: list[int]) -> list[bytes]:
            entities.append(entity)
            self.metrics.request(entity, len(keys))
            return self._read(snapshot, snapshot.entity(entity), [tuple(k) for k in keys], fg_ids)

        # One native call: parse and plan, read() the blocks, build the response bytes.
        out, counts = self._catalog(snapshot).retrieve_wire(
            query, read, now=int(time.time()), decoded=decoded
        )
        for fg, found, missing, expired in counts:
            self.metrics.feature_status(entities[0], fg, found, missing, expired)
        return out

    def persist_wire(self, query: bytes, *, saturate: bool = False, invalidate: bool = True) -> int:
        """A serialized ``persist.Query`` in (the gRPC and Kafka path): validated whole, then written.
        ``invalidate=False`` leaves cached copies of the written keys to expire by their TTL (eventual
        mode) instead of dropping them (strong mode). Returns the number of blocks written."""
        snapshot = self.snapshot
        catalog = self._catalog(snapshot)
        entity, blocks = catalog.persist_wire(query, now=int(time.time()), saturate=saturate)
        ent = snapshot.entity(entity)
        by_store: dict[str, list[BlockWrite]] = {}
        keys: set[KeyValues] = set()
        for key, fg_id, block, expires_at in blocks:
            store_id = snapshot.feature_group(entity, fg_id).store_id
            keys.add(row_key := tuple(key))
            by_store.setdefault(store_id, []).append(BlockWrite(row_key, fg_id, block, expires_at))
        self.metrics.request(entity, len(keys))
        for store_id, writes in by_store.items():
            self._write(snapshot, store_id, ent, writes, invalidate=invalidate)
        return len(blocks)

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
        catalog = self._catalog(snapshot)
        ent = snapshot.entity(entity)
        fg = snapshot.feature_group(entity, feature_group)
        schema = list(keys_schema) if keys_schema is not None else [k.label for k in ent.keys]
        canonical = self._canonical_keys(keys, catalog.key_permutation(entity, schema))
        rows = len(canonical)
        now = int(time.time())
        flat = _flatten(values, fg, rows)
        blocks = catalog.encode_rows(entity, feature_group, flat, rows, now=now, saturate=saturate)
        expires_at = now + fg.ttl_seconds if fg.ttl_seconds else 0
        writes = [BlockWrite(k, fg.id, b, expires_at) for k, b in zip(canonical, blocks)]
        self.metrics.request(entity, rows)
        self._write(snapshot, fg.store_id, ent, writes, invalidate=invalidate)
        return rows

    def close(self) -> None:
        """Stops the registry watch and closes what this object opened."""
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
                cols.append(
                    np.full(rows, default[0]) if fg.data_type not in _STRING_TYPES else [default[0]] * rows
                )
        if fg.data_type not in _STRING_TYPES and not fg.data_type.is_vector:
            # Numbers stay in numpy columns: no Python object per value.
            return np.column_stack(cols).reshape(-1)
        values = [list(r) for r in zip(*cols)]
    if fg.data_type in _STRING_TYPES:
        out: list[str] = []
        for row in values:
            for cell in row:
                if isinstance(cell, str):
                    out.append(cell)
                else:
                    out.extend(cell)
        return out
    arr = np.asarray(values)
    if arr.dtype == object:
        arr = np.asarray([np.concatenate([np.ravel(c) for c in row]) for row in values])
    return arr.reshape(-1)
