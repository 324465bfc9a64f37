"""The gRPC API server: ``retrieve.FeatureService`` and ``persist.FeatureService`` (wire-compatible with the
reference), health and reflection.

Handlers take and return raw bytes: the request goes to the native core as it arrived and the response
bytes it builds go back out, so no protobuf object is made per feature value. Feature-store logic lives
in :class:`~online_feature_store.feature_store.FeatureStore`; this module only maps calls, auth and errors.
"""

from __future__ import annotations

import logging
import threading
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


class _Handlers:
    def __init__(self, fs: FeatureStore, config: ServerConfig) -> None:
        self.fs = fs
        self.config = config

    def _authorize(self, context: grpc.ServicerContext, role: str) -> None:
        if not self.config.auth:
            return
        md = dict(context.invocation_metadata())
        caller_id, token = md.get(CALLER_HEADER), md.get(TOKEN_HEADER)
        if not caller_id or not token:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"metadata {CALLER_HEADER!r} and {TOKEN_HEADER!r} are required",
            )
        caller = self.fs.snapshot.callers.get(str(caller_id))
        if caller is None or not verify_token(str(token), caller.token_hash):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, f"unknown caller or bad token for {caller_id!r}")
            return
        if caller.role != role:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED, f"caller {caller_id!r} is a {caller.role}, not a {role}"
            )

    def _call(
        self, role: str, fn: Callable[[bytes], bytes]
    ) -> Callable[[bytes, grpc.ServicerContext], bytes]:
        def handler(request: bytes, context: grpc.ServicerContext) -> bytes:
            self._authorize(context, role)
            try:
                return fn(request)
            except Exception as exc:
                for cls, code in STATUS_OF:
                    if isinstance(exc, cls):
                        context.abort(code, str(exc))
                log.exception("unexpected error")
                context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")
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
                    self._call("reader", self.fs.retrieve_wire), **raw
                ),
                "RetrieveDecodedResult": grpc.unary_unary_rpc_method_handler(
                    self._call("reader", lambda q: self.fs.retrieve_wire(q, decoded=True)), **raw
                ),
            },
        )
        persist = grpc.method_handlers_generic_handler(
            PERSIST_SERVICE,
            {
                "PersistFeatures": grpc.unary_unary_rpc_method_handler(
                    self._call("writer", self.persist), **raw
                )
            },
        )
        return [retrieve, persist]


def build_server(fs: FeatureStore, config: ServerConfig) -> tuple[grpc.Server, int, health.HealthServicer]:
    """A started-but-not-serving server bound to ``config.host:config.port`` (0 = any free port).
    Returns the server, the bound port and its health servicer (SERVING once the stores answer)."""
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.so_reuseport", 1 if config.reuse_port else 0),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=config.threads), options=options)
    handlers = _Handlers(fs, config)
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


def serve_forever(fs: FeatureStore, config: ServerConfig, stop: threading.Event) -> None:
    """Runs one server until ``stop`` is set, then drains in-flight calls within the grace period."""
    server, port, health_servicer = build_server(fs, config)
    server.start()
    mark_serving(fs, health_servicer)
    log.info("serving on %s:%d", config.host, port)
    stop.wait()
    health_servicer.enter_graceful_shutdown()
    server.stop(config.grace_seconds).wait()
