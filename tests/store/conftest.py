"""Fixtures of the store contract suite: every test runs on SQLite, Redis (standalone and a 3-master
cluster) and Cassandra, each on its own namespace (a fresh entity label; a fresh SQLite file)."""

from __future__ import annotations

import shutil
import socket
import subprocess
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


def _cluster_port() -> int:
    """A free loopback port whose cluster bus port (+10000) is free too (ephemeral ports are too high)."""
    import random

    while True:
        port = random.randrange(20_000, 50_000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10_000))
            return port
        except OSError:
            continue


class PrivateCluster:
    """A 3-master Redis Cluster of this test alone (never the shared one), whose nodes the test may kill
    or whose slots it may move."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ports = [_cluster_port() for _ in range(3)]
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def nodes(self) -> list[str]:
        return [f"127.0.0.1:{p}" for p in self.ports]

    def start(self) -> None:
        server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if server is None or cli is None:
            require_service("redis-server binary", [("127.0.0.1", 0)], "scripts/services/redis start")
            raise AssertionError("unreachable")
        for port in self.ports:
            node_dir = self.directory / str(port)
            node_dir.mkdir()
            self.processes[port] = subprocess.Popen(
                [server, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", "nodes.conf", "--save", "", "--appendonly", "no"],
                cwd=node_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        for port in self.ports:
            self._wait(lambda p=port: self._reachable(p), f"node {port} did not start")
        subprocess.run(
            [cli, "--cluster", "create", *self.nodes, "--cluster-replicas", "0", "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60,
        )  # fmt: skip
        self._wait(self._ok, "the private cluster did not become ok")

    def client(self, port: int) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=port)

    def _ok(self) -> bool:
        import redis

        try:
            infos = [self.client(p).cluster("info") for p in self.ports]
        except redis.RedisError:
            return False
        return all(str(info.get("cluster_state")) == "ok" for info in infos)

    @staticmethod
    def _reachable(port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    @staticmethod
    def _wait(condition: Any, message: str) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.05)
        raise AssertionError(message)

    def owner(self, slot: int) -> int:
        """The port of the node serving ``slot``."""
        for start, end, primary, *_ in self.client(self.ports[0]).execute_command("CLUSTER SLOTS"):
            if start <= slot <= end:
                return int(primary[1])
        raise AssertionError(f"slot {slot} has no owner")

    def move_slot(self, slot: int, to: int) -> None:
        """Moves ``slot`` and its keys to the node on port ``to`` (what resharding does)."""
        source = self.owner(slot)
        src, dst = self.client(source), self.client(to)
        src_id, dst_id = (
            src.execute_command("CLUSTER MYID").decode(),
            dst.execute_command("CLUSTER MYID").decode(),
        )
        dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dst_id)
        while keys := src.execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
            src.execute_command("MIGRATE", "127.0.0.1", to, "", 0, 5000, "KEYS", *keys)
        for port in self.ports:
            self.client(port).execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)

    def kill(self, port: int) -> None:
        process = self.processes.pop(port)
        process.kill()
        process.wait()

    def stop(self) -> None:
        for port in list(self.processes):
            self.kill(port)


@pytest.fixture
def private_cluster(tmp_path: Path) -> Iterator[PrivateCluster]:
    cluster = PrivateCluster(tmp_path)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
