"""online-feature-store: an online feature store for real-time ML.

The storage formats, low-precision conversions and quantization live in the Rust core
(``online_feature_store._native``); this package re-exports them by name.
"""

from __future__ import annotations

from online_feature_store._native import (
    MAX_TTL_SECONDS,
    PSDB_HEADER_LEN,
    BlockHeader,
    BlockMeta,
    DecodedBlock,
    __version__,
    csdb_encode,
    csdb_entries,
    csdb_lookup,
    decode_block,
    decode_cell,
    encode_block,
    encode_cell,
    expiry_decode,
    expiry_encode,
    feature_bytes,
    fp8_e4m3_decode,
    fp8_e4m3_encode,
    fp8_e5m2_decode,
    fp8_e5m2_encode,
    fp16_decode,
    fp16_encode,
    parse_feature_label,
    quantize,
    read_header,
)
from online_feature_store.errors import (
    ConflictError,
    CorruptBlockError,
    InvalidInputError,
    NotFoundError,
    OfsError,
    UnavailableError,
)
from online_feature_store.types import DataType

__all__ = [
    "MAX_TTL_SECONDS",
    "PSDB_HEADER_LEN",
    "BlockHeader",
    "BlockMeta",
    "ConflictError",
    "CorruptBlockError",
    "DataType",
    "DecodedBlock",
    "InvalidInputError",
    "NotFoundError",
    "OfsError",
    "UnavailableError",
    "__version__",
    "csdb_encode",
    "csdb_entries",
    "csdb_lookup",
    "decode_block",
    "decode_cell",
    "encode_block",
    "encode_cell",
    "expiry_decode",
    "expiry_encode",
    "feature_bytes",
    "fp8_e4m3_decode",
    "fp8_e4m3_encode",
    "fp8_e5m2_decode",
    "fp8_e5m2_encode",
    "fp16_decode",
    "fp16_encode",
    "parse_feature_label",
    "quantize",
    "read_header",
]
