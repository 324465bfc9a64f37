"""``ofs consume``: settings, the feature store, the health endpoint and signal handling around one
:class:`~online_feature_store.consumer.daemon.IngestConsumer`."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import threading

from online_feature_store._ports import bind_error, check_free, moved_by
from online_feature_store.settings import data_dir, flag_values, registry_url

__all__ = ["HEALTH_PORT_HOW", "run", "tune_gc"]

HEALTH_PORT_HOW = (
    moved_by("--health-port", "OFS_CONSUMER_HEALTH_PORT", "health_port") + " (0: any free port, -1: none)"
)
"""How the consumer's health port is moved (named when it is taken)."""


def tune_gc() -> None:
    """Sets the garbage collector up for a process that ingests all day. Every row of a batch holds a
    few Python objects (its key, its block write) until the batch is stored: tens of thousands per
    batch, which CPython's default thresholds (a collection every 700 allocations) scan again and again,
    together with everything loaded at start-up. That was about a tenth of the consumer's CPU
    (bench/RESULTS.md). So what is alive after start-up is frozen out of later collections, and a
    collection runs every 50,000 allocations."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``ofs consume``: consumes until SIGTERM / SIGINT, then finishes the batch in hand,
    commits and leaves the group."""
    from online_feature_store.consumer.config import BLOCKS, load_config
    from online_feature_store.consumer.daemon import IngestConsumer
    from online_feature_store.consumer.health import ConsumerMetrics, HealthServer, Readiness
    from online_feature_store.feature_store import FeatureStore

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
    )
    config, extra = load_config(args.config, flag_values(BLOCKS, args))
    directory = data_dir(extra.get("data_dir"))
    registry = registry_url(extra.get("registry"), directory)
    check_free(config.health_host, config.health_port, "health and metrics", HEALTH_PORT_HOW)
    directory.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    metrics, readiness = ConsumerMetrics(), Readiness()
    with FeatureStore(
        registry, data_directory=directory, distributed_cache=extra.get("distributed_cache")
    ) as fs:
        try:
            health = (
                HealthServer(config.health_host, config.health_port, metrics, readiness)
                if config.health_port >= 0
                else None
            )
        except OSError as exc:
            how = HEALTH_PORT_HOW
            raise bind_error(exc, config.health_host, config.health_port, "health and metrics", how) from None
        try:
            consumer = IngestConsumer(fs, config, metrics, readiness)
            tune_gc()
            where = f"http://{config.health_host}:{health.port}" if health else "off"
            print(
                f"ofs consume: {config.topic} on {config.bootstrap_servers}, group {config.group_id}, "
                f"cache mode {config.cache_mode}, health {where}",
                flush=True,
            )
            consumer.run(stop)
        finally:
            if health is not None:
                health.close()
    print("ofs consume: stopped", flush=True)
    return 0
