"""Shared fixtures of the client tests: a registry with one feature group per data type, the embedded
``FeatureStore`` over it, and sample values of every type."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from online_feature_store.feature_store import FeatureStore
from online_feature_store.registry.spec import reconcile
from online_feature_store.registry.sqlite import SqliteRegistry
from online_feature_store.registry.yaml_io import parse_spec
from online_feature_store.types import DataType

VLEN = 3
ALL_TYPES = [t for t in DataType if t != DataType.UNKNOWN]
NUMPY_DTYPES: dict[str, Any] = {
    "FP8E5M2": np.float32,
    "FP8E4M3": np.float32,
    "FP16": np.float16,
    "FP32": np.float32,
    "BF16": np.float32,
    "Q8": np.float32,
    "FP64": np.float64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "BOOL": np.bool_,
}


def element(t: DataType) -> str:
    return t.name.removesuffix("_VECTOR")


def fg_label(t: DataType) -> str:
    return f"t_{t.name.lower()}"


def sample(t: DataType, rows: int = 2, seed: int = 0) -> Any:
    """Values of ``rows`` rows x 2 features of type ``t`` that every type holds exactly: a numpy
    array ``(rows, 2[, VLEN])`` or, for strings, a list of rows of str (lists of str for vectors)."""
    rng = np.random.default_rng(seed)
    shape = (rows, 2, VLEN) if t.is_vector else (rows, 2)
    el = element(t)
    if el == "STRING":
        words = ["", "a", "bc", "ünï", "zz"]
        if t.is_vector:
            return [[[words[(r + f + i) % 5] for i in range(VLEN)] for f in range(2)] for r in range(rows)]
        return [[words[(r * 2 + f) % 5] for f in range(2)] for r in range(rows)]
    dtype = NUMPY_DTYPES[el]
    if el == "Q8":
        # Each vector's largest magnitude 127 (scale 1), the rest whole numbers: stored exactly.
        out = rng.integers(-127, 128, shape).astype(np.float32)
        out[..., 0] = rng.choice([-127.0, 127.0], shape[:-1])
        return out
    if el == "BOOL":
        return rng.integers(0, 2, shape).astype(bool)
    if el.startswith("FP") or el == "BF16":
        # Numbers of at most 3 significant bits: exact in every float type, FP8 E5M2 included.
        exact = np.array([-6.0, -3.0, -1.5, -0.5, 0.0, 0.25, 0.75, 1.0, 1.25, 2.0, 3.5, 4.0, 7.0])
        return rng.choice(exact, shape).astype(dtype)
    info = np.iinfo(dtype)
    out = rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    out.flat[0], out.flat[1] = info.min, info.max
    return out


def registry_doc() -> dict[str, Any]:
    fgs = []
    for t in ALL_TYPES:
        extra: dict[str, Any] = {}
        if t.is_vector:
            extra["vector_length"] = VLEN
        if element(t) == "STRING":
            extra["string_length"] = 8
        default: Any = "" if element(t) == "STRING" else (False if element(t) == "BOOL" else 0)
        if t.is_vector:
            default = [default] * VLEN
        fgs.append(
            {
                "label": fg_label(t),
                "data_type": t.type_name,
                "store": "main",
                "features": [{"label": f"f{i}", "default": default, **extra} for i in range(2)],
            }
        )
    return {
        "stores": [{"id": "main", "kind": "sqlite", "settings": {"path": "store.db"}}],
        "callers": [
            {"id": "ranker", "role": "reader", "token_env": "R_TOKEN"},
            {"id": "ingest", "role": "writer", "token_env": "W_TOKEN"},
        ],
        "entities": [
            {
                "label": "user",
                "keys": [{"label": "user_id", "column": "uid"}],
                "feature_groups": fgs,
            },
            {
                "label": "pair",
                "keys": [{"label": "a", "column": "ka"}, {"label": "b", "column": "kb"}],
                "feature_groups": [
                    {
                        "label": "g",
                        "data_type": "fp32",
                        "store": "main",
                        "features": [{"label": "x", "default": -1.0}],
                    }
                ],
            },
        ],
    }


@pytest.fixture(scope="module")
def feature_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FeatureStore]:
    """One store per test module (tests use their own keys or feature groups)."""
    tmp_path = tmp_path_factory.mktemp("ofs")
    registry = SqliteRegistry(tmp_path / "registry.db")
    spec = parse_spec(
        registry_doc(),
        env={
            "R_TOKEN": "r-secret-token-for-tests-0123456789",
            "W_TOKEN": "w-secret-token-for-tests-0123456789",
        },
    )
    registry.apply(lambda s: reconcile(s, spec))
    fs = FeatureStore(registry, data_directory=tmp_path)
    yield fs
    fs.close()
    registry.close()


@pytest.fixture
def served(feature_store: FeatureStore, request: pytest.FixtureRequest) -> Iterator[tuple[str, FeatureStore]]:
    """An in-process gRPC server (auth when the test is parametrized with ``True``) over ``feature_store``."""
    from online_feature_store.server.app import ServerConfig, build_server, mark_serving

    auth = getattr(request, "param", False)
    srv, port, health = build_server(feature_store, ServerConfig(port=0, auth=auth, metrics_port=0))
    srv.start()
    mark_serving(feature_store, health)
    yield f"127.0.0.1:{port}", feature_store
    srv.stop(0).wait()
