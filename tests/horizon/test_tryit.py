"""Try-it end to end: Horizon approvals reach a real gRPC server on the same data directory, which then
serves persisted values back through Horizon's try-it endpoint."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from online_feature_store._proto import persist_pb2
from online_feature_store.feature_store import FeatureStore
from online_feature_store.server.app import ServerConfig, build_server, mark_serving

from .conftest import Api, Server, approve, submit

# one database is enough here: the API suite runs on both
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def grpc_port(tmp_path: Path) -> Iterator[tuple[int, FeatureStore]]:
    """``ofs serve``'s server, in process, on the data directory Horizon uses."""
    fs = FeatureStore(data_directory=tmp_path, poll_interval=0.2)
    server, port, health = build_server(fs, ServerConfig(port=0, metrics_port=0))
    server.start()
    mark_serving(fs, health)
    yield port, fs
    server.stop(None).wait()
    fs.close()


def _wait_for(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30  # a safety net for a stuck watcher, not a latency assertion
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _persist(port: int) -> None:
    query = persist_pb2.Query(
        entity_label="user",
        keys_schema=["user_id"],
        feature_group_schema=[
            persist_pb2.FeatureGroupSchema(label="activity", feature_labels=["ctr", "clicks"])
        ],
        data=[
            persist_pb2.Data(
                key_values=["u1"],
                feature_values=[persist_pb2.FeatureValues(values=persist_pb2.Values(fp32_values=[0.75, 12]))],
            )
        ],
    )
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary("/persist.FeatureService/PersistFeatures")
        call(query.SerializeToString(), timeout=30)


@sqlite_only
def test_approved_registration_is_served_and_retrieved(
    make_server: Callable[..., Server], grpc_port: tuple[int, FeatureStore]
) -> None:
    port, fs = grpc_port
    api = Api(make_server(serving_address=f"127.0.0.1:{port}"))
    try:
        admin = api.user("alice", "admin")
        editor = api.user("eve", "editor", admin=admin)
        for kind, payload in (
            ("create_store", {"id": "main", "kind": "sqlite", "settings": {"path": "store.db"}}),
            ("create_entity", {"label": "user", "keys": [{"label": "user_id", "column": "uid"}]}),
            (
                "create_feature_group",
                {
                    "entity": "user",
                    "label": "activity",
                    "data_type": "fp32",
                    "store": "main",
                    "features": [{"label": "ctr", "default": 0.5}, {"label": "clicks", "default": -1}],
                },
            ),
        ):
            revision = approve(admin, submit(editor, kind, payload)["id"])["revision"]
        # the server on the same data directory picks the approval up through its registry watch
        _wait_for(lambda: fs.snapshot.revision >= revision, "the server to see the approved registry")
        _persist(port)
        body: dict[str, Any] = {
            "entity": "user",
            "keys_schema": ["user_id"],
            "keys": [["u1"], ["u2"]],
            "feature_groups": [{"label": "activity", "feature_labels": ["clicks", "ctr"]}],
        }
        r = editor.post("/try/retrieve", json=body)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["keys_schema"] == ["user_id"]
        assert out["feature_schemas"] == [
            {
                "feature_group_label": "activity",
                "features": [{"label": "clicks", "column_idx": 0}, {"label": "ctr", "column_idx": 1}],
            }
        ]
        assert out["rows"] == [
            {"keys": ["u1"], "columns": ["12", "0.75"]},
            {"keys": ["u2"], "columns": ["-1", "0.5"]},  # nothing stored: the defaults
        ]
        unknown = editor.post("/try/retrieve", json={**body, "entity": "nobody"})
        assert unknown.status_code in (404, 422)
        assert "nobody" in str(unknown.json()["detail"])
        assert api.anon.post("/try/retrieve", json=body).status_code == 401
    finally:
        api.close()


@sqlite_only
def test_unreachable_serving_api_is_a_502(make_server: Callable[..., Server]) -> None:
    api = Api(make_server(serving_address=f"127.0.0.1:{_free_port()}", serving_timeout_seconds=2))
    try:
        admin = api.user("alice", "admin")
        body = {
            "entity": "user",
            "keys_schema": ["id"],
            "keys": [["1"]],
            "feature_groups": [{"label": "g", "feature_labels": ["a"]}],
        }
        r = admin.post("/try/retrieve", json=body)
        assert r.status_code == 502
        assert "UNAVAILABLE" in r.json()["detail"] or "DEADLINE" in r.json()["detail"]
    finally:
        api.close()


def test_ofs_horizon_command(tmp_path: Path) -> None:
    """``ofs horizon`` serves the API and the UI, and stops cleanly on SIGTERM."""
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "online_feature_store.cli",
            "horizon",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                return httpx.get(url + "/api/v1/health", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        _wait_for(up, "ofs horizon to start")
        assert httpx.get(url + "/api/v1/health").json() == {"revision": 0}
        assert httpx.get(url + "/").status_code == 200  # the UI
        assert httpx.get(url + "/openapi.json").json()["info"]["title"] == "Horizon"
        assert (tmp_path / "horizon.secret").stat().st_mode & 0o777 == 0o600
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out


@sqlite_only
def test_try_it_is_limited_to_a_role_and_to_entities(make_server: Callable[..., Server]) -> None:
    """Try-it reads real values with Horizon's own caller: only ``try_role`` (editor by default) and up,
    only the entities of ``try_entities``. A call that passes both reaches the serving API (here an
    unreachable one: 502)."""
    body = {
        "entity": "user",
        "keys_schema": ["id"],
        "keys": [["1"]],
        "feature_groups": [{"label": "g", "feature_labels": ["a"]}],
    }
    nowhere = f"127.0.0.1:{_free_port()}"
    api = Api(make_server(serving_address=nowhere, serving_timeout_seconds=2, try_entities="user,item"))
    try:
        admin = api.user("alice", "admin")
        editor = api.user("eve", "editor", admin=admin)
        viewer = api.user("victor", "viewer", admin=admin)
        r = viewer.post("/try/retrieve", json=body)
        assert r.status_code == 403
        assert "needs the editor role (setting try_role)" in r.json()["detail"]
        assert viewer.get("/auth/me").json()["can_try"] is False
        me = editor.get("/auth/me").json()
        assert (me["can_try"], me["try_entities"]) == (True, ["user", "item"])
        r = editor.post("/try/retrieve", json={**body, "entity": "payments"})
        assert r.status_code == 403
        assert (
            "may not read entity 'payments' (setting try_entities allows: user, item)" in r.json()["detail"]
        )
        assert editor.post("/try/retrieve", json=body).status_code == 502  # past both checks
    finally:
        api.close()

    api = Api(make_server(try_role="admin", try_entities=""))  # try-it off for everyone
    try:
        admin = api.login("alice")  # the same database
        assert admin.get("/auth/me").json()["can_try"] is False
        r = admin.post("/try/retrieve", json=body)
        assert r.status_code == 403
        assert "allows: none" in r.json()["detail"]
    finally:
        api.close()
