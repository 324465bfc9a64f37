"""The registry's data model: entities, keys, feature groups and their versions, stores and callers.

Every class is a frozen dataclass: a registry state is a value. Changes build a new state
(``dataclasses.replace``) and the backends store it; nothing mutates a state that a reader may hold.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from online_feature_store.types import DataType

__all__ = [
    "MAX_FG_ID",
    "MAX_ROW_BYTES",
    "MAX_STRING_LENGTH",
    "MAX_VECTOR_LENGTH",
    "ROLES",
    "CachePolicy",
    "Caller",
    "Entity",
    "Feature",
    "FeatureGroup",
    "Key",
    "RegistryState",
    "Store",
    "role_allows",
]

MAX_FG_ID = 0xFFFF
"""FG ids travel as u16 in cache values (CSDB)."""
MAX_STRING_LENGTH = 0xFFFF
"""String lengths travel as u16 in blocks."""
MAX_VECTOR_LENGTH = 0xFFFF
"""Values of one vector feature: a 512 KiB cell at most for 8-byte types."""
MAX_ROW_BYTES = 4 * 1024 * 1024
"""The most bytes one row of a feature group can take when served (every feature at its largest cell:
fixed widths times vector lengths, strings at their booked length): what one key of a retrieve costs."""

StoreKind = Literal["sqlite", "redis", "scylla"]
Role = Literal["reader", "writer", "readwriter"]
STORE_KINDS: tuple[str, ...] = ("sqlite", "redis", "scylla")
ROLES: tuple[str, ...] = ("reader", "writer", "readwriter")
"""A caller's role: ``reader`` (retrieves), ``writer`` (persists) or ``readwriter`` (both, with one
credential, as reference clients expect; separate reader and writer callers remain the recommendation)."""


def role_allows(held: str, needed: str) -> bool:
    """Whether a caller with role ``held`` may call a method that needs ``needed`` (``reader`` or
    ``writer``): the same role, or ``readwriter``, which holds both."""
    return held == needed or (held == "readwriter" and needed in ("reader", "writer"))


@dataclass(frozen=True)
class Key:
    """One column of an entity's composite key: ``label`` is what clients send, ``column`` the stored name."""

    label: str
    column: str


@dataclass(frozen=True)
class CachePolicy:
    """Settings of one cache layer (in-process or distributed) for an entity."""

    enabled: bool = False
    ttl_seconds: int = 0
    jitter_percent: int = 0


@dataclass(frozen=True)
class Feature:
    """One feature of one FG version; ``default`` is a cell in the ``encode_cell`` encoding of its type."""

    label: str
    default: bytes
    string_length: int = 0
    vector_length: int = 0


@dataclass(frozen=True)
class FeatureGroup:
    """Features of one type written together as one block, with every schema version kept."""

    id: int
    label: str
    data_type: DataType
    versions: Mapping[int, tuple[Feature, ...]]
    active_version: int = 1
    ttl_seconds: int = 0
    store_id: str = ""
    in_process_cache: bool = False
    distributed_cache: bool = False

    @property
    def features(self) -> tuple[Feature, ...]:
        """The features of the active version, in block order."""
        return self.versions[self.active_version]

    def feature(self, label: str) -> Feature:
        """The active version's feature called ``label`` (``KeyError`` when absent)."""
        for f in self.features:
            if f.label == label:
                return f
        raise KeyError(label)


@dataclass(frozen=True)
class Entity:
    """A kind of thing features describe (``user``), its ordered composite key and its FGs."""

    label: str
    keys: tuple[Key, ...]
    feature_groups: tuple[FeatureGroup, ...] = ()
    in_process_cache: CachePolicy = field(default_factory=CachePolicy)
    distributed_cache: CachePolicy = field(default_factory=CachePolicy)

    def fg(self, label: str) -> FeatureGroup | None:
        """The FG called ``label``, or ``None``."""
        for g in self.feature_groups:
            if g.label == label:
                return g
        return None


@dataclass(frozen=True)
class Store:
    """Where FG data lives: ``kind`` is ``sqlite``, ``redis`` or ``scylla``; ``settings`` its connection."""

    id: str
    kind: str
    settings: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Caller:
    """A client allowed to read (``reader``), write (``writer``) or both (``readwriter``); ``token_hash``
    from :func:`hash_token`."""

    id: str
    role: str
    token_hash: str


@dataclass(frozen=True)
class RegistryState:
    """Everything the registry holds, independent of the backend and of the revision."""

    entities: tuple[Entity, ...] = ()
    stores: tuple[Store, ...] = ()
    callers: tuple[Caller, ...] = ()

    def entity(self, label: str) -> Entity | None:
        """The entity called ``label``, or ``None``."""
        for e in self.entities:
            if e.label == label:
                return e
        return None

    def with_entity(self, entity: Entity) -> RegistryState:
        """A copy with ``entity`` added, or replacing the entity of the same label."""
        if self.entity(entity.label) is None:
            return dataclasses.replace(self, entities=(*self.entities, entity))
        return dataclasses.replace(
            self, entities=tuple(entity if e.label == entity.label else e for e in self.entities)
        )
