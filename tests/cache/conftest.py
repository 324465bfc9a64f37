"""Fixtures of the cache suite: a registry with cached FGs, a SQLite store, private Redis servers."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _services import require_service as require_service

from online_feature_store.registry.spec import reconcile
from online_feature_store.registry.sqlite import SqliteRegistry
from online_feature_store.registry.yaml_io import parse_spec

REDIS = ("127.0.0.1", 16379)
REDIS_URL = f"redis://{REDIS[0]}:{REDIS[1]}/0"
CLUSTER = [("127.0.0.1", 17001), ("127.0.0.1", 17002), ("127.0.0.1", 17003)]
CLUSTER_URL = "redis-cluster://" + ",".join(f"{h}:{p}" for h, p in CLUSTER)
N_FEATURES = 4


def registry_doc(*, in_process: bool = True, distributed: bool = True, ttl: int = 600) -> dict[str, Any]:
    """Entity ``user`` with FGs ``g1``..``g3`` (fp32) flagged for both cache tiers, and ``plain`` (not
    flagged), all in the SQLite store ``main`` (``store.db`` in the data directory)."""

    def fg(label: str, cached: bool = True) -> dict[str, Any]:
        return {
            "label": label,
            "data_type": "fp32",
            "store": "main",
            "in_process_cache": cached,
            "distributed_cache": cached,
            "features": [{"label": f"f{i}", "default": -1.0} for i in range(N_FEATURES)],
        }

    return {
        "stores": [{"id": "main", "kind": "sqlite", "settings": {"path": "store.db"}}],
        "entities": [
            {
                "label": "user",
                "keys": [{"label": "user_id", "column": "uid"}],
                "cache": {
                    "in_process": {"enabled": in_process, "ttl_seconds": ttl, "jitter_percent": 0},
                    "distributed": {"enabled": distributed, "ttl_seconds": ttl, "jitter_percent": 10},
                },
                "feature_groups": [fg("g1"), fg("g2"), fg("g3"), fg("plain", cached=False)],
            }
        ],
    }


def make_registry(directory: Path, doc: dict[str, Any]) -> str:
    """Applies ``doc`` to a SQLite registry in ``directory``; returns its URL."""
    registry = SqliteRegistry(directory / "registry.db")
    spec = parse_spec(doc, env={})
    registry.apply(lambda state: reconcile(state, spec))
    registry.close()
    return f"sqlite:///{directory / 'registry.db'}"


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A redis-server of this test alone (never a shared service), which the test may kill and restart."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            require_service("redis-server binary", [("127.0.0.1", 0)], "scripts/services/redis start")
            raise AssertionError("unreachable")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=self.directory,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise AssertionError(f"private redis-server on port {self.port} did not start")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.kill()


def entity_label() -> str:
    """A label no other test uses (cache keys of parallel runs never meet)."""
    return f"e{uuid.uuid4().hex[:10]}"
