"""Caller tokens on a real server: a wrong token is refused without a KDF, legacy scrypt hashes still
verify behind the limiter, and a flood of random tokens neither evicts nor locks out a good one."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from test_metrics import _free_port, _wait_serving
from test_server import DOC, RETRIEVE, call, retrieve_query

from online_feature_store.feature_store import FeatureStore
from online_feature_store.registry import tokens
from online_feature_store.registry.spec import reconcile
from online_feature_store.registry.sqlite import SqliteRegistry
from online_feature_store.registry.tokens import PER_PEER, new_token
from online_feature_store.registry.yaml_io import parse_spec
from online_feature_store.server.app import ServerConfig, build_server, mark_serving

READER_TOKEN = new_token()
LEGACY_TOKEN = "an-old-token"  # short: it predates the length rule, and still works


def legacy_hash(token: str) -> str:
    """A hash as registries stored them before the fast scheme (scrypt n=2**14, r=8, p=1)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(token.encode(), salt=salt, n=1 << 14, r=8, p=1, dklen=32)
    return f"scrypt${1 << 14}$8$1${salt.hex()}${digest.hex()}"


def registry_doc() -> dict[str, Any]:
    doc = {k: v for k, v in DOC.items() if k != "callers"}
    doc["callers"] = [
        {"id": "ranker", "role": "reader", "token_env": "R_TOKEN"},
        {"id": "old", "role": "reader", "token_hash": legacy_hash(LEGACY_TOKEN)},
    ]
    return doc


def md(caller: str, token: str) -> tuple[tuple[str, str], ...]:
    return (("online-feature-store-caller-id", caller), ("online-feature-store-auth-token", token))


def code_of(channel: grpc.Channel, caller: str, token: str) -> tuple[grpc.StatusCode, str]:
    try:
        call(channel, RETRIEVE, retrieve_query(["u1"], ["a"]), metadata=md(caller, token))
    except grpc.RpcError as err:
        return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""


@pytest.fixture
def kdf_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    calls: list[bytes] = []
    real = hashlib.scrypt

    def counted(password: bytes, **kwargs: Any) -> bytes:
        calls.append(password)
        return real(password, **kwargs)

    monkeypatch.setattr(tokens.hashlib, "scrypt", counted)
    return calls


@pytest.fixture
def channel(tmp_path: Path) -> Iterator[grpc.Channel]:
    """A gRPC server with auth on loopback (in this process, so the test can count KDF runs)."""
    registry = SqliteRegistry(tmp_path / "registry.db")
    spec = parse_spec(registry_doc(), env={"R_TOKEN": READER_TOKEN})
    registry.apply(lambda s: reconcile(s, spec))
    fs = FeatureStore(registry, data_directory=tmp_path)
    srv, port, health = build_server(fs, ServerConfig(port=0, auth=True))
    srv.start()
    mark_serving(fs, health)
    ch = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield ch
    ch.close()
    srv.stop(0).wait()
    fs.close()
    registry.close()


def test_wrong_tokens_for_a_fast_hash_run_no_kdf(channel: grpc.Channel, kdf_calls: list[bytes]) -> None:
    for _ in range(50):
        code, details = code_of(channel, "ranker", new_token())
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert "unknown caller or bad token for 'ranker'" in details
    assert code_of(channel, "ranker", READER_TOKEN)[0] == grpc.StatusCode.OK
    assert kdf_calls == []


def test_a_legacy_hash_is_checked_once_and_a_flood_neither_evicts_nor_locks_it_out(
    channel: grpc.Channel, kdf_calls: list[bytes]
) -> None:
    for _ in range(3):
        assert code_of(channel, "old", LEGACY_TOKEN)[0] == grpc.StatusCode.OK
    assert kdf_calls == [LEGACY_TOKEN.encode()]
    codes = [code_of(channel, "old", f"random-{i}")[0] for i in range(3 * PER_PEER.burst)]
    # The budget of this client address (the good token took one check of it): a few checks, then
    # refusals that cost no KDF. (One more check may come of the budget's refill if the run is slow.)
    assert codes[: PER_PEER.burst - 1] == [grpc.StatusCode.UNAUTHENTICATED] * (PER_PEER.burst - 1)
    assert codes[-1] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert set(codes) == {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert len(kdf_calls) <= PER_PEER.burst + 1
    code, details = code_of(channel, "old", "one-more")
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "too many unseen tokens checked from 127.0.0.1" in details
    assert "retry in" in details
    # The good token is served throughout, from its own table; a known bad one stays a plain refusal.
    assert code_of(channel, "old", LEGACY_TOKEN)[0] == grpc.StatusCode.OK
    assert code_of(channel, "old", "random-0")[0] == grpc.StatusCode.UNAUTHENTICATED
    assert kdf_calls.count(LEGACY_TOKEN.encode()) == 1


@pytest.fixture
def serve_auth(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """``ofs serve --auth`` as a process: (gRPC address, HTTP port)."""
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "features.yaml").write_text(yaml.safe_dump(registry_doc()))
    env = {**os.environ, "R_TOKEN": READER_TOKEN, "OFS_METRICS_PORT": "0"}
    subprocess.run(
        [sys.executable, "-m", "online_feature_store.cli", "registry", "apply", "-y", "-f",
         str(tmp_path / "features.yaml"), "--registry", f"sqlite:///{data / 'registry.db'}"],
        check=True, env=env, capture_output=True, timeout=120,
    )  # fmt: skip
    port, http_port = _free_port(), _free_port()
    log = tmp_path / "serve.log"
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


def _http(port: int, caller: str, token: str) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    body = {
        "entity_label": "user",
        "feature_groups": [{"label": "g", "feature_labels": ["a"]}],
        "keys_schema": ["user_id"],
        "keys": [{"cols": ["u1"]}],
    }
    headers = {"online-feature-store-caller-id": caller, "online-feature-store-auth-token": token}
    try:
        conn.request("POST", "/api/v1/features/retrieve", json.dumps(body), headers)
        reply = conn.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        conn.close()


def test_ofs_serve_auth_limits_unseen_legacy_tokens(serve_auth: tuple[str, int]) -> None:
    address, http_port = serve_auth
    with grpc.insecure_channel(address) as channel:
        assert code_of(channel, "ranker", READER_TOKEN)[0] == grpc.StatusCode.OK
        assert code_of(channel, "old", LEGACY_TOKEN)[0] == grpc.StatusCode.OK
        assert code_of(channel, "ranker", "x" * 43)[0] == grpc.StatusCode.UNAUTHENTICATED
        codes = [code_of(channel, "old", new_token())[0] for _ in range(3 * PER_PEER.burst)]
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
        assert set(codes) <= {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.RESOURCE_EXHAUSTED}
        # Refused strangers do not touch the callers that already proved their tokens, nor fast hashes.
        assert code_of(channel, "old", LEGACY_TOKEN)[0] == grpc.StatusCode.OK
        assert code_of(channel, "ranker", READER_TOKEN)[0] == grpc.StatusCode.OK
    # HTTP shares the limiter (same client address): 429 with the reason.
    status, reply = _http(http_port, "old", new_token())
    assert (status, reply["code"]) == (429, "RESOURCE_EXHAUSTED"), reply
    assert "old scrypt hash" in reply["error"]
    assert _http(http_port, "old", LEGACY_TOKEN)[0] == 200
    assert _http(http_port, "ranker", READER_TOKEN)[0] == 200
