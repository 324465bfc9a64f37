"""``DataType``: the one place the type rules (vector, string, scalar form) are stated."""

from __future__ import annotations

from online_feature_store import DataType


def test_is_string_is_exactly_the_reference_string_types() -> None:
    # The reference's own names are the independent oracle: "DataTypeString", "DataTypeStringVector".
    by_name = {t for t in DataType if t.type_name.startswith("DataTypeString")}
    assert by_name == {DataType.STRING, DataType.STRING_VECTOR}
    assert {t for t in DataType if t.is_string} == by_name


def test_string_and_vector_are_independent() -> None:
    assert DataType.STRING_VECTOR.is_string
    assert DataType.STRING_VECTOR.is_vector
    assert DataType.STRING.is_string
    assert not DataType.STRING.is_vector
    assert not any(t.is_string for t in (DataType.BOOL, DataType.FP32_VECTOR, DataType.Q8_VECTOR))
