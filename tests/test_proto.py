"""The wire contract in proto/ matches the reference's field numbers and types (facts file §5)."""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import FieldDescriptor as F

from online_feature_store._proto import persist_pb2, retrieve_pb2

# message -> {field: (number, type, repeated)} as listed in the facts file, §5.1 and §5.2.
RETRIEVE = {
    "Keys": {"cols": (1, F.TYPE_STRING, True)},
    "FeatureGroup": {"label": (1, F.TYPE_STRING, False), "feature_labels": (2, F.TYPE_STRING, True)},
    "Query": {
        "entity_label": (1, F.TYPE_STRING, False),
        "feature_groups": (2, F.TYPE_MESSAGE, True),
        "keys_schema": (3, F.TYPE_STRING, True),
        "keys": (4, F.TYPE_MESSAGE, True),
    },
    "Feature": {
        "label": (1, F.TYPE_STRING, False),
        "column_idx": (2, F.TYPE_INT32, False),
        # our additions, new field numbers: the served cells' data type id and vector length
        "data_type": (3, F.TYPE_UINT32, False),
        "vector_length": (4, F.TYPE_UINT32, False),
    },
    "FeatureSchema": {
        "feature_group_label": (1, F.TYPE_STRING, False),
        "features": (2, F.TYPE_MESSAGE, True),
    },
    "Row": {
        "keys": (1, F.TYPE_STRING, True),
        "columns": (2, F.TYPE_BYTES, True),
        "fg_status": (3, F.TYPE_UINT32, True),  # our addition, a new field number
    },
    "Result": {
        "entity_label": (1, F.TYPE_STRING, False),
        "keys_schema": (2, F.TYPE_STRING, True),
        "feature_schemas": (3, F.TYPE_MESSAGE, True),
        "rows": (4, F.TYPE_MESSAGE, True),
    },
    "DecodedRow": {"keys": (1, F.TYPE_STRING, True), "columns": (2, F.TYPE_STRING, True)},
    "DecodedResult": {
        "keys_schema": (1, F.TYPE_STRING, True),
        "feature_schemas": (2, F.TYPE_MESSAGE, True),
        "rows": (3, F.TYPE_MESSAGE, True),
    },
}
PERSIST = {
    "FeatureGroupSchema": {"label": (1, F.TYPE_STRING, False), "feature_labels": (2, F.TYPE_STRING, True)},
    "Values": {
        "fp32_values": (1, F.TYPE_DOUBLE, True),
        "fp64_values": (2, F.TYPE_DOUBLE, True),
        "int32_values": (3, F.TYPE_INT32, True),
        "int64_values": (4, F.TYPE_INT64, True),
        "uint32_values": (5, F.TYPE_UINT32, True),
        "uint64_values": (6, F.TYPE_UINT64, True),
        "string_values": (7, F.TYPE_STRING, True),
        "bool_values": (8, F.TYPE_BOOL, True),
        "vector": (9, F.TYPE_MESSAGE, True),
    },
    "Vector": {"values": (1, F.TYPE_MESSAGE, False)},
    "FeatureValues": {"values": (1, F.TYPE_MESSAGE, False)},
    "Data": {"key_values": (1, F.TYPE_STRING, True), "feature_values": (2, F.TYPE_MESSAGE, True)},
    "Query": {
        "entity_label": (1, F.TYPE_STRING, False),
        "keys_schema": (2, F.TYPE_STRING, True),
        "feature_group_schema": (3, F.TYPE_MESSAGE, True),
        "data": (4, F.TYPE_MESSAGE, True),
    },
    "Result": {"message": (2, F.TYPE_STRING, False)},
}


def _fields(module: object, message: str) -> dict[str, tuple[int, int, bool]]:
    desc = getattr(module, message).DESCRIPTOR
    return {f.name: (f.number, f.type, f.is_repeated) for f in desc.fields}


@pytest.mark.parametrize(("module", "table"), [(retrieve_pb2, RETRIEVE), (persist_pb2, PERSIST)])
def test_field_numbers_match_reference(
    module: object, table: dict[str, dict[str, tuple[int, int, bool]]]
) -> None:
    for message, fields in table.items():
        assert _fields(module, message) == fields, message


def test_services() -> None:
    r = retrieve_pb2.DESCRIPTOR.services_by_name["FeatureService"]
    assert r.full_name == "retrieve.FeatureService"
    assert {m.name for m in r.methods} == {"RetrieveFeatures", "RetrieveDecodedResult"}
    p = persist_pb2.DESCRIPTOR.services_by_name["FeatureService"]
    assert p.full_name == "persist.FeatureService"
    assert [m.name for m in p.methods] == ["PersistFeatures"]


def test_hand_assembled_query_parses() -> None:
    # retrieve.Query{entity_label:"user", feature_groups:[{label:"fg", feature_labels:["a"]}],
    # keys_schema:["uid"], keys:[{cols:["7"]}]} assembled from field numbers, not from generated code.
    fg = b"\x0a\x02fg" + b"\x12\x01a"
    raw = b"\x0a\x04user" + b"\x12" + bytes([len(fg)]) + fg + b"\x1a\x03uid" + b"\x22\x03" + b"\x0a\x017"
    q = retrieve_pb2.Query.FromString(raw)
    assert q.entity_label == "user"
    assert q.feature_groups[0].label == "fg"
    assert list(q.feature_groups[0].feature_labels) == ["a"]
    assert list(q.keys_schema) == ["uid"]
    assert list(q.keys[0].cols) == ["7"]


def test_persist_result_uses_field_two() -> None:
    assert persist_pb2.Result(message="ok").SerializeToString() == b"\x12\x02ok"
