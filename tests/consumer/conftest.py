"""Fixtures of the Kafka ingestion tests: the real broker of ``scripts/services/kafka`` (a fresh topic per
test), an embedded feature store on a SQLite registry, and consumers run on threads."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _services import require_service

from online_feature_store._proto import persist_pb2
from online_feature_store.consumer.config import ConsumerConfig
from online_feature_store.consumer.daemon import IngestConsumer
from online_feature_store.consumer.health import ConsumerMetrics, Readiness
from online_feature_store.feature_store import FeatureStore
from online_feature_store.registry.spec import reconcile
from online_feature_store.registry.sqlite import SqliteRegistry
from online_feature_store.registry.yaml_io import parse_spec

KAFKA = ("127.0.0.1", 19092)
BOOTSTRAP = f"{KAFKA[0]}:{KAFKA[1]}"
N_FEATURES = 4


def registry_doc(store: dict[str, Any]) -> dict[str, Any]:
    """One entity ``user`` with an fp32 FG ``emb`` (4 features) and an int8 FG ``small`` on ``store``."""
    return {
        "stores": [store],
        "entities": [
            {
                "label": "user",
                "keys": [{"label": "user_id", "column": "uid"}],
                "cache": {"in_process": {"enabled": True, "ttl_seconds": 600}},
                "feature_groups": [
                    {
                        "label": "emb",
                        "data_type": "fp32",
                        "store": "main",
                        "in_process_cache": True,
                        "features": [{"label": f"f{i}", "default": -1.0} for i in range(N_FEATURES)],
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


def make_registry(path: Path, store: dict[str, Any] | None = None) -> str:
    """Applies :func:`registry_doc` to a SQLite registry at ``path``; returns its URL."""
    store = store or {"id": "main", "kind": "sqlite", "settings": {"path": str(path.parent / "store.db")}}
    registry = SqliteRegistry(path)
    spec = parse_spec(registry_doc(store), env={})
    registry.apply(lambda state: reconcile(state, spec))
    registry.close()
    return f"sqlite:///{path}"


def row_values(key_index: int) -> list[float]:
    """The expected ``emb`` values of key ``u<key_index>`` (exact in fp32)."""
    return [key_index + i / 4 for i in range(N_FEATURES)]


def persist_message(first: int, count: int, *, entity: str = "user", fg: str = "emb") -> bytes:
    """A ``persist.Query`` of keys ``u<first>`` … with :func:`row_values`."""
    q = persist_pb2.Query(entity_label=entity, keys_schema=["user_id"])
    q.feature_group_schema.add(label=fg, feature_labels=[f"f{i}" for i in range(N_FEATURES)])
    for k in range(first, first + count):
        data = q.data.add(key_values=[f"u{k}"])
        data.feature_values.add().values.fp32_values.extend(row_values(k))
    out: bytes = q.SerializeToString()
    return out


def stored(fs: FeatureStore, n_keys: int) -> tuple[int, bool]:
    """How many of keys ``u0`` … ``u<n_keys-1>`` are stored, and whether all stored values are right."""
    r = fs.retrieve("user", [f"u{k}" for k in range(n_keys)], {"emb": [f"f{i}" for i in range(N_FEATURES)]})
    found = r.status["emb"] == 0
    expected = np.array([row_values(k) for k in range(n_keys)], dtype=np.float32)
    ok = bool(np.array_equal(r.values["emb"][found], expected[found]))
    return int(found.sum()), ok


def wait_for(condition: Callable[[], bool], timeout: float = 60.0, interval: float = 0.2) -> bool:
    """True as soon as ``condition()`` holds, False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


@pytest.fixture(scope="session")
def kafka() -> str:
    """The bootstrap address of the test broker."""
    require_service("kafka", [KAFKA], "scripts/services/kafka start")
    return BOOTSTRAP


@pytest.fixture
def make_topic(kafka: str) -> Iterator[Callable[[int], str]]:
    """Creates uniquely named topics (``partitions`` each); deletes them after the test."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=kafka, client_id="ofs-test-admin")
    made: list[str] = []

    def make(partitions: int) -> str:
        name = f"ofs-test-{uuid.uuid4().hex[:12]}"
        admin.create_topics([NewTopic(name, partitions, 1)])
        made.append(name)

        # A group leader that joins before the topic's metadata reached it assigns nothing until its next
        # metadata refresh: wait until the broker reports every partition with a leader.
        def ready() -> bool:
            found = admin.describe_topics([name])
            parts = found[0].get("partitions", []) if found else []
            leaders = [p.get("leader", p.get("leader_id", -1)) for p in parts]  # kafka-python 2.x / 3.x
            return len(parts) == partitions and all(x >= 0 for x in leaders)

        assert wait_for(ready, timeout=30)
        return name

    yield make
    try:
        existing = set(admin.list_topics())
        admin.delete_topics([t for t in made + [f"{t}.dlq" for t in made] if t in existing])
    finally:
        admin.close()


def config(topic: str, **overrides: Any) -> ConsumerConfig:
    """Consumer settings for tests: short session timeouts and batches, no HTTP endpoint."""
    base: dict[str, Any] = {
        "bootstrap_servers": BOOTSTRAP,
        "topic": topic,
        "group_id": f"g-{topic}",
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 500,
        "batch_max_messages": 8,
        "batch_max_seconds": 0.1,
        "backoff_initial_seconds": 0.2,
        "backoff_max_seconds": 1.0,
        "lag_interval_seconds": 0.5,
        "health_port": -1,
        "kafka": {"metadata_max_age_ms": 2000},
    }
    base.update(overrides)
    return ConsumerConfig(**base)


class Running:
    """An :class:`IngestConsumer` on a thread, with its own FeatureStore."""

    def __init__(self, registry_url: str, data_dir: Path, cfg: ConsumerConfig) -> None:
        self.fs = FeatureStore(registry_url, data_directory=data_dir, poll_interval=0.2)
        self.metrics = ConsumerMetrics()
        self.readiness = Readiness()
        self.consumer = IngestConsumer(self.fs, cfg, self.metrics, self.readiness)
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.consumer.run(self.stop_event)
        except BaseException as e:  # surfaced by stop()
            self.error = e

    def value(self, name: str, **labels: str) -> float:
        """The current value of metric sample ``name`` with ``labels``."""
        got = self.metrics.registry.get_sample_value(name, labels)
        return float(got or 0.0)

    def stop(self) -> None:
        """SIGTERM's path: finish the batch, commit, leave the group."""
        self.stop_event.set()
        self.thread.join(timeout=60)
        self.fs.close()
        assert not self.thread.is_alive(), "consumer did not stop"
        if self.error is not None:
            raise self.error


@pytest.fixture
def run_consumer() -> Iterator[Callable[..., Running]]:
    """Starts consumers on threads; stops every one still running after the test."""
    started: list[Running] = []

    def start(registry_url: str, data_dir: Path, cfg: ConsumerConfig) -> Running:
        r = Running(registry_url, data_dir, cfg)
        started.append(r)
        return r

    yield start
    for r in started:
        if r.thread.is_alive():
            r.stop()


@pytest.fixture
def producer(kafka: str) -> Iterator[Any]:
    """A kafka-python producer waiting for all replicas."""
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=kafka, acks="all", linger_ms=5)
    yield p
    p.close()
