"""Ports a command is about to listen on: one that is taken is one clear error (:class:`PortInUseError`)
naming the address, what the port is for and the flag, environment variable and setting that move it.

Commands check every port before they open anything, so a taken port is reported at once and by name
(gRPC's own bind failure is a log line of its C core plus a bare ``RuntimeError``; uvicorn's exits the
process). The binds themselves still translate their failures the same way (:func:`bind_error`), for a
port taken between the check and the bind.
"""

from __future__ import annotations

import errno
import socket

from online_feature_store.errors import PortInUseError, UnavailableError

__all__ = ["bind_error", "check_free", "check_ports", "moved_by"]


def moved_by(flag: str, env: str, setting: str) -> str:
    """How a port is moved, as :func:`check_free` and :func:`bind_error` word it."""
    return f"{flag}, ${env} or the {setting!r} setting"


def _in_use(host: str, port: int, what: str, how: str) -> PortInUseError:
    return PortInUseError(
        f"port {port} ({what}) on {host or 'every address'} is already in use: stop what listens there, "
        f"or choose another port with {how}"
    )


def bind_error(exc: OSError, host: str, port: int, what: str, how: str) -> UnavailableError:
    """The error for a failed bind of ``host:port``: :class:`PortInUseError` when it is taken."""
    if exc.errno == errno.EADDRINUSE:
        return _in_use(host, port, what, how)
    return UnavailableError(f"cannot listen on {host}:{port} ({what}): {exc.strerror or exc}")


def check_free(host: str, port: int, what: str, how: str) -> None:
    """Raises :class:`PortInUseError` when something already listens on ``host:port`` (``what`` names the
    port, ``how`` the settings that move it, see :func:`moved_by`). Port 0 (any free port) and a host that
    does not resolve pass: the bind itself reports those."""
    if port <= 0:
        return
    try:
        infos = socket.getaddrinfo(
            host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError:
        return
    for family, kind, proto, _name, address in infos:
        with socket.socket(family, kind, proto) as probe:
            # as the servers bind: a port whose last connections linger in TIME_WAIT is free
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise _in_use(host, port, what, how) from None


def check_ports(host: str, ports: list[tuple[int, str, str]]) -> None:
    """:func:`check_free` for each ``(port, what, how)`` (0: none or any free port), after refusing one
    port given for two purposes."""
    seen: dict[int, str] = {}
    for port, what, how in ports:
        if port > 0 and port in seen:
            raise PortInUseError(
                f"port {port} is set for both {seen[port]} and {what}: choose another with {how}"
            )
        seen[port] = what
    for port, what, how in ports:
        check_free(host, port, what, how)
