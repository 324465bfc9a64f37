"""Optional HTTP/JSON endpoints, off unless ``http_port`` is set (the reference has them behind a flag).

``POST /api/v1/features/retrieve``, ``/api/v1/features/retrieve/decoded`` and ``/api/v1/features/persist``
take the proto request messages as JSON (snake_case field names as the reference's clients send them;
lowerCamelCase is accepted too) and answer protojson (lowerCamelCase, bytes in base64). Each call is
converted to the wire bytes and run through the same :class:`~.calls.Calls` as gRPC: same auth headers,
error table and metrics (method label ``http:<RPC name>``). ``GET /health/self`` answers
``{"message":"true"}`` like the reference; ``GET /health/ready`` reports the registry and the stores.

This is a convenience path: JSON makes a Python object per value, so bulk traffic belongs on gRPC.

HTTP itself is uvicorn's: its httptools protocol parses requests and an event loop (uvloop where
installed) in a thread of its own holds every connection, so an idle one costs a socket, not a thread;
each call runs on a small pool of threads, as the work blocks on stores and the native core. (Measured
against the standard library's threaded server this replaced: as fast or faster on the API endpoints,
see docs/serving.md.) uvicorn bounds the idle time after a response but not the time before a request's
head is complete (a connection that sends nothing, or trickles its headers, is kept for ever), nor the
size of a head with httptools, so :class:`HttpApi` adds to its protocol (:class:`HttpLimits`): the
request head must arrive within ``header_timeout`` of the connection opening or of the request's first
byte (and the body within as long again), and be at most :data:`MAX_HEAD_BYTES`; a kept-alive connection
may sit idle ``idle_timeout``; one client address may hold at most ``max_connections_per_peer``
connections. :meth:`HttpApi.stop` drains: it stops accepting, closes idle connections, and lets requests
in flight finish within the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import resource
import socket
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from uvicorn import Config, Server
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from online_feature_store.errors import InvalidInputError
from online_feature_store.server.calls import CallError, Calls, Method

if TYPE_CHECKING:
    from online_feature_store.server.app import ServerConfig

__all__ = [
    "HTTP_STATUS",
    "LINGER_BYTES",
    "LINGER_SECONDS",
    "MAX_HEAD_BYTES",
    "HttpApi",
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


_REASONS = {
    400: "Bad Request",
    408: "Request Timeout",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
}

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


@dataclass(frozen=True)
class _Route:
    grpc_method: str
    request: type[Message]
    reply: type[Message]


def _routes() -> dict[str, _Route]:
    from online_feature_store._proto import persist_pb2, retrieve_pb2

    return {
        "/api/v1/features/retrieve": _Route("RetrieveFeatures", retrieve_pb2.Query, retrieve_pb2.Result),
        "/api/v1/features/retrieve/decoded": _Route(
            "RetrieveDecodedResult", retrieve_pb2.Query, retrieve_pb2.DecodedResult
        ),
        "/api/v1/features/persist": _Route("PersistFeatures", persist_pb2.Query, persist_pb2.Result),
    }


def http_method(method: Method) -> Method:
    """``method`` as the HTTP API counts it (metrics label ``http:<RPC name>``), request and reply as wire
    bytes (the native front converts the JSON itself)."""
    return replace(method, name=f"http:{method.name}")


def _json_method(calls_method: Method, route: _Route) -> Method:
    """``calls_method`` with JSON in and out: the JSON body becomes the proto bytes it stands for."""

    def run(calls: Calls, body: bytes) -> bytes:
        try:
            query = json_format.Parse(body, route.request())
        except (json_format.ParseError, ValueError) as exc:
            raise InvalidInputError(
                f"request body is not a valid {route.request.DESCRIPTOR.full_name}: {exc}"
            ) from None
        reply = route.reply.FromString(calls_method.run(calls, query.SerializeToString()))
        return json_format.MessageToJson(reply, indent=None).encode()

    return replace(http_method(calls_method), run=run)


def _error_body(code: str, message: str) -> bytes:
    return json.dumps({"code": code, "error": message}).encode()


def _raw_error(status: int, code: str, message: str) -> bytes:
    """A whole ``Connection: close`` error response, for answers written outside a request cycle."""
    body = _error_body(code, message)
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


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


class _Peers:
    """Open connections per client address (touched only from the event loop's thread)."""

    def __init__(self, limits: HttpLimits) -> None:
        self.limits = limits
        self.open: dict[str, int] = {}

    def enter(self, peer: str) -> bool:
        """Counts a new connection of ``peer``; False (not counted) when it is over the cap."""
        count = self.open.get(peer, 0)
        cap = self.limits.max_connections_per_peer
        if cap and count >= cap:
            return False
        self.open[peer] = count + 1
        return True

    def leave(self, peer: str) -> None:
        count = self.open.pop(peer, 0) - 1
        if count > 0:
            self.open[peer] = count


class _GuardedProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol (httptools) plus the per-peer cap, the header deadline and a bound on
    the size of a request head (llhttp has none of its own).

    The deadline is armed when the connection opens and when a later request's first byte arrives
    (``on_message_begin``), and disarmed once the head is parsed (``on_headers_complete``)."""

    peers: _Peers  # set on the subclass HttpApi makes

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._counted = ""
        self._lingering = False
        with contextlib.suppress(OSError, AttributeError):  # a response is two writes: no Nagle delay
            transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = self.client[0] if self.client else ""
        if not self.peers.enter(peer):
            cap = self.peers.limits.max_connections_per_peer
            message = f"too many connections from {peer} (limit {cap})"
            transport.write(_raw_error(429, "RESOURCE_EXHAUSTED", message))
            transport.close()
            return
        self._counted = peer
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._counted:
            self.peers.leave(self._counted)
            self._counted = ""
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:  # refused: drop what still arrives until the linger ends
            return
        if self._deadline is not None:
            self._head_bytes += len(data)
        super().data_received(data)
        if (
            self._deadline is not None
            and self._head_bytes > MAX_HEAD_BYTES
            and not self.transport.is_closing()
        ):
            self._disarm()
            message = f"request head over {MAX_HEAD_BYTES} bytes"
            self._refuse_and_linger(_raw_error(431, "RESOURCE_EXHAUSTED", message))

    def _refuse_and_linger(self, answer: bytes) -> None:
        """Sends ``answer``, ends our side of the connection, reads and drops the client's rest for
        :data:`LINGER_SECONDS`, then closes (a lingering close, as HTTP servers do after an early reply)."""
        self._lingering = True
        self.transport.write(answer)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        """A malformed request: the reason as the API's error JSON, then close."""
        if not self.transport.is_closing() and not self._lingering:
            self._disarm()
            self._refuse_and_linger(_raw_error(400, "INVALID_ARGUMENT", f"malformed HTTP request: {msg}"))

    def _arm(self) -> None:
        self._head_bytes = 0
        self._deadline = self.loop.call_later(self.peers.limits.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._head_bytes:  # part of a request head had arrived: say why it is dropped
            message = f"request head not received within {self.peers.limits.header_timeout:g} s"
            self.transport.write(_raw_error(408, "DEADLINE_EXCEEDED", message))
        self.transport.close()


class _App:
    """The ASGI application: routes, bodies and answers; each call runs on ``executor``."""

    def __init__(self, api: HttpApi, executor: ThreadPoolExecutor) -> None:
        self.api = api
        self.executor = executor

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # lifespan is off and websockets are not served
            return
        qs = scope.get("query_string", b"")
        path = scope["raw_path"].decode("latin-1") + (f"?{qs.decode('latin-1')}" if qs else "")
        method = scope["method"]
        if method == "GET":
            await self._get(path, send)
        elif method == "POST":
            await self._post(scope, path, receive, send)
        else:
            await _answer(
                send, 501, _error_body("UNIMPLEMENTED", f"Unsupported method ({method!r})"), close=True
            )

    async def _get(self, path: str, send: Any) -> None:
        api = self.api
        if path == "/health/self":
            await _answer(send, 200, b'{"message":"true"}')
        elif path == "/health/ready":
            loop = asyncio.get_running_loop()
            ready, report = await loop.run_in_executor(self.executor, api.ready)
            await _answer(send, 200 if ready else 503, json.dumps(report).encode())
        elif path in api.methods:
            await _answer(send, 405, _error_body("UNIMPLEMENTED", f"{path} takes POST"), {"Allow": "POST"})
        else:
            await _answer(send, 404, _error_body("NOT_FOUND", f"no endpoint {path}"))

    async def _post(self, scope: Any, path: str, receive: Any, send: Any) -> None:
        api = self.api
        method = api.methods.get(path)
        if method is None:
            if path in ("/health/self", "/health/ready"):
                await _answer(send, 405, _error_body("UNIMPLEMENTED", f"{path} takes GET"), {"Allow": "GET"})
            else:
                await _answer(send, 404, _error_body("NOT_FOUND", f"no endpoint {path}"))
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = _body_refusal(headers, api.max_body_bytes)
        if refusal is not None:
            status, code, message = refusal
            # Read (and drop) a little of what the client is still sending first: closing with its body
            # unread would reset the connection, maybe before the client has read the refusal.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(_drain(receive, LINGER_BYTES), LINGER_SECONDS)
            await _answer(send, status, _error_body(code, message), close=True)
            return
        try:
            body = await asyncio.wait_for(_read_body(receive), api.limits.header_timeout)
        except asyncio.TimeoutError:
            message = f"request body not received within {api.limits.header_timeout:g} s"
            await _answer(send, 408, _error_body("DEADLINE_EXCEEDED", message), close=True)
            return
        if body is None:
            return  # the client went away
        client = scope.get("client")
        peer = str(client[0]) if client else ""
        loop = asyncio.get_running_loop()
        try:
            reply = await loop.run_in_executor(
                self.executor, partial(api.calls.run, method, body, headers, peer=peer)
            )
        except CallError as err:
            await _answer(send, HTTP_STATUS.get(err.code, 500), _error_body(err.code.name, err.message))
            return
        await _answer(send, 200, reply)


def _body_refusal(headers: Mapping[str, str], limit: int) -> tuple[int, str, str] | None:
    """(status, code, message) when the body cannot be read, from the request's headers alone."""
    if "transfer-encoding" in headers:
        return 411, "INVALID_ARGUMENT", "chunked bodies are not accepted: send Content-Length"
    raw = headers.get("content-length")
    if raw is None:
        return 411, "INVALID_ARGUMENT", "Content-Length is required"
    try:
        length = int(raw)
        if length < 0:
            raise ValueError(raw)
    except ValueError:
        return 400, "INVALID_ARGUMENT", f"bad Content-Length {raw!r}"
    if length > limit:
        return 413, "RESOURCE_EXHAUSTED", f"body of {length} bytes is over the limit of {limit}"
    return None


async def _read_body(receive: Any) -> bytes | None:
    """The whole request body, or None when the client disconnected first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _drain(receive: Any, limit: int) -> None:
    """Reads and drops the request body until it ends, the client leaves or ``limit`` bytes are read."""
    seen = 0
    while seen <= limit:
        message = await receive()
        seen += len(message.get("body", b""))
        if message["type"] == "http.disconnect" or not message.get("more_body", False):
            return


async def _answer(
    send: Any, status: int, body: bytes, headers: Mapping[str, str] | None = None, *, close: bool = False
) -> None:
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    if close:  # the request's body was not read: the connection cannot carry another request
        raw.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class HttpApi:
    """The HTTP/JSON endpoints over ``calls``, bound to ``host:port`` (0: any free port) on construction.

    ``ready()`` returns (ready, report) for ``GET /health/ready``. Calls run on ``threads`` threads of their
    own. Call :meth:`start`, then :meth:`stop`.
    """

    def __init__(
        self,
        calls: Calls,
        host: str,
        port: int,
        *,
        ready: Callable[[], tuple[bool, dict[str, Any]]],
        max_body_bytes: int,
        reuse_port: bool = False,
        limits: HttpLimits | None = None,
        threads: int = 4,
    ) -> None:
        from online_feature_store.server.calls import METHODS

        self.calls = calls
        self.ready = ready
        self.max_body_bytes = max_body_bytes
        self.limits = limits or HttpLimits()
        self.methods = {path: _json_method(METHODS[r.grpc_method], r) for path, r in _routes().items()}
        self._sock = _listen(host, port, reuse_port)
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ofs-http")
        protocol = type("OfsHttpProtocol", (_GuardedProtocol,), {"peers": _Peers(self.limits)})
        config = Config(
            _App(self, self._executor),
            http=protocol,
            ws="none",
            lifespan="off",
            log_config=None,
            log_level="warning",
            access_log=False,
            server_header=False,
            proxy_headers=False,  # the client address is the socket's: no header may claim another
            timeout_keep_alive=self.limits.idle_timeout,  # type: ignore[arg-type]  # seconds, float is fine
        )
        self._server = Server(config)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port."""
        port: int = self._sock.getsockname()[1]
        return port

    def start(self) -> None:
        """Serves from a background thread (returns once it accepts connections)."""
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, name="ofs-http-loop", daemon=True
        )
        self._thread.start()
        while not self._server.started and self._thread.is_alive():
            time.sleep(0.01)
        if not self._server.started:
            raise RuntimeError("the HTTP API did not start (see the log)")

    def stop(self, grace: float) -> None:
        """Stops accepting, closes idle connections, lets requests in flight finish within ``grace``
        seconds (then cancels what is left of them) and waits for their threads."""
        self._server.config.timeout_graceful_shutdown = max(1, round(grace))
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join()
        with contextlib.suppress(OSError):
            self._sock.close()
        self._executor.shutdown(wait=True)


def _listen(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
