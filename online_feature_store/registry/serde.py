"""JSON documents of registry objects: one per entity, store and caller, as both backends store them."""

from __future__ import annotations

import base64
import json
from typing import Any

from online_feature_store.registry.model import (
    CachePolicy,
    Caller,
    Entity,
    Feature,
    FeatureGroup,
    Key,
    RegistryState,
    Store,
)
from online_feature_store.types import DataType

__all__ = [
    "caller_from_doc",
    "caller_to_doc",
    "dumps",
    "entity_from_doc",
    "entity_to_doc",
    "state_docs",
    "state_from_docs",
    "store_from_doc",
    "store_to_doc",
]

Doc = dict[str, Any]


def dumps(doc: Doc) -> str:
    """Canonical JSON (sorted keys, no spaces): equal documents are equal strings."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def _cache_to_doc(policy: CachePolicy) -> Doc:
    return {
        "enabled": policy.enabled,
        "ttl_seconds": policy.ttl_seconds,
        "jitter_percent": policy.jitter_percent,
    }


def _cache_from_doc(doc: Doc) -> CachePolicy:
    return CachePolicy(bool(doc["enabled"]), int(doc["ttl_seconds"]), int(doc["jitter_percent"]))


def _feature_to_doc(f: Feature) -> Doc:
    return {
        "label": f.label,
        "default": base64.b64encode(f.default).decode(),
        "string_length": f.string_length,
        "vector_length": f.vector_length,
    }


def _fg_to_doc(fg: FeatureGroup) -> Doc:
    return {
        "id": fg.id,
        "label": fg.label,
        "data_type": fg.data_type.type_name,
        "ttl_seconds": fg.ttl_seconds,
        "store_id": fg.store_id,
        "in_process_cache": fg.in_process_cache,
        "distributed_cache": fg.distributed_cache,
        "active_version": fg.active_version,
        "versions": {str(v): [_feature_to_doc(f) for f in feats] for v, feats in sorted(fg.versions.items())},
    }


def _fg_from_doc(doc: Doc) -> FeatureGroup:
    versions = {
        int(v): tuple(
            Feature(
                f["label"], base64.b64decode(f["default"]), int(f["string_length"]), int(f["vector_length"])
            )
            for f in feats
        )
        for v, feats in doc["versions"].items()
    }
    return FeatureGroup(
        id=int(doc["id"]),
        label=doc["label"],
        data_type=DataType.parse(doc["data_type"]),
        versions=dict(sorted(versions.items())),
        active_version=int(doc["active_version"]),
        ttl_seconds=int(doc["ttl_seconds"]),
        store_id=doc["store_id"],
        in_process_cache=bool(doc["in_process_cache"]),
        distributed_cache=bool(doc["distributed_cache"]),
    )


def entity_to_doc(entity: Entity) -> Doc:
    """The stored document of one entity with all its FGs and versions."""
    return {
        "label": entity.label,
        "keys": [{"label": k.label, "column": k.column} for k in entity.keys],
        "in_process_cache": _cache_to_doc(entity.in_process_cache),
        "distributed_cache": _cache_to_doc(entity.distributed_cache),
        "feature_groups": [_fg_to_doc(g) for g in entity.feature_groups],
    }


def entity_from_doc(doc: Doc) -> Entity:
    """Inverse of :func:`entity_to_doc`."""
    return Entity(
        label=doc["label"],
        keys=tuple(Key(k["label"], k["column"]) for k in doc["keys"]),
        feature_groups=tuple(_fg_from_doc(g) for g in doc["feature_groups"]),
        in_process_cache=_cache_from_doc(doc["in_process_cache"]),
        distributed_cache=_cache_from_doc(doc["distributed_cache"]),
    )


def store_to_doc(store: Store) -> Doc:
    """The stored document of one store."""
    return {"id": store.id, "kind": store.kind, "settings": dict(store.settings)}


def store_from_doc(doc: Doc) -> Store:
    """Inverse of :func:`store_to_doc`."""
    return Store(doc["id"], doc["kind"], {str(k): str(v) for k, v in doc["settings"].items()})


def caller_to_doc(caller: Caller) -> Doc:
    """The stored document of one caller (its token only as a hash)."""
    return {"id": caller.id, "role": caller.role, "token_hash": caller.token_hash}


def caller_from_doc(doc: Doc) -> Caller:
    """Inverse of :func:`caller_to_doc`."""
    return Caller(doc["id"], doc["role"], doc["token_hash"])


def state_docs(state: RegistryState) -> dict[tuple[str, str], str]:
    """``{(kind, name): json}`` for every object; kind is ``entity``, ``store`` or ``caller``."""
    docs = {("entity", e.label): dumps(entity_to_doc(e)) for e in state.entities}
    docs.update({("store", s.id): dumps(store_to_doc(s)) for s in state.stores})
    docs.update({("caller", c.id): dumps(caller_to_doc(c)) for c in state.callers})
    return docs


def state_from_docs(docs: dict[tuple[str, str], str]) -> RegistryState:
    """Inverse of :func:`state_docs` (objects sorted by name)."""
    by_kind: dict[str, list[Doc]] = {"entity": [], "store": [], "caller": []}
    for (kind, _name), text in sorted(docs.items()):
        by_kind[kind].append(json.loads(text))
    return RegistryState(
        entities=tuple(entity_from_doc(d) for d in by_kind["entity"]),
        stores=tuple(store_from_doc(d) for d in by_kind["store"]),
        callers=tuple(caller_from_doc(d) for d in by_kind["caller"]),
    )
