"""The YAML registry file (format in docs/registry.md): parse it into a :class:`RegistrySpec`, export a state.

PyYAML is imported lazily (extra ``[registry]``) so the core package imports with numpy alone.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from online_feature_store.errors import InvalidInputError
from online_feature_store.registry.model import CachePolicy, Entity, FeatureGroup, Key, RegistryState, Store
from online_feature_store.registry.spec import (
    CallerSpec,
    EntitySpec,
    FeatureGroupSpec,
    FeatureSpec,
    RegistrySpec,
    cell_to_plain,
)
from online_feature_store.store.secrets import redact_settings
from online_feature_store.types import DataType

__all__ = ["dump_yaml", "load_yaml", "parse_spec", "state_to_dict"]


def _yaml() -> Any:
    try:
        return importlib.import_module("yaml")
    except ImportError as exc:
        raise InvalidInputError(
            "registry YAML needs PyYAML: pip install 'online-feature-store[registry]'"
        ) from exc


def load_yaml(path: str | Path, *, env: Mapping[str, str] | None = None) -> RegistrySpec:
    """Read and parse the registry file at ``path`` (tokens from ``env``, default ``os.environ``)."""
    text = Path(path).read_text(encoding="utf-8")
    yaml = _yaml()  # outside the try: a missing PyYAML is not a YAML syntax error
    try:
        doc = yaml.safe_load(text)
    except Exception as exc:  # yaml.YAMLError, without importing yaml at module level
        raise InvalidInputError(f"{path}: not valid YAML: {exc}") from None
    return parse_spec(doc if doc is not None else {}, env=env)


def dump_yaml(state: RegistryState) -> str:
    """``state`` as YAML that :func:`load_yaml` reads back and applies as a no-op."""
    text: str = _yaml().safe_dump(state_to_dict(state), sort_keys=False, allow_unicode=True)
    return "# online-feature-store registry (ofs registry export)\n" + text


# -- parsing ---------------------------------------------------------------------------------------


class _Obj:
    """A YAML mapping being read: typed getters and an error for unknown fields (typos)."""

    def __init__(self, raw: Any, at: str, allowed: set[str]) -> None:
        if not isinstance(raw, dict):
            raise InvalidInputError(f"{at}: expected a mapping, got {type(raw).__name__}")
        unknown = sorted(set(map(str, raw)) - allowed)
        if unknown:
            raise InvalidInputError(f"{at}: unknown field(s) {unknown} (allowed: {sorted(allowed)})")
        self.raw, self.at = raw, at

    def get(
        self, name: str, kind: type | tuple[type, ...], default: Any = None, *, required: bool = False
    ) -> Any:
        if name not in self.raw or self.raw[name] is None:
            if required:
                raise InvalidInputError(f"{self.at}: missing field {name!r}")
            return default
        value = self.raw[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise InvalidInputError(f"{self.at}: field {name!r} must be {names}, got {value!r}")
        return value

    def label(self, name: str = "label") -> str:
        value: str = self.get(name, str, required=True)
        if not value:
            raise InvalidInputError(f"{self.at}: field {name!r} is empty")
        return value

    def items(self, name: str) -> list[Any]:
        value: list[Any] = self.get(name, list, [])
        return value


def _cache(raw: Any, at: str) -> CachePolicy:
    if raw is None:
        return CachePolicy()
    o = _Obj(raw, at, {"enabled", "ttl_seconds", "jitter_percent"})
    return CachePolicy(
        o.get("enabled", bool, False), o.get("ttl_seconds", int, 0), o.get("jitter_percent", int, 0)
    )


def _feature(raw: Any, at: str) -> FeatureSpec:
    o = _Obj(raw, at, {"label", "default", "string_length", "vector_length"})
    return FeatureSpec(
        label=o.label(),
        default=o.raw.get("default"),
        string_length=o.get("string_length", int),
        vector_length=o.get("vector_length", int, 0),
    )


def _fg(raw: Any, at: str) -> FeatureGroupSpec:
    fields = {
        "label",
        "id",
        "data_type",
        "ttl_seconds",
        "store",
        "in_process_cache",
        "distributed_cache",
        "features",
    }
    o = _Obj(raw, at, fields)
    label = o.label()
    at = f"{at} ({label})"
    type_name = o.get("data_type", (str, int), required=True)
    try:
        data_type = DataType.parse(type_name)
    except (ValueError, KeyError):
        data_type = DataType.UNKNOWN
    if data_type == DataType.UNKNOWN:
        raise InvalidInputError(f"{at}: unknown data type {type_name!r}")
    return FeatureGroupSpec(
        label=label,
        data_type=data_type,
        features=tuple(_feature(f, f"{at} feature #{i}") for i, f in enumerate(o.items("features"))),
        id=o.get("id", int),
        ttl_seconds=o.get("ttl_seconds", int, 0),
        store=o.get("store", str, ""),
        in_process_cache=o.get("in_process_cache", bool, False),
        distributed_cache=o.get("distributed_cache", bool, False),
    )


def _entity(raw: Any, at: str) -> EntitySpec:
    o = _Obj(raw, at, {"label", "keys", "cache", "feature_groups"})
    label = o.label()
    at = f"entity {label!r}"
    keys = []
    for i, k in enumerate(o.items("keys")):
        ko = _Obj(k, f"{at} key #{i}", {"label", "column"})
        key_label = ko.label()
        keys.append(Key(key_label, ko.get("column", str, key_label)))
    cache = _Obj(o.raw.get("cache") or {}, f"{at} cache", {"in_process", "distributed"})
    return EntitySpec(
        label=label,
        keys=tuple(keys),
        feature_groups=tuple(
            _fg(g, f"{at} feature group #{i}") for i, g in enumerate(o.items("feature_groups"))
        ),
        in_process_cache=_cache(cache.raw.get("in_process"), f"{at} cache.in_process"),
        distributed_cache=_cache(cache.raw.get("distributed"), f"{at} cache.distributed"),
    )


def _store(raw: Any, at: str) -> Store:
    o = _Obj(raw, at, {"id", "kind", "settings"})
    settings = o.get("settings", dict, {})
    return Store(
        o.label("id"), o.get("kind", str, required=True), {str(k): str(v) for k, v in settings.items()}
    )


def _caller(raw: Any, at: str, env: Mapping[str, str]) -> CallerSpec:
    o = _Obj(raw, at, {"id", "role", "token_env", "token_hash"})
    caller_id = o.label("id")
    token_env = o.get("token_env", str)
    token_hash = o.get("token_hash", str)
    if token_env and token_hash:
        raise InvalidInputError(f"caller {caller_id!r}: give token_env or token_hash, not both")
    return CallerSpec(
        id=caller_id,
        role=o.get("role", str, required=True),
        token=(env.get(token_env) or None) if token_env else None,
        token_hash=token_hash,
        token_source=f"environment variable {token_env}" if token_env else "",
    )


def parse_spec(doc: Any, *, env: Mapping[str, str] | None = None) -> RegistrySpec:
    """A parsed YAML document (``dict``) as a spec; ``InvalidInputError`` names the offending place."""
    env = os.environ if env is None else env
    o = _Obj(doc, "registry file", {"entities", "stores", "callers"})
    return RegistrySpec(
        entities=tuple(_entity(e, f"entity #{i}") for i, e in enumerate(o.items("entities"))),
        stores=tuple(_store(s, f"store #{i}") for i, s in enumerate(o.items("stores"))),
        callers=tuple(_caller(c, f"caller #{i}", env) for i, c in enumerate(o.items("callers"))),
    )


# -- export ----------------------------------------------------------------------------------------


def _cache_dict(policy: CachePolicy) -> dict[str, Any]:
    return {
        "enabled": policy.enabled,
        "ttl_seconds": policy.ttl_seconds,
        "jitter_percent": policy.jitter_percent,
    }


def _fg_dict(fg: FeatureGroup) -> dict[str, Any]:
    features = []
    for f in fg.features:
        item: dict[str, Any] = {
            "label": f.label,
            "default": cell_to_plain(fg.data_type, f.default, f.vector_length),
        }
        if fg.data_type.is_string:
            item["string_length"] = f.string_length
        if fg.data_type.is_vector:
            item["vector_length"] = f.vector_length
        features.append(item)
    out: dict[str, Any] = {"label": fg.label, "id": fg.id, "data_type": fg.data_type.type_name}
    out["ttl_seconds"] = fg.ttl_seconds
    if fg.store_id:
        out["store"] = fg.store_id
    out["in_process_cache"] = fg.in_process_cache
    out["distributed_cache"] = fg.distributed_cache
    out["features"] = features
    return out


def _entity_dict(entity: Entity) -> dict[str, Any]:
    return {
        "label": entity.label,
        "keys": [{"label": k.label, "column": k.column} for k in entity.keys],
        "cache": {
            "in_process": _cache_dict(entity.in_process_cache),
            "distributed": _cache_dict(entity.distributed_cache),
        },
        "feature_groups": [_fg_dict(g) for g in entity.feature_groups],
    }


def state_to_dict(state: RegistryState) -> dict[str, Any]:
    """``state`` as the YAML file's structure (active versions only; tokens as their hashes; a credential
    a store setting still holds is redacted: ``store.secrets``)."""
    return {
        "stores": [
            {"id": s.id, "kind": s.kind, "settings": redact_settings(s.settings)} for s in state.stores
        ],
        "callers": [{"id": c.id, "role": c.role, "token_hash": c.token_hash} for c in state.callers],
        "entities": [_entity_dict(e) for e in state.entities],
    }
