"""Embedded ``FeatureStore.retrieve`` on in-process cache hits: 1 / 100 / 500 keys x 64 fp32 features in
1 and 3 FGs, over a SQLite store with the cache warm, median of repeated calls. Prints a markdown table.

    python bench/inprocess_bench.py [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

from online_feature_store import FeatureStore
from online_feature_store.registry.spec import (
    EntitySpec,
    FeatureGroupSpec,
    FeatureSpec,
    RegistrySpec,
    reconcile,
)

FEATURES = 64
KEYS = 500


def registry(fgs: int) -> RegistrySpec:
    from online_feature_store.registry.model import CachePolicy, Key, Store
    from online_feature_store.types import DataType

    features = tuple(FeatureSpec(label=f"f{i}", default=0.0) for i in range(FEATURES))
    return RegistrySpec(
        stores=(Store(id="main", kind="sqlite", settings={}),),
        entities=(
            EntitySpec(
                label="user",
                keys=(Key(label="user_id", column="uid"),),
                in_process_cache=CachePolicy(enabled=True, ttl_seconds=3600, jitter_percent=0),
                feature_groups=tuple(
                    FeatureGroupSpec(
                        label=f"g{i}",
                        data_type=DataType.FP32,
                        store="main",
                        in_process_cache=True,
                        features=features,
                    )
                    for i in range(fgs)
                ),
            ),
        ),
    )


def timed(fn: object, seconds: float) -> float:
    samples = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1e6


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=1.0)
    args = p.parse_args()
    print("| keys | FGs of 64 fp32 | cache hit, µs | values/s |")
    print("|---:|---:|---:|---:|")
    for n_fgs in (1, 3):
        with tempfile.TemporaryDirectory() as tmp:
            fs = FeatureStore(data_directory=Path(tmp))
            fs._backend.apply(lambda s, n=n_fgs: reconcile(s, registry(n)))
            fs.close()
            fs = FeatureStore(data_directory=Path(tmp))
            keys = [f"u{k}" for k in range(KEYS)]
            rows = np.random.default_rng(0).random((KEYS, FEATURES), dtype=np.float32)
            for i in range(n_fgs):
                fs.persist("user", f"g{i}", keys, rows)
            labels = [f"f{i}" for i in range(FEATURES)]
            features = {f"g{i}": labels for i in range(n_fgs)}
            for n_keys in (1, 100, 500):
                ks = keys[:n_keys]
                fs.retrieve("user", ks, features)  # warm the cache
                us = timed(partial(fs.retrieve, "user", ks, features), args.seconds)
                print(f"| {n_keys} | {n_fgs} | {us:.1f} | {n_keys * n_fgs * FEATURES / us * 1e6:,.0f} |")
            fs.close()


if __name__ == "__main__":
    main()
