"""Property-based fuzzing of every operation of the OpenAPI document (schemathesis): the server never
answers 5xx, and every response matches the documented status codes, content type and schema.

Bounded: a few examples per operation, so the whole run takes seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from online_feature_store.feature_store import FeatureStore
from online_feature_store.horizon.config import HorizonConfig
from online_feature_store.server.app import ServerConfig, build_server

from .conftest import PASSWORD, Server

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    """A server with a small registry, and the headers of an admin session."""
    data_dir: Path = tmp_path_factory.mktemp("horizon-fuzz")
    # a real serving API on the same data directory, so try-it answers too
    fs = FeatureStore(data_directory=data_dir, poll_interval=0.2)
    grpc_server, grpc_port, _ = build_server(fs, ServerConfig(port=0, metrics_port=0))
    grpc_server.start()
    server = Server(
        HorizonConfig(
            data_dir=data_dir,
            port=0,
            password_profile="CHEAPEST",
            serving_address=f"127.0.0.1:{grpc_port}",
            # the fuzzer's wrong passwords must not lock the session's user out of the rest of the run
            login_attempts_per_ip=100_000,
            login_failures_per_user=100_000,
        )
    )
    with httpx.Client(base_url=server.url + "/api/v1") as c:
        c.post("/auth/register", json={"username": "alice", "password": PASSWORD})  # the first admin
        alice = c.post("/auth/login", json={"username": "alice", "password": PASSWORD}).json()["token"]
        author = {"Authorization": f"Bearer {alice}"}
        c.post("/users", json={"username": "bob", "password": PASSWORD, "role": "admin"}, headers=author)
        bob = c.post("/auth/login", json={"username": "bob", "password": PASSWORD}).json()["token"]
        approver = {"Authorization": f"Bearer {bob}"}
        for kind, payload in (
            ("create_store", {"id": "main", "kind": "sqlite", "settings": {"path": "s.db"}}),
            ("create_entity", {"label": "user", "keys": [{"label": "user_id"}]}),
            (
                "create_feature_group",
                {
                    "entity": "user",
                    "label": "g",
                    "data_type": "fp32",
                    "store": "main",
                    "features": [{"label": "a"}],
                },
            ),
        ):
            created = c.post("/requests", json={"kind": kind, "payload": payload}, headers=author).json()
            assert c.post(f"/requests/{created['id']}/approve", headers=approver).status_code == 200
        c.post(
            "/requests",
            json={
                "kind": "create_store",
                "payload": {"id": "s2", "kind": "redis", "settings": {"url": "redis://127.0.0.1:16379"}},
            },
            headers=author,
        )
    yield server, author
    server.stop()
    grpc_server.stop(None).wait()
    fs.close()


FUZZ = settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def test_no_server_errors_and_responses_match_the_document(
    fuzz_target: tuple[Server, dict[str, str]],
) -> None:
    # One Hypothesis run per operation, driven here rather than by schemathesis' pytest plugin (which does
    # not support this pytest version).
    server, session = fuzz_target
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 26

    for operation in operations:
        headers = session
        if operation.path == "/api/v1/auth/logout":
            # a fresh session: logging out the shared one would leave the rest of the run unauthenticated
            login = httpx.post(
                server.url + "/api/v1/auth/login", json={"username": "alice", "password": PASSWORD}
            )
            headers = {"Authorization": f"Bearer {login.json()['token']}"}

        _fuzz(operation, server.url, headers)


def _fuzz(operation: Any, base_url: str, headers: dict[str, str]) -> None:
    @FUZZ
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS)

    run()
