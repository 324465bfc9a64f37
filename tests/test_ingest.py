"""The producer SDK: encoding, packing under the size limit, key routing, the gRPC sink against a real
in-process server, the Kafka sink against the real broker, DataFrames and the Spark partition function."""

from __future__ import annotations

import functools
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pandas as pd
import pytest
from _services import require_service

from online_feature_store import InvalidInputError, NotFoundError, OfsError
from online_feature_store._proto import persist_pb2
from online_feature_store.errors import AuthError, DeadlineExceededError
from online_feature_store.feature_store import FeatureStore
from online_feature_store.ingest import (
    FeatureGroupValues,
    GrpcSink,
    KafkaSink,
    encode_query,
    pack,
    push,
    push_frame,
    spark_partition_writer,
)
from online_feature_store.registry.spec import reconcile
from online_feature_store.registry.sqlite import SqliteRegistry
from online_feature_store.registry.yaml_io import parse_spec
from online_feature_store.server.app import ServerConfig, build_server, mark_serving
from online_feature_store.store.keys import encode_key
from online_feature_store.types import DataType

KAFKA = ("127.0.0.1", 19092)

DOC: dict[str, Any] = {
    "stores": [{"id": "main", "kind": "sqlite", "settings": {"path": "store.db"}}],
    "callers": [{"id": "job", "role": "writer", "token_env": "W_TOKEN"}],
    "entities": [
        {
            "label": "user",
            "keys": [{"label": "user_id", "column": "uid"}, {"label": "region", "column": "rg"}],
            "feature_groups": [
                {
                    "label": "emb",
                    "data_type": "fp32",
                    "store": "main",
                    "features": [{"label": f"f{i}", "default": 0.0} for i in range(3)],
                },
                {
                    "label": "vec",
                    "data_type": "int64vector",
                    "store": "main",
                    "features": [{"label": "v", "vector_length": 2, "default": [0, 0]}],
                },
                {
                    "label": "names",
                    "data_type": "string",
                    "store": "main",
                    "features": [{"label": "city", "string_length": 16, "default": ""}],
                },
            ],
        }
    ],
}


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[FeatureStore]:
    registry = SqliteRegistry(tmp_path / "registry.db")
    spec = parse_spec(DOC, env={"W_TOKEN": "w-secret-token-for-tests-0123456789"})
    registry.apply(lambda s: reconcile(s, spec))
    store = FeatureStore(registry, data_directory=tmp_path, cache_bytes=0)
    yield store
    store.close()
    registry.close()


class ListSink:
    """Collects messages (a test double for the transport only; the bytes are checked for real)."""

    def __init__(self, partitions: int = 1, max_message_bytes: int = 1_000_000) -> None:
        self.n = partitions
        self.max_message_bytes = max_message_bytes
        self.sent: list[tuple[bytes, int | None]] = []
        self.flushed = 0

    def partitions(self) -> int:
        return self.n

    def send(self, payload: bytes, partition: int | None) -> None:
        self.sent.append((payload, partition))

    def flush(self) -> None:
        self.flushed += 1

    def close(self) -> None:
        pass


def _groups(rows: int) -> list[FeatureGroupValues]:
    emb = np.arange(rows * 3, dtype=np.float32).reshape(rows, 3) / 4
    vec = np.arange(rows * 2, dtype=np.int64).reshape(rows, 1, 2)
    return [
        FeatureGroupValues("emb", DataType.FP32, ["f0", "f1", "f2"], emb),
        FeatureGroupValues("vec", DataType.INT64_VECTOR, ["v"], vec),
        FeatureGroupValues("names", DataType.STRING, ["city"], [f"c{r}" for r in range(rows)]),
    ]


def test_encode_query_matches_the_proto(fs: FeatureStore) -> None:
    keys = [["u1", "in"], ["u2", "us"]]
    q = persist_pb2.Query.FromString(encode_query("user", ["user_id", "region"], keys, _groups(2)))
    assert q.entity_label == "user"
    assert list(q.keys_schema) == ["user_id", "region"]
    assert [g.label for g in q.feature_group_schema] == ["emb", "vec", "names"]
    assert list(q.data[1].key_values) == ["u2", "us"]
    emb, vec, names = q.data[1].feature_values
    assert list(emb.values.fp32_values) == [0.75, 1.0, 1.25]
    assert list(vec.values.vector[0].values.int64_values) == [2, 3]
    assert list(names.values.string_values) == ["c1"]
    # The store accepts it as is.
    assert fs.persist_wire(encode_query("user", ["user_id", "region"], keys, _groups(2))) == 6


def test_prepared_writes_name_their_keys_as_the_stores_do(fs: FeatureStore) -> None:
    # Keys given in the other order than the registry's, with the characters the encoding escapes,
    # and one key twice: the names are the canonical strings of the distinct keys, in order.
    keys = [["in", "a|b"], ["u\\s", "c:d"], ["in", "a|b"]]
    emb = FeatureGroupValues("emb", DataType.FP32, ["f0", "f1", "f2"], np.zeros((3, 3), dtype=np.float32))
    prepared = fs.prepare_wire(encode_query("user", ["region", "user_id"], keys, [emb]))
    assert prepared.names == [encode_key(("a|b", "in")), encode_key(("c:d", "u\\s"))]
    assert prepared.blocks == 3
    # Each write carries its key's string too, which the stores use instead of encoding it again.
    writes = [w for ws in prepared.writes.values() for w in ws]
    assert [w.name for w in writes] == [encode_key(w.key) for w in writes]
    assert [w.key for w in writes] == [("a|b", "in"), ("c:d", "u\\s"), ("a|b", "in")]


def test_write_prepared_writes_many_requests_at_once_and_the_later_one_wins(fs: FeatureStore) -> None:
    def request(value: float, users: list[str]) -> bytes:
        values = np.full((len(users), 3), value, dtype=np.float32)
        emb = FeatureGroupValues("emb", DataType.FP32, ["f0", "f1", "f2"], values)
        return encode_query("user", ["user_id", "region"], [[u, "in"] for u in users], [emb])

    old = fs.prepare_wire(request(1.0, ["u1", "u2"]))
    new = fs.prepare_wire(request(2.0, ["u2", "u3"]))
    # Nothing is written before write_prepared.
    assert (fs.retrieve("user", [("u1", "in")], {"emb": ["f0"]}).status["emb"] == 1).all()
    assert fs.write_prepared([old, new]) == 4
    got = fs.retrieve("user", [("u1", "in"), ("u2", "in"), ("u3", "in")], {"emb": ["f0", "f2"]})
    assert got.values["emb"].tolist() == [[1.0, 1.0], [2.0, 2.0], [2.0, 2.0]]


def test_pack_keeps_every_row_in_order_under_the_limit() -> None:
    rows = 500
    keys = [[f"u{r}", "in"] for r in range(rows)]
    messages = list(pack("user", ["user_id", "region"], keys, _groups(rows), max_message_bytes=4000))
    assert len(messages) > 5
    assert all(len(p) <= 4000 for p, _ in messages)
    got = [list(d.key_values) for p, _ in messages for d in persist_pb2.Query.FromString(p).data]
    assert got == keys
    assert sum(n for _, n in messages) == rows
    with pytest.raises(InvalidInputError, match="over the message limit"):
        list(pack("user", ["user_id", "region"], keys, _groups(rows), max_message_bytes=20))
    with pytest.raises(InvalidInputError, match="3 rows for 2 keys"):
        list(pack("user", ["user_id", "region"], keys[:2], _groups(3)))


def test_pack_keeps_messages_under_the_default_row_limit() -> None:
    """Tiny rows fill a large message with more rows than a persist may carry (max_rows_per_persist,
    100,000 by default, which the servers and the consumer enforce): pack splits there too."""
    from online_feature_store.limits import DEFAULT_MAX_ROWS_PER_PERSIST

    rows = DEFAULT_MAX_ROWS_PER_PERSIST + 1
    keys = [["k", "r"]] * rows
    group = FeatureGroupValues("small", DataType.INT8, ["n"], np.zeros((rows, 1), dtype=np.int8))
    sizes = [n for _, n in pack("user", ["user_id", "region"], keys, [group], max_message_bytes=64 << 20)]
    assert sizes == [DEFAULT_MAX_ROWS_PER_PERSIST, 1]


def test_push_routes_each_key_to_one_partition(fs: FeatureStore) -> None:
    sink = ListSink(partitions=4, max_message_bytes=2000)
    keys = [(f"u{r}", "in") for r in range(300)]
    values = np.random.default_rng(1).random((300, 3), dtype=np.float32)
    result = push(sink, "user", keys, {"emb": values}, registry=fs)
    assert result.rows == 300
    assert result.messages == len(sink.sent)
    assert sink.flushed == 1
    where: dict[str, int | None] = {}
    for payload, partition in sink.sent:
        assert partition is not None
        assert 0 <= partition < 4
        for d in persist_pb2.Query.FromString(payload).data:
            where[d.key_values[0]] = partition
    assert len(where) == 300
    assert len(set(where.values())) == 4
    # Same keys, key columns listed in the other order: same partitions.
    again = ListSink(partitions=4)
    swapped = [(r, u) for u, r in keys]
    push(again, "user", swapped, {"emb": values}, keys_schema=["region", "user_id"], registry=fs)
    for payload, partition in again.sent:
        for d in persist_pb2.Query.FromString(payload).data:
            assert where[d.key_values[1]] == partition
    for payload, _ in sink.sent:
        fs.persist_wire(payload)
    r = fs.retrieve("user", keys, {"emb": ["f0", "f1", "f2"]})
    assert np.array_equal(r.values["emb"], values)


def test_push_needs_types_or_a_registry() -> None:
    with pytest.raises(InvalidInputError, match="data type"):
        push(ListSink(), "user", [("u", "r")], {"emb": np.zeros((1, 3))})
    sink = ListSink()
    push(
        sink,
        "user",
        [("u", "r")],
        {"emb": np.zeros((1, 3))},
        features={"emb": ["f0", "f1", "f2"]},
        data_types={"emb": "fp32"},
        keys_schema=["user_id", "region"],
    )
    assert len(sink.sent) == 1
    with pytest.raises(InvalidInputError, match="shape"):
        push(
            ListSink(),
            "user",
            [("u", "r")],
            {"emb": np.zeros((1, 4))},
            data_types={"emb": "fp32"},
            features={"emb": ["f0", "f1", "f2"]},
            keys_schema=["user_id", "region"],
        )


def test_push_frame_and_the_spark_partition_function(fs: FeatureStore, tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "user_id": ["a", "b", "c"],
            "region": ["in", "in", "us"],
            "f0": [0.5, 1.5, 2.5],
            "emb.f1": [1.0, 2.0, 3.0],
            "f2": [9.0, 8.0, 7.0],
            "v": [np.array([1, 2]), np.array([3, 4]), np.array([5, 6])],
            "city": ["x", "y", "z"],
        }
    )
    sink = ListSink()
    push_frame(sink, "user", frame, feature_groups=["emb", "vec", "names"], registry=fs, progress=True)
    for payload, _ in sink.sent:
        fs.persist_wire(payload)
    keys = [("a", "in"), ("b", "in"), ("c", "us")]
    r = fs.retrieve("user", keys, {"emb": ["f0", "f1", "f2"], "vec": ["v"], "names": ["city"]})
    assert r.values["emb"].tolist() == [[0.5, 1.0, 9.0], [1.5, 2.0, 8.0], [2.5, 3.0, 7.0]]
    assert r.values["vec"].tolist() == [[[1, 2]], [[3, 4]], [[5, 6]]]
    assert r.values["names"] == [["x"], ["y"], ["z"]]

    # foreachPartition hands the function an iterator of Rows (mappings here; pyspark Rows have asDict).
    sinks: list[ListSink] = []

    def factory() -> ListSink:
        sinks.append(ListSink())
        return sinks[-1]

    write = spark_partition_writer(
        factory,
        "user",
        feature_groups={"emb": ["f0", "f2"]},
        registry=f"sqlite:///{tmp_path / 'registry.db'}",
        chunk_rows=2,
    )
    rows = [{"user_id": f"s{i}", "region": "eu", "f0": float(i), "f2": -float(i)} for i in range(5)]
    write(iter(rows))
    assert len(sinks) == 1
    assert sinks[0].flushed == 1
    for payload, _ in sinks[0].sent:
        fs.persist_wire(payload)
    r = fs.retrieve("user", [(f"s{i}", "eu") for i in range(5)], {"emb": ["f0", "f2"]})
    assert r.values["emb"].tolist() == [[float(i), -float(i)] for i in range(5)]
    with pytest.raises(InvalidInputError, match="no column"):
        push_frame(ListSink(), "user", frame.drop(columns=["f2"]), feature_groups=["emb"], registry=fs)


def test_pyarrow_tables_are_accepted(fs: FeatureStore) -> None:
    pa = pytest.importorskip("pyarrow")
    table = pa.table({"user_id": ["a"], "region": ["in"], "f0": [1.0], "f1": [2.0], "f2": [3.0]})
    sink = ListSink()
    push_frame(sink, "user", table, feature_groups=["emb"], registry=fs)
    fs.persist_wire(sink.sent[0][0])
    assert fs.retrieve("user", [("a", "in")], {"emb": ["f2"]}).values["emb"].tolist() == [[3.0]]


def test_grpc_sink_persists_through_the_server(fs: FeatureStore) -> None:
    srv, port, health = build_server(fs, ServerConfig(port=0, auth=True))
    srv.start()
    mark_serving(fs, health)
    try:
        keys = [(f"g{i}", "in") for i in range(50)]
        values = np.arange(150, dtype=np.float32).reshape(50, 3)
        target = f"127.0.0.1:{port}"
        with GrpcSink(
            target, caller_id="job", token="w-secret-token-for-tests-0123456789", max_message_bytes=600
        ) as sink:
            result = push(sink, "user", keys, {"emb": values}, registry=fs)
        assert result.messages > 1
        r = fs.retrieve("user", keys, {"emb": ["f0", "f1", "f2"]})
        assert np.array_equal(r.values["emb"], values)
        with (
            GrpcSink(target, caller_id="job", token="w-secret-token-for-tests-0123456789") as sink,
            pytest.raises(NotFoundError),
        ):
            push(
                sink,
                "user",
                keys[:1],
                {"nope": values[:1]},
                data_types={"nope": "fp32"},
                features={"nope": ["f0", "f1", "f2"]},
                registry=fs,
            )
        denied = pytest.raises(OfsError, match="UNAUTHENTICATED")
        with GrpcSink(target, caller_id="job", token="wrong") as sink, denied:
            push(sink, "user", keys[:1], {"emb": values[:1]}, registry=fs)
    finally:
        srv.stop(0).wait()


def test_grpc_sink_raises_the_client_errors(fs: FeatureStore) -> None:
    """The sink calls through ``Client``: a refused token is an ``AuthError`` and a call that times out a
    ``DeadlineExceededError`` (the sink's own copy of the table made both plain ``OfsError`` /
    ``UnavailableError``), each message still naming the status."""
    srv, port, health = build_server(fs, ServerConfig(port=0, auth=True))
    srv.start()
    mark_serving(fs, health)
    one = {"emb": np.zeros((1, 3), dtype=np.float32)}
    try:
        target = f"127.0.0.1:{port}"
        with (
            GrpcSink(target, caller_id="job", token="wrong") as sink,
            pytest.raises(AuthError, match="PersistFeatures: UNAUTHENTICATED: unknown caller"),
        ):
            push(sink, "user", [("a", "in")], one, registry=fs)
    finally:
        srv.stop(0).wait()
    # A server that takes the call and does not answer before the deadline.
    release = threading.Event()

    def hold(_request: bytes, _context: grpc.ServicerContext) -> bytes:
        release.wait(30)
        return b""

    slow = grpc.server(ThreadPoolExecutor(2))
    handler = grpc.unary_unary_rpc_method_handler(hold)
    slow.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("persist.FeatureService", {"PersistFeatures": handler})]
    )
    slow_port = slow.add_insecure_port("127.0.0.1:0")
    slow.start()
    try:
        with (
            GrpcSink(f"127.0.0.1:{slow_port}", timeout=0.5) as sink,
            pytest.raises(DeadlineExceededError, match="PersistFeatures: DEADLINE_EXCEEDED"),
        ):
            push(sink, "user", [("a", "in")], one, registry=fs)
    finally:
        release.set()
        slow.stop(0).wait()


def test_kafka_sink_sends_to_key_partitions(fs: FeatureStore) -> None:
    require_service("kafka", [KAFKA], "scripts/services/kafka start")
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
    from kafka.admin import NewTopic

    topic = f"ofs-test-{uuid.uuid4().hex[:12]}"
    admin = KafkaAdminClient(bootstrap_servers=f"{KAFKA[0]}:{KAFKA[1]}")
    admin.create_topics([NewTopic(topic, 3, 1)])
    try:
        make = functools.partial(KafkaSink, f"{KAFKA[0]}:{KAFKA[1]}", topic, max_message_bytes=3000)
        keys = [(f"k{i}", "in") for i in range(200)]
        values = np.ones((200, 3), dtype=np.float32)
        with make() as sink:
            assert sink.partitions() == 3
            result = push(sink, "user", keys, {"emb": values}, registry=fs)
        consumer = KafkaConsumer(bootstrap_servers=f"{KAFKA[0]}:{KAFKA[1]}", consumer_timeout_ms=10000)
        parts = [TopicPartition(topic, p) for p in range(3)]
        consumer.assign(parts)
        consumer.seek_to_beginning()
        got = []
        for record in consumer:
            got.append(record)
            if len(got) == result.messages:
                break
        consumer.close()
        assert len(got) == result.messages
        seen = [d.key_values[0] for r in got for d in persist_pb2.Query.FromString(r.value).data]
        assert sorted(seen) == sorted(k for k, _ in keys)
        assert len({r.partition for r in got}) == 3
    finally:
        admin.delete_topics([topic])
        admin.close()


def test_kafka_sink_is_idempotent_with_acks_all() -> None:
    # A retried batch must neither reorder (an older version of a key landing after a newer one) nor
    # duplicate: the broker-kill test (tests/consumer/test_kafka_cluster.py) relies on it.
    require_service("kafka", [KAFKA], "scripts/services/kafka start")
    with KafkaSink(f"{KAFKA[0]}:{KAFKA[1]}", f"ofs-test-{uuid.uuid4().hex[:12]}") as sink:
        config = sink._producer.config
        assert config["enable_idempotence"] is True
        assert config["acks"] == -1  # "all"
    with KafkaSink(f"{KAFKA[0]}:{KAFKA[1]}", "t", enable_idempotence=False, acks=1) as sink:
        assert sink._producer.config["enable_idempotence"] is False  # producer_options still win


def test_grpc_sink_needs_one_target() -> None:
    with pytest.raises(InvalidInputError):
        GrpcSink()
    channel = grpc.insecure_channel("127.0.0.1:1")
    try:
        with pytest.raises(InvalidInputError):
            GrpcSink("127.0.0.1:1", channel=channel)
    finally:
        channel.close()
