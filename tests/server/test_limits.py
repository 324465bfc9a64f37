"""Request limits on a real ``ofs serve``: keys per retrieve, rows per persist and the estimated response
size are refused with ``RESOURCE_EXHAUSTED`` before any store read or allocation (issue 14: one retrieve of
60k keys of a 65535-long fp64 vector used to abort the process, 5M keys ran 65 s at 3.7 GB first), and a
persist naming no features is ``INVALID_ARGUMENT`` with nothing written. Memory is read from
``/proc/<pid>/status``; nothing here asserts a time."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import yaml
from test_metrics import _free_port, _wait_serving, scrape, value

from online_feature_store._proto import persist_pb2 as P  # noqa: N812
from online_feature_store._proto import retrieve_pb2 as R  # noqa: N812
from online_feature_store.errors import InvalidInputError
from online_feature_store.server.main import load_config

RETRIEVE = "/retrieve.FeatureService/RetrieveFeatures"
DECODED = "/retrieve.FeatureService/RetrieveDecodedResult"
PERSIST = "/persist.FeatureService/PersistFeatures"
VECTOR = 65_535
ROW = 1 + 3 + VECTOR * 8 + 3
"""The largest response row of the vector FG, without its key: the cell's tag, length and bytes, and
the status field."""

DOC = {
    "stores": [{"id": "main", "kind": "sqlite", "settings": {"path": "store.db"}}],
    "entities": [
        {
            "label": "user",
            "keys": [{"label": "user_id", "column": "uid"}],
            "feature_groups": [
                {
                    "label": "emb",
                    "data_type": "fp64vector",
                    "store": "main",
                    "features": [{"label": "v", "vector_length": VECTOR}],
                },
                {
                    "label": "g",
                    "data_type": "fp32",
                    "store": "main",
                    "features": [{"label": "a", "default": 1.5}, {"label": "b", "default": -1.0}],
                },
            ],
        }
    ],
}


@dataclass
class Serve:
    proc: subprocess.Popen[bytes]
    channel: grpc.Channel
    metrics_port: int
    http_port: int
    log: Path

    def rss_mb(self) -> float:
        assert self.proc.poll() is None, self.log.read_text()
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def store_reads(self) -> float:
        return value(scrape(self.metrics_port), "ofs_store_duration_seconds_count", op="read")


@contextlib.contextmanager
def serving(tmp_path: Path, *flags: str) -> Iterator[Serve]:
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "features.yaml").write_text(yaml.safe_dump(DOC))
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    subprocess.run(
        [sys.executable, "-m", "online_feature_store.cli", "registry", "apply", "-y", "-f",
         str(tmp_path / "features.yaml"), "--registry", f"sqlite:///{data / 'registry.db'}"],
        check=True, env=env, capture_output=True, timeout=120,
    )  # fmt: skip
    port, metrics_port, http_port = _free_port(), _free_port(), _free_port()
    env["OFS_METRICS_PORT"] = str(metrics_port)
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "online_feature_store.cli", "serve", "--port", str(port),
             "--http-port", str(http_port), "--data-dir", str(data), *flags],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    address = f"127.0.0.1:{port}"
    # A client that would send (and take) anything: the limits under test are the server's.
    channel = grpc.insecure_channel(
        address, options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    )
    try:
        _wait_serving(address, proc, log)
        yield Serve(proc, channel, metrics_port, http_port, log)
    finally:
        channel.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    """``ofs serve`` with its default limits (10,000 keys, 100,000 rows, 64 MiB)."""
    with serving(tmp_path_factory.mktemp("limits")) as served:
        yield served


def _field(number: int, body: bytes) -> bytes:
    """A length-delimited protobuf field (lengths < 128)."""
    assert len(body) < 128
    return bytes([number << 3 | 2, len(body)]) + body


def retrieve_query(fg: str, features: list[str], n: int, *, same_key: bool = False) -> bytes:
    """``retrieve.Query`` bytes of ``n`` keys (``same_key``: one key repeated, so millions cost nothing
    to build here)."""
    head = R.Query(
        entity_label="user",
        feature_groups=[R.FeatureGroup(label=fg, feature_labels=features)],
        keys_schema=["user_id"],
    ).SerializeToString()
    if same_key:
        return head + _field(4, _field(1, b"u1")) * n
    return head + b"".join(_field(4, _field(1, f"u{i}".encode())) for i in range(n))


def call(channel: grpc.Channel, method: str, request: bytes) -> bytes:
    reply: bytes = channel.unary_unary(method)(request, timeout=60)
    return reply


def refused(channel: grpc.Channel, method: str, request: bytes) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call(channel, method, request)
    err = info.value
    assert isinstance(err, grpc.Call)
    return err.code(), err.details() or ""


def served_a_row(serve: Serve) -> None:
    """The server is alive and answers the next request (one key of the 512 KiB vector)."""
    result = R.Result.FromString(call(serve.channel, RETRIEVE, retrieve_query("emb", ["v"], 1)))
    assert len(result.rows) == 1
    assert len(result.rows[0].columns[0]) == VECTOR * 8


def test_the_request_that_aborted_the_server_is_refused_and_it_keeps_serving(serve: Serve) -> None:
    """Issue 14 #1: 60k keys of the 65535-long fp64 vector (a 0.6 MB request, a 31 GB response)."""
    before, reads = serve.rss_mb(), serve.store_reads()
    code, message = refused(serve.channel, RETRIEVE, retrieve_query("emb", ["v"], 60_000))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert message == (
        'retrieve for entity "user": 60000 keys, over the limit of 10000 keys (max_keys_per_request)'
    )
    assert serve.rss_mb() - before < 100
    assert serve.store_reads() == reads
    served_a_row(serve)


def test_a_response_over_the_message_limit_is_refused_from_its_estimate(serve: Serve) -> None:
    """5,000 keys (under the key limit) of 512 KiB each: a 2.6 GB response, refused from the plan
    before any store read (it used to be built, 26 s, then refused by gRPC's send limit)."""
    before, reads = serve.rss_mb(), serve.store_reads()
    for method in (RETRIEVE, DECODED):
        code, message = refused(serve.channel, method, retrieve_query("emb", ["v"], 5000))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"estimated response (5000 keys of up to {ROW} bytes each, plus the keys)" in message
        assert "over the limit of 67108864 bytes (max_message_bytes)" in message
        estimate = int(message.split(": ")[1].split(" bytes")[0])
        assert 5000 * ROW < estimate < 5000 * (ROW + 64)
    assert serve.rss_mb() - before < 100
    assert serve.store_reads() == reads
    served_a_row(serve)
    # What fits is served: 100 keys x 512 KiB.
    assert (
        len(R.Result.FromString(call(serve.channel, RETRIEVE, retrieve_query("emb", ["v"], 100))).rows) == 100
    )


def test_five_million_keys_are_refused_before_any_work(serve: Serve) -> None:
    """Issue 14 #2: 5M keys of a small FG, 45 MB, under the 64 MiB message limit."""
    request = retrieve_query("g", ["a"], 5_000_000, same_key=True)
    assert len(request) < 64 * 1024 * 1024
    before, reads = serve.rss_mb(), serve.store_reads()
    code, message = refused(serve.channel, RETRIEVE, request)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "5000000 keys, over the limit of 10000 keys" in message
    assert serve.store_reads() == reads, "no store read"
    # gRPC holds the 45 MB request while the call runs; nothing else is built for it.
    assert serve.rss_mb() - before < 100
    codes = scrape(serve.metrics_port)
    assert value(codes, "ofs_requests_total", method="RetrieveFeatures", code="RESOURCE_EXHAUSTED") >= 1


def _http(serve: Serve, path: str, body: object) -> tuple[int, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", serve.http_port, timeout=60)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        reply = conn.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        conn.close()


def test_http_json_is_held_to_the_same_limits(serve: Serve) -> None:
    before, reads = serve.rss_mb(), serve.store_reads()
    query = {
        "entity_label": "user",
        "feature_groups": [{"label": "emb", "feature_labels": ["v"]}],
        "keys_schema": ["user_id"],
        "keys": [{"cols": [f"u{i}"]} for i in range(60_000)],
    }
    status, body = _http(serve, "/api/v1/features/retrieve", query)
    assert (status, body["code"]) == (429, "RESOURCE_EXHAUSTED")
    assert "60000 keys, over the limit of 10000 keys (max_keys_per_request)" in body["error"]
    query["keys"] = query["keys"][:5000]
    status, body = _http(serve, "/api/v1/features/retrieve/decoded", query)
    assert (status, body["code"]) == (429, "RESOURCE_EXHAUSTED")
    assert "over the limit of 67108864 bytes (max_message_bytes)" in body["error"]
    assert serve.rss_mb() - before < 100
    assert serve.store_reads() == reads
    served_a_row(serve)


def _persist_g(keys: list[str], features: list[str], values: list[float]) -> bytes:
    return P.Query(
        entity_label="user",
        keys_schema=["user_id"],
        feature_group_schema=[P.FeatureGroupSchema(label="g", feature_labels=features)],
        data=[
            P.Data(key_values=[k], feature_values=[P.FeatureValues(values=P.Values(fp32_values=values))])
            for k in keys
        ],
    ).SerializeToString()


def _g(serve: Serve, key: str) -> tuple[list[bytes], list[int]]:
    row = R.Result.FromString(
        call(serve.channel, RETRIEVE, retrieve_query_keys("g", ["a", "b"], [key]))
    ).rows[0]
    return list(row.columns), list(row.fg_status)


def retrieve_query_keys(fg: str, features: list[str], keys: list[str]) -> bytes:
    return R.Query(
        entity_label="user",
        feature_groups=[R.FeatureGroup(label=fg, feature_labels=features)],
        keys_schema=["user_id"],
        keys=[R.Keys(cols=[k]) for k in keys],
    ).SerializeToString()


def test_a_persist_naming_no_features_is_invalid_and_writes_nothing(serve: Serve) -> None:
    """Issue 14 #6: ``feature_labels: []`` used to succeed and reset the row to its defaults."""
    call(serve.channel, PERSIST, _persist_g(["keep"], ["a", "b"], [2.0, 3.0]))
    stored = _g(serve, "keep")
    assert stored[1] == [0]
    code, message = refused(serve.channel, PERSIST, _persist_g(["keep"], [], []))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert (
        message == 'persist for entity "user": feature group "g" lists no features (feature_labels is empty)'
    )
    body = {
        "entity_label": "user",
        "keys_schema": ["user_id"],
        "feature_group_schema": [{"label": "g", "feature_labels": []}],
        "data": [{"key_values": ["keep"], "feature_values": [{"values": {}}]}],
    }
    status, reply = _http(serve, "/api/v1/features/persist", body)
    assert (status, reply["code"]) == (400, "INVALID_ARGUMENT")
    assert _g(serve, "keep") == stored


def test_raised_key_limit_flags_and_the_row_limit(tmp_path: Path) -> None:
    """With ``--max-keys-per-request 100000`` the 60k-key crash request reaches the response estimate
    (the allocation that aborted the process) and is refused there; ``--max-rows-per-persist`` caps a
    persist before anything is written."""
    flags = ("--max-keys-per-request", "100000", "--max-rows-per-persist", "100")
    with serving(tmp_path, *flags) as serve:
        before, reads = serve.rss_mb(), serve.store_reads()
        code, message = refused(serve.channel, RETRIEVE, retrieve_query("emb", ["v"], 60_000))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"estimated response (60000 keys of up to {ROW} bytes each, plus the keys)" in message
        assert serve.rss_mb() - before < 100
        assert serve.store_reads() == reads
        served_a_row(serve)
        keys = [f"k{i}" for i in range(101)]
        code, message = refused(serve.channel, PERSIST, _persist_g(keys, ["a"], [7.0]))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert message == (
            'persist for entity "user": 101 rows, over the limit of 100 rows (max_rows_per_persist)'
        )
        assert _g(serve, "k0")[1] == [1], "nothing written"
        call(serve.channel, PERSIST, _persist_g(keys[:100], ["a"], [7.0]))
        assert _g(serve, "k99")[1] == [0]


def test_limit_settings_from_the_environment_and_their_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFS_MAX_KEYS_PER_REQUEST", "2500")
    monkeypatch.setenv("OFS_MAX_ROWS_PER_PERSIST", "7")
    config, _ = load_config(None, {})
    assert (config.max_keys_per_request, config.max_rows_per_persist) == (2500, 7)
    config, _ = load_config(None, {"max_keys_per_request": 3})
    assert config.max_keys_per_request == 3
    monkeypatch.setenv("OFS_MAX_KEYS_PER_REQUEST", "0")
    with pytest.raises(
        InvalidInputError, match="setting 'max_keys_per_request' must be a whole number of at least 1"
    ):
        load_config(None, {})
