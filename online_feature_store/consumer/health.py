"""Prometheus metrics and the HTTP endpoint of the consumer (``/health/self``, ``/health/ready``,
``/metrics``).

``/health/self`` answers ``{"message":"true"}`` while the process runs (as the reference's consumer does);
``/health/ready`` answers 200 only while the consumer is in its group and the store takes writes (503 with
the reason otherwise), so an orchestrator can tell a stalled consumer from a working one.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["BATCH_BUCKETS", "ConsumerMetrics", "HealthServer", "Readiness"]

BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Seconds from a batch's first message arriving to its offsets being committed."""


class ConsumerMetrics:
    """The metrics of one consumer process, in ``registry`` (a fresh one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.consumed = Counter(
            "ofs_consumer_consumed_messages", "messages read from Kafka", ["topic"], registry=r
        )
        self.persisted = Counter(
            "ofs_consumer_persisted_messages", "messages whose rows were all stored", ["topic"], registry=r
        )
        self.persisted_blocks = Counter(
            "ofs_consumer_persisted_blocks",
            "feature-group rows (blocks) stored: rows x feature groups of each message",
            ["topic"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "ofs_consumer_dead_lettered_messages",
            "messages sent to the dead-letter topic, by error class",
            ["topic", "error"],
            registry=r,
        )
        self.store_failures = Counter(
            "ofs_consumer_store_failures",
            "message writes that failed for a reason other than the message (retried after a backoff)",
            ["topic"],
            registry=r,
        )
        self.commits = Counter("ofs_consumer_commits", "successful offset commits", ["topic"], registry=r)
        self.lag = Gauge(
            "ofs_consumer_lag",
            "messages in the partition after the last committed offset",
            ["topic", "partition"],
            registry=r,
        )
        self.assigned = Gauge(
            "ofs_consumer_assigned_partitions", "partitions this process owns", ["topic"], registry=r
        )
        self.paused = Gauge(
            "ofs_consumer_paused", "1 while consumption is paused because the store fails", registry=r
        )
        self.batch_seconds = Histogram(
            "ofs_consumer_batch_duration_seconds",
            "time from a batch's first message arriving to its offsets being committed",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_messages = Histogram(
            "ofs_consumer_batch_messages",
            "messages per batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=r,
        )


class Readiness:
    """What ``/health/ready`` reports; set by the consumer loop, read by the HTTP thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._problems: dict[str, str] = {"group": "not yet in the consumer group"}

    def set(self, name: str, problem: str | None) -> None:
        """Records (``problem``) or clears (``None``) one reason not to be ready."""
        with self._lock:
            if problem is None:
                self._problems.pop(name, None)
            else:
                self._problems[name] = problem

    def problems(self) -> dict[str, str]:
        """The current reasons not to be ready (empty when ready)."""
        with self._lock:
            return dict(self._problems)


class HealthServer:
    """Serves health and metrics over HTTP from a daemon thread until :meth:`close`."""

    def __init__(self, host: str, port: int, metrics: ConsumerMetrics, readiness: Readiness) -> None:
        registry, ready = metrics.registry, readiness

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/health/self":
                    self._send(200, "application/json", json.dumps({"message": "true"}).encode())
                elif path == "/health/ready":
                    problems = ready.problems()
                    body: dict[str, Any] = {"ready": not problems, "problems": problems}
                    self._send(503 if problems else 200, "application/json", json.dumps(body).encode())
                elif path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, generate_latest(registry))
                else:
                    self._send(404, "text/plain", b"not found\n")

            def _send(self, code: int, content_type: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # stdlib's signature
                pass  # probes every few seconds would flood the log

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        """The bound port."""
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="ofs-consumer-http", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stops serving and closes the socket."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
