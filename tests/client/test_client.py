"""``Client`` against an in-process gRPC server: the same results as the embedded ``FeatureStore`` for every
data type, batching, retries, deadlines, auth and the decoded call."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pandas as pd
import pytest
from conftest import ALL_TYPES, element, fg_label, sample

from online_feature_store._proto import retrieve_pb2
from online_feature_store.client import AuthError, Client, DeadlineExceededError
from online_feature_store.errors import InvalidInputError, NotFoundError, UnavailableError
from online_feature_store.feature_store import FeatureStore
from online_feature_store.results import FOUND, MISSING, RetrieveResult
from online_feature_store.store.sqlite import SqliteStore
from online_feature_store.types import DataType
from tests._sqlite_lock import write_lock

Served = tuple[str, FeatureStore]
SCHEMA = ["user_id"]


@pytest.fixture
def client(served: Served) -> Iterator[Client]:
    with Client(served[0], keys_schemas={"user": SCHEMA, "pair": ["a", "b"]}) as c:
        yield c


def assert_same(remote: RetrieveResult, local: RetrieveResult) -> None:
    assert remote.entity == local.entity
    assert dict(remote.features) == dict(local.features)
    for fg in local.values:
        got, want = remote.values[fg], local.values[fg]
        if isinstance(want, list):
            assert got == want, fg
        else:
            assert got.dtype == want.dtype, fg
            assert got.shape == want.shape, fg
            assert np.array_equal(got, want, equal_nan=got.dtype.kind == "f"), fg
        assert np.array_equal(remote.status[fg], local.status[fg]), fg
        assert remote.status[fg].dtype == np.uint8


@pytest.mark.parametrize("t", ALL_TYPES, ids=[t.name for t in ALL_TYPES])
def test_every_type_matches_the_embedded_store(served: Served, client: Client, t: DataType) -> None:
    _, fs = served
    fg = fg_label(t)
    values = sample(t, rows=3, seed=int(t))
    assert client.persist("user", fg, ["u1", "u2", "u3"], values, features=["f0", "f1"], data_type=t) == 3
    keys = ["u3", "nobody", "u1", "u2", "u1"]
    features = {fg: ["f1", "f0"]}
    remote = client.retrieve("user", keys, features)
    local = fs.retrieve("user", keys, features)
    assert_same(remote, local)
    assert list(remote.status[fg]) == [FOUND, MISSING, FOUND, FOUND, FOUND]
    first = remote.values[fg][2]
    expected = values[0]
    if isinstance(first, list):
        assert first == [expected[1], expected[0]]
    else:
        assert np.array_equal(first, np.asarray(expected)[[1, 0]])


def test_several_groups_quantized_and_pandas(served: Served, client: Client) -> None:
    _, fs = served
    fp32, i64v = fg_label(DataType.FP32), fg_label(DataType.INT64_VECTOR)
    client.persist("user", fp32, ["a", "b"], np.array([[0.1, 2.0], [3.0, -1e30]]), features=["f0", "f1"])
    client.persist("user", i64v, ["a"], sample(DataType.INT64_VECTOR, rows=1), features=["f0", "f1"])
    features = {fp32: ["f0@DataTypeFP16", "f1@DataTypeFP8E4M3"], i64v: ["f1"]}
    remote = client.retrieve("user", ["a", "b", "c"], features)
    assert_same(remote, fs.retrieve("user", ["a", "b", "c"], features))
    assert remote.values[fp32][0, 0] == np.float32(np.float16(0.1))
    pd.testing.assert_frame_equal(
        remote.to_pandas(), fs.retrieve("user", ["a", "b", "c"], features).to_pandas()
    )


def test_persist_from_dataframe_dicts_and_records(served: Served, client: Client) -> None:
    _, fs = served
    fg, sv = fg_label(DataType.INT16), fg_label(DataType.STRING_VECTOR)
    # No data_type: learnt by retrieving one key of the FG (this client may read).
    client.persist("user", fg, ["a", "b"], pd.DataFrame({"f1": [1, 2], "f0": [-3, 4]}))
    client.persist("user", fg, ["c"], {"f0": np.array([7])})
    client.persist("user", fg, ["d", "e"], [{"f1": 5, "f0": 6}, {"f1": 8, "f0": 9}])
    client.persist("user", sv, ["a"], {"f0": [["x", "y", "z"]]})
    got = fs.retrieve("user", ["a", "b", "c", "d", "e"], {fg: ["f0", "f1"], sv: ["f0", "f1"]})
    assert got.values[fg].tolist() == [[-3, 1], [4, 2], [7, 0], [6, 5], [9, 8]]
    assert got.values[sv][0] == [["x", "y", "z"], ["", "", ""]]
    with pytest.raises(InvalidInputError, match="pass features="):
        client.persist("user", fg, ["a"], np.array([[1, 2]]))
    with pytest.raises(InvalidInputError, match="lacks feature 'f1'"):
        client.persist("user", fg, ["a", "b"], [{"f1": 1}, {"f0": 2}])


def test_switching_is_one_line(served: Served, client: Client) -> None:
    _, fs = served
    fg = fg_label(DataType.UINT16)

    def use(store: FeatureStore | Client, key: str) -> RetrieveResult:
        store.persist("user", fg, [key], pd.DataFrame({"f1": [7], "f0": [65535]}))
        return store.retrieve("user", [key, "nobody"], {fg: ["f0", "f1"]})

    local, remote = use(fs, "local"), use(client, "remote")
    assert_same(remote, local)
    assert remote.values[fg].tolist() == [[65535, 7], [0, 0]]


def test_composite_keys_in_any_order(served: Served, client: Client) -> None:
    _, fs = served
    client.persist("pair", "g", [("x", "y")], np.array([[2.5]]), features=["x"], keys_schema=["a", "b"])
    r = client.retrieve("pair", [("y", "x")], {"g": ["x"]}, keys_schema=["b", "a"])
    assert r.values["g"].tolist() == [[2.5]]
    assert fs.retrieve("pair", [("x", "y")], {"g": ["x"]}).values["g"].tolist() == [[2.5]]


def test_batches_keep_order(served: Served) -> None:
    address, fs = served
    fg, sv = fg_label(DataType.FP64), fg_label(DataType.STRING)
    keys = [f"k{i}" for i in range(1000)]
    values = np.arange(2000, dtype=np.float64).reshape(1000, 2)
    strings = [[f"s{i}", f"t{i}"] for i in range(1000)]
    with Client(address, batch_size=64, max_workers=4, keys_schemas={"user": SCHEMA}) as c:
        assert c.persist("user", fg, keys, values, features=["f0", "f1"], data_type=DataType.FP64) == 1000
        c.persist("user", sv, keys, strings, features=["f0", "f1"], data_type="DataTypeString")
        asked = [*keys[::-1], "missing", *keys[:10]]
        remote = c.retrieve("user", asked, {fg: ["f1", "f0"], sv: ["f0"]})
    assert_same(remote, fs.retrieve("user", asked, {fg: ["f1", "f0"], sv: ["f0"]}))
    assert remote.values[fg][0].tolist() == [1999.0, 1998.0]
    assert remote.values[sv][-1] == ["s9"]
    assert len(remote.status[fg]) == 1011


def test_decoded_matches_the_server_rendering(served: Served, client: Client) -> None:
    _, fs = served
    fg, bv = fg_label(DataType.FP16), fg_label(DataType.BOOL_VECTOR)
    client.persist("user", fg, ["a"], np.array([[1.5, -2.0]]), features=["f0", "f1"])
    client.persist("user", bv, ["a"], sample(DataType.BOOL_VECTOR, rows=1), features=["f0", "f1"])
    got = client.retrieve_decoded("user", ["a", "zz"], {fg: ["f1", "f0"], bv: ["f0"]})
    query = retrieve_pb2.Query(
        entity_label="user",
        keys_schema=SCHEMA,
        feature_groups=[
            retrieve_pb2.FeatureGroup(label=fg, feature_labels=["f1", "f0"]),
            retrieve_pb2.FeatureGroup(label=bv, feature_labels=["f0"]),
        ],
        keys=[retrieve_pb2.Keys(cols=["a"]), retrieve_pb2.Keys(cols=["zz"])],
    )
    want = retrieve_pb2.DecodedResult.FromString(fs.retrieve_wire(query.SerializeToString(), decoded=True))
    assert got.values[fg] == [list(r.columns[:2]) for r in want.rows]
    assert got.values[bv] == [list(r.columns[2:]) for r in want.rows]
    assert got.to_pandas().shape == (2, 3)


def test_errors_map_to_library_exceptions(client: Client) -> None:
    with pytest.raises(NotFoundError):
        client.retrieve("user", ["a"], {"nope": ["f0"]})
    with pytest.raises(NotFoundError):
        client.retrieve("user", ["a"], {fg_label(DataType.FP32): ["nope"]})
    with pytest.raises(InvalidInputError, match="out of range"):
        client.persist("user", fg_label(DataType.INT8), ["a"], np.array([[1, 300]]), features=["f0", "f1"])
    with pytest.raises(NotFoundError, match="nobody_knows"):
        client.retrieve("nobody_knows", ["a"], {"g": ["x"]})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_retries_until_a_late_server_comes_up(feature_store: FeatureStore) -> None:
    from online_feature_store.server.app import ServerConfig, build_server, mark_serving

    port = _free_port()
    started = threading.Event()
    servers: list[Any] = []

    def start_late() -> None:
        time.sleep(0.5)
        srv, _, health = build_server(feature_store, ServerConfig(port=port, metrics_port=0))
        srv.start()
        mark_serving(feature_store, health)
        servers.append(srv)
        started.set()

    late = threading.Thread(target=start_late)
    late.start()
    try:
        with Client(f"127.0.0.1:{port}", timeout=30, retries=50, max_backoff=0.2) as c:
            r = c.retrieve("user", ["late"], {fg_label(DataType.FP32): ["f0"]}, keys_schema=SCHEMA)
        assert r.status[fg_label(DataType.FP32)].tolist() == [MISSING]
        assert started.is_set()
    finally:
        late.join()
        for srv in servers:
            srv.stop(0).wait()
    # Without retries, a server that is not there is an UnavailableError.
    with (
        Client(f"127.0.0.1:{_free_port()}", retries=0) as c,
        pytest.raises(UnavailableError),
    ):
        c.retrieve("user", ["a"], {"g": ["f0"]}, keys_schema=SCHEMA)


def test_deadline_exceeded_while_the_store_is_locked(served: Served) -> None:
    address, fs = served
    fg = fg_label(DataType.FP32)
    store = fs.store("main")
    assert isinstance(store, SqliteStore)
    # Another process's write transaction holds the SQLite write lock: the server's write waits for
    # it (its busy timeout is 10 s) and the call can only end by its deadline.
    with write_lock(store.path), Client(address, timeout=0.5, keys_schemas={"user": SCHEMA}) as c:
        with pytest.raises(DeadlineExceededError):
            c.persist("user", fg, ["lock-a"], np.zeros((1, 2)), features=["f0", "f1"], data_type="fp32")
        with pytest.raises(TimeoutError):  # also the builtin TimeoutError
            c.persist("user", fg, ["lock-b"], np.zeros((1, 2)), features=["f0", "f1"], timeout=0.2)
    # The server's handlers were still waiting for the lock; they write once it is released. Let them
    # finish before the fixture closes the store under them.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if fs.retrieve("user", ["lock-a", "lock-b"], {fg: ["f0"]}).status[fg].tolist() == [FOUND, FOUND]:
            break
        time.sleep(0.05)


@pytest.mark.parametrize("served", [True], indirect=True)
def test_auth(served: Served) -> None:
    address, _ = served
    fg = fg_label(DataType.UINT8)
    with Client(
        address, "ingest", "w-secret-token-for-tests-0123456789", keys_schemas={"user": SCHEMA}
    ) as writer:
        # A writer may not read, so it cannot learn the FG's type: it must say it.
        with pytest.raises(InvalidInputError, match="pass data_type="):
            writer.persist("user", fg, ["a"], np.array([[1, 2]]), features=["f0", "f1"])
        writer.persist("user", fg, ["a"], np.array([[1, 2]]), features=["f0", "f1"], data_type=DataType.UINT8)
        with pytest.raises(AuthError, match="not a reader"):
            writer.retrieve("user", ["a"], {fg: ["f0"]})
    with Client(
        address, "ranker", "r-secret-token-for-tests-0123456789", keys_schemas={"user": SCHEMA}
    ) as reader:
        assert reader.retrieve("user", ["a"], {fg: ["f1", "f0"]}).values[fg].tolist() == [[2, 1]]
        with pytest.raises(AuthError, match="not a writer"):
            reader.persist("user", fg, ["a"], np.array([[1, 2]]), features=["f0", "f1"])
    with Client(address, "ranker", "wrong", keys_schemas={"user": SCHEMA}) as bad, pytest.raises(AuthError):
        bad.retrieve("user", ["a"], {fg: ["f0"]})
    with Client(address, keys_schemas={"user": SCHEMA}) as anonymous, pytest.raises(InvalidInputError):
        anonymous.retrieve("user", ["a"], {fg: ["f0"]})


def test_string_values_shape_checks(client: Client) -> None:
    sfg = fg_label(DataType.STRING)
    with pytest.raises(InvalidInputError, match="expected 2 string cells"):
        client.persist("user", sfg, ["a"], [["only one"]], features=["f0", "f1"], data_type="string")
    assert element(DataType.STRING) == "STRING"


NEEDS_OPENSSL = pytest.mark.skipif(
    shutil.which("openssl") is None, reason="needs the openssl command for a test certificate"
)


def _self_signed(where: Path, name: str) -> tuple[Path, Path]:
    """A key and a self-signed certificate for localhost and 127.0.0.1, as PEM files (openssl)."""
    key, cert = where / f"{name}-key.pem", where / f"{name}-cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return key, cert


@NEEDS_OPENSSL
def test_tls(feature_store: FeatureStore, tmp_path: Path) -> None:
    """A server given tls_cert_file / tls_key_file speaks TLS only (the API, health and reflection); half
    a pair or a missing file is refused at start-up, naming the setting."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from online_feature_store.rpc import Reflector
    from online_feature_store.server.app import ServerConfig, build_server, mark_serving

    half = ServerConfig(port=0, tls_cert_file=str(tmp_path / "cert.pem"))
    with pytest.raises(InvalidInputError, match="set both or neither"):
        build_server(feature_store, half)
    missing = ServerConfig(port=0, tls_cert_file="/nonexistent/c.pem", tls_key_file="/nonexistent/k.pem")
    with pytest.raises(InvalidInputError, match=r"tls_key_file: cannot read '/nonexistent/k\.pem'"):
        build_server(feature_store, missing)

    key, cert = _self_signed(tmp_path, "server")
    config = ServerConfig(port=0, metrics_port=0, tls_cert_file=str(cert), tls_key_file=str(key))
    server, port, health = build_server(feature_store, config)
    server.start()
    mark_serving(feature_store, health)
    fg = fg_label(DataType.FP32)
    try:
        with Client(
            f"127.0.0.1:{port}", root_certificates=cert.read_bytes(), keys_schemas={"user": SCHEMA}
        ) as c:
            c.persist("user", fg, ["tls"], np.array([[1.0, 2.0]]), features=["f0", "f1"])
            assert c.retrieve("user", ["tls"], {fg: ["f1"]}).values[fg].tolist() == [[2.0]]
        creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{port}", creds) as channel:
            check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert check.status == health_pb2.HealthCheckResponse.SERVING
            assert "retrieve.FeatureService" in Reflector(channel).services()
        # The same server refuses a plaintext client.
        with (
            Client(f"127.0.0.1:{port}", retries=0, keys_schemas={"user": SCHEMA}) as plain,
            pytest.raises(UnavailableError),
        ):
            plain.retrieve("user", ["tls"], {fg: ["f1"]})
    finally:
        server.stop(0).wait()


@NEEDS_OPENSSL
def test_a_bad_certificate_or_key_is_named(feature_store: FeatureStore, tmp_path: Path) -> None:
    """A certificate or key the front cannot use, or a key that is not the certificate's, is an
    error naming the file before the port is bound."""
    from online_feature_store.server.app import ServerConfig, build_server

    key, cert = _self_signed(tmp_path, "a")
    other_key, _ = _self_signed(tmp_path, "b")
    garbage, empty = tmp_path / "garbage.pem", tmp_path / "empty.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n")
    empty.write_text("")
    cases = [
        (garbage, key, f"tls_cert_file: '{garbage}': not valid PEM"),
        (key, key, f"tls_cert_file: '{key}': no PEM certificate in it"),
        (cert, empty, f"tls_key_file: '{empty}': no PEM private key in it"),
        (cert, other_key, f"tls_key_file '{other_key}' and tls_cert_file '{cert}' do not go together"),
    ]
    for cert_file, key_file, message in cases:
        config = ServerConfig(port=0, tls_cert_file=str(cert_file), tls_key_file=str(key_file))
        with pytest.raises(InvalidInputError, match=re.escape(message)):
            build_server(feature_store, config)


def test_without_keys_schema_the_entity_key_order_is_used(served: Served) -> None:
    """No keys_schema given or remembered: the request sends none and the server reads the keys in the
    entity's own key order (the one-line switch from FeatureStore needs no extra argument)."""
    with Client(served[0]) as c:
        c.persist("pair", "g", [("x1", "y1")], np.array([[4.5]]), features=["x"])
        r = c.retrieve("pair", [("x1", "y1"), ("y1", "x1")], {"g": ["x"]})
        assert r.values["g"].tolist()[0] == [4.5]
        assert list(r.status["g"]) == [0, 1]
        with pytest.raises(InvalidInputError, match="3 values"):
            c.retrieve("pair", [("a", "b", "c")], {"g": ["x"]})


def test_a_calls_keys_schema_is_not_carried_to_the_next_call(served: Served) -> None:
    """A keys_schema given with one call applies to that call only: a later call naming none reads its
    keys in the entity's own order (it used to inherit the first call's swapped order and address
    other rows)."""
    with Client(served[0]) as c:
        c.persist("pair", "g", [("x2", "y2")], np.array([[6.5]]), features=["x"])
        swapped = c.retrieve("pair", [("y2", "x2")], {"g": ["x"]}, keys_schema=["b", "a"])
        plain = c.retrieve("pair", [("x2", "y2")], {"g": ["x"]})
        assert swapped.values["g"].tolist() == plain.values["g"].tolist() == [[6.5]]
        c.persist("pair", "g", [("x3", "y3")], np.array([[7.5]]), features=["x"])
        assert c.retrieve("pair", [("y3", "x3")], {"g": ["x"]}, keys_schema=["b", "a"]).values[
            "g"
        ].tolist() == [[7.5]]
