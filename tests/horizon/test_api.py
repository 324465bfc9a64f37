"""The Horizon API over HTTP: auth, roles, discovery, the request lifecycle (on SQLite; the tests marked
``both_databases`` on PostgreSQL too)."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import sqlalchemy as sa

from online_feature_store.horizon.db import requests
from online_feature_store.registry.connect import open_registry
from online_feature_store.registry.tokens import verify_token

from .conftest import PASSWORD, Api, Server, approve, both_databases, submit

STORE = {"id": "main", "kind": "sqlite", "settings": {"path": "store.db"}}
REDIS = {"kind": "redis", "settings": {"url": "redis://127.0.0.1:16379/0"}}
ENTITY = {"label": "user", "keys": [{"label": "user_id", "column": "uid"}]}
FG = {
    "entity": "user",
    "label": "activity",
    "data_type": "fp32",
    "ttl_seconds": 3600,
    "store": "main",
    "features": [{"label": "ctr", "default": 0.5}, {"label": "clicks", "default": 0}],
}


def seed(author: httpx.Client, approver: httpx.Client) -> None:
    """A store, the user entity and its activity FG, approved."""
    for kind, payload in (("create_store", STORE), ("create_entity", ENTITY), ("create_feature_group", FG)):
        approve(approver, submit(author, kind, payload)["id"])


@pytest.fixture
def editor(api: Api, admin: httpx.Client) -> httpx.Client:
    return api.user("eve", "editor", admin=admin)


@pytest.fixture
def viewer(api: Api, admin: httpx.Client) -> httpx.Client:
    return api.user("victor", "viewer", admin=admin)


# -- users and sessions ----------------------------------------------------------------------------


def test_first_user_is_admin_later_ones_viewers(make_server: Callable[..., Server]) -> None:
    """With self-registration on (off by default: test_lockdown.py)."""
    api = Api(make_server(allow_self_registration=True))
    first = api.anon.post("/auth/register", json={"username": "root", "password": PASSWORD})
    second = api.anon.post("/auth/register", json={"username": "someone", "password": PASSWORD})
    assert (first.status_code, first.json()) == (201, {"username": "root", "role": "admin"})
    assert (second.status_code, second.json()) == (201, {"username": "someone", "role": "viewer"})
    again = api.anon.post("/auth/register", json={"username": "root", "password": PASSWORD + "2"})
    assert again.status_code == 409
    assert "taken" in again.json()["detail"]
    api.close()


def test_register_validation_names_the_field(api: Api) -> None:
    r = api.anon.post("/auth/register", json={"username": "a b", "password": "short"})
    assert r.status_code == 422
    fields = {tuple(e["loc"]) for e in r.json()["detail"]}
    assert fields == {("body", "username"), ("body", "password")}


def test_login_me_logout(api: Api, admin: httpx.Client) -> None:
    me = admin.get("/auth/me")
    assert me.json() == {"username": "alice", "role": "admin", "can_try": True, "try_entities": None}
    wrong = api.anon.post("/auth/login", json={"username": "alice", "password": "nope nope"})
    unknown = api.anon.post("/auth/login", json={"username": "nobody", "password": PASSWORD})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"detail": "invalid username or password"}
    login = api.anon.post("/auth/login", json={"username": "alice", "password": PASSWORD}).json()
    expires = datetime.fromisoformat(login["expires_at"].replace("Z", "+00:00"))
    assert expires > datetime.now(timezone.utc)
    assert admin.post("/auth/logout").status_code == 204
    after = admin.get("/auth/me")
    assert after.status_code == 401
    assert "logged out" in after.json()["detail"]
    # the other session of the same user is unaffected
    other = api.server.client(login["token"])
    assert other.get("/auth/me").status_code == 200
    other.close()


PROTECTED = [
    ("get", "/auth/me"),
    ("post", "/auth/logout"),
    ("get", "/users"),
    ("get", "/registry"),
    ("get", "/stores"),
    ("get", "/entities"),
    ("get", "/entities/user"),
    ("get", "/entities/user/feature-groups/activity"),
    ("get", "/callers"),
    ("get", "/search?q=a"),
    ("get", "/data-types"),
    ("get", "/requests"),
    ("get", "/requests/1"),
    ("post", "/requests/1/approve"),
    ("post", "/requests/1/cancel"),
    ("get", "/audit"),
]


def test_no_token_bad_token_expired_token(api: Api) -> None:
    server = api.server
    now = datetime.now(timezone.utc)
    expired = jwt.encode(
        {"sub": "alice", "iat": now - timedelta(hours=2), "exp": now - timedelta(hours=1), "jti": "x"},
        server.app.state.horizon.secret,
        algorithm="HS256",
    )
    forged = jwt.encode(
        {"sub": "alice", "iat": now, "exp": now + timedelta(hours=1), "jti": "y"}, "k" * 40, algorithm="HS256"
    )
    cases = (
        ({}, "not logged in"),
        ({"Authorization": "Bearer garbage"}, "invalid session token"),
        ({"Authorization": f"Bearer {forged}"}, "invalid session token"),
        ({"Authorization": f"Bearer {expired}"}, "expired"),
    )
    for method, path in PROTECTED:
        for headers, needle in cases:
            r = api.anon.request(method, path, headers=headers)
            assert r.status_code == 401, (method, path, headers, r.text)
            assert needle in r.json()["detail"]
            assert r.headers["www-authenticate"] == "Bearer"


def test_wrong_role(api: Api, admin: httpx.Client, editor: httpx.Client, viewer: httpx.Client) -> None:
    seed(admin, api.user("bob", "admin", admin=admin))
    assert viewer.get("/users").status_code == 403
    assert viewer.patch("/users/eve", json={"role": "admin"}).status_code == 403
    r = viewer.post("/requests", json={"kind": "create_store", "payload": {**STORE, "id": "s2"}})
    assert r.status_code == 403
    assert "editor" in r.json()["detail"]
    created = submit(editor, "create_store", {**STORE, "id": "s2"})
    assert editor.post(f"/requests/{created['id']}/approve").status_code == 403
    assert editor.post(f"/requests/{created['id']}/reject", json={"reason": "no"}).status_code == 403
    # viewers read everything
    assert viewer.get("/entities").status_code == 200
    assert viewer.get(f"/requests/{created['id']}").status_code == 200


@both_databases
def test_users_and_roles(api: Api, admin: httpx.Client, viewer: httpx.Client) -> None:
    users = admin.get("/users").json()
    assert [(u["username"], u["role"]) for u in users] == [("alice", "admin"), ("victor", "viewer")]
    r = admin.patch("/users/victor", json={"role": "editor"})
    assert (r.status_code, r.json()["role"]) == (200, "editor")
    assert viewer.get("/auth/me").json()["role"] == "editor"  # applies to existing sessions at once
    assert admin.patch("/users/nobody", json={"role": "editor"}).status_code == 404
    last = admin.patch("/users/alice", json={"role": "viewer"})
    assert last.status_code == 409
    assert "last admin" in last.json()["detail"]
    bad = admin.patch("/users/victor", json={"role": "owner"})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "role"]


# -- discovery -------------------------------------------------------------------------------------


def test_discovery(api: Api, admin: httpx.Client, viewer: httpx.Client) -> None:
    bob = api.user("bob", "admin", admin=admin)
    seed(admin, bob)
    approve(
        bob,
        submit(
            admin,
            "add_features",
            {"entity": "user", "feature_group": "activity", "features": [{"label": "spend", "default": -1}]},
        )["id"],
    )
    approve(bob, submit(admin, "create_caller", {"id": "ranker", "role": "reader"})["id"])
    assert viewer.get("/registry").json()["revision"] == 5
    assert viewer.get("/stores").json() == [STORE]
    entities = viewer.get("/entities").json()
    assert entities == [
        {
            "label": "user",
            "keys": [{"label": "user_id", "column": "uid"}],
            "cache": {
                "in_process": {"enabled": False, "ttl_seconds": 0, "jitter_percent": 0},
                "distributed": {"enabled": False, "ttl_seconds": 0, "jitter_percent": 0},
            },
            "feature_groups": ["activity"],
        }
    ]
    assert viewer.get("/entities?q=USE").json() == entities
    assert viewer.get("/entities?q=zzz").json() == []
    fg = viewer.get("/entities/user/feature-groups/activity").json()
    assert fg["data_type"] == "fp32"
    assert (fg["ttl_seconds"], fg["store"], fg["active_version"]) == (3600, "main", 2)
    assert [f["label"] for f in fg["features"]] == ["ctr", "clicks", "spend"]
    assert [f["default"] for f in fg["features"]] == [0.5, 0.0, -1.0]
    assert {k: [f["label"] for f in v] for k, v in fg["versions"].items()} == {
        "1": ["ctr", "clicks"],
        "2": ["ctr", "clicks", "spend"],
    }
    entity = viewer.get("/entities/user").json()
    assert entity["feature_groups"] == [fg]
    assert viewer.get("/entities/nope").status_code == 404
    missing = viewer.get("/entities/user/feature-groups/nope")
    assert missing.status_code == 404
    assert "nope" in missing.json()["detail"]
    assert viewer.get("/callers").json() == [{"id": "ranker", "role": "reader"}]
    hits = viewer.get("/search", params={"q": "C"}).json()
    assert {(h["kind"], h["feature_group"], h["feature"]) for h in hits} == {
        ("feature_group", "activity", None),
        ("feature", "activity", "ctr"),
        ("feature", "activity", "clicks"),
    }
    types = viewer.get("/data-types").json()
    assert len(types) == 33  # the reference's 30 that hold data, then our bf16, bf16vector, q8vector
    assert {"fp32", "fp16vector", "string", "bool", "int32"} <= set(types)
    assert types[-3:] == ["bf16", "bf16vector", "q8vector"]


# -- the request lifecycle -------------------------------------------------------------------------


@both_databases
def test_approve_records_who_when_revision_and_applies(
    api: Api, admin: httpx.Client, editor: httpx.Client, tmp_path: Any
) -> None:
    created = submit(editor, "create_store", STORE, "our main store")
    assert created["state"] == "PENDING"
    assert created["diff"] == ["+ store main (sqlite)"]
    assert (created["decided_by"], created["revision"], created["token"]) == (None, None, None)
    done = approve(admin, created["id"])
    assert (done["state"], done["decided_by"], done["revision"]) == ("APPROVED", "alice", 1)
    assert datetime.fromisoformat(done["decided_at"].replace("Z", "+00:00")) >= datetime.fromisoformat(
        done["created_at"].replace("Z", "+00:00")
    )
    backend = open_registry(f"sqlite:///{tmp_path / 'registry.db'}")
    try:
        snapshot = backend.load()
        assert snapshot.revision == 1
        assert snapshot.stores["main"].settings == {"path": "store.db"}
    finally:
        backend.close()
    again = admin.post(f"/requests/{created['id']}/approve")
    assert again.status_code == 409
    assert "APPROVED" in again.json()["detail"]


def test_author_cannot_approve_own_request(api: Api, admin: httpx.Client) -> None:
    created = submit(admin, "create_store", STORE)
    r = admin.post(f"/requests/{created['id']}/approve")
    assert r.status_code == 403
    assert "own request" in r.json()["detail"]
    assert admin.get(f"/requests/{created['id']}").json()["state"] == "PENDING"


def test_single_person_setup_may_approve_own(make_server: Callable[..., Server]) -> None:
    api = Api(make_server(single_person=True))
    try:
        admin = api.user("solo", "admin")
        assert approve(admin, submit(admin, "create_store", STORE)["id"])["state"] == "APPROVED"
    finally:
        api.close()


@both_databases
def test_reject_then_approve_and_cancel(api: Api, admin: httpx.Client, editor: httpx.Client) -> None:
    created = submit(editor, "create_store", STORE)
    assert admin.post(f"/requests/{created['id']}/reject", json={"reason": ""}).status_code == 422
    rejected = admin.post(f"/requests/{created['id']}/reject", json={"reason": "use redis"}).json()
    assert (rejected["state"], rejected["reason"], rejected["decided_by"]) == (
        "REJECTED",
        "use redis",
        "alice",
    )
    late = admin.post(f"/requests/{created['id']}/approve")
    assert late.status_code == 409
    assert editor.post(f"/requests/{created['id']}/cancel").status_code == 409
    assert admin.get("/registry").json()["revision"] == 0

    second = submit(editor, "create_store", STORE)
    assert admin.post(f"/requests/{second['id']}/cancel").status_code == 403  # not the author
    cancelled = editor.post(f"/requests/{second['id']}/cancel").json()
    assert (cancelled["state"], cancelled["decided_by"]) == ("CANCELLED", "eve")
    assert admin.post(f"/requests/{second['id']}/approve").status_code == 409
    assert admin.post("/requests/999/approve").status_code == 404
    assert admin.get("/requests/999").status_code == 404

    assert [r["id"] for r in admin.get("/requests", params={"state": "REJECTED"}).json()] == [created["id"]]
    assert [r["id"] for r in editor.get("/requests", params={"mine": "true"}).json()] == [
        second["id"],
        created["id"],
    ]
    assert admin.get("/requests", params={"mine": "true"}).json() == []
    assert admin.get("/requests", params={"state": "DONE"}).status_code == 422


def test_revalidated_at_approval(api: Api, admin: httpx.Client, editor: httpx.Client) -> None:
    first = submit(editor, "create_store", STORE)
    second = submit(editor, "create_store", {**STORE, **REDIS})  # valid when created
    approve(admin, first["id"])
    r = admin.post(f"/requests/{second['id']}/approve")
    assert r.status_code == 422
    assert r.json()["detail"] == [
        {
            "loc": ["body", "payload", "id"],
            "msg": "store 'main' already exists",
            "type": "value_error.registry",
        }
    ]
    assert admin.get(f"/requests/{second['id']}").json()["state"] == "PENDING"
    actions = [a["action"] for a in admin.get("/audit", params={"request_id": second["id"]}).json()]
    assert actions == ["request.approve_refused", "request.create"]


def _race(calls: list[Callable[[], httpx.Response]]) -> list[httpx.Response]:
    barrier = threading.Barrier(len(calls))
    results: list[httpx.Response | None] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


@both_databases
def test_concurrent_approvals_of_one_request(api: Api, admin: httpx.Client, editor: httpx.Client) -> None:
    bob = api.user("bob", "admin", admin=admin)
    created = submit(editor, "create_store", STORE)
    responses = _race(
        [
            lambda: admin.post(f"/requests/{created['id']}/approve"),
            lambda: bob.post(f"/requests/{created['id']}/approve"),
        ]
    )
    assert sorted(r.status_code for r in responses) == [200, 409]
    assert admin.get("/registry").json()["revision"] == 1
    approvals = [a for a in admin.get("/audit").json() if a["action"] == "request.approve"]
    assert len(approvals) == 1


@both_databases
def test_concurrent_approvals_of_conflicting_requests(
    api: Api, admin: httpx.Client, editor: httpx.Client
) -> None:
    bob = api.user("bob", "admin", admin=admin)
    approve(admin, submit(editor, "create_store", STORE)["id"])
    approve(admin, submit(editor, "create_entity", ENTITY)["id"])
    # both valid on their own, both create the same FG label: only one can be applied
    a = submit(editor, "create_feature_group", FG)
    b = submit(editor, "create_feature_group", {**FG, "data_type": "int64", "features": [{"label": "n"}]})
    responses = _race(
        [lambda: admin.post(f"/requests/{a['id']}/approve"), lambda: bob.post(f"/requests/{b['id']}/approve")]
    )
    assert sorted(r.status_code for r in responses) == [200, 422]
    loser = next(r for r in responses if r.status_code == 422)
    assert loser.json()["detail"][0]["loc"] == ["body", "payload", "label"]
    states = sorted(admin.get(f"/requests/{x['id']}").json()["state"] for x in (a, b))
    assert states == ["APPROVED", "PENDING"]
    fg = admin.get("/entities/user/feature-groups/activity").json()
    winner = a if admin.get(f"/requests/{a['id']}").json()["state"] == "APPROVED" else b
    assert fg["data_type"] == winner["payload"]["data_type"]
    assert admin.get("/registry").json()["revision"] == 3


# -- every kind of change --------------------------------------------------------------------------


def test_every_kind_of_change(api: Api, admin: httpx.Client, editor: httpx.Client, tmp_path: Any) -> None:
    seed(editor, admin)

    def change(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        return approve(admin, submit(editor, kind, payload)["id"])

    cache = {"in_process": {"enabled": True, "ttl_seconds": 60, "jitter_percent": 10}}
    assert change("update_entity", {"label": "user", "cache": cache})["diff"] == [
        "~ entity user: in-process cache off → on ttl 60s jitter 10%"
    ]
    done = change(
        "update_feature_group",
        {"entity": "user", "label": "activity", "ttl_seconds": 7200, "distributed_cache": True},
    )
    assert done["diff"] == [
        "~ fg user/activity: ttl 3600s → 7200s",
        "~ fg user/activity: distributed_cache False → True",
    ]
    done = change(
        "edit_features",
        {"entity": "user", "feature_group": "activity", "features": [{"label": "ctr", "default": 0.25}]},
    )
    assert done["diff"] == ["~ fg user/activity: feature ctr default 0.5 → 0.25"]
    done = change(
        "add_features", {"entity": "user", "feature_group": "activity", "features": [{"label": "spend"}]}
    )
    assert done["diff"] == ["~ fg user/activity: add features [spend] → version 2"]
    done = change("delete_features", {"entity": "user", "feature_group": "activity", "labels": ["clicks"]})
    assert done["diff"] == ["~ fg user/activity: remove features [clicks] → version 3"]
    fg = admin.get("/entities/user/feature-groups/activity").json()
    assert (fg["active_version"], fg["ttl_seconds"], fg["distributed_cache"]) == (3, 7200, True)
    assert [(f["label"], f["default"]) for f in fg["features"]] == [("ctr", 0.25), ("spend", 0.0)]
    assert sorted(fg["versions"]) == ["1", "2", "3"]
    assert admin.get("/entities/user").json()["cache"]["in_process"]["ttl_seconds"] == 60

    # strings and vectors: lengths
    change(
        "create_feature_group",
        {
            "entity": "user",
            "label": "profile",
            "data_type": "string",
            "store": "main",
            "features": [{"label": "city", "string_length": 16, "default": "Pune"}],
        },
    )
    change(
        "edit_features",
        {"entity": "user", "feature_group": "profile", "features": [{"label": "city", "string_length": 32}]},
    )
    change(
        "create_feature_group",
        {
            "entity": "user",
            "label": "emb",
            "data_type": "fp16vector",
            "store": "main",
            "features": [{"label": "v", "vector_length": 3, "default": [1, 2, 3]}],
        },
    )
    profile = admin.get("/entities/user/feature-groups/profile").json()
    assert profile["features"] == [
        {"label": "city", "default": "Pune", "string_length": 32, "vector_length": 0}
    ]
    emb = admin.get("/entities/user/feature-groups/emb").json()
    assert emb["features"] == [
        {"label": "v", "default": [1.0, 2.0, 3.0], "string_length": 0, "vector_length": 3}
    ]


def test_create_caller_token_shown_once_stored_hashed(
    api: Api, admin: httpx.Client, editor: httpx.Client, tmp_path: Any
) -> None:
    created = submit(editor, "create_caller", {"id": "ranker", "role": "reader"})
    token = created["token"]
    assert isinstance(token, str)
    assert len(token) >= 32
    assert "token" not in admin.get(f"/requests/{created['id']}").json()
    assert token not in admin.get("/requests").text
    approve(admin, created["id"])
    assert token not in admin.get("/callers").text
    backend = open_registry(f"sqlite:///{tmp_path / 'registry.db'}")
    try:
        caller = backend.load().callers["ranker"]
    finally:
        backend.close()
    assert caller.role == "reader"
    assert token not in caller.token_hash
    assert verify_token(token, caller.token_hash)


def test_create_caller_readwriter(api: Api, admin: httpx.Client, editor: httpx.Client, tmp_path: Any) -> None:
    """One credential for retrieves and persists (reference clients hold one); other roles are refused."""
    created = submit(editor, "create_caller", {"id": "reference-sdk", "role": "readwriter"})
    approve(admin, created["id"])
    assert {"id": "reference-sdk", "role": "readwriter"} in admin.get("/callers").json()
    with open_registry(f"sqlite:///{tmp_path / 'registry.db'}") as backend:
        caller = backend.load().callers["reference-sdk"]
    assert caller.role == "readwriter"
    assert verify_token(created["token"], caller.token_hash)
    payload = {"id": "x", "role": "admin"}
    refused = editor.post("/requests", json={"kind": "create_caller", "payload": payload})
    assert refused.status_code == 422, refused.text
    assert [tuple(e["loc"]) for e in refused.json()["detail"]] == [("body", "payload", "role")]
    assert "'reader', 'writer' or 'readwriter'" in refused.json()["detail"][0]["msg"]


def test_caller_form_offers_every_role() -> None:
    """TruffleBox's caller form (static/js/pages/register.js) offers exactly the roles the registry takes."""
    from online_feature_store.horizon import __file__ as horizon_init
    from online_feature_store.registry.model import ROLES

    js = (Path(horizon_init).parent / "static" / "js" / "pages" / "register.js").read_text(encoding="utf-8")
    form = js[js.index("function callerForm") :]
    form = form[: form.index("\n}\n")]
    assert re.findall(r'\["(\w+)", "\1: ', form) == list(ROLES)


def test_embedding_feature_groups(api: Api, admin: httpx.Client, editor: httpx.Client) -> None:
    """A Q8 vector group and a bf16 one through a request: defaults checked against the type (finite,
    float32 range), then created; discovery shows the type and reads the defaults back."""
    seed(editor, admin)
    emb = {**FG, "label": "emb", "data_type": "q8vector"}
    bad = editor.post(
        "/requests",
        json={
            "kind": "create_feature_group",
            "payload": {**emb, "features": [{"label": "v", "vector_length": 2, "default": [1e300, 0]}]},
        },
    )
    assert bad.status_code == 422, bad.text
    (err,) = bad.json()["detail"]
    assert tuple(err["loc"]) == ("body", "payload", "features", 0, "default")
    assert "DataTypeQ8Vector" in err["msg"]
    features = [{"label": "v", "vector_length": 4, "default": [127, -64, 0, 1]}]
    approve(admin, submit(editor, "create_feature_group", {**emb, "features": features})["id"])
    bf = {
        **FG,
        "label": "embb",
        "data_type": "bf16vector",
        "features": [{"label": "v", "vector_length": 2, "default": [0.5, 2]}],
    }
    approve(admin, submit(editor, "create_feature_group", bf)["id"])
    q = editor.get("/entities/user/feature-groups/emb").json()
    assert q["data_type"] == "q8vector"
    assert q["features"][0]["default"] == [127, -64, 0, 1]  # scale 1: stored exactly
    assert editor.get("/entities/user/feature-groups/embb").json()["data_type"] == "bf16vector"


def test_validation_errors_are_field_level(api: Api, admin: httpx.Client, editor: httpx.Client) -> None:
    seed(editor, admin)

    def errors(kind: str, payload: Any) -> set[tuple[Any, ...]]:
        r = editor.post("/requests", json={"kind": kind, "payload": payload})
        assert r.status_code == 422, r.text
        for e in r.json()["detail"]:
            assert e["msg"]
            assert e["type"]
        return {tuple(e["loc"]) for e in r.json()["detail"]}

    assert errors(
        "create_feature_group", {**FG, "label": "g2", "features": [{"label": "x", "default": "text"}]}
    ) == {("body", "payload", "features", 0, "default")}
    # An FG with no store could never be written: refused at its field, as `ofs registry apply` refuses it.
    assert errors("create_feature_group", {**FG, "label": "g2", "store": ""}) == {
        ("body", "payload", "store")
    }
    assert errors(
        "create_feature_group",
        {
            **FG,
            "label": "g2",
            "data_type": "int8",
            "store": "nowhere",
            "features": [{"label": "a", "default": 300}, {"label": "a"}],
        },
    ) == {
        ("body", "payload", "store"),
        ("body", "payload", "features", 0, "default"),
        ("body", "payload", "features", 1, "label"),
    }
    assert errors("create_feature_group", {**FG, "label": "g2", "data_type": "float128"}) == {
        ("body", "payload", "data_type")
    }
    assert errors("create_feature_group", {**FG, "entity": "nobody", "label": "g2"}) == {
        ("body", "payload", "entity")
    }
    assert errors("create_feature_group", {**FG, "ttl_seconds": 10**9}) == {
        ("body", "payload", "ttl_seconds")
    }
    assert errors(
        "create_feature_group", {**FG, "label": "v", "data_type": "fp32vector", "features": [{"label": "x"}]}
    ) == {("body", "payload", "features", 0, "vector_length")}
    assert errors(
        "create_feature_group",
        {
            **FG,
            "label": "s",
            "data_type": "string",
            "features": [{"label": "x", "string_length": 2, "default": "long"}],
        },
    ) == {("body", "payload", "features", 0, "default")}
    assert errors("create_feature_group", {**FG, "label": "bad label"}) == {("body", "payload", "label")}
    assert errors("create_feature_group", {**FG}) == {("body", "payload", "label")}  # exists
    assert errors("create_entity", {"label": "x", "keys": [{"label": "a"}, {"label": "a"}]}) == {
        ("body", "payload", "keys", 1, "label"),
        ("body", "payload", "keys", 1, "column"),
    }
    assert errors("create_entity", {"label": "x", "keys": []}) == {("body", "payload", "keys")}
    assert errors("create_entity", {"label": "x", "keys": [{"label": "a"}], "typo": 1}) == {
        ("body", "payload", "typo")
    }
    assert errors("create_store", {"id": "s", "kind": "mysql"}) == {("body", "payload", "kind")}
    assert errors(
        "add_features", {"entity": "user", "feature_group": "activity", "features": [{"label": "ctr"}]}
    ) == {("body", "payload", "features", 0, "label")}
    assert errors(
        "edit_features", {"entity": "user", "feature_group": "activity", "features": [{"label": "zz"}]}
    ) == {("body", "payload", "features", 0, "label")}
    assert errors(
        "delete_features", {"entity": "user", "feature_group": "activity", "labels": ["ctr", "clicks"]}
    ) == {("body", "payload", "labels")}
    assert errors("delete_features", {"entity": "user", "feature_group": "nope", "labels": ["ctr"]}) == {
        ("body", "payload", "feature_group")
    }
    assert errors(
        "edit_features",
        {"entity": "user", "feature_group": "activity", "features": [{"label": "ctr", "default": 0.5}]},
    ) == {
        (
            "body",
            "payload",
        )  # changes nothing
    }
    r = editor.post("/requests", json={"kind": "drop_everything", "payload": {}})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"][:1] == ["body"]
    assert editor.get("/requests").json()[0]["kind"] == "create_feature_group"  # nothing was stored


def test_store_settings_are_checked_as_the_store_would_open_them(
    api: Api, admin: httpx.Client, editor: httpx.Client, tmp_path: Any
) -> None:
    def errors(payload: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
        r = editor.post("/requests", json={"kind": "create_store", "payload": payload})
        assert r.status_code == 422, r.text
        return [(tuple(e["loc"]), e["msg"]) for e in r.json()["detail"]]

    redis = {"id": "cache", **REDIS}
    [(loc, msg)] = errors({**redis, "settings": {**REDIS["settings"], "bogus": "1"}})
    assert loc == ("body", "payload", "settings", "bogus")
    assert "unknown redis setting 'bogus'" in msg
    assert "url, cluster_nodes" in msg  # the known ones
    [(loc, msg)] = errors({**redis, "settings": {**REDIS["settings"], "pool_size": "many"}})
    assert loc == ("body", "payload", "settings", "pool_size")
    assert "pool_size='many' is not a number" in msg
    assert [loc for loc, _ in errors({**redis, "settings": {}})] == [("body", "payload", "settings")]
    assert [
        loc for loc, _ in errors({"id": "s", "kind": "scylla", "settings": {"port": "x", "pth": "a"}})
    ] == [
        ("body", "payload", "settings", "pth"),
        ("body", "payload", "settings", "port"),
    ]
    good = submit(editor, "create_store", {**redis, "settings": {**REDIS["settings"], "pool_size": "8"}})

    # again at approval: a request stored before this rule (written straight into the database here)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'horizon.db'}")
    with engine.begin() as conn:
        stored = {**redis, "settings": {**REDIS["settings"], "bogus": "1"}}
        conn.execute(requests.update().where(requests.c.id == good["id"]).values(payload=stored))
    engine.dispose()
    r = admin.post(f"/requests/{good['id']}/approve")
    assert r.status_code == 422, r.text
    assert [e["loc"] for e in r.json()["detail"]] == [["body", "payload", "settings", "bogus"]]
    assert admin.get(f"/requests/{good['id']}").json()["state"] == "PENDING"


def test_bad_defaults_are_explained(api: Api, admin: httpx.Client, editor: httpx.Client) -> None:
    seed(editor, admin)
    cases = [
        ("fp32", {"default": "abc"}, "default 'abc' is not a number for data type fp32"),
        ("int64", {"default": "12"}, "default '12' is not a number for data type int64"),
        ("bool", {"default": "yes"}, "default 'yes' is not true or false for data type bool"),
        ("string", {"default": 5}, "default 5 is not a string for data type string"),
        (
            "fp32vector",
            {"default": [1, "x"], "vector_length": 2},
            "item 1 ('x') of default [1, 'x'] is not a number for data type fp32vector",
        ),
    ]
    for data_type, feature, message in cases:
        payload = {**FG, "label": "g2", "data_type": data_type, "features": [{"label": "f", **feature}]}
        r = editor.post("/requests", json={"kind": "create_feature_group", "payload": payload})
        assert r.status_code == 422, r.text
        [error] = r.json()["detail"]
        assert error["loc"] == ["body", "payload", "features", 0, "default"]
        assert error["msg"] == f"entity 'user', feature group 'g2', feature 'f': {message}"
        assert "dtype" not in error["msg"]


@both_databases
def test_audit_log(api: Api, admin: httpx.Client, editor: httpx.Client) -> None:
    created = submit(editor, "create_store", STORE)
    approve(admin, created["id"])
    log = admin.get("/audit", params={"request_id": created["id"]}).json()
    assert [(a["action"], a["actor"]) for a in log] == [
        ("request.approve", "alice"),
        ("request.create", "eve"),
    ]
    assert "+ store main (sqlite)" in log[1]["detail"]
    mine = admin.get("/audit", params={"actor": "eve"}).json()
    assert {a["action"] for a in mine} == {"request.create"}
    assert len(admin.get("/audit", params={"limit": 1}).json()) == 1
    assert admin.get("/audit", params={"limit": 0}).status_code == 422
    by_alice = admin.get("/audit", params={"actor": "alice"}).json()
    assert [a["detail"] for a in by_alice if a["action"] == "user.create"] == ["eve as editor"]
    assert admin.patch("/users/eve", json={"role": "viewer"}).status_code == 200
    roles = [a for a in admin.get("/audit").json() if a["action"] == "user.role"]
    assert roles[0]["detail"] == "eve: editor -> viewer"


def test_openapi_document_matches_the_routes(api: Api) -> None:
    doc = api.anon.get(api.server.url + "/openapi.json").json()
    paths = doc["paths"]
    expected = {
        "/api/v1/auth/registration": {"get"},
        "/api/v1/auth/register": {"post"},
        "/api/v1/auth/login": {"post"},
        "/api/v1/auth/logout": {"post"},
        "/api/v1/auth/me": {"get"},
        "/api/v1/auth/password": {"post"},
        "/api/v1/users": {"get", "post"},
        "/api/v1/users/{username}": {"patch"},
        "/api/v1/registry": {"get"},
        "/api/v1/stores": {"get"},
        "/api/v1/entities": {"get"},
        "/api/v1/entities/{entity}": {"get"},
        "/api/v1/entities/{entity}/feature-groups/{fg}": {"get"},
        "/api/v1/callers": {"get"},
        "/api/v1/search": {"get"},
        "/api/v1/data-types": {"get"},
        "/api/v1/requests": {"get", "post"},
        "/api/v1/requests/{request_id}": {"get"},
        "/api/v1/requests/{request_id}/approve": {"post"},
        "/api/v1/requests/{request_id}/reject": {"post"},
        "/api/v1/requests/{request_id}/cancel": {"post"},
        "/api/v1/audit": {"get"},
        "/api/v1/try/retrieve": {"post"},
        "/api/v1/health": {"get"},
    }
    assert {p: set(ops) for p, ops in paths.items()} == expected
    approve_op = paths["/api/v1/requests/{request_id}/approve"]["post"]
    assert {"200", "401", "403", "404", "409", "422"} <= set(approve_op["responses"])
    assert approve_op["security"] == [{"HTTPBearer": []}]
    create = paths["/api/v1/requests"]["post"]
    body_schema = create["requestBody"]["content"]["application/json"]["schema"]
    assert body_schema["discriminator"]["propertyName"] == "kind"
    assert len(body_schema["oneOf"]) == 9
    assert "token" in doc["components"]["schemas"]["RequestCreatedOut"]["properties"]
    assert doc["components"]["schemas"]["RequestOut"]["properties"]["state"]["$ref"].endswith("/State")
    assert doc["components"]["schemas"]["State"]["enum"] == [
        "PENDING",
        "APPLYING",
        "APPROVED",
        "REJECTED",
        "CANCELLED",
    ]
