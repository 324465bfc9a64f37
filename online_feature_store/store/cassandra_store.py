"""ScyllaDB / Apache Cassandra as a store, through ``cassandra-driver`` (CQL native protocol v4).

Layout: one table per entity in the configured keyspace. The partition key is the entity's key columns
(``text``, named by ``Key.column``); each FG is one ``blob`` column ``fg_<id>``. A read of several FGs
of a key is one single-partition ``SELECT``; a write of one FG is one ``UPDATE … USING TTL`` of one cell,
with no read first, so writers of different FGs never interfere, and the database purges expired cells
itself. Statements are prepared once and routed token-aware; reads and writes run with a bounded number
of requests in flight. ``cassandra-driver`` is imported when the store is created.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from online_feature_store.errors import InvalidInputError, UnavailableError
from online_feature_store.registry.model import Entity
from online_feature_store.store._checks import check_fg_ids, check_keys, check_writes
from online_feature_store.store.base import BlockWrite, KeyValues

__all__ = ["CassandraStore"]

_NAME = re.compile(r"^[A-Za-z0-9_]{1,48}$")
_CONSISTENCY = ("ANY", "ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_QUORUM", "EACH_QUORUM", "LOCAL_ONE")


_IN_CHUNK = 50
"""Partitions per ``IN`` read: small enough that one slow partition does not hold many keys back."""


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _fg_column(fg_id: int) -> str:
    return f"fg_{fg_id}"


class CassandraStore:
    """FG blocks in a Cassandra/ScyllaDB keyspace.

    ``replication``: a CQL replication map for ``ensure`` to create the keyspace with (default
    ``SimpleStrategy`` with ``replication_factor``). ``read_consistency`` / ``write_consistency``: CQL
    consistency level names (default ``LOCAL_QUORUM``). ``concurrency``: requests in flight per call.
    ``local_dc``: the data centre the DC-aware policy prefers (default: the first contact point's).
    """

    def __init__(
        self,
        contact_points: Sequence[str] = ("127.0.0.1",),
        port: int = 9042,
        keyspace: str = "ofs",
        *,
        replication: dict[str, Any] | None = None,
        replication_factor: int = 1,
        read_consistency: str = "LOCAL_QUORUM",
        write_consistency: str = "LOCAL_QUORUM",
        concurrency: int = 64,
        connect_timeout: float = 5.0,
        request_timeout: float = 10.0,
        local_dc: str | None = None,
    ):
        if not _NAME.match(keyspace):
            raise InvalidInputError(f"keyspace {keyspace!r}: use 1-48 letters, digits or underscores")
        for level in (read_consistency, write_consistency):
            if level.upper() not in _CONSISTENCY:
                raise InvalidInputError(
                    f"unknown consistency level {level!r} (one of {', '.join(_CONSISTENCY)})"
                )
        self.contact_points = tuple(contact_points)
        self.port = port
        self.keyspace = keyspace
        self.replication = replication or {
            "class": "SimpleStrategy",
            "replication_factor": replication_factor,
        }
        self._read_cl = read_consistency.upper()
        self._write_cl = write_consistency.upper()
        self._concurrency = max(1, concurrency)
        self._connect_timeout = connect_timeout
        self._request_timeout = request_timeout
        self._local_dc = local_dc
        self._lock = threading.Lock()
        self._cluster: Any = None
        self._session: Any = None
        self._prepared: dict[tuple[str, str, tuple[int, ...]], Any] = {}
        self._closed = False

    @property
    def _where(self) -> str:
        return f"cassandra {','.join(self.contact_points)}:{self.port}/{self.keyspace}"

    # -- connection -----------------------------------------------------------------------------------

    def _connect(self) -> Any:
        if self._closed:
            raise UnavailableError(f"{self._where} is closed")
        if self._session is not None:
            return self._session
        try:
            from cassandra import ConsistencyLevel  # type: ignore[import-untyped]
        except ImportError as exc:  # a ModuleNotFoundError still: never mistaken for the cluster being down
            raise ModuleNotFoundError(
                "Scylla / Cassandra stores need cassandra-driver: pip install 'online-feature-store[scylla]'",
                name="cassandra",
            ) from exc
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile  # type: ignore[import-untyped]
        from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy  # type: ignore[import-untyped]
        from cassandra.query import tuple_factory  # type: ignore[import-untyped]

        with self._lock, self._errors("connect"):
            if self._session is None:
                profile = ExecutionProfile(
                    load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=self._local_dc)),
                    consistency_level=ConsistencyLevel.name_to_value[self._read_cl],
                    request_timeout=self._request_timeout,
                    row_factory=tuple_factory,
                )
                cluster = Cluster(
                    list(self.contact_points),
                    port=self.port,
                    protocol_version=4,  # ScyllaDB and Cassandra 4/5 both speak v4
                    execution_profiles={EXEC_PROFILE_DEFAULT: profile},
                    connect_timeout=self._connect_timeout,
                    control_connection_timeout=self._connect_timeout,
                )
                try:
                    self._session = cluster.connect()
                except BaseException:
                    cluster.shutdown()
                    raise
                self._cluster = cluster
            return self._session

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        from cassandra import DriverException, InvalidRequest, RequestExecutionException
        from cassandra.cluster import NoHostAvailable

        try:
            yield
        except InvalidRequest as e:
            raise InvalidInputError(f"{self._where}: {what}: {e}") from e
        except (NoHostAvailable, RequestExecutionException, DriverException) as e:
            # Unavailable, ReadTimeout, WriteTimeout, Read/WriteFailure, OperationTimedOut, …
            raise UnavailableError(f"{self._where}: {what} failed: {type(e).__name__}: {e}") from e
        except OSError as e:
            raise UnavailableError(f"{self._where}: {what} failed: {e}") from e

    # -- schema ---------------------------------------------------------------------------------------

    def _table(self, entity: Entity) -> str:
        if not _NAME.match(entity.label):
            raise InvalidInputError(
                f"entity {entity.label!r}: a Cassandra table name needs 1-48 letters, digits or underscores"
            )
        return f"{self.keyspace}.{_quote(entity.label)}"

    def _columns(self, entity: Entity) -> set[str] | None:
        """The columns of the entity's table in the driver's schema metadata (``None``: no table)."""
        ks = self._cluster.metadata.keyspaces.get(self.keyspace)
        table = ks.tables.get(entity.label) if ks is not None else None
        return None if table is None else set(table.columns)

    def ensure(self, entities: Sequence[Entity]) -> None:
        """Creates the keyspace, one table per entity and one column per FG (idempotent, additive)."""
        for entity in entities:
            self._ensure_columns(entity, [fg.id for fg in entity.feature_groups])

    def _ensure_columns(self, entity: Entity, fg_ids: Sequence[int]) -> None:
        session = self._connect()
        table = self._table(entity)
        for key in entity.keys:
            if re.fullmatch(r"fg_\d+", key.column):
                raise InvalidInputError(
                    f"entity {entity.label!r}: key column {key.column!r} clashes with FG columns"
                )
        with self._errors("ensure"):
            if self.keyspace not in self._cluster.metadata.keyspaces:
                replication = ", ".join(f"'{k}': '{v}'" for k, v in self.replication.items())
                session.execute(
                    f"CREATE KEYSPACE IF NOT EXISTS {self.keyspace} WITH replication = {{{replication}}}"
                )
            columns = self._columns(entity)
            if columns is None:
                keys = ", ".join(_quote(k.column) for k in entity.keys)
                defs = ", ".join(f"{_quote(k.column)} text" for k in entity.keys)
                fgs = "".join(f", {_fg_column(i)} blob" for i in dict.fromkeys(fg_ids))
                session.execute(f"CREATE TABLE IF NOT EXISTS {table} ({defs}{fgs}, PRIMARY KEY (({keys})))")
                columns = self._columns(entity) or set()
            for fg_id in dict.fromkeys(fg_ids):
                if _fg_column(fg_id) not in columns:
                    try:
                        session.execute(f"ALTER TABLE {table} ADD {_fg_column(fg_id)} blob")
                    except Exception as e:
                        # another process added it first: fine, the column is there
                        if "conflicts with an existing column" not in str(e) and "already exists" not in str(
                            e
                        ):
                            raise

    def _statement(self, kind: str, entity: Entity, fg_ids: tuple[int, ...]) -> Any:
        cache_key = (kind, entity.label, fg_ids)
        stmt = self._prepared.get(cache_key)
        if stmt is None:
            from cassandra import ConsistencyLevel

            table = self._table(entity)
            where = " AND ".join(f"{_quote(k.column)} = ?" for k in entity.keys)
            if kind in ("read", "read_in"):
                cols = ", ".join(_fg_column(i) for i in fg_ids)
                if kind == "read_in":  # single-column keys: many partitions per request
                    key_col = _quote(entity.keys[0].column)
                    cols, where = f"{key_col}, {cols}", f"{key_col} IN ?"
                stmt = self._connect().prepare(f"SELECT {cols} FROM {table} WHERE {where}")
                stmt.consistency_level = ConsistencyLevel.name_to_value[self._read_cl]
            else:
                sets = ", ".join(f"{_fg_column(i)} = ?" for i in fg_ids)
                stmt = self._connect().prepare(f"UPDATE {table} USING TTL ? SET {sets} WHERE {where}")
                stmt.consistency_level = ConsistencyLevel.name_to_value[self._write_cl]
            self._prepared[cache_key] = stmt
        return stmt

    # -- BlockStore -----------------------------------------------------------------------------------

    def read(self, entity: Entity, keys: Sequence[KeyValues], fg_ids: Sequence[int]) -> list[list[bytes]]:
        """One prepared single-partition SELECT per distinct key (``IN`` of up to 50 keys when the key
        has one column), at most ``concurrency`` requests in flight."""
        check_keys(entity, keys)
        check_fg_ids(entity, fg_ids)
        if not keys:
            return []
        session = self._connect()
        from cassandra.concurrent import execute_concurrent_with_args  # type: ignore[import-untyped]

        with self._errors("read"):
            columns = self._columns(entity)
            # FGs without a column (or no table at all) have never been written: nothing stored
            present = tuple(i for i in dict.fromkeys(fg_ids) if columns and _fg_column(i) in columns)
            rows: dict[KeyValues, tuple[Any, ...] | None] = {}
            unique = list(dict.fromkeys(tuple(k) for k in keys))
            if present and len(entity.keys) == 1:
                # Cassandra refuses an empty single-column partition key: such a key holds nothing
                unique = [k for k in unique if k[0]]
                stmt = self._statement("read_in", entity, present)
                chunks = [
                    ([k[0] for k in unique[i : i + _IN_CHUNK]],) for i in range(0, len(unique), _IN_CHUNK)
                ]
                results = execute_concurrent_with_args(
                    session, stmt, chunks, concurrency=self._concurrency, raise_on_first_error=True
                )
                for _, result in results:
                    for row in result:
                        rows[(row[0],)] = row[1:]
            elif present:
                stmt = self._statement("read", entity, present)
                results = execute_concurrent_with_args(
                    session, stmt, unique, concurrency=self._concurrency, raise_on_first_error=True
                )
                for key, (_, result) in zip(unique, results, strict=False):
                    rows[key] = result.one()
        out = []
        for key in keys:
            row = rows.get(tuple(key))
            if row is None:
                out.append([b""] * len(fg_ids))
            else:
                by_fg = dict(zip(present, row, strict=False))
                out.append([by_fg.get(i) or b"" for i in fg_ids])
        return out

    def write(self, entity: Entity, writes: Sequence[BlockWrite]) -> None:
        """``UPDATE … USING TTL`` of the written cells only (one statement per key and expiry, never a
        read), at most ``concurrency`` in flight; TTL = ``expires_at - now`` (at least 1 s), 0 = never."""
        check_writes(entity, writes)
        if not writes:
            return
        if len(entity.keys) == 1 and any(not w.key[0] for w in writes):
            raise InvalidInputError(f"entity {entity.label!r}: Cassandra cannot store an empty key value")
        session = self._connect()
        from cassandra.concurrent import execute_concurrent

        columns = self._columns(entity) or set()
        missing = [w.fg_id for w in writes if _fg_column(w.fg_id) not in columns]
        if missing:
            self._ensure_columns(entity, missing)
        # later writes of the same (key, FG) win, as in the other stores
        last = {(tuple(w.key), w.fg_id): w for w in writes}
        # FGs of one key with the same expiry go in one UPDATE (one mutation of one partition)
        groups: dict[tuple[KeyValues, int], dict[int, bytes]] = {}
        for (key, fg_id), w in last.items():
            groups.setdefault((key, w.expires_at), {})[fg_id] = w.block
        now = int(time.time())
        statements = []
        for (key, expires_at), blocks in groups.items():
            ttl = 0 if expires_at == 0 else max(1, expires_at - now)
            fgs = tuple(sorted(blocks))
            stmt = self._statement("write", entity, fgs)
            statements.append((stmt, (ttl, *(blocks[i] for i in fgs), *key)))
        with self._errors("write"):
            execute_concurrent(session, statements, concurrency=self._concurrency, raise_on_first_error=True)

    def ping(self) -> None:
        """Raises ``UnavailableError`` unless a node answers a query."""
        session = self._connect()
        with self._errors("ping"):
            session.execute("SELECT release_version FROM system.local")

    def close(self) -> None:
        """Shuts the driver's connections and threads down."""
        with self._lock:
            self._closed = True
            cluster, self._cluster, self._session = self._cluster, None, None
        if cluster is not None:
            cluster.shutdown()
