"""Cache-tier benchmark of the embedded ``FeatureStore``: retrieve of 1 / 100 / 500 keys x 64 fp32 features
over 1 and 3 FGs when the in-process cache hits (the baseline), when it misses and the distributed cache
(Redis, Redis Cluster) hits, and when it misses to the SQLite store; then persist rows/s per invalidation
mode.

    python bench/cache_bench.py                      # SQLite + Redis (16379) + Redis Cluster (17001-17003)
    python bench/cache_bench.py --iterations 50 --targets sqlite,redis
    python bench/cache_bench.py --smoke              # SQLite only, a few iterations (run by the tests)

Every retrieve goes through ``FeatureStore.retrieve`` (numpy out). "Miss" rows clear the in-process cache
before each call (not timed), so the call pays the in-process miss, the tier below and the in-process fill.
Each run uses a fresh entity label, so runs never read each other's cache entries. Prints markdown tables
with medians and the ratio to the in-process-hit baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from online_feature_store.cache.redis_cache import DistributedCache
from online_feature_store.feature_store import FeatureStore
from online_feature_store.registry.spec import reconcile
from online_feature_store.registry.sqlite import SqliteRegistry
from online_feature_store.registry.yaml_io import parse_spec
from online_feature_store.store.keys import encode_key

N_FEATURES = 64
KEY_COUNTS = (1, 100, 500)
FG_COUNTS = (1, 3)
N_KEYS = 2_000
TARGETS = {
    "redis": "redis://127.0.0.1:16379/0",
    "redis_cluster": "redis-cluster://127.0.0.1:17001,127.0.0.1:17002,127.0.0.1:17003",
}


def registry(directory: Path, label: str) -> str:
    fgs = [
        {
            "label": f"g{i}",
            "data_type": "fp32",
            "store": "main",
            "in_process_cache": True,
            "distributed_cache": True,
            "features": [{"label": f"f{j}", "default": 0.0} for j in range(N_FEATURES)],
        }
        for i in range(3)
    ]
    doc = {
        "stores": [{"id": "main", "kind": "sqlite", "settings": {"path": "store.db"}}],
        "entities": [
            {
                "label": label,
                "keys": [{"label": "user_id", "column": "uid"}],
                "cache": {
                    "in_process": {"enabled": True, "ttl_seconds": 3600, "jitter_percent": 10},
                    "distributed": {"enabled": True, "ttl_seconds": 3600, "jitter_percent": 10},
                },
                "feature_groups": fgs,
            }
        ],
    }
    reg = SqliteRegistry(directory / "registry.db")
    spec = parse_spec(doc, env={})
    reg.apply(lambda state: reconcile(state, spec))
    reg.close()
    return f"sqlite:///{directory / 'registry.db'}"


def median_us(fn: Callable[[], Any], iterations: int, before: Callable[[], Any] | None = None) -> float:
    samples = []
    for _ in range(iterations):
        if before is not None:
            before()
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1e6


def retrieve_table(directory: Path, targets: Sequence[str], iterations: int) -> list[str]:
    label = f"bench_{uuid.uuid4().hex[:10]}"
    url = registry(directory, label)
    rng = np.random.default_rng(3)
    keys = [f"u{i}" for i in range(N_KEYS)]
    features = {f"g{i}": [f"f{j}" for j in range(N_FEATURES)] for i in range(3)}
    stores: dict[str, FeatureStore] = {"sqlite": FeatureStore(url, data_directory=directory)}
    for t in targets:
        stores[t] = FeatureStore(url, data_directory=directory, distributed_cache=TARGETS[t])
    lines = [
        "| keys | FGs | in-process hit µs (baseline) | "
        + " | ".join(f"miss → {t} µs (x baseline)" for t in ["sqlite", *targets])
        + " |",
        "|---:|---:|---:|" + "---:|" * (1 + len(targets)),
    ]
    try:
        writer = stores["sqlite"]
        for g in range(3):
            for i in range(0, N_KEYS, 500):
                vals = rng.standard_normal((500, N_FEATURES), dtype=np.float32)
                writer.persist(label, f"g{g}", keys[i : i + 500], vals)
        for n_fgs in FG_COUNTS:
            request = {f"g{i}": features[f"g{i}"] for i in range(n_fgs)}
            for n_keys in KEY_COUNTS:
                picks = [keys[j] for j in rng.choice(N_KEYS, n_keys, replace=False)]
                hit_fs = stores["sqlite"]
                hit_fs.retrieve(label, picks, request)  # fill the in-process cache
                base = median_us(partial(hit_fs.retrieve, label, picks, request), iterations)
                cells = [f"{base:.1f}"]
                for name, fs in stores.items():
                    if name != "sqlite":
                        fs.retrieve(label, picks, request)  # fill the distributed cache
                        remote = fs._caches.remote
                        assert remote is not None
                        remote.wait_backfills()
                    local = fs._caches.local
                    assert local is not None
                    us = median_us(partial(fs.retrieve, label, picks, request), iterations, local.clear)
                    cells.append(f"{us:.1f} ({us / base:.1f}x)")
                lines.append(f"| {n_keys} | {n_fgs} | " + " | ".join(cells) + " |")
    finally:
        for fs in stores.values():
            fs.close()
    return lines


def cluster_fetch_table(iterations: int) -> list[str]:
    """Distributed-cache reads of one request on the cluster (all keys cached): ``get_many`` (one ``MGET``
    per slot, every node's batch written before any reply is read), the same batches one node after
    another, and redis-py's ``mget_nonatomic`` (its cluster pipeline, as the Redis store reads)."""
    cache = DistributedCache.from_url(TARGETS["redis_cluster"], socket_timeout=1.0, connect_timeout=1.0)
    entity = f"bench_{uuid.uuid4().hex[:10]}"
    lines = [
        "| keys | get_many, nodes overlapped µs | node after node µs | redis-py mget_nonatomic µs |",
        "|---:|---:|---:|---:|",
    ]
    try:
        client = cache.client()
        for n in (100, 500):
            names = [encode_key((f"u{i}",)) for i in range(n)]
            lookup = cache.get_many(entity, names, [0])
            assert lookup is not None
            cache.backfill(entity, names, lookup.seen, lookup.at, [0], [b"\x01" * 300] * n, 600, 0)
            cache.wait_backfills()
            full = [cache.prefix(entity) + k for k in names]
            by_node: dict[str, list[str]] = {}
            for k in full:
                by_node.setdefault(client.get_node_from_key(k).name, []).append(k)
            groups = list(by_node.values())
            variants: list[Callable[[], Any]] = [
                partial(cache.get_many, entity, names, [0]),
                partial(_one_after_another, client, groups),
                partial(client.mget_nonatomic, full),
            ]
            # interleaved, so a burst of load on the shared machine hits all three alike
            samples: list[list[float]] = [[] for _ in variants]
            for _ in range(iterations):
                for fn, out in zip(variants, samples, strict=False):
                    t = time.perf_counter()
                    fn()
                    out.append(time.perf_counter() - t)
            cells = " | ".join(f"{statistics.median(x) * 1e6:.1f}" for x in samples)
            lines.append(f"| {n} | {cells} |")
    finally:
        cache.close()
    return lines


def _one_after_another(client: Any, groups: list[list[str]]) -> None:
    from online_feature_store.cache.redis_cache import _cluster_mget

    for keys in groups:
        _cluster_mget(client, keys)


def persist_table(directory: Path, targets: Sequence[str], batches: int) -> list[str]:
    """Rows/s of ``FeatureStore.persist`` (batches of 100 rows of one 64-feature FG) per mode."""
    label = f"bench_{uuid.uuid4().hex[:10]}"
    url = registry(directory, label)
    rng = np.random.default_rng(5)
    values = rng.standard_normal((100, N_FEATURES), dtype=np.float32)
    modes: list[tuple[str, str | None, bool, bool]] = [
        ("eventual (no invalidation), baseline", None, False, False),
        ("strong, in-process + SQLite invalidation log", None, True, True),
    ]
    modes += [(f"strong, in-process + {t} (tombstones + pub/sub)", TARGETS[t], True, True) for t in targets]
    lines = ["| mode | rows/s | x baseline |", "|---|---:|---:|"]
    base = 0.0
    for name, remote, invalidate, bus in modes:
        fs = FeatureStore(url, data_directory=directory, distributed_cache=remote, invalidation=bus)
        try:
            fs.retrieve(label, ["u0"], {"g0": ["f0"]})  # starts the invalidation bus
            started = time.perf_counter()
            for b in range(batches):
                keys = [f"u{b * 100 + i}" for i in range(100)]
                fs.persist(label, "g0", keys, values, invalidate=invalidate)
            rate = batches * 100 / (time.perf_counter() - started)
        finally:
            fs.close()
        base = base or rate
        lines.append(f"| {name} | {rate:,.0f} | {rate / base:.2f} |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--targets", default="redis,redis_cluster", help="distributed caches to measure")
    parser.add_argument("--iterations", type=int, default=200, help="retrieves per cell")
    parser.add_argument("--batches", type=int, default=100, help="persist batches of 100 rows per mode")
    parser.add_argument("--smoke", action="store_true", help="SQLite only, 3 iterations, 3 batches")
    args = parser.parse_args(argv)
    targets = [t for t in args.targets.split(",") if t]
    if args.smoke:
        targets, args.iterations, args.batches = [], 3, 3
    unknown = set(targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; known: {sorted(TARGETS)}")
    with tempfile.TemporaryDirectory() as tmp:
        print("\n".join(retrieve_table(Path(tmp), targets, args.iterations)))
        print()
        if "redis_cluster" in targets:
            print("\n".join(cluster_fetch_table(args.iterations)))
            print()
        print("\n".join(persist_table(Path(tmp), targets, args.batches)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
