"""``ofs serve`` bound to a non-loopback address without auth warns at start, in ``/health/ready`` and in
the ``ofs_unauthenticated_exposure`` gauge (issue #14)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from test_http import request
from test_metrics import _free_port, _wait_serving, scrape, value
from test_server import DOC

from online_feature_store.server.app import ServerConfig, exposure_warning


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "::1", "[::1]", "localhost"])
def test_loopback_or_auth_is_quiet(host: str) -> None:
    assert exposure_warning(ServerConfig(host=host)) is None
    assert exposure_warning(ServerConfig(host="0.0.0.0", auth=True)) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "", "no-such-host.invalid"])
def test_reachable_without_auth_warns(host: str) -> None:
    message = exposure_warning(ServerConfig(host=host, port=8089), http_port=8090)
    assert message is not None
    assert message.startswith(f"serving on {host or 'every address'} without auth: ")
    assert "port 8089 (gRPC) and port 8090 (HTTP)" in message
    assert "--auth" in message


def _serve(tmp_path: Path, *flags: str) -> Iterator[tuple[int, int, Path]]:
    data = tmp_path / "data"
    data.mkdir()
    doc = {k: v for k, v in DOC.items() if k != "callers"}
    (tmp_path / "features.yaml").write_text(yaml.safe_dump(doc))
    port, http_port, metrics_port = _free_port(), _free_port(), _free_port()
    env = {**os.environ, "OFS_METRICS_PORT": str(metrics_port)}
    subprocess.run(
        [sys.executable, "-m", "online_feature_store.cli", "registry", "apply", "-y", "-f",
         str(tmp_path / "features.yaml"), "--registry", f"sqlite:///{data / 'registry.db'}"],
        check=True, env=env, capture_output=True, timeout=120,
    )  # fmt: skip
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "online_feature_store.cli", "serve", "--host", "0.0.0.0",
             "--port", str(port), "--http-port", str(http_port), "--data-dir", str(data), *flags],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        _wait_serving(f"127.0.0.1:{port}", proc, log)
        yield http_port, metrics_port, log
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture
def open_server(tmp_path: Path) -> Iterator[tuple[int, int, Path]]:
    yield from _serve(tmp_path)


@pytest.fixture
def auth_server(tmp_path: Path) -> Iterator[tuple[int, int, Path]]:
    yield from _serve(tmp_path, "--auth")


def test_bound_to_every_address_without_auth(open_server: tuple[int, int, Path]) -> None:
    http_port, metrics_port, log = open_server
    status, report = request(http_port, "GET", "/health/ready")
    assert status == 200  # reported, not a reason to take the server out of rotation
    (warning,) = report["warnings"]
    assert warning.startswith("serving on 0.0.0.0 without auth: anyone who can reach port ")
    assert f"port {http_port} (HTTP)" in warning
    assert f"WARNING online_feature_store.server: {warning}" in log.read_text()
    assert value(scrape(metrics_port), "ofs_unauthenticated_exposure") == 1


def test_bound_to_every_address_with_auth(auth_server: tuple[int, int, Path]) -> None:
    http_port, metrics_port, log = auth_server
    assert request(http_port, "GET", "/health/ready")[1]["warnings"] == []
    assert "without auth" not in log.read_text()
    assert value(scrape(metrics_port), "ofs_unauthenticated_exposure") == 0
