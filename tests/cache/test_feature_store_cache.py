"""FeatureStore with both cache tiers: read path, strong and eventual persist, Redis killed mid-run, and
invalidation across processes (embedded SQLite log and Redis pub/sub)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from online_feature_store.feature_store import FeatureStore
from online_feature_store.metrics import FeatureStoreMetrics
from online_feature_store.results import FOUND, MISSING
from tests.cache.conftest import (
    CLUSTER,
    CLUSTER_URL,
    REDIS,
    REDIS_URL,
    PrivateRedis,
    make_registry,
    registry_doc,
    require_service,
)

FEATURES = {"g1": ["f0", "f1", "f2", "f3"], "g2": ["f0", "f1", "f2", "f3"]}


class Recorder(FeatureStoreMetrics):
    """Counts what the tests look at."""

    def __init__(self) -> None:
        self.lookups: dict[str, list[int]] = {"in_process": [0, 0], "distributed": [0, 0]}
        self.store_reads = 0
        self.breaker: list[str] = []
        self.errors = 0

    def store_call(self, store_id: str, op: str, seconds: float, failed: bool) -> None:
        if op == "read":
            self.store_reads += 1

    def cache_lookup(self, tier: str, entity: str, hits: int, misses: int) -> None:
        self.lookups[tier][0] += hits
        self.lookups[tier][1] += misses

    def cache_breaker(self, tier: str, state: str) -> None:
        self.breaker.append(state)

    def cache_error(self, tier: str, op: str) -> None:
        self.errors += 1


def rows(n: int, base: float) -> Any:
    return np.arange(n * 4, dtype=np.float32).reshape(n, 4) + np.float32(base)


def wait_for(check: Any, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def redis_url() -> str:
    require_service("Redis", [REDIS], "scripts/services/redis start")
    return REDIS_URL


@pytest.fixture(params=["redis", "redis_cluster"])
def any_redis(request: pytest.FixtureRequest) -> str:
    if request.param == "redis":
        require_service("Redis", [REDIS], "scripts/services/redis start")
        return REDIS_URL
    require_service("Redis Cluster", CLUSTER, "scripts/services/redis-cluster start")
    return CLUSTER_URL


def open_fs(tmp: Path, registry: str, remote: Any = None, **kw: Any) -> tuple[FeatureStore, Recorder]:
    rec = Recorder()
    fs = FeatureStore(
        registry, data_directory=tmp, distributed_cache=remote, metrics=rec, poll_interval=0.05, **kw
    )
    return fs, rec


@pytest.fixture
def registry(tmp_path: Path) -> str:
    return make_registry(tmp_path, registry_doc())


def test_tiers_in_order_and_strong_persist(tmp_path: Path, registry: str, any_redis: str) -> None:
    keys = [f"u{i}" for i in range(10)]
    writer, w = open_fs(tmp_path, registry, any_redis)
    reader, r = open_fs(tmp_path, registry, any_redis)
    try:
        writer.persist("user", "g1", keys, rows(10, 0.0))
        first = writer.retrieve("user", [*keys, "nobody"], FEATURES)
        assert list(first.status["g1"]) == [FOUND] * 10 + [MISSING]
        assert w.store_reads == 1
        assert writer._caches.remote is not None
        assert writer._caches.remote.wait_backfills()
        # another FeatureStore (its own in-process cache) is served by the distributed cache
        got = reader.retrieve("user", [*keys, "nobody"], FEATURES)
        np.testing.assert_array_equal(got.values["g1"], first.values["g1"])
        assert list(got.status["g2"]) == [MISSING] * 11  # negative entries travel too
        assert r.store_reads == 0
        assert r.lookups["distributed"] == [11, 0]
        again = reader.retrieve("user", keys, FEATURES)  # now from its in-process cache
        np.testing.assert_array_equal(again.values["g1"], first.values["g1"][:10])
        assert r.store_reads == 0
        # strong persist: the writer's tombstones and pub/sub reach the reader's caches
        writer.persist("user", "g1", keys[:3], rows(3, 100.0))
        wait_for(
            lambda: reader.retrieve("user", keys[:1], FEATURES).values["g1"][0][0] == 100.0,
            "the reader to see the new value",
        )
        fresh = reader.retrieve("user", keys[:3], FEATURES)
        np.testing.assert_array_equal(fresh.values["g1"], rows(3, 100.0))
        # eventual persist: both tiers keep the old value until their TTL
        writer.persist("user", "g1", keys[5:6], rows(1, 500.0), invalidate=False)
        assert writer.retrieve("user", keys[5:6], FEATURES).values["g1"][0][0] == first.values["g1"][5][0]
        assert reader.retrieve("user", keys[5:6], FEATURES).values["g1"][0][0] == first.values["g1"][5][0]
    finally:
        writer.close()
        reader.close()


def test_unflagged_fg_skips_the_caches(tmp_path: Path, registry: str, redis_url: str) -> None:
    fs, rec = open_fs(tmp_path, registry, redis_url)
    try:
        fs.persist("user", "plain", ["a"], rows(1, 1.0))
        for _ in range(2):
            fs.retrieve("user", ["a"], {"plain": ["f0"], "g1": ["f0"]})
        assert rec.store_reads == 2
        assert rec.lookups["distributed"] == [0, 0]
    finally:
        fs.close()


def test_redis_killed_mid_run(tmp_path: Path, registry: str, private_redis: PrivateRedis) -> None:
    url = f"{private_redis.url}?failure_threshold=2&reset_seconds=0.2"
    # no in-process cache: every read goes through the distributed tier
    fs, rec = open_fs(tmp_path, registry, url, cache_bytes=0)
    keys = [f"u{i}" for i in range(50)]
    try:
        fs.persist("user", "g1", keys, rows(50, 0.0))
        fs.retrieve("user", keys, FEATURES)
        assert fs._caches.remote is not None
        assert fs._caches.remote.wait_backfills()
        fs.retrieve("user", keys, FEATURES)
        assert rec.lookups["distributed"][0] == 50
        reads_before = rec.store_reads

        private_redis.kill()
        for _ in range(5):  # served by the store, right values, never defaults
            got = fs.retrieve("user", keys, FEATURES)
            np.testing.assert_array_equal(got.values["g1"], rows(50, 0.0))
            assert list(got.status["g1"]) == [FOUND] * 50
        assert rec.breaker[-1] == "open"
        assert rec.store_reads == reads_before + 5
        # a strong persist while Redis is down: the store has it, the invalidation waits
        fs.persist("user", "g1", keys[:5], rows(5, 100.0))
        assert fs._caches.remote.pending_invalidations == 5
        np.testing.assert_array_equal(fs.retrieve("user", keys[:5], FEATURES).values["g1"], rows(5, 100.0))

        private_redis.start()  # same port, empty
        wait_for(
            lambda: fs.retrieve("user", keys, FEATURES) is not None and rec.breaker[-1] == "closed", "close"
        )
        assert fs._caches.remote.pending_invalidations == 0
        assert fs._caches.remote.wait_backfills()
        hits = rec.lookups["distributed"][0]
        reads = rec.store_reads
        got = fs.retrieve("user", keys, FEATURES)
        assert rec.lookups["distributed"][0] == hits + 50  # the cache is used again
        assert rec.store_reads == reads
        np.testing.assert_array_equal(got.values["g1"][:5], rows(5, 100.0))
        np.testing.assert_array_equal(got.values["g1"][5:], rows(50, 0.0)[5:])
        assert "half-open" in rec.breaker
    finally:
        fs.close()


def _worker(tmp: Path, registry: str, remote: str | None) -> subprocess.Popen[str]:
    args = [sys.executable, str(Path(__file__).with_name("worker.py")), str(tmp), registry]
    if remote:
        args.append(remote)
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _ask(proc: subprocess.Popen[str], key: str) -> dict[str, Any]:
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write(f"read {key}\n")
    proc.stdin.flush()
    answer: dict[str, Any] = json.loads(proc.stdout.readline())
    return answer


def _quit(proc: subprocess.Popen[str]) -> None:
    """Stops a worker started by :func:`_worker`."""
    assert proc.stdin is not None
    proc.stdin.write("quit\n")
    proc.stdin.close()
    proc.wait(timeout=30)
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.mark.parametrize("bus", ["sqlite_log", "redis_pubsub"])
def test_cross_process_invalidation(tmp_path: Path, bus: str) -> None:
    remote = None
    if bus == "redis_pubsub":
        require_service("Redis", [REDIS], "scripts/services/redis start")
        remote = REDIS_URL
    registry = make_registry(tmp_path, registry_doc(distributed=bus == "redis_pubsub"))
    writer, _ = open_fs(tmp_path, registry, remote)
    writer.persist("user", "g1", ["x"], rows(1, 1.0))
    proc = _worker(tmp_path, registry, remote)
    try:
        # the worker's subscription may take a moment to be confirmed: until then it bypasses its cache
        wait_for(lambda: _ask(proc, "x")["store_reads"] == _ask(proc, "x")["store_reads"], "worker caching")
        cached = _ask(proc, "x")
        assert cached["values"] == [1.0, 2.0, 3.0, 4.0]
        assert _ask(proc, "x")["store_reads"] == cached["store_reads"]  # served from its in-process cache
        writer.persist("user", "g1", ["x"], rows(1, 10.0))
        # the entity's in-process TTL is 600 s: only the invalidation can make this happen
        wait_for(lambda: _ask(proc, "x")["values"] == [10.0, 11.0, 12.0, 13.0], "the other process to see it")
    finally:
        _quit(proc)
        writer.close()


def test_broken_subscription_stops_in_process_caching(
    tmp_path: Path, registry: str, private_redis: PrivateRedis
) -> None:
    """Invalidations published while the subscription is down are lost: the in-process cache is cleared
    and bypassed until it is back, so it never serves what another process may have changed meanwhile."""
    fs, rec = open_fs(tmp_path, registry, f"{private_redis.url}?reset_seconds=0.2")
    try:
        fs.persist("user", "g1", ["a"], rows(1, 1.0))
        bus = fs._caches.bus
        assert bus is not None
        fs.retrieve("user", ["a"], FEATURES)
        wait_for(lambda: bus.healthy, "the subscription")
        fs.retrieve("user", ["a"], FEATURES)
        cache = fs._caches.local
        assert cache is not None
        assert len(cache) == 1
        private_redis.kill()
        wait_for(lambda: not bus.healthy, "the bus to notice")
        assert len(cache) == 0
        reads = rec.store_reads
        got = fs.retrieve("user", ["a"], FEATURES)
        np.testing.assert_array_equal(got.values["g1"], rows(1, 1.0))
        assert rec.store_reads == reads + 1
        assert len(cache) == 0  # not filled while invalidations cannot arrive
        private_redis.start()
        wait_for(lambda: bus.healthy, "the subscription to come back")
        fs.retrieve("user", ["a"], FEATURES)
        assert len(cache) == 1
    finally:
        fs.close()


def test_writer_without_a_cache_still_invalidates(tmp_path: Path) -> None:
    """A process that only writes (no in-process cache, e.g. an ingestion worker) still tells the others."""
    registry = make_registry(tmp_path, registry_doc(distributed=False))
    reader, rec = open_fs(tmp_path, registry)
    writer, _ = open_fs(tmp_path, registry, cache_bytes=0)
    try:
        writer.persist("user", "g1", ["x"], rows(1, 1.0))
        reader.retrieve("user", ["x"], FEATURES)
        reads = rec.store_reads
        reader.retrieve("user", ["x"], FEATURES)
        assert rec.store_reads == reads  # cached
        writer.persist("user", "g1", ["x"], rows(1, 7.0))
        wait_for(lambda: reader.retrieve("user", ["x"], FEATURES).values["g1"][0][0] == 7.0, "invalidation")
    finally:
        writer.close()
        reader.close()
