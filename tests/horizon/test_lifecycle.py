"""Approval survives a failure between the registry and Horizon's database (fault injection at the unit
level: the service without HTTP, a real registry and a real database whose commit is made to fail).

The registry and the database cannot share a transaction: a request is claimed (APPLYING), the registry
change is applied, then the decision is recorded. When recording fails, the request must not fall back
to PENDING (it was applied) and a retry must not apply it twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import TypeAdapter

from online_feature_store.errors import ConflictError, UnavailableError
from online_feature_store.horizon import schemas
from online_feature_store.horizon.config import HorizonConfig
from online_feature_store.horizon.db import requests, utcnow
from online_feature_store.horizon.service import Horizon
from online_feature_store.registry.backend import RegistryBackend
from online_feature_store.registry.connect import open_registry
from online_feature_store.registry.model import RegistryState

from .conftest import SECRET, both_databases

STORE = {"id": "main", "kind": "sqlite", "settings": {"path": "store.db"}}
BODY = TypeAdapter(schemas.ChangeRequestIn)


class Registry:
    """A real registry backend; ``after_apply`` runs once the registry committed a change (a fault)."""

    def __init__(self, backend: RegistryBackend) -> None:
        self.backend = backend
        self.after_apply: Callable[[], None] | None = None
        self.applied = 0

    def apply(self, change: Callable[[RegistryState], RegistryState], **kwargs: Any) -> int:
        revision = self.backend.apply(change, **kwargs)
        self.applied += 1
        hook, self.after_apply = self.after_apply, None
        if hook is not None:
            hook()
        return revision

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)


class FailNextCommit:
    """Makes the next COMMIT on ``engine`` fail, as a lost database connection would."""

    def __init__(self, engine: sa.engine.Engine) -> None:
        self.armed = False
        sa.event.listen(engine, "commit", self._commit)

    def arm(self) -> None:
        self.armed = True

    def _commit(self, _conn: Any) -> None:
        if self.armed:
            self.armed = False
            raise sa.exc.OperationalError("COMMIT", {}, ConnectionError("injected: database connection lost"))


@pytest.fixture
def config(tmp_path: Path, database_url: str | None) -> HorizonConfig:
    settings: dict[str, Any] = {"data_dir": tmp_path, "password_profile": "CHEAPEST"}
    if database_url is not None:
        settings.update(database_url=database_url, secret=SECRET)
    return HorizonConfig(**settings)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    backend = open_registry(f"sqlite:///{tmp_path / 'registry.db'}")
    yield Registry(backend)
    backend.close()


@pytest.fixture
def horizon(config: HorizonConfig, registry: Registry) -> Iterator[Horizon]:
    h = Horizon(config, registry=registry)  # type: ignore[arg-type]
    yield h
    h.close()


def _submit(h: Horizon, payload: dict[str, Any] = STORE) -> int:
    body = BODY.validate_python({"kind": "create_store", "payload": payload})
    return int(h.create_request("eve", body)["id"])


def _commit_fails_after_apply(h: Horizon, registry: Registry, request_id: int) -> None:
    fault = FailNextCommit(h.engine)
    registry.after_apply = fault.arm
    with pytest.raises(UnavailableError, match=r"applied to the registry.*stays APPLYING"):
        h.approve("alice", request_id)
    assert registry.applied == 1
    assert registry.revision() == 1


@both_databases
def test_retry_finishes_an_applied_request_without_applying_twice(
    horizon: Horizon, registry: Registry
) -> None:
    request_id = _submit(horizon)
    _commit_fails_after_apply(horizon, registry, request_id)
    stuck = horizon.request(request_id)
    assert (stuck["state"], stuck["decided_by"], stuck["revision"]) == ("APPLYING", "alice", None)

    # right away, the claim might still belong to a running approval: not touched
    with pytest.raises(ConflictError, match="being applied"):
        horizon.approve("bob", request_id)
    with pytest.raises(ConflictError, match="APPLYING, not PENDING"):
        horizon.reject("bob", request_id, "too late")

    horizon.apply_lease_seconds = 0  # the approval broke off long ago
    done = horizon.approve("bob", request_id)
    assert (done["state"], done["decided_by"], done["revision"]) == ("APPROVED", "alice", 1)
    assert registry.applied == 1  # found in the registry, not applied again
    assert registry.revision() == 1
    with pytest.raises(ConflictError, match="APPROVED"):
        horizon.approve("bob", request_id)
    log = horizon.audit_log(request_id=request_id)
    assert [(a["action"], a["actor"]) for a in log] == [("request.approve", "bob"), ("request.create", "eve")]
    assert "already held the change" in log[0]["detail"]


def test_restart_settles_what_a_previous_process_left_applying(
    horizon: Horizon, registry: Registry, config: HorizonConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    applied = _submit(horizon)
    _commit_fails_after_apply(horizon, registry, applied)
    # a second request claimed, but its registry change never happened (the process died in between)
    lost = _submit(horizon, {**STORE, "id": "other"})
    with horizon.engine.begin() as conn:
        conn.execute(
            requests.update()
            .where(requests.c.id == lost)
            .values(state="APPLYING", decided_by="alice", decided_at=utcnow())
        )

    monkeypatch.setattr(Horizon, "apply_lease_seconds", 0)
    restarted = Horizon(config, registry=registry)  # type: ignore[arg-type]
    try:
        assert restarted.request(applied)["state"] == "APPROVED"
        again = restarted.request(lost)
        assert (again["state"], again["decided_by"]) == ("PENDING", None)
        assert restarted.audit_log(request_id=lost)[0]["action"] == "request.approve_failed"
        assert restarted.approve("alice", lost)["revision"] == 2  # an ordinary approval now
        assert registry.applied == 2
    finally:
        restarted.close()


def test_lost_registry_answer_is_settled_by_looking(horizon: Horizon, registry: Registry) -> None:
    """The registry committed, but its answer was lost: the request is APPROVED, not applied twice."""
    request_id = _submit(horizon)

    def lost_answer() -> None:
        raise UnavailableError("injected: registry connection lost after commit")

    registry.after_apply = lost_answer
    with pytest.raises(UnavailableError, match="injected"):
        horizon.approve("alice", request_id)
    assert horizon.request(request_id)["state"] == "APPROVED"
    assert registry.revision() == 1


def test_registry_failure_before_commit_returns_to_pending(horizon: Horizon, registry: Registry) -> None:
    request_id = _submit(horizon)

    def unreachable(change: Any, **kwargs: Any) -> int:
        raise UnavailableError("injected: registry unreachable")

    registry.apply = unreachable  # type: ignore[method-assign]
    with pytest.raises(UnavailableError, match="unreachable"):
        horizon.approve("alice", request_id)
    assert horizon.request(request_id)["state"] == "PENDING"
    assert registry.revision() == 0
    del registry.apply  # the real one again
    assert horizon.approve("alice", request_id)["state"] == "APPROVED"


def test_state_is_an_enum_in_the_database(horizon: Horizon) -> None:
    request_id = _submit(horizon)
    with pytest.raises(sa.exc.IntegrityError), horizon.engine.begin() as conn:
        conn.execute(sa.text("UPDATE horizon_requests SET state = 'DONE' WHERE id = :id"), {"id": request_id})
    assert horizon.request(request_id)["state"] == "PENDING"
