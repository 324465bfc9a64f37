"""The gRPC server over loopback: wire compatibility (hand-assembled bytes), errors, auth, health."""

from __future__ import annotations

import copy
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from online_feature_store.feature_store import FeatureStore
from online_feature_store.registry.spec import reconcile
from online_feature_store.registry.sqlite import SqliteRegistry
from online_feature_store.registry.yaml_io import parse_spec
from online_feature_store.server.app import ServerConfig, build_server, mark_serving

ROOT = Path(__file__).resolve().parents[2]

READER_TOKEN = "r-secret-token-for-tests-0123456789"
WRITER_TOKEN = "w-secret-token-for-tests-0123456789"
TOKENS = {"R_TOKEN": READER_TOKEN, "W_TOKEN": WRITER_TOKEN}
"""Environment of the DOC's callers' ``token_env`` (tokens must be at least 32 characters)."""

DOC: dict[str, Any] = {
    "stores": [{"id": "main", "kind": "sqlite", "settings": {"path": "store.db"}}],
    "callers": [
        {"id": "ranker", "role": "reader", "token_env": "R_TOKEN"},
        {"id": "ingest", "role": "writer", "token_env": "W_TOKEN"},
    ],
    "entities": [
        {
            "label": "user",
            "keys": [{"label": "user_id", "column": "uid"}],
            "feature_groups": [
                {
                    "label": "g",
                    "data_type": "fp32",
                    "store": "main",
                    "features": [{"label": "a", "default": 1.5}, {"label": "b", "default": -1.0}],
                }
            ],
        }
    ],
}


def _string(field: int, s: str) -> bytes:
    b = s.encode()
    return bytes([field << 3 | 2, len(b)]) + b


def _message(field: int, body: bytes) -> bytes:
    return bytes([field << 3 | 2, len(body)]) + body


def retrieve_query(keys: list[str], features: list[str]) -> bytes:
    """retrieve.Query assembled from the field numbers of the facts file, not from generated code."""
    fg = _string(1, "g") + b"".join(_string(2, f) for f in features)
    return (
        _string(1, "user")
        + _message(2, fg)
        + _string(3, "user_id")
        + b"".join(_message(4, _string(1, k)) for k in keys)
    )


def persist_query(key: str, b_value: float) -> bytes:
    """persist.Query{user, [user_id], [{g, [b]}], [{[key], [{values: {fp32_values: [b_value]}}]}]}"""
    values = _message(1, struct.pack("<d", b_value))  # packed repeated double, field 1
    data = _string(1, key) + _message(2, _message(1, values))
    return (
        _string(1, "user")
        + _string(2, "user_id")
        + _message(3, _string(1, "g") + _string(2, "b"))
        + _message(4, data)
    )


def parse(buf: bytes) -> list[tuple[int, int, Any]]:
    """Minimal protobuf reader: (field, wire type, value) for varint and length-delimited fields."""
    out, i = [], 0
    while i < len(buf):
        tag, i = _varint(buf, i)
        field, wt = tag >> 3, tag & 7
        if wt == 0:
            v, i = _varint(buf, i)
            out.append((field, wt, v))
        elif wt == 2:
            n, i = _varint(buf, i)
            out.append((field, wt, buf[i : i + n]))
            i += n
        else:
            raise AssertionError(f"unexpected wire type {wt}")
    return out


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return result, i


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[grpc.Channel, FeatureStore]]:
    registry = SqliteRegistry(tmp_path / "registry.db")
    spec = parse_spec(DOC, env=TOKENS)
    registry.apply(lambda s: reconcile(s, spec))
    fs = FeatureStore(registry, data_directory=tmp_path)
    auth = getattr(request, "param", False)
    srv, port, health = build_server(fs, ServerConfig(port=0, auth=auth))
    srv.start()
    mark_serving(fs, health)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield channel, fs
    channel.close()
    srv.stop(0).wait()
    fs.close()
    registry.close()


def call(channel: grpc.Channel, method: str, body: bytes, metadata: Any = None) -> bytes:
    fn = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    out: bytes = fn(body, timeout=10, metadata=metadata)
    return out


RETRIEVE = "/retrieve.FeatureService/RetrieveFeatures"
PERSIST = "/persist.FeatureService/PersistFeatures"


def test_hand_assembled_round_trip(server: tuple[grpc.Channel, FeatureStore]) -> None:
    channel, _ = server
    reply = call(channel, PERSIST, persist_query("u1", 2.5))
    assert parse(reply) == [(2, 2, b"Data Persisted Successfully")]
    result = parse(call(channel, RETRIEVE, retrieve_query(["u1", "u9"], ["b", "a"])))
    assert result[0] == (1, 2, b"user")
    assert result[1] == (2, 2, b"user_id")
    schema = parse(result[2][2])
    assert schema[0] == (1, 2, b"g")
    # Feature{label, column_idx (0 omitted), data_type = 3: DataTypeFP32 (4), vector_length 0 omitted}
    assert [parse(f[2]) for f in schema[1:]] == [
        [(1, 2, b"b"), (3, 0, 4)],
        [(1, 2, b"a"), (2, 0, 1), (3, 0, 4)],
    ]
    rows = [parse(r[2]) for r in result[3:]]
    assert rows[0] == [
        (1, 2, b"u1"),
        (2, 2, struct.pack("<f", 2.5)),
        (2, 2, struct.pack("<f", 1.5)),
        (3, 2, b"\x00"),
    ]
    assert rows[1] == [
        (1, 2, b"u9"),
        (2, 2, struct.pack("<f", -1.0)),
        (2, 2, struct.pack("<f", 1.5)),
        (3, 2, b"\x01"),
    ]


def test_decoded_result(server: tuple[grpc.Channel, FeatureStore]) -> None:
    from online_feature_store._proto import retrieve_pb2

    channel, _ = server
    call(channel, PERSIST, persist_query("u1", 0.1))
    raw = call(
        channel, "/retrieve.FeatureService/RetrieveDecodedResult", retrieve_query(["u1", "u2"], ["b", "a"])
    )
    decoded = retrieve_pb2.DecodedResult.FromString(raw)
    assert [list(r.columns) for r in decoded.rows] == [["0.1", "1.5"], ["-1", "1.5"]]
    assert list(decoded.keys_schema) == ["user_id"]


@pytest.mark.parametrize(
    ("method", "body", "code", "text"),
    [
        (RETRIEVE, retrieve_query(["u1"], ["zz"]), grpc.StatusCode.NOT_FOUND, "user/g/zz"),
        (RETRIEVE, retrieve_query([], ["a"]), grpc.StatusCode.INVALID_ARGUMENT, "no keys"),
        (RETRIEVE, b"\xff\xff\xff", grpc.StatusCode.INVALID_ARGUMENT, "malformed"),
        (PERSIST, persist_query("u1", 1e300), grpc.StatusCode.INVALID_ARGUMENT, "out of range"),
    ],
)
def test_errors_map_to_status_codes(
    server: tuple[grpc.Channel, FeatureStore], method: str, body: bytes, code: grpc.StatusCode, text: str
) -> None:
    channel, _ = server
    with pytest.raises(grpc.RpcError) as info:
        call(channel, method, body)
    assert info.value.code() == code
    assert text in (info.value.details() or "")


@pytest.mark.parametrize("server", [True], indirect=True)
def test_auth_matrix(server: tuple[grpc.Channel, FeatureStore]) -> None:
    channel, _ = server
    q = retrieve_query(["u1"], ["a"])
    cases = [
        (None, grpc.StatusCode.INVALID_ARGUMENT),
        (
            (("online-feature-store-caller-id", "ranker"), ("online-feature-store-auth-token", "bad")),
            "unauth",
        ),
        (
            (("online-feature-store-caller-id", "ingest"), ("online-feature-store-auth-token", WRITER_TOKEN)),
            "denied",
        ),
    ]
    expected = {"unauth": grpc.StatusCode.UNAUTHENTICATED, "denied": grpc.StatusCode.PERMISSION_DENIED}
    for md, code in cases:
        with pytest.raises(grpc.RpcError) as info:
            call(channel, RETRIEVE, q, metadata=md)
        assert info.value.code() == expected.get(str(code), code)
    reader = (("online-feature-store-caller-id", "ranker"), ("online-feature-store-auth-token", READER_TOKEN))
    assert call(channel, RETRIEVE, q, metadata=reader)
    with pytest.raises(grpc.RpcError) as info:  # a reader token cannot persist
        call(channel, PERSIST, persist_query("u1", 1.0), metadata=reader)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    writer = (("online-feature-store-caller-id", "ingest"), ("online-feature-store-auth-token", WRITER_TOKEN))
    assert call(channel, PERSIST, persist_query("u1", 1.0), metadata=writer)


def test_health_and_concurrent_calls(server: tuple[grpc.Channel, FeatureStore]) -> None:
    channel, _ = server
    stub = health_pb2_grpc.HealthStub(channel)
    assert (
        stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status
        == health_pb2.HealthCheckResponse.SERVING
    )
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for j in range(20):
                call(channel, PERSIST, persist_query(f"k{i}", float(j)))
                parse(call(channel, RETRIEVE, retrieve_query([f"k{i}"], ["b"])))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_the_native_front_serves_the_contract_methods() -> None:
    from online_feature_store._native import FRONT_METHODS
    from online_feature_store.contract import RPCS

    assert sorted(FRONT_METHODS) == sorted(rpc.path for rpc in RPCS.values())


def calls_in_python(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the methods :meth:`Calls.run` runs from now on (the calls the front hands to Python)."""
    from online_feature_store.server.calls import Calls

    ran: list[str] = []
    original = Calls.run

    def counted(self: Calls, method: Any, *args: Any, **kwargs: Any) -> bytes:
        ran.append(method.name)
        return original(self, method, *args, **kwargs)

    monkeypatch.setattr(Calls, "run", counted)
    return ran


def test_the_native_front_answers_retrieves_and_persists_without_python(
    server: tuple[grpc.Channel, FeatureStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    channel, _ = server
    # The first persist opens the store (through Calls.run, once); from then on nothing enters Python.
    call(channel, PERSIST, persist_query("u1", 2.5))
    ran = calls_in_python(monkeypatch)
    for _ in range(5):
        call(channel, RETRIEVE, retrieve_query(["u1", "u2"], ["b"]))
        call(channel, "/retrieve.FeatureService/RetrieveDecodedResult", retrieve_query(["u1"], ["a"]))
    # u2 is cached as missing, u1 with 2.5: a native persist drops both from the in-process cache.
    ok = [(2, 2, b"Data Persisted Successfully")]
    for key, value in [("u2", 1.0), ("u1", 4.0)]:
        assert parse(call(channel, PERSIST, persist_query(key, value))) == ok
    result = parse(call(channel, RETRIEVE, retrieve_query(["u1", "u2"], ["b"])))
    b_values = [parse(r[2])[1][2] for r in result[3:]]
    assert b_values == [struct.pack("<f", 4.0), struct.pack("<f", 1.0)]
    # A persist of 100 KB is parsed off the front's serving threads, still without Python.
    from online_feature_store._proto import persist_pb2

    rows = [
        persist_pb2.Data(
            key_values=[f"k{i}"],
            feature_values=[persist_pb2.FeatureValues(values=persist_pb2.Values(fp32_values=[i, i + 0.5]))],
        )
        for i in range(4000)
    ]
    big = persist_pb2.Query(
        entity_label="user",
        keys_schema=["user_id"],
        feature_group_schema=[persist_pb2.FeatureGroupSchema(label="g", feature_labels=["a", "b"])],
        data=rows,
    ).SerializeToString()
    assert len(big) > 64 * 1024
    assert parse(call(channel, PERSIST, big)) == ok
    result = parse(call(channel, RETRIEVE, retrieve_query(["k3999"], ["b"])))
    assert parse(result[3][2])[1][2] == struct.pack("<f", 3999.5)
    assert ran == []


def test_a_registry_change_reaches_the_front(tmp_path: Path) -> None:
    """A feature group added to the registry is served by the next calls (the native front is handed the
    new revision's catalog by the registry watch)."""
    registry = SqliteRegistry(tmp_path / "registry.db")
    registry.apply(lambda s: reconcile(s, parse_spec(DOC, env=TOKENS)))
    fs = FeatureStore(registry, data_directory=tmp_path, poll_interval=0.05)
    srv, port, health = build_server(fs, ServerConfig(port=0))
    srv.start()
    mark_serving(fs, health)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.RpcError) as info:
                call(channel, RETRIEVE, retrieve_query(["u1"], ["c"]))
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            before = fs.snapshot.revision
            doc = copy.deepcopy(DOC)
            doc["entities"][0]["feature_groups"][0]["features"].append({"label": "c", "default": 7.0})
            registry.apply(lambda s: reconcile(s, parse_spec(doc, env=TOKENS)))
            deadline = time.monotonic() + 30
            while fs.snapshot.revision == before and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.2)  # the watch hands the compiled revision on right after the swap
            rows = parse(call(channel, RETRIEVE, retrieve_query(["u1"], ["c"])))[3:]
            assert parse(rows[0][2])[1] == (2, 2, struct.pack("<f", 7.0))
    finally:
        srv.stop(0).wait()
        fs.close()
        registry.close()


def test_quick_start_script(tmp_path: Path) -> None:
    """The README's run command works end to end (bootstrap is idempotent, so this is quick)."""
    env = {
        **__import__("os").environ,
        "OFS_DATA_DIR": str(tmp_path / "qs"),
        "OFS_PORT": "18931",
        "OFS_METRICS_PORT": "0",
    }
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "run"), "--once"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "first retrieval" in done.stdout
    assert "Data Persisted Successfully" in done.stdout
    # ofs rpc: the service list and a decoded retrieval learned through reflection.
    assert "retrieve.FeatureService" in done.stdout
    assert '"keys": [\n        "u9"' in done.stdout
    assert sys.executable


def test_io_threads_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """``io_threads`` 0 shares the CPUs the process may use among its workers (at least one each)."""
    import os

    from online_feature_store.errors import InvalidInputError
    from online_feature_store.server.main import io_threads, load_config

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3, 4, 5, 6, 7})
    assert io_threads(0, 1) == 8
    assert io_threads(0, 3) == 2
    assert io_threads(0, 16) == 1
    assert io_threads(5, 16) == 5
    with pytest.raises(InvalidInputError, match="io_threads must be 0"):
        io_threads(-1, 1)
    monkeypatch.setenv("OFS_IO_THREADS", "3")
    assert load_config(None, {})[0].io_threads == 3
