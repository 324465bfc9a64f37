"""Redis specifics: the value layout, key expiry, namespace, errors, cluster fan-out and failures, process
writers. The store is native (redis-rs); the tests look at Redis through a redis-py client of their own."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from online_feature_store import formats
from online_feature_store.errors import CorruptBlockError, UnavailableError
from online_feature_store.registry.model import Entity
from online_feature_store.store.base import BlockWrite
from online_feature_store.store.keys import namespaced_key
from online_feature_store.store.redis_store import RedisStore
from tests.store.conftest import (
    CLUSTER,
    CLUSTER_NODES,
    REDIS,
    REDIS_URL,
    PrivateCluster,
    closed_port,
    make_block,
    make_entity,
    require_service,
)

WORKER = str(Path(__file__).with_name("worker.py"))


@pytest.fixture(params=["redis", "redis_cluster"])
def redis_store(request: pytest.FixtureRequest) -> Iterator[RedisStore]:
    if request.param == "redis":
        require_service("redis", [REDIS], "scripts/services/redis start")
        store = RedisStore(REDIS_URL)
    else:
        require_service("redis-cluster", CLUSTER, "scripts/services/redis-cluster start")
        store = RedisStore(cluster_nodes=CLUSTER_NODES)
    yield store
    store.close()


def raw(store: RedisStore) -> Any:
    """A redis-py client of the store's Redis (the test's own, not the store's connections)."""
    client = getattr(store, "_test_client", None)
    if client is None:
        import redis
        from redis.cluster import ClusterNode, RedisCluster

        if store.url is not None:
            client = redis.Redis.from_url(store.url)
        else:
            nodes = [ClusterNode(h, int(p)) for h, p in (n.rsplit(":", 1) for n in store.cluster_nodes)]  # type: ignore[no-untyped-call]
            client = RedisCluster(startup_nodes=nodes)
        store._test_client = client  # type: ignore[attr-defined]
    return client


def name(entity: Entity, key: tuple[str, ...]) -> str:
    return namespaced_key("s", entity.label, key)


def test_value_is_one_csdb_per_key(redis_store: RedisStore) -> None:
    entity = make_entity()
    key = ("u1", "eu")
    redis_store.write(entity, [BlockWrite(key, fg, make_block(fg)) for fg in (1, 2, 3)])
    value = raw(redis_store).get(f"ofs:s:{entity.label}:u1|eu")
    assert value[0] == 1
    assert sorted(formats.csdb_entries(value)) == [(fg, make_block(fg)) for fg in (1, 2, 3)]
    big = make_block(1, n=18_000, compress=False)
    redis_store.write(entity, [BlockWrite(key, 2, big)])
    value = raw(redis_store).get(name(entity, key))
    assert value[0] == 2  # u32 lengths once a block is over 65,535 bytes
    assert dict(formats.csdb_entries(value)) == {1: make_block(1), 2: big, 3: make_block(3)}


def test_key_expiry_follows_the_latest_fg_expiry(redis_store: RedisStore) -> None:
    entity = make_entity()
    client = raw(redis_store)
    now = int(time.time())
    early, late = now + 100, now + 300
    k = ("k", "r")
    redis_store.write(entity, [BlockWrite(k, 1, make_block(1, expiry_at=early), early)])
    assert client.pexpiretime(name(entity, k)) == (early + 1) * 1000
    redis_store.write(entity, [BlockWrite(k, 2, make_block(2, expiry_at=late), late)])
    assert client.pexpiretime(name(entity, k)) == (late + 1) * 1000
    # the script reads the expiry of stored entries from their PSDB header
    redis_store.write(entity, [BlockWrite(k, 2, make_block(3, expiry_at=early), early)])
    assert client.pexpiretime(name(entity, k)) == (early + 1) * 1000
    redis_store.write(entity, [BlockWrite(k, 3, make_block(4))])
    assert client.pexpiretime(name(entity, k)) == -1  # one FG never expires: neither does the key
    redis_store.write(entity, [BlockWrite(k, 3, make_block(5, expiry_at=late), late)])
    assert client.pexpiretime(name(entity, k)) == (late + 1) * 1000


def test_expired_entries_are_dropped_on_write(redis_store: RedisStore) -> None:
    entity = make_entity()
    client = raw(redis_store)
    k = ("k", "r")
    past = int(time.time()) - 5
    # an entry whose header says it expired (as if written long ago) is removed by the next merge
    old_value = formats.csdb_encode([(1, make_block(1, expiry_at=int(time.time()) + 1)), (2, make_block(2))])
    client.set(name(entity, k), old_value)
    time.sleep(2.1)
    redis_store.write(entity, [BlockWrite(k, 3, make_block(3))])
    assert dict(formats.csdb_entries(client.get(name(entity, k)))) == {2: make_block(2), 3: make_block(3)}
    # a write whose blocks are all expired leaves no key behind
    k2 = ("k2", "r")
    redis_store.write(entity, [BlockWrite(k2, 1, make_block(1), past)])
    assert client.exists(name(entity, k2)) == 0


def test_store_and_cache_namespaces_never_collide(redis_store: RedisStore) -> None:
    entity = make_entity()
    client = raw(redis_store)
    k = ("u", "r")
    cache_name = namespaced_key("c", entity.label, k)
    client.set(cache_name, b"cache value")
    redis_store.write(entity, [BlockWrite(k, 1, make_block(1))])
    client.delete(cache_name)  # what a cache invalidation does
    assert redis_store.read(entity, [k], [1]) == [[make_block(1)]]
    # an entity label holding ':' cannot alias another entity's keys
    a, b = make_entity("x:y"), make_entity("x")
    redis_store.write(a, [BlockWrite(("z", "w"), 1, make_block(1))])
    assert redis_store.read(b, [("y:z", "w")], [1]) == [[b""]]


def test_corrupt_value_is_an_error_not_a_miss(redis_store: RedisStore) -> None:
    entity = make_entity()
    k = ("k", "r")
    raw(redis_store).set(name(entity, k), b"\x07garbage")
    with pytest.raises(CorruptBlockError):
        redis_store.read(entity, [k], [1])
    with pytest.raises(CorruptBlockError, match="CSDB layout 7"):
        redis_store.write(entity, [BlockWrite(k, 1, make_block(1))])
    assert raw(redis_store).get(name(entity, k)) == b"\x07garbage"  # left untouched


def test_script_is_reloaded_after_a_flush(redis_store: RedisStore) -> None:
    entity = make_entity()
    redis_store.write(entity, [BlockWrite(("a", "r"), 1, make_block(1))])
    raw(redis_store).script_flush()  # what a Redis restart does
    redis_store.write(entity, [BlockWrite((f"k{i}", "r"), 1, make_block(i)) for i in range(20)])
    assert redis_store.read(entity, [(f"k{i}", "r") for i in range(20)], [1]) == [
        [make_block(i)] for i in range(20)
    ]


def test_many_keys_in_one_write_and_a_later_write_wins(redis_store: RedisStore) -> None:
    entity = make_entity()
    keys = [(f"p{i}", "r") for i in range(200)]
    writes = [BlockWrite(k, fg, make_block(i + fg)) for i, k in enumerate(keys) for fg in (1, 2)]
    writes.append(BlockWrite(keys[0], 1, make_block(99)))  # a later write of the same (key, FG) wins
    redis_store.write(entity, writes)
    want = [[make_block(i + 1), make_block(i + 2)] for i in range(len(keys))]
    want[0][0] = make_block(99)
    assert redis_store.read(entity, keys, [1, 2]) == want


def test_values_written_by_earlier_versions_are_read(redis_store: RedisStore) -> None:
    """The names and bytes are the Python store's: a value it wrote (any CSDB layout) is read as is."""
    entity = make_entity()
    k = ("old", "eu")
    raw(redis_store).set(name(entity, k), formats.csdb_encode([(2, make_block(2)), (1, make_block(1))]))
    big = make_block(7, n=18_000, compress=False)
    k2 = ("old2", "eu")
    raw(redis_store).set(name(entity, k2), formats.csdb_encode([(3, big), (1, b"")]))
    assert redis_store.read(entity, [k, k2, k], [1, 2, 3]) == [
        [make_block(1), make_block(2), b""],
        [b"", b"", big],
        [make_block(1), make_block(2), b""],
    ]
    # a write merges into it, leaving the other FGs as they were
    redis_store.write(entity, [BlockWrite(k, 3, make_block(3))])
    assert redis_store.read(entity, [k], [1, 2, 3]) == [[make_block(1), make_block(2), make_block(3)]]


def test_cluster_follows_a_moved_slot(private_cluster: PrivateCluster) -> None:
    """A slot moved after the store read the slot map: Redis answers MOVED, the client follows it."""
    from redis.crc import key_slot

    store = RedisStore(cluster_nodes=private_cluster.nodes)
    try:
        entity = make_entity()
        keys = [(f"m{i}", "r") for i in range(30)]
        store.write(entity, [BlockWrite(k, 1, make_block(0)) for k in keys])  # connects, reads the map
        slot = key_slot(name(entity, keys[0]).encode())
        owner = private_cluster.owner(slot)
        private_cluster.move_slot(slot, next(p for p in private_cluster.ports if p != owner))
        store.write(entity, [BlockWrite(k, 1, make_block(i)) for i, k in enumerate(keys)])
        assert store.read(entity, keys, [1]) == [[make_block(i)] for i in range(len(keys))]
        private_cluster.move_slot(slot, owner)
        assert store.read(entity, keys, [1]) == [[make_block(i)] for i in range(len(keys))]  # reads too
    finally:
        store.close()


def test_cluster_read_is_one_mget_per_slot(private_cluster: PrivateCluster) -> None:
    """Keys spread over every node are read by one MGET per slot (never one GET per key), every node
    asked within the one read."""
    from redis.crc import key_slot

    store = RedisStore(cluster_nodes=private_cluster.nodes)
    entity = make_entity()
    keys = [(f"user{i}", "r") for i in range(300)] + [(f"{{tag}}{i}", "r") for i in range(20)]
    store.write(entity, [BlockWrite(k, 1, make_block(i)) for i, k in enumerate(keys)])

    def mget_calls() -> dict[int, int]:
        stats = {p: private_cluster.client(p).info("commandstats") for p in private_cluster.ports}
        return {p: s.get("cmdstat_mget", {}).get("calls", 0) for p, s in stats.items()}

    before = mget_calls()
    got = store.read(entity, keys, [1])
    after = mget_calls()
    store.close()
    assert got == [[make_block(i)] for i in range(len(keys))]
    slots = {key_slot(name(entity, k).encode()) for k in keys}
    per_node = {p: after[p] - before[p] for p in private_cluster.ports}
    assert sum(per_node.values()) == len(slots) < len(keys)  # the 20 {tag} keys share one slot
    assert all(n > 0 for n in per_node.values())


def test_cluster_node_down_mid_read_is_unavailable_not_missing(private_cluster: PrivateCluster) -> None:
    store = RedisStore(
        cluster_nodes=private_cluster.nodes, connect_timeout=0.5, socket_timeout=0.5, retries=1
    )
    try:
        entity = make_entity()
        keys = [(f"d{i}", "r") for i in range(100)]  # on every node
        store.write(entity, [BlockWrite(k, 1, make_block(i)) for i, k in enumerate(keys)])
        assert store.read(entity, keys, [1]) == [[make_block(i)] for i in range(len(keys))]
        private_cluster.kill(private_cluster.ports[1])
        with pytest.raises(UnavailableError):
            store.read(entity, keys, [1])
        with pytest.raises(UnavailableError):
            store.write(entity, [BlockWrite(k, 1, make_block(0)) for k in keys])
    finally:
        store.close()


@pytest.mark.parametrize("target", ["redis", "redis_cluster"])
def test_processes_writing_different_fgs_lose_nothing(target: str) -> None:
    if target == "redis":
        require_service("redis", [REDIS], "scripts/services/redis start")
        settings = {"url": REDIS_URL}
        store = RedisStore(REDIS_URL)
    else:
        require_service("redis-cluster", CLUSTER, "scripts/services/redis-cluster start")
        settings = {"cluster_nodes": ",".join(CLUSTER_NODES)}
        store = RedisStore(cluster_nodes=CLUSTER_NODES)
    entity = make_entity()
    n_keys, rounds = 20, 150
    spec = json.dumps({"kind": "redis", "settings": settings})
    procs = [
        subprocess.Popen(
            [sys.executable, WORKER, "write-fg", spec, entity.label, str(n_keys), str(rounds), str(fg)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for fg in (1, 2, 3)
    ]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert [o.strip() for o in outs] == ["done"] * 3
    keys = [(f"k{i}", "r") for i in range(n_keys)]
    assert store.read(entity, keys, [1, 2, 3]) == [[make_block(rounds)] * 3 for _ in keys]
    store.close()


@pytest.mark.parametrize("target", ["url", "cluster"])
def test_unreachable_redis_raises_unavailable(target: str) -> None:
    port = closed_port()
    if target == "url":
        store = RedisStore(f"redis://127.0.0.1:{port}/0", connect_timeout=0.5, socket_timeout=0.5, retries=1)
    else:
        store = RedisStore(
            cluster_nodes=[f"127.0.0.1:{port}"], connect_timeout=0.5, socket_timeout=0.5, retries=1
        )
    entity = make_entity()
    started = time.monotonic()
    with pytest.raises(UnavailableError):
        store.read(entity, [("a", "b")], [1])
    with pytest.raises(UnavailableError):
        store.write(entity, [BlockWrite(("a", "b"), 1, make_block(1))])
    with pytest.raises(UnavailableError):
        store.ping()
    assert time.monotonic() - started < 30
    store.close()


def test_needs_exactly_one_address() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        RedisStore()
    with pytest.raises(ValueError, match="exactly one"):
        RedisStore(REDIS_URL, cluster_nodes=CLUSTER_NODES)


def test_store_recovers_after_redis_restarts(tmp_path: Path) -> None:
    """Redis down: every call is UnavailableError (never "missing"); back: the same store works again."""
    from tests.cache.conftest import PrivateRedis

    server = PrivateRedis(tmp_path)
    server.start()
    store = RedisStore(server.url, connect_timeout=0.5, socket_timeout=0.5, retries=2)
    try:
        entity = make_entity()
        store.write(entity, [BlockWrite(("a", "b"), 1, make_block(1))])
        server.kill()
        with pytest.raises(UnavailableError):
            store.read(entity, [("a", "b")], [1])
        with pytest.raises(UnavailableError):
            store.write(entity, [BlockWrite(("a", "b"), 1, make_block(2))])
        server.start()  # same port, empty (no persistence): the merge script is unknown there too
        # every connection finds the restart on its next use and reconnects: the retry succeeds
        for i in range(8):
            store.write(entity, [BlockWrite(("a", "b"), 1, make_block(i))])
            assert store.read(entity, [("a", "b")], [1]) == [[make_block(i)]]
    finally:
        store.close()
        server.kill()


def test_wait_replicas_refuses_an_unreplicated_write() -> None:
    """``wait_replicas``: a write no replica acknowledged in time fails (the standalone test Redis has no
    replica), naming the setting; with ``wait_replicas=0`` the same write is acknowledged."""
    require_service("redis", [REDIS], "scripts/services/redis start")
    entity = make_entity()
    key = ("waited", "eu")
    waiting = RedisStore(REDIS_URL, wait_replicas=1, wait_timeout=0.1)
    try:
        with pytest.raises(UnavailableError, match=r"0 replica\(s\) of the 1 asked \(wait_replicas\)"):
            waiting.write(entity, [BlockWrite(key, 1, make_block(1))])
    finally:
        waiting.close()
    plain = RedisStore(REDIS_URL)
    try:
        plain.write(entity, [BlockWrite(key, 1, make_block(2))])
        assert plain.read(entity, [key], [1]) == [[make_block(2)]]
    finally:
        plain.close()


def test_wait_settings_are_checked() -> None:
    from online_feature_store.errors import InvalidInputError
    from online_feature_store.store import settings_errors

    errors = settings_errors("redis", {"url": REDIS_URL, "wait_replicas": "one", "wait_timeout": "soon"})
    assert set(errors) == {"wait_replicas", "wait_timeout"}
    with pytest.raises(InvalidInputError, match="wait_timeout"):
        RedisStore(REDIS_URL, wait_timeout=0.0)
