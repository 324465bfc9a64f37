"""The embedded store: one SQLite file in WAL mode, durable once ``write`` returns.

The store itself is native (``rust/src/store/sqlite.rs``, reached through
:class:`~online_feature_store._native.Store`): reads and writes run in the core with the GIL released, and
the native read path (``FeatureStore.retrieve`` / ``retrieve_wire``) calls it without coming back to
Python. This class is its configuration, and the :class:`~online_feature_store.store.base.BlockStore` face
the Python code and the contract suite use.

Layout: one table ``blocks(entity, key, fg_id, block, expires_at)`` keyed by (entity, key, fg_id), where
``key`` is :func:`~online_feature_store.store.keys.encode_key` of the key values; files written by earlier
versions keep working. WAL mode lets several processes read while one writes; ``synchronous=FULL`` fsyncs
the WAL at each commit, so an acknowledged write survives kill -9 and power loss. Expired rows are hidden
on read; :meth:`SqliteStore.purge_expired` deletes them all, and writes sweep the table for them a slice
at a time, once per ``purge_interval`` seconds (:data:`SWEEP_ROWS` rows per slice, in key order, wrapping
around).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from online_feature_store._native import Store
from online_feature_store.registry.model import Entity
from online_feature_store.store.base import BlockWrite, KeyValues

__all__ = ["SWEEP_ROWS", "SqliteStore", "layout"]

SWEEP_ROWS = 50_000
"""Rows one opportunistic sweep step looks at: ~20 ms here for rows of 265-byte blocks (a 1M-row table
is swept every 20 minutes at the default ``purge_interval``)."""


def layout(entity: Entity) -> tuple[str, list[str], list[int]]:
    """What a native store knows of ``entity``: label, key columns in canonical order, FG ids."""
    return entity.label, [k.column for k in entity.keys], [g.id for g in entity.feature_groups]


class SqliteStore:
    """FG blocks in one SQLite file; safe to share between threads and to open from several processes
    at once."""

    def __init__(
        self, path: str | os.PathLike[str], *, busy_timeout: float = 10.0, purge_interval: float = 60.0
    ):
        """``busy_timeout``: seconds a write waits for another process's write lock before failing
        with ``UnavailableError``. ``purge_interval``: seconds between opportunistic purges (0 = never)."""
        self.path = Path(path)
        self.native = Store.sqlite(str(self.path), busy_timeout=busy_timeout, purge_interval=purge_interval)
        """The native store: what the native read and write paths call."""

    def ensure(self, entities: Sequence[Entity]) -> None:
        """Nothing to do: one table holds every entity (created when the store opens)."""

    def read(self, entity: Entity, keys: Sequence[KeyValues], fg_ids: Sequence[int]) -> list[list[bytes]]:
        """Blocks in one query for every key and FG; expired rows read as ``b""``."""
        return self.native.read(entity.label, [k.column for k in entity.keys], keys, fg_ids)

    def write(self, entity: Entity, writes: Sequence[BlockWrite]) -> None:
        """All ``writes`` in one transaction, fsynced before returning (later writes of the same
        (key, FG) in one call win)."""
        self.native.write(entity.label, [k.column for k in entity.keys], writes)

    def purge_expired(self, now: int | None = None) -> int:
        """Deletes every row expired at ``now`` (default: the current time), scanning the whole table;
        returns how many."""
        return self.native.purge_expired(now)

    def sweep_step(self, now: int | None = None, rows: int = SWEEP_ROWS) -> int:
        """Deletes the rows expired at ``now`` among the next ``rows`` rows in key order after the last
        step's, starting over after the last row; returns how many. Writes call it every
        ``purge_interval`` seconds, so the whole table is swept in bounded slices."""
        return self.native.sweep_step(now, rows)

    def pragma(self, name: str) -> str:
        """``PRAGMA name`` as the store's connections see it (``journal_mode``, ``synchronous`` …)."""
        return self.native.pragma(name)

    def ping(self) -> None:
        """Raises ``UnavailableError`` unless the file can be queried."""
        self.native.ping()

    def close(self) -> None:
        """Closes the store's connections."""
        self.native.close()
