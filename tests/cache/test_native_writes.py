"""The native write path (``Tiers::write_route`` / ``write_routed`` in ``rust/src/tiers.rs``, through
``FeatureStore.persist_wire``): a strong-mode persist validated, written to its stores, invalidated in every
tier and published on the bus in one native call, with no Python store or bus code; declined to the
Python path whenever a tier it touches is not native (a store class overriding ``write``, a bus the core
cannot publish on) or the write is eventual."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from online_feature_store import DataType
from online_feature_store.cache.tiers import native_of
from online_feature_store.errors import DeadlineExceededError, UnavailableError
from online_feature_store.feature_store import FeatureStore
from online_feature_store.ingest import FeatureGroupValues, encode_query
from online_feature_store.store.keys import encode_key
from online_feature_store.store.sqlite import SqliteStore
from tests.cache.conftest import REDIS, REDIS_URL, make_registry, registry_doc, require_service
from tests.cache.test_feature_store_cache import _ask, _quit, _worker, wait_for
from tests.cache.test_native_tiers import Recorder

FEATURES = {"g1": ["f0", "f1", "f2", "f3"]}


def query(keys: list[str], base: float, fg: str = "g1") -> bytes:
    values = np.arange(len(keys) * 4, dtype=np.float32).reshape(len(keys), 4) + np.float32(base)
    group = FeatureGroupValues(fg, DataType.FP32, ["f0", "f1", "f2", "f3"], values)
    return encode_query("user", ["user_id"], [[k] for k in keys], [group])


def no_python_write(*_args: Any, **_kw: Any) -> Any:
    raise AssertionError("the Python write path ran")


def first(fs: FeatureStore, key: str) -> float:
    return float(fs.retrieve("user", [key], FEATURES).values["g1"][0][0])


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[tuple[FeatureStore, Recorder]]:
    """A FeatureStore over the SQLite store, the in-process cache on and the host's invalidation log as
    its bus, the store opened (by one Python-path write) and the Python write path then made to fail."""
    registry = make_registry(tmp_path, registry_doc(distributed=False))
    rec = Recorder()
    fs = FeatureStore(registry, data_directory=tmp_path, metrics=rec)
    fs.persist_wire(query(["u1"], 0.0))  # opens the store: declined natively, written by Python
    fs.write_prepared = no_python_write  # type: ignore[method-assign]
    rec.__init__()  # type: ignore[misc]
    try:
        yield fs, rec
    finally:
        fs.close()


def test_a_native_persist_writes_drops_the_cached_keys_and_reports_its_store_call(fs: Any) -> None:
    store, rec = fs
    assert first(store, "u1") == 0.0  # now in the in-process cache
    requests = rec.requests
    assert store.persist_wire(query(["u1", "u2"], 10.0)) == 2
    assert ("main", "write", False) in rec.store_calls
    assert rec.requests == requests + 1
    # Read back at once: the written key left this process's cache with the write.
    assert first(store, "u1") == 10.0
    assert first(store, "u2") == 14.0


def test_a_native_persist_appends_its_invalidation_to_the_hosts_log(fs: Any, tmp_path: Path) -> None:
    store, _rec = fs
    bus = store._caches.bus
    store.persist_wire(query(["u1", "x|y"], 1.0))
    conn = sqlite3.connect(tmp_path / "invalidations.db")
    try:
        rows = conn.execute("SELECT source, entity, keys FROM invalidations ORDER BY id").fetchall()
    finally:
        conn.close()
    # The first (Python) write's row, then the native one, both with this process's source.
    assert [(s, e) for s, e, _k in rows] == [(bus.source, "user"), (bus.source, "user")]
    assert json.loads(rows[-1][2]) == [encode_key(("u1",)), encode_key(("x|y",))]  # canonical key strings


def test_another_process_drops_what_a_native_persist_wrote(fs: Any, tmp_path: Path) -> None:
    writer, _rec = fs
    registry = f"sqlite:///{tmp_path / 'registry.db'}"
    reader = FeatureStore(registry, data_directory=tmp_path, poll_interval=0.05)
    try:
        deadline = time.monotonic() + 10
        while first(reader, "u1") != 0.0 or not reader._caches.bus_healthy():
            assert time.monotonic() < deadline, "the reader's bus never came up"
        first(reader, "u1")  # cached now (TTL 600 s)
        writer.persist_wire(query(["u1"], 5.0))
        while first(reader, "u1") != 5.0:
            assert time.monotonic() < deadline, "the reader kept its cached copy"
            time.sleep(0.02)
    finally:
        reader.close()


def test_a_failed_native_persist_raises_and_keeps_the_stored_block(fs: Any) -> None:
    store, rec = fs
    good = store.persist_wire(query(["u1"], 3.0))
    assert good == 1
    opened = store.store("main")
    opened.native.close()
    with pytest.raises(UnavailableError, match="closed"):
        store.persist_wire(query(["u1"], 99.0))
    assert ("main", "write", True) in rec.store_calls
    reopened = SqliteStore(opened.path)
    try:
        g1 = store.snapshot.feature_group("user", "g1").id
        assert reopened.read(store.snapshot.entity("user"), [("u1",)], [g1]) != [[b""]]
    finally:
        reopened.close()


def test_past_its_deadline_a_native_persist_writes_nothing(fs: Any) -> None:
    store, rec = fs

    class Late(Recorder):
        def time_left(self) -> float | None:
            return -1.0

    store.metrics = Late()
    with pytest.raises(DeadlineExceededError, match="before the store calls for 1 keys"):
        store.persist_wire(query(["u1"], 77.0))
    store.metrics = rec
    assert first(store, "u1") == 0.0


def test_eventual_writes_and_python_buses_and_stores_take_the_python_path(tmp_path: Path) -> None:
    registry = make_registry(tmp_path, registry_doc(distributed=False))
    calls: list[str] = []

    class Bus:
        """A bus of the caller's: only Python can publish on it."""

        healthy = True

        def start(self, *_a: Any) -> None: ...

        def publish(self, entity: str, names: Any) -> None:
            calls.append(f"publish {entity} {list(names)}")

        def close(self) -> None: ...

    with FeatureStore(registry, data_directory=tmp_path, invalidation=Bus()) as fs:
        fs.persist_wire(query(["a"], 1.0))
        fs.persist_wire(query(["b"], 1.0))
        assert calls == ["publish user ['a']", "publish user ['b']"]

    class CountingStore(SqliteStore):
        def write(self, entity: Any, writes: Any) -> None:
            calls.append("write")
            super().write(entity, writes)

    store = CountingStore(tmp_path / "counted.db")
    assert native_of(store) is not None
    assert native_of(store, "write") is None
    calls.clear()
    with FeatureStore(registry, data_directory=tmp_path, stores={"main": store}, invalidation=False) as fs:
        fs.persist_wire(query(["a"], 2.0))
        fs.persist_wire(query(["a"], 3.0))
        assert calls == ["write", "write"]
        assert first(fs, "a") == 3.0
    store.close()

    with FeatureStore(registry, data_directory=tmp_path, invalidation=False) as fs:
        fs.persist_wire(query(["a"], 4.0))  # opens the store
        prepared: list[int] = []
        original = fs.write_prepared

        def counted(p: Any, **kw: Any) -> int:
            prepared.append(len(p))
            return original(p, **kw)

        fs.write_prepared = counted  # type: ignore[method-assign]
        fs.persist_wire(query(["a"], 5.0), invalidate=False)
        fs.persist_wire(query(["a"], 6.0))
        assert prepared == [1], "only the eventual write took the Python path"


def test_another_process_hears_of_a_native_persist_over_redis_pubsub(tmp_path: Path) -> None:
    """With a distributed cache, the native write tombstones the keys and publishes the invalidation on
    the Redis bus in one round trip; a worker process caching the key in-process drops it."""
    require_service("Redis", [REDIS], "scripts/services/redis start")
    registry = make_registry(tmp_path, registry_doc(distributed=True))
    writer = FeatureStore(registry, data_directory=tmp_path, distributed_cache=REDIS_URL, poll_interval=0.05)

    def persist(base: float) -> None:
        values = np.arange(4, dtype=np.float32).reshape(1, 4) + np.float32(base)
        group = FeatureGroupValues("g1", DataType.FP32, ["f0", "f1", "f2", "f3"], values)
        writer.persist_wire(encode_query("user", ["user_id"], [["x"]], [group]))

    persist(1.0)  # opens the store (the Python path, once)
    writer.write_prepared = no_python_write  # type: ignore[method-assign]
    proc = _worker(tmp_path, registry, REDIS_URL)
    try:
        wait_for(lambda: _ask(proc, "x")["store_reads"] == _ask(proc, "x")["store_reads"], "worker caching")
        assert _ask(proc, "x")["values"] == [1.0, 2.0, 3.0, 4.0]
        persist(10.0)
        wait_for(lambda: _ask(proc, "x")["values"] == [10.0, 11.0, 12.0, 13.0], "the other process to see it")
    finally:
        _quit(proc)
        writer.close()
