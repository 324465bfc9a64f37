"""Ingestion through the real broker: rows become readable, bad messages are dead-lettered, group members
share partitions and lose nothing when one leaves."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer

from online_feature_store._proto import persist_pb2
from online_feature_store.consumer.daemon import ERROR_HEADER
from online_feature_store.consumer.health import HealthServer
from online_feature_store.feature_store import FeatureStore

from .conftest import BOOTSTRAP, N_FEATURES, Running, config, make_registry, persist_message, stored, wait_for


def test_rows_become_readable_and_metrics_count_them(
    tmp_path: Path, make_topic: Callable[[int], str], run_consumer: Callable[..., Running], producer: Any
) -> None:
    topic = make_topic(3)
    url = make_registry(tmp_path / "registry.db")
    c = run_consumer(url, tmp_path, config(topic))
    health = HealthServer("127.0.0.1", 0, c.metrics, c.readiness)
    try:
        with FeatureStore(url, data_directory=tmp_path) as fs:
            n_messages, rows = 30, 20
            for m in range(n_messages):
                producer.send(topic, persist_message(m * rows, rows), key=b"%d" % m)
            producer.flush()
            total = n_messages * rows
            assert wait_for(lambda: stored(fs, total)[0] == total)
            assert stored(fs, total) == (total, True)
        assert wait_for(lambda: c.value("ofs_consumer_persisted_messages_total", topic=topic) == n_messages)
        assert c.value("ofs_consumer_consumed_messages_total", topic=topic) == n_messages
        assert c.value("ofs_consumer_persisted_blocks_total", topic=topic) == total
        assert c.value("ofs_consumer_assigned_partitions", topic=topic) == 3
        lag = lambda p: c.value("ofs_consumer_lag", topic=topic, partition=str(p))  # noqa: E731
        assert wait_for(lambda: all(lag(p) == 0 for p in range(3)))
        base = f"http://127.0.0.1:{health.port}"
        with urllib.request.urlopen(f"{base}/health/self") as r:
            assert json.load(r) == {"message": "true"}
        with urllib.request.urlopen(f"{base}/health/ready") as r:
            assert json.load(r)["ready"] is True
        with urllib.request.urlopen(f"{base}/metrics") as r:
            assert b"ofs_consumer_batch_duration_seconds_bucket" in r.read()
    finally:
        health.close()
    c.stop()


def _bad_messages() -> list[tuple[bytes, str]]:
    """(value, text expected in the dead-letter reason) for each way a message can be unusable."""
    wrong_count = persist_pb2.Query.FromString(persist_message(0, 1))
    wrong_count.data[0].feature_values[0].values.fp32_values.append(9.0)
    out_of_range = persist_pb2.Query(entity_label="user", keys_schema=["user_id"])
    out_of_range.feature_group_schema.add(label="small", feature_labels=["n"])
    out_of_range.data.add(key_values=["x"]).feature_values.add().values.int32_values.append(300)
    return [
        (b"\xff\x00 not a protobuf", "Error"),
        (persist_message(0, 1, entity="nobody"), "nobody"),
        (persist_message(0, 1, fg="nope"), "nope"),
        (wrong_count.SerializeToString(), str(N_FEATURES)),
        (out_of_range.SerializeToString(), "300"),
        (b"", "empty"),
    ]


def test_poison_messages_go_to_the_dead_letter_topic(
    tmp_path: Path, make_topic: Callable[[int], str], run_consumer: Callable[..., Running], producer: Any
) -> None:
    topic = make_topic(2)
    url = make_registry(tmp_path / "registry.db")
    bad = _bad_messages()
    rows, good = 10, 12
    # Interleaved on both partitions: good, bad, good, bad, …
    for m in range(good):
        producer.send(topic, persist_message(m * rows, rows), partition=m % 2)
        if m < len(bad):
            producer.send(topic, bad[m][0], key=b"bad%d" % m, partition=m % 2)
    producer.flush()
    c = run_consumer(url, tmp_path, config(topic))
    with FeatureStore(url, data_directory=tmp_path) as fs:
        assert wait_for(lambda: stored(fs, good * rows)[0] == good * rows)
        assert stored(fs, good * rows) == (good * rows, True)
    dlq = KafkaConsumer(
        f"{topic}.dlq", bootstrap_servers=BOOTSTRAP, auto_offset_reset="earliest", consumer_timeout_ms=20000
    )
    letters = []
    for record in dlq:
        letters.append(record)
        if len(letters) == len(bad):
            break
    dlq.close()
    assert len(letters) == len(bad)
    by_key = {r.key: (r.value, dict(r.headers)) for r in letters}
    for m, (value, reason) in enumerate(bad):
        got_value, headers = by_key[b"bad%d" % m]
        assert got_value == value
        assert reason in headers[ERROR_HEADER].decode(), headers[ERROR_HEADER]
        assert headers["ofs-source-topic"] == topic.encode()
    assert wait_for(lambda: c.value("ofs_consumer_persisted_messages_total", topic=topic) == good)
    dead = sum(
        c.value("ofs_consumer_dead_lettered_messages_total", topic=topic, error=e)
        for e in ("InvalidInputError", "NotFoundError", "CorruptBlockError")
    )
    assert dead == len(bad)
    c.stop()


def test_two_consumers_split_partitions_and_lose_nothing_on_rebalance(
    tmp_path: Path, make_topic: Callable[[int], str], run_consumer: Callable[..., Running], producer: Any
) -> None:
    topic = make_topic(4)
    url = make_registry(tmp_path / "registry.db")
    cfg = config(topic)
    a = run_consumer(url, tmp_path, cfg)
    b = run_consumer(url, tmp_path, cfg)
    assigned = lambda r: r.value("ofs_consumer_assigned_partitions", topic=topic)  # noqa: E731
    assert wait_for(lambda: assigned(a) > 0 and assigned(b) > 0 and assigned(a) + assigned(b) == 4)
    rows = 10
    for m in range(20):
        producer.send(topic, persist_message(m * rows, rows), partition=m % 4)
    producer.flush()
    with FeatureStore(url, data_directory=tmp_path) as fs:
        assert wait_for(lambda: stored(fs, 200)[0] == 200)
        assert a.value("ofs_consumer_persisted_messages_total", topic=topic) > 0
        assert b.value("ofs_consumer_persisted_messages_total", topic=topic) > 0
        # b leaves (SIGTERM path) while more arrives: a takes over every partition.
        for m in range(20, 40):
            producer.send(topic, persist_message(m * rows, rows), partition=m % 4)
        producer.flush()
        b.stop()
        assert wait_for(lambda: assigned(a) == 4)
        for m in range(40, 60):
            producer.send(topic, persist_message(m * rows, rows), partition=m % 4)
        producer.flush()
        assert wait_for(lambda: stored(fs, 600)[0] == 600)
        assert stored(fs, 600) == (600, True)
    a.stop()


def test_a_partitions_later_message_wins_when_one_batch_writes_them_together(
    tmp_path: Path, make_topic: Callable[[int], str], run_consumer: Callable[..., Running], producer: Any
) -> None:
    """A batch is stored in one write: where its messages update the same keys, the value of the last
    message of the partition is what stays, as when they are written one at a time."""
    topic = make_topic(1)
    url = make_registry(tmp_path / "registry.db")
    versions, keys = 12, 5
    for v in range(versions):  # queued before the consumer starts, so they come in a few large batches
        q = persist_pb2.Query(entity_label="user", keys_schema=["user_id"])
        q.feature_group_schema.add(label="emb", feature_labels=[f"f{i}" for i in range(N_FEATURES)])
        for k in range(keys):
            q.data.add(key_values=[f"u{k}"]).feature_values.add().values.fp32_values.extend([v] * N_FEATURES)
        producer.send(topic, q.SerializeToString(), partition=0)
    producer.flush()
    c = run_consumer(url, tmp_path, config(topic, batch_max_messages=64, batch_max_seconds=1.0))
    assert wait_for(lambda: c.value("ofs_consumer_persisted_messages_total", topic=topic) == versions)
    assert c.value("ofs_consumer_batch_messages_count") < versions  # some batches held several messages
    with FeatureStore(url, data_directory=tmp_path, cache_bytes=0) as fs:
        features = {"emb": [f"f{i}" for i in range(N_FEATURES)]}
        got = fs.retrieve("user", [f"u{k}" for k in range(keys)], features)
        assert (got.status["emb"] == 0).all()
        assert (got.values["emb"] == versions - 1).all()
    c.stop()


@pytest.mark.parametrize("mode", ["strong", "eventual"])
def test_cache_mode(
    mode: str,
    tmp_path: Path,
    make_topic: Callable[[int], str],
    run_consumer: Callable[..., Running],
    producer: Any,
) -> None:
    """Strong mode drops written keys from the consumer process's cache; eventual mode leaves the cached
    copy until its TTL (600 s here)."""
    topic = make_topic(1)
    url = make_registry(tmp_path / "registry.db")
    c = run_consumer(url, tmp_path, config(topic, cache_mode=mode))
    features = {"emb": [f"f{i}" for i in range(N_FEATURES)]}
    assert c.fs.retrieve("user", ["u1"], features).status["emb"][0] != 0  # cached as missing
    producer.send(topic, persist_message(0, 2))
    producer.flush()
    assert wait_for(lambda: c.value("ofs_consumer_persisted_messages_total", topic=topic) == 1)
    with FeatureStore(url, data_directory=tmp_path) as fs:
        assert stored(fs, 2) == (2, True)
    cached = c.fs.retrieve("user", ["u1"], features).status["emb"][0]
    assert cached == (0 if mode == "strong" else 1)
    c.stop()
