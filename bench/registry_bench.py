"""Registry benchmarks: watch latency (apply → watcher sees it) per backend, and snapshot compile time.

    python bench/registry_bench.py [--rounds 50]     # etcd must run: scripts/services/etcd start

Prints a markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from online_feature_store import DataType
from online_feature_store.registry import (
    Entity,
    EtcdRegistry,
    Feature,
    FeatureGroup,
    Key,
    RegistryBackend,
    RegistryState,
    RegistryWatcher,
    Snapshot,
    SqliteRegistry,
)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def watch_latency(backend: RegistryBackend, writer: RegistryBackend, rounds: int) -> list[float]:
    """Seconds from the return of ``apply`` on ``writer`` to the swap of the watcher on ``backend``."""
    key = (Key("id", "id"),)
    fg0 = FeatureGroup(0, "g", DataType.FP32, {1: (Feature("f", b"\x00\x00\x00\x00"),)})
    writer.apply(RegistryState(entities=(Entity("e", key, (fg0,)),)))
    latencies = []
    with RegistryWatcher(backend, poll_interval=10.0) as watcher:
        for i in range(rounds):
            fg = FeatureGroup(
                0, "g", DataType.FP32, {1: (Feature("f", b"\x00\x00\x00\x00"),)}, ttl_seconds=i + 1
            )
            revision = writer.apply(RegistryState(entities=(Entity("e", key, (fg,)),)))
            start = time.perf_counter()
            while watcher.revision != revision:
                time.sleep(0.0005)
            latencies.append(time.perf_counter() - start)
    return latencies


def big_state(entities: int = 100, fgs: int = 20, features: int = 64) -> RegistryState:
    """``entities`` x ``fgs`` FP32 feature groups of ``features`` features each."""
    feats = tuple(Feature(f"f{i}", b"\x00\x00\x00\x00") for i in range(features))
    groups = tuple(FeatureGroup(i, f"g{i}", DataType.FP32, {1: feats}) for i in range(fgs))
    return RegistryState(entities=tuple(Entity(f"e{i}", (Key("id", "id"),), groups) for i in range(entities)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--etcd", default="127.0.0.1:12379")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "registry.db"
        with SqliteRegistry(path) as reader, SqliteRegistry(path) as writer:
            rows.append(("SQLite (200 ms poll)", watch_latency(reader, writer, args.rounds)))
    prefix = f"/ofs-bench/{uuid.uuid4().hex}/"
    with (
        EtcdRegistry([args.etcd], prefix=prefix) as reader,
        EtcdRegistry([args.etcd], prefix=prefix) as writer,
    ):
        try:
            rows.append(("etcd (watch)", watch_latency(reader, writer, args.rounds)))
        finally:
            writer._client.delete_prefix(prefix)

    state = big_state()
    compile_times = []
    for _ in range(5):
        start = time.perf_counter()
        Snapshot(state, 1)
        compile_times.append(time.perf_counter() - start)

    print(
        f"Registry, {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d')}, `python bench/registry_bench.py --rounds {args.rounds}`\n"
    )
    print("| measurement | p50 | p99 | max |")
    print("|---|---|---|---|")
    for name, values in rows:
        ms = [v * 1000 for v in values]
        print(
            f"| watch latency, {name} | {statistics.median(ms):.1f} ms | {_percentile(ms, 0.99):.1f} ms "
            f"| {max(ms):.1f} ms |"
        )
    ms = [v * 1000 for v in compile_times]
    print(
        f"| snapshot compile, 100 entities x 20 FGs x 64 features | {statistics.median(ms):.1f} ms "
        f"| {_percentile(ms, 0.99):.1f} ms | {max(ms):.1f} ms |"
    )


if __name__ == "__main__":
    main()
