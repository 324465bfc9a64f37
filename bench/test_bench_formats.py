"""pytest-benchmark tests of the Python API of the storage formats.

``pytest bench/`` runs each benchmark once as a smoke test (``pyproject.toml`` sets
``--benchmark-disable``); ``pytest bench/ --benchmark-enable`` measures them. The full measurement
run, Rust included, is ``bench/run_formats.sh``.
"""

from __future__ import annotations

import numpy as np
import pytest

import online_feature_store as ofs
from online_feature_store import formats

NOW = 1_750_000_000
TTL = 86_400
N_FEATURES = 1_000
N_FLOATS = 1_000_000
N_FGS = 10


def fp32_values(n: int, seed: int = 0) -> np.ndarray:
    """Scores and embedding-like values in [-4, 4): what FP32 feature groups hold."""
    return np.random.default_rng(seed).uniform(-4.0, 4.0, n).astype(np.float32)


@pytest.fixture(scope="module")
def fp32_meta() -> formats.BlockMeta:
    return formats.BlockMeta(ofs.DataType.FP32, N_FEATURES, version=1)


@pytest.mark.benchmark(group="psdb encode, 1,000 fp32 features")
@pytest.mark.parametrize("compress", [False, True], ids=["raw", "zstd"])
def test_encode_block_fp32(benchmark, fp32_meta: formats.BlockMeta, compress: bool) -> None:
    values = fp32_values(N_FEATURES)
    block = benchmark(formats.encode_block, fp32_meta, values, ttl=TTL, now=NOW, compress=compress)
    assert formats.read_header(block).data_type == ofs.DataType.FP32
    if not compress:
        assert len(block) == formats.PSDB_HEADER_LEN + 4 * N_FEATURES


@pytest.mark.benchmark(group="psdb decode, 1,000 fp32 features")
@pytest.mark.parametrize("compress", [False, True], ids=["raw", "zstd"])
def test_decode_block_fp32(benchmark, fp32_meta: formats.BlockMeta, compress: bool) -> None:
    values = fp32_values(N_FEATURES)
    block = formats.encode_block(fp32_meta, values, ttl=TTL, now=NOW, compress=compress)
    decoded = benchmark(formats.decode_block, fp32_meta, block, now=NOW)
    assert decoded.status == "present"
    np.testing.assert_array_equal(decoded.values, values)


@pytest.mark.benchmark(group="fp16, 1M floats")
def test_fp16_encode(benchmark) -> None:
    values = fp32_values(N_FLOATS)
    codes = benchmark(formats.fp16_encode, values)
    assert codes.dtype == np.uint16
    assert codes.shape == (N_FLOATS,)
    np.testing.assert_array_equal(codes, values.astype(np.float16).view(np.uint16))


@pytest.mark.benchmark(group="fp16, 1M floats")
def test_fp16_decode(benchmark) -> None:
    codes = fp32_values(N_FLOATS).astype(np.float16).view(np.uint16)
    back = benchmark(formats.fp16_decode, codes)
    np.testing.assert_array_equal(back, codes.view(np.float16).astype(np.float32))


@pytest.fixture(scope="module")
def fg_blocks() -> list[tuple[int, bytes]]:
    """One entity's blocks of ten FGs: 100 fp32 features each (409 bytes)."""
    meta = formats.BlockMeta(ofs.DataType.FP32, 100, version=1)
    return [
        (fg, formats.encode_block(meta, fp32_values(100, seed=fg), ttl=TTL, now=NOW, compress=False))
        for fg in range(1, N_FGS + 1)
    ]


@pytest.mark.benchmark(group="csdb, 10 FGs")
def test_csdb_encode(benchmark, fg_blocks: list[tuple[int, bytes]]) -> None:
    value = benchmark(formats.csdb_encode, fg_blocks)
    assert value[0] == 1  # layout 1: every block fits 16-bit lengths
    assert len(value) == 1 + sum(4 + len(b) for _, b in fg_blocks)


@pytest.mark.benchmark(group="csdb, 10 FGs")
def test_csdb_lookup(benchmark, fg_blocks: list[tuple[int, bytes]]) -> None:
    value = formats.csdb_encode(fg_blocks)
    found = benchmark(formats.csdb_lookup, value, [2, 6, 10])
    assert found == [fg_blocks[1][1], fg_blocks[5][1], fg_blocks[9][1]]
