"""Redis specifics: the value layout, key expiry, namespace, errors, round trips, process writers."""

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
    return store._connect()[0]


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


def test_writes_are_packed_not_sent_through_redis_py(
    redis_store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # redis-py's pipeline costs ~11 us of client CPU per key standalone and ~160 on a cluster; it is
    # only the fallback after a cluster redirection.
    def refuse(*args: Any) -> None:
        raise AssertionError("redis-py pipeline used")

    monkeypatch.setattr(redis_store, "_write_pipelined", refuse)
    entity = make_entity()
    keys = [(f"p{i}", "r") for i in range(200)]
    writes = [BlockWrite(k, fg, make_block(i + fg)) for i, k in enumerate(keys) for fg in (1, 2)]
    writes.append(BlockWrite(keys[0], 1, make_block(99)))  # a later write of the same (key, FG) wins
    redis_store.write(entity, writes)
    want = [[make_block(i + 1), make_block(i + 2)] for i in range(len(keys))]
    want[0][0] = make_block(99)
    assert redis_store.read(entity, keys, [1, 2]) == want


def test_cluster_write_follows_a_moved_slot() -> None:
    """A stale slot map answers MOVED: writes and reads fall back to redis-py, which follows it."""
    require_service("redis-cluster", CLUSTER, "scripts/services/redis-cluster start")
    from redis.crc import key_slot

    store = RedisStore(cluster_nodes=CLUSTER_NODES)
    try:
        entity = make_entity()
        keys = [(f"m{i}", "r") for i in range(30)]
        store.write(entity, [BlockWrite(k, 1, make_block(0)) for k in keys])  # connects, reads the map
        manager = raw(store).nodes_manager
        slot = key_slot(name(entity, keys[0]).encode())
        owner = manager.slots_cache[slot][0]
        other = next(
            n for n in manager.nodes_cache.values() if n.name != owner.name and n.server_type == "primary"
        )
        manager.slots_cache[slot] = [other]  # as if the slot had moved since the map was read
        store.write(entity, [BlockWrite(k, 1, make_block(i)) for i, k in enumerate(keys)])
        assert store.read(entity, keys, [1]) == [[make_block(i)] for i in range(len(keys))]
        assert manager.slots_cache[slot][0].name == owner.name  # the fallback refreshed the map
        manager.slots_cache[slot] = [other]
        assert store.read(entity, keys, [1]) == [[make_block(i)] for i in range(len(keys))]  # reads too
        assert manager.slots_cache[slot][0].name == owner.name
    finally:
        store.close()


def test_cluster_read_is_one_round_trip_per_node(monkeypatch: pytest.MonkeyPatch) -> None:
    require_service("redis-cluster", CLUSTER, "scripts/services/redis-cluster start")
    import redis.connection

    store = RedisStore(cluster_nodes=CLUSTER_NODES)
    entity = make_entity()
    keys = [(f"user{i}", "r") for i in range(300)]  # spread over every node's slots
    store.write(entity, [BlockWrite(k, 1, make_block(i)) for i, k in enumerate(keys)])
    sends: list[int] = []
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        sends.append(self.port)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    got = store.read(entity, keys, [1])
    monkeypatch.undo()
    store.close()
    assert got == [[make_block(i)] for i in range(len(keys))]
    assert sorted(sends) == sorted(p for _, p in CLUSTER)


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
