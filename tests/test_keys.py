"""One rule for key values (``online_feature_store.keys``) on every path that takes keys from Python:
the same key given as str, int, bytes, numpy scalars or composite rows addresses the same row whether it
is written or read through ``FeatureStore`` (store path and the native all-hits cache path), ``Client``
against a real ``ofs serve``, or ``ingest.push`` (to that server over gRPC, and embedded); and a value the
rule refuses is the same clear ``InvalidInputError`` everywhere."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from online_feature_store import FeatureStore, InvalidInputError
from online_feature_store.batch import push_rows
from online_feature_store.client import Client
from online_feature_store.ingest import EmbeddedSink, GrpcSink, push
from online_feature_store.keys import key_rows, key_text
from online_feature_store.registry.spec import reconcile
from online_feature_store.registry.sqlite import SqliteRegistry
from online_feature_store.registry.yaml_io import parse_spec

CACHE = {"in_process": {"enabled": True, "ttl_seconds": 600, "jitter_percent": 0}}
FG = {"label": "g", "data_type": "fp32", "store": "main", "in_process_cache": True}
DOC: dict[str, Any] = {
    "stores": [{"id": "main", "kind": "sqlite", "settings": {"path": "store.db"}}],
    "entities": [
        {
            "label": "user",
            "keys": [{"label": "user_id"}],
            "cache": CACHE,
            "feature_groups": [{**FG, "features": [{"label": "v", "default": -1}]}],
        },
        {
            "label": "pair",
            "keys": [{"label": "a"}, {"label": "b"}],
            "cache": CACHE,
            "feature_groups": [{**FG, "features": [{"label": "v", "default": -1}]}],
        },
    ],
}


# -- the rule itself ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("u9", "u9"),
        (np.str_("u9"), "u9"),
        (b"u9", "u9"),
        (np.bytes_(b"u9"), "u9"),
        ("é|:\\", "é|:\\"),
        ("é".encode(), "é"),
        (42, "42"),
        (-7, "-7"),
        (2**70, str(2**70)),
        (np.int64(42), "42"),
        (np.uint8(42), "42"),
        (np.int32(-7), "-7"),
        (np.uint64(2**64 - 1), str(2**64 - 1)),
    ],
)
def test_key_text(value: Any, text: str) -> None:
    assert key_text(value) == text
    assert type(key_text(value)) in (str, np.str_)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"\xff", r"key value b'\\xff' is not valid UTF-8 \(invalid start byte at byte 0\)"),
        (b"ok\xc3", r"key value b'ok\\xc3' is not valid UTF-8 \(unexpected end of data at byte 2\)"),
        (1.0, "key value 1.0 is a float: key values are str, int or UTF-8 bytes"),
        (np.float32(2.5), r"key value np.float32\(2.5\) is a float"),
        (np.float64(3.0), r"key value np.float64\(3.0\) is a float"),
        (True, "key value True is a bool: key values are str, int or UTF-8 bytes"),
        (np.bool_(False), "key value np.False_ is a bool"),
        (None, r"key value None \(NoneType\) is not a key"),
        (Decimal(1), r"key value Decimal\('1'\) \(Decimal\) is not a key"),
    ],
)
def test_key_text_refuses(value: Any, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        key_text(value)


def test_key_rows() -> None:
    assert key_rows(["u1", 2, b"u3", np.int16(4)], 1) == [("u1",), ("2",), ("u3",), ("4",)]
    rows = [("u1", 2), [b"u3", np.int8(4)], np.array(["u5", "6"]), (np.str_("u7"), np.bytes_(b"8"))]
    assert key_rows(rows, 2) == [("u1", "2"), ("u3", "4"), ("u5", "6"), ("u7", "8")]
    assert key_rows(rows, 2, [1, 0]) == [("2", "u1"), ("4", "u3"), ("6", "u5"), ("8", "u7")]
    assert key_rows([("u1", 2, 3), "x"], 0) == [("u1", "2", "3"), ("x",)]  # width 0: any count
    with pytest.raises(InvalidInputError, match="key 'u1' is a single value but the entity has 2 keys"):
        key_rows(["u1"], 2)
    with pytest.raises(InvalidInputError, match=r"key \('u1',\) has 1 values, expected 2"):
        key_rows([("u1",)], 2)
    with pytest.raises(InvalidInputError, match=r"key value 1\.5 is a float"):
        key_rows([("u1", 1.5)], 2)


# -- every path, against a real server ------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_serving(address: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        with grpc.insecure_channel(address) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
        time.sleep(0.1)
    raise AssertionError(f"ofs serve did not start:\n{log.read_text()}")


@dataclass
class Paths:
    """The four paths over one data directory: the embedded store without and with the in-process
    cache, and ``ofs serve`` on the same directory (its gRPC address)."""

    store: FeatureStore
    cached: FeatureStore
    address: str

    def client(self) -> Client:
        """A new client (a client remembers the first keys_schema it is given for an entity)."""
        return Client(self.address, timeout=30)


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Paths]:
    data = tmp_path_factory.mktemp("keys")
    with SqliteRegistry(data / "registry.db") as reg:
        reg.apply(lambda s: reconcile(s, parse_spec(DOC)))
    port = _free_port()
    log = data / "serve.log"
    env = {**os.environ, "OFS_METRICS_PORT": "0"}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "online_feature_store.cli", "serve", "--port", str(port),
             "--data-dir", str(data)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    store = FeatureStore(data_directory=data, cache_bytes=0)
    cached = FeatureStore(data_directory=data, cache_bytes=1 << 20)
    try:
        _wait_serving(f"127.0.0.1:{port}", proc, log)
        yield Paths(store, cached, f"127.0.0.1:{port}")
    finally:
        cached.close()
        store.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def forms(text: str) -> list[Any]:
    """Every way of passing the key value ``text``: str, bytes, numpy str / bytes, and for digits the
    Python and numpy integers."""
    out: list[Any] = [text, text.encode(), np.str_(text), np.bytes_(text.encode())]
    if text.isdigit():
        out += [int(text), np.int64(text), np.uint32(text), np.int16(text)]
    return out


def pair_forms(a: str, b: str) -> list[Any]:
    """Composite rows (a, b) in several containers and value types (``b`` is digits)."""
    return [
        (a, b),
        (a.encode(), int(b)),
        [np.str_(a), np.int64(b)],
        (np.bytes_(a.encode()), np.uint16(b)),
        (a, b.encode()),
        np.array([a, b]),  # numpy.str_ values
        np.array([a.encode(), b.encode()]),  # numpy.bytes_ values
        np.array([a, int(b)], dtype=object),
    ]


Writer = Callable[[Paths, str, list[Any], float, list[str] | None], None]


def write_embedded(p: Paths, entity: str, keys: list[Any], value: float, schema: list[str] | None) -> None:
    p.store.persist(entity, "g", keys, np.full((len(keys), 1), value, np.float32), keys_schema=schema)


def write_client(p: Paths, entity: str, keys: list[Any], value: float, schema: list[str] | None) -> None:
    values = np.full((len(keys), 1), value, np.float32)
    with p.client() as client:
        client.persist(entity, "g", keys, values, keys_schema=schema, features=["v"], data_type="fp32")


def write_ingest_grpc(p: Paths, entity: str, keys: list[Any], value: float, schema: list[str] | None) -> None:
    with GrpcSink(p.address) as sink:
        push(sink, entity, keys, {"g": np.full((len(keys), 1), value, np.float32)}, keys_schema=schema,
             registry=p.store.snapshot)  # fmt: skip


def write_ingest_embedded(
    p: Paths, entity: str, keys: list[Any], value: float, schema: list[str] | None
) -> None:
    with EmbeddedSink(fs=p.store) as sink:
        push(sink, entity, keys, {"g": np.full((len(keys), 1), value, np.float32)}, keys_schema=schema,
             registry=p.store.snapshot)  # fmt: skip


def write_batch(p: Paths, entity: str, keys: list[Any], value: float, schema: list[str] | None) -> None:
    """``batch.push_rows``: key columns typed by Arrow from the values (one form per call here)."""
    labels = schema or [k.label for k in p.store.snapshot.entity(entity).keys]
    rows = [dict(zip(labels, [key] if len(labels) == 1 else list(key), strict=True)) for key in keys]
    # Arrow does not mix str and bytes in one column: one call per run of rows of the same types.
    for _, run in itertools.groupby(rows, key=lambda r: [type(v) for v in r.values()]):
        push_rows(p.store, entity, [{**r, "v": value} for r in run], feature_groups=["g"], registry=p.store)


WRITERS: dict[str, Writer] = {
    "FeatureStore.persist": write_embedded,
    "Client.persist": write_client,
    "ingest.push(GrpcSink)": write_ingest_grpc,
    "ingest.push(EmbeddedSink)": write_ingest_embedded,
    "batch.push_rows": write_batch,
}


def read_all(p: Paths, entity: str, keys: list[Any], schema: list[str] | None) -> dict[str, list[float]]:
    """The value of each key through every reading path (the cached one checked to be the native
    all-hits path)."""
    with p.client() as client:
        got = {
            "FeatureStore.retrieve": p.store.retrieve(entity, keys, {"g": ["v"]}, keys_schema=schema),
            "Client.retrieve": client.retrieve(entity, keys, {"g": ["v"]}, keys_schema=schema),
        }
    p.cached.retrieve(entity, keys, {"g": ["v"]}, keys_schema=schema)  # fills the in-process cache
    snapshot = p.cached.snapshot
    key_schema = schema or [k.label for k in snapshot.entity(entity).keys]
    native = p.cached._catalog(snapshot).retrieve_cached(
        p.cached._caches.local, entity, key_schema, [("g", ["v"])], keys
    )
    assert native is not None, "the cached retrieve did not answer from the in-process cache"
    out = {name: r.values["g"][:, 0].tolist() for name, r in got.items()}
    out["native cache path"] = native[0][0][:, 0].tolist()
    out["FeatureStore.retrieve (cached)"] = (
        p.cached.retrieve(entity, keys, {"g": ["v"]}, keys_schema=schema).values["g"][:, 0].tolist()
    )
    return out


@pytest.mark.parametrize("writer", list(WRITERS))
def test_single_keys_address_the_same_row_everywhere(paths: Paths, writer: str) -> None:
    n = list(WRITERS).index(writer) + 1
    value = float(n)
    text_key, int_key = f"ü{n}", f"{n}00"
    # Written once per form: every form lands on the same two rows (the last write of each wins).
    for k in forms(text_key):
        WRITERS[writer](paths, "user", [k], value, None)
    for k in forms(int_key):
        WRITERS[writer](paths, "user", [k], value + 0.5, None)
    readers = read_all(paths, "user", forms(text_key) + forms(int_key), None)
    expected = [value] * len(forms(text_key)) + [value + 0.5] * len(forms(int_key))
    assert readers == dict.fromkeys(readers, expected)
    # Nothing else was written: no form left a key of another text (as str(b"…") would).
    others = [str(text_key.encode()), str(int_key.encode())]
    assert paths.store.retrieve("user", others, {"g": ["v"]}).values["g"].tolist() == [[-1.0], [-1.0]]


@pytest.mark.parametrize("writer", list(WRITERS))
def test_composite_keys_address_the_same_row_everywhere(paths: Paths, writer: str) -> None:
    n = list(WRITERS).index(writer) + 1
    a, b = f"p|{n}", f"{n}7"  # a separator character in a value, and digits
    WRITERS[writer](paths, "pair", pair_forms(a, b), float(n), None)
    rows = pair_forms(a, b)
    readers = read_all(paths, "pair", rows, None)
    assert readers == dict.fromkeys(readers, [float(n)] * len(rows))
    # The same rows in the other key order.
    swapped = [(y, x) for x, y in pair_forms(a, b)]
    readers = read_all(paths, "pair", swapped, ["b", "a"])
    assert readers == dict.fromkeys(readers, [float(n)] * len(rows))


BAD = b"\xffu"
BAD_MESSAGE = r"key value b'\\xffu' is not valid UTF-8 \(invalid start byte at byte 0\)"


@pytest.mark.parametrize("writer", list(WRITERS))
def test_invalid_utf8_is_refused_by_every_writer(paths: Paths, writer: str) -> None:
    with pytest.raises(InvalidInputError, match=BAD_MESSAGE):
        WRITERS[writer](paths, "user", [b"fine", BAD], 1.0, None)
    with pytest.raises(InvalidInputError, match=BAD_MESSAGE):
        WRITERS[writer](paths, "pair", [(b"fine", BAD)], 1.0, None)
    # (Batch loading decides by Arrow column type: a double / bool key column.)
    with pytest.raises(InvalidInputError, match=r"key value 1\.5 is a float|a double key column"):
        WRITERS[writer](paths, "user", [1.5], 1.0, None)
    with pytest.raises(InvalidInputError, match=r"key value True is a bool|a bool key column"):
        WRITERS[writer](paths, "user", [True], 1.0, None)
    # Nothing of a refused request was written.
    assert paths.store.retrieve("user", ["fine"], {"g": ["v"]}).values["g"].tolist() == [[-1.0]]


def test_invalid_utf8_is_refused_by_every_reader(paths: Paths) -> None:
    paths.store.persist("user", "g", ["hit"], np.array([[5.0]], np.float32))
    paths.cached.retrieve("user", ["hit"], {"g": ["v"]})  # cached: the native path sees the bad key
    for keys in (["hit", BAD], [BAD]):
        with paths.client() as client:
            for read in (
                paths.store.retrieve,
                paths.cached.retrieve,
                client.retrieve,
                client.retrieve_decoded,
            ):
                with pytest.raises(InvalidInputError, match=BAD_MESSAGE):
                    read("user", keys, {"g": ["v"]})
        snapshot = paths.cached.snapshot
        with pytest.raises(InvalidInputError, match=BAD_MESSAGE):
            paths.cached._catalog(snapshot).retrieve_cached(
                paths.cached._caches.local, "user", ["user_id"], [("g", ["v"])], keys
            )
    with paths.client() as client:
        for bad in (1.5, np.float32(1.5), True, None):
            for read in (paths.store.retrieve, paths.cached.retrieve, client.retrieve):
                with pytest.raises(InvalidInputError, match="key value"):
                    read("user", ["hit", bad], {"g": ["v"]})
