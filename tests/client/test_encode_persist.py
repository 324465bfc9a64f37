"""``encode_persist_query``: columnar values in, ``persist.Query`` bytes out that parse with the generated
protobuf code and that the embedded store accepts, for every data type."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from conftest import ALL_TYPES, VLEN, element, fg_label, sample

from online_feature_store._native import decode_retrieve_result, encode_persist_query, encode_retrieve_query
from online_feature_store._proto import persist_pb2, retrieve_pb2
from online_feature_store.errors import CorruptBlockError, InvalidInputError
from online_feature_store.feature_store import FeatureStore
from online_feature_store.results import FOUND
from online_feature_store.types import DataType

CONTAINER = {
    "FP8E5M2": "fp32_values",
    "FP8E4M3": "fp32_values",
    "FP16": "fp32_values",
    "FP32": "fp32_values",
    "BF16": "fp32_values",
    "Q8": "fp32_values",
    "FP64": "fp64_values",
    "INT8": "int32_values",
    "INT16": "int32_values",
    "INT32": "int32_values",
    "INT64": "int64_values",
    "UINT8": "uint32_values",
    "UINT16": "uint32_values",
    "UINT32": "uint32_values",
    "UINT64": "uint64_values",
    "STRING": "string_values",
    "BOOL": "bool_values",
}


def wire_values(t: DataType, values: Any) -> Any:
    """The argument form: arrays as they are, strings flattened to rows x features cells."""
    if element(t) == "STRING":
        return [cell for row in values for cell in row]
    return values


@pytest.mark.parametrize("t", ALL_TYPES, ids=[t.name for t in ALL_TYPES])
def test_every_type_parses_and_persists(feature_store: FeatureStore, t: DataType) -> None:
    values = sample(t, rows=3)
    fg = fg_label(t)
    keys = [["u1"], ["u2"], ["u3"]]
    raw = encode_persist_query(
        "user", ["user_id"], keys, [(fg, int(t), ["f0", "f1"], wire_values(t, values))]
    )

    q = persist_pb2.Query.FromString(raw)
    assert (q.entity_label, list(q.keys_schema)) == ("user", ["user_id"])
    assert [(s.label, list(s.feature_labels)) for s in q.feature_group_schema] == [(fg, ["f0", "f1"])]
    assert [list(d.key_values) for d in q.data] == keys
    field = CONTAINER[element(t)]
    for r, d in enumerate(q.data):
        (fv,) = d.feature_values
        if t.is_vector:
            assert len(fv.values.vector) == 2
            cells = [list(getattr(v.values, field)) for v in fv.values.vector]
            assert all(len(c) == VLEN for c in cells)
        else:
            cells = list(getattr(fv.values, field))
        expected = values[r] if isinstance(values, list) else values[r].tolist()
        assert cells == expected

    assert feature_store.persist_wire(raw) == 3
    got = feature_store.retrieve("user", ["u1", "u2", "u3"], {fg: ["f0", "f1"]})
    assert list(got.status[fg]) == [FOUND] * 3
    if isinstance(values, list):
        assert got.values[fg] == values
    else:
        assert np.array_equal(got.values[fg], values)


def test_several_groups_and_composite_keys(feature_store: FeatureStore) -> None:
    f32 = sample(DataType.FP32, rows=2)
    raw = encode_persist_query(
        "user",
        ["user_id"],
        [("a",), ("b",)],
        [
            (fg_label(DataType.FP32), int(DataType.FP32), ["f1", "f0"], f32),
            (fg_label(DataType.STRING), int(DataType.STRING), ["f0"], ["x", "y"]),
        ],
    )
    assert feature_store.persist_wire(raw) == 4
    got = feature_store.retrieve("user", ["b"], {fg_label(DataType.FP32): ["f0", "f1"]})
    assert got.values[fg_label(DataType.FP32)].tolist() == [[f32[1, 1], f32[1, 0]]]
    raw = encode_persist_query("pair", ["b", "a"], [["y", "x"]], [("g", int(DataType.FP32), ["x"], [[2.5]])])
    feature_store.persist_wire(raw)
    assert feature_store.retrieve("pair", [("x", "y")], {"g": ["x"]}).values["g"].tolist() == [[2.5]]


def test_ints_given_as_floats_and_wider_types(feature_store: FeatureStore) -> None:
    fg = fg_label(DataType.INT8)
    raw = encode_persist_query(
        "user", ["user_id"], [["u"]], [(fg, int(DataType.INT8), ["f0", "f1"], [[3.0, -4]])]
    )
    feature_store.persist_wire(raw)
    assert feature_store.retrieve("user", ["u"], {fg: ["f0", "f1"]}).values[fg].tolist() == [[3, -4]]


@pytest.mark.parametrize(
    ("t", "values", "match"),
    [
        (DataType.INT8, np.array([[1, 300]]), "row 0, feature 1: 300 is out of range for DataTypeInt8"),
        (DataType.UINT32, np.array([[1, -1]]), "out of range for DataTypeUint32"),
        (DataType.INT32, np.array([[1.5, 2.0]]), "1.5 is not an integer"),
        (DataType.BOOL, np.array([[2, 0]]), "out of range"),
        (DataType.FP32, np.zeros((2, 2)), r"shape \[2, 2\], expected \(rows, features\) with rows=1"),
        (DataType.FP32, np.zeros((1, 3)), "features=2"),
        (DataType.FP32_VECTOR, np.zeros((1, 2)), r"\(rows, features, vector_length\)"),
        (DataType.FP32, ["a", "b"], "values"),
        (DataType.STRING, ["a"], "1 strings for 1 rows . 2 features"),
        (DataType.STRING, [1, 2], "flat sequence of str"),
        (DataType.STRING_VECTOR, ["ab", "cd"], "cell 0 must be a flat sequence of str"),
        (DataType.STRING_VECTOR, [["a"]], "1 string vectors for 1 rows . 2 features"),
        (DataType.UNKNOWN, np.zeros((1, 2)), "DataTypeUnknown"),
    ],
)
def test_bad_values_are_named(t: DataType, values: Any, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        encode_persist_query("user", ["user_id"], [["u"]], [("g", int(t), ["f0", "f1"], values)])


def test_bad_keys_and_groups() -> None:
    fg = ("g", int(DataType.FP32), ["f0"], np.zeros((1, 1)))
    with pytest.raises(InvalidInputError, match="keys must be a sequence of key rows"):
        encode_persist_query("user", ["user_id"], "u1", [fg])
    with pytest.raises(InvalidInputError, match="key row 0 must be a str or a sequence of str"):
        encode_persist_query("user", ["user_id"], [7], [fg])
    with pytest.raises(InvalidInputError, match="key 0 has 2 values"):
        encode_persist_query("user", ["user_id"], [["u1", "x"]], [fg])
    with pytest.raises(InvalidInputError, match="names no feature group"):
        encode_persist_query("user", ["user_id"], [["u1"]], [])
    with pytest.raises(InvalidInputError, match="no feature labels"):
        encode_persist_query("user", ["user_id"], [["u1"]], [("g", int(DataType.FP32), [], np.zeros((1, 0)))])
    with pytest.raises(InvalidInputError, match="out of range for u8"):
        encode_persist_query("user", ["user_id"], [["u1"]], [("g", 300, ["f0"], np.zeros((1, 1)))])


def test_bytes_equal_the_generated_code_serialization() -> None:
    # Same field order and packed encoding as protobuf's own serializer: byte-identical messages.
    raw = encode_persist_query(
        "user",
        ["user_id"],
        [["u1"], ["u2"]],
        [
            ("f", int(DataType.FP16), ["a"], np.array([[1.5], [-2.0]], dtype=np.float32)),
            ("v", int(DataType.UINT8_VECTOR), ["x", "y"], np.arange(8, dtype=np.uint8).reshape(2, 2, 2)),
            ("s", int(DataType.STRING_VECTOR), ["t"], [["p", "q"], []]),
        ],
    )
    v = persist_pb2.Values
    want = persist_pb2.Query(
        entity_label="user",
        keys_schema=["user_id"],
        feature_group_schema=[
            persist_pb2.FeatureGroupSchema(label="f", feature_labels=["a"]),
            persist_pb2.FeatureGroupSchema(label="v", feature_labels=["x", "y"]),
            persist_pb2.FeatureGroupSchema(label="s", feature_labels=["t"]),
        ],
        data=[
            persist_pb2.Data(
                key_values=[key],
                feature_values=[
                    persist_pb2.FeatureValues(values=v(fp32_values=[f])),
                    persist_pb2.FeatureValues(
                        values=v(vector=[persist_pb2.Vector(values=v(uint32_values=c)) for c in cells])
                    ),
                    persist_pb2.FeatureValues(
                        values=v(vector=[persist_pb2.Vector(values=v(string_values=strings))])
                    ),
                ],
            )
            for key, f, cells, strings in [
                ("u1", 1.5, [[0, 1], [2, 3]], ["p", "q"]),
                ("u2", -2.0, [[4, 5], [6, 7]], []),
            ]
        ],
    )
    assert raw == want.SerializeToString()
    query = encode_retrieve_query("user", ["user_id"], ["u1", ["u2"]], [("f", ["a", "b@DataTypeFP8E4M3"])])
    assert (
        query
        == retrieve_pb2.Query(
            entity_label="user",
            feature_groups=[retrieve_pb2.FeatureGroup(label="f", feature_labels=["a", "b@DataTypeFP8E4M3"])],
            keys_schema=["user_id"],
            keys=[retrieve_pb2.Keys(cols=["u1"]), retrieve_pb2.Keys(cols=["u2"])],
        ).SerializeToString()
    )


def test_malformed_responses_are_corrupt() -> None:
    with pytest.raises(CorruptBlockError, match="runs past the end"):
        decode_retrieve_result(b"\x1a\x05")
    with pytest.raises(CorruptBlockError, match="predates"):
        decode_retrieve_result(
            retrieve_pb2.Result(
                feature_schemas=[retrieve_pb2.FeatureSchema(features=[retrieve_pb2.Feature(label="a")])]
            ).SerializeToString()
        )
    with pytest.raises(CorruptBlockError, match="3 bytes in a DataTypeFP32 cell of 4"):
        decode_retrieve_result(
            retrieve_pb2.Result(
                feature_schemas=[
                    retrieve_pb2.FeatureSchema(
                        feature_group_label="g",
                        features=[retrieve_pb2.Feature(label="a", data_type=int(DataType.FP32))],
                    )
                ],
                rows=[retrieve_pb2.Row(keys=[], columns=[b"abc"], fg_status=[0])],
            ).SerializeToString()
        )
