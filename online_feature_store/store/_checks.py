"""Input checks shared by the stores: a bad key or write is an ``InvalidInputError`` before any I/O."""

from __future__ import annotations

from collections.abc import Sequence

from online_feature_store.errors import InvalidInputError
from online_feature_store.registry.model import MAX_FG_ID, Entity
from online_feature_store.store.base import BlockWrite, KeyValues

__all__ = ["check_fg_ids", "check_key", "check_keys", "check_writes"]


def check_key(entity: Entity, key: KeyValues) -> None:
    """Raises unless ``key`` holds one string per key column of ``entity``."""
    if len(key) != len(entity.keys):
        raise InvalidInputError(
            f"entity {entity.label!r}: key {key!r} has {len(key)} values, the entity has "
            f"{len(entity.keys)} key columns ({', '.join(k.label for k in entity.keys)})"
        )
    for v in key:
        if not isinstance(v, str):
            raise InvalidInputError(f"entity {entity.label!r}: key {key!r}: key values must be str")


def check_keys(entity: Entity, keys: Sequence[KeyValues]) -> None:
    """:func:`check_key` for each key."""
    for key in keys:
        check_key(entity, key)


def check_fg_ids(entity: Entity, fg_ids: Sequence[int]) -> None:
    """Raises unless every id fits the u16 the formats give FG ids."""
    for fg_id in fg_ids:
        if not isinstance(fg_id, int) or not 0 <= fg_id <= MAX_FG_ID:
            raise InvalidInputError(f"entity {entity.label!r}: FG id {fg_id!r} is not in 0..{MAX_FG_ID}")


def check_writes(entity: Entity, writes: Sequence[BlockWrite]) -> None:
    """Raises on the first write with a bad key, FG id, block type or expiry."""
    n_keys = len(entity.keys)
    for w in writes:
        # The exact-type tests pass every valid write cheaply (this runs per row on the ingest path);
        # anything else goes through the full checks, which accept subclasses or say what is wrong.
        key, fg_id = w.key, w.fg_id
        if len(key) != n_keys or (
            type(key[0]) is not str if n_keys == 1 else any(type(v) is not str for v in key)
        ):
            check_key(entity, key)
        if type(fg_id) is not int or not 0 <= fg_id <= MAX_FG_ID:
            check_fg_ids(entity, (fg_id,))
        if not isinstance(w.block, bytes):
            raise InvalidInputError(f"entity {entity.label!r}: FG {w.fg_id}: a block must be bytes")
        if not isinstance(w.expires_at, int) or w.expires_at < 0:
            raise InvalidInputError(
                f"entity {entity.label!r}: FG {w.fg_id}: expires_at {w.expires_at!r} must be unix seconds "
                "or 0 (never)"
            )
