"""A registry outage, for real: a private etcd process is killed under a running server and started again.

The server keeps serving the last good snapshot; the ``online_feature_store.registry`` health service,
``GET /health/ready`` and ``ofs_registry_healthy`` show the outage; all of them recover with etcd, and a
change applied after the recovery is served.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_metrics import _free_port, scrape, value
from test_server import DOC, RETRIEVE, TOKENS, call, retrieve_query

from online_feature_store.feature_store import FeatureStore
from online_feature_store.registry import EtcdRegistry
from online_feature_store.registry.spec import reconcile
from online_feature_store.registry.yaml_io import parse_spec
from online_feature_store.server.app import (
    REGISTRY_SERVICE,
    ServerConfig,
    build_server,
    mark_serving,
    readiness,
    watch_health,
)
from online_feature_store.server.metrics import ServerMetrics, serve_metrics, stop_metrics
from online_feature_store.server.native_front import NativeHttp

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class PrivateEtcd:
    """A single-member etcd of this test only (flags as scripts/services/etcd), on free ports."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.port, self.peer = _free_port(), _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        url, peer = f"http://{self.endpoint}", f"http://127.0.0.1:{self.peer}"
        self.proc = subprocess.Popen(
            ["etcd", "--name", "ofs-test", "--data-dir", str(self.data),
             "--listen-client-urls", url, "--advertise-client-urls", url,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"ofs-test={peer}", "--initial-cluster-state", "new",
             "--logger", "zap", "--log-outputs", "stderr"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        health = [
            "etcdctl",
            "--endpoints",
            url,
            "--dial-timeout=1s",
            "--command-timeout=2s",
            "endpoint",
            "health",
        ]
        wait_until(
            lambda: (
                subprocess.run(health, capture_output=True, check=False, env={"ETCDCTL_API": "3"}).returncode
                == 0
            ),
            "the private etcd to start",
        )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def wait_until(cond: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@dataclass
class Served:
    etcd: PrivateEtcd
    registry: EtcdRegistry
    fs: FeatureStore
    channel: grpc.Channel
    http_port: int
    metrics_port: int

    def health(self, service: str) -> int:
        stub = health_pb2_grpc.HealthStub(self.channel)
        status: int = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
        return status

    def ready(self) -> tuple[int, dict[str, Any]]:
        url = f"http://127.0.0.1:{self.http_port}/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=10) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    if shutil.which("etcd") is None:
        message = "etcd is not installed: run `scripts/services/etcd install` (Debian etcd-server)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    etcd = PrivateEtcd(tmp_path / "etcd")
    etcd.start()
    stop = threading.Event()
    # Short client timeouts so the outage shows within seconds rather than the defaults' 15 s.
    registry = EtcdRegistry([etcd.endpoint], timeout=1.0, retry_for=0.5)
    try:
        registry.apply(lambda s: reconcile(s, parse_spec(DOC, env=TOKENS)))
        fs = FeatureStore(registry, data_directory=tmp_path, poll_interval=0.1)
        metrics = ServerMetrics()
        srv, port, health = build_server(fs, ServerConfig(port=0), metrics)
        http = NativeHttp(srv, "127.0.0.1", 0, ready=lambda: readiness(fs), max_body_bytes=1 << 20)
        httpd, metrics_port = serve_metrics(metrics.registry, "127.0.0.1", 0)
        srv.start()
        http.start()
        mark_serving(fs, health)
        watch_health(fs, health, metrics, stop, interval=0.1)
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        yield Served(etcd, registry, fs, channel, http.port, metrics_port)
        stop.set()
        channel.close()
        http.stop(0)
        srv.stop(0).wait()
        stop_metrics(httpd)
        fs.close()
    finally:
        etcd.kill()
        registry.close()


def test_registry_outage_is_reported_and_recovers(served: Served) -> None:
    revision = served.fs.snapshot.revision
    assert served.health("") == SERVING
    assert served.health(REGISTRY_SERVICE) == SERVING
    status, report = served.ready()
    assert status == 200
    assert report["registry"] == {"healthy": True, "revision": revision}
    assert report["stores"] == {"main": {"reachable": True}}

    served.etcd.kill()
    wait_until(
        lambda: served.health(REGISTRY_SERVICE) == NOT_SERVING, "the registry health to go NOT_SERVING"
    )
    # The last good snapshot is still served, so the server as a whole stays up and ready.
    assert served.health("") == SERVING
    assert call(served.channel, RETRIEVE, retrieve_query(["u1"], ["a"]))
    status, report = served.ready()
    assert status == 200
    assert report["ready"] is True
    assert report["registry"] == {"healthy": False, "revision": revision}
    wait_until(lambda: value(scrape(served.metrics_port), "ofs_registry_healthy") == 0, "the gauge to drop")

    served.etcd.start()  # same data directory: the same registry comes back
    wait_until(lambda: served.health(REGISTRY_SERVICE) == SERVING, "the registry health to recover")
    assert served.ready()[1]["registry"] == {"healthy": True, "revision": revision}
    wait_until(
        lambda: value(scrape(served.metrics_port), "ofs_registry_healthy") == 1, "the gauge to recover"
    )

    # A change applied after the outage reaches the server (the watch reconnected).
    doc = {**DOC, "entities": [dict(DOC["entities"][0])]}
    doc["entities"][0]["feature_groups"] = [
        *DOC["entities"][0]["feature_groups"],
        {"label": "h", "data_type": "int32", "store": "main", "features": [{"label": "c", "default": 7}]},
    ]
    new_revision = served.registry.apply(lambda s: reconcile(s, parse_spec(doc, env=TOKENS)))
    assert new_revision > revision
    wait_until(lambda: served.fs.snapshot.revision == new_revision, "the new revision to be served")
    assert served.ready()[1]["registry"]["revision"] == new_revision
