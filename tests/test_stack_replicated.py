"""``scripts/stack up --replicated`` (issue #21): three ``ofs serve`` replicas on a 3-member etcd cluster;
``status`` reports each; a ``Client`` given the addresses ``status`` prints keeps retrieving when one
replica is SIGKILLed; ``down`` stops every process ``up`` started, the etcd cluster included.

As in tests/test_stack.py: the etcd cluster is private to the test (its own services directory, free
ports) and started by ``up``; Kafka and Cassandra are the shared ones, used as external endpoints with this
test's own keyspace and topic.
"""

from __future__ import annotations

import os
import signal
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from _services import require_service
from test_stack import CASSANDRA, KAFKA, _alive, _delete_topics, _free_port, _run, _service

from online_feature_store import Client


def _free_ports(*offsets: int) -> int:
    """A port ``p`` with ``p + offset`` free for every offset (the replicas' and etcd members' ports)."""
    while True:
        base = _free_port()
        if base + max(offsets) > 65535:
            continue
        sockets = []
        try:
            for off in offsets:
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", base + off))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()


@pytest.fixture
def stack_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    require_service("kafka", [KAFKA], "scripts/services/kafka start")
    require_service("cassandra", [CASSANDRA], "scripts/services/cassandra start")
    tag = uuid.uuid4().hex[:10]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OFS_STACK_")}
    env.update(
        OFS_SERVICES_DIR=str(tmp_path / "services"),
        OFS_STACK_SERVICES="etcd-cluster",
        OFS_ETCD_CLUSTER_PORT=str(_free_ports(0, 1, 10, 11, 20, 21)),
        OFS_STACK_PORT=str(_free_ports(0, 100, 200)),
        OFS_STACK_METRICS_PORT=str(_free_ports(0, 100, 200)),
        OFS_STACK_CONSUMER_HEALTH_PORT=str(_free_port()),
        OFS_STACK_HORIZON_PORT=str(_free_port()),
        OFS_STACK_KEYSPACE=f"ofs_stack_{tag}",
        OFS_STACK_TOPIC=f"ofs-stack-{tag}",
        OFS_STACK_GROUP=f"ofs-stack-{tag}",
    )
    try:
        yield env
    finally:
        _run(env, "down")
        _service(env, "etcd-cluster", "stop")
        _delete_topics(env["OFS_STACK_TOPIC"])
        from cassandra.cluster import Cluster  # type: ignore[import-untyped]

        cluster = Cluster([CASSANDRA[0]], port=CASSANDRA[1], protocol_version=4)
        try:
            cluster.connect().execute(f"DROP KEYSPACE IF EXISTS {env['OFS_STACK_KEYSPACE']}", timeout=60)
        finally:
            cluster.shutdown()


@pytest.mark.slow
def test_up_replicated_survives_a_replica(stack_env: dict[str, str]) -> None:
    env = stack_env
    state = Path(env["OFS_SERVICES_DIR"]) / "stack"
    up = _run(env, "up", "--replicated", timeout=600)
    assert up.returncode == 0, up.stdout + up.stderr
    assert (state / "started-services").read_text().split() == ["etcd-cluster"]
    pids = {p.stem: int(p.read_text()) for p in state.glob("*.pid")}
    assert {"serve", "serve-2", "serve-3"} <= set(pids)

    status = _run(env, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    # A row per component, then the registry line and the replicas line.
    rows = [line.split() for line in status.stdout.splitlines()[1:-2]]
    states = {row[0]: row[1] for row in rows}
    assert states["etcd-cluster"] == states["serve"] == states["serve-2"] == states["serve-3"] == "healthy"
    port = int(env["OFS_STACK_PORT"])
    addresses = ",".join(f"127.0.0.1:{port + off}" for off in (0, 100, 200))
    assert f"serve replicas: {addresses} " in status.stdout
    assert "etcd://127.0.0.1:" in status.stdout  # the registry on the cluster's members

    fg, features = "activity", ["ctr_7d", "sessions_7d", "spend_30d"]
    with Client(addresses, keys_schemas={"user": ["user_id"]}) as client:
        client.persist("user", fg, ["u1"], np.array([[0.25, 3, 410.5]]), features=features, data_type="fp32")
        os.kill(pids["serve-2"], signal.SIGKILL)
        for _ in range(30):  # every replica's turn comes round several times
            r = client.retrieve("user", ["u1"], {fg: ["spend_30d"]})
            assert r.values[fg].tolist() == [[410.5]]

    after_kill = _run(env, "status")
    assert after_kill.returncode == 1, after_kill.stdout
    assert any(line.split()[:2] == ["serve-2", "DOWN"] for line in after_kill.stdout.splitlines())

    down = _run(env, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    for name, pid in pids.items():
        assert not _alive(pid), f"{name} (pid {pid}) still runs after down"
    assert _service(env, "etcd-cluster", "status").returncode == 1, "down left the etcd cluster up started"
