"""scripts/stack: ``up`` brings the whole feature store up on 127.0.0.1, ``status`` reports it healthy, a
feature written through gRPC (and through Kafka when the consumer runs) reads back over gRPC, and ``down``
stops exactly what ``up`` started.

The stack here manages two private services in a private services directory, on free ports: an etcd that
the test starts before ``up`` (so the stack must use it and leave it running) and a Redis that ``up`` has
to start and ``down`` to stop. Kafka and Cassandra are the shared ones, used as external endpoints and
never started or stopped here. Keyspace, topic, group and every port are this test's own.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from _services import reachable, require_service

from online_feature_store._proto import persist_pb2, retrieve_pb2

ROOT = Path(__file__).resolve().parents[1]
STACK = ROOT / "scripts" / "stack"
SERVICES = ROOT / "scripts" / "services"
KAFKA, CASSANDRA = ("127.0.0.1", 19092), ("127.0.0.1", 19042)


def _free_port(pair: bool = False) -> int:
    """A port nothing is bound to (with ``pair``, its successor too: etcd's peer port)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
            if not pair:
                return port
            with socket.socket() as peer:
                try:
                    peer.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port


def _run(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(STACK), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _service(env: dict[str, str], name: str, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SERVICES / name), command], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def stack_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    require_service("kafka", [KAFKA], "scripts/services/kafka start")
    require_service("cassandra", [CASSANDRA], "scripts/services/cassandra start")
    tag = uuid.uuid4().hex[:10]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OFS_STACK_")}
    env.update(
        OFS_SERVICES_DIR=str(tmp_path / "services"),
        OFS_STACK_SERVICES="redis etcd",
        OFS_REDIS_PORT=str(_free_port()),
        OFS_ETCD_PORT=str(_free_port(pair=True)),
        OFS_STACK_PORT=str(_free_port()),
        OFS_STACK_METRICS_PORT=str(_free_port()),
        OFS_STACK_CONSUMER_HEALTH_PORT=str(_free_port()),
        OFS_STACK_HORIZON_PORT=str(_free_port()),
        OFS_STACK_KEYSPACE=f"ofs_stack_{tag}",
        OFS_STACK_TOPIC=f"ofs-stack-{tag}",
        OFS_STACK_GROUP=f"ofs-stack-{tag}",
    )
    started = _service(env, "etcd", "start")
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield env
    finally:
        # Whatever happened, nothing of this test keeps running, and its keyspace and topics go.
        _run(env, "down")
        _service(env, "redis", "stop")
        _service(env, "etcd", "stop")
        _delete_topics(env["OFS_STACK_TOPIC"])
        from cassandra.cluster import Cluster  # type: ignore[import-untyped]

        cluster = Cluster([CASSANDRA[0]], port=CASSANDRA[1], protocol_version=4)
        try:
            cluster.connect().execute(f"DROP KEYSPACE IF EXISTS {env['OFS_STACK_KEYSPACE']}", timeout=60)
        finally:
            cluster.shutdown()


def _delete_topics(topic: str) -> None:
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=f"{KAFKA[0]}:{KAFKA[1]}")
    try:
        existing = set(admin.list_topics())
        doomed = [t for t in (topic, f"{topic}.dlq") if t in existing]
        if doomed:
            admin.delete_topics(doomed)
    finally:
        admin.close()


def _persist_query(user: str, values: tuple[float, float, float]) -> persist_pb2.Query:
    return persist_pb2.Query(
        entity_label="user",
        keys_schema=["user_id"],
        feature_group_schema=[
            persist_pb2.FeatureGroupSchema(
                label="activity", feature_labels=["ctr_7d", "sessions_7d", "spend_30d"]
            )
        ],
        data=[
            persist_pb2.Data(
                key_values=[user],
                feature_values=[
                    persist_pb2.FeatureValues(values=persist_pb2.Values(fp32_values=list(values)))
                ],
            )
        ],
    )


def _retrieve(channel: grpc.Channel, users: list[str]) -> retrieve_pb2.Result:
    call = channel.unary_unary(
        "/retrieve.FeatureService/RetrieveFeatures",
        request_serializer=retrieve_pb2.Query.SerializeToString,
        response_deserializer=retrieve_pb2.Result.FromString,
    )
    query = retrieve_pb2.Query(
        entity_label="user",
        keys_schema=["user_id"],
        keys=[retrieve_pb2.Keys(cols=[u]) for u in users],
        feature_groups=[retrieve_pb2.FeatureGroup(label="activity", feature_labels=["spend_30d", "ctr_7d"])],
    )
    result: retrieve_pb2.Result = call(query, timeout=10)
    return result


def _spend(row: retrieve_pb2.Row) -> float:
    value: float = struct.unpack("<f", row.columns[0])[0]
    return value


def _through_kafka(env: dict[str, str], channel: grpc.Channel) -> None:
    """A persist.Query produced to the topic is stored by the consumer and served by the API server."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=f"{KAFKA[0]}:{KAFKA[1]}", acks="all")
    try:
        producer.send(env["OFS_STACK_TOPIC"], _persist_query("k1", (0.5, 2, 77.0)).SerializeToString()).get(
            30
        )
    finally:
        producer.close()
    deadline = time.monotonic() + 120  # a bound, not an expectation: group join and a batch take ~seconds
    while True:
        row = _retrieve(channel, ["k1"]).rows[0]
        if row.fg_status[0] == 0:
            break
        assert time.monotonic() < deadline, "the consumer did not store the Kafka message"
        time.sleep(0.5)
    assert _spend(row) == 77.0


@pytest.mark.slow
def test_up_status_retrieve_down(stack_env: dict[str, str]) -> None:
    env = stack_env
    services = Path(env["OFS_SERVICES_DIR"])
    state = services / "stack"

    up = _run(env, "up", timeout=600)
    assert up.returncode == 0, up.stdout + up.stderr
    # etcd ran before `up`: used, not recorded; Redis did not: started and recorded.
    assert (state / "started-services").read_text().split() == ["redis"]
    pids = {p.stem: int(p.read_text()) for p in state.glob("*.pid")}
    assert "serve" in pids
    pids["redis"] = int((services / "redis" / "redis.pid").read_text())

    status = _run(env, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    states = {line.split()[0]: line.split()[1] for line in status.stdout.splitlines()[1:-1]}
    assert states["redis"] == states["etcd"] == states["serve"] == "healthy", status.stdout
    for component in ("consume", "horizon"):
        assert states[component] == ("healthy" if component in pids else "skipped"), status.stdout

    with grpc.insecure_channel(f"127.0.0.1:{env['OFS_STACK_PORT']}") as channel:
        persist = channel.unary_unary(
            "/persist.FeatureService/PersistFeatures",
            request_serializer=persist_pb2.Query.SerializeToString,
            response_deserializer=persist_pb2.Result.FromString,
        )
        persist(_persist_query("u1", (0.25, 3, 410.5)), timeout=30)
        found, missing = _retrieve(channel, ["u1", "nobody"]).rows
        assert (list(found.fg_status), _spend(found)) == ([0], 410.5)
        assert (list(missing.fg_status), _spend(missing)) == ([1], -1.0)  # the registry's default
        if "consume" in pids:
            _through_kafka(env, channel)
    if "horizon" in pids:
        port = env["OFS_STACK_HORIZON_PORT"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as page:
            assert page.status == 200
            assert b"<html" in page.read().lower()

    down = _run(env, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    for name, pid in pids.items():
        assert not _alive(pid), f"{name} (pid {pid}) still runs after down"
    assert not reachable("127.0.0.1", int(env["OFS_REDIS_PORT"]))
    assert not list(state.glob("*.pid"))
    assert _service(env, "etcd", "status").returncode == 0, "down stopped etcd, which ran before up"

    # After down: what up started is down and still the stack's (not "external"); etcd runs, external.
    after = _run(env, "status")
    assert after.returncode == 1, after.stdout + after.stderr
    rows = {line.split()[0]: line.split()[1:4] for line in after.stdout.splitlines()[1:-1]}
    assert rows["redis"] == ["DOWN", "-", "stack"], after.stdout
    assert (rows["etcd"][0], rows["etcd"][2]) == ("healthy", "external"), after.stdout
    assert rows["serve"] == ["DOWN", "-", "stack"], after.stdout


def test_unknown_command_is_a_usage_error() -> None:
    ran = subprocess.run([str(STACK), "sideways"], capture_output=True, text=True, check=False)
    assert ran.returncode == 2
    assert "up|down|status|logs" in ran.stderr
