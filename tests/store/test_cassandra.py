"""Cassandra specifics: table layout from the registry, native TTL, errors."""

from __future__ import annotations

import time
from typing import Any

import pytest

from online_feature_store.errors import InvalidInputError, UnavailableError
from online_feature_store.store.base import BlockWrite
from tests.store.conftest import KEYSPACE, closed_port, make_block, make_entity


def test_table_has_the_key_columns_and_one_blob_per_fg(cassandra_store: Any) -> None:
    entity = make_entity(fg_ids=(1, 7))
    cassandra_store.ensure([entity])
    table = cassandra_store._cluster.metadata.keyspaces[KEYSPACE].tables[entity.label]
    assert [c.name for c in table.partition_key] == ["user_id", "region"]
    assert {name: c.cql_type for name, c in table.columns.items()} == {
        "user_id": "text",
        "region": "text",
        "fg_1": "blob",
        "fg_7": "blob",
    }


def test_cells_carry_the_database_ttl(cassandra_store: Any) -> None:
    entity = make_entity()
    cassandra_store.ensure([entity])
    expiry = int(time.time()) + 1000
    key = ("k", "r")
    cassandra_store.write(
        entity,
        [BlockWrite(key, 1, make_block(1, expiry_at=expiry), expiry), BlockWrite(key, 2, make_block(2))],
    )
    row = cassandra_store._session.execute(
        f'SELECT TTL(fg_1), TTL(fg_2) FROM {KEYSPACE}."{entity.label}" WHERE user_id = %s AND region = %s',
        key,
    ).one()
    assert 990 <= row[0] <= 1000
    assert row[1] is None


def test_write_of_a_new_fg_adds_its_column(cassandra_store: Any) -> None:
    entity = make_entity(fg_ids=(1,))
    cassandra_store.ensure([entity])
    cassandra_store.write(entity, [BlockWrite(("k", "r"), 9, make_block(9))])
    assert cassandra_store.read(entity, [("k", "r")], [1, 9]) == [[b"", make_block(9)]]


def test_labels_that_are_not_table_names_are_rejected(cassandra_store: Any) -> None:
    with pytest.raises(InvalidInputError, match="table name"):
        cassandra_store.ensure([make_entity("has-dash")])


def test_unreachable_cassandra_raises_unavailable() -> None:
    from online_feature_store.store.cassandra_store import CassandraStore

    store = CassandraStore(["127.0.0.1"], closed_port(), "ofs_down", connect_timeout=0.5)
    entity = make_entity()
    started = time.monotonic()
    with pytest.raises(UnavailableError) as info:
        store.read(entity, [("a", "b")], [1])
    assert info.value.__cause__ is not None
    with pytest.raises(UnavailableError):
        store.write(entity, [BlockWrite(("a", "b"), 1, make_block(1))])
    with pytest.raises(UnavailableError):
        store.ping()
    assert time.monotonic() - started < 30
    store.close()


def test_settings_are_checked() -> None:
    from online_feature_store.store.cassandra_store import CassandraStore

    with pytest.raises(InvalidInputError, match="consistency"):
        CassandraStore(read_consistency="MOST")
    with pytest.raises(InvalidInputError, match="keyspace"):
        CassandraStore(keyspace="bad-name")
    CassandraStore(read_consistency="one", write_consistency="LOCAL_QUORUM").close()


def test_empty_single_column_key_is_refused_on_write(cassandra_store: Any) -> None:
    entity = make_entity(n_keys=1)
    cassandra_store.ensure([entity])
    with pytest.raises(InvalidInputError, match="empty key"):
        cassandra_store.write(entity, [BlockWrite(("",), 1, make_block(1))])
    assert cassandra_store.read(entity, [("",)], [1]) == [[b""]]
