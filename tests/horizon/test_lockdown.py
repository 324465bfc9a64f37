"""Horizon locked down by default: no self-registration after the first admin, accounts made by admins or
``ofs horizon create-user``, strong passwords, case-insensitive user names (down to the database), and
the two-person rule against accounts made after the request."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from online_feature_store.errors import InvalidInputError
from online_feature_store.horizon.db import USERNAME_INDEX, connect, users, utcnow

from .conftest import PASSWORD, Api, Server, both_databases, submit

STORE = {"id": "main", "kind": "sqlite", "settings": {"path": "store.db"}}


def _register(api: Api, username: str, password: str = PASSWORD) -> httpx.Response:
    return api.anon.post("/auth/register", json={"username": username, "password": password})


# -- who may make an account -----------------------------------------------------------------------


@both_databases
def test_self_registration_is_closed_after_the_first_admin(api: Api) -> None:
    assert api.anon.get("/auth/registration").json() == {"open": True, "first_admin": True}
    first = _register(api, "root")
    assert (first.status_code, first.json()) == (201, {"username": "root", "role": "admin"})
    for name in ("mallory", "ROOT"):
        r = _register(api, name)
        assert r.status_code == 403, r.text
        assert "self-registration is off" in r.json()["detail"]
        assert "ofs horizon create-user" in r.json()["detail"]
    assert api.anon.get("/auth/registration").json() == {"open": False, "first_admin": False}
    admin = api.login("root")
    assert [u["username"] for u in admin.get("/users").json()] == ["root"]


def test_first_run_registration_can_be_off(make_server: Callable[..., Server]) -> None:
    api = Api(make_server(first_run_registration=False))
    try:
        assert api.anon.get("/auth/registration").json() == {"open": False, "first_admin": False}
        r = _register(api, "root")
        assert r.status_code == 403
        assert "self-registration is off" in r.json()["detail"]
    finally:
        api.close()


def test_self_registration_when_allowed_makes_viewers(make_server: Callable[..., Server]) -> None:
    api = Api(make_server(allow_self_registration=True, first_run_registration=False))
    try:
        assert api.anon.get("/auth/registration").json() == {"open": True, "first_admin": False}
        assert _register(api, "ann").json() == {"username": "ann", "role": "viewer"}
    finally:
        api.close()


@both_databases
def test_admins_create_accounts(api: Api, admin: httpx.Client) -> None:
    r = admin.post("/users", json={"username": "eve", "password": PASSWORD, "role": "editor"})
    assert r.status_code == 201, r.text
    assert (r.json()["username"], r.json()["role"]) == ("eve", "editor")
    eve = api.login("eve")
    assert eve.get("/auth/me").json()["role"] == "editor"
    # only admins
    r = eve.post("/users", json={"username": "x" * 5, "password": PASSWORD})
    assert r.status_code == 403
    assert api.anon.post("/users", json={"username": "xxxxx", "password": PASSWORD}).status_code == 401
    # the default role is viewer
    r = admin.post("/users", json={"username": "vic", "password": PASSWORD})
    assert r.json()["role"] == "viewer"
    # the owner changes the first password; the old one stops working
    new = "a different long passphrase"
    bad = eve.post("/auth/password", json={"current_password": "wrong one!", "new_password": new})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "current_password"]
    weak = eve.post("/auth/password", json={"current_password": PASSWORD, "new_password": "eve-eve-eve-eve"})
    assert weak.status_code == 422
    assert weak.json()["detail"][0]["loc"] == ["body", "new_password"]
    ok = eve.post("/auth/password", json={"current_password": PASSWORD, "new_password": new})
    assert ok.status_code == 204, ok.text
    assert api.anon.post("/auth/login", json={"username": "eve", "password": PASSWORD}).status_code == 401
    assert api.anon.post("/auth/login", json={"username": "eve", "password": new}).status_code == 200
    log = admin.get("/audit", params={"limit": 10}).json()
    assert ("eve", "user.password") in {(a["actor"], a["action"]) for a in log}
    assert ("alice", "user.create") in {(a["actor"], a["action"]) for a in log}


def test_create_user_command(tmp_path: Path, make_server: Callable[..., Server]) -> None:
    """``ofs horizon create-user`` makes the first admin (password from a variable or standard input,
    never an argument), which closes first-run registration."""
    env = {**os.environ, "ADMIN_PW": PASSWORD}

    def ofs(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "online_feature_store.cli", "horizon", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    made = ofs("create-user", "--data-dir", str(tmp_path), "--username", "root", "--role", "admin",
               "--password-env", "ADMIN_PW")  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "created root (admin)" in made.stdout
    # from standard input; the data directory given to `ofs horizon` itself
    piped = ofs("--data-dir", str(tmp_path), "create-user", "--username", "eve", "--role", "editor",
                stdin=PASSWORD + "\n")  # fmt: skip
    assert piped.returncode == 0, piped.stderr
    weak = ofs("--data-dir", str(tmp_path), "create-user", "--username", "bob", stdin="password123\n")
    assert weak.returncode == 1
    assert "at least 12 characters" in weak.stderr
    taken = ofs("--data-dir", str(tmp_path), "create-user", "--username", "ROOT", stdin=PASSWORD + "\n")
    assert taken.returncode == 1
    assert "case-insensitive" in taken.stderr
    unset = ofs("create-user", "--data-dir", str(tmp_path), "--username", "x1", "--password-env", "NOPE_PW")
    assert unset.returncode == 1
    assert "NOPE_PW" in unset.stderr
    assert ofs("create-user", "--username", "x", "--password", "pw").returncode == 2  # no such flag

    api = Api(make_server())
    try:
        assert _register(api, "mallory").status_code == 403  # there is an admin: first run is over
        root = api.login("root")
        assert root.get("/auth/me").json()["role"] == "admin"
        assert api.login("eve").get("/auth/me").json()["role"] == "editor"
        assert [(a["actor"], a["detail"]) for a in root.get("/audit").json()] == [
            ("cli", "eve as editor"),
            ("cli", "root as admin"),
        ]
    finally:
        api.close()


# -- passwords and user names ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "needle"),
    [
        ("12345678", "at least 12"),
        ("password", "at least 12"),
        ("xyz-Carol-2024!", "user name"),  # contains the name, any case
        ("carolcarolcarol", "user name"),
        ("passwordpassword", "too easy to guess"),
        ("1q2w3e4r5t6y", "too easy to guess"),  # on the common-password lists
        ("Password1234!", "too easy to guess"),
        ("qwertyuiopasdf", "too easy to guess"),
    ],
)
def test_weak_passwords_are_refused(api: Api, admin: httpx.Client, password: str, needle: str) -> None:
    r = admin.post("/users", json={"username": "carol", "password": password})
    assert r.status_code == 422, r.text
    [error] = r.json()["detail"]
    assert error["loc"] == ["body", "password"]
    assert needle in error["msg"]


@both_databases
def test_user_names_are_case_insensitive(api: Api, admin: httpx.Client) -> None:
    r = admin.post("/users", json={"username": "ALICE", "password": PASSWORD})
    assert r.status_code == 409
    assert "case-insensitive: 'alice' exists" in r.json()["detail"]
    assert admin.post("/users", json={"username": "Bob", "password": PASSWORD}).status_code == 201
    # sign in with any case: the session is the account's
    login = api.anon.post("/auth/login", json={"username": "bob", "password": PASSWORD})
    assert login.status_code == 200
    assert login.json()["username"] == "Bob"
    assert admin.patch("/users/BOB", json={"role": "editor"}).json()["username"] == "Bob"
    # and the database itself refuses a second spelling, whatever writes it
    engine: sa.engine.Engine = api.server.app.state.horizon.engine
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(
            users.insert().values(username="BOB", password_hash="x", role="viewer", created_at=utcnow())
        )


@both_databases
def test_an_older_database_gets_the_index_or_a_clear_error(tmp_path: Path, database_url: str | None) -> None:
    url = database_url or f"sqlite:///{tmp_path / 'horizon.db'}"
    engine = connect(url)
    with engine.begin() as conn:  # an older Horizon: no case-insensitive index yet
        conn.execute(sa.text(f"DROP INDEX {USERNAME_INDEX}"))
        for name in ("alice", "ALICE", "Alice", "bob"):
            conn.execute(
                users.insert().values(username=name, password_hash="x", role="viewer", created_at=utcnow())
            )
    engine.dispose()
    with pytest.raises(InvalidInputError) as info:
        connect(url)
    assert "differ only in case: ['ALICE', 'Alice', 'alice']" in str(info.value)
    assert "delete" in str(info.value)
    fix = sa.create_engine(url)
    with fix.begin() as conn:
        conn.execute(sa.text("DELETE FROM horizon_users WHERE username IN ('ALICE', 'Alice')"))
    fix.dispose()
    engine = connect(url)  # now migrated: the index is there
    try:
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
            conn.execute(
                users.insert().values(username="BOB", password_hash="x", role="viewer", created_at=utcnow())
            )
    finally:
        engine.dispose()


# -- the two-person rule ---------------------------------------------------------------------------


@both_databases
def test_an_account_made_after_the_request_cannot_approve_it(api: Api, admin: httpx.Client) -> None:
    created = submit(admin, "create_store", STORE)
    own = admin.post(f"/requests/{created['id']}/approve")
    assert own.status_code == 403
    assert "own request" in own.json()["detail"]
    # the same admin makes a second account, promotes it and approves with it
    sock = api.user("sock", "viewer", admin=admin)
    assert admin.patch("/users/sock", json={"role": "admin"}).status_code == 200
    r = sock.post(f"/requests/{created['id']}/approve")
    assert r.status_code == 403, r.text
    assert "created after the request" in r.json()["detail"]
    assert "two-person rule" in r.json()["detail"]
    assert admin.get(f"/requests/{created['id']}").json()["state"] == "PENDING"
    assert admin.get("/registry").json()["revision"] == 0
    # an admin whose account is older than the request may
    later = submit(admin, "create_store", {**STORE, "id": "other"})
    assert sock.post(f"/requests/{later['id']}/approve").status_code == 200


@both_databases
def test_two_first_registrations_at_once_make_one_admin(api: Api) -> None:
    barrier = threading.Barrier(2)
    results: dict[str, httpx.Response] = {}

    def register(name: str) -> None:
        barrier.wait()
        results[name] = _register(api, name)

    threads = [threading.Thread(target=register, args=(n,)) for n in ("first1", "first2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status_code for r in results.values()) == [201, 403]
    winner = next(r for r in results.values() if r.status_code == 201)
    assert winner.json()["role"] == "admin"
