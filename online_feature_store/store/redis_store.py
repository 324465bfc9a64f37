"""Redis (standalone or Redis Cluster) as a store: one CSDB value per entity key holding all its FGs.

The store itself is native (``rust/src/store/redis.rs``, redis-rs, reached through
:class:`~online_feature_store._native.Store`): reads and writes run in the core with the GIL released, and
the native read path calls it without coming back to Python. This class is its configuration, and the
:class:`~online_feature_store.store.base.BlockStore` face the Python code and the contract suite use.

The value of ``ofs:s:<entity>:<key>`` (see :func:`~online_feature_store.store.keys.namespaced_key`) is a
CSDB: ``[layout][fg id u16][len u16|u32][PSDB]…``; values written by earlier versions keep working. A
write replaces FG entries inside that value with a server-side Lua script
(``rust/src/store/redis_merge.lua``), atomically, so concurrent writers of different FGs of one key never
lose each other's update (the reference's client-side read-modify-write can). The script also drops
expired entries and sets the key's expiry to the latest entry expiry (none when an entry never expires),
so Redis itself purges a key once all its FGs have expired. Reads are one MGET per request (Redis
Cluster: one MGET per slot, the nodes read concurrently) and a CSDB lookup per value.

Durability is Redis's own: configure AOF (``appendfsync always``) when Redis is the system of record.
"""

from __future__ import annotations

from collections.abc import Sequence

from online_feature_store._native import Store
from online_feature_store.registry.model import Entity
from online_feature_store.store.base import BlockWrite, KeyValues

__all__ = ["NAMESPACE", "RedisStore"]

NAMESPACE = "s"
"""Key namespace of stored values (``ofs:s:…``); the distributed cache uses ``ofs:c:…``."""


class RedisStore:
    """FG blocks in Redis, standalone (``url``) or Redis Cluster (``cluster_nodes``: ``host:port`` seeds).

    ``pool_size`` bounds the connections (per node for a cluster; they are multiplexed, and the core
    opens at most 4). Every call waits at most ``socket_timeout`` for Redis; connection failures are
    retried ``retries`` times with a short backoff, then raise ``UnavailableError``. The client connects
    on first use, so a store can be opened while Redis is down. ``username`` and ``password`` (Redis ACL
    / ``requirepass``) are sent apart from the URL, which is shown in errors: a password still written
    into ``url`` is redacted there.

    ``wait_replicas`` (default 0: off): a write is acknowledged only once that many replicas of every
    master hold it (``WAIT``, at most ``wait_timeout`` seconds, else ``UnavailableError`` with the write
    applied on the master). With a replica per master and ``wait_replicas=1``, a master that dies after
    acknowledging a write cannot lose it: the replica promoted in its place has it (docs/stores.md).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        cluster_nodes: Sequence[str] | None = None,
        pool_size: int = 32,
        connect_timeout: float = 2.0,
        socket_timeout: float = 2.0,
        retries: int = 2,
        username: str | None = None,
        password: str | None = None,
        wait_replicas: int = 0,
        wait_timeout: float = 1.0,
    ):
        if (url is None) == (not cluster_nodes):
            raise ValueError("RedisStore needs exactly one of url or cluster_nodes")
        self.url = url
        self.cluster_nodes = tuple(cluster_nodes or ())
        self.native = Store.redis(
            url,
            cluster_nodes=list(self.cluster_nodes) or None,
            pool_size=pool_size,
            connect_timeout=connect_timeout,
            socket_timeout=socket_timeout,
            retries=retries,
            username=username,
            password=password,
            wait_replicas=wait_replicas,
            wait_timeout=wait_timeout,
        )
        """The native store: what the native read and write paths call."""

    def ensure(self, entities: Sequence[Entity]) -> None:
        """Nothing to create: values appear on first write."""

    def read(self, entity: Entity, keys: Sequence[KeyValues], fg_ids: Sequence[int]) -> list[list[bytes]]:
        """One MGET of the distinct keys (one MGET per slot on a cluster, the nodes read concurrently);
        expired blocks are returned as stored, for the decoder to reject."""
        return self.native.read(entity.label, [k.column for k in entity.keys], keys, fg_ids)

    def write(self, entity: Entity, writes: Sequence[BlockWrite]) -> None:
        """One merge-script call per distinct key, pipelined; later writes of the same (key, FG) in one
        call win."""
        self.native.write(entity.label, [k.column for k in entity.keys], writes)

    def ping(self) -> None:
        """Raises ``UnavailableError`` unless Redis (every cluster primary) answers."""
        self.native.ping()

    def close(self) -> None:
        """Drops the connections; later calls raise ``UnavailableError``."""
        self.native.close()
