"""Many servers (issue #21): ``Client`` and ``ofs rpc`` over several addresses, balanced round-robin; a
retrieve that fails with ``UNAVAILABLE`` is tried again on another replica, a persist only when gRPC never
sent it; three real ``ofs serve`` processes, one SIGKILLed under load, and no retrieve fails."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from conftest import fg_label

from online_feature_store.cli import main
from online_feature_store.client import Client, _unsent, channel_target, open_channel
from online_feature_store.errors import InvalidInputError, UnavailableError
from online_feature_store.feature_store import FeatureStore
from online_feature_store.results import FOUND
from online_feature_store.types import DataType

BENCH = Path(__file__).resolve().parents[2] / "bench" / "replica_bench.py"
FP32 = fg_label(DataType.FP32)
SCHEMA = ["user_id"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- addresses ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("address", "target"),
    [
        ("127.0.0.1:8089", "127.0.0.1:8089"),
        ("features.internal:8089", "features.internal:8089"),  # one name: gRPC resolves it (all its IPs)
        ("10.0.0.1:8089, 10.0.0.2:8089,10.0.0.3:9000", "ipv4:10.0.0.1:8089,10.0.0.2:8089,10.0.0.3:9000"),
        (["10.0.0.1:8089", "10.0.0.2:8089"], "ipv4:10.0.0.1:8089,10.0.0.2:8089"),
        (["[::1]:8089", "[fd00::2]:8089"], "ipv6:[::1]:8089,[fd00::2]:8089"),
        ("ipv4:10.0.0.1:1,10.0.0.2:2", "ipv4:10.0.0.1:1,10.0.0.2:2"),  # a target URI, as it is
        ("dns:///features.internal:8089", "dns:///features.internal:8089"),
    ],
)
def test_channel_target(address: str | list[str], target: str) -> None:
    assert channel_target(address) == target


@pytest.mark.parametrize(
    ("address", "error"),
    [
        ("", "expected host:port"),
        ([], "expected host:port"),
        ("10.0.0.1:1,,10.0.0.2:1", "expected host:port"),
        (
            "a.internal:8089,b.internal:8089",
            "'a.internal:8089' \\(of 2\\): several addresses must be IP:port",
        ),
        ("10.0.0.1,10.0.0.2:8089", "'10.0.0.1' \\(of 2\\): expected IP:port, port 1-65535"),
        ("10.0.0.1:0,10.0.0.2:8089", "'10.0.0.1:0' \\(of 2\\): expected IP:port, port 1-65535"),
        ("10.0.0.1:1,[::1]:1", "IPv4 and IPv6 addresses cannot be mixed"),
    ],
)
def test_bad_addresses_are_refused(address: str | list[str], error: str) -> None:
    with pytest.raises(InvalidInputError, match=error):
        channel_target(address)
    with pytest.raises(InvalidInputError, match=error):
        Client(address)


# -- a replica that refuses every call ------------------------------------------------------------------
class Refusing:
    """An in-process gRPC server answering every call ``UNAVAILABLE`` (a replica whose stores are down),
    counting the calls per method."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(4))
        handler = grpc.method_handlers_generic_handler(
            "retrieve.FeatureService",
            {m: self._method(m) for m in ("RetrieveFeatures", "RetrieveDecodedResult")},
        )
        persist = grpc.method_handlers_generic_handler(
            "persist.FeatureService", {"PersistFeatures": self._method("PersistFeatures")}
        )
        self.server.add_generic_rpc_handlers([handler, persist])
        # Reflection of the real services' descriptors, so `ofs rpc` can learn the API from it too.
        from grpc_reflection.v1alpha import reflection

        from online_feature_store._proto import persist_pb2, retrieve_pb2

        names = [
            m.DESCRIPTOR.services_by_name["FeatureService"].full_name for m in (retrieve_pb2, persist_pb2)
        ]
        reflection.enable_server_reflection([*names, reflection.SERVICE_NAME], self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _method(self, name: str) -> grpc.RpcMethodHandler[bytes, bytes]:
        def refuse(request: bytes, context: grpc.ServicerContext) -> bytes:
            with self._lock:
                self.calls[name] = self.calls.get(name, 0) + 1
            context.abort(grpc.StatusCode.UNAVAILABLE, "store main is unavailable")

        return grpc.unary_unary_rpc_method_handler(refuse)

    def count(self, name: str) -> int:
        with self._lock:
            return self.calls.get(name, 0)


@pytest.fixture
def refusing() -> Iterator[Refusing]:
    r = Refusing()
    yield r
    r.server.stop(0).wait()


def test_a_retrieve_refused_by_one_replica_is_answered_by_another(
    served: tuple[str, FeatureStore], refusing: Refusing
) -> None:
    with Client(served[0], keys_schemas={"user": SCHEMA}) as c:
        c.persist("user", FP32, ["r1"], np.array([[1.5, 2.5]], dtype=np.float32), features=["f0", "f1"])
    address = [f"127.0.0.1:{refusing.port}", served[0]]
    with Client(address, keys_schemas={"user": SCHEMA}) as c:
        # Round-robin alternates over the two ready replicas, so the refusing one gets its share; every
        # call it refuses is sent again and answered by the other.
        for _ in range(200):
            r = c.retrieve("user", ["r1"], {FP32: ["f0", "f1"]})
            assert r.values[FP32].tolist() == [[1.5, 2.5]]
            assert r.status[FP32].tolist() == [FOUND]
            d = c.retrieve_decoded("user", ["r1"], {FP32: ["f0"]})
            assert d.values[FP32] == [["1.5"]]
            if refusing.count("RetrieveFeatures") and refusing.count("RetrieveDecodedResult"):
                break
        assert refusing.count("RetrieveFeatures") > 0
        assert refusing.count("RetrieveDecodedResult") > 0


def test_a_persist_a_replica_received_is_not_sent_again(
    served: tuple[str, FeatureStore], refusing: Refusing
) -> None:
    address = f"127.0.0.1:{refusing.port},{served[0]}"
    values = np.array([[1.0, 2.0]], dtype=np.float32)
    refused: list[UnavailableError] = []
    with Client(address, keys_schemas={"user": SCHEMA}, retries=4) as c:
        for _ in range(200):
            before = refusing.count("PersistFeatures")
            try:
                c.persist("user", FP32, ["p1"], values, features=["f0", "f1"], data_type="fp32")
            except UnavailableError as err:
                refused.append(err)
            # The refusing replica saw it at most once: it may have written it, so it is not sent again.
            assert refusing.count("PersistFeatures") == before + len(refused)
            if refused:
                break
    assert len(refused) == 1, "round-robin never sent a persist to the refusing replica"
    assert "store main is unavailable" in str(refused[0])


def test_a_persist_no_server_received_is_sent_again(feature_store: FeatureStore) -> None:
    from online_feature_store.server.app import ServerConfig, build_server, mark_serving

    port = _free_port()
    # Nothing listens: gRPC fails the call without sending it (the wording `_unsent` knows).
    with Client(f"127.0.0.1:{port}", retries=0, keys_schemas={"user": SCHEMA}) as c:
        with pytest.raises(UnavailableError) as info:
            c.persist("user", FP32, ["late"], np.array([[3.0, 4.0]]), features=["f0", "f1"], data_type="fp32")
        assert isinstance(info.value.__cause__, grpc.RpcError)
        assert _unsent(info.value.__cause__)

    servers: list[Any] = []

    def start_late() -> None:
        time.sleep(0.5)
        srv, _, health = build_server(feature_store, ServerConfig(port=port, metrics_port=0))
        srv.start()
        mark_serving(feature_store, health)
        servers.append(srv)

    late = threading.Thread(target=start_late)
    late.start()
    try:
        with Client(f"127.0.0.1:{port}", timeout=30, retries=100, max_backoff=0.2) as c:
            c.persist("user", FP32, ["late"], np.array([[3.0, 4.0]]), features=["f0", "f1"], data_type="fp32")
            r = c.retrieve("user", ["late"], {FP32: ["f0", "f1"]}, keys_schema=SCHEMA)
        assert r.values[FP32].tolist() == [[3.0, 4.0]]
    finally:
        late.join()
        for srv in servers:
            srv.stop(0).wait()


def _answering(n: int) -> tuple[list[grpc.Server], list[str]]:
    """``n`` in-process servers whose ``/t.S/M`` answers the server's index."""
    servers, addresses = [], []
    for i in range(n):
        server = grpc.server(futures.ThreadPoolExecutor(2))
        answer = grpc.unary_unary_rpc_method_handler(lambda _req, _ctx, i=i: str(i).encode())
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("t.S", {"M": answer})])
        addresses.append(f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}")
        server.start()
        servers.append(server)
    return servers, addresses


def test_round_robin_unless_the_caller_configures_balancing() -> None:
    servers, addresses = _answering(3)
    try:
        with open_channel(addresses) as channel:
            assert {channel.unary_unary("/t.S/M")(b"", timeout=10) for _ in range(30)} == {b"0", b"1", b"2"}
        pick_first = json.dumps({"loadBalancingConfig": [{"pick_first": {}}]})
        with open_channel(addresses, options=[("grpc.service_config", pick_first)]) as channel:
            assert len({channel.unary_unary("/t.S/M")(b"", timeout=10) for _ in range(30)}) == 1
    finally:
        for server in servers:
            server.stop(0).wait()


def test_tls_over_a_list_of_ips(tmp_path: Path) -> None:
    """Several IPs over TLS: the certificates name the service, and ``grpc.default_authority`` says which
    name to check them against (without it the IP is checked, and no replica is reachable)."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=features.internal", "-addext", "subjectAltName=DNS:features.internal",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    creds = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    servers, ports = [], []
    for i in range(2):
        server = grpc.server(futures.ThreadPoolExecutor(2))
        answer = grpc.unary_unary_rpc_method_handler(lambda _req, _ctx, i=i: str(i).encode())
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("t.S", {"M": answer})])
        ports.append(server.add_secure_port("127.0.0.1:0", creds))
        server.start()
        servers.append(server)
    address = [f"127.0.0.1:{p}" for p in ports]
    try:
        authority = [("grpc.default_authority", "features.internal")]
        with open_channel(address, root_certificates=cert.read_bytes(), options=authority) as channel:
            answers = {channel.unary_unary("/t.S/M")(b"", timeout=10) for _ in range(20)}
        assert answers == {b"0", b"1"}
        with (
            open_channel(address, root_certificates=cert.read_bytes()) as channel,
            pytest.raises(grpc.RpcError) as info,
        ):
            channel.unary_unary("/t.S/M")(b"", timeout=10)
        assert _unsent(info.value)  # the handshake failed: nothing was sent
    finally:
        for server in servers:
            server.stop(0).wait()


SLOW_SERVER = """
import sys, time, grpc
from concurrent import futures
def slow(request, context):
    time.sleep(60)
    return b""
server = grpc.server(futures.ThreadPoolExecutor(2))
server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
    "persist.FeatureService", {"PersistFeatures": grpc.unary_unary_rpc_method_handler(slow)})])
print(server.add_insecure_port("127.0.0.1:0"), flush=True)
server.start()
server.wait_for_termination()
"""


def test_a_call_cut_off_mid_way_is_not_taken_for_unsent(tmp_path: Path) -> None:
    """A server that dies with the call in flight: ``UNAVAILABLE`` that `_unsent` must not take for a call
    that never left (the persist may have been written)."""
    script = tmp_path / "slow_server.py"
    script.write_text(SLOW_SERVER)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        errors: list[grpc.RpcError] = []
        with open_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            stub = channel.unary_unary("/persist.FeatureService/PersistFeatures")

            def call() -> None:
                try:
                    stub(b"", timeout=60)
                except grpc.RpcError as err:
                    errors.append(err)

            caller = threading.Thread(target=call)
            caller.start()
            time.sleep(0.5)  # the call reaches the server, which sleeps on it
            proc.kill()
            caller.join()
        assert len(errors) == 1
        assert isinstance(errors[0], grpc.Call)
        assert errors[0].code() == grpc.StatusCode.UNAVAILABLE
        assert not _unsent(errors[0]), errors[0].details()
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_rpc_spreads_over_several_addresses(
    served: tuple[str, FeatureStore], refusing: Refusing, capsys: pytest.CaptureFixture[str]
) -> None:
    """``ofs rpc`` takes a list too: its calls go round-robin (one to the refusing replica fails, as an
    ``ofs rpc`` call is sent once)."""
    address = f"127.0.0.1:{refusing.port},{served[0]}"
    query = json.dumps(
        {"entity_label": "user", "keys_schema": SCHEMA, "keys": [{"cols": ["x"]}],
         "feature_groups": [{"label": FP32, "feature_labels": ["f0"]}]}
    )  # fmt: skip
    answered = refused = 0
    call = ["rpc", address, "call", "retrieve.FeatureService/RetrieveFeatures", "-d", query]
    for _ in range(40):
        if main(call) == 0:
            answered += 1
            assert '"fgStatus"' in capsys.readouterr().out
        else:
            refused += 1
            assert "UNAVAILABLE: store main is unavailable" in capsys.readouterr().err
        if answered and refused:
            break
    assert answered > 0
    assert refused > 0
    assert main(["rpc", "a.internal:1,b.internal:1", "list"]) == 1
    assert "several addresses must be IP:port" in capsys.readouterr().err


# -- three real `ofs serve` processes, one killed under load --------------------------------------------
def test_a_replica_killed_under_load_fails_no_retrieve() -> None:
    """bench/replica_bench.py --smoke: three `ofs serve` on one data directory, three threads retrieving
    (every value checked) through one Client given the three addresses; the first replica is SIGKILLed
    after 300 calls, 600 more follow."""
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--json"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["failed"] == 0, out["failures"]
    assert out["calls"] >= 900
    # Every replica served before the kill; the two left served every call after it.
    assert all(n > 0 for n in out["served_before"])
    assert out["served_after"][0] is None
    assert all(a > b for a, b in zip(out["served_after"][1:], out["served_before"][1:], strict=True))
    assert out["during"]["calls"] > 0
