"""Decoded results equal the reference's strings, end to end over gRPC and HTTP.

``tests/vectors/decoded_format.json`` holds cells of every data type and the string the reference's
``RetrieveDecodedResult`` makes of each, written by Go itself (``tests/vectors/go_format``: ``%v`` of
the decoded Go value for scalars, shortest ``'f'`` for vector floats, ``1``/``0`` for bool vectors).
Here each cell is stored as a block (one row per case, one feature group per type and vector length),
read back by a real server through ``RetrieveDecodedResult`` and ``POST /api/v1/features/retrieve/decoded``,
and compared string for string. ``rust/tests/vectors.rs`` checks the same file through the Rust core.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import json_format
from test_http import request
from test_server import READER_TOKEN, TOKENS, call

from online_feature_store._proto import retrieve_pb2
from online_feature_store.feature_store import FeatureStore
from online_feature_store.registry.spec import reconcile
from online_feature_store.registry.sqlite import SqliteRegistry
from online_feature_store.registry.yaml_io import parse_spec
from online_feature_store.server.app import ServerConfig, build_server, mark_serving, readiness
from online_feature_store.server.native_front import NativeHttp
from online_feature_store.store.base import BlockWrite
from online_feature_store.types import DataType
from tests.test_vectors import header

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "vectors" / "decoded_format.json"
GENERATOR = ROOT / "tests" / "vectors" / "go_format"
DECODED = "/retrieve.FeatureService/RetrieveDecodedResult"
ENTITY = "cell"
STRING_LENGTH = 64


@cache
def cases() -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = json.loads(VECTORS.read_text(encoding="utf-8"))
    return loaded


def group_of(case: dict[str, Any]) -> tuple[DataType, int]:
    (width,) = case.get("vector_lengths", [0])
    return DataType.parse(case["data_type"]), width


def fg_label(t: DataType, width: int) -> str:
    return f"{t.name.lower()}_{width}" if t.is_vector else t.name.lower()


def groups() -> dict[tuple[DataType, int], list[dict[str, Any]]]:
    out: dict[tuple[DataType, int], list[dict[str, Any]]] = {}
    for case in cases():
        out.setdefault(group_of(case), []).append(case)
    return out


def registry_doc() -> dict[str, Any]:
    fgs = []
    for t, width in groups():
        el = t.name.removesuffix("_VECTOR")
        default: Any = "" if el == "STRING" else (False if el == "BOOL" else 0)
        feature: dict[str, Any] = {"label": "x", "default": [default] * width if t.is_vector else default}
        if t.is_vector:
            feature["vector_length"] = width
        if el == "STRING":
            feature["string_length"] = STRING_LENGTH
        fgs.append(
            {"label": fg_label(t, width), "data_type": t.type_name, "store": "main", "features": [feature]}
        )
    fgs.append(
        {
            "label": "wide",
            "data_type": "DataTypeFP64",
            "store": "main",
            "features": [{"label": "x", "default": 0.0}],
        }
    )
    return {
        "stores": [{"id": "main", "kind": "sqlite", "settings": {"path": "store.db"}}],
        "callers": [
            {"id": "ranker", "role": "reader", "token_env": "R_TOKEN"},
            {"id": "ingest", "role": "writer", "token_env": "W_TOKEN"},
        ],
        "entities": [{"label": ENTITY, "keys": [{"label": "id", "column": "id"}], "feature_groups": fgs}],
    }


def payload(t: DataType, cell: bytes) -> tuple[bytes, int]:
    """The stored payload of a one-feature block holding ``cell`` (response encoding, facts §8.5), and
    the header's bool "last index" nibble."""
    el = t.name.removesuffix("_VECTOR")
    if el == "BOOL":
        bits = list(cell)
        packed = bytes(
            sum(b << (7 - j) for j, b in enumerate(bits[i : i + 8])) for i in range(0, len(bits), 8)
        )
        return packed, (8 - len(bits) % 8) % 8
    if el == "STRING" and not t.is_vector:
        return len(cell).to_bytes(2, "little") + cell, 0
    return cell, 0  # numbers, and string vectors (lengths then bytes) are stored as served


@dataclass
class Served:
    channel: grpc.Channel
    http_port: int
    fs: FeatureStore


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp_path = tmp_path_factory.mktemp("decoded")
    registry = SqliteRegistry(tmp_path / "registry.db")
    registry.apply(lambda s: reconcile(s, parse_spec(registry_doc(), env=TOKENS)))
    fs = FeatureStore(registry, data_directory=tmp_path)
    snapshot = fs.snapshot
    entity = snapshot.entity(ENTITY)
    writes = []
    for (t, width), group in groups().items():
        fg = snapshot.feature_group(ENTITY, fg_label(t, width))
        for i, case in enumerate(group):
            data, last = payload(t, bytes.fromhex(case["hex"]))
            block = header(fg.active_version, bytes(5), 0, int(t), last) + data
            writes.append(BlockWrite((f"c{i}",), fg.id, block))
    fs.store("main").write(entity, writes)
    srv, port, health = build_server(fs, ServerConfig(port=0, auth=True), None)
    api = NativeHttp(srv, "127.0.0.1", 0, ready=lambda: readiness(fs), max_body_bytes=1 << 20)
    srv.start()
    api.start()
    mark_serving(fs, health)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield Served(channel, api.port, fs)
    channel.close()
    api.stop(1)
    srv.stop(0).wait()
    fs.close()
    registry.close()


READER = {"online-feature-store-caller-id": "ranker", "online-feature-store-auth-token": READER_TOKEN}


def query(fg: str, labels: list[str], n: int) -> dict[str, Any]:
    return {
        "entity_label": ENTITY,
        "feature_groups": [{"label": fg, "feature_labels": labels}],
        "keys_schema": ["id"],
        "keys": [{"cols": [f"c{i}"]} for i in range(n)],
    }


def decoded_over_grpc(served: Served, body: dict[str, Any]) -> list[list[str]]:
    q = json_format.Parse(json.dumps(body), retrieve_pb2.Query()).SerializeToString()
    reply = retrieve_pb2.DecodedResult.FromString(
        call(served.channel, DECODED, q, metadata=list(READER.items()))
    )
    return [list(r.columns) for r in reply.rows]


def decoded_over_http(served: Served, body: dict[str, Any]) -> list[list[str]]:
    status, reply = request(served.http_port, "POST", "/api/v1/features/retrieve/decoded", body, READER)
    assert status == 200, reply
    return [list(r.get("columns", [])) for r in reply["rows"]]


GROUPS = sorted(groups(), key=lambda g: (int(g[0]), g[1]))


@pytest.mark.parametrize("transport", ["grpc", "http"])
@pytest.mark.parametrize("group", GROUPS, ids=[fg_label(t, w) for t, w in GROUPS])
def test_every_cell_renders_as_the_reference(
    served: Served, group: tuple[DataType, int], transport: str
) -> None:
    want = [c["text"] for c in groups()[group]]
    body = query(fg_label(*group), ["x"], len(want))
    rows = decoded_over_grpc(served, body) if transport == "grpc" else decoded_over_http(served, body)
    got = [row[0] for row in rows]
    wrong = [(c["name"], g, c["text"]) for c, g in zip(groups()[group], got, strict=True) if g != c["text"]]
    assert not wrong, f"{len(wrong)} of {len(want)} differ (name, got, want), e.g. {wrong[:5]}"


def test_vectors_cover_every_type_and_the_issue_examples() -> None:
    types = {group_of(c)[0] for c in cases()}
    assert types == {t for t in DataType if t != DataType.UNKNOWN}
    texts = {(c["data_type"], c["text"]) for c in cases()}
    for example in [
        ("DataTypeFP64", "-1e+300"),
        ("DataTypeFP64", "5e-324"),
        ("DataTypeFP64", "3.141592653589793"),
        ("DataTypeFP32", "1e+06"),
        ("DataTypeFP32", "1.938266e+09"),
        ("DataTypeFP32", "123456"),
        ("DataTypeFP32", "1e-05"),
        ("DataTypeFP32", "0.0001"),
        ("DataTypeFP32", "2.7205172e+06"),  # 2720517.25, a tie
        ("DataTypeFP32", "-2.4257812"),
        ("DataTypeFP32", "NaN"),
        ("DataTypeFP32", "+Inf"),
        ("DataTypeFP32", "-Inf"),
        ("DataTypeFP32", "-0"),
        ("DataTypeBoolVector", "1:0"),
        ("DataTypeBool", "true"),
    ]:
        assert example in texts, example
    assert any(c["data_type"] == "DataTypeFP32Vector" and "2720517.2:" in c["text"] for c in cases())


def test_quantized_retrieval_renders_the_target_type(served: Served) -> None:
    """``label@DataTypeFP32`` on an FP64 group renders the float32 it became, ``@DataTypeFP16`` the
    float32 its binary16 decodes to (facts §6.4: the decoded API decodes with the target type)."""
    served.fs.persist(ENTITY, "wide", ["pi"], np.array([[math.pi]]))
    body = query("wide", ["x", "x@DataTypeFP32", "x@DataTypeFP16"], 0)
    body["keys"] = [{"cols": ["pi"]}]
    want = [["3.141592653589793", "3.1415927", "3.140625"]]
    assert decoded_over_grpc(served, body) == want
    assert decoded_over_http(served, body) == want


def test_the_vectors_are_what_go_prints(tmp_path: Path) -> None:
    """The committed JSON is the generator's output with the Go installed here (so it cannot be edited
    into agreement with a bug, and the generator's own checks against strconv ran)."""
    go = shutil.which("go")
    if go is None:
        message = "the Go toolchain is needed to regenerate tests/vectors/decoded_format.json"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    subprocess.run([go, "run", ".", "-out", str(tmp_path)], cwd=GENERATOR, check=True, timeout=600)
    fresh = (tmp_path / "decoded_format.json").read_bytes()
    assert fresh == VECTORS.read_bytes(), "stale: run `go run .` in tests/vectors/go_format"
