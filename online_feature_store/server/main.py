"""``ofs serve``: configuration (YAML file, then environment, then flags) and the process model.

With nothing configured it serves the embedded defaults: the SQLite registry and stores in the data
directory, no auth, port 8089. ``--workers N`` runs N processes sharing the port (``SO_REUSEPORT``),
each with its own registry watch and caches. SIGTERM stops accepting and drains in-flight calls.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

from online_feature_store._ports import check_ports
from online_feature_store.errors import InvalidInputError, PortInUseError
from online_feature_store.limits import make_limits
from online_feature_store.server.app import ENV_PREFIX, PORTS, ServerConfig, port_hint, serve_metrics_on
from online_feature_store.settings import (
    StoreSettings,
    build,
    data_dir,
    env_names,
    flag_values,
    gather,
    registry_url,
    setting,
)

__all__ = ["BLOCKS", "ENV", "ServeSettings", "load_config", "run"]


@dataclass(frozen=True)
class ServeSettings(StoreSettings):
    """The settings of ``ofs serve`` beside each server process's :class:`ServerConfig`: the shared
    store block and the process count."""

    workers: int = setting(
        1,
        ge=1,
        doc="processes sharing the port (`SO_REUSEPORT`), each with its own caches and registry watch; a "
        "worker that dies is replaced",
    )


BLOCKS = (ServerConfig, ServeSettings)
"""What ``ofs serve`` reads from its file, its ``OFS_<NAME>`` variables and its flags."""
ENV = env_names(BLOCKS, ENV_PREFIX)
"""Setting name → its environment variable."""

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

LOG_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"

PORT_IN_USE_EXIT = 3
"""Exit status of a worker whose port is taken: the supervisor stops rather than restarting it."""

MIN_WORKER_LIFE = 10.0
"""Seconds: a worker dying sooner than this after its start is restarted with back-off."""


def load_config(path: str | None, overrides: dict[str, Any]) -> tuple[ServerConfig, dict[str, Any]]:
    """Server settings from ``path`` (YAML), the ``OFS_*`` environment and ``overrides`` (flags), in that
    order of precedence (flags win). Returns the config and the other settings that were given
    (registry, data_dir, distributed_cache, workers: :class:`ServeSettings`)."""
    doc = gather(BLOCKS, path, overrides, prefix=ENV_PREFIX, label="ofs serve")
    config = build(ServerConfig, doc)
    serve = build(ServeSettings, doc)
    # Refused here, before any worker starts, rather than by each worker as it builds its server.
    make_limits(config.max_keys_per_request, config.max_rows_per_persist, config.max_message_bytes)
    extra: dict[str, Any] = serve.given()
    if "workers" in doc:
        extra["workers"] = serve.workers
    return config, extra


def _stop_on_signals(stop: threading.Event) -> None:
    """Sets ``stop`` on SIGTERM / SIGINT, from a thread of its own (call from the main thread).

    Not in the Python signal handler itself: that runs on the main thread between bytecodes, and
    ``Event.set`` there deadlocks when the signal lands while that thread holds the event's lock (a
    second SIGTERM arriving as ``stop.wait()`` returns is enough). The handler does nothing; the signal
    number reaches the thread through the wakeup fd, whichever thread the kernel delivered it to."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)

    def wait() -> None:
        while os.read(r, 64):
            stop.set()

    threading.Thread(target=wait, name="ofs-signals", daemon=True).start()


def _serve_one(
    config: ServerConfig,
    registry: str | None,
    data_directory: str | None,
    metrics_http: bool = True,
    distributed_cache: str | None = None,
) -> None:
    from online_feature_store.feature_store import FeatureStore
    from online_feature_store.server.app import serve_forever

    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)  # a spawned worker starts unconfigured
    # Every connection (gRPC or HTTP) is an open file: allow as many as the hard limit.
    from online_feature_store.server.http import raise_open_files_limit

    raise_open_files_limit()
    if config.io_threads:  # before anything starts the core's runtime (the stores' clients, the front)
        from online_feature_store._native import set_io_threads

        set_io_threads(config.io_threads)
    stop = threading.Event()
    _stop_on_signals(stop)
    parent = multiprocessing.parent_process()
    if parent is not None:  # a worker: stop when the supervisor dies, rather than serve on as an orphan
        sentinel = parent.sentinel

        def watch_parent() -> None:
            multiprocessing.connection.wait([sentinel])
            stop.set()

        threading.Thread(target=watch_parent, name="ofs-parent-watch", daemon=True).start()
    try:
        with FeatureStore(registry, data_directory=data_directory, distributed_cache=distributed_cache) as fs:
            serve_forever(fs, config, stop, metrics_http=metrics_http)
    except PortInUseError as exc:
        if parent is None:
            raise
        # a worker: one line, and an exit status that tells the supervisor not to restart it
        print(f"ofs serve: error: {exc}", file=sys.stderr, flush=True)
        sys.exit(PORT_IN_USE_EXIT)


def io_threads(setting: int, workers: int) -> int:
    """The core runtime's threads per process: ``setting``, or for ``0`` the CPUs this process may run on
    (its affinity) shared among ``workers`` processes, at least 1."""
    if setting < 0:
        raise InvalidInputError(f"io_threads must be 0 (auto) or more, got {setting}")
    if setting:
        return setting
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // max(1, workers))


def run(args: argparse.Namespace) -> int:
    """Entry point of ``ofs serve``."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    config, extra = load_config(args.config, flag_values(BLOCKS, args))
    if config.http_port:  # a bad HTTP limit is refused here, before any worker starts
        from online_feature_store.server.http import HttpLimits

        HttpLimits.from_config(config)
    # Absolute from here on (a relative one from the working directory): workers get the same place.
    directory = data_dir(extra.get("data_dir"))
    registry = registry_url(extra.get("registry"), directory)
    workers = int(extra.get("workers", 1))
    config = replace(config, io_threads=io_threads(config.io_threads, workers))
    # Every port is checked before anything opens (and before a worker starts): a taken one is one line.
    check_ports(config.host, [(getattr(config, name), *port_hint(name)) for name in PORTS])
    directory.mkdir(parents=True, exist_ok=True)
    data_directory = str(directory)
    print(
        f"ofs serve: {config.host}:{config.port}, {workers} worker(s) of {config.io_threads} io thread(s), "
        f"auth {'on' if config.auth else 'off'}"
        + (f", HTTP API on port {config.http_port}" if config.http_port else "")
        + f"; registry {registry}, data directory {directory}",
        flush=True,
    )
    if workers == 1:
        _serve_one(config, registry, data_directory, distributed_cache=extra.get("distributed_cache"))
        return 0
    config = replace(config, reuse_port=True)
    stopping = threading.Event()
    _stop_on_signals(stopping)
    if not config.metrics_port:
        return _supervise(
            config, registry, data_directory, workers, None, extra.get("distributed_cache"), stopping=stopping
        )
    # Workers write their samples to files here (prometheus_client reads the variable when a worker
    # imports it, so it is set before any worker starts) and this process serves their sum.
    multiproc_dir = tempfile.mkdtemp(prefix="ofs-metrics-")
    os.environ[MULTIPROC_ENV] = multiproc_dir
    try:
        from online_feature_store.server.metrics import multiprocess_registry, stop_metrics

        httpd, port = serve_metrics_on(multiprocess_registry(multiproc_dir), config)
        print(f"ofs serve: metrics on http://{config.host}:{port}/metrics", flush=True)
        try:
            return _supervise(
                config,
                registry,
                data_directory,
                workers,
                multiproc_dir,
                extra.get("distributed_cache"),
                stopping=stopping,
            )
        finally:
            stop_metrics(httpd)
    finally:
        del os.environ[MULTIPROC_ENV]
        shutil.rmtree(multiproc_dir, ignore_errors=True)


def _supervise(
    config: ServerConfig,
    registry: str | None,
    data_directory: str | None,
    workers: int,
    multiproc_dir: str | None,
    distributed_cache: str | None = None,
    *,
    stopping: threading.Event,
) -> int:
    """Runs ``workers`` server processes until ``stopping`` is set (SIGTERM / SIGINT), replacing any that
    dies, then stops them (SIGTERM) and waits for them to drain."""
    ctx = multiprocessing.get_context("spawn")
    args = (config, registry, data_directory, False, distributed_cache)
    procs = [ctx.Process(target=_serve_one, args=args, daemon=False) for _ in range(workers)]
    for p in procs:
        p.start()

    def forward() -> None:
        for p in procs:
            if p.pid and p.is_alive():
                with contextlib.suppress(ProcessLookupError):  # it may exit between the check and the kill
                    os.kill(p.pid, signal.SIGTERM)

    # Replace a worker that dies unexpectedly so the port keeps serving. One that dies soon after it
    # started (bad config, port taken) is restarted with a growing delay instead of in a tight loop.
    log = logging.getLogger("online_feature_store.server")
    started = [time.monotonic()] * workers
    delay = 0.0
    status = 0
    while not stopping.is_set():
        for i, p in enumerate(procs):
            p.join(timeout=0.5 / len(procs))
            if p.is_alive() or stopping.is_set():
                continue
            if p.exitcode == PORT_IN_USE_EXIT:  # taken after run() checked it: restarting cannot help
                status = 1
                stopping.set()
                break
            log.warning("worker %s exited (code %s); restarting", p.pid, p.exitcode)
            _worker_exited(p, multiproc_dir)
            quick = time.monotonic() - started[i] < MIN_WORKER_LIFE
            delay = min(max(delay * 2, 0.5), 30.0) if quick else 0.0
            if delay and stopping.wait(delay):
                break
            procs[i] = ctx.Process(target=_serve_one, args=args, daemon=False)
            procs[i].start()
            started[i] = time.monotonic()
    forward()
    for p in procs:
        p.join()
        _worker_exited(p, multiproc_dir)
    return status


def _worker_exited(p: multiprocessing.process.BaseProcess, multiproc_dir: str | None) -> None:
    if multiproc_dir is not None and p.pid is not None:
        from online_feature_store.server.metrics import worker_exited

        worker_exited(p.pid, multiproc_dir)
