"""Fuzz target for everything that parses untrusted bytes: ``decode_block``, ``feature_bytes``,
``read_header``, ``csdb_entries``, ``csdb_lookup`` and ``expiry_decode``.

The contract checked: any input either decodes or raises ``CorruptBlockError`` / ``InvalidInputError``.
Anything else (another exception, a Rust panic surfacing as ``PanicException``, an inconsistency
between the decoders) is a finding.

With atheris (``pip install atheris``)::

    python fuzz/fuzz_decode.py -atheris_runs=200000 [corpus_dir ...]

Without it, plain random bytes::

    python fuzz/fuzz_decode.py --random 100000 [--seed 1]

Input layout: byte 0 picks a meta, byte 1 a mode, the rest is the body. Modes: the body as a whole
block; a valid header for the meta (uncompressed or zstd) followed by the body as payload; a valid
seed block (plain or compressed) with the body applied as (position, xor) edits; a seed block cut
to a length taken from the body. Every mode also feeds the body to the CSDB and expiry parsers.
Only the Python harness is coverage-instrumented; the Rust core runs uninstrumented.

"""

from __future__ import annotations

import random
import sys
import time

import numpy as np

import online_feature_store as ofs
from online_feature_store import CorruptBlockError, InvalidInputError, formats

NOW = 1_772_000_000
EXPECTED = (CorruptBlockError, InvalidInputError)


def _days_before_year(year: int) -> int:
    """Days from 1970-01-01 to January 1st of `year` (proleptic Gregorian)."""

    def days(y: int) -> int:
        return y * 365 + y // 4 - y // 100 + y // 400

    return days(year - 1) - days(1969)


# First instant of year 16384, which the 14-bit year of the expiry field cannot hold.
YEAR_16384 = _days_before_year(16384) * 86_400


def _metas() -> list[tuple[formats.BlockMeta, object]]:
    """A few feature-group layouts, each with values for its seed blocks."""
    f = ofs.DataType
    return [
        (formats.BlockMeta(f.FP32, 3, version=2), np.array([1.0, 2.5, -3.0])),
        (formats.BlockMeta(f.BOOL, 10), np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 1], dtype=bool)),
        (formats.BlockMeta(f.STRING, 3, version=3, string_lengths=[10, 10, 10]), ["ab", "", "xyz"]),
        (formats.BlockMeta(f.FP32_VECTOR, 2, vector_lengths=[2, 3]), np.arange(5, dtype=np.float32)),
        (
            formats.BlockMeta(f.STRING_VECTOR, 2, string_lengths=[4, 6], vector_lengths=[2, 1]),
            ["é", "abcd", "日本"],
        ),
        (
            formats.BlockMeta(f.BOOL_VECTOR, 2, vector_lengths=[3, 5]),
            np.array([1, 0, 1, 1, 1, 0, 0, 1], dtype=bool),
        ),
        (formats.BlockMeta(f.FP8E4M3, 4), np.array([1.0, -2.0, 448.0, 0.001953125])),
        (formats.BlockMeta(f.INT64_VECTOR, 2, version=7, vector_lengths=[2, 2]), np.array([-1, 2**62, 0, 5])),
        (formats.BlockMeta(f.FP16, 5), np.array([0.5, -65504.0, np.nan, np.inf, 1e-7])),
        (formats.BlockMeta(f.INT32, 64), np.arange(64) % 3),  # compresses: exercises the zstd path
    ]


METAS = _metas()
SEEDS = [
    formats.encode_block(meta, values, ttl=ttl, now=NOW, compress=compress)
    for meta, values in METAS
    for compress, ttl in ((False, 0), (True, 3600))
]


def _header(meta: formats.BlockMeta, compression: int) -> bytes:
    t = meta.data_type
    return (
        meta.version.to_bytes(2, "little")
        + bytes(5)
        + bytes([0x10 | compression << 1 | t >> 4, (t & 15) << 4])
    )


def _block_for(selector: int, mode: int, body: bytes) -> tuple[formats.BlockMeta, bytes]:
    meta = METAS[selector % len(METAS)][0]
    mode %= 5
    if mode == 0:
        return meta, body
    if mode in (1, 2):
        return meta, _header(meta, mode - 1) + body
    seed = bytearray(SEEDS[(2 * (selector % len(METAS)) + (selector >> 7)) % len(SEEDS)])
    if mode == 3:
        for i in range(0, len(body) - 1, 2):
            seed[body[i] % len(seed)] ^= body[i + 1] or 1
        return meta, bytes(seed)
    cut = int.from_bytes(body[:2], "little") % (len(seed) + 1) if body else 0
    return meta, bytes(seed[:cut])


def _check_block(meta: formats.BlockMeta, block: bytes) -> None:
    try:
        decoded = formats.decode_block(meta, block, now=NOW)
    except EXPECTED:
        decoded = None
    if decoded is not None:
        assert decoded.status in ("present", "missing", "expired"), decoded.status
        present = decoded.status == "present"
        assert (decoded.values is not None) == present
        for pos in range(meta.n_features):
            single = formats.feature_bytes(meta, block, pos, now=NOW)
            assert single == decoded.feature(pos), pos
            assert (single is not None) == present
    try:
        header = formats.read_header(block)
    except EXPECTED:
        return
    assert header.layout == 1
    assert header.compression in (0, 1)
    assert header.data_type in {int(t) for t in ofs.DataType}


def _check_csdb(body: bytes, wanted: list[int]) -> None:
    try:
        entries = formats.csdb_entries(body)
    except EXPECTED:
        entries = None
    try:
        found = formats.csdb_lookup(body, wanted)
    except EXPECTED:
        found = None
    if entries is not None:
        assert formats.csdb_encode(entries, layout=body[0]) == body
        first: dict[int, bytes] = {}
        for fg, blk in entries:
            first.setdefault(fg, blk)
        assert found == [first.get(fg) for fg in wanted]


def _check_expiry(raw: bytes) -> None:
    try:
        t = formats.expiry_decode(raw)
    except EXPECTED:
        return
    assert len(raw) == 5
    if t is None:
        return
    # Every decodable expiry is an instant the 14-bit year can hold, with exactly one encoding.
    assert t < YEAR_16384, t
    again = formats.expiry_encode(t, now=t - 1)
    assert again == raw


def test_one_input(data: bytes) -> None:
    """One fuzz input. Raises only on a finding."""
    if len(data) < 2:
        _check_block(METAS[0][0], data)
        _check_csdb(data, [0])
        return
    meta, block = _block_for(data[0], data[1], data[2:])
    _check_block(meta, block)
    body = data[2:]
    wanted = [int.from_bytes(body[i : i + 2], "little") for i in range(0, min(len(body), 6), 2)]
    _check_csdb(body, wanted)
    _check_expiry(body[:5])


def run_random(n: int, seed: int = 0) -> None:
    """`n` inputs of random bytes (biased towards short ones and towards the structured modes)."""
    rng = random.Random(seed)
    for _ in range(n):
        size = rng.choice([0, 1, 2, 5, 7, 9, 12, 20, 40, 100, 300])
        data = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, size)))
        test_one_input(data)


def main(argv: list[str]) -> None:
    if "--random" in argv:
        n = int(argv[argv.index("--random") + 1])
        seed = int(argv[argv.index("--seed") + 1]) if "--seed" in argv else 0
        start = time.perf_counter()
        run_random(n, seed)
        print(f"{n} random inputs in {time.perf_counter() - start:.1f} s, no findings")
        return
    import atheris  # optional: only coverage-guided runs need it

    for name in ("_block_for", "_check_block", "_check_csdb", "_check_expiry"):
        globals()[name] = atheris.instrument_func(globals()[name])
    atheris.Setup(argv, atheris.instrument_func(test_one_input))
    atheris.Fuzz()  # exits the process when the runs are done


if __name__ == "__main__":
    main(sys.argv)
