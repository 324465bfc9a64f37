"""The compiled serving front of ``ofs serve`` (issue #18): the gRPC API served by the native extension
(``_native.Front``: tonic/hyper on the core's tokio runtime), with Python in charge of it.

Python builds the front, hands it each compiled registry revision and its callers (the auth policy stays
:class:`~online_feature_store.server.calls.Calls`'s: the front checks ``hmac-sha256$`` token hashes
itself), sets its health and starts and drains it. A retrieve whose tiers are all native is answered
without entering Python; every other call (a persist, a retrieve through a tier the core cannot call, a
caller whose token hash is a legacy scrypt one) comes back here, to :meth:`Calls.run`, at most
``threads`` at once. :class:`NativeServer` (start, stop with a drain) and :class:`NativeHealth` are what
:mod:`.app` drives.

:class:`NativeHttp` serves the HTTP/JSON API on the same front (hyper's HTTP/1.1 server, its own port
``http_port``): the JSON is converted natively, then each call takes the gRPC call's path (a native
retrieve without Python, anything else through :meth:`Calls.run`), counted as ``http:<RPC name>``; only
``GET /health/ready`` calls back into Python (:func:`~.app.readiness`).

The calls the front answers natively are counted in the same metrics, off the request path: the front
adds each one to totals per label set in native memory, and :meth:`NativeServer.count_calls` hands the
totals to :class:`~online_feature_store.server.metrics.ServerMetrics` once a second and before each
scrape. With ``tls=(cert_file, key_file)`` the port takes TLS only (rustls, ALPN ``h2``), each connection's
handshake in its own task and bounded in time; a certificate or key the front cannot use is an
:class:`~online_feature_store.errors.InvalidInputError` naming the file, before anything is bound.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2

from online_feature_store import contract, errors
from online_feature_store._native import ERROR_CLASSES, Front
from online_feature_store.feature_store import FeatureStore
from online_feature_store.registry.snapshot import Snapshot
from online_feature_store.server.calls import METHODS, CallError, Calls
from online_feature_store.server.http import (
    LINGER_BYTES,
    LINGER_SECONDS,
    MAX_HEAD_BYTES,
    HttpLimits,
    http_method,
    http_statuses,
)
from online_feature_store.server.metrics import (
    ANONYMOUS,
    LATENCY_BUCKETS,
    ROWS_BUCKETS,
    UNKNOWN,
    ServerMetrics,
)

__all__ = ["NativeHealth", "NativeHttp", "NativeServer", "descriptor_set", "status_codes"]

_METHODS = {**METHODS, **{m.name: m for m in map(http_method, METHODS.values())}}
"""The methods a call handed back may name: the gRPC ones, and the HTTP API's (``http:<RPC name>``)."""


def status_codes() -> dict[str, int]:
    """Error class name → gRPC code, for every class a core error can become: the contract's table
    (:data:`~online_feature_store.contract.STATUS_OF`), so the front maps errors as :class:`Calls` does."""
    out = {}
    for name in ERROR_CLASSES:
        status = contract.status_of(getattr(errors, name)("")) or "INTERNAL"
        out[name] = grpc.StatusCode[status].value[0]
    return out


def descriptor_set() -> bytes:
    """The encoded ``FileDescriptorSet`` of ``retrieve.proto`` and ``persist.proto`` (the modules
    ``scripts/gen-proto`` generated from ``proto/``), for the front's reflection service."""
    from online_feature_store._proto import persist_pb2, retrieve_pb2

    files = [
        descriptor_pb2.FileDescriptorProto.FromString(m.DESCRIPTOR.serialized_pb)
        for m in (retrieve_pb2, persist_pb2)
    ]
    return descriptor_pb2.FileDescriptorSet(file=files).SerializeToString()


def _callers(snapshot: Snapshot) -> list[tuple[str, str, str]]:
    return [(c.id, c.role, c.token_hash) for c in snapshot.callers.values()]


class _Stopped:
    """What ``stop`` returns: ``wait()`` until the drain is over (as grpc's ``Server.stop``)."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self.drained = True

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)


class NativeServer:
    """The native front for ``fs``, bound to ``host:port``: ``start``, then ``stop(grace)``."""

    def __init__(
        self,
        fs: FeatureStore,
        calls: Calls,
        *,
        host: str,
        port: int,
        auth: bool,
        max_message_bytes: int,
        threads: int,
        reuse_port: bool,
        metrics: ServerMetrics | None = None,
        tls: tuple[str, str] | None = None,
    ) -> None:
        self._fs = fs
        self._metrics = metrics
        tiers = fs.native_tiers()
        self.front = Front(
            host,
            port,
            fallback=self._slow_call,
            statuses=status_codes(),
            descriptors=descriptor_set(),
            caller_header=contract.CALLER_HEADER,
            token_header=contract.TOKEN_HEADER,
            tiers=tiers,
            auth=auth,
            limits=fs.limits,
            max_message_bytes=max_message_bytes,
            threads=threads,
            reuse_port=reuse_port,
            caller_labels=None if metrics is None else (ANONYMOUS, UNKNOWN),
            latency_buckets=list(LATENCY_BUCKETS),
            rows_buckets=list(ROWS_BUCKETS),
            tls_cert_file=None if tls is None else tls[0],
            tls_key_file=None if tls is None else tls[1],
        )
        self.port = self.front.port
        self._count_lock = threading.Lock()
        if metrics is not None:
            metrics.before_collect.append(self.count_calls)
        self._calls = calls
        self._stop_events = threading.Event()
        self._serve(fs.snapshot)

    def _serve(self, snapshot: Snapshot) -> None:
        self.front.set_serving(self._fs.catalog(snapshot), _callers(snapshot))

    def _slow_call(
        self, method: str, request: bytes, metadata: list[tuple[str, str]], time_left: float | None, peer: str
    ) -> tuple[int, bytes | str]:
        """A call the front hands back: :meth:`Calls.run` with the call's deadline and metadata."""
        deadline = None if time_left is None else time.monotonic() + time_left
        try:
            return 0, self._calls.run(_METHODS[method], request, dict(metadata), deadline=deadline, peer=peer)
        except CallError as err:
            return err.code.value[0], err.message

    def start(self) -> None:
        """Starts accepting calls; from now on each new registry revision is handed to the front."""
        self._fs.on_revision(self._serve)
        self._serve(self._fs.snapshot)  # a revision that arrived before the hook
        self.front.start()
        threading.Thread(target=self._drain_events, name="ofs-front-events", daemon=True).start()

    def _drain_events(self) -> None:
        # What the distributed cache queues during native reads (errors, breaker changes) is reported
        # by the metrics hooks, as after each native read in the library; so are the calls the
        # front answered (a scrape also takes them first: ServerMetrics.before_collect).
        while not self._stop_events.wait(1.0):
            self._fs.native_read_done()
            self.count_calls()

    def count_calls(self) -> None:
        """Adds what the front counted natively since the last time to the metrics (once a second and on
        each scrape). The front keeps totals per label set, so this costs per label set, not per call."""
        metrics = self._metrics
        if metrics is None:
            return
        with self._count_lock:  # one taker at a time
            totals = self.front.take_metrics()
            if totals is not None:
                metrics.add_native(totals)

    def stop(self, grace: float | None) -> _Stopped:
        """Stops accepting and drains the calls in flight for up to ``grace`` seconds, in the
        background; the returned object's ``wait()`` returns once that is over."""
        stopped = _Stopped()

        def run() -> None:
            try:
                stopped.drained = self.front.stop(grace or 0.0)
            finally:
                self._fs.on_revision(self._serve, remove=True)
                self.count_calls()
                if self._metrics is not None:
                    self._metrics.before_collect.remove(self.count_calls)
                self._stop_events.set()
                stopped._done.set()

        threading.Thread(target=run, name="ofs-front-stop", daemon=True).start()
        return stopped


class NativeHttp:
    """The HTTP/JSON API on ``server``'s front, bound to ``host:port`` (0: any free port) on
    construction; ``start``, then ``stop(grace)`` (``server.stop`` drains it too). ``ready()`` answers
    ``GET /health/ready``."""

    def __init__(
        self,
        server: NativeServer,
        host: str,
        port: int,
        *,
        ready: Callable[[], tuple[bool, dict[str, Any]]],
        max_body_bytes: int,
        reuse_port: bool = False,
        limits: HttpLimits | None = None,
    ) -> None:
        limits = limits or HttpLimits()
        self._front = server.front

        def report() -> tuple[bool, bytes]:
            ok, body = ready()
            return ok, json.dumps(body).encode()

        self.port = self._front.bind_http(
            host,
            port,
            ready=report,
            statuses=http_statuses(),
            max_body_bytes=max_body_bytes,
            header_timeout=limits.header_timeout,
            idle_timeout=limits.idle_timeout,
            max_connections_per_peer=limits.max_connections_per_peer,
            max_head_bytes=MAX_HEAD_BYTES,
            linger_bytes=LINGER_BYTES,
            linger_seconds=LINGER_SECONDS,
            reuse_port=reuse_port,
        )

    def start(self) -> None:
        """Starts accepting connections."""
        self._front.start_http()

    def stop(self, grace: float) -> None:
        """Stops accepting, closes idle connections and lets requests in flight finish within ``grace``."""
        self._front.stop_http(grace)


class NativeHealth:
    """The front's gRPC health (``tonic-health``), set as :mod:`.app` sets grpc_health's servicer."""

    def __init__(self, front: Front, names: tuple[str, ...]) -> None:
        self._front = front
        self._names = names

    def set(self, service: str, status: int) -> None:
        self._front.set_health(service, status == health_pb2.HealthCheckResponse.SERVING)

    def enter_graceful_shutdown(self) -> None:
        """Every service NOT_SERVING (what grpc_health does on a graceful shutdown)."""
        for name in self._names:
            self._front.set_health(name, False)
