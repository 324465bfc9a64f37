"""Prometheus metrics: counters and histograms after real calls over loopback, the registry gauges, store
errors, ``ofs serve --workers 2`` aggregation in the parent, and the Grafana dashboard's queries."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from test_server import DOC, PERSIST, READER_TOKEN, RETRIEVE, TOKENS, call, persist_query, retrieve_query

from online_feature_store.errors import UnavailableError
from online_feature_store.feature_store import FeatureStore
from online_feature_store.registry.model import Entity
from online_feature_store.registry.spec import reconcile
from online_feature_store.registry.sqlite import SqliteRegistry
from online_feature_store.registry.yaml_io import parse_spec
from online_feature_store.server.app import ServerConfig, build_server, mark_serving
from online_feature_store.server.main import load_config
from online_feature_store.server.metrics import LATENCY_BUCKETS, ServerMetrics, serve_metrics, stop_metrics
from online_feature_store.store.base import BlockWrite, KeyValues

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docs" / "grafana" / "online-feature-store.json"
READER = (("online-feature-store-caller-id", "ranker"), ("online-feature-store-auth-token", READER_TOKEN))

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    """Every sample of ``/metrics`` by (name, labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 when there are none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


@dataclass
class Served:
    channel: grpc.Channel
    fs: FeatureStore
    metrics: ServerMetrics
    metrics_port: int
    registry: SqliteRegistry


class FailingStore:
    """A store that is down."""

    def ensure(self, entities: Sequence[Entity]) -> None:
        pass

    def read(self, entity: Entity, keys: Sequence[KeyValues], fg_ids: Sequence[int]) -> list[list[bytes]]:
        raise UnavailableError("store main is down")

    def write(self, entity: Entity, writes: Sequence[BlockWrite]) -> None:
        raise UnavailableError("store main is down")

    def ping(self) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Served]:
    registry = SqliteRegistry(tmp_path / "registry.db")
    spec = parse_spec(DOC, env=TOKENS)
    registry.apply(lambda s: reconcile(s, spec))
    stores = {"main": FailingStore()} if getattr(request, "param", "") == "failing" else None
    fs = FeatureStore(registry, data_directory=tmp_path, stores=stores, poll_interval=0.05)
    metrics = ServerMetrics()
    srv, port, health = build_server(fs, ServerConfig(port=0), metrics)
    httpd, metrics_port = serve_metrics(metrics.registry, "127.0.0.1", 0)
    srv.start()
    mark_serving(fs, health)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield Served(channel, fs, metrics, metrics_port, registry)
    channel.close()
    srv.stop(0).wait()
    stop_metrics(httpd)
    fs.close()
    registry.close()


def test_request_counters_and_histograms(served: Served) -> None:
    ch = served.channel
    for i in range(3):
        call(ch, PERSIST, persist_query(f"u{i}", 2.0))
    call(ch, RETRIEVE, retrieve_query(["u0"], ["a"]))
    call(ch, RETRIEVE, retrieve_query(["u0", "u1", "u9"], ["a", "b"]), metadata=READER)
    unknown = (("online-feature-store-caller-id", "nobody"),)
    call(ch, RETRIEVE, retrieve_query(["u1"], ["b"]), metadata=unknown)
    with pytest.raises(grpc.RpcError):
        call(ch, RETRIEVE, retrieve_query(["u1"], ["zz"]))  # NOT_FOUND before the entity is planned
    with pytest.raises(grpc.RpcError):
        call(ch, PERSIST, persist_query("u1", 1e300))  # INVALID_ARGUMENT

    m = scrape(served.metrics_port)
    total = "ofs_requests_total"
    assert value(m, total, method="PersistFeatures", caller="anonymous", code="OK") == 3
    assert value(m, total, method="PersistFeatures", code="INVALID_ARGUMENT") == 1
    assert value(m, total, method="RetrieveFeatures", caller="anonymous", code="OK") == 1
    assert value(m, total, method="RetrieveFeatures", caller="ranker", code="OK") == 1
    assert value(m, total, method="RetrieveFeatures", caller="unknown", code="OK") == 1
    assert value(m, total, method="RetrieveFeatures", code="NOT_FOUND") == 1
    assert value(m, total) == 8
    assert value(m, "ofs_request_duration_seconds_count", method="RetrieveFeatures") == 4
    assert value(m, "ofs_request_duration_seconds_bucket", method="PersistFeatures", le="+Inf") == 4
    # Per entity: only the calls that got as far as naming a known entity.
    assert (
        value(m, "ofs_entity_request_duration_seconds_count", method="RetrieveFeatures", entity="user") == 3
    )
    assert value(m, "ofs_request_rows_sum", method="RetrieveFeatures", entity="user") == 1 + 3 + 1
    # Buckets are cumulative in the exposition: two 1-key calls, then the 3-key one under le=5.
    rows_bucket = "ofs_request_rows_bucket"
    assert value(m, rows_bucket, method="RetrieveFeatures", entity="user", le="1.0") == 2
    assert value(m, rows_bucket, method="RetrieveFeatures", entity="user", le="2.0") == 2
    assert value(m, rows_bucket, method="RetrieveFeatures", entity="user", le="5.0") == 3
    assert value(m, rows_bucket, method="RetrieveFeatures", entity="user", le="+Inf") == 3
    assert value(m, "ofs_requests_in_flight") == 0
    assert value(m, "ofs_request_rows_count", method="PersistFeatures", entity="user") == 3
    assert value(m, "ofs_store_duration_seconds_count", store="main", op="read") == 3
    assert value(m, "ofs_store_duration_seconds_count", store="main", op="write") == 3
    assert value(m, "ofs_store_errors_total") == 0


def test_observations_added_at_once_expose_as_observed_one_by_one() -> None:
    """``ServerMetrics.add_native`` adds the native front's per-bucket totals at once; the exposition is
    the one of observing each value (what :class:`Calls` does per call)."""
    values = [0.00001, 0.00005, 0.0003, 0.0003, 0.002, 0.7, 3.0]
    bounds = [*LATENCY_BUCKETS, float("inf")]
    counts = [0] * len(bounds)
    for v in values:
        counts[next(i for i, b in enumerate(bounds) if v <= b)] += 1
    one_by_one, at_once = ServerMetrics(), ServerMetrics()
    for v in values:
        one_by_one.request_seconds.labels("RetrieveFeatures").observe(v)
        one_by_one.requests.labels("RetrieveFeatures", "anonymous", "OK").inc()
    at_once.add_native(
        (
            [("RetrieveFeatures", "anonymous", 0, len(values))],
            [("RetrieveFeatures", (counts, sum(values)))],
            [],
            [],
            [],
            [],
            0,
        )
    )

    def exposed(m: ServerMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in m.registry.collect()
            for s in family.samples
            if not s.name.endswith("_created")
        }

    assert exposed(at_once) == exposed(one_by_one)
    with pytest.raises(ValueError, match="3 bucket counts for a histogram of 15 buckets"):
        at_once.add_native(([], [("RetrieveFeatures", ([1, 2, 3], 1.0))], [], [], [], [], 0))


def test_feature_validity_from_library_retrieve(served: Served) -> None:
    fs = served.fs
    call(served.channel, PERSIST, persist_query("u1", 2.0))
    result = fs.retrieve("user", ["u1", "u2", "u3"], {"g": ["a", "b"]})
    assert list(result.status["g"]) == [0, 1, 1]
    m = scrape(served.metrics_port)
    rows = "ofs_feature_rows_total"
    assert value(m, rows, entity="user", feature_group="g", status="found") == 1
    assert value(m, rows, entity="user", feature_group="g", status="missing") == 2
    assert value(m, rows, status="expired") == 0


def test_feature_validity_from_served_retrieve(served: Served) -> None:
    call(served.channel, PERSIST, persist_query("u1", 2.0))
    call(served.channel, RETRIEVE, retrieve_query(["u1", "u2", "u1"], ["a"]))
    m = scrape(served.metrics_port)
    rows = "ofs_feature_rows_total"
    assert value(m, rows, entity="user", feature_group="g", status="found") == 2
    assert value(m, rows, entity="user", feature_group="g", status="missing") == 1


@pytest.mark.parametrize("served", ["failing"], indirect=True)
def test_store_errors(served: Served) -> None:
    for method, body in ((RETRIEVE, retrieve_query(["u1"], ["a"])), (PERSIST, persist_query("u1", 1.0))):
        with pytest.raises(grpc.RpcError) as info:
            call(served.channel, method, body)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    m = scrape(served.metrics_port)
    assert value(m, "ofs_store_errors_total", store="main", op="read") == 1
    assert value(m, "ofs_store_errors_total", store="main", op="write") == 1
    assert value(m, "ofs_store_duration_seconds_count", store="main") == 2
    assert value(m, "ofs_requests_total", code="UNAVAILABLE") == 2


def test_registry_gauges_and_serving_while_unhealthy(served: Served) -> None:
    served.metrics.refresh_registry(served.fs)
    m = scrape(served.metrics_port)
    assert value(m, "ofs_registry_revision") == served.fs.snapshot.revision > 0
    assert value(m, "ofs_registry_healthy") == 1
    served.registry.close()  # the registry becomes unreachable: the watch keeps the last good snapshot
    deadline = time.monotonic() + 10
    while served.fs.registry_healthy and time.monotonic() < deadline:
        time.sleep(0.02)
    served.metrics.refresh_registry(served.fs)
    assert value(scrape(served.metrics_port), "ofs_registry_healthy") == 0
    stub = health_pb2_grpc.HealthStub(served.channel)
    assert (
        stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status
        == health_pb2.HealthCheckResponse.SERVING
    )
    assert call(served.channel, RETRIEVE, retrieve_query(["u1"], ["a"]))


def test_metrics_port_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_config(None, {})[0].metrics_port == 9090
    monkeypatch.setenv("OFS_METRICS_PORT", "0")
    assert load_config(None, {})[0].metrics_port == 0


def _exported_names() -> dict[str, set[str]]:
    """Sample names the server exports, with their label names."""
    metrics = ServerMetrics()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    names: dict[str, set[str]] = {}
    for collector in vars(metrics).values():
        if not hasattr(collector, "_labelnames"):
            continue
        for family in collector.describe():
            labels = set(collector._labelnames)
            for suffix in suffixes[family.type]:
                names[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return names


def test_dashboard_queries_use_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 39
    assert any(
        v["type"] == "datasource" and v["query"] == "prometheus" for v in dashboard["templating"]["list"]
    )
    exported = _exported_names()
    panels = dashboard["panels"]
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    assert len(exprs) >= 10
    used: set[str] = set()
    for expr in exprs:
        names = re.findall(r"\bofs_[a-z_]+", expr)
        assert names, expr
        for name in names:
            assert name in exported, f"{name} in {expr!r} is not exported"
            used.add(name)
            for grouping in re.findall(r"\bby \(([^)]*)\)", expr):
                labels = {g.strip() for g in grouping.split(",")}
                assert labels <= exported[name], f"{expr!r} groups by labels {name} does not have"
    wanted = {
        "ofs_requests_total",
        "ofs_request_duration_seconds_bucket",
        "ofs_entity_request_duration_seconds_bucket",
        "ofs_feature_rows_total",
        "ofs_store_duration_seconds_bucket",
        "ofs_store_errors_total",
        "ofs_registry_revision",
        "ofs_registry_healthy",
        "ofs_request_rows_bucket",
    }
    assert wanted <= used
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}"


# -- ofs serve --workers 2 --------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_serving(address: str, proc: subprocess.Popen[Any], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        with grpc.insecure_channel(address) as ch:
            try:
                reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
        time.sleep(0.1)
    raise AssertionError(f"server did not start:\n{log.read_text()}")


def test_two_workers_aggregate_in_parent(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    doc = {k: v for k, v in DOC.items() if k != "callers"}
    (tmp_path / "features.yaml").write_text(yaml.safe_dump(doc))
    env = {**os.environ, "TMPDIR": str(tmp_path), "OFS_GRACE_SECONDS": "5"}
    subprocess.run(
        [sys.executable, "-m", "online_feature_store.cli", "registry", "apply", "-y", "-f",
         str(tmp_path / "features.yaml"), "--registry", f"sqlite:///{data / 'registry.db'}"],
        check=True, env=env, capture_output=True, timeout=60,
    )  # fmt: skip
    port, metrics_port = _free_port(), _free_port()
    env["OFS_METRICS_PORT"] = str(metrics_port)
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "online_feature_store.cli", "serve", "--workers", "2",
             "--port", str(port), "--data-dir", str(data)],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        address = f"127.0.0.1:{port}"
        _wait_serving(address, proc, log)
        (multiproc_dir,) = tmp_path.glob("ofs-metrics-*")
        # Each call on its own connection, so SO_REUSEPORT spreads them; go on until both workers
        # have counted calls (a worker's counter file appears with its first counted call).
        calls, deadline = 0, time.monotonic() + 60
        while len(list(multiproc_dir.glob("counter_*.db"))) < 2 or calls < 10:
            assert time.monotonic() < deadline, f"calls never reached both workers:\n{log.read_text()}"
            with grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
                call(ch, PERSIST, persist_query(f"k{calls}", 1.0))
                call(ch, RETRIEVE, retrieve_query([f"k{calls}"], ["b"]))
                calls += 1
        # A worker's front counts its retrieves natively and adds them to the shared files once a
        # second (the parent's scrape cannot ask the workers): wait for that.
        deadline = time.monotonic() + 10
        m = scrape(metrics_port)
        while value(m, "ofs_requests_total", method="RetrieveFeatures", code="OK") < calls:
            assert time.monotonic() < deadline, "the workers' retrieves never reached the parent's metrics"
            time.sleep(0.1)
            m = scrape(metrics_port)
        assert value(m, "ofs_requests_total", method="PersistFeatures", code="OK") >= calls
        assert value(m, "ofs_request_rows_count", method="RetrieveFeatures", entity="user") >= calls
        assert value(m, "ofs_store_duration_seconds_count", store="main", op="write") >= calls
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, log.read_text()
        assert not multiproc_dir.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
