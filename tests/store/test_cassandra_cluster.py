"""Issue #21: a node of the 3-node Cassandra cluster (keyspace replication factor 3) is SIGKILLed and
restarted while threads persist and retrieve through one ``FeatureStore`` at QUORUM: no call fails (the
store retries on the next node inside ``request_timeout``), no read is older than the newest write
acknowledged before it started, every acknowledged write reads back after the node returned, and the
returned node serves the store again without a restart. A short run of bench/cassandra_cluster_bench.py
(the measured variant is ``python bench/cassandra_cluster_bench.py``, bench/RESULTS.md). And token-aware
routing, seen from the nodes' own request counts."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from _bench import load_script
from _services import require_service

from online_feature_store.store.base import BlockWrite
from online_feature_store.store.cassandra_store import CassandraStore
from tests.store.conftest import make_block, make_entity

NODES = [("127.0.0.2", 29042), ("127.0.0.3", 29042), ("127.0.0.4", 29042)]


def _bench() -> Any:
    return load_script("bench/cassandra_cluster_bench.py")


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


def _table_counts(host: str, keyspace: str, table: str) -> dict[str, int]:
    """The node's own count of requests it coordinated and of reads/writes it ran locally, on ``table``."""
    bench = _bench()
    cluster, session = bench._node_session(host)
    try:
        out = {}
        for view in ("coordinator_write", "local_write", "coordinator_read", "local_read"):
            row = session.execute(
                f"SELECT count FROM system_views.{view}_latency WHERE keyspace_name = %s AND table_name = %s",
                (keyspace, table),
            ).one()
            out[view] = int(row.count) if row else 0
        return out
    finally:
        cluster.shutdown()


def test_single_key_requests_go_to_the_replica_of_their_key(cluster: None) -> None:
    """Token-aware routing (the driver's default, which the store keeps): with replication factor 1 each
    key lives on one node, and every write and read of a key is coordinated by that node, so no node
    coordinates a request it does not run itself."""
    keyspace = f"ofs_route_{uuid.uuid4().hex[:10]}"
    store = CassandraStore(
        [h for h, _ in NODES], NODES[0][1], keyspace, replication_factor=1, read_consistency="ONE",
        write_consistency="ONE",
    )  # fmt: skip
    entity = make_entity(fg_ids=(1,), n_keys=1)
    keys = [(f"k{i}",) for i in range(300)]
    try:
        store.ensure([entity])
        store.write(entity, [BlockWrite(k, 1, make_block(i)) for i, k in enumerate(keys)])
        got = store.read(entity, keys, [1])
        assert all(row[0] == make_block(i) for i, row in enumerate(got))
        counts = {h: _table_counts(h, keyspace, entity.label) for h, _ in NODES}
        assert sum(c["coordinator_write"] for c in counts.values()) == len(keys), counts
        assert sum(c["coordinator_read"] for c in counts.values()) == len(keys), counts
        for c in counts.values():
            assert c["coordinator_write"] == c["local_write"], counts
            assert c["coordinator_read"] == c["local_read"], counts
        assert all(c["local_write"] > 0 for c in counts.values()), counts  # every node owns some keys
    finally:
        store.close()
        _bench()._drop(keyspace)
