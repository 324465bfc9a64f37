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
    store.close()


@pytest.mark.parametrize(
    ("store", "message"),
    [
        (Store("x", "mongo"), "unknown kind"),
        (Store("x", "sqlite", {"pth": "a"}), "unknown sqlite setting"),
        (Store("x", "redis"), "exactly one of url, cluster_nodes"),
        (Store("x", "redis", {"url": "redis://h", "cluster_nodes": "h:1"}), "exactly one"),
        (Store("x", "scylla", {"port": "ninety"}), "not a number"),
        (Store("x", "scylla", {"consistency": "SOME"}), "consistency"),
    ],
)
def test_bad_settings(store: Store, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        open_store(store)
