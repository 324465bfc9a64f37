"""The embedded ``FeatureStore``'s request limits (keys per retrieve, rows per persist, bytes of a response
or of the blocks a persist builds), each checked before any store read or write; and a persist that
names no features is refused. The same rules hold for gRPC / HTTP (tests/server/test_limits.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from online_feature_store import InvalidInputError, ResourceExhaustedError
from online_feature_store._proto import persist_pb2 as P  # noqa: N812
from online_feature_store._proto import retrieve_pb2 as R  # noqa: N812
from online_feature_store.feature_store import FeatureStore
from online_feature_store.limits import DEFAULT_MAX_KEYS_PER_REQUEST, DEFAULT_MAX_MESSAGE_BYTES, make_limits
from online_feature_store.metrics import FeatureStoreMetrics
from online_feature_store.registry.spec import reconcile
from online_feature_store.registry.sqlite import SqliteRegistry
from online_feature_store.registry.yaml_io import parse_spec
from online_feature_store.results import FOUND

VECTOR = 65_535
"""The longest vector the registry accepts: one fp64 cell of 512 KiB."""

DOC: dict[str, Any] = {
    "stores": [{"id": "main", "kind": "sqlite", "settings": {"path": "store.db"}}],
    "entities": [
        {
            "label": "user",
            "keys": [{"label": "user_id", "column": "uid"}],
            "cache": {"in_process": {"enabled": True, "ttl_seconds": 60, "jitter_percent": 0}},
            "feature_groups": [
                {
                    "label": "emb",
                    "data_type": "fp64vector",
                    "store": "main",
                    "in_process_cache": True,
                    "features": [{"label": "v", "vector_length": VECTOR}],
                },
                {
                    "label": "g",
                    "data_type": "fp32",
                    "store": "main",
                    "in_process_cache": True,
                    "features": [{"label": "a", "default": 1.5}, {"label": "b", "default": -1.0}],
                },
            ],
        }
    ],
}


class StoreCalls(FeatureStoreMetrics):
    """Records every store call the FeatureStore makes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def store_call(self, store_id: str, op: str, seconds: float, failed: bool) -> None:
        self.calls.append((store_id, op))


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[FeatureStore]:
    registry = SqliteRegistry(tmp_path / "registry.db")
    registry.apply(lambda state: reconcile(state, parse_spec(DOC, env={})))
    with FeatureStore(registry, data_directory=tmp_path, metrics=StoreCalls(), invalidation=False) as store:
        yield store
    registry.close()


def _calls(fs: FeatureStore) -> list[tuple[str, str]]:
    assert isinstance(fs.metrics, StoreCalls)
    return fs.metrics.calls


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def _query(fg: str, features: list[str], n: int) -> bytes:
    return R.Query(
        entity_label="user",
        feature_groups=[R.FeatureGroup(label=fg, feature_labels=features)],
        keys_schema=["user_id"],
        keys=[R.Keys(cols=[f"u{i}"]) for i in range(n)],
    ).SerializeToString()


def test_defaults() -> None:
    assert (DEFAULT_MAX_KEYS_PER_REQUEST, DEFAULT_MAX_MESSAGE_BYTES) == (10_000, 64 * 1024 * 1024)


def test_more_keys_than_allowed_are_refused_before_any_store_read(fs: FeatureStore) -> None:
    n = DEFAULT_MAX_KEYS_PER_REQUEST + 1
    want = f'retrieve for entity "user": {n} keys, over the limit of 10000 keys (max_keys_per_request)'
    with pytest.raises(ResourceExhaustedError) as err:
        fs.retrieve("user", [f"u{i}" for i in range(n)], {"g": ["a"]})
    assert str(err.value) == want
    with pytest.raises(ResourceExhaustedError) as err:
        fs.retrieve_wire(_query("g", ["a"], n))
    assert str(err.value) == want
    assert _calls(fs) == []
    # At the limit: served.
    assert fs.retrieve("user", [f"u{i}" for i in range(n - 1)], {"g": ["a"]}).values["g"].shape == (n - 1, 1)


def test_a_response_over_the_byte_limit_is_refused_from_its_estimate(fs: FeatureStore) -> None:
    """2,000 keys of a 512 KiB vector would be a 1 GB response: refused from the plan, before any read
    or allocation (the issue's crash case, where the encoder reserved keys x row width first)."""
    row = 1 + 3 + VECTOR * 8 + 3  # the cell's tag, length and bytes; the status field
    before = _rss_mb()
    for call in (
        lambda: fs.retrieve("user", [f"u{i}" for i in range(2000)], {"emb": ["v"]}),
        lambda: fs.retrieve_wire(_query("emb", ["v"], 2000)),
        lambda: fs.retrieve_wire(_query("emb", ["v"], 2000), decoded=True),
    ):
        with pytest.raises(ResourceExhaustedError) as err:
            call()
        message = str(err.value)
        assert f"(2000 keys of up to {row} bytes each" in message, message
        assert "over the limit of 67108864 bytes (max_message_bytes)" in message, message
    assert _calls(fs) == []
    assert _rss_mb() - before < 100
    # What fits is served: 100 keys x 512 KiB.
    got = fs.retrieve("user", [f"u{i}" for i in range(100)], {"emb": ["v"]})
    assert got.values["emb"].shape == (100, 1, VECTOR)


def test_the_in_process_cache_path_is_held_to_the_limits(tmp_path: Path, fs: FeatureStore) -> None:
    keys = [f"u{i}" for i in range(3)]
    fs.persist("user", "g", keys, np.ones((3, 2), dtype=np.float32))
    fs.retrieve("user", keys, {"g": ["a", "b"]})  # fills the cache
    calls = len(_calls(fs))
    assert fs.retrieve("user", keys, {"g": ["a", "b"]}).status["g"].tolist() == [FOUND] * 3
    assert len(_calls(fs)) == calls, "answered from the in-process cache"
    small = fs.limits
    fs.limits = make_limits(2, 10, 1 << 20)
    with pytest.raises(ResourceExhaustedError, match="3 keys, over the limit of 2 keys"):
        fs.retrieve("user", keys, {"g": ["a", "b"]})
    fs.limits = make_limits(10, 10, 20)
    with pytest.raises(ResourceExhaustedError, match="over the limit of 20 bytes"):
        fs.retrieve("user", keys, {"g": ["a", "b"]})
    fs.limits = small


def test_persists_are_held_to_the_row_and_byte_limits(fs: FeatureStore) -> None:
    fs.limits = make_limits(10, 2, 1 << 20)
    keys = ["u1", "u2", "u3"]
    with pytest.raises(
        ResourceExhaustedError, match=r"3 rows, over the limit of 2 rows \(max_rows_per_persist\)"
    ):
        fs.persist("user", "g", keys, np.ones((3, 2), dtype=np.float32))
    query = P.Query(
        entity_label="user",
        keys_schema=["user_id"],
        feature_group_schema=[P.FeatureGroupSchema(label="g", feature_labels=["a"])],
        data=[
            P.Data(key_values=[k], feature_values=[P.FeatureValues(values=P.Values(fp32_values=[2.0]))])
            for k in keys
        ],
    ).SerializeToString()
    with pytest.raises(
        ResourceExhaustedError, match='persist for entity "user": 3 rows, over the limit of 2'
    ):
        fs.persist_wire(query)
    # Blocks: 512 KiB of random (incompressible) values per row; the third row passes 1 MiB.
    fs.limits = make_limits(10, 10, 1 << 20)
    with pytest.raises(ResourceExhaustedError, match="blocks built up to row 2"):
        fs.persist("user", "emb", keys, np.random.default_rng(7).random((3, 1, VECTOR)))
    assert _calls(fs) == []
    assert fs.retrieve("user", keys, {"g": ["a"]}).values["g"].tolist() == [[1.5]] * 3


def test_a_persist_that_names_no_features_is_refused_and_writes_nothing(fs: FeatureStore) -> None:
    fs.persist("user", "g", ["u1"], np.array([[3.0, 4.0]], dtype=np.float32))
    query = P.Query(
        entity_label="user",
        keys_schema=["user_id"],
        feature_group_schema=[P.FeatureGroupSchema(label="g", feature_labels=[])],
        data=[P.Data(key_values=["u1"], feature_values=[P.FeatureValues(values=P.Values())])],
    ).SerializeToString()
    with pytest.raises(InvalidInputError) as err:
        fs.persist_wire(query)
    assert (
        str(err.value)
        == 'persist for entity "user": feature group "g" lists no features (feature_labels is empty)'
    )
    with pytest.raises(InvalidInputError, match="no feature columns"):
        fs.persist("user", "g", ["u1"], pd.DataFrame(index=[0]))
    assert fs.retrieve("user", ["u1"], {"g": ["a", "b"]}).values["g"].tolist() == [[3.0, 4.0]]


@pytest.mark.parametrize("setting", ["max_keys_per_request", "max_rows_per_persist", "max_message_bytes"])
def test_limits_must_be_positive(tmp_path: Path, setting: str) -> None:
    with pytest.raises(InvalidInputError, match=f"setting '{setting}' must be a whole number of at least 1"):
        FeatureStore(f"sqlite:///{tmp_path / 'r.db'}", data_directory=tmp_path, **{setting: 0})
