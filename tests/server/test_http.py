"""The HTTP/JSON endpoints over loopback, served by the front: JSON in (snake_case), protojson out, the same
answers as gRPC, auth headers, the status mapping, body limits, keep-alive and readiness."""

from __future__ import annotations

import base64
import http.client
import json
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from test_metrics import FailingStore, scrape, value
from test_server import DOC, READER_TOKEN, RETRIEVE, TOKENS, WRITER_TOKEN, call, calls_in_python

from online_feature_store._proto import persist_pb2, retrieve_pb2
from online_feature_store.errors import UnavailableError
from online_feature_store.feature_store import FeatureStore
from online_feature_store.registry.spec import reconcile
from online_feature_store.registry.sqlite import SqliteRegistry
from online_feature_store.registry.yaml_io import parse_spec
from online_feature_store.server.app import (
    STATUS_OF,
    ServerConfig,
    build_server,
    mark_serving,
    readiness,
)
from online_feature_store.server.http import HTTP_STATUS
from online_feature_store.server.main import load_config
from online_feature_store.server.metrics import ServerMetrics, serve_metrics, stop_metrics
from online_feature_store.server.native_front import NativeHttp

READER = {"online-feature-store-caller-id": "ranker", "online-feature-store-auth-token": READER_TOKEN}
WRITER = {"online-feature-store-caller-id": "ingest", "online-feature-store-auth-token": WRITER_TOKEN}

RETRIEVE_JSON = {
    "entity_label": "user",
    "feature_groups": [{"label": "g", "feature_labels": ["b", "a"]}],
    "keys_schema": ["user_id"],
    "keys": [{"cols": ["u1"]}, {"cols": ["u9"]}],
}
PERSIST_JSON = {
    "entity_label": "user",
    "keys_schema": ["user_id"],
    "feature_group_schema": [{"label": "g", "feature_labels": ["b"]}],
    "data": [{"key_values": ["u1"], "feature_values": [{"values": {"fp32_values": [2.5]}}]}],
}


@dataclass
class Served:
    channel: grpc.Channel
    port: int
    metrics_port: int


class DownStore(FailingStore):
    """A store that is down, ping included."""

    def ping(self) -> None:
        raise UnavailableError("store main is down")


@pytest.fixture
def served(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Served]:
    """The HTTP API, served by the front next to its gRPC API."""
    param = getattr(request, "param", "")
    registry = SqliteRegistry(tmp_path / "registry.db")
    registry.apply(lambda s: reconcile(s, parse_spec(DOC, env=TOKENS)))
    stores = {"main": DownStore()} if param == "down" else None
    small = {"max_keys_per_request": 5, "max_rows_per_persist": 3} if param == "small limits" else {}
    fs = FeatureStore(registry, data_directory=tmp_path, stores=stores)
    metrics = ServerMetrics()
    srv, port, health = build_server(fs, ServerConfig(port=0, auth=param == "auth", **small), metrics)
    api = NativeHttp(srv, "127.0.0.1", 0, ready=lambda: readiness(fs), max_body_bytes=4096)
    httpd, metrics_port = serve_metrics(metrics.registry, "127.0.0.1", 0)
    srv.start()
    api.start()
    if param != "down":
        mark_serving(fs, health)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield Served(channel, api.port, metrics_port)
    channel.close()
    api.stop(1)
    srv.stop(0).wait()
    stop_metrics(httpd)
    fs.close()
    registry.close()


def request(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    conn: http.client.HTTPConnection | None = None,
) -> tuple[int, dict[str, Any]]:
    """(status, JSON body) of one request (on ``conn`` when given, else a fresh connection)."""
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        reply = conn.getresponse()
        raw = reply.read()
        assert reply.getheader("Content-Type") == "application/json"
        return reply.status, json.loads(raw) if raw else {}
    finally:
        if own:
            conn.close()


def fp32(b64: str) -> float:
    value: float = struct.unpack("<f", base64.b64decode(b64))[0]
    return value


def test_round_trip_and_protojson_shape(served: Served) -> None:
    status, body = request(served.port, "POST", "/api/v1/features/persist", PERSIST_JSON)
    assert (status, body) == (200, {"message": "Data Persisted Successfully"})
    status, body = request(served.port, "POST", "/api/v1/features/retrieve", RETRIEVE_JSON)
    assert status == 200
    assert body["entityLabel"] == "user"
    assert body["keysSchema"] == ["user_id"]
    (schema,) = body["featureSchemas"]
    assert schema["featureGroupLabel"] == "g"
    assert [(f["label"], f.get("columnIdx", 0)) for f in schema["features"]] == [("b", 0), ("a", 1)]
    rows = body["rows"]
    assert [r["keys"] for r in rows] == [["u1"], ["u9"]]
    assert [[fp32(c) for c in r["columns"]] for r in rows] == [[2.5, 1.5], [-1.0, 1.5]]
    # The same answer as gRPC, byte for byte once parsed back.
    grpc_reply = call(
        served.channel,
        RETRIEVE,
        json_format.Parse(json.dumps(RETRIEVE_JSON), retrieve_pb2.Query()).SerializeToString(),
    )
    assert json_format.Parse(json.dumps(body), retrieve_pb2.Result()).SerializeToString() == grpc_reply


def test_decoded_and_camel_case_input(served: Served) -> None:
    request(served.port, "POST", "/api/v1/features/persist", PERSIST_JSON)
    camel = json_format.MessageToDict(json_format.Parse(json.dumps(RETRIEVE_JSON), retrieve_pb2.Query()))
    assert "entityLabel" in camel
    status, body = request(served.port, "POST", "/api/v1/features/retrieve/decoded", camel)
    assert status == 200
    assert [r["columns"] for r in body["rows"]] == [["2.5", "1.5"], ["-1", "1.5"]]
    assert "entityLabel" not in body  # DecodedResult has no entity label


def test_health_self_and_ready(served: Served) -> None:
    assert request(served.port, "GET", "/health/self") == (200, {"message": "true"})
    status, body = request(served.port, "GET", "/health/ready")
    assert status == 200
    assert body["ready"] is True
    assert body["registry"]["healthy"] is True
    assert body["registry"]["revision"] > 0
    assert body["stores"] == {"main": {"reachable": True}}


@pytest.mark.parametrize("served", ["down"], indirect=True)
def test_store_down(served: Served) -> None:
    status, body = request(served.port, "GET", "/health/ready")
    assert status == 503
    assert body["ready"] is False
    assert body["stores"]["main"]["reachable"] is False
    assert "store main is down" in body["stores"]["main"]["error"]
    status, body = request(served.port, "POST", "/api/v1/features/retrieve", RETRIEVE_JSON)
    assert (status, body["code"]) == (503, "UNAVAILABLE")
    assert "store main is down" in body["error"]


def _bad(body: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**body, **changes}


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code", "text"),
    [
        (
            "POST",
            "/api/v1/features/retrieve",
            _bad(RETRIEVE_JSON, keys=[]),
            400,
            "INVALID_ARGUMENT",
            "no keys",
        ),
        (
            "POST",
            "/api/v1/features/retrieve",
            _bad(RETRIEVE_JSON, feature_groups=[{"label": "g", "feature_labels": ["zz"]}]),
            404,
            "NOT_FOUND",
            "user/g/zz",
        ),
        (
            "POST",
            "/api/v1/features/retrieve",
            _bad(RETRIEVE_JSON, entity_label="nope"),
            404,
            "NOT_FOUND",
            "nope",
        ),
        (
            "POST",
            "/api/v1/features/retrieve",
            _bad(RETRIEVE_JSON, colour="red"),
            400,
            "INVALID_ARGUMENT",
            "colour",
        ),
        (
            "POST",
            "/api/v1/features/retrieve",
            _bad(RETRIEVE_JSON, keys="u1"),
            400,
            "INVALID_ARGUMENT",
            "keys",
        ),
        ("POST", "/api/v1/features/retrieve", b"{not json", 400, "INVALID_ARGUMENT", "retrieve.Query"),
        ("POST", "/api/v1/features/retrieve", b"\xff\xfe", 400, "INVALID_ARGUMENT", "retrieve.Query"),
        (
            "POST",
            "/api/v1/features/persist",
            _bad(
                PERSIST_JSON,
                data=[{"key_values": ["u1"], "feature_values": [{"values": {"fp32_values": [1e300]}}]}],
            ),
            400,
            "INVALID_ARGUMENT",
            "out of range",
        ),
        (
            "POST",
            "/api/v1/features/retrieve",
            b"x" * 5000,
            413,
            "RESOURCE_EXHAUSTED",
            "over the limit of 4096",
        ),
        ("GET", "/api/v1/features/retrieve", None, 405, "UNIMPLEMENTED", "takes POST"),
        ("POST", "/health/self", b"{}", 405, "UNIMPLEMENTED", "takes GET"),
        ("POST", "/api/v2/nothing", b"{}", 404, "NOT_FOUND", "no endpoint /api/v2/nothing"),
        ("GET", "/nothing", None, 404, "NOT_FOUND", "no endpoint /nothing"),
        ("PUT", "/api/v1/features/retrieve", b"{}", 501, "UNIMPLEMENTED", "Unsupported method ('PUT')"),
    ],
)
def test_errors_map_to_http_status(
    served: Served, method: str, path: str, body: Any, status: int, code: str, text: str
) -> None:
    got, reply = request(served.port, method, path, body)
    assert (got, reply["code"]) == (status, code), reply
    assert text in reply["error"]


@pytest.mark.parametrize("served", ["small limits"], indirect=True)
def test_bodies_over_the_key_and_row_limits_are_refused_as_the_wire_path_refuses_them(served: Served) -> None:
    """A body naming more keys or rows than the limits is counted before any message is built, and
    refused with the gRPC path's status and message."""
    keys = [{"cols": [f"u{i}"]} for i in range(40)]
    got, reply = request(served.port, "POST", "/api/v1/features/retrieve", dict(RETRIEVE_JSON, keys=keys))
    assert (got, reply["code"]) == (429, "RESOURCE_EXHAUSTED"), reply
    assert "40 keys" in reply["error"], reply
    assert "max_keys_per_request" in reply["error"], reply
    rows = dict(PERSIST_JSON, data=PERSIST_JSON["data"] * 10)
    got, reply = request(served.port, "POST", "/api/v1/features/persist", rows)
    assert (got, reply["code"]) == (429, "RESOURCE_EXHAUSTED"), reply
    assert "max_rows_per_persist" in reply["error"], reply
    # Within the limits, the same bodies are served.
    assert (
        request(served.port, "POST", "/api/v1/features/retrieve", dict(RETRIEVE_JSON, keys=keys[:5]))[0]
        == 200
    )
    assert request(served.port, "POST", "/api/v1/features/persist", dict(PERSIST_JSON))[0] == 200


def test_bodies_without_length_are_refused(served: Served) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    try:
        conn.request("POST", "/api/v1/features/retrieve", body=iter([b"{}"]), encode_chunked=True)
        reply = conn.getresponse()
        assert reply.status == 411
        assert "Content-Length" in json.loads(reply.read())["error"]
    finally:
        conn.close()


def test_keep_alive_and_metrics(served: Served) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    try:
        assert request(served.port, "POST", "/api/v1/features/persist", PERSIST_JSON, conn=conn)[0] == 200
        for _ in range(3):
            assert (
                request(served.port, "POST", "/api/v1/features/retrieve", RETRIEVE_JSON, conn=conn)[0] == 200
            )
        assert request(served.port, "POST", "/api/v1/features/retrieve", {}, conn=conn)[0] == 400
        sock = conn.sock
        assert request(served.port, "GET", "/health/ready", conn=conn)[0] == 200
        assert conn.sock is sock  # one connection throughout
    finally:
        conn.close()
    m = scrape(served.metrics_port)
    total = "ofs_requests_total"
    assert value(m, total, method="http:PersistFeatures", code="OK") == 1
    assert value(m, total, method="http:RetrieveFeatures", code="OK") == 3
    assert value(m, total, method="http:RetrieveFeatures", code="INVALID_ARGUMENT") == 1
    assert value(m, "ofs_request_rows_sum", method="http:RetrieveFeatures", entity="user") == 6
    assert value(m, "ofs_requests_in_flight") == 0


def test_the_native_front_serves_http_retrieves_and_persists_without_python(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the native front the JSON is converted natively and a retrieve or persist through native tiers
    takes the gRPC call's path, Python never entered (the store is open: the fixture wrote to it)."""
    ran = calls_in_python(monkeypatch)
    assert request(served.port, "POST", "/api/v1/features/persist", PERSIST_JSON)[0] == 200
    for path in ("/api/v1/features/retrieve", "/api/v1/features/retrieve/decoded"):
        assert request(served.port, "POST", path, RETRIEVE_JSON)[0] == 200
    assert ran == []


@pytest.mark.parametrize("served", ["auth"], indirect=True)
def test_auth(served: Served) -> None:
    retrieve, persist = "/api/v1/features/retrieve", "/api/v1/features/persist"
    cases: Sequence[tuple[str, dict[str, Any], dict[str, str], int]] = [
        (retrieve, RETRIEVE_JSON, {}, 400),
        (retrieve, RETRIEVE_JSON, {"online-feature-store-caller-id": "ranker"}, 400),
        (retrieve, RETRIEVE_JSON, {**READER, "online-feature-store-auth-token": "bad"}, 401),
        (retrieve, RETRIEVE_JSON, {**READER, "online-feature-store-caller-id": "nobody"}, 401),
        (retrieve, RETRIEVE_JSON, WRITER, 403),
        (persist, PERSIST_JSON, READER, 403),  # a reader token cannot persist
        (persist, PERSIST_JSON, WRITER, 200),
        (retrieve, RETRIEVE_JSON, READER, 200),
        # Header names are case-insensitive in HTTP.
        (retrieve, RETRIEVE_JSON, {k.upper(): v for k, v in READER.items()}, 200),
    ]
    for path, body, headers, status in cases:
        got, reply = request(served.port, "POST", path, body, headers)
        assert got == status, (path, headers, reply)
    # Health endpoints need no credentials.
    assert request(served.port, "GET", "/health/self")[0] == 200
    assert request(served.port, "GET", "/health/ready")[0] == 200


def test_status_table_covers_every_library_error() -> None:
    for _cls, code in STATUS_OF:
        assert code in HTTP_STATUS
    assert HTTP_STATUS[grpc.StatusCode.DEADLINE_EXCEEDED] == 504
    assert HTTP_STATUS[grpc.StatusCode.UNAVAILABLE] == 503
    assert HTTP_STATUS[grpc.StatusCode.INTERNAL] == 500


def test_http_port_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_config(None, {})[0].http_port == 0  # off by default
    monkeypatch.setenv("OFS_HTTP_PORT", "8090")
    assert load_config(None, {})[0].http_port == 8090
    assert load_config(None, {"http_port": 8091})[0].http_port == 8091
    persist_pb2.Result()  # the generated modules are importable (scripts/gen-proto)
