"""Fixtures of the registry contract suite: every test runs on SQLite and on a real etcd (12379)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _services import require_service as require_service

from online_feature_store.registry import EtcdRegistry, RegistryBackend, SqliteRegistry

ETCD = ("127.0.0.1", 12379)
CLUSTER = [("127.0.0.1", 22379), ("127.0.0.1", 22389), ("127.0.0.1", 22399)]


Opener = Callable[[], RegistryBackend]


@pytest.fixture(params=["sqlite", "etcd"])
def open_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """A function opening a new connection to one fresh, empty registry; every connection is closed after."""
    opened: list[Any] = []
    if request.param == "sqlite":
        path = tmp_path / "registry.db"

        def opener() -> RegistryBackend:
            backend = SqliteRegistry(path, poll_interval=0.05)
            opened.append(backend)
            return backend
    else:
        require_service("etcd", [ETCD], "scripts/services/etcd start")
        prefix = f"/ofs-test/{uuid.uuid4().hex}/"

        def opener() -> RegistryBackend:
            backend = EtcdRegistry([f"{ETCD[0]}:{ETCD[1]}"], prefix=prefix, timeout=5.0)
            opened.append(backend)
            return backend

    yield opener
    if request.param == "etcd" and opened:
        opened[0]._client.delete_prefix(opened[0].prefix)
    for backend in opened:
        backend.close()


@pytest.fixture
def backend(open_backend: Opener) -> RegistryBackend:
    """One connection to a fresh registry."""
    return open_backend()


def etcd_raw_values(backend: EtcdRegistry) -> bytes:
    """Every stored byte under the backend's prefix."""
    return b"".join(kv.key + kv.value for kv in backend._client.get_prefix_response(backend.prefix).kvs)
