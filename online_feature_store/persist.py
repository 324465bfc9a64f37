"""The write path of the embedded store: requests validated whole and their blocks built natively, nothing
written yet. :class:`~online_feature_store.FeatureStore` then writes them (one store write per store and
entity) and invalidates the written keys.

Two ways in: a serialized ``persist.Query`` (gRPC, Kafka: :func:`prepare_wire`, many at once through
:func:`by_store`) and rows of Python values (:func:`rows_to_blocks`: numpy arrays, lists of strings, a
pandas DataFrame).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from online_feature_store._native import Catalog, Limits, decode_cell
from online_feature_store.errors import InvalidInputError
from online_feature_store.keys import key_rows
from online_feature_store.registry.model import FeatureGroup
from online_feature_store.registry.snapshot import Snapshot
from online_feature_store.store.base import BlockWrite

__all__ = ["PreparedWrite", "StoreWrite", "by_store", "prepare_wire", "rows_to_blocks"]


@dataclass(frozen=True)
class PreparedWrite:
    """A validated ``persist.Query`` with its blocks built and nothing written yet: the result of
    :meth:`FeatureStore.prepare_wire <online_feature_store.FeatureStore.prepare_wire>`, written by
    :meth:`FeatureStore.write_prepared <online_feature_store.FeatureStore.write_prepared>`."""

    snapshot: Snapshot
    entity: str
    writes: Mapping[str, list[BlockWrite]]
    """The blocks to write, by store id."""
    names: list[str]
    """The distinct keys, encoded (``store.keys.encode_key``): what a strong-mode write invalidates."""
    blocks: int


class StoreWrite(NamedTuple):
    """One store write: ``writes`` of ``entity`` to store ``store_id``, invalidating ``names``."""

    snapshot: Snapshot
    entity: str
    store_id: str
    writes: list[BlockWrite]
    names: list[str]


def prepare_wire(
    snapshot: Snapshot, catalog: Catalog, query: bytes, *, saturate: bool, limits: Limits
) -> PreparedWrite:
    """Validates a serialized ``persist.Query`` whole and builds its blocks (natively, without the GIL),
    writing nothing. Raises ``InvalidInputError`` / ``NotFoundError`` for a request that can never be
    stored."""
    entity, blocks, names = catalog.persist_wire(
        query, now=int(time.time()), saturate=saturate, limits=limits
    )
    # The native tuples are (key, fg id, block, expires_at): BlockWrite's fields, so _make takes them
    # as they are (the ingest path's per-row Python is kept to this).
    make = BlockWrite._make
    stores = {fg_id: snapshot.feature_group(entity, fg_id).store_id for fg_id in {b[1] for b in blocks}}
    writes: dict[str, list[BlockWrite]] = {}
    if len(set(stores.values())) == 1:
        writes[next(iter(stores.values()))] = list(map(make, blocks))
    else:
        for b in blocks:
            writes.setdefault(stores[b[1]], []).append(make(b))
    return PreparedWrite(snapshot, entity, writes, names, len(blocks))


def by_store(prepared: Sequence[PreparedWrite]) -> list[StoreWrite]:
    """Many prepared requests as one write per store and entity (one transaction where the store has
    them): where requests write the same (key, FG), the later one in ``prepared`` wins, as within one
    store write."""
    groups: dict[tuple[int, str, str], tuple[Snapshot, list[BlockWrite], list[str]]] = {}
    for p in prepared:
        for store_id, writes in p.writes.items():
            group = groups.setdefault((id(p.snapshot), p.entity, store_id), (p.snapshot, [], []))
            group[1].extend(writes)
            group[2].extend(p.names)
    out = []
    for (_, entity, store_id), (snapshot, writes, names) in groups.items():
        if len(prepared) > 1:
            names = list(dict.fromkeys(names))
        out.append(StoreWrite(snapshot, entity, store_id, writes, names))
    return out


def rows_to_blocks(
    snapshot: Snapshot,
    catalog: Catalog,
    entity: str,
    feature_group: str,
    keys: Sequence[Any],
    values: Any,
    *,
    keys_schema: Sequence[str] | None,
    saturate: bool,
    limits: Limits,
) -> tuple[FeatureGroup, list[BlockWrite]]:
    """One block of ``feature_group`` per key, every value validated before anything is written (see
    :meth:`FeatureStore.persist <online_feature_store.FeatureStore.persist>` for the forms of
    ``values``): the FG and its writes."""
    limits.check_rows(len(keys), f"persist to feature group {entity}/{feature_group}")
    ent = snapshot.entity(entity)
    fg = snapshot.feature_group(entity, feature_group)
    schema = list(keys_schema) if keys_schema is not None else [k.label for k in ent.keys]
    perm = catalog.key_permutation(entity, schema)
    canonical = key_rows(keys, len(perm), perm)
    for key in canonical:
        if "" in key:
            raise InvalidInputError(f"key {key!r} of entity {entity!r} has an empty value")
    rows = len(canonical)
    now = int(time.time())
    flat = _flatten(values, fg, rows)
    blocks = catalog.encode_rows(entity, feature_group, flat, rows, now=now, saturate=saturate, limits=limits)
    expires_at = now + fg.ttl_seconds if fg.ttl_seconds else 0
    return fg, [BlockWrite(k, fg.id, b, expires_at) for k, b in zip(canonical, blocks, strict=False)]


def _flatten(values: Any, fg: FeatureGroup, rows: int) -> Any:
    """Row-major flat values of every feature of the active version."""
    labels = [f.label for f in fg.features]
    if hasattr(values, "columns") and hasattr(values, "to_numpy"):  # a pandas DataFrame
        unknown = [c for c in values.columns if c not in labels]
        if unknown:
            raise InvalidInputError(f"feature group {fg.label!r} has no features {unknown}")
        if len(values.columns) == 0:
            # Every feature would get its default: a write that wipes the rows (as persist.Query
            # refuses an FG with no feature_labels).
            raise InvalidInputError(f"feature group {fg.label!r}: the DataFrame has no feature columns")
        cols: list[Any] = []
        for f in fg.features:
            if f.label in values.columns:
                cols.append(values[f.label].to_numpy())
                continue
            default = decode_cell(int(fg.data_type), f.default, vector_length=f.vector_length)
            if fg.data_type.is_vector:
                cols.append([default] * rows)
            else:
                cols.append([default[0]] * rows if fg.data_type.is_string else np.full(rows, default[0]))
        if not fg.data_type.is_string and not fg.data_type.is_vector:
            # Numbers stay in numpy columns: no Python object per value.
            return np.column_stack(cols).reshape(-1)
        values = [list(r) for r in zip(*cols, strict=False)]
    if fg.data_type.is_string:
        out: list[str] = []
        for row in values:
            for cell in row:
                if isinstance(cell, str):
                    out.append(cell)
                else:
                    out.extend(cell)
        return out
    try:
        arr = np.asarray(values)
    except ValueError:  # vectors of different lengths (numpy 2 refuses to build a ragged array)
        arr = np.asarray(values, dtype=object)
    if arr.dtype == object:
        arr = np.asarray([np.concatenate([np.ravel(c) for c in row]) for row in values])
    return arr.reshape(-1)
