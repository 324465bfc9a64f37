"""Fixtures of the batch loading tests: a registry with one FG of each kind the loaders convert (fp32,
fp16 vector, string, bool, int32, int8), Arrow tables of known rows, and a check that reads every row
back."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import yaml
from _services import require_service

from online_feature_store.feature_store import FeatureStore
from online_feature_store.registry.spec import reconcile
from online_feature_store.registry.sqlite import SqliteRegistry
from online_feature_store.registry.yaml_io import parse_spec

FEATURE_GROUPS = ["emb", "vec", "tags", "flags", "counts"]
TOKEN = "push-writer-token-0123456789abcdef"

DOC: dict[str, Any] = {
    "stores": [{"id": "main", "kind": "sqlite", "settings": {"path": "store.db"}}],
    "callers": [{"id": "loader", "role": "writer", "token_env": "PUSH_TOKEN"}],
    "entities": [
        {
            "label": "user",
            "keys": [{"label": "user_id", "column": "uid"}, {"label": "region", "column": "rg"}],
            "feature_groups": [
                {
                    "label": "emb",
                    "data_type": "fp32",
                    "store": "main",
                    "features": [{"label": f"f{i}", "default": -1.0} for i in range(4)],
                },
                {
                    "label": "vec",
                    "data_type": "fp16vector",
                    "store": "main",
                    "features": [{"label": "v", "vector_length": 3, "default": [0.5, 0.5, 0.5]}],
                },
                {
                    "label": "tags",
                    "data_type": "string",
                    "store": "main",
                    "features": [
                        {"label": "city", "string_length": 16, "default": "nowhere"},
                        {"label": "lang", "string_length": 8, "default": "xx"},
                    ],
                },
                {
                    "label": "flags",
                    "data_type": "bool",
                    "store": "main",
                    "features": [
                        {"label": "active", "default": False},
                        {"label": "premium", "default": True},
                    ],
                },
                {
                    "label": "counts",
                    "data_type": "int32",
                    "store": "main",
                    "features": [{"label": "clicks", "default": -7}, {"label": "views", "default": 0}],
                },
                {
                    "label": "small",
                    "data_type": "int8",
                    "store": "main",
                    "features": [{"label": "n", "default": 0}],
                },
            ],
        }
    ],
}


def make_registry(data_dir: Path) -> str:
    """Applies :data:`DOC` to ``data_dir/registry.db``; returns its URL."""
    data_dir.mkdir(parents=True, exist_ok=True)
    registry = SqliteRegistry(data_dir / "registry.db")
    spec = parse_spec(DOC, env={"PUSH_TOKEN": TOKEN})
    registry.apply(lambda state: reconcile(state, spec))
    registry.close()
    return f"sqlite:///{data_dir / 'registry.db'}"


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test runs in its own directory (``ofs push`` keeps checkpoints under the current one)."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data directory holding the registry of :data:`DOC` (and, once written, the SQLite store)."""
    d = tmp_path / "data"
    make_registry(d)
    return d


@pytest.fixture
def fs(data_dir: Path) -> Iterator[FeatureStore]:
    with FeatureStore(data_directory=data_dir, cache_bytes=0) as store:
        yield store


def table(start: int, n: int) -> pa.Table:
    """Rows ``start … start+n-1``: one column per feature of every FG in :data:`FEATURE_GROUPS`, named
    ``<fg>.<feature>`` for emb and by the feature label otherwise; keys ``user_id`` = ``u<i>`` and
    ``region`` = ``r<i % 3>``. Every value is exact in its type (fp16 included)."""
    i = np.arange(start, start + n)
    return pa.table(
        {
            "user_id": [f"u{k}" for k in i],
            "region": [f"r{k % 3}" for k in i],
            **{f"emb.f{j}": pa.array((i + j / 4).astype(np.float32)) for j in range(4)},
            "v": pa.array([[float(k % 50), 0.25, -float(k % 7)] for k in i], type=pa.list_(pa.float32())),
            "city": [f"c{k % 1000}" for k in i],
            "lang": ["en" if k % 2 else "fr" for k in i],
            "active": pa.array(i % 2 == 0),
            "premium": pa.array(i % 3 == 0),
            "clicks": pa.array(i * 3, type=pa.int64()),
            "views": pa.array(-i, type=pa.int32()),
        }
    )


def keys_of(start: int, n: int) -> list[tuple[str, str]]:
    return [(f"u{k}", f"r{k % 3}") for k in range(start, start + n)]


FEATURES = {
    "emb": [f"f{j}" for j in range(4)],
    "vec": ["v"],
    "tags": ["city", "lang"],
    "flags": ["active", "premium"],
    "counts": ["clicks", "views"],
}


def expected(start: int, n: int) -> dict[str, Any]:
    """What :func:`table` rows read back as, per FG."""
    t = table(start, n)
    return {
        "emb": np.column_stack([t.column(f"emb.f{j}").to_numpy() for j in range(4)]),
        "vec": np.array(t.column("v").to_pylist(), dtype=np.float32).reshape(n, 1, 3),
        "tags": [
            [c, la] for c, la in zip(t.column("city").to_pylist(), t.column("lang").to_pylist(), strict=True)
        ],
        "flags": np.column_stack([t.column("active").to_numpy(), t.column("premium").to_numpy()]),
        "counts": np.column_stack([t.column("clicks").to_numpy(), t.column("views").to_numpy()]),
    }


def assert_stored(fs: FeatureStore, start: int, n: int, *, step: int = 2000) -> None:
    """Every row of :func:`table` ``(start, n)`` reads back with every value (in requests of ``step``
    keys, under the servers' keys-per-request limit)."""
    for s in range(start, start + n, step):
        m = min(step, start + n - s)
        got = fs.retrieve("user", keys_of(s, m), FEATURES)
        want = expected(s, m)
        for fg in FEATURES:
            assert (got.status[fg] == 0).all(), f"{fg}: rows missing from {s}"
            if fg == "tags":
                assert got.values[fg] == want[fg]
            else:
                np.testing.assert_array_equal(
                    np.asarray(got.values[fg], dtype=np.float64), want[fg].astype(np.float64), err_msg=fg
                )


def stored_count(fs: FeatureStore, start: int, n: int) -> int:
    """How many keys of rows ``start … start+n-1`` have their emb row stored."""
    count = 0
    for s in range(start, start + n, 2000):
        m = min(2000, start + n - s)
        got = fs.retrieve("user", keys_of(s, m), {"emb": ["f0"]})
        count += int((got.status["emb"] == 0).sum())
    return count


# -- real services ----------------------------------------------------------------------------------------
KAFKA = ("127.0.0.1", 19092)
BOOTSTRAP = f"{KAFKA[0]}:{KAFKA[1]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def serving(data_dir: Path, log: Path) -> Iterator[str]:
    """``ofs serve --auth`` on ``data_dir`` in a process of its own; yields its address."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    port = free_port()
    env = {**os.environ, "OFS_METRICS_PORT": str(free_port()), "PUSH_TOKEN": TOKEN}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "online_feature_store.cli", "serve", "--auth", "--port", str(port),
             "--data-dir", str(data_dir)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"ofs serve did not start:\n{log.read_text()}"
            with grpc.insecure_channel(address) as ch:
                try:
                    reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    pass
            time.sleep(0.1)
        yield address
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def kafka_topic() -> Iterator[str]:
    """A fresh 3-partition topic on the test broker (deleted after the test, with its dead letters)."""
    require_service("kafka", [KAFKA], "scripts/services/kafka start")
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, client_id="ofs-test-admin")
    name = f"ofs-push-{uuid.uuid4().hex[:12]}"
    admin.create_topics([NewTopic(name, 3, 1)])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = admin.describe_topics([name])
            parts = found[0].get("partitions", []) if found else []
            if len(parts) == 3 and all(p.get("leader", p.get("leader_id", -1)) >= 0 for p in parts):
                break
            time.sleep(0.2)
        yield name
    finally:
        try:
            existing = set(admin.list_topics())
            admin.delete_topics([t for t in (name, f"{name}.dlq") if t in existing])
        finally:
            admin.close()


@contextlib.contextmanager
def consuming(data_dir: Path, topic: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``ofs consume`` of ``topic`` into ``data_dir`` in a process of its own."""
    settings = {
        "bootstrap_servers": BOOTSTRAP,
        "topic": topic,
        "group_id": f"g-{topic}",
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 500,
        "health_port": -1,
        "data_dir": str(data_dir),
    }
    cfg = log.with_suffix(".yaml")
    cfg.write_text(yaml.safe_dump(settings))
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "online_feature_store.cli", "consume", "--config", str(cfg)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_stored(
    fs: FeatureStore, start: int, n: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 180
) -> None:
    """Waits until every row of :func:`table` ``(start, n)`` is stored (``proc`` must stay up)."""
    deadline = time.monotonic() + timeout
    while stored_count(fs, start, n) < n:
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, (
            f"{stored_count(fs, start, n)} of {n} rows stored:\n{log.read_text()}"
        )
        time.sleep(0.2)
