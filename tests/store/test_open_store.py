"""open_store: registry Store → backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from online_feature_store.errors import InvalidInputError
from online_feature_store.registry.model import Store
from online_feature_store.store import open_store
from online_feature_store.store.cassandra_store import CassandraStore
from online_feature_store.store.redis_store import RedisStore
from online_feature_store.store.sqlite import SqliteStore


def test_sqlite(tmp_path: Path) -> None:
    store = open_store(Store("main", "sqlite", {"path": str(tmp_path / "s.db"), "purge_interval": "5"}))
    assert isinstance(store, SqliteStore)
    assert store.path == tmp_path / "s.db"
    store.close()


def test_sqlite_default_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFS_DATA_DIR", str(tmp_path))
    store = open_store(Store("main", "sqlite"))
    assert isinstance(store, SqliteStore)
    assert store.path == tmp_path / "store-main.db"
    store.close()


def test_redis() -> None:
    store = open_store(Store("r", "redis", {"url": "redis://127.0.0.1:16379/0", "pool_size": "8"}))
    assert isinstance(store, RedisStore)
    assert store.url == "redis://127.0.0.1:16379/0"
    store.close()
    store = open_store(Store("r", "redis", {"cluster_nodes": "127.0.0.1:17001, 127.0.0.1:17002"}))
    assert isinstance(store, RedisStore)
    assert store.cluster_nodes == ("127.0.0.1:17001", "127.0.0.1:17002")
    store.close()


def test_scylla() -> None:
    store = open_store(
        Store(
            "s",
            "scylla",
            {"hosts": "10.0.0.1,10.0.0.2", "port": "19042", "keyspace": "feat", "consistency": "ONE"},
        )
    )
    assert isinstance(store, CassandraStore)
    assert store.contact_points == ("10.0.0.1", "10.0.0.2")
    assert (store.port, store.keyspace) == (19042, "feat")
    assert (store.read_consistency, store.write_consistency) == ("ONE", "ONE")
    assert (store.retries, store.speculative_delay) == (2, 0.0)
    assert store.replication == {"class": "SimpleStrategy", "replication_factor": 1}
    store.close()


def test_scylla_replicated() -> None:
    """The settings of a replicated cluster (issue #21): RF 3, a consistency level each way, retries and
    speculative executions inside the request timeout."""
    settings = {
        "hosts": "127.0.0.2,127.0.0.3,127.0.0.4",
        "replication_factor": "3",
        "read_consistency": "quorum",
        "write_consistency": "LOCAL_QUORUM",
        "retries": "3",
        "speculative_delay": "0.05",
        "speculative_max": "1",
        "request_timeout": "4",
    }
    store = open_store(Store("s", "scylla", settings))
    assert isinstance(store, CassandraStore)
    assert (store.read_consistency, store.write_consistency) == ("QUORUM", "LOCAL_QUORUM")
    assert store.replication == {"class": "SimpleStrategy", "replication_factor": 3}
    assert (store.retries, store.speculative_delay, store.speculative_max) == (3, 0.05, 1)
    store.close()
    defaults = open_store(Store("d", "scylla", {}))
    assert isinstance(defaults, CassandraStore)
    assert (defaults.read_consistency, defaults.write_consistency) == ("LOCAL_QUORUM", "LOCAL_QUORUM")
    defaults.close()


@pytest.mark.parametrize(
    ("store", "message"),
    [
        (Store("x", "mongo"), "unknown kind"),
        (Store("x", "sqlite", {"pth": "a"}), "unknown sqlite setting"),
        (Store("x", "redis"), "exactly one of url, cluster_nodes"),
        (Store("x", "redis", {"url": "redis://h", "cluster_nodes": "h:1"}), "exactly one"),
        (Store("x", "scylla", {"port": "ninety"}), "not a number"),
        (Store("x", "scylla", {"consistency": "SOME"}), "consistency"),
        (Store("x", "scylla", {"retries": "two"}), "not a number"),
        (Store("x", "scylla", {"speculative_delay": "-1"}), "speculative_delay=.* is negative"),
        (Store("x", "scylla", {"retries": "-1"}), "retries=.* is negative"),
        (Store("x", "redis", {"url": "redis://h", "pool_size": "-2"}), "pool_size=.* is negative"),
    ],
)
def test_bad_settings(store: Store, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        open_store(store)
