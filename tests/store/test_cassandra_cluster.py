"""Issue #21: a node of the 3-node Cassandra cluster (keyspace replication factor 3) is SIGKILLed and
restarted while threads persist and retrieve through one ``FeatureStore`` at QUORUM: no call fails (the
store retries on the next node inside ``request_timeout``), no read is older than the newest write
acknowledged before it started, every acknowledged write reads back after the node returned, and the
returned node serves the store again without a restart. A short run of bench/cassandra_cluster_bench.py
(the measured variant is ``python bench/cassandra_cluster_bench.py``, bench/RESULTS.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
from _services import require_service

NODES = [("127.0.0.2", 29042), ("127.0.0.3", 29042), ("127.0.0.4", 29042)]


def _bench() -> Any:
    path = Path(__file__).resolve().parents[2] / "bench" / "cassandra_cluster_bench.py"
    spec = importlib.util.spec_from_file_location("cassandra_cluster_bench", path)
    assert spec is not None
    assert spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


@pytest.fixture(scope="module")
def cluster() -> None:
    require_service("cassandra-cluster", NODES, "scripts/services/cassandra-cluster start")


def test_node_killed_under_mixed_load_fails_no_call_and_loses_no_write(cluster: None) -> None:
    bench = _bench()
    assert bench.NODES == NODES
    out = bench.run(bench.parser().parse_args(["--smoke", "--node", "2", "--consistency", "QUORUM"]))
    assert out["failed_calls"] == 0, out
    assert out["stale_reads"] == 0, out
    assert out["lost_writes"] == 0, out
    assert out["unsure_keys"] == 0, out
    # the load ran through the kill: reads and writes while the node was down or starting
    assert out["during"]["read"]["calls"] > 0, out
    assert out["during"]["write"]["calls"] > 0, out
    assert out["after"]["read"]["calls"] > 0, out
    assert out["after"]["write"]["calls"] > 0, out
    # the returned node gets the store's requests again, with no restart of the process
    assert out["rejoined_after_s"] is not None, out
    assert all(n and n > 0 for n in out["our_requests_per_node"].values()), out
