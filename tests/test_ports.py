"""A port that is taken: every ``ofs`` command that listens says so in one line naming the port and the flag,
environment variable and setting that move it, exits 1 and prints no traceback (real subprocesses, against a
real listener on the port)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from online_feature_store.errors import PortInUseError

SERVE_MOVES = {
    "gRPC": "--port, $OFS_PORT or the 'port' setting",
    "HTTP API": "--http-port, $OFS_HTTP_PORT or the 'http_port' setting",
    "metrics": "--metrics-port, $OFS_METRICS_PORT or the 'metrics_port' setting (0: no metrics)",
}


@pytest.fixture
def taken() -> Iterator[int]:
    """A port something listens on (as another server would), for the test's length."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port: int = listener.getsockname()[1]
        yield port


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def ofs(tmp_path: Path, *args: str, **env_vars: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OFS_")}
    return subprocess.run(
        [sys.executable, "-m", "online_feature_store.cli", *args],
        cwd=tmp_path,
        env={**env, "OFS_DATA_DIR": str(tmp_path / "data"), **env_vars},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def _one_line(ran: subprocess.CompletedProcess[str], port: int, what: str, moves: str) -> None:
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert ran.stderr == (
        f"ofs: error: port {port} ({what}) on 127.0.0.1 is already in use: stop what listens there, "
        f"or choose another port with {moves}\n"
    ), ran.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("what", list(SERVE_MOVES))
def test_serve(tmp_path: Path, taken: int, what: str, workers: str) -> None:
    ports = {"gRPC": _free_port(), "HTTP API": _free_port(), "metrics": _free_port(), what: taken}
    ran = ofs(
        tmp_path, "serve", "--workers", workers, "--port", str(ports["gRPC"]),
        "--http-port", str(ports["HTTP API"]), "--metrics-port", str(ports["metrics"]),
    )  # fmt: skip
    _one_line(ran, taken, what, SERVE_MOVES[what])
    assert ran.stdout == ""  # refused before anything started
    assert not (tmp_path / "data").exists()


def test_serve_moved_by_the_environment(tmp_path: Path, taken: int) -> None:
    ran = ofs(tmp_path, "serve", OFS_PORT=str(_free_port()), OFS_METRICS_PORT=str(taken))
    _one_line(ran, taken, "metrics", SERVE_MOVES["metrics"])


def test_serve_one_port_for_two_purposes(tmp_path: Path) -> None:
    port = _free_port()
    ran = ofs(tmp_path, "serve", "--port", str(port), "--metrics-port", str(port))
    assert ran.returncode == 1
    assert ran.stderr == (
        f"ofs: error: port {port} is set for both gRPC and metrics: choose another with "
        f"{SERVE_MOVES['metrics']}\n"
    )


def test_consume_health_port(tmp_path: Path, taken: int) -> None:
    # checked before Kafka is ever contacted: no broker is needed to see it
    ran = ofs(tmp_path, "consume", "--bootstrap-servers", "127.0.0.1:1", "--health-port", str(taken))
    _one_line(
        ran, taken, "health and metrics",
        "--health-port, $OFS_CONSUMER_HEALTH_PORT or the 'health_port' setting (0: any free port, -1: none)",
    )  # fmt: skip


def test_horizon_port(tmp_path: Path, taken: int) -> None:
    ran = ofs(tmp_path, "horizon", OFS_HORIZON_PORT=str(taken))
    _one_line(ran, taken, "Horizon", "--port, $OFS_HORIZON_PORT or the 'port' setting")


def test_grpc_bind_of_a_worker_names_the_port(tmp_path: Path, taken: int) -> None:
    """A worker binds with SO_REUSEPORT and is not checked first (its siblings share the port): when its
    bind fails, the port is still named (the supervisor then stops rather than restarting it)."""
    from online_feature_store.feature_store import FeatureStore
    from online_feature_store.server.app import ServerConfig, build_server

    with (
        FeatureStore(data_directory=tmp_path, cache_bytes=0) as fs,
        pytest.raises(PortInUseError, match=f"port {taken} \\(gRPC\\)"),
    ):
        build_server(fs, ServerConfig(port=taken, reuse_port=True))
