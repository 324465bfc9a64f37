"""The declarative registry: what a YAML file describes, how it is reconciled with the current state, and
the human-readable plan of the difference (``+`` added, ``~`` changed, ``-`` removed).

``reconcile(current, spec)`` is a pure function: backends run it inside their transaction (re-running it on
conflict), so a plan computed earlier never overwrites a concurrent change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from online_feature_store.errors import InvalidInputError
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
from online_feature_store.registry.tokens import (
    check_token_strength,
    hash_token,
    is_legacy_hash,
    verify_token,
)
from online_feature_store.registry.validate import (
    Problem,
    cell_to_plain,
    encode_default,
    raise_problems,
    size_problems,
    vector_length_problems,
    where,
)
from online_feature_store.store.secrets import redact_settings
from online_feature_store.types import DataType

__all__ = [
    "CallerSpec",
    "EntitySpec",
    "FeatureGroupSpec",
    "FeatureSpec",
    "RegistrySpec",
    "booked_length",
    "build_feature",
    "cell_to_plain",
    "diff_states",
    "reconcile",
]

DEFAULT_STRING_LENGTH = 255
"""Booked length of a string feature when the spec does not give one."""


@dataclass(frozen=True)
class FeatureSpec:
    """A feature as declared: ``default`` is a plain value (``None`` = the type's zero)."""

    label: str
    default: Any = None
    string_length: int | None = None
    vector_length: int = 0


@dataclass(frozen=True)
class FeatureGroupSpec:
    """An FG as declared: its current features only (versions are the registry's business)."""

    label: str
    data_type: DataType
    features: tuple[FeatureSpec, ...]
    id: int | None = None
    ttl_seconds: int = 0
    store: str = ""
    in_process_cache: bool = False
    distributed_cache: bool = False


@dataclass(frozen=True)
class EntitySpec:
    """An entity as declared."""

    label: str
    keys: tuple[Key, ...]
    feature_groups: tuple[FeatureGroupSpec, ...] = ()
    in_process_cache: CachePolicy = field(default_factory=CachePolicy)
    distributed_cache: CachePolicy = field(default_factory=CachePolicy)


@dataclass(frozen=True)
class CallerSpec:
    """A caller as declared: a plain ``token`` (hashed on apply) or an already hashed ``token_hash``."""

    id: str
    role: str
    token: str | None = None
    token_hash: str | None = None
    token_source: str = ""
    """Where the token comes from (``env OFS_READER_TOKEN``), for error messages."""


@dataclass(frozen=True)
class RegistrySpec:
    """A whole desired registry (what ``ofs registry apply -f`` reads)."""

    entities: tuple[EntitySpec, ...] = ()
    stores: tuple[Store, ...] = ()
    callers: tuple[CallerSpec, ...] = ()


# -- reconcile -------------------------------------------------------------------------------------


def _zero(data_type: DataType, vector_length: int) -> Any:
    if data_type.is_string:
        zero: Any = ""
    elif data_type in (DataType.BOOL, DataType.BOOL_VECTOR):
        zero = False
    else:
        zero = 0
    return [zero] * vector_length if data_type.is_vector else zero


def booked_length(data_type: DataType, string_length: int | None) -> int:
    """The length a feature books: as declared, else :data:`DEFAULT_STRING_LENGTH`; 0 for other types."""
    if not data_type.is_string:
        return 0
    return DEFAULT_STRING_LENGTH if string_length is None else string_length


def build_feature(
    entity: str, fg: str, data_type: DataType, spec: FeatureSpec
) -> tuple[Feature | None, list[Problem]]:
    """A declared feature of FG ``fg`` (of ``data_type``) as the registry stores it, or ``None`` and every
    rule it breaks, each with the setting at fault: the one statement of the per-feature rules, which
    ``reconcile`` raises and Horizon reports field by field. The lengths are checked before any default
    is built; a missing default is the type's zero."""
    at = where(entity, fg, spec.label)
    problems: list[Problem] = []
    if spec.string_length not in (None, 0) and not data_type.is_string:
        message = f"{at}: string_length is only for string types, not {data_type.type_name}"
        problems.append(Problem(message, field="string_length"))
    problems += vector_length_problems(at, data_type, spec.vector_length)
    length = booked_length(data_type, spec.string_length)
    problems += size_problems(entity, fg, data_type, [(spec.label, length, spec.vector_length)])
    if problems:
        return None, problems
    value = _zero(data_type, spec.vector_length) if spec.default is None else spec.default
    try:
        default = encode_default(
            data_type, value, string_length=length, vector_length=spec.vector_length, at=at
        )
    except InvalidInputError as exc:
        return None, [Problem(str(exc), field="default")]
    return Feature(spec.label, default, length, spec.vector_length), []


def _feature(entity: str, fg: FeatureGroupSpec, spec: FeatureSpec) -> Feature:
    feature, problems = build_feature(entity, fg.label, fg.data_type, spec)
    raise_problems([p.message for p in problems])
    assert feature is not None  # no problems: built
    return feature


def _reconcile_fg(entity: str, spec: FeatureGroupSpec, old: FeatureGroup | None, new_id: int) -> FeatureGroup:
    at = where(entity, spec.label)
    # The size bounds first, on the declared lengths alone: no default is built for a schema over them.
    lengths = [
        (f.label, booked_length(spec.data_type, f.string_length), f.vector_length) for f in spec.features
    ]
    raise_problems([p.message for p in size_problems(entity, spec.label, spec.data_type, lengths)])
    features = tuple(_feature(entity, spec, f) for f in spec.features)
    if not features:
        if old is None:
            raise InvalidInputError(f"{at}: a feature group needs at least one feature")
        raise InvalidInputError(
            f"{at}: cannot remove the last feature; delete the feature group instead (--prune)"
        )
    common: dict[str, Any] = {
        "ttl_seconds": spec.ttl_seconds,
        "store_id": spec.store,
        "in_process_cache": spec.in_process_cache,
        "distributed_cache": spec.distributed_cache,
    }
    if old is None:
        return FeatureGroup(
            id=new_id if spec.id is None else spec.id,
            label=spec.label,
            data_type=spec.data_type,
            versions={1: features},
            active_version=1,
            **common,
        )
    if spec.data_type != old.data_type:
        raise InvalidInputError(
            f"{at}: data type {old.data_type.type_name} cannot change to {spec.data_type.type_name}; "
            "create a new feature group"
        )
    if spec.id is not None and spec.id != old.id:
        raise InvalidInputError(f"{at}: id {old.id} cannot change (to {spec.id})")
    versions = dict(old.versions)
    active = old.active_version
    if [f.label for f in features] == [f.label for f in old.features]:
        versions[active] = features  # defaults and string lengths are edited in place
    else:
        active = max(versions) + 1
        versions[active] = features
    return dataclasses.replace(old, versions=versions, active_version=active, **common)


def _reconcile_entity(spec: EntitySpec, old: Entity | None, prune: bool) -> Entity:
    old_fgs = old.feature_groups if old is not None else ()
    used = {g.id for g in old_fgs} | {g.id for g in spec.feature_groups if g.id is not None}
    groups: list[FeatureGroup] = []
    declared = {g.label for g in spec.feature_groups}
    if not prune:
        groups += [g for g in old_fgs if g.label not in declared]
    for fg_spec in spec.feature_groups:
        before = old.fg(fg_spec.label) if old is not None else None
        new_id = max(used) + 1 if used else 0
        fg = _reconcile_fg(spec.label, fg_spec, before, new_id)
        used.add(fg.id)
        groups.append(fg)
    order = {g.label: i for i, g in enumerate(old_fgs)}
    groups.sort(key=lambda g: (order.get(g.label, len(order)), g.id))
    return Entity(
        label=spec.label,
        keys=spec.keys,
        feature_groups=tuple(groups),
        in_process_cache=spec.in_process_cache,
        distributed_cache=spec.distributed_cache,
    )


def _reconcile_caller(spec: CallerSpec, old: Caller | None) -> Caller:
    if spec.token_hash is not None:
        return Caller(spec.id, spec.role, spec.token_hash)
    if spec.token is not None:
        check_token_strength(spec.id, spec.token, spec.token_source)
        same = (
            old is not None
            and not is_legacy_hash(old.token_hash)
            and verify_token(spec.token, old.token_hash)
        )
        if old is not None and same:
            return Caller(spec.id, spec.role, old.token_hash)  # same token: keep its hash (idempotent apply)
        # A new token, or the same one over a legacy scrypt hash: that hash is replaced by a fast one.
        return Caller(spec.id, spec.role, hash_token(spec.token))
    if old is not None:
        return Caller(spec.id, spec.role, old.token_hash)
    source = f" ({spec.token_source} is not set)" if spec.token_source else ""
    raise InvalidInputError(f"caller {spec.id!r}: no token given{source}")


def _merge(old: Sequence[Any], new: Sequence[Any], key: str, prune: bool) -> tuple[Any, ...]:
    declared = {getattr(x, key) for x in new}
    kept = [] if prune else [x for x in old if getattr(x, key) not in declared]
    return (*kept, *new)


def reconcile(current: RegistryState, spec: RegistrySpec, *, prune: bool = False) -> RegistryState:
    """The state after applying ``spec`` to ``current``.

    Objects missing from ``spec`` are kept unless ``prune``. New FGs get id max+1 (from 0) in their entity;
    a changed feature list becomes a new version (old ones are kept); defaults and string lengths are edited
    in place. Raises ``InvalidInputError`` for what cannot be expressed as a change.
    """
    entities = tuple(_reconcile_entity(e, current.entity(e.label), prune) for e in spec.entities)
    old_callers = {c.id: c for c in current.callers}
    callers = tuple(_reconcile_caller(c, old_callers.get(c.id)) for c in spec.callers)
    return RegistryState(
        entities=_merge(current.entities, entities, "label", prune),
        stores=_merge(current.stores, spec.stores, "id", prune),
        callers=_merge(current.callers, callers, "id", prune),
    )


# -- plan (diff) -----------------------------------------------------------------------------------


def _keys(keys: Sequence[Key]) -> str:
    return "[" + ", ".join(k.label if k.label == k.column else f"{k.label}:{k.column}" for k in keys) + "]"


def _cache(policy: CachePolicy) -> str:
    if not policy.enabled:
        return "off"
    return f"on ttl {policy.ttl_seconds}s jitter {policy.jitter_percent}%"


def _ttl(seconds: int) -> str:
    return "never" if seconds == 0 else f"{seconds}s"


def _fg_summary(fg: FeatureGroup) -> str:
    labels = ", ".join(f.label for f in fg.features)
    return f"{fg.data_type.type_name}, id {fg.id}, ttl {_ttl(fg.ttl_seconds)}, features [{labels}]"


def _fg_diff(entity: str, old: FeatureGroup, new: FeatureGroup) -> list[str]:
    name = f"fg {entity}/{new.label}"
    out: list[str] = []
    before, after = old.features, new.features
    if new.active_version != old.active_version:
        added = [f.label for f in after if f.label not in {g.label for g in before}]
        removed = [f.label for f in before if f.label not in {g.label for g in after}]
        parts = []
        if added:
            parts.append(f"add features [{', '.join(added)}]")
        if removed:
            parts.append(f"remove features [{', '.join(removed)}]")
        if not parts:
            parts.append("reorder features")
        out.append(f"~ {name}: {'; '.join(parts)} → version {new.active_version}")
    else:
        for f_old, f_new in zip(before, after, strict=False):
            at = f"~ {name}: feature {f_new.label}"
            if f_old.default != f_new.default:
                v_old = cell_to_plain(old.data_type, f_old.default, f_old.vector_length)
                v_new = cell_to_plain(new.data_type, f_new.default, f_new.vector_length)
                out.append(f"{at} default {v_old!r} → {v_new!r}")
            if f_old.string_length != f_new.string_length:
                out.append(f"{at} string_length {f_old.string_length} → {f_new.string_length}")
            if f_old.vector_length != f_new.vector_length:
                out.append(f"{at} vector_length {f_old.vector_length} → {f_new.vector_length}")
    if old.ttl_seconds != new.ttl_seconds:
        out.append(f"~ {name}: ttl {_ttl(old.ttl_seconds)} → {_ttl(new.ttl_seconds)}")
    if old.store_id != new.store_id:
        out.append(f"~ {name}: store {old.store_id or '(none)'!s} → {new.store_id or '(none)'!s}")
    if old.in_process_cache != new.in_process_cache:
        out.append(f"~ {name}: in_process_cache {old.in_process_cache} → {new.in_process_cache}")
    if old.distributed_cache != new.distributed_cache:
        out.append(f"~ {name}: distributed_cache {old.distributed_cache} → {new.distributed_cache}")
    return out


def _entity_diff(old: Entity, new: Entity) -> list[str]:
    out: list[str] = []
    if old.keys != new.keys:
        out.append(f"~ entity {new.label}: keys {_keys(old.keys)} → {_keys(new.keys)}")
    if old.in_process_cache != new.in_process_cache:
        out.append(
            f"~ entity {new.label}: in-process cache {_cache(old.in_process_cache)} → "
            f"{_cache(new.in_process_cache)}"
        )
    if old.distributed_cache != new.distributed_cache:
        out.append(
            f"~ entity {new.label}: distributed cache {_cache(old.distributed_cache)} → "
            f"{_cache(new.distributed_cache)}"
        )
    for fg in new.feature_groups:
        before = old.fg(fg.label)
        if before is None:
            out.append(f"+ fg {new.label}/{fg.label} ({_fg_summary(fg)})")
        else:
            out.extend(_fg_diff(new.label, before, fg))
    out += [f"- fg {old.label}/{g.label}" for g in old.feature_groups if new.fg(g.label) is None]
    return out


def diff_states(old: RegistryState, new: RegistryState) -> list[str]:
    """The changes from ``old`` to ``new``, one line each; empty when they are equal."""
    out: list[str] = []
    old_stores = {s.id: s for s in old.stores}
    for store in new.stores:
        before = old_stores.pop(store.id, None)
        if before is None:
            out.append(f"+ store {store.id} ({store.kind})")
        elif before != store:
            out.append(  # shown by ofs registry apply, kept by Horizon: never a credential
                f"~ store {store.id}: {before.kind} {redact_settings(before.settings)} → "
                f"{store.kind} {redact_settings(store.settings)}"
            )
    out += [f"- store {sid}" for sid in old_stores]
    old_callers = {c.id: c for c in old.callers}
    for caller in new.callers:
        prev = old_callers.pop(caller.id, None)
        if prev is None:
            out.append(f"+ caller {caller.id} ({caller.role})")
        else:
            if prev.role != caller.role:
                out.append(f"~ caller {caller.id}: role {prev.role} → {caller.role}")
            if prev.token_hash != caller.token_hash:
                upgraded = is_legacy_hash(prev.token_hash) and not is_legacy_hash(caller.token_hash)
                what = "new token hash (scrypt → hmac-sha256)" if upgraded else "new token"
                out.append(f"~ caller {caller.id}: {what}")
    out += [f"- caller {cid}" for cid in old_callers]
    for entity in new.entities:
        was = old.entity(entity.label)
        if was is None:
            out.append(f"+ entity {entity.label} (keys {_keys(entity.keys)})")
            out += [f"+ fg {entity.label}/{g.label} ({_fg_summary(g)})" for g in entity.feature_groups]
        else:
            out.extend(_entity_diff(was, entity))
    out += [f"- entity {e.label}" for e in old.entities if new.entity(e.label) is None]
    return out
