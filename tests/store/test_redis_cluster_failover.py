"""Issue #21: a master of a Redis Cluster with a replica per master (scripts/services/redis-cluster-ha) is
SIGKILLed under load, as the store (``wait_replicas: 1``) and as the distributed cache in front of SQLite.
A light run of bench/redis_failover_bench.py (the measured variant is ``python
bench/redis_failover_bench.py``, bench/RESULTS.md)."""

from __future__ import annotations

from typing import Any

import pytest
from _bench import load_script
from _services import require_service

NODES = [("127.0.0.1", p) for p in range(17101, 17107)]


@pytest.fixture(scope="module")
def bench() -> Any:
    require_service("redis-cluster-ha", NODES, "scripts/services/redis-cluster-ha start")
    b = load_script("bench/redis_failover_bench.py")
    assert [p for _, p in NODES] == b.PORTS
    return b


def _run(bench: Any, role: str) -> dict[str, Any]:
    args = bench.parser().parse_args(["--role", role, "--keys", "1000", "--before", "1.5", "--after", "1.5"])
    [out] = bench.run(args)
    assert out["failed_over"], out  # the killed master's replica took over
    assert out["killed_master"] in bench.PORTS
    return out


def test_store_master_killed_loses_no_acknowledged_write(bench: Any) -> None:
    out = _run(bench, "store")
    assert out["lost_acknowledged_writes"] == 0, out
    assert out["stale_reads"] == 0, out
    # the failed calls are the failover's: none once the cluster is whole and the node back
    assert out["reads_ok"] > 0, out
    assert out["writes_ok"] > 0, out
    assert out["check_read_errors"] == [], out
    assert set(out["read_errors"]) <= {"UnavailableError"}, out
    assert set(out["write_errors"]) <= {"UnavailableError"}, out


def test_cache_master_killed_fails_no_read(bench: Any) -> None:
    out = _run(bench, "cache")
    assert out["reads_failed"] == 0, out  # the store answers while the cache's slots move
    assert out["writes_failed"] == 0, out
    assert out["stale_reads"] == 0, out
    assert out["lost_acknowledged_writes"] == 0, out
    assert out["cache_hit_ratio"], out  # the cache served reads
    assert not out["breaker"] or out["breaker"][-1] == "closed", out  # the cache is used again
