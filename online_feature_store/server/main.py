"""``ofs serve``: configuration (YAML file, then environment, then flags) and the process model.

With nothing configured it serves the embedded defaults: the SQLite registry and stores in the data
directory, no auth, port 8089. ``--workers N`` runs N processes sharing the port (``SO_REUSEPORT``),
each with its own registry watch and caches. SIGTERM stops accepting and drains in-flight calls.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import threading
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from online_feature_store.errors import InvalidInputError
from online_feature_store.server.app import ServerConfig

__all__ = ["load_config", "run"]

ENV = {
    "host": "OFS_HOST",
    "port": "OFS_PORT",
    "auth": "OFS_AUTH",
    "threads": "OFS_THREADS",
    "max_message_bytes": "OFS_MAX_MESSAGE_BYTES",
    "grace_seconds": "OFS_GRACE_SECONDS",
    "metrics_port": "OFS_METRICS_PORT",
}

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _coerce(name: str, raw: Any, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            if isinstance(raw, str):
                if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(raw)
                return raw.lower() in ("1", "true", "yes")
            return bool(raw)
        return type(default)(raw)
    except (TypeError, ValueError):
        raise InvalidInputError(f"setting {name!r}: cannot use {raw!r} as {type(default).__name__}") from None


def load_config(path: str | None, overrides: dict[str, Any]) -> tuple[ServerConfig, dict[str, Any]]:
    """Server settings from ``path`` (YAML), the ``OFS_*`` environment and ``overrides`` (flags), in that
    order of precedence (flags win). Returns the config and the non-server settings (registry, data_dir,
    workers)."""
    doc: dict[str, Any] = {}
    if path:
        import yaml

        loaded = yaml.safe_load(Path(path).read_text())
        if loaded is not None and not isinstance(loaded, dict):
            raise InvalidInputError(f"{path}: expected a mapping of settings")
        doc = dict(loaded or {})
    known = {f.name for f in fields(ServerConfig)} | {"registry", "data_dir", "workers"}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise InvalidInputError(f"{path}: unknown settings {unknown} (known: {sorted(known)})")
    for name, var in ENV.items():
        if var in os.environ:
            doc[name] = os.environ[var]
    doc.update({k: v for k, v in overrides.items() if v is not None})
    config = ServerConfig()
    values = {
        f.name: _coerce(f.name, doc[f.name], getattr(config, f.name)) for f in fields(config) if f.name in doc
    }
    extra: dict[str, Any] = {k: doc[k] for k in ("registry", "data_dir", "workers") if k in doc}
    return replace(config, **values), extra


def _serve_one(
    config: ServerConfig, registry: str | None, data_dir: str | None, metrics_http: bool = True
) -> None:
    from online_feature_store.feature_store import FeatureStore
    from online_feature_store.server.app import serve_forever

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with FeatureStore(registry, data_directory=data_dir) as fs:
        serve_forever(fs, config, stop, metrics_http=metrics_http)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``ofs serve``."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
    )
    overrides = {"port": args.port, "host": args.host, "auth": True if args.auth else None}
    config, extra = load_config(args.config, overrides)
    registry = args.registry or extra.get("registry")
    data_dir = args.data_dir or extra.get("data_dir") or os.environ.get("OFS_DATA_DIR")
    if data_dir:
        Path(data_dir).mkdir(parents=True, exist_ok=True)
    workers = int(args.workers or extra.get("workers") or os.environ.get("OFS_WORKERS") or 1)
    if workers < 1:
        raise InvalidInputError(f"--workers must be at least 1, got {workers}")
    print(
        f"ofs serve: {config.host}:{config.port}, {workers} worker(s), auth {'on' if config.auth else 'off'}"
    )
    if workers == 1:
        _serve_one(config, registry, data_dir)
        return 0
    config = replace(config, reuse_port=True)
    if not config.metrics_port:
        return _supervise(config, registry, data_dir, workers, None)
    # Workers write their samples to files here (prometheus_client reads the variable when a worker
    # imports it, so it is set before any worker starts) and this process serves their sum.
    multiproc_dir = tempfile.mkdtemp(prefix="ofs-metrics-")
    os.environ[MULTIPROC_ENV] = multiproc_dir
    try:
        from online_feature_store.server.metrics import multiprocess_registry, serve_metrics, stop_metrics

        httpd, port = serve_metrics(multiprocess_registry(multiproc_dir), config.host, config.metrics_port)
        print(f"ofs serve: metrics on http://{config.host}:{port}/metrics", flush=True)
        try:
            return _supervise(config, registry, data_dir, workers, multiproc_dir)
        finally:
            stop_metrics(httpd)
    finally:
        del os.environ[MULTIPROC_ENV]
        shutil.rmtree(multiproc_dir, ignore_errors=True)


def _supervise(
    config: ServerConfig, registry: str | None, data_dir: str | None, workers: int, multiproc_dir: str | None
) -> int:
    """Runs ``workers`` server processes until SIGTERM / SIGINT, replacing any that dies."""
    ctx = multiprocessing.get_context("spawn")
    args = (config, registry, data_dir, False)
    procs = [ctx.Process(target=_serve_one, args=args, daemon=False) for _ in range(workers)]
    for p in procs:
        p.start()
    stopping = threading.Event()

    def forward(*_: object) -> None:
        stopping.set()
        for p in procs:
            if p.pid and p.is_alive():
                os.kill(p.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    # Replace a worker that dies unexpectedly so the port keeps serving.
    while not stopping.is_set():
        for i, p in enumerate(procs):
            p.join(timeout=0.5 / len(procs))
            if not p.is_alive() and not stopping.is_set():
                logging.getLogger("online_feature_store.server").warning(
                    "worker %s exited; restarting", p.pid
                )
                _worker_exited(p, multiproc_dir)
                procs[i] = ctx.Process(target=_serve_one, args=args, daemon=False)
                procs[i].start()
    for p in procs:
        p.join()
        _worker_exited(p, multiproc_dir)
    return 0


def _worker_exited(p: multiprocessing.process.BaseProcess, multiproc_dir: str | None) -> None:
    if multiproc_dir is not None and p.pid is not None:
        from online_feature_store.server.metrics import worker_exited

        worker_exited(p.pid, multiproc_dir)
