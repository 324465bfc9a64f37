"""Store credentials never leave Horizon: a new store with a literal credential is refused (a password is
named by ``password_env``), and a credential that an older registry or older requests still hold is
redacted in every answer: stores, requests (payload and plan lines), the audit log and errors."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from online_feature_store.horizon.db import audit, requests, utcnow
from online_feature_store.registry import open_registry
from online_feature_store.registry.model import RegistryState, Store
from online_feature_store.registry.serde import state_docs

from .conftest import Api, Server, approve, submit

SECRET = "hunter2-Hunter2-hunter2"
LEGACY_URL = f"redis://:{SECRET}@10.0.0.7:6379/0"


def _legacy_registry(data_dir: Path) -> None:
    """The data directory's registry holding a store as an older version could write it."""
    path = data_dir / "registry.db"
    open_registry(f"sqlite:///{path}").close()
    store = Store("cache", "redis", {"url": LEGACY_URL, "password": SECRET})
    with sqlite3.connect(path) as conn:
        for (kind, name), doc in state_docs(RegistryState(stores=(store,))).items():
            conn.execute("INSERT INTO docs (kind, name, doc) VALUES (?, ?, ?)", (kind, name, doc))
        conn.execute("UPDATE meta SET v = 1 WHERE k = 'revision'")


def _legacy_request(engine: sa.engine.Engine) -> int:
    """A request an older Horizon accepted, with the credential in its payload, plan lines and audit."""
    payload = {"id": "cache2", "kind": "redis", "settings": {"url": LEGACY_URL}}
    with engine.begin() as conn:
        result = conn.execute(
            requests.insert().values(
                kind="create_store",
                payload=payload,
                description=f"see {LEGACY_URL}",
                state="PENDING",
                author="eve",
                created_at=utcnow(),
                diff=[f"~ store cache2: redis {{'url': '{LEGACY_URL}'}}"],
            )
        )
        assert result.inserted_primary_key is not None
        request_id = int(result.inserted_primary_key[0])
        conn.execute(
            audit.insert().values(
                at=utcnow(),
                actor="eve",
                action="request.create",
                request_id=request_id,
                detail=f"create_store: + store cache2 {LEGACY_URL}",
            )
        )
    return request_id


def test_credentials_are_never_shown(make_server: Callable[..., Server], tmp_path: Path) -> None:
    _legacy_registry(tmp_path)
    api = Api(make_server())
    try:
        admin = api.user("alice", "admin")
        editor = api.user("eve", "editor", admin=admin)
        viewer = api.user("victor", "viewer", admin=admin)
        legacy = _legacy_request(api.server.app.state.horizon.engine)

        # a new store with a literal credential: refused next to the setting, saying what to do
        r = editor.post(
            "/requests",
            json={
                "kind": "create_store",
                "payload": {"id": "c3", "kind": "redis", "settings": {"url": LEGACY_URL}},
            },
        )
        assert r.status_code == 422
        [error] = r.json()["detail"]
        assert error["loc"] == ["body", "payload", "settings", "url"]
        assert "password_env" in error["msg"]
        assert SECRET not in r.text
        # the way to do it: the password in the environment of the servers, named here
        good = {
            "id": "c3",
            "kind": "redis",
            "settings": {"url": "redis://10.0.0.7:6379/0", "password_env": "REDIS_PW"},
        }
        bob = api.user("bob", "admin", admin=admin)
        created = submit(editor, "create_store", good)
        approve(bob, created["id"])

        # the legacy request is re-validated at approval: refused, and the error is redacted
        refused = admin.post(f"/requests/{legacy}/approve")
        assert refused.status_code == 422
        assert "password_env" in refused.text

        answers = {
            path: viewer.get(path)
            for path in (
                "/stores",
                "/registry",
                "/requests",
                f"/requests/{legacy}",
                "/audit?limit=1000",
                "/callers",
            )
        }
        answers["approve"] = refused
        for path, answer in answers.items():
            assert answer.status_code in (200, 422), (path, answer.text)
            assert SECRET not in answer.text, path
        stores = {s["id"]: s["settings"] for s in answers["/stores"].json()}
        assert stores["cache"] == {"url": "redis://:***@10.0.0.7:6379/0", "password": "***"}
        assert stores["c3"] == good["settings"]
        shown = answers[f"/requests/{legacy}"].json()
        assert shown["payload"]["settings"]["url"] == "redis://:***@10.0.0.7:6379/0"
        assert shown["description"] == "see redis://:***@10.0.0.7:6379/0"
        assert ":***@" in shown["diff"][0]
        assert any(":***@" in a["detail"] for a in answers["/audit?limit=1000"].json())
    finally:
        api.close()
