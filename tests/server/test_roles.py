"""Caller roles on a real ``ofs serve --auth``: one ``readwriter`` credential both retrieves and persists
(over gRPC with the Python client, and over HTTP), as reference clients expect; a reader still may not
persist and a writer still may not retrieve."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import yaml
from test_metrics import _free_port, _wait_serving
from test_server import DOC

from online_feature_store.client import AuthError, Client
from online_feature_store.registry.tokens import new_token

TOKENS = {"R_TOKEN": new_token(), "W_TOKEN": new_token(), "RW_TOKEN": new_token()}
CALLERS = [
    {"id": "ranker", "role": "reader", "token_env": "R_TOKEN"},
    {"id": "ingest", "role": "writer", "token_env": "W_TOKEN"},
    {"id": "reference-sdk", "role": "readwriter", "token_env": "RW_TOKEN"},
]


@pytest.fixture(scope="module")
def serve_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """``ofs serve --auth`` as a process, with a reader, a writer and a readwriter: (gRPC address, HTTP
    port)."""
    tmp = tmp_path_factory.mktemp("roles")
    data = tmp / "data"
    data.mkdir()
    (tmp / "features.yaml").write_text(yaml.safe_dump({**DOC, "callers": CALLERS}))
    env = {**os.environ, **TOKENS, "OFS_METRICS_PORT": "0"}
    subprocess.run(
        [sys.executable, "-m", "online_feature_store.cli", "registry", "apply", "-y", "-f",
         str(tmp / "features.yaml"), "--registry", f"sqlite:///{data / 'registry.db'}"],
        check=True, env=env, capture_output=True, timeout=120,
    )  # fmt: skip
    port, http_port = _free_port(), _free_port()
    log = tmp / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "online_feature_store.cli", "serve", "--auth", "--port", str(port),
             "--http-port", str(http_port), "--data-dir", str(data)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        _wait_serving(f"127.0.0.1:{port}", proc, log)
        yield f"127.0.0.1:{port}", http_port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _client(address: str, caller: str, token_env: str) -> Client:
    return Client(address, caller, TOKENS[token_env], keys_schemas={"user": ["user_id"]}, timeout=30)


def test_a_readwriter_retrieves_and_persists(serve_auth: tuple[str, int]) -> None:
    address, _ = serve_auth
    with _client(address, "reference-sdk", "RW_TOKEN") as both:
        both.persist("user", "g", ["rw1"], np.array([[2.5, 4.0]], dtype=np.float32), features=["a", "b"])
        got = both.retrieve("user", ["rw1"], {"g": ["a", "b"]})
        assert got.values["g"].tolist() == [[2.5, 4.0]]
        assert both.retrieve_decoded("user", ["rw1"], {"g": ["b"]}).values["g"] == [["4"]]


def test_reader_and_writer_keep_to_their_role(serve_auth: tuple[str, int]) -> None:
    address, _ = serve_auth
    with _client(address, "ranker", "R_TOKEN") as reader:
        reader.retrieve("user", ["u1"], {"g": ["a"]})
        with pytest.raises(AuthError, match="caller 'ranker' is a reader, not a writer"):
            reader.persist("user", "g", ["u1"], np.array([[1.0]], dtype=np.float32), features=["a"])
    with _client(address, "ingest", "W_TOKEN") as writer:
        # A writer cannot retrieve the FG to learn its type: it names it.
        writer.persist(
            "user", "g", ["w1"], np.array([[1.0]], dtype=np.float32), features=["a"], data_type="fp32"
        )
        with pytest.raises(AuthError, match="caller 'ingest' is a writer, not a reader"):
            writer.retrieve("user", ["w1"], {"g": ["a"]})
    # A readwriter's id with another caller's token.
    with (
        _client(address, "reference-sdk", "R_TOKEN") as wrong,
        pytest.raises(AuthError, match="unknown caller or bad token for 'reference-sdk'"),
    ):
        wrong.retrieve("user", ["u1"], {"g": ["a"]})


def _http(port: int, path: str, body: dict[str, Any], caller: str, token_env: str) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"online-feature-store-caller-id": caller, "online-feature-store-auth-token": TOKENS[token_env]}
    try:
        conn.request("POST", path, json.dumps(body), headers)
        reply = conn.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        conn.close()


def test_a_readwriter_over_http(serve_auth: tuple[str, int]) -> None:
    _, port = serve_auth
    persist = {
        "entity_label": "user",
        "keys_schema": ["user_id"],
        "feature_group_schema": [{"label": "g", "feature_labels": ["a"]}],
        "data": [{"key_values": ["rw-http"], "feature_values": [{"values": {"fp32_values": [7.5]}}]}],
    }
    retrieve = {
        "entity_label": "user",
        "feature_groups": [{"label": "g", "feature_labels": ["a"]}],
        "keys_schema": ["user_id"],
        "keys": [{"cols": ["rw-http"]}],
    }
    status, reply = _http(port, "/api/v1/features/persist", persist, "reference-sdk", "RW_TOKEN")
    assert status == 200, reply
    status, reply = _http(port, "/api/v1/features/retrieve/decoded", retrieve, "reference-sdk", "RW_TOKEN")
    assert status == 200, reply
    assert reply["rows"][0]["columns"] == ["7.5"]
    status, reply = _http(port, "/api/v1/features/persist", persist, "ranker", "R_TOKEN")
    assert (status, reply["code"]) == (403, "PERMISSION_DENIED"), reply
