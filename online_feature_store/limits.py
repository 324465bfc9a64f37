"""The limits every request is held to (docs/serving.md#limits): their defaults, shared by the embedded
store, the servers and the client SDK, and :func:`make_limits`, the native form of a set of them."""

from __future__ import annotations

from online_feature_store._native import Limits
from online_feature_store.errors import InvalidInputError

__all__ = [
    "DEFAULT_MAX_KEYS_PER_REQUEST",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_MAX_ROWS_PER_PERSIST",
    "make_limits",
]

DEFAULT_MAX_KEYS_PER_REQUEST = 10_000
"""Keys one retrieve may ask for: a ranking request scores hundreds to a few thousand candidates."""
DEFAULT_MAX_ROWS_PER_PERSIST = 100_000
"""Rows one persist may write (the producer SDK packs at most this many per message)."""
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""Bytes of one retrieve response (estimated from the plan before any read) and of the blocks one
persist builds; ``ofs serve``'s gRPC message limit."""


def make_limits(max_keys_per_request: int, max_rows_per_persist: int, max_message_bytes: int) -> Limits:
    """The native :class:`~online_feature_store._native.Limits` of these settings; each must be at
    least 1 (``InvalidInputError`` naming the setting otherwise)."""
    given = {
        "max_keys_per_request": max_keys_per_request,
        "max_rows_per_persist": max_rows_per_persist,
        "max_message_bytes": max_message_bytes,
    }
    for name, value in given.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInputError(f"setting {name!r} must be a whole number of at least 1, got {value!r}")
    return Limits(**given)
