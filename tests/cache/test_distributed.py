"""The distributed cache tier against real Redis, standalone (16379) and a 3-master cluster (17001-17003)."""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.crc import key_slot

from online_feature_store import InvalidInputError
from online_feature_store.cache.redis_cache import DistributedCache
from online_feature_store.store.keys import encode_key
from tests.cache.conftest import CLUSTER, CLUSTER_URL, REDIS, REDIS_URL, entity_label, require_service
from tests.store.conftest import PrivateCluster, make_block

FGS = [1, 2, 3]


@pytest.fixture(params=["redis", "redis_cluster"])
def cache(request: pytest.FixtureRequest) -> Iterator[DistributedCache]:
    if request.param == "redis":
        require_service("Redis", [REDIS], "scripts/services/redis start")
        c = DistributedCache.from_url(REDIS_URL, socket_timeout=1.0, connect_timeout=1.0)
    else:
        require_service("Redis Cluster", CLUSTER, "scripts/services/redis-cluster start")
        c = DistributedCache.from_url(CLUSTER_URL, socket_timeout=1.0, connect_timeout=1.0)
    yield c
    c.close()


def names(n: int) -> list[str]:
    return [encode_key((f"k{i}",)) for i in range(n)]


def fill(
    cache: DistributedCache, entity: str, keys: list[str], fg_ids: list[int], seed: float = 1.0
) -> list[bytes]:
    """Reads (misses), backfills blocks made from ``seed`` and waits for the backfill; returns them."""
    lookup = cache.get_many(entity, keys, fg_ids)
    assert lookup is not None
    blocks = [make_block(seed + i + f) for i in range(len(keys)) for f in fg_ids]
    cache.backfill(entity, keys, lookup.seen, lookup.at, fg_ids, blocks, 600, 10)
    assert cache.wait_backfills()
    return blocks


def test_miss_backfill_hit(cache: DistributedCache) -> None:
    entity, keys = entity_label(), names(20)
    lookup = cache.get_many(entity, keys, FGS)
    assert lookup is not None
    assert lookup.rows == [None] * 20
    blocks = fill(cache, entity, keys, FGS)
    got = cache.get_many(entity, keys + keys[:3], FGS)  # duplicates allowed
    assert got is not None
    assert [b for row in got.rows[:20] for b in row or []] == blocks
    assert got.rows[20:] == got.rows[:3]
    # a subset of the cached FGs, in another order, is a hit too
    sub = cache.get_many(entity, keys[:1], [3, 1])
    assert sub is not None
    assert sub.rows == [[blocks[2], blocks[0]]]


def test_negative_entries_are_hits(cache: DistributedCache) -> None:
    entity, keys = entity_label(), names(2)
    lookup = cache.get_many(entity, keys, FGS)
    assert lookup is not None
    present = make_block(5.0)
    cache.backfill(entity, keys, lookup.seen, lookup.at, FGS, [b"", present, b"", b"", b"", b""], 600, 0)
    assert cache.wait_backfills()
    got = cache.get_many(entity, keys, FGS)
    assert got is not None
    assert got.rows == [[b"", present, b""], [b"", b"", b""]]


def test_fg_union_per_key(cache: DistributedCache) -> None:
    entity, keys = entity_label(), names(3)
    first = fill(cache, entity, keys, [1])
    partial = cache.get_many(entity, keys, [1, 2])
    assert partial is not None
    assert partial.rows == [None, None, None]  # FG 2 not cached yet
    second = [make_block(50.0 + i) for i in range(3)]
    cache.backfill(entity, keys, partial.seen, partial.at, [2], second, 600, 0)
    assert cache.wait_backfills()
    both = cache.get_many(entity, keys, [1, 2])
    assert both is not None
    assert both.rows == [[first[i], second[i]] for i in range(3)]


def test_ttl_with_jitter(cache: DistributedCache) -> None:
    entity, keys = entity_label(), names(30)
    lookup = cache.get_many(entity, keys, [1])
    assert lookup is not None
    started = time.monotonic()
    cache.backfill(entity, keys, lookup.seen, lookup.at, [1], [make_block(1.0)] * 30, 100, 20)
    assert cache.wait_backfills()
    client = cache.client()
    ttls = [client.pttl(cache.prefix(entity) + k) for k in keys]
    # a TTL drawn at the low end has run down by the time it is read back
    elapsed_ms = (time.monotonic() - started) * 1000
    assert all(80_000 - elapsed_ms <= t <= 120_000 for t in ttls), ttls
    assert len(set(ttls)) > 1  # jittered, not one expiry for all


def test_invalidation_and_stale_backfill(cache: DistributedCache) -> None:
    entity, keys = entity_label(), names(4)
    fill(cache, entity, keys, FGS)
    # a reader misses key 0..3 of FG 1..3 under another entity state: simulate the race on a fresh read
    before = cache.get_many(entity, keys, [1, 2, 3, 4])  # FG 4 not cached: all miss, values seen
    assert before is not None
    assert before.rows == [None] * 4
    assert cache.invalidate(entity, keys[:2])
    after = cache.get_many(entity, keys, FGS)
    assert after is not None
    assert after.rows[:2] == [None, None]  # invalidated
    assert after.rows[2] is not None
    # the slow reader's backfill (read before the write) must not put its old blocks back
    old = [make_block(-1.0)] * 16
    cache.backfill(entity, keys, before.seen, before.at, [1, 2, 3, 4], old, 600, 0)
    assert cache.wait_backfills()
    again = cache.get_many(entity, keys, [1, 2, 3, 4])
    assert again is not None
    assert again.rows[:2] == [None, None]
    # keys 2, 3 were not written: their backfill went through (their value was unchanged)
    assert again.rows[2] is not None
    # a reader that saw the tombstone (read after the write) may fill it
    fresh = [make_block(9.0)] * 6
    cache.backfill(entity, keys[:2], after.seen[:2], after.at, FGS, fresh, 600, 0)
    assert cache.wait_backfills()
    last = cache.get_many(entity, keys[:2], FGS)
    assert last is not None
    assert last.rows == [fresh[:3], fresh[3:]]


def test_namespace_never_touches_the_store(cache: DistributedCache) -> None:
    entity = entity_label()
    assert cache.prefix(entity) == f"ofs:c:{entity}:"


@pytest.fixture
def private_cluster(tmp_path: Path) -> Iterator[PrivateCluster]:
    cluster = PrivateCluster(tmp_path)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


DATA_COMMANDS = ("get", "mget", "set", "publish", "eval", "evalsha")


def commandstats(cluster: PrivateCluster) -> collections.Counter[str]:
    """Calls per data command, summed over the nodes (connection setup and these probes left out)."""
    total: collections.Counter[str] = collections.Counter()
    for port in cluster.ports:
        for name, stats in cluster.client(port).info("commandstats").items():
            if name.removeprefix("cmdstat_") in DATA_COMMANDS:
                total[name.removeprefix("cmdstat_")] += stats["calls"]
    return total


def test_commands_per_read_invalidation_and_backfill(private_cluster: PrivateCluster) -> None:
    """A read is one MGET per slot (never one GET per key), an invalidation one SET per key plus one
    PUBLISH, a backfill one compare-and-set per distinct key: nothing per FG, nothing repeated."""
    cache = DistributedCache(cluster_nodes=private_cluster.nodes, socket_timeout=1.0, connect_timeout=1.0)
    try:
        entity, keys = entity_label(), names(200)
        fill(cache, entity, keys[:100], FGS)
        slots = {key_slot((cache.prefix(entity) + k).encode()) for k in keys}
        before = commandstats(private_cluster)
        got = cache.get_many(entity, keys + keys[:10], FGS)
        assert got is not None
        assert sum(r is not None for r in got.rows) == 110
        assert commandstats(private_cluster) - before == collections.Counter({"mget": len(slots)})
        before = commandstats(private_cluster)
        assert cache.invalidate(entity, keys + keys[:5], "ofs:c:test-channel")
        assert commandstats(private_cluster) - before == collections.Counter({"set": 200, "publish": 1})
        before = commandstats(private_cluster)
        fill(cache, entity, keys[:50] * 2, FGS)
        # (redis counts a script's inner GET and SET as commands too)
        assert (commandstats(private_cluster) - before)["evalsha"] == 50
    finally:
        cache.close()


def test_bad_urls() -> None:
    with pytest.raises(InvalidInputError, match="unknown options"):
        DistributedCache.from_url("redis://127.0.0.1:1/0?bogus=1")
    with pytest.raises(InvalidInputError, match="not a number"):
        DistributedCache.from_url("redis://127.0.0.1:1/0?socket_timeout=fast")
    with pytest.raises(InvalidInputError, match="expected redis"):
        DistributedCache.from_url("http://127.0.0.1:1/")


def test_cluster_follows_a_moved_slot(private_cluster: PrivateCluster) -> None:
    """A slot moved since the client read the slot map answers MOVED: reads and tombstones follow it."""
    cache = DistributedCache(cluster_nodes=private_cluster.nodes, socket_timeout=1.0, connect_timeout=1.0)
    try:
        entity, keys = entity_label(), names(30)
        blocks = fill(cache, entity, keys, [1])
        slot = key_slot((cache.prefix(entity) + keys[0]).encode())
        owner = private_cluster.owner(slot)
        private_cluster.move_slot(slot, next(p for p in private_cluster.ports if p != owner))
        got = cache.get_many(entity, keys, [1])
        assert got is not None
        assert [row[0] if row else None for row in got.rows] == blocks
        private_cluster.move_slot(slot, owner)
        assert cache.invalidate(entity, keys[:1])
        after = cache.get_many(entity, keys[:2], [1])
        assert after is not None
        assert after.rows[0] is None
        assert after.rows[1] is not None
    finally:
        cache.close()


def test_cluster_node_down_is_a_miss_of_the_tier_then_the_breaker_opens(
    private_cluster: PrivateCluster,
) -> None:
    cache = DistributedCache(
        cluster_nodes=private_cluster.nodes, socket_timeout=0.5, connect_timeout=0.5, failure_threshold=2
    )
    events: list[tuple[str, str]] = []

    class Listener:
        def cache_error(self, tier: str, op: str) -> None:
            events.append(("error", op))

        def cache_breaker(self, tier: str, state: str) -> None:
            events.append(("breaker", state))

        def cache_dropped(self, tier: str, op: str) -> None:
            events.append(("dropped", op))

    cache.listener = Listener()
    try:
        entity, keys = entity_label(), names(100)  # on every node
        fill(cache, entity, keys, [1])
        private_cluster.kill(private_cluster.ports[1])
        assert cache.get_many(entity, keys, [1]) is None  # never a partial answer
        assert cache.get_many(entity, keys, [1]) is None
        assert events == [("error", "read"), ("breaker", "open"), ("error", "read")]
        assert not cache.healthy
        assert cache.get_many(entity, keys, [1]) is None  # refused by the open breaker
        assert not cache.invalidate(entity, keys[:3])  # kept for replay
        assert cache.pending_invalidations == 3
    finally:
        cache.close()
