"""The native read path (``rust/src/tiers.rs`` through ``cache/tiers.py``): one call per request, no Python
store read or tier code per request, the GIL released while the stores answer; policy and FG flags choose
the tiers; lookups and store calls reach the metrics hooks; an invalidation racing a read wins."""

from __future__ import annotations

import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from online_feature_store._native import encode_retrieve_query
from online_feature_store.cache.redis_cache import DistributedCache
from online_feature_store.cache.tiers import CacheTiers, native_of
from online_feature_store.feature_store import FeatureStore
from online_feature_store.metrics import FeatureStoreMetrics
from online_feature_store.results import FOUND, MISSING
from online_feature_store.store.sqlite import SqliteStore
from tests.cache.conftest import REDIS, REDIS_URL, make_registry, registry_doc, require_service

FEATURES = {"g1": ["f0", "f1", "f2", "f3"], "g2": ["f0", "f1", "f2", "f3"]}


class Recorder(FeatureStoreMetrics):
    """What the native path reports through the hooks."""

    def __init__(self) -> None:
        self.lookups: dict[str, list[int]] = {"in_process": [0, 0], "distributed": [0, 0]}
        self.store_calls: list[tuple[str, str, bool]] = []
        self.requests = 0

    def request(self, entity: str, rows: int) -> None:
        self.requests += 1

    def store_call(self, store_id: str, op: str, seconds: float, failed: bool) -> None:
        assert seconds >= 0
        self.store_calls.append((store_id, op, failed))

    def cache_lookup(self, tier: str, entity: str, hits: int, misses: int) -> None:
        self.lookups[tier][0] += hits
        self.lookups[tier][1] += misses

    def reads(self) -> int:
        return sum(1 for _s, op, _f in self.store_calls if op == "read")


def no_python_read(*_args: Any, **_kw: Any) -> Any:
    raise AssertionError("the Python read path ran")


def rows(n: int, base: float) -> Any:
    return np.arange(n * 4, dtype=np.float32).reshape(n, 4) + np.float32(base)


@pytest.fixture
def native_fs(tmp_path: Path) -> Iterator[tuple[FeatureStore, Recorder]]:
    """A FeatureStore over the SQLite store with the in-process cache on (no distributed cache), whose
    Python read path fails if anything calls it."""
    registry = make_registry(tmp_path, registry_doc())
    rec = Recorder()
    fs = FeatureStore(registry, data_directory=tmp_path, metrics=rec, invalidation=False)
    fs.persist("user", "g1", ["u1", "u2"], rows(2, 0.0))
    fs.retrieve("user", ["u1"], {"plain": ["f0"]})  # opens the store (Python path, once)
    fs._caches.read = no_python_read  # type: ignore[method-assign]
    rec.__init__()  # type: ignore[misc]
    try:
        yield fs, rec
    finally:
        fs.close()


def test_one_native_call_reads_the_stores_then_serves_from_the_cache(native_fs: Any) -> None:
    fs, rec = native_fs
    first = fs.retrieve("user", ["u1", "u2", "nobody"], FEATURES)
    np.testing.assert_array_equal(first.values["g1"][:2], rows(2, 0.0))
    assert list(first.status["g1"]) == [FOUND, FOUND, MISSING]
    assert list(first.status["g2"]) == [MISSING] * 3
    assert rec.lookups["in_process"] == [0, 3]
    assert rec.store_calls == [("main", "read", False)]  # one read for both FGs of the one store
    # Every key from the cache now, the missing ones too (negative entries).
    again = fs.retrieve("user", ["nobody", "u2"], FEATURES)
    np.testing.assert_array_equal(again.values["g1"][1], rows(2, 0.0)[1])
    assert list(again.status["g1"]) == [MISSING, FOUND]
    assert rec.lookups["in_process"] == [2, 3]
    assert rec.reads() == 1
    # The wire path: the same tiers, the same cache.
    query = encode_retrieve_query("user", ["user_id"], [["u1"], ["u3"]], [("g1", ["f1"])])
    out = fs.retrieve_wire(query)
    assert out
    assert rec.lookups["in_process"] == [3, 4]
    assert rec.reads() == 2
    # A strong persist drops the written keys: the next read goes to the store and sees the write.
    fs.persist("user", "g1", ["u1"], rows(1, 100.0))
    got = fs.retrieve("user", ["u1"], FEATURES)
    assert got.values["g1"][0][0] == 100.0
    assert rec.reads() == 3
    assert rec.requests == 5  # 4 retrieves and 1 persist


def test_policy_and_flags_choose_the_tiers(tmp_path: Path) -> None:
    rec = Recorder()
    registry = make_registry(tmp_path, registry_doc(in_process=False, distributed=False))
    with FeatureStore(registry, data_directory=tmp_path, metrics=rec, invalidation=False) as fs:
        fs.persist("user", "g1", ["u1"], rows(1, 0.0))
        fs.retrieve("user", ["u1"], FEATURES)  # opens the store
        fs._caches.read = no_python_read  # type: ignore[method-assign]
        rec.__init__()  # type: ignore[misc]
        for _ in range(2):
            assert fs.retrieve("user", ["u1"], FEATURES).values["g1"][0][0] == 0.0
        assert rec.lookups["in_process"] == [0, 0]  # the entity's policy is off: never consulted
        assert rec.reads() == 2
    rec = Recorder()
    registry = make_registry(tmp_path / "flags", registry_doc())
    with FeatureStore(registry, data_directory=tmp_path / "flags", metrics=rec, invalidation=False) as fs:
        fs.retrieve("user", ["u1"], {"plain": ["f0"]})
        fs._caches.read = no_python_read  # type: ignore[method-assign]
        rec.__init__()  # type: ignore[misc]
        for _ in range(2):
            fs.retrieve("user", ["u1"], {"g1": ["f0"], "plain": ["f0"]})  # "plain" is not flagged
        assert rec.lookups["in_process"] == [0, 0]
        assert rec.reads() == 2


def test_the_distributed_cache_is_read_natively(tmp_path: Path) -> None:
    require_service("Redis", [REDIS], "scripts/services/redis start")
    rec = Recorder()
    registry = make_registry(tmp_path, registry_doc(in_process=False))
    key = f"u-{uuid.uuid4().hex}"  # the Redis is shared: a key no other test writes
    with FeatureStore(registry, data_directory=tmp_path, metrics=rec, distributed_cache=REDIS_URL) as fs:
        remote = fs._caches.remote
        assert remote is not None
        fs.persist("user", "g1", [key], rows(1, 7.0))
        fs.retrieve("user", [key], {"plain": ["f0"]})  # opens the store
        fs._caches.read = no_python_read  # type: ignore[method-assign]
        rec.__init__()  # type: ignore[misc]
        got = fs.retrieve("user", [key], FEATURES)  # a distributed miss, the store, a backfill queued
        assert got.values["g1"][0][0] == 7.0
        assert rec.lookups["distributed"] == [0, 1]
        assert rec.reads() == 1
        assert remote.wait_backfills()
        got = fs.retrieve("user", [key], FEATURES)  # from Redis now, no store call
        assert got.values["g1"][0][0] == 7.0
        assert list(got.status["g2"]) == [MISSING]  # an empty block cached too
        assert rec.lookups["distributed"] == [1, 1]
        assert rec.reads() == 1
        fs.persist("user", "g1", [key], rows(1, 9.0))  # invalidates the Redis copy
        assert fs.retrieve("user", [key], FEATURES).values["g1"][0][0] == 9.0
        assert rec.reads() == 2


def test_a_distributed_cache_the_core_cannot_call_keeps_the_python_path(tmp_path: Path) -> None:
    require_service("Redis", [REDIS], "scripts/services/redis start")

    class Own(DistributedCache):  # a client of the user's own: the core cannot call it
        pass

    rec = Recorder()
    registry = make_registry(tmp_path, registry_doc())
    remote = Own(REDIS_URL)
    try:
        with FeatureStore(registry, data_directory=tmp_path, metrics=rec, distributed_cache=remote) as fs:
            fs.persist("user", "g1", ["u1"], rows(1, 0.0))
            fs.retrieve("user", ["u1"], FEATURES)
            python_reads: list[int] = []
            real = CacheTiers.read

            def counting(*args: Any) -> Any:
                python_reads.append(1)
                return real(fs._caches, *args)

            fs._caches.read = counting  # type: ignore[method-assign]
            fs.retrieve("user", ["u2"], FEATURES)  # g1, g2 use the distributed cache: Python
            assert python_reads == [1]
            fs.retrieve("user", ["u3"], {"plain": ["f0"]})  # "plain" does not: native
            assert python_reads == [1]
    finally:
        remote.close()


def test_stores_that_are_not_the_packages_own_stay_on_the_python_path(tmp_path: Path) -> None:
    class Counting(SqliteStore):
        def read(self, entity: Any, keys: Any, fg_ids: Any) -> list[list[bytes]]:
            return super().read(entity, keys, fg_ids)

    plain, counting = SqliteStore(tmp_path / "a.db"), Counting(tmp_path / "b.db")
    try:
        assert native_of(plain) is plain.native
        assert native_of(counting) is None
    finally:
        plain.close()
        counting.close()


def test_a_store_failure_raises_and_is_reported(native_fs: Any, tmp_path: Path) -> None:
    fs, rec = native_fs
    fs.store("main").close()  # every later call raises UnavailableError
    from online_feature_store.errors import UnavailableError

    with pytest.raises(UnavailableError):
        fs.retrieve("user", ["u9"], FEATURES)
    assert rec.store_calls == [("main", "read", True)]


def test_other_python_threads_run_while_the_stores_answer(native_fs: Any) -> None:
    fs, rec = native_fs
    keys = [f"k{i}" for i in range(10_000)]  # every one a miss: a long SQLite read
    inside = threading.Event()
    finished = threading.Event()
    ran_inside: list[int] = []

    def other() -> None:
        # Counts its turns while the read is in flight; each turn ends by giving the GIL up (sleep).
        while not finished.is_set():
            if inside.is_set():
                ran_inside.append(1)
            time.sleep(0.0002)

    interval = sys.getswitchinterval()
    # No forced switches: the other thread runs only when the reading thread gives the GIL up, which
    # plain Python code never does; the native read does for the whole request.
    sys.setswitchinterval(100.0)
    counter = threading.Thread(target=other)
    try:
        counter.start()
        inside.set()
        got = fs.retrieve("user", keys, {"g1": ["f0"]})
        finished.set()
    finally:
        finished.set()
        sys.setswitchinterval(interval)
        counter.join(timeout=60)
    assert list(got.status["g1"]) == [MISSING] * len(keys)
    assert rec.reads() == 1
    assert ran_inside, "no other thread ran during the native read"


def test_the_cassandra_store_is_read_natively(tmp_path: Path) -> None:
    from tests.store.conftest import CASSANDRA, KEYSPACE

    require_service("cassandra", [CASSANDRA], "scripts/services/cassandra start")
    doc = registry_doc(distributed=False)
    doc["stores"] = [
        {
            "id": "main",
            "kind": "scylla",
            "settings": {"hosts": CASSANDRA[0], "port": str(CASSANDRA[1]), "keyspace": KEYSPACE},
        }
    ]
    label = f"tiers_{uuid.uuid4().hex[:12]}"  # a table of this test alone
    doc["entities"][0]["label"] = label
    rec = Recorder()
    with FeatureStore(
        make_registry(tmp_path, doc), data_directory=tmp_path, metrics=rec, invalidation=False
    ) as fs:
        fs.persist(label, "g1", ["u1", "u2"], rows(2, 0.0))
        fs.retrieve(label, ["u1"], {"plain": ["f0"]})  # opens the store (Python path, once)
        fs._caches.read = no_python_read  # type: ignore[method-assign]
        got = fs.retrieve(label, ["u2", "nobody", "u1"], FEATURES)
        np.testing.assert_array_equal(got.values["g1"][0], rows(2, 0.0)[1])
        assert list(got.status["g1"]) == [FOUND, MISSING, FOUND]
        assert list(got.status["g2"]) == [MISSING] * 3
        assert fs.retrieve(label, ["u1"], FEATURES).values["g1"][0][3] == 3.0  # from the cache now
        assert [c for c in rec.store_calls if c[1] == "read"][-1:] == [("main", "read", False)]
