"""FP16, FP8 E4M3 (FN), FP8 E5M2 and bfloat16 conversions checked against numpy / ``ml_dtypes``.

``ml_dtypes`` is an independent implementation of the same formats: ``float8_e4m3fn`` and
``float8_e5m2`` round to nearest-even, and overflow exactly like the reference (E4M3: anything above
464 and ±Inf become NaN; E5M2: ≥ 61440 becomes Inf). numpy's ``float16`` is IEEE binary16.

Intentional differences (all about NaN bit patterns, never about a number):

* E5M2 encode of NaN: the reference (a port of PyTorch c10) stores ``0x7F`` / ``0xFF``; ml_dtypes
  stores ``0x7E`` / ``0xFE``. We follow the reference; both codes are NaN.
* FP16 encode of a *signalling* NaN: we return a quiet NaN (``0x7E00`` | payload), numpy keeps it
  signalling (``0x7C01``...). The sign and top payload bits agree.
* Decoding NaN codes: our float32 NaN bits differ from ml_dtypes' canonical ``0x7FC00000`` (E4M3
  gives c10's ``0x7FF00000``; E5M2 and FP16 keep the payload and set the quiet bit, where numpy keeps a
  signalling FP16 NaN signalling). Only NaN-ness and sign are compared for NaN codes.
* bfloat16 (our extension) matches ``ml_dtypes.bfloat16`` on every code, NaN included: a NaN input
  becomes the canonical quiet NaN with its sign (``0x7FC0`` / ``0xFFC0``).
* ``saturate=True`` has no ml_dtypes counterpart; it is checked as clamp-to-±max-then-convert, with
  E4M3 clamping ±Inf to ±448 (it has no Inf) and E5M2 / FP16 keeping ±Inf.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ml_dtypes
import numpy as np
import numpy.typing as npt
import pytest

from online_feature_store import CorruptBlockError, InvalidInputError, formats

Encoder = Callable[..., npt.NDArray[Any]]
Decoder = Callable[[Any], npt.NDArray[np.float32]]

# name: (encode, decode, numpy dtype, code dtype, number of codes, largest finite value)
FORMATS: dict[str, tuple[Encoder, Decoder, Any, Any, int, float]] = {
    "fp16": (formats.fp16_encode, formats.fp16_decode, np.float16, np.uint16, 1 << 16, 65504.0),
    "e4m3": (
        formats.fp8_e4m3_encode,
        formats.fp8_e4m3_decode,
        ml_dtypes.float8_e4m3fn,
        np.uint8,
        1 << 8,
        448.0,
    ),
    "e5m2": (
        formats.fp8_e5m2_encode,
        formats.fp8_e5m2_decode,
        ml_dtypes.float8_e5m2,
        np.uint8,
        1 << 8,
        57344.0,
    ),
    "bf16": (
        formats.bf16_encode,
        formats.bf16_decode,
        ml_dtypes.bfloat16,
        np.uint16,
        1 << 16,
        3.3895313892515355e38,
    ),
}
SIGN = {"fp16": 0x8000, "e4m3": 0x80, "e5m2": 0x80, "bf16": 0x8000}
RNG_SEED = 20260301


def f32(values: Any) -> npt.NDArray[np.float32]:
    return np.asarray(values, dtype=np.float32)


def bits_to_f32(bits: Any) -> npt.NDArray[np.float32]:
    return np.asarray(bits, dtype=np.uint32).view(np.float32)


def expected_codes(fmt: str, x: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
    """ml_dtypes / numpy codes, with the reference's NaN code for E5M2 (see the module docstring)."""
    _, _, dtype, code_type, _, _ = FORMATS[fmt]
    with np.errstate(all="ignore"):
        codes = x.astype(dtype).view(code_type).copy()
    if fmt == "e5m2":
        nan = np.isnan(x)
        codes[nan] = 0x7F | (np.signbit(x[nan]).astype(np.uint8) << 7)
    return codes


def assert_codes_match(fmt: str, x: npt.NDArray[np.float32], got: npt.NDArray[Any]) -> None:
    """Exact codes for every number; for NaN inputs a NaN code with the input's sign."""
    _, decode, _, code_type, _, _ = FORMATS[fmt]
    want = expected_codes(fmt, x)
    assert got.dtype == code_type
    assert got.shape == x.shape
    nan = np.isnan(x)
    bad = np.nonzero((got != want) & ~nan)[0]
    assert bad.size == 0, [
        (float(x[i]), hex(int(x[i : i + 1].view(np.uint32)[0])), hex(int(got[i])), hex(int(want[i])))
        for i in bad[:10]
    ]
    if nan.any():
        back = decode(got[nan])
        assert np.isnan(back).all()
        assert (np.signbit(back) == np.signbit(x[nan])).all()
        if fmt == "fp16":
            # A quiet NaN that keeps the top ten payload bits of the float32.
            payload = (x[nan].view(np.uint32) >> 13) & 0x3FF
            assert ((got[nan] & 0x7E00) == 0x7E00).all()
            assert ((got[nan] & 0x1FF) == (payload & 0x1FF)).all()
        elif fmt == "bf16":
            assert ((got[nan] & 0x7FFF) == 0x7FC0).all()  # the canonical quiet NaN, as ml_dtypes
        else:
            assert ((got[nan] & 0x7F) == 0x7F).all()


def all_codes(fmt: str) -> npt.NDArray[Any]:
    _, _, _, code_type, n, _ = FORMATS[fmt]
    return np.arange(n, dtype=np.uint32).astype(code_type)


def code_values(fmt: str) -> npt.NDArray[np.float32]:
    """The float32 value of every code (ml_dtypes / numpy), NaN codes included."""
    _, _, dtype, _, _, _ = FORMATS[fmt]
    return all_codes(fmt).view(dtype).astype(np.float32)


def finite_sorted_magnitudes(fmt: str) -> npt.NDArray[np.float32]:
    v = code_values(fmt)
    v = v[np.isfinite(v) & ~np.signbit(v)]
    return np.unique(v)


def next_up(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return np.nextafter(x, f32(np.inf))


def next_down(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return np.nextafter(x, f32(-np.inf))


def with_negatives(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return np.concatenate([x, -x])


def boundary_sample(fmt: str) -> npt.NDArray[np.float32]:
    """Every code's value, every midpoint between consecutive codes, their float32 neighbours both
    ways, the max, the overflow thresholds and the specials, with both signs."""
    mags = finite_sorted_magnitudes(fmt)
    mids = ((mags[:-1].astype(np.float64) + mags[1:]) / 2).astype(np.float32)
    assert (mids.astype(np.float64) == (mags[:-1].astype(np.float64) + mags[1:]) / 2).all(), "midpoint exact"
    top = mags[-1]
    step = top - mags[-2]
    overflow_mid = f32([float(top) + float(step) / 2])  # halfway to the next (non-existent) step
    twice = min(2 * float(top), 3.4e38)  # bf16's top doubled is past float32's
    edges = f32([top, twice, 480.0, 479.9, 464.0, 61440.0, 61439.0, 65520.0, 65519.0, 65536.0, 1e9, 3.4e38])
    specials = f32([np.inf, np.nan, 0.0, 2.0**-149, 2.0**-126, 1e-30])
    pts = np.concatenate([mags, mids, overflow_mid, edges, specials])
    pts = np.concatenate([pts, next_up(pts), next_down(pts)])
    return with_negatives(pts)


def random_sample(n: int, seed: int) -> npt.NDArray[np.float32]:
    """n random float32 bit patterns (all exponents, NaNs included) and n patterns with exponents
    near the small formats' ranges (2^-30 .. 2^20), where most decisions are made."""
    rng = np.random.default_rng(seed)
    anything = rng.integers(0, 1 << 32, size=n, dtype=np.uint64).astype(np.uint32)
    exps = rng.integers(127 - 30, 127 + 21, size=n, dtype=np.uint32)
    near = (rng.integers(0, 2, size=n, dtype=np.uint32) << 31) | (exps << 23)
    near |= rng.integers(0, 1 << 23, size=n, dtype=np.uint32)
    return np.concatenate([bits_to_f32(anything), bits_to_f32(near)])


# ---------------------------------------------------------------------------------------------
# Decode
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_decode_every_code(fmt: str) -> None:
    _, decode, _, _, n, _ = FORMATS[fmt]
    codes = all_codes(fmt)
    got = decode(codes)
    want = code_values(fmt)
    assert got.dtype == np.float32
    assert got.shape == (n,)
    nan = np.isnan(want)
    assert (np.isnan(got) == nan).all()
    assert (got[~nan].view(np.uint32) == want[~nan].view(np.uint32)).all()  # bit-exact, ±0 included
    assert (np.signbit(got[nan]) == np.signbit(want[nan])).all()
    # NaN codes: E4M3 only 0x7F/0xFF; E5M2 and FP16 every all-ones exponent with a mantissa.
    expected_nans = {"e4m3": 2, "e5m2": 6, "fp16": 2046, "bf16": 254}[fmt]
    assert int(nan.sum()) == expected_nans


def test_decode_nan_bits() -> None:
    """Our documented NaN bit patterns (the reference's for E4M3)."""
    e4m3 = formats.fp8_e4m3_decode(np.array([0x7F, 0xFF], dtype=np.uint8)).view(np.uint32)
    assert e4m3.tolist() == [0x7FF00000, 0xFFF00000]
    e5m2 = formats.fp8_e5m2_decode(np.array([0x7D, 0x7E, 0x7F, 0xFF], dtype=np.uint8)).view(np.uint32)
    assert e5m2.tolist() == [0x7FE00000, 0x7FC00000, 0x7FE00000, 0xFFE00000]


def test_decode_refuses_wrong_shapes_and_dtypes() -> None:
    assert formats.fp8_e4m3_decode(np.array([0x38, 0xC0], dtype=np.uint8)).tolist() == [1.0, -2.0]
    assert formats.fp16_decode(np.array([0x3C00], dtype=np.uint16)).tolist() == [1.0]
    with pytest.raises(InvalidInputError):
        formats.fp16_decode(np.zeros(2, dtype=np.float32))
    with pytest.raises(InvalidInputError):
        formats.fp8_e5m2_decode(np.zeros((2, 2), dtype=np.uint8))
    assert formats.fp8_e5m2_decode(np.zeros(0, dtype=np.uint8)).shape == (0,)


# ---------------------------------------------------------------------------------------------
# Encode
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_encode_every_code_value_round_trips(fmt: str) -> None:
    encode, _, _, _, _, _ = FORMATS[fmt]
    codes = all_codes(fmt)
    values = code_values(fmt)
    got = encode(values)
    finite_or_inf = ~np.isnan(values)
    assert (got[finite_or_inf] == codes[finite_or_inf]).all()
    assert_codes_match(fmt, values, got)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_encode_boundaries(fmt: str) -> None:
    encode, _, _, _, _, _ = FORMATS[fmt]
    x = boundary_sample(fmt)
    assert_codes_match(fmt, x, encode(x))


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_encode_random_bit_patterns(fmt: str) -> None:
    """About a million float32 patterns per format (half of them near the format's range)."""
    encode, _, _, _, _, _ = FORMATS[fmt]
    x = random_sample(500_000, RNG_SEED + len(fmt))
    assert_codes_match(fmt, x, encode(x))


def test_reference_overflow_rules() -> None:
    """The thresholds the facts file states, directly."""
    e4m3 = formats.fp8_e4m3_encode(
        f32([448, 464, np.nextafter(f32(464), f32(1e9)), 479.9, 480, np.inf, -np.inf])
    )
    assert e4m3.tolist() == [0x7E, 0x7E, 0x7F, 0x7F, 0x7F, 0x7F, 0xFF]
    e5m2 = formats.fp8_e5m2_encode(f32([57344, 61439, 61440, 65536, np.inf, -1e9]))
    assert e5m2.tolist() == [0x7B, 0x7B, 0x7C, 0x7C, 0x7C, 0xFC]
    fp16 = formats.fp16_encode(f32([65504, 65519, 65520, np.inf, -1e9]))
    assert fp16.tolist() == [0x7BFF, 0x7BFF, 0x7C00, 0x7C00, 0xFC00]
    # ml_dtypes agrees on every one of those (E4M3 > 464 → NaN like the reference).
    for fmt, xs in [("e4m3", [464.00003, 479.9, 1e6]), ("e5m2", [61440.0, 1e9]), ("fp16", [65520.0])]:
        x = f32(xs)
        assert_codes_match(fmt, x, FORMATS[fmt][0](x))


def test_encode_refuses_2d_input() -> None:
    with pytest.raises(InvalidInputError):
        formats.fp16_encode(np.zeros((2, 2), dtype=np.float32))
    assert formats.fp8_e5m2_encode(np.zeros(0, dtype=np.float32)).shape == (0,)


# ---------------------------------------------------------------------------------------------
# Saturation (ours; ml_dtypes has none)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_saturate(fmt: str) -> None:
    encode, _, _, _, _, top = FORMATS[fmt]
    x = np.concatenate([boundary_sample(fmt), random_sample(100_000, RNG_SEED + 7)])
    got = encode(x, saturate=True)
    clamped = np.clip(x, -top, top)
    if fmt != "e4m3":  # E5M2 and FP16 hold ±Inf, so saturation keeps it
        clamped = np.where(np.isinf(x), x, clamped)
    assert_codes_match(fmt, clamped, got)
    # Nothing but NaN (and the types' own ±Inf) decodes to a non-finite value.
    back = FORMATS[fmt][1](got)
    assert np.isfinite(back[np.isfinite(x)]).all()
    # Within range, saturation changes nothing.
    inside = np.abs(x) <= top
    assert (got[inside] == encode(x[inside])).all()


# ---------------------------------------------------------------------------------------------
# Retrieval-time quantization
# ---------------------------------------------------------------------------------------------

FLOAT_TYPES = {1: "e5m2", 2: "e4m3", 3: "fp16", 4: "fp32", 5: "fp64"}
# Our extensions: 31 BF16, 32 BF16Vector, 33 Q8Vector, ranked by significand bits.
EXTENSION_KINDS = {31: "bf16", 32: "bf16", 33: "q8"}
RANK = {"fp64": 6, "fp32": 5, "fp16": 4, "bf16": 3, "q8": 2, "e4m3": 1, "e5m2": 1}
N_TYPES = 34


def float_kind(t: int) -> str | None:
    if t <= 0 or t >= N_TYPES:
        return None
    if t > 30:
        return EXTENSION_KINDS[t]
    return FLOAT_TYPES.get(t if t < 16 else t - 15)


def is_vector(t: int) -> bool:
    return t in (32, 33) if t > 30 else t >= 16


def allowed(src: int, dst: int) -> bool:
    ks, kd = float_kind(src), float_kind(dst)
    if ks is None or kd is None or is_vector(src) != is_vector(dst) or kd == "fp64":
        return False
    return RANK[kd] < RANK[ks]


def source_sample(kind: str) -> tuple[bytes, npt.NDArray[np.float32]]:
    """Source feature bytes covering the kind's interesting values, and their float32 value."""
    rng = np.random.default_rng(RNG_SEED)
    if kind == "fp64":
        x = np.concatenate(
            [
                rng.standard_normal(2000) * 10.0 ** rng.integers(-12, 12, 2000),
                [0.0, -0.0, np.inf, -np.inf, np.nan, 1e300, -1e300, 1e-300, 5e-324, 65519.99, 464.0, 61440.0],
            ]
        )
        with np.errstate(all="ignore"):
            return x.astype("<f8").tobytes(), x.astype(np.float32)
    if kind == "fp32":
        x = np.concatenate([random_sample(5000, RNG_SEED), boundary_sample("e4m3"), boundary_sample("fp16")])
        return x.astype("<f4").tobytes(), x
    if kind in ("fp16", "bf16"):
        codes = np.arange(1 << 16, dtype=np.uint32).astype("<u2")
        dtype = np.float16 if kind == "fp16" else ml_dtypes.bfloat16
        return codes.tobytes(), codes.view(dtype).astype(np.float32)
    codes = np.arange(256, dtype=np.uint8)
    return codes.tobytes(), codes.view(FORMATS[kind][2]).astype(np.float32)


def target_codes(kind: str, x: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
    return x if kind == "fp32" else expected_codes(kind, x)


def all_type_pairs() -> list[tuple[int, int]]:
    return [(a, b) for a in range(N_TYPES + 1) for b in range(N_TYPES + 1)]


def elementwise(src: int, dst: int) -> bool:
    """Pairs converted value by value (Q8 goes a whole vector at a time: tests/test_embeddings.py)."""
    return allowed(src, dst) and "q8" not in (float_kind(src), float_kind(dst))


@pytest.mark.parametrize(("src", "dst"), [p for p in all_type_pairs() if elementwise(*p)])
def test_quantize_allowed_pairs(src: int, dst: int) -> None:
    ks, kd = float_kind(src), float_kind(dst)
    assert ks is not None
    assert kd is not None
    data, x = source_sample(ks)
    out = formats.quantize(data, src, dst)
    if kd == "fp32":
        got = np.frombuffer(out, dtype="<f4")
        nan = np.isnan(x)
        assert (np.isnan(got) == nan).all()
        assert (got[~nan].view(np.uint32) == x[~nan].view(np.uint32)).all()
        return
    code_type = FORMATS[kd][3]
    got = np.frombuffer(out, dtype=np.dtype(code_type).newbyteorder("<"))
    # The reference converts with the plain (non-saturating) encoders.
    assert_codes_match(kd, x, got.astype(code_type))
    assert (got == FORMATS[kd][0](x)).all()


def test_quantize_pair_count() -> None:
    """The reference's FP64→{FP32, FP16, E4M3, E5M2}, FP32→{FP16, E4M3, E5M2}, FP16→{E4M3, E5M2}: 9, and
    9 vector; ours add {FP64, FP32, FP16}→BF16 and BF16→{E4M3, E5M2}: 5, and 5 vector, and
    {FP64, FP32, FP16, BF16}→Q8 and Q8→{E4M3, E5M2} for vectors: 6."""
    assert sum(allowed(*p) for p in all_type_pairs()) == 18 + 10 + 6


@pytest.mark.parametrize(("src", "dst"), [p for p in all_type_pairs() if not allowed(*p)])
def test_quantize_refused_pairs(src: int, dst: int) -> None:
    with pytest.raises(InvalidInputError, match=r"cannot quantize|unknown data type"):
        formats.quantize(b"\x00" * 8, src, dst)


def test_quantize_partial_element() -> None:
    with pytest.raises(CorruptBlockError, match="whole number"):
        formats.quantize(b"\x00" * 7, 5, 4)
    assert formats.quantize(b"", 5, 4) == b""
