"""Sign-in throttling: per client address, per account, and bounded password hashing (429 with
Retry-After, decided before any hash)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest

from online_feature_store.horizon.auth import Passwords
from online_feature_store.horizon.config import HorizonConfig
from online_feature_store.horizon.throttle import (
    HASH_NICE,
    WAITING_PER_SLOT,
    LoginGuard,
    TooManyRequestsError,
)

from .conftest import PASSWORD, Api, Server

WRONG = "not the password at all"


def _login(api: Api, username: str, password: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return api.anon.post("/auth/login", json={"username": username, "password": password}, headers=headers)


def _assert_429(r: httpx.Response, needle: str) -> int:
    assert r.status_code == 429, r.text
    assert needle in r.json()["detail"]
    retry_after = int(r.headers["retry-after"])
    assert retry_after >= 1
    return retry_after


def test_attempts_per_client_address(make_server: Callable[..., Server]) -> None:
    api = Api(make_server(login_attempts_per_ip=3))
    try:
        api.user("alice", "admin")  # a registration takes one of the three
        for _ in range(5):
            assert _login(api, "alice", PASSWORD).status_code == 200  # a good sign-in gives its token back
        assert _login(api, "alice", WRONG).status_code == 401
        assert _login(api, "nobody", WRONG).status_code == 401
        # the fourth attempt, whatever the account, and even with the right password
        retry = _assert_429(_login(api, "mallory", WRONG), "too many sign-in attempts from 127.0.0.1")
        assert retry <= 60
        _assert_429(_login(api, "alice", PASSWORD), "too many sign-in attempts")
        # a forwarded address is not believed unless the peer is a configured proxy
        _assert_429(_login(api, "alice", PASSWORD, {"X-Forwarded-For": "203.0.113.9"}), "127.0.0.1")
    finally:
        api.close()


def test_wrong_passwords_per_account(make_server: Callable[..., Server]) -> None:
    api = Api(make_server(login_failures_per_user=3, login_attempts_per_ip=1000))
    try:
        admin = api.user("alice", "admin")
        api.user("bob", "viewer", admin=admin)
        # a success clears the failures
        for _ in range(2):
            assert _login(api, "alice", WRONG).status_code == 401
        assert _login(api, "alice", PASSWORD).status_code == 200
        for _ in range(3):
            assert _login(api, "ALICE", WRONG).status_code == 401  # any case: the same account
        retry = _assert_429(_login(api, "alice", PASSWORD), "too many wrong passwords for 'alice'")
        assert retry <= 900
        _assert_429(_login(api, "Alice", WRONG), "too many wrong passwords")
        # other accounts, and names of no account, are not affected
        assert _login(api, "bob", PASSWORD).status_code == 200
        for _ in range(5):
            assert _login(api, "nobody", WRONG).status_code == 401
        # a wrong current password when changing it counts too
        for _ in range(3):
            r = admin.post("/auth/password", json={"current_password": WRONG, "new_password": "x" * 12})
            assert r.status_code in (422, 429)
        r = admin.post("/auth/password", json={"current_password": PASSWORD, "new_password": WRONG + " ok"})
        _assert_429(r, "too many wrong passwords")
    finally:
        api.close()


def test_registrations_count_per_address(make_server: Callable[..., Server]) -> None:
    api = Api(make_server(allow_self_registration=True, login_attempts_per_ip=2))
    try:
        for name in ("ann", "ben"):
            r = api.anon.post("/auth/register", json={"username": name, "password": PASSWORD})
            assert r.status_code == 201, r.text
        r = api.anon.post("/auth/register", json={"username": "cid", "password": PASSWORD})
        _assert_429(r, "too many sign-in attempts")
    finally:
        api.close()


# -- the limits themselves (pure logic, a fake clock) -------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failure_window_slides() -> None:
    clock = Clock()
    guard = LoginGuard(
        HorizonConfig(login_failures_per_user=2, login_failure_window_seconds=60, login_attempts_per_ip=600),
        clock=clock,
    )
    guard._failures.fail("ann")
    clock.now += 30
    guard._failures.fail("ann")
    with pytest.raises(TooManyRequestsError) as info:
        guard.admit("1.2.3.4", "ANN")
    assert info.value.retry_after == 30  # until the first failure is a minute old
    clock.now += 30
    guard.admit("1.2.3.4", "ann")  # one failure left in the window


def test_address_bucket_refills() -> None:
    clock = Clock()
    guard = LoginGuard(HorizonConfig(login_attempts_per_ip=2), clock=clock)
    guard.admit("a")
    guard.admit("a")
    with pytest.raises(TooManyRequestsError) as info:
        guard.admit("a")
    assert info.value.retry_after == 30  # 2 a minute: one back every 30 s
    guard.admit("b")  # another address
    clock.now += 30
    guard.admit("a")


def test_hashing_waits_in_a_bounded_queue() -> None:
    """One slot: one hash runs, WAITING_PER_SLOT wait (without a thread each), the next is refused; the
    hashing thread runs at the lowest CPU priority."""
    guard = LoginGuard(HorizonConfig(max_concurrent_hashes=1))
    started, release = threading.Event(), threading.Event()
    outcomes: list[str] = []
    nice: list[int] = []

    def hash_like() -> None:
        nice.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        started.set()
        release.wait(30)

    async def one() -> None:
        try:
            await guard.hashing(hash_like)
            outcomes.append("done")
        except TooManyRequestsError:
            outcomes.append("429")

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(WAITING_PER_SLOT + 1):
                tg.start_soon(one)
            await anyio.wait_all_tasks_blocked()
            await anyio.to_thread.run_sync(started.wait, 30)
            assert guard.pending == 1 + WAITING_PER_SLOT
            await one()  # refused at once
            assert outcomes == ["429"]
            release.set()

    try:
        anyio.run(main)
    finally:
        guard.close()
    assert sorted(outcomes) == ["429"] + ["done"] * (WAITING_PER_SLOT + 1)
    assert guard.pending == 0
    if sys.platform == "linux":
        assert set(nice) == {HASH_NICE}


def test_at_most_max_concurrent_hashes_run() -> None:
    passwords = Passwords("CHEAPEST", max_concurrent=2)
    running, peak, lock = [0], [0], threading.Lock()
    real = passwords._hasher

    class Counting:
        def __getattr__(self, name: str) -> Any:
            def call(*args: Any) -> Any:
                with lock:
                    running[0] += 1
                    peak[0] = max(peak[0], running[0])
                try:
                    time.sleep(0.01)
                    return getattr(real, name)(*args)
                finally:
                    with lock:
                        running[0] -= 1

            return call

    passwords._hasher = Counting()  # type: ignore[assignment]
    stored = real.hash("pw")
    threads = [threading.Thread(target=passwords.verify, args=(stored, "pw")) for _ in range(12)]
    threads += [threading.Thread(target=passwords.hash, args=("pw",)) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 2
    assert Passwords("RFC_9106_LOW_MEMORY", max_concurrent=4).memory_budget_bytes == 256 * 2**20


# -- the real command: X-Forwarded-For only from configured proxies --------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.parametrize("trusted", ["", "127.0.0.1"])
def test_forwarded_for_is_believed_only_from_trusted_proxies(tmp_path: Path, trusted: str) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OFS_")}
    env.update(
        OFS_HORIZON_LOGIN_ATTEMPTS_PER_IP="2",
        OFS_HORIZON_TRUSTED_PROXIES=trusted,
        OFS_HORIZON_PASSWORD_PROFILE="CHEAPEST",
    )
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
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/api/v1"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "ofs horizon exited"
            try:
                httpx.get(url + "/health", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "ofs horizon did not start"
                time.sleep(0.1)
        codes = [
            httpx.post(
                url + "/auth/login",
                json={"username": "x", "password": WRONG},
                headers={"X-Forwarded-For": f"198.51.100.{i}"},
            ).status_code
            for i in range(3)
        ]
        # trusted: three different clients; not trusted: one client (127.0.0.1) over its limit
        assert codes == ([401, 401, 401] if trusted else [401, 401, 429])
    finally:
        proc.terminate()
        proc.wait(timeout=60)
