"""The embedded ``FeatureStore``: persist → retrieve through the native engine and the SQLite store."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from online_feature_store import InvalidInputError, NotFoundError
from online_feature_store.feature_store import FeatureStore
from online_feature_store.registry.spec import reconcile
from online_feature_store.registry.sqlite import SqliteRegistry
from online_feature_store.registry.yaml_io import parse_spec
from online_feature_store.results import EXPIRED, FOUND, MISSING
from online_feature_store.store.sqlite import SqliteStore

DOC: dict[str, Any] = {
    "stores": [{"id": "main", "kind": "sqlite", "settings": {"path": "store.db"}}],
    "entities": [
        {
            "label": "user",
            "keys": [{"label": "user_id", "column": "uid"}],
            "feature_groups": [
                {
                    "label": "activity",
                    "data_type": "fp32",
                    "store": "main",
                    "features": [{"label": "ctr", "default": 0.5}, {"label": "clicks", "default": 0}],
                },
                {
                    "label": "short",
                    "data_type": "int16",
                    "ttl_seconds": 1,
                    "store": "main",
                    "features": [{"label": "n", "default": -1}],
                },
            ],
        },
        {
            "label": "pair",
            "keys": [{"label": "a", "column": "ka"}, {"label": "b", "column": "kb"}],
            "feature_groups": [
                {
                    "label": "g",
                    "data_type": "uint8",
                    "store": "main",
                    "features": [{"label": "x", "default": 9}],
                }
            ],
        },
    ],
}

# One FG per data type: (type, values of one row for two features, defaults).
TYPES: list[tuple[str, list[Any], list[Any], dict[str, Any]]] = [
    ("fp8e5m2", [1.5, -2.0], [0.0, 1.0], {}),
    ("fp8e4m3", [0.125, 448.0], [0.0, 1.0], {}),
    ("fp16", [1.5, -65504.0], [0.0, 1.0], {}),
    ("fp32", [1.25, -3.0], [0.0, 1.0], {}),
    ("fp64", [1e300, -3.5], [0.0, 1.0], {}),
    ("int8", [-128, 127], [0, 1], {}),
    ("int16", [-32768, 32767], [0, 1], {}),
    ("int32", [-(2**31), 2**31 - 1], [0, 1], {}),
    ("int64", [-(2**63), 2**63 - 1], [0, 1], {}),
    ("uint8", [0, 255], [0, 1], {}),
    ("uint16", [0, 65535], [0, 1], {}),
    ("uint32", [0, 2**32 - 1], [0, 1], {}),
    ("uint64", [0, 2**64 - 1], [0, 1], {}),
    ("bool", [True, False], [False, True], {}),
    ("string", ["ab", "ünï"], ["", "z"], {"string_length": 8}),
    ("fp32vector", [[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [1.0, 1.0]], {"vector_length": 2}),
    ("int64vector", [[1, -2], [3, 4]], [[0, 0], [1, 1]], {"vector_length": 2}),
    ("boolvector", [[True, False], [False, True]], [[False, False], [True, True]], {"vector_length": 2}),
    (
        "stringvector",
        [["a", "bc"], ["", "d"]],
        [["x", "y"], ["z", "w"]],
        {"vector_length": 2, "string_length": 4},
    ),
    ("fp16vector", [[0.5, 1.5], [2.5, 3.5]], [[0.0, 0.0], [1.0, 1.0]], {"vector_length": 2}),
    # Our extensions. Q8 values are exact when a vector's largest magnitude is 127 x a power of two.
    ("bf16", [1.5, -(2.0**127)], [0.0, 1.0], {}),  # float32 range, far past fp16
    ("bf16vector", [[0.5, -1.5], [2.5, 2.0**-100]], [[0.0, 0.0], [1.0, 1.0]], {"vector_length": 2}),
    ("q8vector", [[127.0, -64.0], [254.0, 2.0]], [[0.0, 0.0], [127.0, 1.0]], {"vector_length": 2}),
]


def _with_types(doc: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    fgs = doc["entities"][0]["feature_groups"]
    for t, _values, defaults, extra in TYPES:
        fgs.append(
            {
                "label": f"t_{t}",
                "data_type": t,
                "store": "main",
                "features": [{"label": f"f{i}", "default": d, **extra} for i, d in enumerate(defaults)],
            }
        )
    return doc


def apply(registry: SqliteRegistry, doc: dict[str, Any]) -> None:
    spec = parse_spec(doc, env={})
    registry.apply(lambda state: reconcile(state, spec))


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[FeatureStore, SqliteRegistry]]:
    registry = SqliteRegistry(tmp_path / "registry.db")
    apply(registry, _with_types(DOC))
    store = SqliteStore(tmp_path / "store.db")
    fs = FeatureStore(registry, stores={"main": store}, poll_interval=0.05)
    yield fs, registry
    fs.close()
    store.close()
    registry.close()


@pytest.mark.parametrize(("dtype", "row", "defaults", "extra"), TYPES, ids=[t[0] for t in TYPES])
def test_every_type_round_trips(
    env: tuple[FeatureStore, SqliteRegistry], dtype: str, row: list[Any], defaults: list[Any], extra: Any
) -> None:
    fs, _ = env
    fg = f"t_{dtype}"
    # numpy would infer float64 for [0, 2**64 - 1]; real callers pass typed arrays.
    values: Any = (
        [row]
        if dtype.startswith("string")
        else np.array([row], dtype=np.uint64 if dtype == "uint64" else None)
    )
    fs.persist("user", fg, ["u1"], values)
    r = fs.retrieve("user", ["u1", "nobody"], {fg: ["f1", "f0"]})
    got = r.values[fg]
    assert list(r.status[fg]) == [FOUND, MISSING]
    as_list = got if isinstance(got, list) else got.tolist()
    assert as_list[0] == [row[1], row[0]]
    assert as_list[1] == [defaults[1], defaults[0]]


def test_request_order_duplicates_and_key_order(env: tuple[FeatureStore, SqliteRegistry]) -> None:
    fs, _ = env
    fs.persist("user", "activity", ["u1", "u2"], np.array([[0.25, 3], [0.75, 4]], dtype=np.float32))
    r = fs.retrieve("user", ["u2", "u9", "u1", "u2"], {"activity": ["clicks", "ctr"]})
    assert r.values["activity"].tolist() == [[4.0, 0.75], [0.0, 0.5], [3.0, 0.25], [4.0, 0.75]]
    assert list(r.status["activity"]) == [FOUND, MISSING, FOUND, FOUND]
    # Composite keys are canonicalised whatever order the caller sends them in.
    fs.persist("pair", "g", [("x", "y")], np.array([[5]]), keys_schema=["a", "b"])
    r = fs.retrieve("pair", [("y", "x")], {"g": ["x"]}, keys_schema=["b", "a"])
    assert r.values["g"].tolist() == [[5]]


def test_quantized_retrieval(env: tuple[FeatureStore, SqliteRegistry]) -> None:
    fs, _ = env
    fs.persist("user", "activity", ["u1"], np.array([[0.1, 1.0]]))
    r = fs.retrieve("user", ["u1"], {"activity": ["ctr@DataTypeFP8E4M3"]})
    assert r.values["activity"].tolist() == [[0.1015625]]  # 0.1 rounded to E4M3


def test_ttl_expiry_answers_defaults(env: tuple[FeatureStore, SqliteRegistry]) -> None:
    fs, _ = env
    fs.persist("user", "short", ["u1"], np.array([[42]]))
    assert fs.retrieve("user", ["u1"], {"short": ["n"]}).values["short"].tolist() == [[42]]
    deadline = time.time() + 10
    while time.time() < deadline:
        r = fs.retrieve("user", ["u1"], {"short": ["n"]})
        if r.status["short"][0] != FOUND:
            break
        time.sleep(0.2)
    assert r.status["short"][0] in (EXPIRED, MISSING)
    assert r.values["short"].tolist() == [[-1]]


def test_schema_evolution_reads_old_blocks(env: tuple[FeatureStore, SqliteRegistry]) -> None:
    fs, registry = env
    fs.persist("user", "activity", ["old"], np.array([[0.25, 2]]))
    doc = _with_types(DOC)
    doc["entities"][0]["feature_groups"][0]["features"].append({"label": "spend", "default": -1.0})
    apply(registry, doc)
    deadline = time.time() + 5
    while fs.snapshot.feature_group("user", "activity").active_version != 2 and time.time() < deadline:
        time.sleep(0.05)
    assert fs.snapshot.feature_group("user", "activity").active_version == 2
    fs.persist("user", "activity", ["new"], np.array([[0.5, 3, 9.0]]))
    r = fs.retrieve("user", ["old", "new"], {"activity": ["spend", "ctr", "clicks"]})
    assert r.values["activity"].tolist() == [[-1.0, 0.25, 2.0], [9.0, 0.5, 3.0]]
    assert list(r.status["activity"]) == [FOUND, FOUND]


def test_bad_input_is_rejected_and_nothing_is_written(env: tuple[FeatureStore, SqliteRegistry]) -> None:
    fs, _ = env
    fs.persist("user", "t_int8", ["u1"], np.array([[1, 2]]))
    with pytest.raises(InvalidInputError, match="row 1"):
        fs.persist("user", "t_int8", ["u1", "u2"], np.array([[3, 4], [5, 300]]))
    r = fs.retrieve("user", ["u1", "u2"], {"t_int8": ["f0", "f1"]})
    assert r.values["t_int8"].tolist() == [[1, 2], [0, 1]]  # u1 untouched, u2 never written
    with pytest.raises(InvalidInputError, match="expected 2 values"):
        fs.persist("user", "t_int8", ["u1"], np.array([[1, 2, 3]]))
    with pytest.raises(NotFoundError, match="user/activity/nope"):
        fs.retrieve("user", ["u1"], {"activity": ["nope"]})
    with pytest.raises(NotFoundError, match="user/nope"):
        fs.retrieve("user", ["u1"], {"nope": ["x"]})
    with pytest.raises(NotFoundError, match="entity"):
        fs.retrieve("nobody", ["u1"], {"activity": ["ctr"]})
    with pytest.raises(InvalidInputError, match="keys_schema"):
        fs.retrieve("user", ["u1"], {"activity": ["ctr"]}, keys_schema=["uid"])
    with pytest.raises(InvalidInputError, match="empty value"):
        fs.persist("pair", "g", [("a", "")], np.array([[1]]))


def test_relative_data_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OFS_REGISTRY", raising=False)
    registry = SqliteRegistry(Path("rel") / "registry.db")
    apply(registry, DOC)
    registry.close()
    with FeatureStore(data_directory="rel") as fs:
        fs.persist("user", "activity", ["u1"], np.array([[0.25, 1]]))
        assert fs.retrieve("user", ["u1"], {"activity": ["ctr"]}).values["activity"].tolist() == [[0.25]]
    assert (tmp_path / "rel" / "store.db").exists()


class CountingStore(SqliteStore):
    """A real SQLite store that counts reads (to see cache hits)."""

    reads = 0

    def read(self, entity: Any, keys: Any, fg_ids: Any) -> list[list[bytes]]:
        CountingStore.reads += 1
        return super().read(entity, keys, fg_ids)


def test_in_process_cache(tmp_path: Path) -> None:
    doc = copy.deepcopy(DOC)
    user = doc["entities"][0]
    user["cache"] = {"in_process": {"enabled": True, "ttl_seconds": 60, "jitter_percent": 10}}
    user["feature_groups"][0]["in_process_cache"] = True
    registry = SqliteRegistry(tmp_path / "registry.db")
    apply(registry, doc)
    store = CountingStore(tmp_path / "store.db")
    other_store = SqliteStore(tmp_path / "store.db")
    fs = FeatureStore(registry, stores={"main": store})
    other = FeatureStore(registry, stores={"main": other_store})  # another process, same data
    try:
        fs.persist("user", "activity", ["u1"], np.array([[0.25, 1]]))
        CountingStore.reads = 0
        first = fs.retrieve("user", ["u1", "u2"], {"activity": ["ctr"]})
        again = fs.retrieve("user", ["u2", "u1"], {"activity": ["clicks", "ctr"]})
        assert CountingStore.reads == 1  # the second request is served from the cache, misses included
        assert first.values["activity"].tolist() == [[0.25], [0.5]]
        assert again.values["activity"].tolist() == [[0.0, 0.5], [1.0, 0.25]]
        assert list(again.status["activity"]) == [MISSING, FOUND]
        # A write through this FeatureStore invalidates its cache at once.
        fs.persist("user", "activity", ["u1"], np.array([[0.75, 2]]))
        assert fs.retrieve("user", ["u1"], {"activity": ["ctr"]}).values["activity"].tolist() == [[0.75]]
        # A write elsewhere is seen once the entry's TTL ends (bounded staleness, documented).
        other.persist("user", "activity", ["u1"], np.array([[0.125, 3]]))
        assert fs.retrieve("user", ["u1"], {"activity": ["ctr"]}).values["activity"].tolist() == [[0.75]]
        # FGs not flagged for the in-process cache always go to the store.
        CountingStore.reads = 0
        fs.retrieve("user", ["u1"], {"short": ["n"]})
        fs.retrieve("user", ["u1"], {"short": ["n"]})
        assert CountingStore.reads == 2
    finally:
        fs.close()
        other.close()
        store.close()
        other_store.close()
        registry.close()


def test_persist_from_pandas_and_to_pandas(env: tuple[FeatureStore, SqliteRegistry]) -> None:
    pd = pytest.importorskip("pandas")
    fs, _ = env
    # Columns by label, in any order; "ctr" is missing and gets its default (0.5).
    fs.persist("user", "activity", ["u1", "u2"], pd.DataFrame({"clicks": [3, 4]}))
    fs.persist("user", "t_fp32vector", ["u1"], pd.DataFrame({"f1": [np.array([5.0, 6.0])]}))
    fs.persist("user", "t_string", ["u1"], pd.DataFrame({"f0": ["x"]}))
    r = fs.retrieve("user", ["u1", "u2"], {"activity": ["ctr", "clicks"], "t_fp32vector": ["f0", "f1"]})
    assert r.values["activity"].tolist() == [[0.5, 3.0], [0.5, 4.0]]
    assert r.values["t_fp32vector"].tolist()[0] == [[0.0, 0.0], [5.0, 6.0]]
    assert fs.retrieve("user", ["u1"], {"t_string": ["f0", "f1"]}).values["t_string"] == [["x", "z"]]
    df = r.to_pandas()
    assert list(df.columns) == ["activity.ctr", "activity.clicks", "t_fp32vector.f0", "t_fp32vector.f1"]
    assert df["activity.clicks"].tolist() == [3.0, 4.0]
    with pytest.raises(InvalidInputError, match="no features"):
        fs.persist("user", "activity", ["u1"], pd.DataFrame({"nope": [1]}))


def _cached_doc() -> dict[str, Any]:
    doc = _with_types(DOC)
    for ent in doc["entities"]:
        ent["cache"] = {"in_process": {"enabled": True, "ttl_seconds": 60, "jitter_percent": 0}}
        for fg in ent["feature_groups"]:
            fg["in_process_cache"] = fg["label"] != "short"
    return doc


def test_cache_hits_answer_exactly_what_the_store_does(tmp_path: Path) -> None:
    """The all-hits native path (lookup + assembly in one call) against the store path, every type."""
    registry = SqliteRegistry(tmp_path / "registry.db")
    apply(registry, _cached_doc())
    store = CountingStore(tmp_path / "store.db")
    fs = FeatureStore(registry, stores={"main": store})
    uncached = FeatureStore(registry, stores={"main": SqliteStore(tmp_path / "store.db")}, cache_bytes=0)
    try:
        odd = ["u|1", "u:2\\", "ü3"]
        for t, row, _defaults, _extra in TYPES:
            typed = np.uint64 if t == "uint64" else None
            values = [row, row] if "string" in t else np.array([row, row], typed)
            fs.persist("user", f"t_{t}", odd[:2], values)
        fs.persist("pair", "g", [("a|", "b:"), ("1", "2")], np.array([[7], [8]]))
        features = {f"t_{t}": ["f1", "f0"] for t, *_ in TYPES}
        want = uncached.retrieve("user", odd, features)
        fs.retrieve("user", odd, features)  # fills the cache
        CountingStore.reads = 0
        got = fs.retrieve("user", odd, features)
        assert CountingStore.reads == 0
        for fg in features:
            assert np.asarray(got.status[fg]).tolist() == np.asarray(want.status[fg]).tolist(), fg
            g, w = got.values[fg], want.values[fg]
            as_list = [v.tolist() if hasattr(v, "tolist") else v for v in (g, w)]
            assert as_list[0] == as_list[1], fg
            assert getattr(g, "dtype", None) == getattr(w, "dtype", None), fg
        # Composite keys in the caller's order, numbers as key values, duplicates.
        keys = [("b:", "a|"), ("2", 1), ("b:", "a|")]
        want_pair = uncached.retrieve("pair", keys, {"g": ["x"]}, keys_schema=["b", "a"])
        fs.retrieve("pair", keys, {"g": ["x"]}, keys_schema=["b", "a"])
        got_pair = fs.retrieve("pair", keys, {"g": ["x"]}, keys_schema=["b", "a"])
        assert CountingStore.reads == 1
        assert got_pair.values["g"].tolist() == want_pair.values["g"].tolist() == [[7], [8], [7]]
        # Bad keys are still named, whichever path answers.
        with pytest.raises(InvalidInputError, match="single value"):
            fs.retrieve("pair", ["x"], {"g": ["x"]})
        with pytest.raises(InvalidInputError, match="3 values, expected 2"):
            fs.retrieve("pair", [("1", "2", "3")], {"g": ["x"]})
        # A persist drops the entry: the next read goes to the store and sees the new value.
        fs.persist("pair", "g", [("a|", "b:")], np.array([[9]]))
        assert fs.retrieve("pair", [("a|", "b:")], {"g": ["x"]}).values["g"].tolist() == [[9]]
    finally:
        fs.close()
        uncached.close()
        store.close()
        registry.close()


def test_wire_retrieve_from_the_cache_matches_the_store(tmp_path: Path) -> None:
    from online_feature_store._proto import retrieve_pb2

    registry = SqliteRegistry(tmp_path / "registry.db")
    apply(registry, _cached_doc())
    store = CountingStore(tmp_path / "store.db")
    fs = FeatureStore(registry, stores={"main": store})
    uncached = FeatureStore(registry, stores={"main": SqliteStore(tmp_path / "store.db")}, cache_bytes=0)
    try:
        fs.persist("user", "activity", ["u1", "u|2"], np.array([[0.25, 1], [0.5, 2]]))
        query = retrieve_pb2.Query(
            entity_label="user",
            keys_schema=["user_id"],
            keys=[retrieve_pb2.Keys(cols=[k]) for k in ("u1", "u|2", "u3")],
            feature_groups=[retrieve_pb2.FeatureGroup(label="activity", feature_labels=["clicks", "ctr"])],
        ).SerializeToString()
        fs.retrieve_wire(query)
        CountingStore.reads = 0
        for decoded in (False, True):
            assert fs.retrieve_wire(query, decoded=decoded) == uncached.retrieve_wire(query, decoded=decoded)
        assert CountingStore.reads == 0
    finally:
        fs.close()
        uncached.close()
        store.close()
        registry.close()
