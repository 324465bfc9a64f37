"""Prometheus metrics of the server: requests, latencies, rows, feature validity, stores and the registry.

One :class:`ServerMetrics` per server process. It is also the :class:`FeatureStoreMetrics` hook object of
that process's :class:`FeatureStore`, which reports the entity and row count of each request (kept per
handler thread until the handler finishes), store call timings and feature validity.

With ``--workers N`` each worker writes its samples to files in ``PROMETHEUS_MULTIPROC_DIR``
(prometheus_client's multiprocess mode, chosen when prometheus_client is first imported, so ``ofs serve`` sets
the variable before any worker starts) and the parent serves them summed with
:func:`multiprocess_registry`. A single process serves its own registry.

Caches: ``ofs_cache_lookups`` (hit/miss per tier and entity), ``ofs_cache_errors``, ``ofs_cache_dropped`` and
``ofs_cache_breaker_state`` (0 closed, 1 half-open, 2 open) of the distributed cache (docs/caching.md).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Metric, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from online_feature_store.metrics import FeatureStoreMetrics

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from online_feature_store.feature_store import FeatureStore

__all__ = [
    "BREAKER_STATES",
    "LATENCY_BUCKETS",
    "ROWS_BUCKETS",
    "NativeTotals",
    "ServerMetrics",
    "multiprocess_registry",
    "serve_metrics",
    "stop_metrics",
    "worker_exited",
]

LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
"""Seconds: 50 µs (a cached single-key read) to 1 s (anything slower is an incident anyway)."""

ROWS_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
"""Keys per request."""

BREAKER_STATES = {"closed": 0, "half-open": 1, "open": 2}
"""Values of ``ofs_cache_breaker_state``."""

ANONYMOUS = "anonymous"
"""Caller label of calls without caller metadata."""
UNKNOWN = "unknown"
"""Caller label of calls naming a caller the registry does not know (bounds the label's cardinality)."""


class ServerMetrics(FeatureStoreMetrics):
    """The metrics of one server process, registered in ``registry`` (a fresh one by default, so several
    servers can live in one process, as in the tests)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.before_collect: list[Callable[[], None]] = []
        """Called on each collection before any metric is read (the native front hands over the calls it
        answered since the last one); registered first, so a scrape sees them."""
        r.register(_BeforeCollect(self.before_collect))
        self.requests = Counter(
            "ofs_requests",
            "gRPC calls by method, caller and status code",
            ["method", "caller", "code"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "ofs_request_duration_seconds",
            "gRPC call latency by method",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.entity_seconds = Histogram(
            "ofs_entity_request_duration_seconds",
            "gRPC call latency by method and entity",
            ["method", "entity"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rows = Histogram(
            "ofs_request_rows",
            "keys per call by method and entity",
            ["method", "entity"],
            buckets=ROWS_BUCKETS,
            registry=r,
        )
        self.features = Counter(
            "ofs_feature_rows",
            "retrieved rows per feature group by validity: found (stored), missing or expired (defaults)",
            ["entity", "feature_group", "status"],
            registry=r,
        )
        self.store_seconds = Histogram(
            "ofs_store_duration_seconds",
            "store call latency by store id and operation",
            ["store", "op"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.store_errors = Counter(
            "ofs_store_errors",
            "store calls that raised, by store id and operation",
            ["store", "op"],
            registry=r,
        )
        # Gauges of a dead worker are dropped (mark_process_dead); the revision shown is the newest any
        # live worker serves, and health is 0 as soon as one live worker cannot reach the registry.
        self.registry_revision = Gauge(
            "ofs_registry_revision", "registry revision being served", registry=r, multiprocess_mode="livemax"
        )
        self.registry_healthy = Gauge(
            "ofs_registry_healthy",
            "1 while the registry answers; 0 while the last good snapshot is served from memory",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.unauthenticated_exposure = Gauge(
            "ofs_unauthenticated_exposure",
            "1 while serving a non-loopback address without auth (anyone reaching it may read and write)",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.in_flight = Gauge(
            "ofs_requests_in_flight",
            "calls being handled now",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.cache_lookups = Counter(
            "ofs_cache_lookups",
            "keys looked up per cache tier (in_process, distributed) and entity: hit or miss",
            ["tier", "entity", "result"],
            registry=r,
        )
        self.cache_errors = Counter(
            "ofs_cache_errors",
            "cache calls that failed or were refused by the open breaker (the request used the next tier)",
            ["tier", "op"],
            registry=r,
        )
        self.cache_drops = Counter(
            "ofs_cache_dropped",
            "background cache work dropped: backfills (queue full or too old), invalidations over the bound",
            ["tier", "op"],
            registry=r,
        )
        # the worst worker's state: one open breaker shows as open
        self.cache_breaker_state = Gauge(
            "ofs_cache_breaker_state",
            "circuit breaker of a cache tier: 0 closed, 1 half-open, 2 open",
            ["tier"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self._local = threading.local()
        self._native_in_flight = 0  # the native front's calls in ``in_flight`` (add_native)

    # -- FeatureStore hooks -----------------------------------------------------------------------
    def request(self, entity: str, rows: int) -> None:
        self._local.request = (entity, rows)

    def store_call(self, store_id: str, op: str, seconds: float, failed: bool) -> None:
        self.store_seconds.labels(store_id, op).observe(seconds)
        if failed:
            self.store_errors.labels(store_id, op).inc()

    def feature_status(self, entity: str, feature_group: str, found: int, missing: int, expired: int) -> None:
        for status, n in (("found", found), ("missing", missing), ("expired", expired)):
            if n:
                self.features.labels(entity, feature_group, status).inc(n)

    def cache_lookup(self, tier: str, entity: str, hits: int, misses: int) -> None:
        if hits:
            self.cache_lookups.labels(tier, entity, "hit").inc(hits)
        if misses:
            self.cache_lookups.labels(tier, entity, "miss").inc(misses)

    def cache_error(self, tier: str, op: str) -> None:
        self.cache_errors.labels(tier, op).inc()

    def cache_breaker(self, tier: str, state: str) -> None:
        self.cache_breaker_state.labels(tier).set(BREAKER_STATES.get(state, 2))

    def cache_dropped(self, tier: str, op: str) -> None:
        self.cache_drops.labels(tier, op).inc()

    # -- server hooks -----------------------------------------------------------------------------
    def begin(self) -> None:
        """A handler starts on this thread."""
        self._local.request = None
        self.in_flight.inc()

    def finish(self, method: str, caller: str, code: str, seconds: float) -> None:
        """The handler of this thread ends with gRPC status ``code`` after ``seconds``."""
        self.in_flight.dec()
        self.requests.labels(method, caller, code).inc()
        self.request_seconds.labels(method).observe(seconds)
        planned: tuple[str, int] | None = getattr(self._local, "request", None)
        if planned is not None:
            entity, rows = planned
            self.entity_seconds.labels(method, entity).observe(seconds)
            self.rows.labels(method, entity).observe(rows)
            self._local.request = None

    def add_native(self, totals: NativeTotals) -> None:
        """Adds what the native front counted since it was last asked (``_native.Front.take_metrics``):
        each label set's totals at once, the counters and histograms :class:`Calls` fills per call;
        and the front's calls in flight to ``ofs_requests_in_flight``."""
        calls, seconds, entities, fgs, caches, stores, in_flight = totals
        for method, caller, code, n in calls:
            self.requests.labels(method, caller, _CODE_NAMES.get(code, "UNKNOWN")).inc(n)
        for method, (counts, total) in seconds:
            _add_observations(self.request_seconds.labels(method), counts, total)
        for method, entity, (counts, total), (rows, keys) in entities:
            _add_observations(self.entity_seconds.labels(method, entity), counts, total)
            _add_observations(self.rows.labels(method, entity), rows, keys)
        for entity, fg, found, missing, expired in fgs:
            self.feature_status(entity, fg, found, missing, expired)
        for tier, entity, hits, misses in caches:
            self.cache_lookup(tier, entity, hits, misses)
        for store_id, op, (counts, total), failed in stores:
            _add_observations(self.store_seconds.labels(store_id, op), counts, total)
            if failed:
                self.store_errors.labels(store_id, op).inc(failed)
        self.in_flight.inc(in_flight - self._native_in_flight)
        self._native_in_flight = in_flight

    def refresh_registry(self, fs: FeatureStore) -> None:
        """Sets the registry gauges from ``fs``'s registry watch (the server calls it every second)."""
        self.registry_revision.set(fs.snapshot.revision)
        self.registry_healthy.set(1 if fs.registry_healthy else 0)


NativeTotals = tuple[
    list[tuple[str, str, int, int]],
    list[tuple[str, tuple[list[int], float]]],
    list[tuple[str, str, tuple[list[int], float], tuple[list[int], float]]],
    list[tuple[str, str, int, int, int]],
    list[tuple[str, str, int, int]],
    list[tuple[str, str, tuple[list[int], float], int]],
    int,
]
"""What ``_native.Front.take_metrics`` returns: calls ``(method, caller, code, n)``; latency per method
``(method, (counts, sum))``; per method and entity ``(method, entity, latency, keys)``; rows per FG
``(entity, FG, found, missing, expired)``; cache lookups ``(tier, entity, hits, misses)``; store calls
``(store id, op, latency, failed)``; and the calls in flight. Histogram counts are per bucket, not
cumulative, ``+Inf`` last, as ``Histogram.observe`` keeps them."""

_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def _add_observations(child: Histogram, counts: list[int], total: float) -> None:
    """Adds many observations to a histogram's child at once: bucket ``i`` gains ``counts[i]``, the sum
    ``total``. prometheus_client has no public call for it, so this increments the two value objects
    ``Histogram.observe`` itself increments (the same in multiprocess mode); tests/server/test_metrics.py
    checks the exposition equals observing one by one."""
    buckets = child._buckets
    if len(counts) != len(buckets):
        raise ValueError(f"{len(counts)} bucket counts for a histogram of {len(buckets)} buckets")
    child._sum.inc(total)
    for bucket, n in zip(buckets, counts, strict=True):
        if n:
            bucket.inc(n)


class _BeforeCollect(Collector):
    """A collector with no metrics of its own: runs the hooks when the registry is collected."""

    def __init__(self, hooks: list[Callable[[], None]]) -> None:
        self._hooks = hooks

    def describe(self) -> list[Metric]:
        return []  # registering it must not run the hooks

    def collect(self) -> list[Metric]:
        for hook in list(self._hooks):
            hook()
        return []


def multiprocess_registry(path: str) -> CollectorRegistry:
    """A registry summing the samples every worker wrote to ``path`` (``PROMETHEUS_MULTIPROC_DIR``)."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]  # unannotated upstream
    return registry


def worker_exited(pid: int, path: str) -> None:
    """Drops the live gauges of a worker that exited (its counters and histograms keep counting)."""
    mark_process_dead(pid, path)  # type: ignore[no-untyped-call]  # unannotated upstream


def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> tuple[WSGIServer, int]:
    """Serves ``registry`` at ``http://host:port/metrics`` from a daemon thread (``port`` 0: any free port).
    Returns the HTTP server (``shutdown()`` it to stop) and the bound port."""
    httpd, _thread = start_http_server(port, addr=host, registry=registry)
    return httpd, int(httpd.server_port)


def stop_metrics(httpd: WSGIServer) -> None:
    """Stops a :func:`serve_metrics` endpoint and closes its socket."""
    httpd.shutdown()
    httpd.server_close()
