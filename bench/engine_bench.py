"""Retrieve engine cost without I/O: ``Catalog.retrieve`` (numpy out) and ``Catalog.retrieve_wire`` (gRPC
bytes out: the server's call, its store read answered with blocks already in memory) for 1 / 100 / 500
keys x 64 fp32 features in 1 and 3 FGs. This is the floor a cache hit costs on top of its lookup. Prints a
markdown table.

    python bench/engine_bench.py [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from online_feature_store import DataType
from online_feature_store._native import Catalog
from online_feature_store._proto import retrieve_pb2
from online_feature_store.formats import encode_cell

FEATURES = 64


def catalog(n_fgs: int) -> Catalog:
    labels = [f"f{i}" for i in range(FEATURES)]
    defaults = [encode_cell(DataType.FP32, 0.0) for _ in labels]
    fgs = [
        ("user", i, f"g{i}", int(DataType.FP32), 1, 0, [(1, labels, [], [], defaults)]) for i in range(n_fgs)
    ]
    return Catalog(1, [("user", ["user_id"])], fgs)


def run(n_keys: int, n_fgs: int, seconds: float) -> tuple[float, float]:
    cat = catalog(n_fgs)
    labels = [f"f{i}" for i in range(FEATURES)]
    rows = np.random.default_rng(0).random((n_keys, FEATURES), dtype=np.float32)
    per_fg = [cat.encode_rows("user", f"g{i}", rows, n_keys) for i in range(n_fgs)]
    blocks = [per_fg[f][k] for k in range(n_keys) for f in range(n_fgs)]
    request = [(f"g{i}", labels) for i in range(n_fgs)]
    query = retrieve_pb2.Query(
        entity_label="user",
        keys_schema=["user_id"],
        keys=[retrieve_pb2.Keys(cols=[str(k)]) for k in range(n_keys)],
        feature_groups=[retrieve_pb2.FeatureGroup(label=g, feature_labels=labels) for g, _ in request],
    ).SerializeToString()

    def timed(fn: object) -> float:
        samples = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            fn()  # type: ignore[operator]
            samples.append(time.perf_counter() - t)
        return statistics.median(samples) * 1e6

    numpy_us = timed(lambda: cat.retrieve("user", ["user_id"], request, blocks))
    wire_us = timed(lambda: cat.retrieve_wire(query, lambda _entity, _keys, _fg_ids: blocks))
    return numpy_us, wire_us


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=1.0)
    args = p.parse_args()
    print("| keys | FGs of 64 fp32 | numpy out, µs | gRPC bytes out, µs | rows/s (bytes out) |")
    print("|---:|---:|---:|---:|---:|")
    for n_fgs in (1, 3):
        for n_keys in (1, 100, 500):
            numpy_us, wire_us = run(n_keys, n_fgs, args.seconds)
            print(f"| {n_keys} | {n_fgs} | {numpy_us:.1f} | {wire_us:.1f} | {n_keys / wire_us * 1e6:,.0f} |")


if __name__ == "__main__":
    main()
