"""The registry compiled for the native engine: a :class:`~online_feature_store._native.Catalog` per
revision (entities, FG layouts of every version, cache policies, the store of each FG), built once per
revision."""

from __future__ import annotations

import threading

from online_feature_store._native import Catalog
from online_feature_store.registry.snapshot import Snapshot

__all__ = ["CompiledRegistry", "compile_catalog"]


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
    distributed = [
        (e.label, p.ttl_seconds, p.jitter_percent, [g.id for g in e.feature_groups if g.distributed_cache])
        for e in snapshot.state.entities
        if (p := e.distributed_cache).enabled and p.ttl_seconds > 0
    ]
    # Where each FG's blocks live: what the native read path (cache/tiers.py) reads.
    storage = [
        (e.label, [k.column for k in e.keys], [(g.id, g.store_id) for g in e.feature_groups])
        for e in snapshot.state.entities
    ]
    return Catalog(
        snapshot.revision,
        entities,
        fgs,
        in_process_cache=in_process,
        distributed_cache=distributed,
        storage=storage,
    )


class CompiledRegistry:
    """The catalog of the latest revision asked for, compiled once: a registry watcher calls
    :meth:`precompile` with each new snapshot as it arrives, so requests find it compiled."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._compiled: tuple[int, Catalog] | None = None

    def catalog(self, snapshot: Snapshot) -> Catalog:
        """The catalog of ``snapshot``'s revision (compiled here if it is new)."""
        compiled = self._compiled
        if compiled is not None and compiled[0] == snapshot.revision:
            return compiled[1]
        with self._lock:
            if self._compiled is None or self._compiled[0] != snapshot.revision:
                self._compiled = (snapshot.revision, compile_catalog(snapshot))
            return self._compiled[1]

    def precompile(self, snapshot: Snapshot) -> None:
        """:meth:`catalog`, for a watcher's ``on_change``."""
        self.catalog(snapshot)
