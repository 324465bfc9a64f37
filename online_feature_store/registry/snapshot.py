"""An immutable, compiled view of one registry revision: what servers and consumers read on every request.

A snapshot is built once per registry change (off the request path, by the watcher) and then only read, so
readers need no lock: a newer revision is a new object swapped in by reference.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from online_feature_store._native import BlockMeta
from online_feature_store.errors import InvalidInputError, NotFoundError
from online_feature_store.registry.model import Caller, Entity, FeatureGroup, RegistryState, Store
from online_feature_store.registry.tokens import verify_token

__all__ = ["Snapshot"]


class Snapshot:
    """Registry state at ``revision`` with lookups by label and one ``BlockMeta`` per FG version."""

    __slots__ = ("_callers", "_entities", "_fg_by_id", "_metas", "_stores", "built_at", "revision", "state")

    def __init__(self, state: RegistryState, revision: int) -> None:
        self.state = state
        self.revision = revision
        self.built_at = time.time()
        self._entities: Mapping[str, Entity] = MappingProxyType({e.label: e for e in state.entities})
        self._stores: Mapping[str, Store] = MappingProxyType({s.id: s for s in state.stores})
        self._callers: Mapping[str, Caller] = MappingProxyType({c.id: c for c in state.callers})
        fg_by_id: dict[tuple[str, int], FeatureGroup] = {}
        metas: dict[tuple[str, str, int], BlockMeta] = {}
        for entity in state.entities:
            for fg in entity.feature_groups:
                fg_by_id[entity.label, fg.id] = fg
                strings, vectors = fg.data_type.is_string, fg.data_type.is_vector
                for version, features in fg.versions.items():
                    metas[entity.label, fg.label, version] = BlockMeta(
                        int(fg.data_type),
                        len(features),
                        version=version,
                        string_lengths=[f.string_length for f in features] if strings else None,
                        vector_lengths=[f.vector_length for f in features] if vectors else None,
                    )
        self._fg_by_id = fg_by_id
        self._metas = metas

    def __repr__(self) -> str:
        return f"Snapshot(revision={self.revision}, entities={list(self._entities)})"

    @property
    def entities(self) -> Mapping[str, Entity]:
        """Entities by label."""
        return self._entities

    @property
    def stores(self) -> Mapping[str, Store]:
        """Stores by id."""
        return self._stores

    @property
    def callers(self) -> Mapping[str, Caller]:
        """Callers by id."""
        return self._callers

    def entity(self, label: str) -> Entity:
        """The entity called ``label`` (``NotFoundError`` when absent)."""
        try:
            return self._entities[label]
        except KeyError:
            raise NotFoundError(f"unknown entity {label!r}") from None

    def feature_group(self, entity: str, fg: str | int) -> FeatureGroup:
        """An FG of ``entity`` by label or by id (``NotFoundError`` when absent)."""
        found = self._fg_by_id.get((entity, fg)) if isinstance(fg, int) else self.entity(entity).fg(fg)
        if found is None:
            self.entity(entity)
            raise NotFoundError(f"entity {entity!r} has no feature group {fg!r}")
        return found

    def block_meta(self, entity: str, fg: str, version: int | None = None) -> BlockMeta:
        """The compiled layout of an FG version (default: the active one) for encoding and decoding."""
        if version is None:
            version = self.feature_group(entity, fg).active_version
        meta = self._metas.get((entity, fg, version))
        if meta is None:
            self.feature_group(entity, fg)
            raise NotFoundError(f"entity {entity!r}, feature group {fg!r} has no version {version}")
        return meta

    def canonical_key_order(self, entity: str, keys_schema: Sequence[str]) -> list[int]:
        """``perm`` such that ``[values[i] for i in perm]`` puts a caller's key values in registry order.

        ``keys_schema`` lists the caller's key labels (logical names) in the order the caller sends them.
        """
        keys = self.entity(entity).keys
        position = {label: i for i, label in enumerate(keys_schema)}
        problems = []
        missing = [k.label for k in keys if k.label not in position]
        if missing:
            problems.append(f"missing {missing}")
        known = {k.label for k in keys}
        unknown = [label for label in keys_schema if label not in known]
        if unknown:
            problems.append(f"unknown {unknown}")
        if len(position) != len(keys_schema):
            problems.append("duplicate key labels")
        if problems:
            raise InvalidInputError(
                f"entity {entity!r}: keys_schema {list(keys_schema)} does not match the entity's keys "
                f"{[k.label for k in keys]}: {', '.join(problems)}"
            )
        return [position[k.label] for k in keys]

    def authenticate(self, caller_id: str, token: str) -> Caller | None:
        """The caller when ``token`` is its token, else ``None`` (an unknown caller is ``None`` too)."""
        caller = self._callers.get(caller_id)
        if caller is None or not verify_token(token, caller.token_hash):
            return None
        return caller
