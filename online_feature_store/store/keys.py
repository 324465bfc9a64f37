"""The one encoding of composite keys into strings, shared by every store and cache.

Key values are taken in the entity's canonical (registry) key order, never the caller's order, so a
write and a later read or invalidation always meet on the same string. Each value is escaped (``\\`` →
``\\\\``, ``|`` → ``\\|``, ``:`` → ``\\:``) and the values are joined by ``|``: two different key
tuples can never encode to the same string, whatever characters the values hold.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["KEY_SEPARATOR", "encode_key", "escape", "namespaced_key"]

KEY_SEPARATOR = "|"
_ESCAPES = str.maketrans({"\\": "\\\\", "|": "\\|", ":": "\\:"})


def escape(value: str) -> str:
    """``value`` with the separator characters (``|``, ``:``) and the escape character backslashed."""
    # Most values hold none of the three: three substring scans cost a quarter of a translate().
    if "\\" in value or "|" in value or ":" in value:
        return value.translate(_ESCAPES)
    return value


def encode_key(values: Sequence[str]) -> str:
    """The canonical string of one composite key (values already in canonical key order)."""
    if len(values) == 1:
        return escape(values[0])
    return KEY_SEPARATOR.join([escape(v) for v in values])


def namespaced_key(namespace: str, entity_label: str, values: Sequence[str]) -> str:
    """``ofs:<namespace>:<entity>:<key>``: the name of one key's value in a shared keyspace (Redis).

    Stores use namespace ``s`` and the distributed cache ``c``, so the two can share one Redis without
    ever touching each other's values. The entity label is escaped like key values, so the ``:`` after
    it is unambiguous."""
    return f"ofs:{namespace}:{escape(entity_label)}:{encode_key(values)}"
