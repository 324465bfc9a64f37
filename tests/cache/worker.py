"""Subprocess side of the cross-process invalidation tests (run as a script, never collected by pytest).

    python worker.py DATA_DIR REGISTRY_URL [DISTRIBUTED_CACHE_URL]

Reads commands from stdin, one per line: ``read KEY`` answers one JSON line ``{"values": [...],
"store_reads": n}`` (the FG ``g1`` of ``KEY`` and how many store reads this process has made so far, which
stop growing while the in-process cache answers), ``quit`` stops.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from online_feature_store.feature_store import FeatureStore
from online_feature_store.metrics import FeatureStoreMetrics


class StoreReads(FeatureStoreMetrics):
    def __init__(self) -> None:
        self.reads = 0

    def store_call(self, store_id: str, op: str, seconds: float, failed: bool) -> None:
        if op == "read":
            self.reads += 1


def main(argv: list[str]) -> None:
    data_dir, registry = argv[0], argv[1]
    remote = argv[2] if len(argv) > 2 else None
    metrics = StoreReads()
    with FeatureStore(registry, data_directory=data_dir, distributed_cache=remote, metrics=metrics) as fs:
        print("ready", flush=True)
        for line in sys.stdin:
            cmd, _, arg = line.strip().partition(" ")
            if cmd == "quit":
                break
            if cmd == "read":
                r = fs.retrieve("user", [arg], {"g1": ["f0", "f1", "f2", "f3"]})
                values = [float(v) for v in r.values["g1"][0]]
                print(json.dumps({"values": values, "store_reads": metrics.reads}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
