"""Issue #21: a broker of the 3-broker cluster (replication factor 3, ``min.insync.replicas`` 2) is SIGKILLed
and restarted while two ``ofs consume`` processes ingest: no row is lost, every key ends on its newest
version, the group's lag returns to 0. A light run of bench/kafka_cluster_bench.py (the measured variant is
``python bench/kafka_cluster_bench.py``, bench/RESULTS.md)."""

from __future__ import annotations

from typing import Any

import pytest
from _bench import load_script
from _services import require_service

BROKERS = [("127.0.0.1", 29092), ("127.0.0.1", 29102), ("127.0.0.1", 29112)]


def _bench() -> Any:
    return load_script("bench/kafka_cluster_bench.py")


@pytest.fixture(scope="module")
def cluster() -> None:
    require_service("kafka-cluster", BROKERS, "scripts/services/kafka-cluster start")


def test_broker_killed_under_two_consumers_loses_nothing(cluster: None) -> None:
    bench = _bench()
    assert bench.BROKERS == BROKERS
    args = bench.parser().parse_args(
        ["--keys", "400", "--versions", "10", "--rows-per-message", "50", "--down-seconds", "3"]
    )
    out = bench.run(args)
    assert out["killed_broker"] in (1, 2, 3)
    assert out["restarted_broker"] == out["killed_broker"]
    assert out["keys_missing"] == 0, out
    assert out["keys_stale"] == 0, out  # every key holds version 10, the last one sent
    assert out["rows_lost"] == 0, out
    assert out["final_lag"] == 0, out
    assert out["consumer_exits"] == [0, 0], out
