"""The one rule for key values as callers pass them: what text a key value stands for.

Every path that takes keys from Python — :class:`~online_feature_store.FeatureStore` (``retrieve``,
``persist``), :class:`~online_feature_store.client.Client`, :mod:`~online_feature_store.ingest` and the
native all-hits cache path (``Catalog.retrieve_cached``) — turns a key value into text here, so the same
value addresses the same row everywhere:

- ``str`` (and ``numpy.str_``): as is;
- ``int`` (and numpy integers): its decimal digits (``7`` and ``numpy.int64(7)`` are ``"7"``);
- ``bytes`` (and ``numpy.bytes_``): decoded as UTF-8; bytes that are not UTF-8 are refused;
- ``bool`` (and ``numpy.bool_``) is refused: ``True`` could as well mean ``"True"``, ``"true"`` or ``"1"``;
- floats are refused: ``1.0`` has no one text form (``"1"``, ``"1.0"``), and an id that went through a float
  may have lost digits;
- anything else (``None``, ``Decimal``, ``UUID``, …) is refused: convert it with ``str()`` yourself.

A refused value raises :class:`~online_feature_store.errors.InvalidInputError` (a ``ValueError``) naming the
value. A key *row* is one value (a ``str``, ``bytes``, a number, anything without a length) for a single-key
entity, or a sequence of values (tuple, list, numpy row) in ``keys_schema`` order.

The native cache path converts ``str`` and plain ``int`` values itself (the same text as here, without a
Python object per key) and hands every other value to :func:`key_text`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from operator import itemgetter
from typing import Any

import numpy as np

from online_feature_store.errors import InvalidInputError

__all__ = ["key_rows", "key_text"]

_ACCEPTED = "key values are str, int or UTF-8 bytes"


def key_text(value: Any) -> str:
    """The text of one key value (see the module doc), or :class:`InvalidInputError`."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        raise InvalidInputError(
            f"key value {value!r} is a bool: {_ACCEPTED} (pass the text the key is stored under)"
        )
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInputError(
                f"key value {value!r} is not valid UTF-8 ({exc.reason} at byte {exc.start}): {_ACCEPTED}"
            ) from None
    if isinstance(value, (float, np.floating)):
        raise InvalidInputError(
            f"key value {value!r} is a float: {_ACCEPTED} (a float has no one text form; convert it "
            "first, e.g. int(x) for an id)"
        )
    raise InvalidInputError(
        f"key value {value!r} ({type(value).__name__}) is not a key: {_ACCEPTED} (convert it first)"
    )


def key_rows(keys: Iterable[Any], width: int, perm: Sequence[int] | None = None) -> list[tuple[str, ...]]:
    """``keys`` as rows of key text. A row is one value (a single-key entity) or a sequence of
    ``width`` values; ``width`` 0 takes any number (the server checks them). With ``perm``, each row
    comes back in the entity's canonical key order (``canonical[i] = given[perm[i]]``)."""
    out: list[tuple[str, ...]] = []
    append = out.append
    # Rows of several values are reordered by one itemgetter call (none when already in order).
    reorder = itemgetter(*perm) if perm is not None and len(perm) > 1 and list(perm) != sorted(perm) else None
    for row in keys:
        kind = type(row)
        if (kind is str or kind is int) and width < 2:  # the common cases, first
            append((row if kind is str else str(row),))
            continue
        n = len(row) if kind is tuple or kind is list else _length(row)
        if n is None:
            if width > 1:
                raise InvalidInputError(f"key {row!r} is a single value but the entity has {width} keys")
            append((key_text(row),))
            continue
        if width and n != width:
            raise InvalidInputError(f"key {row!r} has {n} values, expected {width}")
        if reorder is not None:
            row = reorder(row)
        append(tuple([v if type(v) is str else key_text(v) for v in row]))
    return out


def _length(row: Any) -> int | None:
    """How many values a key row holds, or ``None`` when it is one value: ``str`` and ``bytes`` are
    one value, anything else with a length is a row (the native path decides the same way)."""
    if isinstance(row, (str, bytes)):
        return None
    try:
        return len(row)
    except TypeError:
        return None
