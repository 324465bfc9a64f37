"""Horizon served by a real uvicorn server on a loopback port, over SQLite and over PostgreSQL.

Every API test runs on SQLite (the ``database_url`` fixture's default); the ones marked
:data:`both_databases` (the lifecycle, concurrency, users and audit) run on PostgreSQL too: they exercise
what differs between the two (conditional updates, concurrent transactions, constraints, time zones)
without running the whole suite twice. Under ``CI=true`` a missing PostgreSQL fails them.
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from _services import require_service

from online_feature_store.horizon.app import create_app
from online_feature_store.horizon.config import HorizonConfig

PG_PORT = 15432
PG_URL = f"postgresql+psycopg://ofs@127.0.0.1:{PG_PORT}/ofs"
SECRET = "test-secret-" + "x" * 40
PASSWORD = "correct horse battery"


class Server:
    """A running Horizon: ``url``, the app and its config."""

    def __init__(self, config: HorizonConfig) -> None:
        self.config = config
        self.app = create_app(config, static_dir=None)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # as `ofs horizon` without trusted_proxies: X-Forwarded-For is not believed
        config = uvicorn.Config(self.app, log_level="warning", lifespan="on", proxy_headers=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("Horizon server did not start")
            threading.Event().wait(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join()

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url + "/api/v1", headers=headers, timeout=60)


class Api:
    """Users and clients of one server."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.anon = server.client()
        self._clients: list[httpx.Client] = [self.anon]

    def user(self, username: str, role: str = "viewer", *, admin: httpx.Client | None = None) -> httpx.Client:
        """A logged-in client of a new user with ``role``: the first user registers itself (first-run
        registration: the admin); later ones are created by ``admin`` (self-registration is off)."""
        if admin is None:
            r = self.anon.post("/auth/register", json={"username": username, "password": PASSWORD})
            assert r.status_code == 201, r.text
            assert r.json()["role"] == role
        else:
            r = admin.post("/users", json={"username": username, "password": PASSWORD, "role": role})
            assert r.status_code == 201, r.text
        return self.login(username)

    def login(self, username: str) -> httpx.Client:
        r = self.anon.post("/auth/login", json={"username": username, "password": PASSWORD})
        assert r.status_code == 200, r.text
        client = self.server.client(r.json()["token"])
        self._clients.append(client)
        return client

    def close(self) -> None:
        for c in self._clients:
            c.close()


both_databases = pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
"""Marks a test to run on PostgreSQL (``scripts/services/postgres start``) as well as on SQLite."""


@pytest.fixture(params=["sqlite"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """``None`` (the embedded SQLite file) or a fresh PostgreSQL schema on the test server."""
    if request.param == "sqlite":
        yield None
        return
    require_service("postgres", [("127.0.0.1", PG_PORT)], "scripts/services/postgres start")
    schema = f"hz_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def make_server(tmp_path: Path, database_url: str | None) -> Iterator[Callable[..., Server]]:
    """Starts Horizon servers on ``tmp_path`` (as data dir) with extra settings; stops them at the end."""
    servers: list[Server] = []

    def make(**settings: Any) -> Server:
        base: dict[str, Any] = {"data_dir": tmp_path, "port": 0, "password_profile": "CHEAPEST"}
        if database_url is not None:
            base.update(database_url=database_url, secret=SECRET)
        server = Server(HorizonConfig(**{**base, **settings}))
        servers.append(server)
        return server

    yield make
    for s in servers:
        s.stop()


@pytest.fixture
def api(make_server: Callable[..., Server]) -> Iterator[Api]:
    """A server (two-person rule) and its API."""
    a = Api(make_server())
    yield a
    a.close()


@pytest.fixture
def admin(api: Api) -> httpx.Client:
    """The first user: an admin."""
    return api.user("alice", "admin")


def approve(client: httpx.Client, request_id: int) -> dict[str, Any]:
    r = client.post(f"/requests/{request_id}/approve")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def submit(client: httpx.Client, kind: str, payload: dict[str, Any], description: str = "") -> dict[str, Any]:
    r = client.post("/requests", json={"kind": kind, "payload": payload, "description": description})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body
