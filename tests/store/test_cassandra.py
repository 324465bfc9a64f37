"""Cassandra specifics: table layout from the registry, native TTL, errors, and the data of the earlier
Python store (``cassandra-driver``) read and written alike. ``cassandra-driver`` is the independent CQL
client these tests look at the tables with (the store itself is native)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from online_feature_store.errors import CorruptBlockError, InvalidInputError, UnavailableError
from online_feature_store.store.base import BlockWrite
from online_feature_store.store.cassandra_store import CassandraStore
from tests.store.conftest import CASSANDRA, KEYSPACE, closed_port, make_block, make_entity, poll


@pytest.fixture(scope="module")
def cql(cassandra_store: CassandraStore) -> Iterator[Any]:
    """A ``cassandra-driver`` session on the test keyspace's cluster (the keyspace created)."""
    from cassandra.cluster import Cluster  # type: ignore[import-untyped]

    cassandra_store.ensure([make_entity()])
    cluster = Cluster([CASSANDRA[0]], port=CASSANDRA[1], protocol_version=4)
    try:
        yield cluster.connect()
    finally:
        cluster.shutdown()


def _table(label: str) -> str:
    return f'{KEYSPACE}."{label}"'


WHERE = "WHERE user_id = %s AND region = %s"


def test_table_has_the_key_columns_and_one_blob_per_fg(cassandra_store: CassandraStore, cql: Any) -> None:
    entity = make_entity(fg_ids=(1, 7))
    cassandra_store.ensure([entity])
    cql.cluster.refresh_table_metadata(KEYSPACE, entity.label)
    table = cql.cluster.metadata.keyspaces[KEYSPACE].tables[entity.label]
    assert [c.name for c in table.partition_key] == ["user_id", "region"]
    assert {name: c.cql_type for name, c in table.columns.items()} == {
        "user_id": "text",
        "region": "text",
        "fg_1": "blob",
        "fg_7": "blob",
    }


def test_cells_carry_the_database_ttl(cassandra_store: CassandraStore, cql: Any) -> None:
    entity = make_entity()
    cassandra_store.ensure([entity])
    expiry = int(time.time()) + 1000
    key = ("k", "r")
    cassandra_store.write(
        entity,
        [BlockWrite(key, 1, make_block(1, expiry_at=expiry), expiry), BlockWrite(key, 2, make_block(2))],
    )
    row = cql.execute(f"SELECT TTL(fg_1), TTL(fg_2) FROM {_table(entity.label)} {WHERE}", key).one()
    assert 990 <= row[0] <= 1000
    assert row[1] is None


def test_data_of_the_python_store_reads_and_writes_alike(cassandra_store: CassandraStore, cql: Any) -> None:
    """Rows written the way the cassandra-driver store wrote them read back natively, and the native
    store's rows are what that store read: same table, columns and bytes."""
    entity = make_entity()
    cassandra_store.ensure([entity])
    old = (make_block(1), make_block(2, expiry_at=int(time.time()) + 500))
    cql.execute(
        f"UPDATE {_table(entity.label)} USING TTL %s SET fg_1 = %s, fg_2 = %s {WHERE}",
        (0, old[0], old[1], "old|user", "e:u"),
    )
    assert cassandra_store.read(entity, [("old|user", "e:u")], [1, 2, 3]) == [[old[0], old[1], b""]]
    cassandra_store.write(entity, [BlockWrite(("new\\user", "eu"), 3, make_block(3))])
    row = cql.execute(f"SELECT fg_1, fg_3 FROM {_table(entity.label)} {WHERE}", ("new\\user", "eu")).one()
    assert (row[0], row[1]) == (None, make_block(3))


def test_write_of_a_new_fg_adds_its_column(cassandra_store: CassandraStore) -> None:
    entity = make_entity(fg_ids=(1,))
    cassandra_store.ensure([entity])
    cassandra_store.write(entity, [BlockWrite(("k", "r"), 9, make_block(9))])
    assert cassandra_store.read(entity, [("k", "r")], [1, 9]) == [[b"", make_block(9)]]


def test_an_fg_column_added_elsewhere_is_read_while_serving(
    cassandra_store: CassandraStore, cql: Any
) -> None:
    """A serving store that has read the table keeps answering while another process adds an FG
    column and writes it; the new FG is then read (not answered as missing for ever)."""
    entity = make_entity(fg_ids=(1,))
    cassandra_store.ensure([entity])
    key = ("k", "r")
    cassandra_store.write(entity, [BlockWrite(key, 1, make_block(1))])
    assert cassandra_store.read(entity, [key], [1, 4]) == [[make_block(1), b""]]
    other = CassandraStore([CASSANDRA[0]], CASSANDRA[1], KEYSPACE)
    try:
        other.ensure([make_entity(entity.label, fg_ids=(1, 4))])
        other.write(entity, [BlockWrite(key, 4, make_block(4))])
    finally:
        other.close()
    assert poll(lambda: cassandra_store.read(entity, [key], [1, 4]) == [[make_block(1), make_block(4)]])
    # and a column added by plain CQL (another tool, an older version) too
    cql.execute(f"ALTER TABLE {_table(entity.label)} ADD fg_5 blob")
    cql.execute(f"UPDATE {_table(entity.label)} SET fg_5 = %s {WHERE}", (make_block(5), *key))
    assert poll(lambda: cassandra_store.read(entity, [key], [5, 1]) == [[make_block(5), make_block(1)]])


def test_a_cell_that_is_not_a_blob_is_corrupt(cassandra_store: CassandraStore, cql: Any) -> None:
    entity = make_entity(fg_ids=(1,))
    cql.execute(
        f"CREATE TABLE {_table(entity.label)} (user_id text, region text, fg_1 text, "
        "PRIMARY KEY ((user_id, region)))"
    )
    cql.execute(f"INSERT INTO {_table(entity.label)} (user_id, region, fg_1) VALUES ('k', 'r', 'text')")
    with pytest.raises(CorruptBlockError, match="not a blob"):
        cassandra_store.read(entity, [("k", "r")], [1])


def test_consistency_levels_are_asked_for(cassandra_store: CassandraStore) -> None:
    """Reads and writes run at the configured levels: THREE cannot be met by the one-node test cluster,
    which Cassandra answers with Unavailable (not an empty read)."""
    entity = make_entity()
    cassandra_store.ensure([entity])
    cassandra_store.write(entity, [BlockWrite(("k", "r"), 1, make_block(1))])
    strict = CassandraStore([CASSANDRA[0]], CASSANDRA[1], KEYSPACE, read_consistency="THREE")
    try:
        with pytest.raises(UnavailableError, match="consistency level THREE"):
            strict.read(entity, [("k", "r")], [1])
    finally:
        strict.close()
    strict = CassandraStore([CASSANDRA[0]], CASSANDRA[1], KEYSPACE, write_consistency="THREE")
    try:
        with pytest.raises(UnavailableError, match="consistency level THREE"):
            strict.write(entity, [BlockWrite(("k", "r"), 1, make_block(2))])
    finally:
        strict.close()
    assert cassandra_store.read(entity, [("k", "r")], [1]) == [[make_block(1)]]


def test_labels_that_are_not_table_names_are_rejected(cassandra_store: CassandraStore) -> None:
    with pytest.raises(InvalidInputError, match="table name"):
        cassandra_store.ensure([make_entity("has-dash")])


def test_unreachable_cassandra_raises_unavailable() -> None:
    store = CassandraStore(["127.0.0.1"], closed_port(), "ofs_down", connect_timeout=0.5)
    entity = make_entity()
    started = time.monotonic()
    with pytest.raises(UnavailableError, match="connect"):
        store.read(entity, [("a", "b")], [1])
    with pytest.raises(UnavailableError):
        store.write(entity, [BlockWrite(("a", "b"), 1, make_block(1))])
    with pytest.raises(UnavailableError):
        store.ping()
    assert time.monotonic() - started < 30
    store.close()
    with pytest.raises(UnavailableError, match="closed"):
        store.ping()


def test_settings_are_checked() -> None:
    with pytest.raises(InvalidInputError, match="consistency"):
        CassandraStore(read_consistency="MOST")
    with pytest.raises(InvalidInputError, match="keyspace"):
        CassandraStore(keyspace="bad-name")
    with pytest.raises(InvalidInputError, match="connect_timeout"):
        CassandraStore(connect_timeout=-1)
    store = CassandraStore(read_consistency="one", write_consistency="LOCAL_QUORUM")
    assert (store.read_consistency, store.write_consistency) == ("ONE", "LOCAL_QUORUM")
    store.close()


def test_empty_single_column_key_is_refused_on_write(cassandra_store: CassandraStore) -> None:
    entity = make_entity(n_keys=1)
    cassandra_store.ensure([entity])
    with pytest.raises(InvalidInputError, match="empty key"):
        cassandra_store.write(entity, [BlockWrite(("",), 1, make_block(1))])
    assert cassandra_store.read(entity, [("",)], [1]) == [[b""]]
