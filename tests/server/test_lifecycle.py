"""``ofs serve`` as a process: SIGTERM with calls in flight, and a worker killed under load."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from test_metrics import _free_port, _wait_serving, scrape, value
from test_registry_health import wait_until
from test_server import DOC, PERSIST, RETRIEVE, call, persist_query, retrieve_query

from online_feature_store._proto import persist_pb2
from online_feature_store.feature_store import FeatureStore

FRESH = [("grpc.use_local_subchannel_pool", 1)]
"""Channel option: a connection of its own, so SO_REUSEPORT spreads calls over the workers."""


@dataclass
class Serve:
    proc: subprocess.Popen[bytes]
    address: str
    metrics_port: int
    http_port: int
    data: Path
    log: Path

    def output(self) -> str:
        return self.log.read_text()


def _setup(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    data = tmp_path / "data"
    data.mkdir()
    doc = {k: v for k, v in DOC.items() if k != "callers"}
    # A long busy timeout: the shutdown test holds the store's write lock while it looks around.
    doc["stores"] = [{"id": "main", "kind": "sqlite", "settings": {"path": "store.db", "busy_timeout": 120}}]
    (tmp_path / "features.yaml").write_text(yaml.safe_dump(doc))
    env = {**os.environ, "TMPDIR": str(tmp_path), "OFS_GRACE_SECONDS": "60"}
    subprocess.run(
        [sys.executable, "-m", "online_feature_store.cli", "registry", "apply", "-y", "-f",
         str(tmp_path / "features.yaml"), "--registry", f"sqlite:///{data / 'registry.db'}"],
        check=True, env=env, capture_output=True, timeout=120,
    )  # fmt: skip
    return data, env


@pytest.fixture
def serve(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Serve]:
    workers = getattr(request, "param", 1)
    data, env = _setup(tmp_path)
    port, metrics_port, http_port = _free_port(), _free_port(), _free_port()
    env["OFS_METRICS_PORT"] = str(metrics_port)
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "online_feature_store.cli", "serve", "--workers", str(workers),
             "--port", str(port), "--http-port", str(http_port), "--data-dir", str(data)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    served = Serve(proc, f"127.0.0.1:{port}", metrics_port, http_port, data, log)
    try:
        _wait_serving(served.address, proc, log)
        yield served
    finally:
        # Its own process group (start_new_session), so a failed test leaves no worker behind either.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def big_persist(prefix: str, n: int) -> bytes:
    rows = [
        persist_pb2.Data(
            key_values=[f"{prefix}{i}"],
            feature_values=[persist_pb2.FeatureValues(values=persist_pb2.Values(fp32_values=[float(i)]))],
        )
        for i in range(n)
    ]
    return persist_pb2.Query(
        entity_label="user",
        keys_schema=["user_id"],
        feature_group_schema=[persist_pb2.FeatureGroupSchema(label="g", feature_labels=["b"])],
        data=rows,
    ).SerializeToString()


def test_sigterm_drains_calls_in_flight(serve: Serve) -> None:
    n_grpc, n_keys = 4, 2000
    results: dict[str, Any] = {}

    def grpc_call(i: int) -> None:
        try:
            with grpc.insecure_channel(serve.address, options=FRESH) as ch:
                results[f"grpc{i}"] = persist_pb2.Result.FromString(
                    call(ch, PERSIST, big_persist(f"g{i}-", n_keys))
                ).message
        except grpc.RpcError as err:
            results[f"grpc{i}"] = err.code()

    def http_call() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", serve.http_port, timeout=120)
        body = {
            "entity_label": "user",
            "keys_schema": ["user_id"],
            "feature_group_schema": [{"label": "g", "feature_labels": ["b"]}],
            "data": [{"key_values": ["h1"], "feature_values": [{"values": {"fp32_values": [4.5]}}]}],
        }
        try:
            conn.request("POST", "/api/v1/features/persist", json.dumps(body))
            reply = conn.getresponse()
            results["http"] = (reply.status, json.loads(reply.read()))
        finally:
            conn.close()

    # Another writer holds the store's write lock, so every persist waits inside the server until the
    # test lets go: the calls are in flight for as long as the test needs.
    lock = sqlite3.connect(serve.data / "store.db", isolation_level=None)
    threads = [threading.Thread(target=grpc_call, args=(i,)) for i in range(n_grpc)]
    threads.append(threading.Thread(target=http_call))
    try:
        lock.execute("BEGIN IMMEDIATE")
        for t in threads:
            t.start()
        wait_until(
            lambda: value(scrape(serve.metrics_port), "ofs_requests_in_flight") == n_grpc + 1,
            "the calls to be in flight",
        )
        serve.proc.send_signal(signal.SIGTERM)
        # New calls are refused while the ones in flight are still waiting.
        wait_until(lambda: _grpc_code(serve.address) == grpc.StatusCode.UNAVAILABLE, "gRPC to refuse calls")
        wait_until(lambda: _http_refused(serve.http_port), "HTTP to refuse connections")
        assert serve.proc.poll() is None
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    for t in threads:
        t.join(timeout=120)
    assert serve.proc.wait(timeout=120) == 0, serve.output()
    assert results == {
        **{f"grpc{i}": "Data Persisted Successfully" for i in range(n_grpc)},
        "http": (200, {"message": "Data Persisted Successfully"}),
    }
    with FeatureStore(data_directory=serve.data) as fs:
        got = fs.retrieve("user", ["g0-0", f"g3-{n_keys - 1}", "h1"], {"g": ["b"]})
        assert list(got.status["g"]) == [0, 0, 0]
        assert list(got.values["g"][:, 0]) == [0.0, float(n_keys - 1), 4.5]


def _grpc_code(address: str) -> grpc.StatusCode:
    """The status of a retrieve on a new connection."""
    with grpc.insecure_channel(address, options=FRESH) as ch:
        fn = ch.unary_unary(RETRIEVE, request_serializer=None, response_deserializer=None)
        try:
            fn(retrieve_query(["u1"], ["a"]), timeout=5)
        except grpc.RpcError as err:
            code: grpc.StatusCode = err.code()
            return code
    return grpc.StatusCode.OK


def _http_refused(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/health/self")
        conn.getresponse().read()
    except (ConnectionRefusedError, ConnectionResetError):  # reset: caught in the backlog as it closed
        return True
    finally:
        conn.close()
    return False


def _children(pid: int) -> set[int]:
    """Worker processes of ``pid`` (multiprocessing spawn children, not its resource tracker)."""
    out = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"spawn_main" in cmdline:
            out.add(int(entry.name))
    return out


@pytest.mark.parametrize("serve", [2], indirect=True)
def test_killed_worker_is_replaced(serve: Serve) -> None:
    workers = _children(serve.proc.pid)
    assert len(workers) == 2
    (multiproc_dir,) = Path(serve.log.parent).glob("ofs-metrics-*")
    stop = threading.Event()
    outcomes: list[str] = []

    def client() -> None:
        i = 0
        while not stop.is_set():
            try:
                with grpc.insecure_channel(serve.address, options=FRESH) as ch:
                    call(ch, PERSIST, persist_query(f"k{i}", float(i)))
                outcomes.append("OK")
            except grpc.RpcError as err:
                outcomes.append(err.code().name)
            i += 1

    loop = threading.Thread(target=client)
    loop.start()
    try:
        wait_until(
            lambda: {p for p in workers if (multiproc_dir / f"counter_{p}.db").exists()} == workers,
            "both workers to serve calls",
        )
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        at_kill = len(outcomes)
        wait_until(lambda: len(_children(serve.proc.pid) - workers) == 1, "the parent to start a new worker")
        (replacement,) = _children(serve.proc.pid) - workers
        assert _children(serve.proc.pid) == workers - {victim} | {replacement}
        wait_until(lambda: (multiproc_dir / f"counter_{replacement}.db").exists(), "the new worker to serve")
        wait_until(lambda: outcomes[at_kill:].count("OK") >= 20, "calls to go on")
    finally:
        stop.set()
        loop.join()
    after = outcomes[at_kill:]
    # Only a call caught on the killed worker's connection can fail, and only as UNAVAILABLE.
    failures = [o for o in after if o != "OK"]
    assert set(failures) <= {"UNAVAILABLE"}, failures
    assert len(failures) <= 2, failures
    assert f"worker {victim} exited (code -9); restarting" in serve.output()
    serve.proc.send_signal(signal.SIGTERM)
    serve.proc.send_signal(signal.SIGTERM)  # an impatient second one changes nothing
    assert serve.proc.wait(timeout=60) == 0, serve.output()
    wait_until(lambda: not _children(serve.proc.pid), "the workers to exit")


@pytest.mark.parametrize("serve", [2], indirect=True)
def test_workers_exit_when_the_parent_dies(serve: Serve) -> None:
    workers = _children(serve.proc.pid)
    assert len(workers) == 2
    serve.proc.kill()
    serve.proc.wait()
    wait_until(lambda: not any(Path(f"/proc/{p}").exists() for p in workers), "the orphaned workers to exit")
