"""ScyllaDB / Apache Cassandra as a store (CQL native protocol v4).

The store itself is native (``rust/src/store/cassandra.rs``, ScyllaDB's ``scylla`` driver, reached through
:class:`~online_feature_store._native.Store`): reads and writes run in the core with the GIL released, and
the native read path can call it without coming back to Python. This class is its configuration, and the
:class:`~online_feature_store.store.base.BlockStore` face the Python code and the contract suite use.

Layout (the one earlier versions wrote with ``cassandra-driver``, so existing keyspaces keep working): one
table per entity in the configured keyspace. The partition key is the entity's key columns (``text``,
named by ``Key.column``); each FG is one ``blob`` column ``fg_<id>``. A read of several FGs of a key is
one single-partition ``SELECT``; a write of one FG is one ``UPDATE … USING TTL`` of one cell, with no
read first, so writers of different FGs never interfere, and the database purges expired cells itself.
Statements are prepared once and routed token-aware; reads and writes run with a bounded number of
requests in flight.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from online_feature_store._native import Store
from online_feature_store.registry.model import Entity
from online_feature_store.store.base import BlockWrite, KeyValues
from online_feature_store.store.sqlite import layout

__all__ = ["CassandraStore"]


class CassandraStore:
    """FG blocks in a Cassandra/ScyllaDB keyspace; connects on first use.

    ``replication``: a CQL replication map for ``ensure`` to create the keyspace with (default
    ``SimpleStrategy`` with ``replication_factor``). ``read_consistency`` / ``write_consistency``: CQL
    consistency level names (default ``LOCAL_QUORUM``). ``concurrency``: requests in flight per call.
    ``local_dc``: the data centre the DC-aware policy prefers (default: the first contact point's).
    ``retries``: times a failed request (node died, coordinator timeout, unavailable, overloaded) is sent
    to the next node; ``speculative_delay``: seconds without an answer before a request is also sent to
    the next node (0: never), at most ``speculative_max`` times. ``request_timeout`` bounds a request with
    all its retries and speculative executions.
    """

    def __init__(
        self,
        contact_points: Sequence[str] = ("127.0.0.1",),
        port: int = 9042,
        keyspace: str = "ofs",
        *,
        replication: Mapping[str, Any] | None = None,
        replication_factor: int = 1,
        read_consistency: str = "LOCAL_QUORUM",
        write_consistency: str = "LOCAL_QUORUM",
        concurrency: int = 64,
        connect_timeout: float = 5.0,
        request_timeout: float = 10.0,
        local_dc: str | None = None,
        retries: int = 2,
        speculative_delay: float = 0.0,
        speculative_max: int = 2,
    ):
        self.contact_points = tuple(contact_points)
        self.port = port
        self.keyspace = keyspace
        self.read_consistency = read_consistency.upper()
        self.write_consistency = write_consistency.upper()
        self.retries = retries
        self.speculative_delay = speculative_delay
        self.speculative_max = speculative_max
        default = {"class": "SimpleStrategy", "replication_factor": replication_factor}
        self.replication = dict(replication or default)
        self.native = Store.cassandra(
            list(self.contact_points),
            port,
            keyspace,
            replication=[(str(k), str(v)) for k, v in self.replication.items()],
            read_consistency=read_consistency,
            write_consistency=write_consistency,
            concurrency=concurrency,
            connect_timeout=connect_timeout,
            request_timeout=request_timeout,
            local_dc=local_dc,
            retries=retries,
            speculative_delay=speculative_delay,
            speculative_max=speculative_max,
        )
        """The native store: what the native read and write paths call."""

    def ensure(self, entities: Sequence[Entity]) -> None:
        """Creates the keyspace, one table per entity and one column per FG (idempotent, additive)."""
        self.native.ensure([layout(e) for e in entities])

    def read(self, entity: Entity, keys: Sequence[KeyValues], fg_ids: Sequence[int]) -> list[list[bytes]]:
        """One prepared single-partition SELECT per distinct key, at most ``concurrency`` in flight; FGs
        without a column yet read as ``b""``."""
        return self.native.read(entity.label, [k.column for k in entity.keys], keys, fg_ids)

    def write(self, entity: Entity, writes: Sequence[BlockWrite]) -> None:
        """``UPDATE … USING TTL`` of the written cells only (one statement per key and expiry, never a
        read), at most ``concurrency`` in flight; TTL = ``expires_at - now`` (at least 1 s), 0 = never.
        A write of an FG without a column adds it."""
        self.native.write(entity.label, [k.column for k in entity.keys], writes)

    def ping(self) -> None:
        """Raises ``UnavailableError`` unless a node answers a query."""
        self.native.ping()

    def close(self) -> None:
        """Closes the connections; later calls raise ``UnavailableError``."""
        self.native.close()
