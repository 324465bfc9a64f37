"""Store benchmark: read latency of 1/100/500 keys x 3 FGs and write throughput, per backend.

    python bench/store_bench.py                      # sqlite, redis, redis_cluster, cassandra
    python bench/store_bench.py --backends sqlite --iterations 50
    python bench/store_bench.py --smoke              # a few iterations, SQLite only (run by the tests)

Blocks are real FP32 blocks of 64 features (``encode_block``, zstd as in production). Each run uses a fresh
entity label, so runs never read each other's data. Services: ``scripts/services/{redis,redis-cluster,
cassandra} start``; a backend that cannot be reached is reported as skipped. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

import online_feature_store as ofs
from online_feature_store import formats
from online_feature_store.errors import UnavailableError
from online_feature_store.registry.model import Entity, Feature, FeatureGroup, Key
from online_feature_store.store.base import BlockStore, BlockWrite

FG_IDS = (1, 2, 3)
N_FEATURES = 64
KEY_COUNTS = (1, 100, 500)
N_KEYS = 5_000
WRITE_BATCH = 100


def make_entity() -> Entity:
    default = formats.encode_cell(ofs.DataType.FP32, 0.0)
    fgs = tuple(
        FeatureGroup(
            id=i,
            label=f"fg{i}",
            data_type=ofs.DataType.FP32,
            versions={1: tuple(Feature(f"f{j}", default) for j in range(N_FEATURES))},
        )
        for i in FG_IDS
    )
    return Entity(f"bench_{uuid.uuid4().hex[:12]}", (Key("user_id", "user_id"),), fgs)


def blocks(n: int) -> list[bytes]:
    meta = formats.BlockMeta(ofs.DataType.FP32, N_FEATURES)
    rng = np.random.default_rng(7)
    return [formats.encode_block(meta, rng.standard_normal(N_FEATURES, dtype=np.float32)) for _ in range(n)]


def openers(tmp: Path) -> dict[str, Callable[[], BlockStore]]:
    def sqlite() -> BlockStore:
        from online_feature_store.store.sqlite import SqliteStore

        return SqliteStore(tmp / "bench.db")

    def redis() -> BlockStore:
        from online_feature_store.store.redis_store import RedisStore

        return RedisStore("redis://127.0.0.1:16379/0", connect_timeout=1.0, retries=0)

    def redis_cluster() -> BlockStore:
        from online_feature_store.store.redis_store import RedisStore

        return RedisStore(cluster_nodes=["127.0.0.1:17001", "127.0.0.1:17002", "127.0.0.1:17003"], retries=0)

    def cassandra() -> BlockStore:
        from online_feature_store.store.cassandra_store import CassandraStore

        return CassandraStore(["127.0.0.1"], 19042, "ofs_bench", connect_timeout=2.0)

    return {"sqlite": sqlite, "redis": redis, "redis_cluster": redis_cluster, "cassandra": cassandra}


def bench_one(store: BlockStore, n_keys: int, iterations: int) -> dict[str, float]:
    entity = make_entity()
    store.ensure([entity])
    keys = [(f"user{i}",) for i in range(n_keys)]
    pool = blocks(64)
    expires = int(time.time()) + 3600  # Redis and Cassandra drop the bench data by themselves
    rows = [
        [BlockWrite(k, fg, pool[(i + fg) % len(pool)], expires) for fg in FG_IDS] for i, k in enumerate(keys)
    ]
    started = time.perf_counter()
    for i in range(0, len(rows), WRITE_BATCH):
        store.write(entity, [w for row in rows[i : i + WRITE_BATCH] for w in row])
    result = {"write_rows_s": len(rows) / (time.perf_counter() - started)}
    rng = np.random.default_rng(11)
    for count in KEY_COUNTS:
        samples = []
        for _ in range(iterations):
            request = [keys[j] for j in rng.integers(0, n_keys, count)]
            t0 = time.perf_counter()
            got = store.read(entity, request, FG_IDS)
            samples.append(time.perf_counter() - t0)
            assert len(got) == count
            assert all(got[0])
        samples.sort()
        result[f"p50_{count}"] = statistics.median(samples) * 1e3
        result[f"p99_{count}"] = samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1e3
    return result


def main(argv: Sequence[str] | None = None) -> int:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--backends", default="sqlite,redis,redis_cluster,cassandra")
    parser.add_argument("--iterations", type=int, default=300, help="reads per key count")
    parser.add_argument("--keys", type=int, default=N_KEYS, help="rows written (rows = keys x 3 FGs)")
    parser.add_argument("--smoke", action="store_true", help="SQLite, 5 iterations, 600 keys")
    args = parser.parse_args(argv)
    if args.smoke:
        args.backends, args.iterations, args.keys = "sqlite", 5, 600
    header = (
        "| backend | write rows/s (3 FGs, batches of 100) | "
        + " | ".join(f"read {n} keys p50 / p99 (ms)" for n in KEY_COUNTS)
        + " |"
    )
    print(header)
    print("|" + "---|" * (2 + len(KEY_COUNTS)))
    with tempfile.TemporaryDirectory() as tmp:
        available = openers(Path(tmp))
        for name in args.backends.split(","):
            store = available[name]()
            try:
                r = bench_one(store, args.keys, args.iterations)
            except UnavailableError as e:
                print(f"| {name} | skipped: {str(e)[:80]} |" + " |" * len(KEY_COUNTS))
                continue
            finally:
                store.close()
            cells = " | ".join(f"{r[f'p50_{n}']:.3f} / {r[f'p99_{n}']:.3f}" for n in KEY_COUNTS)
            print(f"| {name} | {r['write_rows_s']:,.0f} | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
