"""The stores one :class:`~online_feature_store.FeatureStore` reads and writes: a registry store id resolves
to an open :class:`~online_feature_store.store.base.BlockStore`, opened on first use (its tables ensured for
the registry's entities) or given by the caller; every call is timed and reported to the metrics hooks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TypeVar

from online_feature_store._native import EncodedRows, Store
from online_feature_store.errors import InvalidInputError
from online_feature_store.metrics import FeatureStoreMetrics
from online_feature_store.registry.model import Entity
from online_feature_store.registry.snapshot import Snapshot
from online_feature_store.store import open_store
from online_feature_store.store.base import BlockStore, BlockWrite, KeyValues

__all__ = ["OpenStores"]

_T = TypeVar("_T")


class OpenStores:
    """Registry store id → open store. ``given`` overrides what an id resolves to (tests, embedding) and is
    never closed here; the stores opened here (relative paths under ``data_dir``) are, by :meth:`close`.
    ``metrics()`` is asked at each call, so hooks plugged in later are used. ``on_open(store_id, store)``
    is told of every store, given or opened here (the native read path registers the native ones)."""

    def __init__(
        self,
        given: Mapping[str, BlockStore] | None,
        data_dir: Path,
        metrics: Callable[[], FeatureStoreMetrics],
        on_open: Callable[[str, BlockStore], None] | None = None,
    ) -> None:
        self._stores: dict[str, BlockStore] = dict(given or {})
        self._on_open = on_open
        if on_open is not None:
            for store_id, store in self._stores.items():
                on_open(store_id, store)
        self._opened: list[BlockStore] = []
        self._data_dir = data_dir
        self._metrics = metrics
        self._lock = threading.Lock()

    def get(self, snapshot: Snapshot, store_id: str) -> BlockStore:
        """The store behind ``store_id`` (opened on first use, from the spec in ``snapshot``)."""
        store = self._stores.get(store_id)
        if store is not None:
            return store
        with self._lock:
            if store_id not in self._stores:
                spec = snapshot.stores.get(store_id)
                if spec is None:
                    raise InvalidInputError(f"feature group store {store_id!r} is not in the registry")
                opened = open_store(spec, data_directory=self._data_dir)
                opened.ensure(snapshot.state.entities)
                self._stores[store_id] = opened
                self._opened.append(opened)
                if self._on_open is not None:
                    self._on_open(store_id, opened)
            return self._stores[store_id]

    def read(self, snapshot: Snapshot, ent: Entity, keys: list[KeyValues], fg_ids: list[int]) -> list[bytes]:
        """Blocks key-major (``[k * len(fg_ids) + f]``), one store read per store involved."""
        by_store: dict[str, list[int]] = {}
        for i, fg_id in enumerate(fg_ids):
            by_store.setdefault(snapshot.feature_group(ent.label, fg_id).store_id, []).append(i)
        n = len(fg_ids)
        blocks: list[bytes] = [b""] * (len(keys) * n)
        for store_id, idx in by_store.items():
            read = partial(self.get(snapshot, store_id).read, ent, keys, [fg_ids[i] for i in idx])
            rows = self._timed(store_id, "read", read)
            for k, row in enumerate(rows):
                for j, i in enumerate(idx):
                    blocks[k * n + i] = row[j]
        return blocks

    def write(self, snapshot: Snapshot, store_id: str, ent: Entity, writes: list[BlockWrite]) -> None:
        """One write of ``writes`` to store ``store_id`` (one transaction where the store has them)."""
        self._timed(store_id, "write", partial(self.get(snapshot, store_id).write, ent, writes))

    def write_encoded(
        self,
        snapshot: Snapshot,
        store_id: str,
        ent: Entity,
        batches: Sequence[EncodedRows],
        fg_ids: list[int],
    ) -> None:
        """One write of the rows of ``batches`` of the FGs ``fg_ids`` to store ``store_id``: a native store
        takes them from native memory; another gets them as :class:`BlockWrite` s."""
        store = self.get(snapshot, store_id)
        native = getattr(store, "native", None)
        if isinstance(native, Store):
            columns = [k.column for k in ent.keys]
            call = partial(native.write_encoded, ent.label, columns, list(batches), fg_ids)
        else:
            writes = [BlockWrite._make(w) for b in batches for w in b.block_writes(fg_ids)]
            call = partial(store.write, ent, writes)
        self._timed(store_id, "write", call)

    def _timed(self, store_id: str, op: str, call: Callable[[], _T]) -> _T:
        """``call()``, timed and reported to the metrics hooks (errors included) under ``store_id``."""
        started = time.perf_counter()
        failed = True
        try:
            result = call()
            failed = False
            return result
        finally:
            self._metrics().store_call(store_id, op, time.perf_counter() - started, failed)

    def close(self) -> None:
        """Closes the stores opened here."""
        for store in self._opened:
            store.close()
