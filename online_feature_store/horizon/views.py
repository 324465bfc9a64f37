"""Registry objects as the API's JSON (discovery): entities, feature groups with every version, stores,
callers, and search by label."""

from __future__ import annotations

import math
from typing import Any

from online_feature_store.registry.model import CachePolicy, Entity, Feature, FeatureGroup
from online_feature_store.registry.snapshot import Snapshot
from online_feature_store.registry.spec import cell_to_plain
from online_feature_store.types import DataType

__all__ = ["data_type_names", "entity_json", "fg_json", "search", "short_name"]


def short_name(dt: DataType) -> str:
    """The registry YAML's short name of a data type (``fp32``, ``fp16vector``)."""
    return dt.type_name[len("DataType") :].lower()


def data_type_names() -> list[str]:
    """Every data type a feature group can have, by short name."""
    return [short_name(dt) for dt in DataType if dt != DataType.UNKNOWN]


def _plain(value: Any) -> Any:
    # JSON has no NaN or infinities: such defaults (possible through YAML) are shown as strings
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _feature(fg: FeatureGroup, f: Feature) -> dict[str, Any]:
    return {
        "label": f.label,
        "default": _plain(cell_to_plain(fg.data_type, f.default, f.vector_length)),
        "string_length": f.string_length,
        "vector_length": f.vector_length,
    }


def fg_json(fg: FeatureGroup) -> dict[str, Any]:
    """A feature group with its active features and every version."""
    return {
        "id": fg.id,
        "label": fg.label,
        "data_type": short_name(fg.data_type),
        "ttl_seconds": fg.ttl_seconds,
        "store": fg.store_id,
        "in_process_cache": fg.in_process_cache,
        "distributed_cache": fg.distributed_cache,
        "active_version": fg.active_version,
        "features": [_feature(fg, f) for f in fg.features],
        "versions": {str(v): [_feature(fg, f) for f in feats] for v, feats in sorted(fg.versions.items())},
    }


def _cache(p: CachePolicy) -> dict[str, Any]:
    return {"enabled": p.enabled, "ttl_seconds": p.ttl_seconds, "jitter_percent": p.jitter_percent}


def entity_json(entity: Entity, *, full: bool) -> dict[str, Any]:
    """An entity; its FGs as labels, or as full objects when ``full``."""
    return {
        "label": entity.label,
        "keys": [{"label": k.label, "column": k.column} for k in entity.keys],
        "cache": {
            "in_process": _cache(entity.in_process_cache),
            "distributed": _cache(entity.distributed_cache),
        },
        "feature_groups": [fg_json(g) if full else g.label for g in entity.feature_groups],
    }


def search(snapshot: Snapshot, text: str) -> list[dict[str, Any]]:
    """Entities, FGs and features (of any version) whose label contains ``text``, case-insensitively."""
    needle = text.lower()
    hits: list[dict[str, Any]] = []
    for entity in snapshot.entities.values():
        if needle in entity.label.lower():
            hits.append({"kind": "entity", "entity": entity.label, "feature_group": None, "feature": None})
        for fg in entity.feature_groups:
            if needle in fg.label.lower():
                hits.append(
                    {
                        "kind": "feature_group",
                        "entity": entity.label,
                        "feature_group": fg.label,
                        "feature": None,
                    }
                )
            labels = dict.fromkeys(f.label for v in sorted(fg.versions) for f in fg.versions[v])
            hits += [
                {"kind": "feature", "entity": entity.label, "feature_group": fg.label, "feature": label}
                for label in labels
                if needle in label.lower()
            ]
    return hits
