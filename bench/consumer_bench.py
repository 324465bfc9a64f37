"""Kafka ingestion benchmark: rows/s from topic to readable for one consumer process, and push→readable
latency.

    python bench/consumer_bench.py                          # 200k rows, 64 fp32 features, SQLite store
    python bench/consumer_bench.py --rows 20000 --store redis --latency-samples 50

Throughput: the rows are produced first (``--rows`` rows of ``--features`` fp32 features, packed by the
ingest SDK into messages of ``--rows-per-message`` rows over ``--partitions`` partitions), then one
:class:`IngestConsumer` (this process) reads them; the rate is rows / (last message stored - first message
read), so group join time is not counted. Latency: with the consumer idle and caught up, one message of
``--latency-rows`` rows is pushed at a time and the clock stops when a retrieve of its keys finds them all.
Needs the broker of ``scripts/services/kafka`` (and ``scripts/services/redis`` for ``--store redis``).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from online_feature_store.consumer.config import ConsumerConfig
from online_feature_store.consumer.daemon import IngestConsumer
from online_feature_store.consumer.health import ConsumerMetrics
from online_feature_store.consumer.main import tune_gc
from online_feature_store.feature_store import FeatureStore
from online_feature_store.ingest import FeatureGroupValues, pack
from online_feature_store.registry.spec import reconcile
from online_feature_store.registry.sqlite import SqliteRegistry
from online_feature_store.registry.yaml_io import parse_spec
from online_feature_store.types import DataType


def _registry(directory: Path, n_features: int, store: str) -> str:
    settings: dict[str, Any] = (
        {"id": "main", "kind": "sqlite", "settings": {"path": str(directory / "store.db")}}
        if store == "sqlite"
        else {"id": "main", "kind": "redis", "settings": {"url": "redis://127.0.0.1:16379/0"}}
    )
    doc = {
        "stores": [settings],
        "entities": [
            {
                "label": f"bench_{uuid.uuid4().hex[:8]}",
                "keys": [{"label": "id", "column": "id"}],
                "feature_groups": [
                    {
                        "label": "emb",
                        "data_type": "fp32",
                        "store": "main",
                        "features": [{"label": f"f{i}", "default": 0.0} for i in range(n_features)],
                    }
                ],
            }
        ],
    }
    registry = SqliteRegistry(directory / "registry.db")
    spec = parse_spec(doc, env={})
    registry.apply(lambda s: reconcile(s, spec))
    registry.close()
    return f"sqlite:///{directory / 'registry.db'}"


def _messages(entity: str, first: int, rows: int, n_features: int, rows_per_message: int) -> list[bytes]:
    values = np.random.default_rng(first).random((rows, n_features), dtype=np.float32)
    keys = [[f"k{first + r}"] for r in range(rows)]
    fg = FeatureGroupValues("emb", DataType.FP32, [f"f{i}" for i in range(n_features)], values)
    return [
        p
        for p, _ in pack(
            entity, ["id"], keys, [fg], max_message_bytes=4_000_000, rows_per_message=rows_per_message
        )
    ]


def _admin_topic(bootstrap: str, partitions: int) -> str:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    topic = f"ofs-bench-{uuid.uuid4().hex[:10]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    # Messages of a few thousand 64-feature rows are over the 1 MiB default.
    admin.create_topics([NewTopic(topic, partitions, 1, topic_configs={"max.message.bytes": "8388608"})])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = admin.describe_topics([topic])
        if found and len(found[0].get("partitions", [])) == partitions:
            break
        time.sleep(0.1)
    admin.close()
    return topic


def _delete_topics(bootstrap: str, topics: list[str]) -> None:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        existing = set(admin.list_topics())
        admin.delete_topics([t for t in topics if t in existing])
    finally:
        admin.close()


def run(args: argparse.Namespace) -> dict[str, float]:
    """Runs the benchmark; returns the measured numbers."""
    from kafka import KafkaProducer

    directory = Path(tempfile.mkdtemp(prefix="ofs-consumer-bench-"))
    url = _registry(directory, args.features, args.store)
    entity = next(iter(SqliteRegistry(directory / "registry.db").load().entities))
    topic = _admin_topic(args.bootstrap, args.partitions)
    producer = KafkaProducer(
        bootstrap_servers=args.bootstrap,
        acks="all",
        linger_ms=5,
        max_request_size=8 << 20,
        batch_size=8 << 20,
    )
    t = time.perf_counter()
    messages = _messages(entity, 0, args.rows, args.features, args.rows_per_message)
    encode_s = time.perf_counter() - t
    for i, m in enumerate(messages):
        producer.send(topic, m, partition=i % args.partitions)
    producer.flush()
    print(
        f"produced {args.rows} rows in {len(messages)} messages of ~{len(messages[0]) / 1e6:.2f} MB "
        f"(encode {args.rows / encode_s:,.0f} rows/s)"
    )
    config = ConsumerConfig(
        bootstrap_servers=args.bootstrap,
        topic=topic,
        group_id=f"g-{topic}",
        workers=args.workers,
        batch_max_messages=args.batch_messages,
        batch_max_seconds=0.005,
        cache_mode="strong",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        max_partition_fetch_bytes=16 << 20,
        lag_interval_seconds=1.0,
        health_port=-1,
    )
    out: dict[str, float] = {}
    with FeatureStore(url, data_directory=directory, cache_bytes=0) as fs:
        metrics = ConsumerMetrics()
        consumer = IngestConsumer(fs, config, metrics)
        tune_gc()  # as `ofs consume` does
        stop = threading.Event()
        thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
        thread.start()

        try:

            def sample(counter: Any) -> float:
                # One counter's samples: collecting the whole registry every millisecond would take a
                # good share of the GIL from the consumer being measured.
                return sum(s.value for m in counter.collect() for s in m.samples if s.name.endswith("_total"))

            deadline = time.monotonic() + args.timeout
            while sample(metrics.consumed) == 0:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"nothing consumed from {topic} within {args.timeout} s")
                time.sleep(0.001)
            first, first_cpu = time.perf_counter(), time.process_time()
            while sample(metrics.persisted) < len(messages):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"not every message of {topic} stored within {args.timeout} s")
                # Every 10 ms (≤ 0.4 % of a 2.5 s run, counted against us): polling every 1 ms woke
                # this thread 1,000 times a second to take the GIL from the consumer it measures.
                time.sleep(0.01)
            elapsed = time.perf_counter() - first
            out["rows_per_s"] = args.rows / elapsed
            # CPU of this whole process (every thread) per row: what the consumer costs, whatever else
            # runs on the machine.
            out["cpu_us_per_row"] = (time.process_time() - first_cpu) / args.rows * 1e6
            print(
                f"throughput: {args.rows} rows in {elapsed:.2f} s = {out['rows_per_s']:,.0f} rows/s "
                f"(consumer process CPU {out['cpu_us_per_row']:.1f} us/row)"
            )
            probe = fs.retrieve(
                entity, [f"k{r}" for r in range(0, args.rows, max(args.rows // 100, 1))], {"emb": ["f0"]}
            )
            assert (probe.status["emb"] == 0).all(), "rows missing after the throughput run"

            latencies = []
            for s in range(args.latency_samples):
                first_key = args.rows + s * args.latency_rows
                (payload,) = _messages(entity, first_key, args.latency_rows, args.features, args.latency_rows)
                keys = [f"k{first_key + r}" for r in range(args.latency_rows)]
                t0 = time.perf_counter()
                producer.send(topic, payload, partition=s % args.partitions)
                producer.flush()
                while not (fs.retrieve(entity, keys, {"emb": ["f0"]}).status["emb"] == 0).all():
                    if time.perf_counter() - t0 > args.timeout:
                        raise TimeoutError(f"latency sample {s} not readable within {args.timeout} s")
                    time.sleep(0.0005)
                latencies.append(time.perf_counter() - t0)
            if latencies:
                ms = np.array(latencies) * 1000
                out["latency_p50_ms"] = float(np.percentile(ms, 50))
                out["latency_p99_ms"] = float(np.percentile(ms, 99))
                print(
                    f"push->readable ({args.latency_rows} rows/message, {len(ms)} samples): "
                    f"p50 {out['latency_p50_ms']:.1f} ms, p99 {out['latency_p99_ms']:.1f} ms, "
                    f"max {ms.max():.1f} ms"
                )
        finally:
            stop.set()
            thread.join()
    producer.close()
    _delete_topics(args.bootstrap, [topic, f"{topic}.dlq"])
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.2f}, "
        f"Python {platform.python_version()}"
    )
    return out


def parser() -> argparse.ArgumentParser:
    """The benchmark's command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bootstrap", default="127.0.0.1:19092")
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--features", type=int, default=64)
    p.add_argument("--rows-per-message", type=int, default=2000)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--workers", type=int, default=ConsumerConfig.workers)
    p.add_argument("--batch-messages", type=int, default=16)
    p.add_argument("--store", choices=["sqlite", "redis"], default="sqlite")
    p.add_argument("--latency-samples", type=int, default=200)
    p.add_argument("--latency-rows", type=int, default=1)
    p.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds")
    return p


if __name__ == "__main__":
    run(parser().parse_args())
