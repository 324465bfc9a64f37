"""online-feature-store: an online feature store for real-time ML.

The storage formats, low-precision conversions and quantization live in the Rust core
(``online_feature_store._native``); this package re-exports them by name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from online_feature_store._native import (
    MAX_TTL_SECONDS,
    PSDB_HEADER_LEN,
    BlockHeader,
    BlockMeta,
    DecodedBlock,
    __version__,
    bf16_decode,
    bf16_encode,
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
    q8_decode,
    q8_encode,
    quantize,
    read_header,
)
from online_feature_store.embeddings import Q8Values
from online_feature_store.errors import (
    AuthError,
    ConflictError,
    CorruptBlockError,
    DeadlineExceededError,
    InvalidInputError,
    NotFoundError,
    OfsError,
    ResourceExhaustedError,
    UnavailableError,
)
from online_feature_store.results import RetrieveResult, Status
from online_feature_store.types import DataType

if TYPE_CHECKING:
    from online_feature_store.client import Client
    from online_feature_store.feature_store import FeatureStore

__all__ = [
    "MAX_TTL_SECONDS",
    "PSDB_HEADER_LEN",
    "AuthError",
    "BlockHeader",
    "BlockMeta",
    "Client",
    "ConflictError",
    "CorruptBlockError",
    "DataType",
    "DeadlineExceededError",
    "DecodedBlock",
    "FeatureStore",
    "InvalidInputError",
    "NotFoundError",
    "OfsError",
    "Q8Values",
    "ResourceExhaustedError",
    "RetrieveResult",
    "Status",
    "UnavailableError",
    "__version__",
    "bf16_decode",
    "bf16_encode",
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
    "q8_decode",
    "q8_encode",
    "quantize",
    "read_header",
]


def __getattr__(name: str) -> Any:
    # Imported on first use: Client needs grpc (the [client] extra), so the library works without it, and
    # FeatureStore brings the registry, the stores and the caches, which a client process never loads.
    if name == "Client":
        from online_feature_store.client import Client

        return Client
    if name == "FeatureStore":
        from online_feature_store.feature_store import FeatureStore

        return FeatureStore
    raise AttributeError(f"module 'online_feature_store' has no attribute {name!r}")
