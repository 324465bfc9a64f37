"""Shared by the suites that need real services on 127.0.0.1 (started by scripts/services/*)."""

from __future__ import annotations

import os
import socket

import pytest


def reachable(host: str, port: int) -> bool:
    """True when something accepts TCP connections at ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_service(name: str, endpoints: list[tuple[str, int]], start: str) -> None:
    """Fail (under CI) or skip (locally) when a service the test needs is not running."""
    if all(reachable(h, p) for h, p in endpoints):
        return
    message = f"{name} is not reachable at {endpoints}: run `{start}` (scripts/test starts it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
