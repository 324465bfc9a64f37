"""The API server: ``retrieve.FeatureService`` and ``persist.FeatureService`` (wire-compatible with the
reference), health and reflection, and the optional HTTP/JSON endpoints next to it.

The gRPC API is served by the compiled front (:mod:`.native_front`, issue #18): a retrieve through native
tiers is parsed, read and answered in the core without entering Python; every other call comes back to
:class:`~.calls.Calls` (auth, deadlines and the error table, shared with HTTP), and feature-store logic
lives in :class:`~online_feature_store.feature_store.FeatureStore`. This module is what ``ofs serve``
runs: settings, building, health, readiness, the drain.

Health: the overall service ``""`` and the two API services turn SERVING once the registry is loaded and
every store answers. :data:`REGISTRY_SERVICE` follows the registry: NOT_SERVING while it cannot be reached
(the last good snapshot is still served, so ``""`` stays SERVING), SERVING again once it answers.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grpc_health.v1 import health_pb2
from prometheus_client import CollectorRegistry

from online_feature_store._ports import bind_error, check_free, moved_by
from online_feature_store.contract import PERSIST_SERVICE, RETRIEVE_SERVICE
from online_feature_store.errors import InvalidInputError
from online_feature_store.feature_store import FeatureStore
from online_feature_store.limits import (
    DEFAULT_MAX_KEYS_PER_REQUEST,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_ROWS_PER_PERSIST,
    make_limits,
)
from online_feature_store.server.calls import STATUS_OF, Calls, DeadlineExceededError
from online_feature_store.server.metrics import ServerMetrics, serve_metrics, stop_metrics
from online_feature_store.server.native_front import NativeHealth, NativeHttp, NativeServer
from online_feature_store.settings import Settings, env_names, setting

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

__all__ = [
    "PORTS",
    "REGISTRY_SERVICE",
    "STATUS_OF",
    "DeadlineExceededError",
    "ServerConfig",
    "build_server",
    "exposure_warning",
    "mark_serving",
    "port_hint",
    "readiness",
    "serve_forever",
    "serve_metrics_on",
    "watch_health",
]

log = logging.getLogger("online_feature_store.server")

REGISTRY_SERVICE = "online_feature_store.registry"
"""Health service name that is SERVING while the registry answers, NOT_SERVING while it cannot be reached."""


HEALTH_NAMES = ("", RETRIEVE_SERVICE, PERSIST_SERVICE, REGISTRY_SERVICE)
"""The health services a server reports."""

ENV_PREFIX = "OFS_"
"""``ofs serve``'s environment variables are ``OFS_<NAME>``."""


@dataclass(frozen=True)
class ServerConfig(Settings):
    """Settings of one server process (``ofs serve``; the environment variable of each is ``OFS_<NAME>``)."""

    host: str = setting(
        "127.0.0.1",
        doc="address the gRPC, HTTP and metrics servers bind (`0.0.0.0` in a container)",
    )
    port: int = setting(8089, doc="gRPC port")
    auth: bool = setting(
        False,
        doc="require `online-feature-store-caller-id` and `online-feature-store-auth-token` metadata; "
        "readers may only retrieve, writers only persist",
    )
    io_threads: int = setting(
        0,
        shown_default="`0` (auto)",
        doc="threads per process of the compiled front and the store clients (the core's tokio runtime): "
        "every retrieve and persist through native tiers runs on them. `0`: the CPUs the process may use "
        "(its affinity and cgroup quota) divided by `workers`, at least 1",
    )
    threads: int = setting(
        4,
        doc="calls in Python at once per process and transport (gRPC, HTTP): retrieves and persists "
        "through a tier the core cannot call. They share one GIL: keep it small and add `workers` "
        "instead; raise it only when most such calls wait on a slow store",
    )
    max_message_bytes: int = setting(
        DEFAULT_MAX_MESSAGE_BYTES,
        doc="largest request and response (64 MiB). A retrieve whose response is estimated over it "
        "(keys times the largest row the schema allows) is refused with `RESOURCE_EXHAUSTED` before "
        "any store read; a persist is refused once the blocks it builds pass it "
        "([serving.md](serving.md#limits))",
    )
    max_keys_per_request: int = setting(
        DEFAULT_MAX_KEYS_PER_REQUEST,
        doc="keys one retrieve may ask for, counted before the request is decoded (`RESOURCE_EXHAUSTED` "
        "beyond); the `Client` splits longer key lists into batches of `batch_size` (500)",
    )
    max_rows_per_persist: int = setting(
        DEFAULT_MAX_ROWS_PER_PERSIST,
        doc="rows one persist may write, counted before the request is decoded; the producer SDK "
        "(`ingest.pack`) packs at most this many per message",
    )
    reuse_port: bool = setting(False, public=False)
    """``SO_REUSEPORT``: set by ``--workers`` for the processes sharing the port."""
    grace_seconds: float = setting(10.0, doc="on SIGTERM, how long in-flight calls may finish")
    metrics_port: int = setting(9090, doc="Prometheus `/metrics` on `host`; `0` turns metrics off")
    http_port: int = setting(
        0,
        shown_default="`0` (off)",
        doc="HTTP/JSON API (`/api/v1/features/retrieve`, `…/retrieve/decoded`, `…/persist`, `/health/self`, "
        "`/health/ready`)",
    )
    http_header_timeout_seconds: float = setting(
        10.0,
        doc="HTTP: a request's line and headers must arrive within this of the connection's opening or "
        "the request's first byte, and its body within as long again; past it `408` and the connection "
        "is closed ([serving.md](serving.md#http-limits))",
    )
    http_idle_timeout_seconds: float = setting(
        60.0,
        doc="HTTP: a kept-alive connection waiting longer for its next request is closed",
    )
    http_max_connections_per_peer: int = setting(
        64,
        doc="HTTP: open connections per client address; one more is answered `429` and closed. `0`: no cap "
        "(behind a proxy, whose few addresses carry every client)",
    )
    tls_cert_file: str = setting(
        "",
        shown_default="unset",
        doc="PEM certificate chain; with `tls_key_file` the gRPC port takes TLS only (the client's "
        "`root_certificates=`). Half a pair or an unreadable file is an error at start-up",
    )
    tls_key_file: str = setting("", shown_default="unset", doc="PEM private key of `tls_cert_file`")


def _tls_pems(config: ServerConfig) -> tuple[bytes, bytes] | None:
    """The PEM private key and certificate chain of ``tls_key_file`` / ``tls_cert_file``, None for
    plaintext. Half a pair or an unreadable file is an error naming the setting, on either front, before
    anything is bound."""
    if not config.tls_cert_file and not config.tls_key_file:
        return None
    if not (config.tls_cert_file and config.tls_key_file):
        raise InvalidInputError("tls_cert_file and tls_key_file go together: set both or neither")
    pems = []
    for name, path in (("tls_key_file", config.tls_key_file), ("tls_cert_file", config.tls_cert_file)):
        try:
            pems.append(Path(path).read_bytes())
        except OSError as exc:
            raise InvalidInputError(f"{name}: cannot read {path!r}: {exc.strerror}") from None
    return pems[0], pems[1]


def build_server(
    fs: FeatureStore, config: ServerConfig, metrics: ServerMetrics | None = None
) -> tuple[NativeServer, int, NativeHealth]:
    """A started-but-not-serving server bound to ``config.host:config.port`` (0 = any free port): the
    compiled front (:mod:`.native_front`) with the calls it hands back to Python (:class:`Calls`), the
    limits and health. Returns the server, the bound port and its health servicer (SERVING once the
    stores answer). With ``metrics``, calls are counted there and ``fs`` reports its store calls to it
    too."""
    calls = Calls(fs, auth=config.auth, metrics=metrics)
    # The server's limits are the FeatureStore's: every call goes through fs.retrieve_wire / persist_wire.
    fs.limits = make_limits(
        config.max_keys_per_request, config.max_rows_per_persist, config.max_message_bytes
    )
    # The front reads and parses the TLS files itself (a bad certificate or key: InvalidInputError naming
    # the file); half a pair or an unreadable file is refused first.
    tls = _tls_pems(config) is not None
    if not config.reuse_port:
        check_free(config.host, config.port, *port_hint("port"))
    try:
        server = NativeServer(
            fs,
            calls,
            host=config.host,
            port=config.port,
            auth=config.auth,
            max_message_bytes=config.max_message_bytes,
            threads=config.threads,
            reuse_port=config.reuse_port,
            metrics=metrics,
            tls=(config.tls_cert_file, config.tls_key_file) if tls else None,
        )
    except OSError as exc:
        raise bind_error(exc, config.host, config.port, *port_hint("port")) from None
    health_servicer = NativeHealth(server.front, HEALTH_NAMES)
    for name in HEALTH_NAMES:
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    return server, server.port, health_servicer


PORTS = {"port": "gRPC", "http_port": "HTTP API", "metrics_port": "metrics"}
"""The ports of :class:`ServerConfig`, by setting name, and what each serves."""


def port_hint(name: str) -> tuple[str, str]:
    """``(what, how)`` of the port setting ``name`` for :mod:`online_feature_store._ports`: what it
    serves, and the flag, environment variable and setting that move it."""
    how = moved_by("--" + name.replace("_", "-"), env_names((ServerConfig,), ENV_PREFIX)[name], name)
    return PORTS[name], how + (" (0: no metrics)" if name == "metrics_port" else "")


def serve_metrics_on(registry: CollectorRegistry, config: ServerConfig) -> tuple[WSGIServer, int]:
    """:func:`~online_feature_store.server.metrics.serve_metrics` on ``config``'s host and metrics port;
    a taken port is a :class:`~online_feature_store.errors.PortInUseError` naming the setting."""
    try:
        return serve_metrics(registry, config.host, config.metrics_port)
    except OSError as exc:
        raise bind_error(exc, config.host, config.metrics_port, *port_hint("metrics_port")) from None


def mark_serving(fs: FeatureStore, health_servicer: NativeHealth) -> None:
    """SERVING once the registry is loaded and every store answers a ping."""
    snapshot = fs.snapshot
    for store_id in snapshot.stores:
        fs.store(store_id).ping()
    for name in ("", RETRIEVE_SERVICE, PERSIST_SERVICE):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    _set_registry_health(fs, health_servicer)


def _set_registry_health(fs: FeatureStore, health_servicer: NativeHealth) -> bool:
    healthy = fs.registry_healthy
    status = health_pb2.HealthCheckResponse.SERVING if healthy else health_pb2.HealthCheckResponse.NOT_SERVING
    health_servicer.set(REGISTRY_SERVICE, status)
    return healthy


def watch_health(
    fs: FeatureStore,
    health_servicer: NativeHealth,
    metrics: ServerMetrics | None,
    stop: threading.Event,
    interval: float = 1.0,
) -> threading.Thread:
    """Every ``interval`` seconds until ``stop``: :data:`REGISTRY_SERVICE`'s health and the registry gauges
    follow ``fs``'s registry watch (logged when it changes)."""

    def run() -> None:
        was = True
        while True:
            healthy = _set_registry_health(fs, health_servicer)
            if metrics is not None:
                metrics.refresh_registry(fs)
            if healthy != was:
                if healthy:
                    log.info("registry reachable again (revision %d)", fs.snapshot.revision)
                else:
                    log.warning(
                        "registry unreachable: serving the last good snapshot (revision %d)",
                        fs.snapshot.revision,
                    )
                was = healthy
            if stop.wait(interval):
                return

    thread = threading.Thread(target=run, name="ofs-health", daemon=True)
    thread.start()
    return thread


def exposure_warning(config: ServerConfig, http_port: int = 0) -> str | None:
    """The warning for a server without auth bound to an address other hosts can reach, else None.

    ``host`` is loopback when it is a loopback address or a name that resolves only to such addresses;
    ``0.0.0.0``, ``::``, an empty host and a name that does not resolve count as reachable."""
    if config.auth or _is_loopback(config.host):
        return None
    ports = f"port {config.port} (gRPC)" + (f" and port {http_port} (HTTP)" if http_port else "")
    return (
        f"serving on {config.host or 'every address'} without auth: anyone who can reach {ports} can read "
        "and write every feature; turn auth on (--auth, OFS_AUTH) or bind a loopback address "
        "(docs/serving.md#auth)"
    )


def _is_loopback(host: str) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def readiness(
    fs: FeatureStore, draining: bool = False, warnings: Sequence[str] = ()
) -> tuple[bool, dict[str, Any]]:
    """(ready, report) for ``GET /health/ready``: ready while not draining and every store answers a ping.
    An unreachable registry is reported but does not make the server unready: the last good snapshot is
    still served, and taking every replica out of rotation during a registry outage would turn it into a
    full outage. ``warnings`` (e.g. :func:`exposure_warning`) are reported as they are."""
    snapshot = fs.snapshot
    stores: dict[str, Any] = {}
    for store_id in sorted(snapshot.stores):
        try:
            fs.store(store_id).ping()
            stores[store_id] = {"reachable": True}
        except Exception as exc:  # reported, not raised: this is the report of what is down
            stores[store_id] = {"reachable": False, "error": f"{type(exc).__name__}: {exc}"}
    ready = not draining and all(s["reachable"] for s in stores.values())
    report = {
        "ready": ready,
        "draining": draining,
        "registry": {"healthy": fs.registry_healthy, "revision": snapshot.revision},
        "stores": stores,
        "warnings": list(warnings),
    }
    return ready, report


def serve_forever(
    fs: FeatureStore, config: ServerConfig, stop: threading.Event, *, metrics_http: bool = True
) -> None:
    """Runs one server until ``stop`` is set, then drains in-flight calls within the grace period.
    With ``config.metrics_port``, metrics are recorded, and served on that port when ``metrics_http``
    (a worker of ``--workers N`` leaves that to its parent). With ``config.http_port``, the HTTP/JSON API
    is served on that port too, by the front itself (:class:`~.native_front.NativeHttp`)."""
    from online_feature_store.server.http import HttpLimits

    metrics = ServerMetrics() if config.metrics_port else None
    server, port, health_servicer = build_server(fs, config, metrics)
    draining = threading.Event()
    exposed = exposure_warning(replace(config, port=port), config.http_port)
    warnings = [exposed] if exposed else []
    if exposed:
        log.warning(exposed)
    if metrics is not None:
        metrics.unauthenticated_exposure.set(1 if exposed else 0)
    http_api = None
    if config.http_port:
        try:
            http_api = NativeHttp(
                server,
                config.host,
                config.http_port,
                ready=lambda: readiness(fs, draining.is_set(), warnings),
                max_body_bytes=config.max_message_bytes,
                reuse_port=config.reuse_port,
                limits=HttpLimits.from_config(config),
            )
        except OSError as exc:
            raise bind_error(exc, config.host, config.http_port, *port_hint("http_port")) from None
    httpd = None
    if metrics is not None and metrics_http:
        httpd, metrics_port = serve_metrics_on(metrics.registry, config)
        log.info("metrics on http://%s:%d/metrics", config.host, metrics_port)
    server.start()
    mark_serving(fs, health_servicer)
    watch_health(fs, health_servicer, metrics, stop)
    if http_api is not None:
        http_api.start()
        log.info("HTTP API on http://%s:%d", config.host, http_api.port)
    log.info("serving on %s:%d", config.host, port)
    stop.wait()
    log.info("stopping: draining calls in flight (up to %.0f s)", config.grace_seconds)
    draining.set()
    health_servicer.enter_graceful_shutdown()
    stopped = server.stop(config.grace_seconds)
    if http_api is not None:
        http_api.stop(config.grace_seconds)
    # The front's drain returns once the calls it handed to Python are done too (after the grace period
    # it cuts its connections, but waits for those): the caller never closes the stores under a call.
    stopped.wait()
    if httpd is not None:
        stop_metrics(httpd)
