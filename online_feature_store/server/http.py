"""The HTTP/JSON API's rules, off unless ``http_port`` is set (the reference has it behind a flag): the
compiled front serves it (``front/src/http/``, :class:`~.native_front.NativeHttp`), Python keeps what it
is told.

``POST /api/v1/features/retrieve``, ``/api/v1/features/retrieve/decoded`` and ``/api/v1/features/persist``
take the proto request messages as JSON (snake_case field names as the reference's clients send them;
lowerCamelCase is accepted too) and answer protojson (lowerCamelCase, bytes in base64). Each call is
converted to the wire bytes and runs the gRPC method's path: same auth headers, error table and metrics
(method label ``http:<RPC name>``, :func:`http_method`). ``GET /health/self`` answers
``{"message":"true"}`` like the reference; ``GET /health/ready`` reports the registry and the stores.

Here: gRPC status → HTTP status (:data:`HTTP_STATUS`), the limits a client is held to (:class:`HttpLimits`:
the request head within ``header_timeout`` of the connection opening or of the request's first byte and
the body within as long again, at most :data:`MAX_HEAD_BYTES` of head, ``idle_timeout`` between requests
of a kept-alive connection, ``max_connections_per_peer``), and how a refusal sent mid-request lingers.
"""

from __future__ import annotations

import logging
import resource
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import grpc

from online_feature_store.errors import InvalidInputError
from online_feature_store.server.calls import Method

if TYPE_CHECKING:
    from online_feature_store.server.app import ServerConfig

__all__ = [
    "HTTP_STATUS",
    "LINGER_BYTES",
    "LINGER_SECONDS",
    "MAX_HEAD_BYTES",
    "HttpLimits",
    "http_method",
    "http_statuses",
    "raise_open_files_limit",
]

log = logging.getLogger("online_feature_store.server.http")

HTTP_STATUS: Mapping[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.CANCELLED: 408,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 412,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.DATA_LOSS: 500,  # a stored block that does not decode (the reference: other → 500)
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
"""gRPC status → HTTP status, as the reference maps them (anything else: 500)."""


def http_statuses() -> dict[int, tuple[str, int]]:
    """Every gRPC code's number → (its name, HTTP status): :data:`HTTP_STATUS` for the native front."""
    return {code.value[0]: (code.name, HTTP_STATUS.get(code, 500)) for code in grpc.StatusCode}


MAX_HEAD_BYTES = 64 * 1024
"""Largest request line plus headers; a longer head is answered 431 and the connection closed."""

LINGER_BYTES = 64 * 1024
"""At most this much of a refused body is read and dropped before the refusal is sent."""

LINGER_SECONDS = 1.0
"""After a refusal sent mid-request, how long what the client still sends is read and dropped before the
connection closes: closing at once with unread bytes makes the kernel reset the connection, and a reset
can reach the client before it has read the refusal."""


@dataclass(frozen=True)
class HttpLimits:
    """What one client may hold of the HTTP server (settings ``http_*`` of :class:`~.app.ServerConfig`)."""

    header_timeout: float = 10.0
    """Seconds for a request's line and headers to arrive, counted from the connection's opening or the
    request's first byte; its body then gets as long again. Past it the connection is closed (408 when a
    request had started)."""
    idle_timeout: float = 60.0
    """Seconds a kept-alive connection may wait for its next request."""
    max_connections_per_peer: int = 64
    """Open connections per client address (0: no cap); one more is answered 429 and closed."""

    @classmethod
    def from_config(cls, config: ServerConfig) -> HttpLimits:
        """The limits a server config sets (``InvalidInputError`` names a bad one)."""
        return cls(
            config.http_header_timeout_seconds,
            config.http_idle_timeout_seconds,
            config.http_max_connections_per_peer,
        )

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be {rule}, got {value!r}"
            for name, value, ok, rule in (
                ("http_header_timeout_seconds", self.header_timeout, self.header_timeout > 0, "above 0"),
                ("http_idle_timeout_seconds", self.idle_timeout, self.idle_timeout > 0, "above 0"),
                (
                    "http_max_connections_per_peer",
                    self.max_connections_per_peer,
                    self.max_connections_per_peer >= 0,
                    "0 (no cap) or more",
                ),
            )
            if not ok
        ]
        if problems:
            raise InvalidInputError("; ".join(problems))


def http_method(method: Method) -> Method:
    """``method`` as the HTTP API counts it (metrics label ``http:<RPC name>``), request and reply as wire
    bytes (the native front converts the JSON itself)."""
    return replace(method, name=f"http:{method.name}")


def raise_open_files_limit() -> tuple[int, int]:
    """Raises this process's soft ``RLIMIT_NOFILE`` to its hard limit (every connection is a file);
    returns (soft, hard) as they are afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:  # e.g. a hard limit of "unlimited" that the kernel caps
            log.warning("cannot raise the open files limit from %d to %d: %s", soft, hard, exc)
    return soft, hard
