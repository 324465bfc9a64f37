"""Embedding types through a served instance on loopback: HTTP/JSON persist takes BF16 and Q8 values in
``fp32_values`` (Q8 quantized on the server), retrieve returns their stored bytes (base64 in protojson,
the same as gRPC), retrieval-time ``@Q8`` / ``@BF16`` from an fp32 vector, and the decoded call renders
the values."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import ml_dtypes
import numpy as np
import pytest
from google.protobuf import json_format
from test_http import request
from test_server import RETRIEVE, call

from online_feature_store._proto import retrieve_pb2
from online_feature_store.feature_store import FeatureStore
from online_feature_store.registry.spec import reconcile
from online_feature_store.registry.sqlite import SqliteRegistry
from online_feature_store.registry.yaml_io import parse_spec
from online_feature_store.server.app import ServerConfig, build_server, mark_serving, readiness
from online_feature_store.server.metrics import ServerMetrics
from online_feature_store.server.native_front import NativeHttp

DOC: dict[str, Any] = {
    "stores": [{"id": "main", "kind": "sqlite", "settings": {"path": "store.db"}}],
    "entities": [
        {
            "label": "item",
            "keys": [{"label": "item_id", "column": "iid"}],
            "feature_groups": [
                {
                    "label": "raw",
                    "data_type": "fp32vector",
                    "store": "main",
                    "features": [{"label": "e", "vector_length": 4}],
                },
                {
                    "label": "q",
                    "data_type": "q8vector",
                    "store": "main",
                    "features": [{"label": "e", "vector_length": 4}],
                },
                {
                    "label": "b",
                    "data_type": "bf16vector",
                    "store": "main",
                    "features": [{"label": "e", "vector_length": 4}],
                },
            ],
        }
    ],
}
VECTOR = [0.5, -1.0, 0.3, 2.0]


def persist_json(fg: str) -> dict[str, Any]:
    return {
        "entity_label": "item",
        "keys_schema": ["item_id"],
        "feature_group_schema": [{"label": fg, "feature_labels": ["e"]}],
        "data": [
            {
                "key_values": ["i1"],
                "feature_values": [{"values": {"vector": [{"values": {"fp32_values": VECTOR}}]}}],
            }
        ],
    }


def retrieve_json(fg: str, label: str) -> dict[str, Any]:
    return {
        "entity_label": "item",
        "feature_groups": [{"label": fg, "feature_labels": [label]}],
        "keys_schema": ["item_id"],
        "keys": [{"cols": ["i1"]}, {"cols": ["none"]}],
    }


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[int, grpc.Channel]]:
    registry = SqliteRegistry(tmp_path / "registry.db")
    registry.apply(lambda s: reconcile(s, parse_spec(DOC, env={})))
    fs = FeatureStore(registry, data_directory=tmp_path)
    srv, port, health = build_server(fs, ServerConfig(port=0), ServerMetrics())
    api = NativeHttp(srv, "127.0.0.1", 0, ready=lambda: readiness(fs), max_body_bytes=1 << 16)
    srv.start()
    api.start()
    mark_serving(fs, health)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield api.port, channel
    channel.close()
    api.stop(1)
    srv.stop(0).wait()
    fs.close()
    registry.close()


def q8_cell(x: list[float]) -> bytes:
    v = np.float32(x)
    scale = np.float32(np.max(np.abs(v)) / np.float32(127))
    codes = np.rint(np.clip(v / scale, -127, 127)).astype(np.int8)
    return struct.pack("<f", scale) + codes.tobytes()


def test_persist_and_retrieve_over_http_and_grpc(served: tuple[int, grpc.Channel]) -> None:
    port, channel = served
    for fg in ("raw", "q", "b"):
        assert request(port, "POST", "/api/v1/features/persist", persist_json(fg)) == (
            200,
            {"message": "Data Persisted Successfully"},
        )
    bf16 = np.float32(VECTOR).astype(ml_dtypes.bfloat16).tobytes()
    cases = [("q", "e", 33, q8_cell(VECTOR)), ("b", "e", 32, bf16), ("raw", "e@Q8", 33, q8_cell(VECTOR))]
    cases.append(("raw", "e@BF16", 32, bf16))
    for fg, label, type_id, cell in cases:
        body_json = retrieve_json(fg, label)
        status, body = request(port, "POST", "/api/v1/features/retrieve", body_json)
        assert status == 200, body
        (feature,) = body["featureSchemas"][0]["features"]
        assert (feature["dataType"], feature["vectorLength"]) == (type_id, 4)
        assert base64.b64decode(body["rows"][0]["columns"][0]) == cell
        assert body["rows"][1]["fgStatus"] == [1]  # missing: the zero default, in the served type
        query = json_format.Parse(json.dumps(body_json), retrieve_pb2.Query()).SerializeToString()
        assert json_format.Parse(json.dumps(body), retrieve_pb2.Result()).SerializeToString() == call(
            channel, RETRIEVE, query
        )
    status, body = request(port, "POST", "/api/v1/features/retrieve/decoded", retrieve_json("b", "e"))
    assert status == 200
    assert body["rows"][0]["columns"] == ["0.5:-1:0.30078125:2"]
    status, body = request(port, "POST", "/api/v1/features/retrieve/decoded", retrieve_json("q", "e"))
    cell = q8_cell(VECTOR)
    (scale,) = struct.unpack("<f", cell[:4])
    want = np.frombuffer(cell[4:], np.int8).astype(np.float32) * np.float32(scale)
    assert np.array_equal(np.array(body["rows"][0]["columns"][0].split(":"), np.float32), want)


def test_non_finite_q8_values_are_refused(served: tuple[int, grpc.Channel]) -> None:
    port, _ = served
    bad = persist_json("q")
    bad["data"][0]["feature_values"][0]["values"]["vector"][0]["values"]["fp32_values"] = [
        1.0,
        "Infinity",
        0.0,
        0.0,
    ]
    status, body = request(port, "POST", "/api/v1/features/persist", bad)
    assert status == 400
    assert "inf cannot be stored as DataTypeQ8Vector" in json.dumps(body)
