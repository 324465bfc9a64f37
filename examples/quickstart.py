"""A first look at the storage core: encode feature blocks, bundle them for a cache, read them back.

``./scripts/run`` runs it first: it needs only the package (no registry, store or server), and shows the
bytes that the stores hold and the caches keep. The quick start then serves them through the gRPC API
(``examples/quickstart_client.py``); ``python examples/quickstart.py`` runs this part alone.
"""

from __future__ import annotations

import numpy as np

import online_feature_store as ofs
from online_feature_store import formats


def main() -> None:
    # A user's "profile" feature group: 4 fp16 features, schema version 1, expiring in a day.
    profile = formats.BlockMeta(ofs.DataType.FP16, 4, version=1)
    block = formats.encode_block(profile, np.array([0.5, 12.25, -3.0, 1e-3], dtype=np.float32), ttl=86_400)
    header = formats.read_header(block)
    print(f"profile block: {len(block)} bytes, {header}")

    # An embedding feature group: one 8-dim fp8 E4M3 vector.
    emb = formats.BlockMeta(ofs.DataType.FP8E4M3_VECTOR, 1, vector_lengths=[8])
    emb_block = formats.encode_block(emb, np.linspace(-1, 1, 8, dtype=np.float32))

    # Both blocks in one cache value (CSDB), with a negative entry for a third FG.
    value = formats.csdb_encode([(1, block), (2, emb_block), (3, b"")])
    found = formats.csdb_lookup(value, [2, 1, 3, 9])
    sizes = [None if b is None else len(b) for b in found]
    print(f"cache value: {len(value)} bytes; lookup of FGs 2,1,3,9 -> block sizes {sizes}")

    decoded = formats.decode_block(profile, found[1])
    print("profile features:", decoded.values)
    print("embedding:", formats.decode_block(emb, found[0]).values)

    # Retrieval-time down-quantization: serve feature 1 as fp8 E5M2.
    fp16_bytes = decoded.feature(1)
    assert fp16_bytes is not None
    fp8 = formats.quantize(fp16_bytes, ofs.DataType.FP16, ofs.DataType.FP8E5M2)
    print(f"feature 1 as fp8 E5M2: {fp8.hex()} = {formats.fp8_e5m2_decode(np.frombuffer(fp8, np.uint8))[0]}")

    # Bad input is an error that names the problem; nothing is written.
    try:
        formats.encode_block(formats.BlockMeta(ofs.DataType.INT8, 1), np.array([300]))
    except ValueError as e:
        print(f"rejected: {e}")


if __name__ == "__main__":
    main()
