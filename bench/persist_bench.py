"""Persist path without Kafka: one serialized ``persist.Query`` of 1,000 rows x 64 fp32 features (built once
with the native ``encode_persist_query``), then ``Catalog.persist_wire`` (validate + build every block,
native) and ``FeatureStore.persist_wire`` (the same, then the SQLite write and cache invalidation), on one
thread.

    python bench/persist_bench.py [--rows 1000] [--rounds 10]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inprocess_bench import FEATURES, registry

from online_feature_store import DataType, FeatureStore
from online_feature_store._native import encode_persist_query
from online_feature_store.registry.spec import reconcile


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=10)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        with FeatureStore(data_directory=Path(tmp), cache_bytes=0) as fs:
            fs._backend.apply(lambda s: reconcile(s, registry(1)))
        with FeatureStore(data_directory=Path(tmp), cache_bytes=0) as fs:
            labels = [f"f{i}" for i in range(FEATURES)]
            values = np.random.default_rng(0).random((args.rows, FEATURES), dtype=np.float32)
            keys = [[f"u{i}"] for i in range(args.rows)]
            group = ("g0", int(DataType.FP32), labels, values)
            query = encode_persist_query("user", ["user_id"], keys, [group])
            catalog = fs._catalog(fs.snapshot)
            for name, call in (
                ("Catalog.persist_wire (native)", lambda: catalog.persist_wire(query)),
                ("FeatureStore.persist_wire (SQLite)", lambda: fs.persist_wire(query)),
            ):
                started = time.perf_counter()
                for _ in range(args.rounds):
                    call()
                rate = args.rows * args.rounds / (time.perf_counter() - started)
                print(f"{name}: {rate:,.0f} rows/s")


if __name__ == "__main__":
    main()
