"""Optional HTTP/JSON endpoints, off unless ``http_port`` is set (the reference has them behind a flag).

``POST /api/v1/features/retrieve``, ``/api/v1/features/retrieve/decoded`` and ``/api/v1/features/persist``
take the proto request messages as JSON (snake_case field names as the reference's clients send them;
lowerCamelCase is accepted too) and answer protojson (lowerCamelCase, bytes in base64). Each call is
converted to the wire bytes and run through the same :class:`~.calls.Calls` as gRPC: same auth headers,
error table and metrics (method label ``http:<RPC name>``). ``GET /health/self`` answers
``{"message":"true"}`` like the reference; ``GET /health/ready`` reports the registry and the stores.

This is a convenience path: JSON makes a Python object per value, so bulk traffic belongs on gRPC.
The server is the standard library's threaded HTTP/1.1 server (keep-alive, one thread per connection,
bounded), with a drain on :meth:`HttpApi.stop` that finishes requests in flight and closes idle
connections.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from online_feature_store.errors import InvalidInputError
from online_feature_store.server.calls import CallError, Calls, Method

__all__ = ["HTTP_STATUS", "HttpApi"]

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

MAX_CONNECTIONS = 512
"""Open connections per process (one thread each); beyond that new ones are answered 503 and closed."""

LINGER_SECONDS = 1.0
"""Seconds to drain a refused request body before closing (see ``_Handler._refuse_body``)."""

IDLE_TIMEOUT = 60.0
"""Seconds a keep-alive connection may sit idle (or a read/write stall) before it is closed."""


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

    return Method(f"http:{calls_method.name}", calls_method.role, run)


class _Connection:
    """Whether a connection is inside a request (``busy``) or being closed by the drain (``closing``)."""

    __slots__ = ("busy", "closing", "sock", "thread")

    def __init__(self, sock: socket.socket, thread: threading.Thread) -> None:
        self.sock = sock
        self.thread = thread
        self.busy = False
        self.closing = False


class _Server(HTTPServer):
    """``HTTPServer`` with one thread per connection (bounded), ``SO_REUSEPORT`` and a drain."""

    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        api: HttpApi,
        reuse_port: bool,
    ) -> None:
        self.api = api
        self.reuse_port = reuse_port
        self.lock = threading.Lock()
        self.connections: dict[int, _Connection] = {}
        self.draining = False
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        if self.reuse_port:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        # Not HTTPServer.server_bind: it resolves the host's FQDN (a DNS lookup) for nothing we use.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        sock: socket.socket = request
        with self.lock:
            full = len(self.connections) >= MAX_CONNECTIONS or self.draining
            if not full:
                thread = threading.Thread(
                    target=self._serve_connection, args=(sock, client_address), name="ofs-http", daemon=True
                )
                self.connections[id(sock)] = _Connection(sock, thread)
        if full:
            with contextlib.suppress(OSError):
                sock.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n"
                    b"Retry-After: 1\r\n\r\n"
                )
            self.shutdown_request(sock)
            return
        thread.start()

    def _serve_connection(self, sock: socket.socket, client_address: Any) -> None:
        try:
            self.finish_request(sock, client_address)
        except Exception:
            self.handle_error(sock, client_address)
        finally:
            with self.lock:
                self.connections.pop(id(sock), None)
            self.shutdown_request(sock)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("HTTP connection from %s failed", client_address)

    def set_busy(self, sock: socket.socket, busy: bool) -> bool:
        """Marks a connection busy / idle; False when the drain is already closing it."""
        with self.lock:
            conn = self.connections.get(id(sock))
            if conn is None or conn.closing:
                return False
            conn.busy = busy
            return True

    def drain(self, grace: float) -> None:
        """After ``shutdown()``: lets requests in flight finish (up to ``grace`` seconds) and closes idle
        keep-alive connections at once."""
        deadline = time.monotonic() + grace
        self.server_close()  # new connections are refused from here on, not left in the backlog
        with self.lock:
            self.draining = True
            conns = list(self.connections.values())
            for conn in conns:
                if not conn.busy:
                    conn.closing = True
                    with contextlib.suppress(OSError):  # wakes the thread blocked reading a request
                        conn.sock.shutdown(socket.SHUT_RDWR)
        for conn in conns:
            conn.thread.join(max(0.0, deadline - time.monotonic()))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT
    # Headers and body go out in two writes; with Nagle on, the second waits for the client's delayed
    # ACK (40 ms per response on Linux).
    disable_nagle_algorithm = True
    server: _Server

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        finally:
            if not self.server.set_busy(self.connection, False) or self.server.draining:
                self.close_connection = True

    def parse_request(self) -> bool:
        if not self.server.set_busy(self.connection, True):
            self.close_connection = True
            return False
        return super().parse_request()

    def log_message(self, format: str, *args: Any) -> None:  # the stdlib's signature
        log.debug("%s " + format, self.address_string(), *args)

    def _reply(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.server.draining:
            self.close_connection = True
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        self._reply(status, json.dumps({"code": code, "error": message}).encode(), headers)

    def _refuse_body(self, status: int, code: str, message: str) -> None:
        """Answers without reading the body, then closes the connection the way HTTP servers do: stop
        sending, and read (and drop) what the client is still sending for a moment, so closing on unread
        data does not reset the connection before the client has read the answer."""
        self.close_connection = True
        self._error(status, code, message)
        self.wfile.flush()
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(LINGER_SECONDS)
            for _ in range(16):  # up to 1 MiB
                if not self.connection.recv(65536):
                    break

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The stdlib's own errors (malformed request line, unsupported method, …) as JSON too."""
        self.close_connection = True
        name = next((c.name for c, status in HTTP_STATUS.items() if status == code), "UNKNOWN")
        self._error(code, name, message or explain or f"HTTP {code}")

    def do_GET(self) -> None:  # the stdlib's dispatch name
        api = self.server.api
        if self.path == "/health/self":
            self._reply(200, b'{"message":"true"}')
        elif self.path == "/health/ready":
            ready, report = api.ready()
            self._reply(200 if ready else 503, json.dumps(report).encode())
        elif self.path in api.methods:
            self._error(405, "UNIMPLEMENTED", f"{self.path} takes POST", {"Allow": "POST"})
        else:
            self._error(404, "NOT_FOUND", f"no endpoint {self.path}")

    def do_POST(self) -> None:  # the stdlib's dispatch name
        api = self.server.api
        method = api.methods.get(self.path)
        if method is None:
            if self.path in ("/health/self", "/health/ready"):
                self._error(405, "UNIMPLEMENTED", f"{self.path} takes GET", {"Allow": "GET"})
            else:
                self._error(404, "NOT_FOUND", f"no endpoint {self.path}")
            return
        body = self._body(api.max_body_bytes)
        if body is None:
            return
        metadata = {k.lower(): v for k, v in self.headers.items()}
        try:
            reply = api.calls.run(method, body, metadata, peer=str(self.client_address[0]))
        except CallError as err:
            self._error(HTTP_STATUS.get(err.code, 500), err.code.name, err.message)
            return
        self._reply(200, reply)

    def _body(self, limit: int) -> bytes | None:
        """The request body, or None after answering why it cannot be read."""
        if self.headers.get("Transfer-Encoding"):
            self._refuse_body(411, "INVALID_ARGUMENT", "chunked bodies are not accepted: send Content-Length")
            return None
        raw = self.headers.get("Content-Length")
        if raw is None:
            self._refuse_body(411, "INVALID_ARGUMENT", "Content-Length is required")
            return None
        try:
            length = int(raw)
            if length < 0:
                raise ValueError(raw)
        except ValueError:
            self._refuse_body(400, "INVALID_ARGUMENT", f"bad Content-Length {raw!r}")
            return None
        if length > limit:
            self._refuse_body(
                413, "RESOURCE_EXHAUSTED", f"body of {length} bytes is over the limit of {limit}"
            )
            return None
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            return None
        return body


class HttpApi:
    """The HTTP/JSON endpoints over ``calls``, bound to ``host:port`` (0: any free port) on construction.

    ``ready()`` returns (ready, report) for ``GET /health/ready``. Call :meth:`start`, then :meth:`stop`.
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
    ) -> None:
        from online_feature_store.server.calls import METHODS

        self.calls = calls
        self.ready = ready
        self.max_body_bytes = max_body_bytes
        self.methods = {path: _json_method(METHODS[r.grpc_method], r) for path, r in _routes().items()}
        self._server = _Server((host, port), self, reuse_port)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port."""
        return self._server.server_port

    def start(self) -> None:
        """Accepts connections from a background thread."""
        # A short poll interval bounds how long stop() waits for the accept loop to notice.
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.1,), name="ofs-http-accept", daemon=True
        )
        self._thread.start()

    def stop(self, grace: float) -> None:
        """Stops accepting, lets requests in flight finish within ``grace`` seconds, closes the rest."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
        self._server.drain(grace)
