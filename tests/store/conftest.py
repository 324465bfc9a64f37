"""Fixtures of the store contract suite: every test runs on SQLite, Redis (standalone and a 3-master
cluster) and Cassandra, each on its own namespace (a fresh entity label; a fresh SQLite file)."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _services import require_service as require_service

import online_feature_store as ofs
from online_feature_store import formats
from online_feature_store.registry.model import Entity, Feature, FeatureGroup, Key
from online_feature_store.store.base import BlockStore

REDIS = ("127.0.0.1", 16379)
REDIS_URL = f"redis://{REDIS[0]}:{REDIS[1]}/0"
CLUSTER = [("127.0.0.1", 17001), ("127.0.0.1", 17002), ("127.0.0.1", 17003)]
CLUSTER_NODES = [f"{h}:{p}" for h, p in CLUSTER]
CASSANDRA = ("127.0.0.1", 19042)
KEYSPACE = "ofs_test"
BACKENDS = ["sqlite", "redis", "redis_cluster", "cassandra"]
FG_IDS = (1, 2, 3)
N_FEATURES = 64
META = formats.BlockMeta(ofs.DataType.FP32, N_FEATURES)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_block(seed: float, *, expiry_at: int = 0, n: int = N_FEATURES, compress: bool = True) -> bytes:
    """A production-like FP32 block whose values are derived from ``seed``."""
    values = np.arange(n, dtype=np.float32) + np.float32(seed)
    if expiry_at:
        return formats.encode_block(
            formats.BlockMeta(ofs.DataType.FP32, n), values, expiry_at=expiry_at, compress=compress
        )
    return formats.encode_block(formats.BlockMeta(ofs.DataType.FP32, n), values, compress=compress)


def make_entity(label: str | None = None, fg_ids: tuple[int, ...] = FG_IDS, *, n_keys: int = 2) -> Entity:
    """An entity with an ``n_keys``-column key (1 or 2) and FP32 FGs of the given ids, on a label no other
    test uses."""
    default = formats.encode_cell(ofs.DataType.FP32, 0.0)
    fgs = tuple(
        FeatureGroup(
            id=i,
            label=f"fg{i}",
            data_type=ofs.DataType.FP32,
            versions={1: tuple(Feature(f"f{j}", default) for j in range(N_FEATURES))},
        )
        for i in fg_ids
    )
    return Entity(
        label or f"t_{uuid.uuid4().hex[:16]}",
        (Key("user_id", "user_id"), Key("region", "region"))[:n_keys],
        fgs,
    )


def poll(condition: Callable[[], bool], timeout: float = 20.0, interval: float = 0.2) -> bool:
    """True as soon as ``condition()`` holds; False once ``timeout`` seconds passed without it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


@pytest.fixture(scope="session")
def cassandra_store() -> Iterator[Any]:
    """One connection for the whole run (connecting costs ~1 s); tests differ by table."""
    require_service("cassandra", [CASSANDRA], "scripts/services/cassandra start")
    from online_feature_store.store.cassandra_store import CassandraStore

    store = CassandraStore([CASSANDRA[0]], CASSANDRA[1], KEYSPACE)
    yield store
    store.close()


Opener = Callable[[], BlockStore]


def opener_for(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Opener:
    """A function opening a new client of ``backend``'s test instance."""
    if backend == "sqlite":
        from online_feature_store.store.sqlite import SqliteStore

        return lambda: SqliteStore(tmp_path / "store.db")
    if backend == "redis":
        require_service("redis", [REDIS], "scripts/services/redis start")
        from online_feature_store.store.redis_store import RedisStore

        return lambda: RedisStore(REDIS_URL)
    if backend == "redis_cluster":
        require_service("redis-cluster", CLUSTER, "scripts/services/redis-cluster start")
        from online_feature_store.store.redis_store import RedisStore

        return lambda: RedisStore(cluster_nodes=CLUSTER_NODES)
    shared = request.getfixturevalue("cassandra_store")
    return lambda: shared


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def open_store(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Opener]:
    """Opens clients of one backend; every client but the shared Cassandra one is closed after the test."""
    make = opener_for(backend, tmp_path, request)
    opened: list[BlockStore] = []

    def opener() -> BlockStore:
        store = make()
        if store not in opened:
            opened.append(store)
        return store

    yield opener
    if backend != "cassandra":
        for store in opened:
            store.close()


@pytest.fixture
def store(open_store: Opener) -> BlockStore:
    return open_store()


@pytest.fixture
def entity(store: BlockStore) -> Entity:
    """A fresh entity, its tables created."""
    e = make_entity()
    store.ensure([e])
    return e
