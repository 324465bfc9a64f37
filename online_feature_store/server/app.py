"""The gRPC API server: ``retrieve.FeatureService`` and ``persist.FeatureService`` (wire-compatible with the
reference), health and reflection.

Handlers take and return raw bytes: the request goes to the native core as it arrived and the response
bytes it builds go back out, so no protobuf object is made per feature value. Feature-store logic lives
in :class:`~online_feature_store.feature_store.FeatureStore`; this module only maps calls, auth and errors.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from online_feature_store.errors import InvalidInputError, NotFoundError, OfsError, UnavailableError
from online_feature_store.feature_store import FeatureStore
from online_feature_store.registry.tokens import verify_token
from online_feature_store.server.metrics import (
    ANONYMOUS,
    UNKNOWN,
    ServerMetrics,
    serve_metrics,
    stop_metrics,
)

__all__ = ["STATUS_OF", "ServerConfig", "build_server"]

log = logging.getLogger("online_feature_store.server")

CALLER_HEADER = "online-feature-store-caller-id"
TOKEN_HEADER = "online-feature-store-auth-token"

RETRIEVE_SERVICE = "retrieve.FeatureService"
PERSIST_SERVICE = "persist.FeatureService"

STATUS_OF: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (InvalidInputError, grpc.StatusCode.INVALID_ARGUMENT),
    (UnavailableError, grpc.StatusCode.UNAVAILABLE),
    (OfsError, grpc.StatusCode.INTERNAL),
)
"""The one mapping from library errors to gRPC status codes (first match wins)."""


@dataclass(frozen=True)
class ServerConfig:
    """Settings of one server process."""

    host: str = "127.0.0.1"
    port: int = 8089
    auth: bool = False
    threads: int = 16
    max_message_bytes: int = 64 * 1024 * 1024
    reuse_port: bool = False
    grace_seconds: float = 10.0
    metrics_port: int = 9090
    """Prometheus ``/metrics`` HTTP port (0: no metrics)."""


class _DeniedError(Exception):
    """An auth failure, answered with ``code``."""

    def __init__(self, code: grpc.StatusCode, message: str, caller: str) -> None:
        super().__init__(message)
        self.code = code
        self.caller = caller


class _Handlers:
    def __init__(self, fs: FeatureStore, config: ServerConfig, metrics: ServerMetrics | None) -> None:
        self.fs = fs
        self.config = config
        self.metrics = metrics

    def _authorize(self, context: grpc.ServicerContext, role: str) -> str:
        """The caller's metrics label (a registry caller id, ``anonymous`` or ``unknown``); raises
        :class:`_DeniedError` when auth is on and the call may not go ahead."""
        md = dict(context.invocation_metadata())
        caller_id, token = md.get(CALLER_HEADER), md.get(TOKEN_HEADER)
        caller = self.fs.snapshot.callers.get(str(caller_id)) if caller_id else None
        label = ANONYMOUS if not caller_id else caller.id if caller is not None else UNKNOWN
        if not self.config.auth:
            return label
        if not caller_id or not token:
            raise _DeniedError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"metadata {CALLER_HEADER!r} and {TOKEN_HEADER!r} are required",
                label,
            )
        if caller is None or not verify_token(str(token), caller.token_hash):
            raise _DeniedError(
                grpc.StatusCode.UNAUTHENTICATED, f"unknown caller or bad token for {caller_id!r}", label
            )
        if caller.role != role:
            raise _DeniedError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"caller {caller_id!r} is a {caller.role}, not a {role}",
                label,
            )
        return label

    def _call(
        self, method: str, role: str, fn: Callable[[bytes], bytes]
    ) -> Callable[[bytes, grpc.ServicerContext], bytes]:
        def handler(request: bytes, context: grpc.ServicerContext) -> bytes:
            metrics = self.metrics
            started = time.perf_counter()
            if metrics is not None:
                metrics.begin()
            # Anything escaping the except clauses below (a BaseException) is counted as INTERNAL.
            caller, code, message = ANONYMOUS, grpc.StatusCode.INTERNAL, "internal error"
            try:
                caller = self._authorize(context, role)
                reply = fn(request)
                code = grpc.StatusCode.OK
                return reply
            except _DeniedError as denied:
                caller, code, message = denied.caller, denied.code, str(denied)
            except Exception as exc:
                code, message = _status_of(exc)
            finally:
                if metrics is not None:
                    metrics.finish(method, caller, code.name, time.perf_counter() - started)
            context.abort(code, message)
            raise AssertionError("unreachable")  # context.abort raises

        return handler

    def persist(self, request: bytes) -> bytes:
        from online_feature_store._proto import persist_pb2

        self.fs.persist_wire(request)
        reply: bytes = persist_pb2.Result(message="Data Persisted Successfully").SerializeToString()
        return reply

    def generic(self) -> list[grpc.GenericRpcHandler]:
        raw: dict[str, Any] = {"request_deserializer": None, "response_serializer": None}
        retrieve = grpc.method_handlers_generic_handler(
            RETRIEVE_SERVICE,
            {
                "RetrieveFeatures": grpc.unary_unary_rpc_method_handler(
                    self._call("RetrieveFeatures", "reader", self.fs.retrieve_wire), **raw
                ),
                "RetrieveDecodedResult": grpc.unary_unary_rpc_method_handler(
                    self._call(
                        "RetrieveDecodedResult", "reader", lambda q: self.fs.retrieve_wire(q, decoded=True)
                    ),
                    **raw,
                ),
            },
        )
        persist = grpc.method_handlers_generic_handler(
            PERSIST_SERVICE,
            {
                "PersistFeatures": grpc.unary_unary_rpc_method_handler(
                    self._call("PersistFeatures", "writer", self.persist), **raw
                )
            },
        )
        return [retrieve, persist]


def _status_of(exc: Exception) -> tuple[grpc.StatusCode, str]:
    for cls, code in STATUS_OF:
        if isinstance(exc, cls):
            return code, str(exc)
    log.exception("unexpected error")
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}"


def build_server(
    fs: FeatureStore, config: ServerConfig, metrics: ServerMetrics | None = None
) -> tuple[grpc.Server, int, health.HealthServicer]:
    """A started-but-not-serving server bound to ``config.host:config.port`` (0 = any free port).
    Returns the server, the bound port and its health servicer (SERVING once the stores answer).
    With ``metrics``, calls are counted there and ``fs`` reports its store calls to it too."""
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.so_reuseport", 1 if config.reuse_port else 0),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=config.threads), options=options)
    if metrics is not None:
        fs.metrics = metrics
    handlers = _Handlers(fs, config, metrics)
    server.add_generic_rpc_handlers(handlers.generic())
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    from online_feature_store._proto import persist_pb2, retrieve_pb2

    names = (
        retrieve_pb2.DESCRIPTOR.services_by_name["FeatureService"].full_name,
        persist_pb2.DESCRIPTOR.services_by_name["FeatureService"].full_name,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    )
    reflection.enable_server_reflection(names, server)
    port = server.add_insecure_port(f"{config.host}:{config.port}")
    if port == 0:
        raise UnavailableError(f"cannot bind {config.host}:{config.port}")
    for name in ("", RETRIEVE_SERVICE, PERSIST_SERVICE):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    return server, port, health_servicer


def mark_serving(fs: FeatureStore, health_servicer: health.HealthServicer) -> None:
    """SERVING once the registry is loaded and every store answers a ping."""
    snapshot = fs.snapshot
    for store_id in snapshot.stores:
        fs.store(store_id).ping()
    for name in ("", RETRIEVE_SERVICE, PERSIST_SERVICE):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)


def serve_forever(
    fs: FeatureStore, config: ServerConfig, stop: threading.Event, *, metrics_http: bool = True
) -> None:
    """Runs one server until ``stop`` is set, then drains in-flight calls within the grace period.
    With ``config.metrics_port``, metrics are recorded, and served on that port when ``metrics_http``
    (a worker of ``--workers N`` leaves that to its parent)."""
    metrics = ServerMetrics() if config.metrics_port else None
    server, port, health_servicer = build_server(fs, config, metrics)
    httpd = None
    if metrics is not None:
        # The registry watch keeps serving the last good snapshot when the registry fails (the health
        # service stays SERVING); the ofs_registry_healthy gauge is where that shows.
        metrics.watch_registry(fs, stop)
        if metrics_http:
            httpd, metrics_port = serve_metrics(metrics.registry, config.host, config.metrics_port)
            log.info("metrics on http://%s:%d/metrics", config.host, metrics_port)
    server.start()
    mark_serving(fs, health_servicer)
    log.info("serving on %s:%d", config.host, port)
    stop.wait()
    health_servicer.enter_graceful_shutdown()
    server.stop(config.grace_seconds).wait()
    if httpd is not None:
        stop_metrics(httpd)
