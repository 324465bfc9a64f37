"""Arrow columns into feature groups (online_feature_store.batch.columns, through push_arrow / push_rows
into a real embedded store): mapping by name, every FG kind, null policies, and errors that name the
source, the row and the column before anything of the batch is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from online_feature_store import InvalidInputError, NotFoundError, formats
from online_feature_store.batch import plan_columns, push_arrow, push_rows
from online_feature_store.feature_store import FeatureStore
from online_feature_store.ingest import EmbeddedSink

from .conftest import FEATURE_GROUPS, FEATURES, assert_stored, keys_of, stored_count, table


def test_every_fg_kind_round_trips_from_an_arrow_table(fs: FeatureStore) -> None:
    assert push_arrow(fs, "user", table(0, 5000), feature_groups=FEATURE_GROUPS, registry=fs) == 5000
    assert_stored(fs, 0, 5000)


def test_fp16_vectors_from_float16_and_fixed_size_lists(fs: FeatureStore) -> None:
    t = table(0, 10)
    values = np.array(t.column("v").to_pylist(), dtype=np.float16).reshape(-1)
    fixed = pa.FixedSizeListArray.from_arrays(pa.array(values, type=pa.float16()), 3)
    t = t.set_column(t.schema.get_field_index("v"), "v", fixed)
    push_arrow(fs, "user", t, feature_groups=FEATURE_GROUPS, registry=fs)
    assert_stored(fs, 0, 10)


def test_embedding_types_from_float_lists(tmp_path: Path) -> None:
    """bf16 and q8 vector FGs take Arrow float lists (float32, float64, or float16), quantized by the store;
    a non-float list is refused naming the type, a NaN for q8 naming the row and column."""
    from online_feature_store.registry.spec import reconcile
    from online_feature_store.registry.sqlite import SqliteRegistry
    from online_feature_store.registry.yaml_io import parse_spec

    doc = {
        "stores": [{"id": "main", "kind": "sqlite", "settings": {"path": "store.db"}}],
        "entities": [
            {
                "label": "item",
                "keys": [{"label": "item_id"}],
                "feature_groups": [
                    {
                        "label": "q",
                        "data_type": "q8vector",
                        "store": "main",
                        "features": [{"label": "qv", "vector_length": 4}],
                    },
                    {
                        "label": "b",
                        "data_type": "bf16vector",
                        "store": "main",
                        "features": [{"label": "bv", "vector_length": 4}],
                    },
                ],
            }
        ],
    }
    registry = SqliteRegistry(tmp_path / "registry.db")
    registry.apply(lambda state: reconcile(state, parse_spec(doc, env={})))
    registry.close()
    x = np.random.default_rng(3).standard_normal((20, 4)).astype(np.float32)
    t = pa.table(
        {
            "item_id": [f"i{i}" for i in range(20)],
            "qv": pa.array(list(x), type=pa.list_(pa.float32())),
            "bv": pa.array(list(x.astype(np.float64)), type=pa.list_(pa.float64())),
        }
    )
    with FeatureStore(data_directory=tmp_path, cache_bytes=0) as store:
        assert push_arrow(store, "item", t, feature_groups=["q", "b"], registry=store) == 20
        got = store.retrieve(
            "item", [f"i{i}" for i in range(20)], {"q": ["qv"], "b": ["bv"]}, embeddings="native"
        )
        codes, scales = formats.q8_encode(x)
        assert np.array_equal(got.values["q"].codes[:, 0], codes)
        assert np.array_equal(got.values["q"].scales[:, 0], scales)
        assert np.array_equal(
            got.values["b"][:, 0].astype(np.float32),
            formats.bf16_decode(formats.bf16_encode(x.ravel())).reshape(20, 4),
        )
        ints = t.set_column(t.schema.get_field_index("qv"), "qv", pa.array([["a"] * 4] * 20))
        with pytest.raises(InvalidInputError, match="wrong type: string cannot hold DataTypeQ8Vector"):
            push_arrow(store, "item", ints, feature_groups=["q"], registry=store)
        bad = x.copy()
        bad[7, 2] = np.nan
        nan = t.set_column(
            t.schema.get_field_index("qv"), "qv", pa.array(list(bad), type=pa.list_(pa.float32()))
        )
        with pytest.raises(InvalidInputError, match="NaN cannot be stored as DataTypeQ8Vector"):
            push_arrow(store, "item", nan, feature_groups=["q"], registry=store)


def test_python_rows_as_spark_hands_them(fs: FeatureStore) -> None:
    rows = table(0, 300).to_pylist()
    assert push_rows(fs, "user", iter(rows), feature_groups=FEATURE_GROUPS, registry=fs, chunk_rows=64) == 300
    assert_stored(fs, 0, 300)
    with EmbeddedSink(fs=fs) as sink:  # the sink the Spark writer opens for the embedded store
        push_rows(sink, "user", table(300, 10).to_pylist(), feature_groups=FEATURE_GROUPS, registry=fs)
    assert_stored(fs, 300, 10)


def _with_nulls() -> pa.Table:
    t = table(0, 10).to_pylist()
    t[7]["clicks"] = None
    t[3]["city"] = None
    t[2]["v"] = None
    t[5]["v"] = [1.0, None, 2.0]
    t[4]["active"] = None
    t[6]["emb.f1"] = None
    return pa.Table.from_pylist(t, schema=table(0, 1).schema)


def test_a_null_is_an_error_naming_row_and_column_and_nothing_of_the_batch_is_written(
    fs: FeatureStore,
) -> None:
    with pytest.raises(InvalidInputError) as err:
        push_arrow(fs, "user", _with_nulls(), feature_groups=FEATURE_GROUPS, registry=fs, source="t.parquet")
    message = str(err.value)
    assert message.startswith("t.parquet, row 6, column 'emb.f1' (feature emb.f1): null value"), message
    assert "nulls='default'" in message
    assert stored_count(fs, 0, 10) == 0
    # element nulls inside a vector are named with their element
    only_element = _with_nulls().to_pylist()
    for r in only_element:
        r.update({"clicks": 1, "city": "x", "active": True, "emb.f1": 1.0, "v": r["v"] or [0.0, 0.0, 0.0]})
    with pytest.raises(InvalidInputError, match=r"row 5, column 'v' \(feature vec.v\): null at element 1"):
        push_arrow(
            fs, "user", pa.Table.from_pylist(only_element, schema=table(0, 1).schema),
            feature_groups=["vec"], registry=fs,
        )  # fmt: skip


def test_nulls_default_writes_each_features_default(fs: FeatureStore) -> None:
    push_arrow(fs, "user", _with_nulls(), feature_groups=FEATURE_GROUPS, registry=fs, nulls="default")
    got = fs.retrieve("user", keys_of(0, 10), FEATURES)
    assert got.values["counts"][7].tolist() == [-7, -7]  # clicks' default; views was given
    assert got.values["tags"][3] == ["nowhere", "en"]
    assert got.values["vec"][2].tolist() == [[0.5, 0.5, 0.5]]  # a null cell: the whole default
    assert got.values["vec"][5].tolist() == [[1.0, 0.5, 2.0]]  # a null element: the default's element
    assert got.values["flags"][4].tolist() == [False, False]
    assert got.values["emb"][6].tolist() == [6.0, -1.0, 6.5, 6.75]
    assert got.values["counts"][8].tolist() == [24, -8]  # rows without nulls as given


def test_keys_are_never_null_or_empty(fs: FeatureStore) -> None:
    rows = table(0, 5).to_pylist()
    rows[2]["region"] = None
    with pytest.raises(InvalidInputError, match=r"input, row 2, column 'region' \(key 'region'\): null key"):
        push_arrow(
            fs, "user", pa.Table.from_pylist(rows), feature_groups=["emb"], registry=fs, nulls="default"
        )
    rows[2]["region"] = ""
    with pytest.raises(InvalidInputError, match=r"row 2, column 'region' \(key 'region'\): empty key"):
        push_arrow(fs, "user", pa.Table.from_pylist(rows), feature_groups=["emb"], registry=fs)
    assert stored_count(fs, 0, 5) == 0


def test_keys_with_separator_characters_and_integer_keys(fs: FeatureStore) -> None:
    t = pa.table(
        {
            "user_id": ["a|b", "c:d", "e\\f", "plain"],
            "region": pa.array([1, 2, 3, 4], type=pa.int64()),
            **{f"f{j}": pa.array(np.arange(4, dtype=np.float32) + j) for j in range(4)},
        }
    )
    push_arrow(fs, "user", t, feature_groups=["emb"], registry=fs)
    got = fs.retrieve(
        "user", [("a|b", "1"), ("c:d", "2"), ("e\\f", "3"), ("plain", "4")], {"emb": ["f0", "f3"]}
    )
    assert (got.status["emb"] == 0).all()
    assert got.values["emb"].tolist() == [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0], [3.0, 6.0]]


def test_wrong_types_are_refused_before_any_row_is_read(fs: FeatureStore) -> None:
    t = table(0, 3)
    floats = t.set_column(t.schema.get_field_index("clicks"), "clicks", pa.array([1.5, 2.0, 3.0]))
    with pytest.raises(
        InvalidInputError, match=r"in.parquet, column 'clicks' \(feature counts.clicks\): wrong type: double"
    ):
        push_arrow(fs, "user", floats, feature_groups=["counts"], registry=fs, source="in.parquet")
    scalar_vec = t.set_column(t.schema.get_field_index("v"), "v", pa.array([1.0, 2.0, 3.0]))
    with pytest.raises(InvalidInputError, match="needs a list column"):
        push_arrow(fs, "user", scalar_vec, feature_groups=["vec"], registry=fs)
    strings_as_bool = t.set_column(t.schema.get_field_index("active"), "active", pa.array(["y", "n", "y"]))
    with pytest.raises(InvalidInputError, match="wrong type: string cannot hold DataTypeBool"):
        push_arrow(fs, "user", strings_as_bool, feature_groups=["flags"], registry=fs)
    float_key = t.set_column(t.schema.get_field_index("region"), "region", pa.array([1.0, 2.0, 3.0]))
    with pytest.raises(InvalidInputError, match=r"keys must be strings, integers or \(UTF-8\) binary"):
        push_arrow(fs, "user", float_key, feature_groups=["emb"], registry=fs)
    # Binary keys are text by the one key rule (online_feature_store.keys): UTF-8, or refused by row.
    bad_key = t.set_column(t.schema.get_field_index("region"), "region", pa.array([b"eu", b"\xff", b"us"]))
    with pytest.raises(
        InvalidInputError, match=r"row 1, column 'region' \(key 'region'\): key value b'\\xff' is not"
    ):
        push_arrow(fs, "user", bad_key, feature_groups=["emb"], registry=fs)


def test_out_of_range_values_name_their_row_and_column(fs: FeatureStore) -> None:
    t = pa.table(
        {"user_id": ["a", "b", "c"], "region": ["x"] * 3, "n": pa.array([1, -128, 300], type=pa.int64())}
    )
    with pytest.raises(InvalidInputError) as err:
        push_arrow(fs, "user", t, feature_groups=["small"], registry=fs, source="f.parquet")
    assert str(err.value) == (
        "f.parquet, row 2, column 'n' (feature small.n): value 300 is out of range for DataTypeInt8"
    )
    big = table(0, 4).to_pylist()
    big[3]["v"] = [1.0, 70000.0, 0.0]  # over fp16's 65504
    with pytest.raises(
        InvalidInputError, match=r"row 3, column 'v' \(feature vec.v\): element 1: value 70000"
    ):
        push_arrow(fs, "user", pa.Table.from_pylist(big), feature_groups=["vec"], registry=fs)
    long = table(0, 4).to_pylist()
    long[1]["city"] = "x" * 17  # string_length 16
    with pytest.raises(
        InvalidInputError, match=r"row 1, column 'city' \(feature tags.city\): string of 17 bytes"
    ):
        push_arrow(fs, "user", pa.Table.from_pylist(long), feature_groups=["tags"], registry=fs)
    short = table(0, 4).to_pylist()
    short[2]["v"] = [1.0, 2.0]
    with pytest.raises(
        InvalidInputError,
        match=r"row 2, column 'v' \(feature vec.v\): a vector of 2 values, the feature's vector_length is 3",
    ):
        push_arrow(fs, "user", pa.Table.from_pylist(short), feature_groups=["vec"], registry=fs)
    assert stored_count(fs, 0, 4) == 0


def test_python_values_that_do_not_fit_name_their_row(fs: FeatureStore) -> None:
    rows = table(0, 4).to_pylist()
    rows[3]["clicks"] = "many"
    with pytest.raises(
        InvalidInputError,
        match=r"Spark partition 2, row 3, column 'clicks' \(feature counts.clicks\): 'many'",
    ):
        push_rows(fs, "user", rows, feature_groups=["counts"], registry=fs, source="Spark partition 2")


def test_columns_by_mapping_and_feature_subsets(fs: FeatureStore) -> None:
    t = table(0, 20).rename_columns(
        ["uid", "rg", "a", "b", "c", "d", "v", "city", "lang", "active", "premium", "clicks", "views"]
    )
    push_arrow(
        fs, "user", t, feature_groups=FEATURE_GROUPS, registry=fs,
        keys={"user_id": "uid", "region": "rg"},
        columns={"emb.f0": "a", "emb.f1": "b", "emb.f2": "c", "emb.f3": "d"},
    )  # fmt: skip
    assert_stored(fs, 0, 20)
    # Only some features: the others are written with their defaults.
    push_arrow(fs, "user", table(100, 2), feature_groups={"counts": ["views"]}, registry=fs)
    assert fs.retrieve("user", keys_of(100, 2), {"counts": ["clicks", "views"]}).values[
        "counts"
    ].tolist() == [
        [-7, -100],
        [-7, -101],
    ]


def test_mapping_errors(fs: FeatureStore) -> None:
    snap = fs.snapshot
    names = table(0, 1).schema.names
    with pytest.raises(
        InvalidInputError,
        match=r"a.csv: no column 'tags.lang' or 'lang' for feature 'lang' of feature group user/tags",
    ):
        plan_columns(snap, "user", ["tags"], [n for n in names if n != "lang"], source="a.csv")
    with pytest.raises(InvalidInputError, match=r"no column 'emb.f0' or 'f0' for feature 'f0'"):
        plan_columns(snap, "user", ["emb"], [n for n in names if n != "emb.f0"])
    with pytest.raises(InvalidInputError, match=r"no column 'uid' for key 'user_id'"):
        plan_columns(snap, "user", ["emb"], names, keys={"user_id": "uid"})
    with pytest.raises(InvalidInputError, match=r"has no key\(s\) \['nope'\]"):
        plan_columns(snap, "user", ["emb"], names, keys={"nope": "x"})
    with pytest.raises(InvalidInputError, match=r"names feature\(s\) \['emb.f9'\]"):
        plan_columns(snap, "user", ["emb"], names, columns={"emb.f9": "x"})
    with pytest.raises(NotFoundError):
        plan_columns(snap, "user", ["nope"], names)
    with pytest.raises(NotFoundError):
        plan_columns(snap, "user", {"emb": ["f9"]}, names)
    with pytest.raises(InvalidInputError, match="nulls must be one of"):
        push_arrow(fs, "user", table(0, 1), feature_groups=["emb"], registry=fs, nulls="zero")


def test_a_registry_url_is_enough(data_dir: Path) -> None:
    url = f"sqlite:///{data_dir / 'registry.db'}"
    with EmbeddedSink(str(data_dir), registry=url) as sink:
        push_arrow(sink, "user", table(0, 50), feature_groups=FEATURE_GROUPS, registry=url)
    with FeatureStore(url, data_directory=data_dir, cache_bytes=0) as fs:
        assert_stored(fs, 0, 50)
