"""The storage formats, by name: PSDB blocks and cells, CSDB cache values, expiry, and the low-precision
conversions and quantization (docs/formats.md, docs/embeddings.md). All of it is the Rust core
(``online_feature_store._native``), re-exported here for whoever reads or writes the bytes directly; a
feature store user needs none of it (:class:`~online_feature_store.FeatureStore` and
:class:`~online_feature_store.Client` convert values themselves)::

    import numpy as np
    from online_feature_store import DataType, formats

    meta = formats.BlockMeta(DataType.FP16, 3)
    block = formats.encode_block(meta, np.float32([1.0, 2.5, -3.0]), ttl=3600)
"""

from __future__ import annotations

from online_feature_store._native import (
    MAX_TTL_SECONDS,
    PSDB_HEADER_LEN,
    BlockHeader,
    BlockMeta,
    DecodedBlock,
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

__all__ = [
    "MAX_TTL_SECONDS",
    "PSDB_HEADER_LEN",
    "BlockHeader",
    "BlockMeta",
    "DecodedBlock",
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
