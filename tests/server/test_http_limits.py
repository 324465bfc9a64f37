"""The HTTP/JSON API's limits on slow and idle clients (issue #14): a request head must
arrive in time, a kept-alive connection may idle only so long, one address holds a bounded number of
connections, and a legitimate client is served while a thousand idle or trickling sockets are open."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_http import RETRIEVE_JSON, request
from test_metrics import _free_port, _wait_serving
from test_server import DOC, TOKENS

from online_feature_store.errors import InvalidInputError
from online_feature_store.feature_store import FeatureStore
from online_feature_store.registry.spec import reconcile
from online_feature_store.registry.sqlite import SqliteRegistry
from online_feature_store.registry.yaml_io import parse_spec
from online_feature_store.server.app import ServerConfig, build_server, readiness
from online_feature_store.server.http import MAX_HEAD_BYTES, HttpLimits
from online_feature_store.server.main import load_config
from online_feature_store.server.native_front import NativeHttp

LIMITS = HttpLimits(header_timeout=1.0, idle_timeout=1.0, max_connections_per_peer=4)


@pytest.fixture
def port(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[int]:
    """The HTTP API with short limits (:data:`LIMITS`, or the test's ``port`` parameter)
    on a free loopback port."""
    limits = getattr(request, "param", LIMITS)
    registry = SqliteRegistry(tmp_path / "registry.db")
    registry.apply(lambda s: reconcile(s, parse_spec(DOC, env=TOKENS)))
    fs = FeatureStore(registry, data_directory=tmp_path)
    srv, _port, _health = build_server(fs, ServerConfig(port=0))
    api = NativeHttp(srv, "127.0.0.1", 0, ready=lambda: readiness(fs), max_body_bytes=4096, limits=limits)
    api.start()
    yield api.port
    api.stop(1)
    srv.stop(0).wait()
    fs.close()
    registry.close()


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (the socket timeout bounds the wait)."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def error_of(raw: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def still_open(sock: socket.socket) -> bool:
    """True while the server has neither closed nor answered on ``sock`` (nothing to read yet)."""
    sock.setblocking(False)
    try:
        sock.recv(1, socket.MSG_PEEK)  # an answer, or b"" for a close
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)
    return False


def test_a_connection_that_sends_nothing_is_closed(port: int) -> None:
    with connect(port) as sock:
        assert read_until_closed(sock) == b""  # closed without a word: no request had started


def test_a_trickled_head_is_cut_off(port: int) -> None:
    """Bytes keep arriving, but the head is not complete within the header timeout: 408, closed."""
    with connect(port) as sock:
        sock.sendall(b"POST /api/v1/features/retrieve HTTP/1.1\r\nHost: x\r\n")
        with contextlib.suppress(OSError):  # the server may close while the test still trickles
            for _ in range(40):
                sock.sendall(b"X")
                if not still_open(sock):
                    break
                time.sleep(0.1)
        status, body = error_of(read_until_closed(sock))
    assert (status, body["code"]) == (408, "DEADLINE_EXCEEDED")
    assert body["error"] == "request head not received within 1 s"


def test_a_slow_body_is_cut_off(port: int) -> None:
    with connect(port) as sock:
        sock.sendall(b"POST /api/v1/features/retrieve HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        status, body = error_of(read_until_closed(sock))
    assert (status, body["code"]) == (408, "DEADLINE_EXCEEDED")
    assert body["error"] == "request body not received within 1 s"


def test_an_idle_kept_alive_connection_is_closed(port: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        assert request(port, "GET", "/health/self", conn=conn)[0] == 200
        assert conn.sock is not None
        assert read_until_closed(conn.sock) == b""
    finally:
        conn.close()


@pytest.mark.parametrize(
    "port", [HttpLimits(header_timeout=0.5, idle_timeout=3.0, max_connections_per_peer=4)], indirect=True
)
def test_the_idle_timeout_is_not_the_header_timeout(port: int) -> None:
    """A kept-alive connection may wait longer than the header timeout for its next request: that wait is
    the idle timeout's (hyper's own header timeout would count it too; the native front keeps them apart)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        assert request(port, "GET", "/health/self", conn=conn)[0] == 200
        sock = conn.sock
        time.sleep(1.5)  # three header timeouts, half the idle timeout
        assert request(port, "POST", "/api/v1/features/retrieve", RETRIEVE_JSON, conn=conn)[0] == 200
        assert conn.sock is sock  # the same connection
        assert sock is not None
        started = time.monotonic()
        assert read_until_closed(sock) == b""  # then closed once idle for the idle timeout
        assert 2.0 < time.monotonic() - started < 10
    finally:
        conn.close()


def test_one_address_holds_a_bounded_number_of_connections(port: int) -> None:
    held = [connect(port) for _ in range(LIMITS.max_connections_per_peer)]
    try:
        with connect(port) as extra:
            status, body = error_of(read_until_closed(extra))
        assert (status, body["code"]) == (429, "RESOURCE_EXHAUSTED")
        assert body["error"] == "too many connections from 127.0.0.1 (limit 4)"
        # Another address is not affected.
        with connect(port, source="127.0.0.2") as other:
            other.sendall(b"GET /health/self HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert read_until_closed(other).startswith(b"HTTP/1.1 200 ")
    finally:
        for sock in held:
            sock.close()
    # Once they are gone, the address may connect again (the server counts closes as they arrive).
    for _ in range(100):
        status, _ = request(port, "GET", "/health/self")
        if status == 200:
            break
        time.sleep(0.05)
    assert status == 200


def test_an_oversized_head_is_refused(port: int) -> None:
    with connect(port) as sock:
        sock.sendall(b"GET /health/self HTTP/1.1\r\nHost: x\r\n")
        with contextlib.suppress(OSError):  # refused mid-send
            for _ in range(MAX_HEAD_BYTES // 1000 + 2):
                sock.sendall(b"X-Filler: " + b"a" * 1000 + b"\r\n")
        status, body = error_of(read_until_closed(sock))
    assert (status, body["code"]) == (431, "RESOURCE_EXHAUSTED")
    assert body["error"] == f"request head over {MAX_HEAD_BYTES} bytes"


def test_a_malformed_request_is_answered_in_json(port: int) -> None:
    with connect(port) as sock:
        sock.sendall(b"GARBAGE\x01 / HTTP/1.1\r\n\r\n")
        status, body = error_of(read_until_closed(sock))
    assert (status, body["code"]) == (400, "INVALID_ARGUMENT")
    assert body["error"].startswith("malformed HTTP request")


def test_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(None, {})[0]
    assert HttpLimits.from_config(config) == HttpLimits(10.0, 60.0, 64)
    monkeypatch.setenv("OFS_HTTP_HEADER_TIMEOUT_SECONDS", "2.5")
    monkeypatch.setenv("OFS_HTTP_IDLE_TIMEOUT_SECONDS", "30")
    monkeypatch.setenv("OFS_HTTP_MAX_CONNECTIONS_PER_PEER", "0")
    assert HttpLimits.from_config(load_config(None, {})[0]) == HttpLimits(2.5, 30.0, 0)
    overrides = {"http_header_timeout_seconds": 5, "http_max_connections_per_peer": 8}
    assert HttpLimits.from_config(load_config(None, overrides)[0]) == HttpLimits(5.0, 30.0, 8)
    with pytest.raises(InvalidInputError) as info:
        HttpLimits(0, -1, -2)
    assert str(info.value) == (
        "http_header_timeout_seconds must be above 0, got 0; http_idle_timeout_seconds must be above 0, "
        "got -1; http_max_connections_per_peer must be 0 (no cap) or more, got -2"
    )


# -- ofs serve as a process, under a thousand idle and trickling sockets ---------------------------------


@dataclass
class Serve:
    port: int
    http_port: int
    log: Path


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    data = tmp_path / "data"
    data.mkdir()
    doc = {k: v for k, v in DOC.items() if k != "callers"}
    (tmp_path / "features.yaml").write_text(yaml.safe_dump(doc))
    # The idle sockets must stay open for the whole test: a long header timeout (the short one is tested
    # above), and the default per-address cap (they come from many loopback addresses, as a botnet would).
    env = {**os.environ, "OFS_METRICS_PORT": "0", "OFS_HTTP_HEADER_TIMEOUT_SECONDS": "600"}
    subprocess.run(
        [sys.executable, "-m", "online_feature_store.cli", "registry", "apply", "-y", "-f",
         str(tmp_path / "features.yaml"), "--registry", f"sqlite:///{data / 'registry.db'}"],
        check=True, env=env, capture_output=True, timeout=120,
    )  # fmt: skip
    port, http_port = _free_port(), _free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "online_feature_store.cli", "serve", "--port", str(port),
             "--http-port", str(http_port), "--data-dir", str(data)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        _wait_serving(f"127.0.0.1:{port}", proc, log)
        yield Serve(port, http_port, log)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


IDLE, TRICKLING = 1000, 50


def test_served_while_a_thousand_idle_and_trickling_sockets_are_open(serve: Serve) -> None:
    sockets: list[socket.socket] = []
    stop = threading.Event()
    try:
        for i in range(IDLE + TRICKLING):  # from 127.0.1.1 ... 127.0.5.x, 4 per address
            source = f"127.0.{1 + i // 1000}.{1 + (i % 1000) // 4}"
            sockets.append(connect(serve.http_port, source))
        idle, trickling = sockets[:IDLE], sockets[IDLE:]
        for sock in trickling:
            sock.sendall(b"POST /api/v1/features/retrieve HTTP/1.1\r\nHost: x\r\n")

        def trickle() -> None:
            while not stop.wait(0.2):
                for sock in trickling:
                    with contextlib.suppress(OSError):
                        sock.sendall(b"X")

        threading.Thread(target=trickle, daemon=True).start()
        for _ in range(3):
            assert request(serve.http_port, "GET", "/health/self") == (200, {"message": "true"})
            status, body = request(serve.http_port, "POST", "/api/v1/features/retrieve", RETRIEVE_JSON)
            assert status == 200, body
            assert [r["keys"] for r in body["rows"]] == [["u1"], ["u9"]]
        # ... while every one of them is still open and unanswered.
        assert all(still_open(sock) for sock in idle + trickling)
        # One address with many idle sockets holds only its share, and others are still served.
        crowd = [connect(serve.http_port, "127.0.9.9") for _ in range(80)]
        try:
            assert request(serve.http_port, "GET", "/health/self")[0] == 200
            for _ in range(200):  # the refusals are written as the server accepts; wait for them
                answered = [s for s in crowd if not still_open(s)]
                if len(answered) >= 80 - 64:
                    break
                time.sleep(0.05)
            assert len(answered) == 80 - 64
            status, body = error_of(read_until_closed(answered[0]))
            assert (status, body["error"]) == (429, "too many connections from 127.0.9.9 (limit 64)")
        finally:
            for sock in crowd:
                sock.close()
    finally:
        stop.set()
        for sock in sockets:
            sock.close()
