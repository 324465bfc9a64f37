"""Feature data types, numbered exactly as the reference's storage header and registry names, plus this
project's extensions from 31 (bfloat16 and int8-with-scale embeddings; see ``docs/embeddings.md``)."""

from __future__ import annotations

import enum

from online_feature_store._native import data_type_names, parse_data_type

__all__ = ["DataType"]


class DataType(enum.IntEnum):
    """A feature data type: the reference's 31 (0..30) and our extensions (31..). ``DataType.FP32 == 4``;
    ``.type_name`` is ``"DataTypeFP32"``."""

    UNKNOWN = 0
    FP8E5M2 = 1
    FP8E4M3 = 2
    FP16 = 3
    FP32 = 4
    FP64 = 5
    INT8 = 6
    INT16 = 7
    INT32 = 8
    INT64 = 9
    UINT8 = 10
    UINT16 = 11
    UINT32 = 12
    UINT64 = 13
    STRING = 14
    BOOL = 15
    FP8E5M2_VECTOR = 16
    FP8E4M3_VECTOR = 17
    FP16_VECTOR = 18
    FP32_VECTOR = 19
    FP64_VECTOR = 20
    INT8_VECTOR = 21
    INT16_VECTOR = 22
    INT32_VECTOR = 23
    INT64_VECTOR = 24
    UINT8_VECTOR = 25
    UINT16_VECTOR = 26
    UINT32_VECTOR = 27
    UINT64_VECTOR = 28
    STRING_VECTOR = 29
    BOOL_VECTOR = 30
    # Extensions of this project: reference clients do not know them (docs/formats.md).
    BF16 = 31
    """bfloat16: float32's range, 8 significant bits, 2 bytes."""
    BF16_VECTOR = 32
    Q8_VECTOR = 33
    """int8 codes with one float32 scale per vector: ``4 + n`` bytes for ``n`` values."""

    @property
    def type_name(self) -> str:
        """The reference's name, e.g. ``"DataTypeFP16Vector"``."""
        return data_type_names()[self]

    @property
    def is_vector(self) -> bool:
        """True for the fixed-length-per-feature vector types."""
        return self in _VECTORS

    @property
    def is_string(self) -> bool:
        """True for ``STRING`` and ``STRING_VECTOR``: the types whose features book a string length."""
        return self in _STRINGS

    @property
    def scalar(self) -> DataType:
        """The type of one value: ``FP16_VECTOR`` → ``FP16``, ``BF16_VECTOR`` → ``BF16``; scalars as they are,
        and ``Q8_VECTOR`` too (one scale per value would be no quantization, so it has no scalar form)."""
        if self == DataType.BF16_VECTOR:
            return DataType.BF16
        if self.is_vector and self < DataType.BF16:
            return DataType(self - 15)
        return self

    @property
    def is_extension(self) -> bool:
        """True for this project's types (31 and up), which reference clients cannot read."""
        return self >= DataType.BF16

    @classmethod
    def parse(cls, name: str | int) -> DataType:
        """Accepts a number, a reference name (``"DataTypeFP32"``) or a short one (``"fp32"``)."""
        if isinstance(name, int):
            return cls(name)
        return cls(parse_data_type(name))


_VECTORS = frozenset(t for t in DataType if DataType.FP8E5M2_VECTOR <= t <= DataType.BOOL_VECTOR) | {
    DataType.BF16_VECTOR,
    DataType.Q8_VECTOR,
}
_STRINGS = frozenset({DataType.STRING, DataType.STRING_VECTOR})
