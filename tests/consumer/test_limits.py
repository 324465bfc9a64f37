"""The consumer holds messages to the same rules as the servers: a persist naming an FG with no features, or
carrying more rows than ``max_rows_per_persist``, goes to the dead-letter topic with the reason, and writes
nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer

from online_feature_store._proto import persist_pb2
from online_feature_store.consumer.config import ConsumerConfig
from online_feature_store.consumer.daemon import ERROR_CLASS_HEADER, ERROR_HEADER
from online_feature_store.errors import InvalidInputError
from online_feature_store.feature_store import FeatureStore

from .conftest import (
    BOOTSTRAP,
    N_FEATURES,
    Running,
    config,
    make_registry,
    persist_message,
    row_values,
    wait_for,
)


def test_no_features_and_too_many_rows_are_dead_lettered(
    tmp_path: Path, make_topic: Callable[[int], str], run_consumer: Callable[..., Running], producer: Any
) -> None:
    topic = make_topic(1)
    url = make_registry(tmp_path / "registry.db")
    no_features = persist_pb2.Query.FromString(persist_message(0, 1))
    del no_features.feature_group_schema[0].feature_labels[:]
    no_features.data[0].feature_values[0].values.Clear()
    bad = [
        (no_features.SerializeToString(), 'feature group "emb" lists no features', "InvalidInputError"),
        (
            persist_message(100, 6),
            "6 rows, over the limit of 5 rows (max_rows_per_persist)",
            "ResourceExhaustedError",
        ),
    ]
    producer.send(topic, persist_message(0, 5), key=b"good")  # u0..u4, then the bad ones touch u0 and u100..
    for i, (value, _, _) in enumerate(bad):
        producer.send(topic, value, key=b"bad%d" % i)
    producer.flush()
    c = run_consumer(url, tmp_path, config(topic, max_rows_per_persist=5))
    dead = lambda: sum(  # noqa: E731
        c.value("ofs_consumer_dead_lettered_messages_total", topic=topic, error=cls) for _, _, cls in bad
    )
    assert wait_for(lambda: dead() == len(bad))
    dlq = KafkaConsumer(
        f"{topic}.dlq", bootstrap_servers=BOOTSTRAP, auto_offset_reset="earliest", consumer_timeout_ms=20000
    )
    letters = {}
    for record in dlq:
        letters[record.key] = dict(record.headers)
        if len(letters) == len(bad):
            break
    dlq.close()
    for i, (_, reason, cls) in enumerate(bad):
        headers = letters[b"bad%d" % i]
        assert reason in headers[ERROR_HEADER].decode(), headers[ERROR_HEADER]
        assert headers[ERROR_CLASS_HEADER].decode() == cls
    assert wait_for(lambda: c.value("ofs_consumer_persisted_messages_total", topic=topic) == 1)
    assert (
        c.value("ofs_consumer_dead_lettered_messages_total", topic=topic, error="ResourceExhaustedError") == 1
    )
    features = {"emb": [f"f{i}" for i in range(N_FEATURES)]}
    with FeatureStore(url, data_directory=tmp_path) as fs:
        got = fs.retrieve("user", ["u0", "u100"], features)
        assert got.values["emb"][0].tolist() == row_values(0), "u0 not reset to its defaults"
        assert got.status["emb"].tolist() == [0, 1], "nothing of the 6-row message written"
    c.stop()


def test_max_rows_per_persist_setting() -> None:
    assert ConsumerConfig().max_rows_per_persist == 100_000
    with pytest.raises(InvalidInputError, match="'max_rows_per_persist' must be at least 1"):
        ConsumerConfig(max_rows_per_persist=0).check()
