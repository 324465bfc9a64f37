"""Store credentials stay out of the registry: a Redis password is named by ``password_env`` and read
only where the store is opened (against a private redis-server with ``requirepass``); a literal
credential is refused by registry apply; one an older registry holds keeps working but is redacted by
``ofs registry show`` / ``export``, plan lines and errors."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from online_feature_store.errors import InvalidInputError, UnavailableError
from online_feature_store.registry import open_registry
from online_feature_store.registry.model import RegistryState, Store
from online_feature_store.registry.serde import state_docs
from online_feature_store.registry.spec import diff_states
from online_feature_store.registry.validate import validate_change
from online_feature_store.store import open_store, settings_errors
from online_feature_store.store.base import BlockWrite
from online_feature_store.store.secrets import credential_errors, redact_settings, redact_text
from tests.store.conftest import closed_port, make_block, make_entity, require_service

PASSWORD = "s3cret-Pa55word-for-redis"


@pytest.fixture
def locked_redis(tmp_path: Path) -> Iterator[int]:
    """A redis-server of this test alone that needs ``PASSWORD`` (``requirepass``); its port."""
    binary = shutil.which("redis-server")
    if binary is None:
        require_service("redis-server binary", [("127.0.0.1", 0)], "scripts/services/redis start")
        raise AssertionError("unreachable")
    port = closed_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--requirepass",
            PASSWORD,
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "private redis-server did not start"
                time.sleep(0.02)
        yield port
    finally:
        proc.kill()
        proc.wait()


def test_password_env_opens_a_password_protected_redis(
    locked_redis: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = {"url": f"redis://127.0.0.1:{locked_redis}/0", "password_env": "OFS_TEST_REDIS_PW"}
    assert settings_errors("redis", settings) == {}  # a store the registry accepts
    entity = make_entity()

    monkeypatch.setenv("OFS_TEST_REDIS_PW", PASSWORD)
    store = open_store(Store("r", "redis", settings))
    try:
        store.write(entity, [BlockWrite(("u1", "eu"), 1, make_block(1))])
        assert store.read(entity, [("u1", "eu")], [1]) == [[make_block(1)]]
    finally:
        store.close()

    # a wrong password: Redis refuses, and the error does not show the password
    monkeypatch.setenv("OFS_TEST_REDIS_PW", "not-the-password")
    store = open_store(Store("r", "redis", {**settings, "retries": "0"}))
    try:
        with pytest.raises(UnavailableError) as info:
            store.read(entity, [("u1", "eu")], [1])
        assert "not-the-password" not in str(info.value)
    finally:
        store.close()

    # without the password Redis refuses too (so the first test did need it)
    store = open_store(Store("r", "redis", {"url": settings["url"], "retries": "0"}))
    try:
        with pytest.raises(UnavailableError, match=r"(?i)auth"):
            store.read(entity, [("u1", "eu")], [1])
    finally:
        store.close()

    monkeypatch.delenv("OFS_TEST_REDIS_PW")
    with pytest.raises(
        UnavailableError, match="password_env='OFS_TEST_REDIS_PW' names an environment variable"
    ):
        open_store(Store("r", "redis", settings))


@pytest.mark.parametrize(
    ("settings", "name"),
    [
        ({"url": "redis://:hunter2hunter2@cache:6379/0"}, "url"),
        ({"url": "rediss://ops:hunter2hunter2@cache:6379/0"}, "url"),
        ({"url": "redis://cache:6379/0?password=hunter2hunter2"}, "url"),
        ({"url": "redis://cache:6379/0", "password": "hunter2hunter2"}, "password"),
    ],
)
def test_literal_credentials_are_refused_with_what_to_do(settings: dict[str, str], name: str) -> None:
    errors = settings_errors("redis", settings)
    assert name in errors, errors
    assert "password_env" in errors[name]
    assert "hunter2hunter2" not in errors[name]
    assert credential_errors({"url": "redis://user@cache:6379/0", "password_env": "X"}) == {}
    assert credential_errors({"url": "redis://127.0.0.1:16379/0"}) == {}


def test_redaction() -> None:
    assert redact_text("redis://:hunter2@cache:6379/0") == "redis://:***@cache:6379/0"
    assert redact_text("x rediss://ops:p%40ss@h/0 y") == "x rediss://ops:***@h/0 y"
    assert redact_text("redis://h/0?db=1&password=pw&x=1") == "redis://h/0?db=1&password=***&x=1"
    assert redact_text("redis://127.0.0.1:16379/0") == "redis://127.0.0.1:16379/0"
    assert redact_settings(
        {"url": "redis://:pw@h", "password": "pw", "password_env": "PW", "pool_size": "8"}
    ) == {
        "url": "redis://:***@h",
        "password": "***",
        "password_env": "PW",
        "pool_size": "8",
    }


def _legacy_registry(path: Path, store: Store) -> str:
    """A SQLite registry holding ``store`` as an older version wrote it (before credentials were refused)."""
    url = f"sqlite:///{path}"
    open_registry(url).close()  # the schema
    with sqlite3.connect(path) as conn:
        for (kind, name), doc in state_docs(RegistryState(stores=(store,))).items():
            conn.execute("INSERT INTO docs (kind, name, doc) VALUES (?, ?, ?)", (kind, name, doc))
        conn.execute("UPDATE meta SET v = 1 WHERE k = 'revision'")
    return url


def _ofs(*args: str, registry: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "online_feature_store.cli", *args],
        env={**os.environ, "OFS_REGISTRY": registry},
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_registry_refuses_new_credentials_and_redacts_old_ones(tmp_path: Path) -> None:
    secret = "hunter2hunter2"
    legacy = Store("cache", "redis", {"url": f"redis://:{secret}@127.0.0.1:{closed_port()}/0"})
    url = _legacy_registry(tmp_path / "registry.db", legacy)

    # a store already holding one still opens (and its errors do not show the password)
    store = open_store(legacy)
    try:
        with pytest.raises(UnavailableError) as info:
            store.read(make_entity(), [("a", "b")], [1])
        assert secret not in str(info.value)
        assert ":***@" in str(info.value)
    finally:
        store.close()

    show = _ofs("registry", "show", registry=url)
    assert show.returncode == 0, show.stderr
    assert secret not in show.stdout
    assert "redis://:***@127.0.0.1" in show.stdout
    export = _ofs("registry", "export", registry=url)
    assert export.returncode == 0, export.stderr
    assert secret not in export.stdout
    assert ":***@" in export.stdout

    # apply refuses a new store, or a change, with a credential in it; the plan line is redacted
    spec = tmp_path / "stores.yaml"
    spec.write_text(
        "stores:\n"
        f"  - {{id: cache, kind: redis, settings: {{url: 'redis://:{secret}@127.0.0.1:6379/1'}}}}\n"
        f"  - {{id: other, kind: redis, settings: {{url: 'redis://h:6379/0', password: '{secret}'}}}}\n"
    )
    applied = _ofs("registry", "apply", "-f", str(spec), "-y", registry=url)
    assert applied.returncode == 1
    assert secret not in applied.stdout + applied.stderr
    assert "store 'cache': setting url holds a password" in applied.stderr
    assert "store 'other': setting 'password' would keep a credential" in applied.stderr
    assert "password_env" in applied.stderr
    new = Store("cache", "redis", {"url": "redis://127.0.0.1:6379/1", "password_env": "REDIS_PW"})
    [line] = diff_states(RegistryState(stores=(legacy,)), RegistryState(stores=(new,)))
    assert secret not in line
    assert "redis://:***@127.0.0.1" in line

    # moving to password_env is accepted
    spec.write_text(
        "stores:\n"
        "  - {id: cache, kind: redis, settings: {url: 'redis://127.0.0.1:6379/1', password_env: REDIS_PW}}\n"
    )
    applied = _ofs("registry", "apply", "-f", str(spec), "-y", registry=url)
    assert applied.returncode == 0, applied.stderr
    backend = open_registry(url)
    try:
        assert backend.load().stores["cache"].settings == new.settings
    finally:
        backend.close()


def test_unknown_settings_are_refused_by_apply_too() -> None:
    """The store rules apply to a changed store in any registry change, not only in Horizon."""
    bad = RegistryState(stores=(Store("s", "sqlite", {"pth": "x.db"}),))
    with pytest.raises(InvalidInputError, match="unknown sqlite setting 'pth'"):
        validate_change(RegistryState(), bad)
    validate_change(bad, bad)  # a store left as it was is not judged again
