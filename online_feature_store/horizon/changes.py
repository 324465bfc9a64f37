"""Change requests as registry changes: each kind of request is a pure function of the registry state.

:func:`plan` runs a request's change on a state and validates the result with the registry's own rules
(``validate_change``, and every FG version must compile), returning the new state and the plan lines.
Problems are reported per field (``loc`` into the request body), so the UI can show each next to its
field; a problem only the registry's whole-state validation finds is reported on ``payload``.

The same function is handed to ``RegistryBackend.apply`` at approval, so it runs again inside the
registry transaction on the registry as it is then.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from online_feature_store.errors import InvalidInputError
from online_feature_store.horizon import schemas as s
from online_feature_store.registry.model import (
    CachePolicy,
    Caller,
    Entity,
    FeatureGroup,
    Key,
    RegistryState,
    Store,
)
from online_feature_store.registry.snapshot import Snapshot
from online_feature_store.registry.spec import (
    EntitySpec,
    FeatureGroupSpec,
    FeatureSpec,
    RegistrySpec,
    booked_length,
    build_feature,
    cell_to_plain,
    diff_states,
    reconcile,
)
from online_feature_store.registry.validate import size_problems, validate_change, where
from online_feature_store.store import settings_errors
from online_feature_store.types import DataType

__all__ = ["InvalidFieldsError", "Payload", "change_of", "plan"]

Payload = (
    s.StorePayload
    | s.CreateEntityPayload
    | s.UpdateEntityPayload
    | s.CreateFeatureGroupPayload
    | s.UpdateFeatureGroupPayload
    | s.AddFeaturesPayload
    | s.EditFeaturesPayload
    | s.DeleteFeaturesPayload
    | s.CreateCallerPayload
)
Loc = tuple[str | int, ...]


class InvalidFieldsError(InvalidInputError):
    """One or more problems, each at a place in the request body (FastAPI's ``loc``)."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors))
        self.errors = errors


class _Collector:
    """Collects problems at ``("body", "payload", …)`` locations."""

    def __init__(self) -> None:
        self.errors: list[dict[str, Any]] = []

    def add(self, loc: Loc, msg: str, kind: str = "value_error.registry") -> None:
        self.errors.append({"loc": ["body", "payload", *loc], "msg": msg, "type": kind})

    def raise_if_any(self) -> None:
        if self.errors:
            raise InvalidFieldsError(self.errors)


def _dup_positions(labels: Sequence[str]) -> list[int]:
    counts = Counter(labels)
    seen: set[str] = set()
    out = []
    for i, label in enumerate(labels):
        if counts[label] > 1:
            if label in seen:
                out.append(i)
            seen.add(label)
    return out


def _policy(p: s.CachePolicyIn | None, old: CachePolicy) -> CachePolicy:
    return old if p is None else CachePolicy(p.enabled, p.ttl_seconds, p.jitter_percent)


def _check_feature(
    c: _Collector,
    loc: Loc,
    entity: str,
    fg: str,
    dt: DataType,
    spec: FeatureSpec,
    *,
    default_given: bool = True,
) -> None:
    """The registry's per-feature rules (``spec.build_feature``), each reported at its field; a kept
    default that no longer fits an edited string length is reported at ``string_length``."""
    for problem in build_feature(entity, fg, dt, spec)[1]:
        field = "string_length" if problem.field == "default" and not default_given else problem.field
        c.add((*loc, field) if field else loc, problem.message)


def _check_row(c: _Collector, entity: str, fg: str, dt: DataType, features: Sequence[FeatureSpec]) -> None:
    """The registry's row-size bound on the FG's features after the change, at ``features``."""
    lengths = [(f.label, booked_length(dt, f.string_length), f.vector_length) for f in features]
    for problem in size_problems(entity, fg, dt, lengths):
        if problem.feature is None:
            c.add(("features",), problem.message)


def _entity(c: _Collector, state: RegistryState, label: str, loc: Loc) -> Entity | None:
    found = state.entity(label)
    if found is None:
        c.add(loc, f"unknown entity {label!r}")
    return found


def _fg(
    c: _Collector, state: RegistryState, entity: str, label: str, loc: Loc
) -> tuple[Entity, FeatureGroup]:
    e = _entity(c, state, entity, ("entity",))
    fg = e.fg(label) if e is not None else None
    if e is not None and fg is None:
        c.add(loc, f"{where(entity)} has no feature group {label!r}")
    c.raise_if_any()
    assert e is not None
    assert fg is not None
    return e, fg


def _specs_of(fg: FeatureGroup) -> list[FeatureSpec]:
    """The active version of ``fg`` as feature specs (plain defaults), so reconcile can rebuild it."""
    return [
        FeatureSpec(
            f.label,
            cell_to_plain(fg.data_type, f.default, f.vector_length),
            f.string_length if fg.data_type.is_string else None,
            f.vector_length,
        )
        for f in fg.features
    ]


def _with_fg_features(
    state: RegistryState, entity: Entity, fg: FeatureGroup, features: list[FeatureSpec]
) -> RegistryState:
    """``state`` after ``fg`` of ``entity`` is declared with ``features`` (a new version when the labels
    change, an in-place edit otherwise: the registry's own reconcile decides)."""
    fg_spec = FeatureGroupSpec(
        label=fg.label,
        data_type=fg.data_type,
        features=tuple(features),
        id=fg.id,
        ttl_seconds=fg.ttl_seconds,
        store=fg.store_id,
        in_process_cache=fg.in_process_cache,
        distributed_cache=fg.distributed_cache,
    )
    return _reconcile_fg(state, entity, fg_spec)


def _reconcile_fg(state: RegistryState, entity: Entity, fg_spec: FeatureGroupSpec) -> RegistryState:
    entity_spec = EntitySpec(
        label=entity.label,
        keys=entity.keys,
        feature_groups=(fg_spec,),
        in_process_cache=entity.in_process_cache,
        distributed_cache=entity.distributed_cache,
    )
    return reconcile(state, RegistrySpec(entities=(entity_spec,)))


# -- one function per kind: (state, payload, collector) -> new state -----------------------------


def _create_store(state: RegistryState, p: s.StorePayload, c: _Collector) -> RegistryState:
    if any(x.id == p.id for x in state.stores):
        c.add(("id",), f"store {p.id!r} already exists")
    # the rules open_store applies, so a store that would not open is refused here, not at serving time
    for name, msg in settings_errors(p.kind, p.settings).items():
        c.add(("settings", name) if name else ("settings",), f"store {p.id!r}: {msg}")
    c.raise_if_any()
    return dataclasses.replace(state, stores=(*state.stores, Store(p.id, p.kind, dict(p.settings))))


def _create_entity(state: RegistryState, p: s.CreateEntityPayload, c: _Collector) -> RegistryState:
    if state.entity(p.label) is not None:
        c.add(("label",), f"{where(p.label)} already exists")
    keys = [Key(k.label, k.column or k.label) for k in p.keys]
    for i in _dup_positions([k.label for k in keys]):
        c.add(("keys", i, "label"), f"{where(p.label)}: duplicate key label {keys[i].label!r}")
    for i in _dup_positions([k.column for k in keys]):
        c.add(("keys", i, "column"), f"{where(p.label)}: duplicate key column {keys[i].column!r}")
    c.raise_if_any()
    cache = p.cache or s.CacheIn()
    entity = Entity(
        label=p.label,
        keys=tuple(keys),
        in_process_cache=_policy(cache.in_process, CachePolicy()),
        distributed_cache=_policy(cache.distributed, CachePolicy()),
    )
    return state.with_entity(entity)


def _update_entity(state: RegistryState, p: s.UpdateEntityPayload, c: _Collector) -> RegistryState:
    entity = _entity(c, state, p.label, ("label",))
    c.raise_if_any()
    assert entity is not None
    return state.with_entity(
        dataclasses.replace(
            entity,
            in_process_cache=_policy(p.cache.in_process, entity.in_process_cache),
            distributed_cache=_policy(p.cache.distributed, entity.distributed_cache),
        )
    )


def _data_type(c: _Collector, name: str) -> DataType | None:
    try:
        dt = DataType.parse(name)
    except (ValueError, KeyError, InvalidInputError):
        dt = DataType.UNKNOWN
    if dt == DataType.UNKNOWN:
        c.add(("data_type",), f"unknown data type {name!r} (see GET /api/v1/data-types)")
        return None
    return dt


def _new_features(
    c: _Collector, entity: str, fg: str, dt: DataType, features: Sequence[s.FeatureIn], taken: Iterable[str]
) -> list[FeatureSpec]:
    existing = set(taken)
    labels = [f.label for f in features]
    for i in _dup_positions(labels):
        c.add(("features", i, "label"), f"{where(entity, fg)}: duplicate feature label {labels[i]!r}")
    out = []
    for i, f in enumerate(features):
        if f.label in existing:
            c.add(("features", i, "label"), f"{where(entity, fg, f.label)} already exists")
        spec = FeatureSpec(f.label, f.default, f.string_length, f.vector_length or 0)
        _check_feature(c, ("features", i), entity, fg, dt, spec)
        out.append(spec)
    return out


def _create_fg(state: RegistryState, p: s.CreateFeatureGroupPayload, c: _Collector) -> RegistryState:
    entity = _entity(c, state, p.entity, ("entity",))
    if entity is not None and entity.fg(p.label) is not None:
        c.add(("label",), f"{where(p.entity, p.label)} already exists")
    dt = _data_type(c, p.data_type)
    if not p.store:
        known = ", ".join(sorted(x.id for x in state.stores)) or "none yet: create one first"
        c.add(("store",), f"{where(p.entity, p.label)}: names no store (the registry's stores: {known})")
    elif all(x.id != p.store for x in state.stores):
        c.add(("store",), f"unknown store {p.store!r}")
    features = _new_features(c, p.entity, p.label, dt, p.features, ()) if dt is not None else []
    c.raise_if_any()
    assert entity is not None
    assert dt is not None
    _check_row(c, p.entity, p.label, dt, features)
    c.raise_if_any()
    fg_spec = FeatureGroupSpec(
        label=p.label,
        data_type=dt,
        features=tuple(features),
        ttl_seconds=p.ttl_seconds,
        store=p.store,
        in_process_cache=p.in_process_cache,
        distributed_cache=p.distributed_cache,
    )
    return _reconcile_fg(state, entity, fg_spec)


def _update_fg(state: RegistryState, p: s.UpdateFeatureGroupPayload, c: _Collector) -> RegistryState:
    entity, fg = _fg(c, state, p.entity, p.label, ("label",))
    changes: dict[str, Any] = {}
    if p.ttl_seconds is not None:
        changes["ttl_seconds"] = p.ttl_seconds
    if p.in_process_cache is not None:
        changes["in_process_cache"] = p.in_process_cache
    if p.distributed_cache is not None:
        changes["distributed_cache"] = p.distributed_cache
    new_fg = dataclasses.replace(fg, **changes)
    groups = tuple(new_fg if g.label == fg.label else g for g in entity.feature_groups)
    return state.with_entity(dataclasses.replace(entity, feature_groups=groups))


def _add_features(state: RegistryState, p: s.AddFeaturesPayload, c: _Collector) -> RegistryState:
    entity, fg = _fg(c, state, p.entity, p.feature_group, ("feature_group",))
    added = _new_features(c, p.entity, fg.label, fg.data_type, p.features, (f.label for f in fg.features))
    c.raise_if_any()
    _check_row(c, p.entity, fg.label, fg.data_type, _specs_of(fg) + added)
    c.raise_if_any()
    return _with_fg_features(state, entity, fg, _specs_of(fg) + added)


def _edit_features(state: RegistryState, p: s.EditFeaturesPayload, c: _Collector) -> RegistryState:
    entity, fg = _fg(c, state, p.entity, p.feature_group, ("feature_group",))
    specs = {f.label: f for f in _specs_of(fg)}
    labels = [f.label for f in p.features]
    for i in _dup_positions(labels):
        c.add(("features", i, "label"), f"{where(p.entity, fg.label)}: feature {labels[i]!r} is edited twice")
    for i, edit in enumerate(p.features):
        old = specs.get(edit.label)
        if old is None:
            c.add(("features", i, "label"), f"{where(p.entity, fg.label)} has no feature {edit.label!r}")
            continue
        vector_length = old.vector_length if edit.vector_length is None else edit.vector_length
        if vector_length != old.vector_length:
            c.add(
                ("features", i, "vector_length"),
                f"{where(p.entity, fg.label, edit.label)}: vector length {old.vector_length} cannot change "
                f"to {vector_length}; create a new feature group",
            )
            continue
        string_length = old.string_length if edit.string_length is None else edit.string_length
        default = old.default if edit.default is None else edit.default
        spec = FeatureSpec(edit.label, default, string_length, vector_length)
        _check_feature(
            c, ("features", i), p.entity, fg.label, fg.data_type, spec, default_given=edit.default is not None
        )
        specs[edit.label] = spec
    c.raise_if_any()
    _check_row(c, p.entity, fg.label, fg.data_type, list(specs.values()))
    c.raise_if_any()
    return _with_fg_features(state, entity, fg, list(specs.values()))


def _delete_features(state: RegistryState, p: s.DeleteFeaturesPayload, c: _Collector) -> RegistryState:
    entity, fg = _fg(c, state, p.entity, p.feature_group, ("feature_group",))
    present = {f.label for f in fg.features}
    for i, label in enumerate(p.labels):
        if label not in present:
            c.add(("labels", i), f"{where(p.entity, fg.label)} has no feature {label!r}")
    for i in _dup_positions(p.labels):
        c.add(("labels", i), f"feature {p.labels[i]!r} is listed twice")
    kept = [f for f in _specs_of(fg) if f.label not in set(p.labels)]
    if not kept:
        c.add(
            ("labels",),
            f"{where(p.entity, fg.label)}: cannot remove every feature; a feature group keeps at least one",
        )
    c.raise_if_any()
    return _with_fg_features(state, entity, fg, kept)


def _create_caller(
    state: RegistryState, p: s.CreateCallerPayload, c: _Collector, token_hash: str
) -> RegistryState:
    if any(x.id == p.id for x in state.callers):
        c.add(("id",), f"caller {p.id!r} already exists")
    c.raise_if_any()
    return dataclasses.replace(state, callers=(*state.callers, Caller(p.id, p.role, token_hash)))


def change_of(payload: Payload, token_hash: str | None = None) -> Callable[[RegistryState], RegistryState]:
    """The registry change of a request: a pure function of the registry state, raising
    :class:`InvalidFieldsError` for whatever does not fit the state it is given."""

    def change(state: RegistryState) -> RegistryState:
        c = _Collector()
        if isinstance(payload, s.StorePayload):
            return _create_store(state, payload, c)
        if isinstance(payload, s.CreateEntityPayload):
            return _create_entity(state, payload, c)
        if isinstance(payload, s.UpdateEntityPayload):
            return _update_entity(state, payload, c)
        if isinstance(payload, s.CreateFeatureGroupPayload):
            return _create_fg(state, payload, c)
        if isinstance(payload, s.UpdateFeatureGroupPayload):
            return _update_fg(state, payload, c)
        if isinstance(payload, s.AddFeaturesPayload):
            return _add_features(state, payload, c)
        if isinstance(payload, s.EditFeaturesPayload):
            return _edit_features(state, payload, c)
        if isinstance(payload, s.DeleteFeaturesPayload):
            return _delete_features(state, payload, c)
        if token_hash is None:
            raise InvalidInputError("create_caller needs the new token's hash")
        return _create_caller(state, payload, c, token_hash)

    return change


def plan(
    state: RegistryState, payload: Payload, token_hash: str | None = None
) -> tuple[RegistryState, list[str]]:
    """The state after the request and its plan lines; :class:`InvalidFieldsError` when the registry would
    refuse it (the same checks ``RegistryBackend.apply`` runs)."""
    try:
        new = change_of(payload, token_hash)(state)
        validate_change(state, new)
        Snapshot(new, 0)  # every FG version must compile to a block layout
    except InvalidFieldsError:
        raise
    except InvalidInputError as exc:
        raise InvalidFieldsError(
            [{"loc": ["body", "payload"], "msg": str(exc), "type": "value_error.registry"}]
        ) from None
    return new, diff_states(state, new)
