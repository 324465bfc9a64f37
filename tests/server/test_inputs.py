"""Bad input over gRPC against the example registry (scalars, vectors, strings, composite keys), big
requests, and deadlines. test_server.py covers malformed bytes, no keys, an unknown feature and an
out-of-range value; this file covers the rest of the matrix."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from test_metrics import scrape, value
from test_registry_health import wait_until
from test_server import call

from online_feature_store._proto import persist_pb2 as P  # noqa: N812  # short names keep the cases readable
from online_feature_store._proto import retrieve_pb2 as R  # noqa: N812
from online_feature_store.feature_store import FeatureStore
from online_feature_store.registry.spec import reconcile
from online_feature_store.registry.sqlite import SqliteRegistry
from online_feature_store.registry.yaml_io import parse_spec
from online_feature_store.server.app import ServerConfig, build_server, mark_serving
from online_feature_store.server.calls import METHODS, CallError, Calls, DeadlineExceededError, deadline_scope
from online_feature_store.server.metrics import ServerMetrics, serve_metrics, stop_metrics
from tests._sqlite_lock import write_lock

ROOT = Path(__file__).resolve().parents[2]
RETRIEVE = "/retrieve.FeatureService/RetrieveFeatures"
DECODED = "/retrieve.FeatureService/RetrieveDecodedResult"
PERSIST = "/persist.FeatureService/PersistFeatures"
MAX_MESSAGE = 1 << 20


@dataclass
class Served:
    channel: grpc.Channel
    fs: FeatureStore
    metrics_port: int
    store_path: Path


@contextmanager
def serving(tmp_path: Path) -> Iterator[Served]:
    doc = yaml.safe_load((ROOT / "examples" / "features.yaml").read_text())
    doc["stores"][0]["settings"]["path"] = "store.db"
    del doc["callers"]  # no auth here (hashing tokens is slow on purpose)
    registry = SqliteRegistry(tmp_path / "registry.db")
    registry.apply(lambda s: reconcile(s, parse_spec(doc)))
    fs = FeatureStore(registry, data_directory=tmp_path)
    metrics = ServerMetrics()
    config = ServerConfig(port=0, max_message_bytes=MAX_MESSAGE)
    srv, port, health = build_server(fs, config, metrics)
    httpd, metrics_port = serve_metrics(metrics.registry, "127.0.0.1", 0)
    srv.start()
    mark_serving(fs, health)
    channel = grpc.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 4 * MAX_MESSAGE)]
    )
    try:
        yield Served(channel, fs, metrics_port, tmp_path / "store.db")
    finally:
        channel.close()
        srv.stop(0).wait()
        stop_metrics(httpd)
        fs.close()
        registry.close()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server for the cases that leave nothing behind (or only keys no other case reads)."""
    with serving(tmp_path_factory.mktemp("inputs")) as served:
        yield served


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with serving(tmp_path) as served:
        yield served


def rq(
    entity: str = "user",
    fgs: Sequence[tuple[str, Sequence[str]]] = (("activity", ["ctr_7d"]),),
    schema: Sequence[str] = ("user_id",),
    keys: Sequence[Sequence[str]] = (("u1",),),
) -> bytes:
    return R.Query(
        entity_label=entity,
        feature_groups=[R.FeatureGroup(label=label, feature_labels=f) for label, f in fgs],
        keys_schema=schema,
        keys=[R.Keys(cols=k) for k in keys],
    ).SerializeToString()


def pq(
    entity: str = "user",
    schema: Sequence[str] = ("user_id",),
    fgs: Sequence[tuple[str, Sequence[str]]] = (("activity", ["ctr_7d"]),),
    data: Sequence[tuple[Sequence[str], Sequence[dict[str, Any]]]] = ((["u1"], [{"fp32_values": [1.0]}]),),
) -> bytes:
    return P.Query(
        entity_label=entity,
        keys_schema=schema,
        feature_group_schema=[P.FeatureGroupSchema(label=label, feature_labels=f) for label, f in fgs],
        data=[
            P.Data(key_values=k, feature_values=[P.FeatureValues(values=P.Values(**v)) for v in vs])
            for k, vs in data
        ],
    ).SerializeToString()


def vec(n: int) -> dict[str, Any]:
    return {"vector": [P.Vector(values=P.Values(fp32_values=[0.5] * n))]}


INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND

CASES = {
    # retrieve
    "retrieve empty request": (RETRIEVE, b"", INVALID, "names no entity"),
    "retrieve no keys": (RETRIEVE, rq(keys=()), INVALID, "has no keys"),
    "retrieve unknown entity": (RETRIEVE, rq(entity="nope"), NOT_FOUND, 'entity "nope"'),
    "retrieve unknown fg": (RETRIEVE, rq(fgs=(("nope", ["a"]),)), NOT_FOUND, "user/nope"),
    "retrieve no fg": (RETRIEVE, rq(fgs=()), INVALID, "names no feature group"),
    "retrieve fg without features": (
        RETRIEVE,
        rq(fgs=(("activity", []),)),
        INVALID,
        "user/activity lists no",
    ),
    "retrieve too many key values": (RETRIEVE, rq(keys=(("u1", "x"),)), INVALID, "key 0 has 2 values"),
    "retrieve unknown key label": (RETRIEVE, rq(schema=("uid",)), INVALID, 'lacks key "user_id"'),
    "retrieve composite key incomplete": (
        RETRIEVE,
        rq(entity="catalog", fgs=(("pricing", ["price"]),), schema=("catalog_id",), keys=(("c1",),)),
        INVALID,
        '"catalog" is keyed by ["catalog_id", "region"]',
    ),
    "retrieve unknown quantization": (
        RETRIEVE,
        rq(fgs=(("activity", ["ctr_7d@DataTypeNope"]),)),
        INVALID,
        '"DataTypeNope"',
    ),
    "decoded unknown feature": (DECODED, rq(fgs=(("profile", ["nope"]),)), NOT_FOUND, "user/profile/nope"),
    # persist
    "persist empty request": (PERSIST, b"", INVALID, "names no entity"),
    "persist no rows": (PERSIST, pq(data=()), INVALID, 'entity "user" has no rows'),
    "persist fg twice": (
        PERSIST,
        pq(fgs=(("activity", ["ctr_7d"]), ("activity", ["spend_30d"]))),
        INVALID,
        '"activity" is listed twice',
    ),
    "persist feature twice": (
        PERSIST,
        pq(fgs=(("activity", ["ctr_7d", "ctr_7d"]),), data=((["u1"], [{"fp32_values": [1.0, 2.0]}]),)),
        INVALID,
        'feature "ctr_7d" is listed twice',
    ),
    "persist empty key": (
        PERSIST,
        pq(data=(([""], [{"fp32_values": [1.0]}]),)),
        INVALID,
        'key value for "user_id" is empty',
    ),
    "persist unknown entity": (PERSIST, pq(entity="nope"), NOT_FOUND, 'entity "nope"'),
    "persist unknown fg": (PERSIST, pq(fgs=(("nope", ["a"]),)), NOT_FOUND, "user/nope"),
    "persist unknown feature": (PERSIST, pq(fgs=(("activity", ["nope"]),)), NOT_FOUND, "user/activity/nope"),
    "persist no fg": (PERSIST, pq(fgs=(), data=((["u1"], []),)), INVALID, "names no feature group"),
    "persist wrong key schema": (PERSIST, pq(schema=("nope",)), INVALID, 'lacks key "user_id"'),
    "persist too many key values": (
        PERSIST,
        pq(data=((["u1", "x"], [{"fp32_values": [1.0]}]),)),
        INVALID,
        "row 0: 2 key values",
    ),
    "persist missing value set": (PERSIST, pq(data=((["u1"], []),)), INVALID, "0 feature value sets for 1"),
    "persist too many values": (
        PERSIST,
        pq(data=((["u1"], [{"fp32_values": [1.0, 2.0]}]),)),
        INVALID,
        "user/activity: 2 values in fp32_values for 1 features",
    ),
    "persist no values": (
        PERSIST,
        pq(data=((["u1"], [{"fp32_values": []}]),)),
        INVALID,
        "0 values in fp32_values for 1 features",
    ),
    "persist wrong type": (
        PERSIST,
        pq(data=((["u1"], [{"int32_values": [1]}]),)),
        INVALID,
        "takes its values in fp32_values",
    ),
    "persist int64 into int32": (
        PERSIST,
        pq(fgs=(("counts", ["orders_total"]),), data=((["u1"], [{"int64_values": [2**40]}]),)),
        INVALID,
        "row 0, feature group user/counts",
    ),
    "persist vector too short": (
        PERSIST,
        pq(fgs=(("embedding", ["user_emb"]),), data=((["u1"], [vec(3)]),)),
        INVALID,
        '"user_emb": DataTypeFP16Vector block: expected 8 values, got 3',
    ),
    "persist vector too long": (
        PERSIST,
        pq(fgs=(("embedding", ["user_emb"]),), data=((["u1"], [vec(9)]),)),
        INVALID,
        "expected 8 values, got 9",
    ),
    "persist string too long": (
        PERSIST,
        pq(fgs=(("profile", ["language"]),), data=((["u1"], [{"string_values": ["x" * 9]}]),)),
        INVALID,
        "string of 9 bytes exceeds its booked length 8",
    ),
    "persist second row bad": (
        PERSIST,
        pq(data=((["u1"], [{"fp32_values": [1.0]}]), (["u2"], [{"fp32_values": [1.0, 2.0]}]))),
        INVALID,
        "row 1",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(shared: Served, case: str) -> None:
    method, body, code, text = CASES[case]
    with pytest.raises(grpc.RpcError) as info:
        call(shared.channel, method, body)
    assert info.value.code() == code
    assert text in (info.value.details() or "")
    # Nothing of a refused persist is written, not even its valid rows.
    found = R.Result.FromString(call(shared.channel, RETRIEVE, rq(keys=(("u1",),))))
    assert found.rows[0].columns[0] == struct.pack("<f", 0.0)


def test_ten_thousand_keys(shared: Served) -> None:
    n = 10_000
    rows = [([f"k{i}"], [{"fp32_values": [float(i), 2.0, 3.0]}]) for i in range(n)]
    body = pq(fgs=(("activity", ["ctr_7d", "sessions_7d", "spend_30d"]),), data=rows)
    assert P.Result.FromString(call(shared.channel, PERSIST, body)).message == "Data Persisted Successfully"
    # 10,000 keys: the default max_keys_per_request (tests/server/test_limits.py goes over it).
    keys = [(f"k{i}",) for i in range(n - 1)] + [("absent",)]
    result = R.Result.FromString(call(shared.channel, RETRIEVE, rq(keys=keys)))
    assert len(result.rows) == n
    assert [r.keys[0] for r in result.rows[:3]] == ["k0", "k1", "k2"]
    assert struct.unpack("<f", result.rows[9998].columns[0]) == (9998.0,)
    assert list(result.rows[n - 1].fg_status) == [1]  # nothing stored: defaults


def test_request_over_the_message_limit(shared: Served) -> None:
    keys = [(f"key-{i:08d}",) for i in range(MAX_MESSAGE // 16)]
    with pytest.raises(grpc.RpcError) as info:
        call(shared.channel, RETRIEVE, rq(keys=keys))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


# -- deadlines --------------------------------------------------------------------------------------------


def test_no_store_call_once_the_deadline_passed(served: Served) -> None:
    fs = served.fs
    with deadline_scope(time.monotonic() - 0.001), pytest.raises(DeadlineExceededError, match="store calls"):
        fs.retrieve_wire(rq())
    with deadline_scope(time.monotonic() - 0.001), pytest.raises(DeadlineExceededError, match="store calls"):
        fs.persist_wire(pq())
    calls = Calls(fs, auth=False, metrics=None)
    with pytest.raises(CallError) as info:
        calls.run(METHODS["RetrieveFeatures"], rq(), {}, deadline=time.monotonic() - 0.001)
    assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    m = scrape(served.metrics_port)
    assert value(m, "ofs_store_duration_seconds_count") == 0  # no read, no write started
    found = R.Result.FromString(call(served.channel, RETRIEVE, rq()))
    assert list(found.rows[0].fg_status) == [1]  # nothing was written


def test_deadline_passing_during_the_call(served: Served) -> None:
    # Another writer holds the store's write lock, so the persist waits (busy timeout) past its deadline.
    with write_lock(served.store_path), pytest.raises(grpc.RpcError) as info:
        served.channel.unary_unary(PERSIST)(pq(), timeout=0.5)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The server finds the deadline gone before answering and counts the call as such.
    wait_until(
        lambda: value(scrape(served.metrics_port), "ofs_requests_total", code="DEADLINE_EXCEEDED") == 1,
        "the server to count the expired call",
        timeout=30,
    )
    assert value(scrape(served.metrics_port), "ofs_requests_total", method="PersistFeatures", code="OK") == 0
    # A call with time to spare still goes through.
    assert served.channel.unary_unary(PERSIST)(pq(), timeout=10)


def test_a_corrupt_stored_block_is_data_loss_not_bad_input(served: Served) -> None:
    """Bytes in the store that do not decode are the server's problem: DATA_LOSS, never INVALID_ARGUMENT."""
    from online_feature_store.store.base import BlockWrite

    snapshot = served.fs.snapshot
    fg = snapshot.feature_group("user", "activity")
    served.fs.store(fg.store_id).write(
        snapshot.entity("user"), [BlockWrite(("u-bad",), fg.id, b"\x01\x00bad", 0)]
    )
    fn = served.channel.unary_unary(RETRIEVE, request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as err:
        fn(rq(keys=(("u-bad",),)), timeout=10)
    assert err.value.code() == grpc.StatusCode.DATA_LOSS
    assert "corrupt block" in (err.value.details() or "")
