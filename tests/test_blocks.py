"""Property tests of PSDB blocks and CSDB values through the Python package.

* encode → decode round trips for every data type (random feature counts, vector and string lengths,
  unicode, full integer ranges, floats with NaN / ±0 / subnormals / Inf where the type holds them,
  compression on and off, TTLs), with the stored payload checked against an independent encoding
  (numpy, ml_dtypes) and every feature checked against the serving response encoding (§8.5);
* random, truncated and bit-flipped bytes either decode or raise our errors, never anything else;
* errors are ``ValueError`` subclasses; expiry, version and CSDB behaviour.
"""

from __future__ import annotations

import contextlib
import math
import struct
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from online_feature_store import CorruptBlockError, InvalidInputError, NotFoundError, OfsError, formats

NOW = 1_772_000_000
MAX_TTL = 513 * 86_400
SETTINGS = settings(
    deadline=None, derandomize=True, max_examples=40, suppress_health_check=[HealthCheck.too_slow]
)


def more(n: int) -> settings:
    return settings(SETTINGS, max_examples=n)


# Element kind of types 1..15; vector type t has the kind of t - 15.
KINDS = [None, "e5m2", "e4m3", "fp16", "fp32", "fp64", "i8", "i16", "i32", "i64"]
KINDS += ["u8", "u16", "u32", "u64", "str", "bool"]
INT_RANGES = {
    "i8": (-(2**7), 2**7 - 1, "<i1"),
    "i16": (-(2**15), 2**15 - 1, "<i2"),
    "i32": (-(2**31), 2**31 - 1, "<i4"),
    "i64": (-(2**63), 2**63 - 1, "<i8"),
    "u8": (0, 2**8 - 1, "<u1"),
    "u16": (0, 2**16 - 1, "<u2"),
    "u32": (0, 2**32 - 1, "<u4"),
    "u64": (0, 2**64 - 1, "<u8"),
}
# Input containers a caller may use for each integer kind (all hold the full range of the kind).
INT_INPUTS = {
    "i8": ["<i1", "<i2", "<i8", "<f8"],
    "i16": ["<i2", "<i4", "<i8", "<f8"],
    "i32": ["<i4", "<i8", "<f8"],
    "i64": ["<i8"],
    "u8": ["<u1", "<u2", "<i8", "<f8"],
    "u16": ["<u2", "<u4", "<i8"],
    "u32": ["<u4", "<u8", "<i8"],
    "u64": ["<u8"],
}
FP8 = {"e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2}
ALL_TYPES = list(range(1, 31))


def kind_of(t: int) -> str:
    k = KINDS[t if t < 16 else t - 15]
    assert k is not None
    return k


def code_values(dtype: Any, n_codes: int, code_type: Any) -> list[float]:
    """Every finite value of a small float format (its codes decoded by numpy / ml_dtypes)."""
    vals = np.arange(n_codes, dtype=code_type).view(dtype).astype(np.float32)
    return [float(v) for v in vals if np.isfinite(v)]


F16_CODES = code_values(np.float16, 65536, np.uint16)
E4M3_CODES = code_values(ml_dtypes.float8_e4m3fn, 256, np.uint8)
E5M2_CODES = code_values(ml_dtypes.float8_e5m2, 256, np.uint8)


def float_values(kind: str) -> st.SearchStrategy[float]:
    """Values the write path accepts for a float kind: in range (no overflow to NaN/Inf), plus
    NaN, the infinities the type can hold, signed zeros, subnormals and every exact code value."""
    special = st.sampled_from([0.0, -0.0, math.nan, -math.nan])
    if kind == "fp64":
        return st.floats(allow_nan=True, allow_infinity=True)
    if kind == "fp32":
        return st.floats(width=32) | special
    if kind == "fp16":
        return (
            st.floats(-65519.0, 65519.0, width=32) | st.sampled_from(F16_CODES) | special | st.just(math.inf)
        )
    if kind == "e4m3":
        return st.floats(-464.0, 464.0, width=32) | st.sampled_from(E4M3_CODES) | special
    return st.floats(-61439.0, 61439.0, width=32) | st.sampled_from(E5M2_CODES) | special | st.just(-math.inf)


def fit_utf8(s: str, booked: int) -> str:
    while len(s.encode("utf-8")) > booked:
        s = s[:-1]
    return s


class Case:
    """A random block: meta inputs, values, and the input container."""

    def __init__(
        self, dtype: int, n: int, vector_lengths: list[int] | None, string_lengths: list[int] | None
    ):
        self.dtype, self.kind, self.n = dtype, kind_of(dtype), n
        self.vector_lengths, self.string_lengths = vector_lengths, string_lengths
        self.per_feature = vector_lengths or [1] * n
        self.values: list[Any] = []
        self.input: Any = None
        self.version = 1

    def meta(self, version: int | None = None) -> formats.BlockMeta:
        return formats.BlockMeta(
            self.dtype,
            self.n,
            version=self.version if version is None else version,
            string_lengths=self.string_lengths,
            vector_lengths=self.vector_lengths,
        )

    def feature_slices(self) -> list[slice]:
        out, start = [], 0
        for count in self.per_feature:
            out.append(slice(start, start + count))
            start += count
        return out


@st.composite
def cases(draw: st.DrawFn, dtype: int | None = None) -> Case:
    t = draw(st.sampled_from(ALL_TYPES)) if dtype is None else dtype
    kind = kind_of(t)
    n = draw(st.integers(1, 12))
    vls = draw(st.lists(st.integers(1, 6), min_size=n, max_size=n)) if t >= 16 else None
    sls = draw(st.lists(st.integers(0, 24), min_size=n, max_size=n)) if kind == "str" else None
    case = Case(t, n, vls, sls)
    case.version = draw(st.integers(0, 65535))
    if kind == "str":
        assert sls is not None
        booked = [sls[f] for f in range(n) for _ in range(case.per_feature[f])]
        case.values = [fit_utf8(draw(st.text(max_size=b)), b) for b in booked]
        case.input = case.values
    elif kind == "bool":
        case.values = draw(
            st.lists(st.booleans(), min_size=sum(case.per_feature), max_size=sum(case.per_feature))
        )
        container = draw(st.sampled_from(["bool", "<u1", "<i8"]))
        case.input = np.array(case.values, dtype=bool if container == "bool" else container)
    elif kind in INT_RANGES:
        lo, hi, _ = INT_RANGES[kind]
        size = sum(case.per_feature)
        case.values = draw(st.lists(st.integers(lo, hi), min_size=size, max_size=size))
        container = draw(st.sampled_from(INT_INPUTS[kind]))
        case.input = np.array(case.values, dtype=container)
    else:
        size = sum(case.per_feature)
        case.values = draw(st.lists(float_values(kind), min_size=size, max_size=size))
        # Proto-style float64 input, or float32 when the values fit it exactly.
        f32_ok = kind != "fp64" and draw(st.booleans())
        case.input = np.array(case.values, dtype="<f4" if f32_ok else "<f8")
    return case


def expected_values(case: Case) -> list[Any]:
    """What a reader gets back: float32 for fp8/fp16/fp32 (rounded by numpy / ml_dtypes)."""
    kind = case.kind
    if kind in ("str", "bool") or kind in INT_RANGES:
        return list(case.values)
    with np.errstate(all="ignore"):
        x = np.array(case.values, dtype=np.float64)
        if kind == "fp64":
            return list(x)
        x32 = x.astype(np.float32)
        if kind == "fp32":
            return list(x32)
        if kind == "fp16":
            return list(x32.astype(np.float16).astype(np.float32))
        return list(x32.astype(FP8[kind]).astype(np.float32))


def expected_payload(case: Case) -> bytes | None:
    """The uncompressed payload (§2.2) built without our code; None when NaNs are involved (their
    codes differ between ml_dtypes and the reference, see test_float.py)."""
    kind = case.kind
    if kind == "str":
        raw = [s.encode("utf-8") for s in case.values]
        return b"".join(struct.pack("<H", len(r)) for r in raw) + b"".join(raw)
    if kind == "bool":
        return np.packbits(np.array(case.values, dtype=bool)).tobytes()  # MSB-first, zero padded
    if kind in INT_RANGES:
        return np.array(case.values, dtype=INT_RANGES[kind][2]).tobytes()
    x = np.array(case.values, dtype=np.float64)
    if np.isnan(x).any():
        return None
    with np.errstate(all="ignore"):
        if kind == "fp64":
            return x.astype("<f8").tobytes()
        x32 = x.astype(np.float32)
        if kind == "fp32":
            return x32.astype("<f4").tobytes()
        if kind == "fp16":
            return x32.astype("<f2").tobytes()
        return x32.astype(FP8[kind]).tobytes()


def element_width(kind: str) -> int:
    return {"e4m3": 1, "e5m2": 1, "fp16": 2, "fp32": 4, "fp64": 8}.get(kind) or int(INT_RANGES[kind][2][2:])


def expected_feature(case: Case, pos: int, plain_payload: bytes) -> bytes:
    """§8.5: numbers as stored LE elements; bools one 0/1 byte each (vectors unpacked); a string's raw
    bytes; a string vector as [u16 LE lengths][bytes]."""
    sl = case.feature_slices()[pos]
    if case.kind == "bool":
        return bytes(int(b) for b in case.values[sl])
    if case.kind == "str":
        raw = [s.encode("utf-8") for s in case.values[sl]]
        if case.dtype < 16:
            return raw[0]
        return b"".join(struct.pack("<H", len(r)) for r in raw) + b"".join(raw)
    w = element_width(case.kind)
    return plain_payload[sl.start * w : sl.stop * w]


def flat(values: Any) -> list[Any]:
    if isinstance(values, np.ndarray):
        return list(values.ravel())
    out: list[Any] = []
    for v in values:
        out.extend(flat(v) if isinstance(v, (list, np.ndarray)) else [v])
    return out


def same(got: Any, want: Any, kind: str) -> bool:
    if kind in ("str", "bool") or kind in INT_RANGES:
        return type(got) is not float and got == want
    g, w = float(got), float(want)
    if math.isnan(w):
        return math.isnan(g) and math.copysign(1, g) == math.copysign(1, w)
    if kind == "fp64":
        return struct.pack("<d", g) == struct.pack("<d", w)
    return struct.pack("<f", g) == struct.pack("<f", w)


def check_round_trip(case: Case, compress: bool, ttl: int) -> None:
    meta = case.meta()
    raw = formats.encode_block(meta, case.input, ttl=ttl, now=NOW, compress=compress)
    plain = formats.encode_block(meta, case.input, ttl=ttl, now=NOW, compress=False)
    hdr = formats.read_header(raw)
    n_values = sum(case.per_feature)
    want_last = (8 - n_values % 8) % 8 if case.kind == "bool" else 0
    assert (hdr.version, hdr.data_type, hdr.layout, hdr.bool_last_index) == (
        case.version,
        case.dtype,
        1,
        want_last,
    )
    assert hdr.expiry_at == (NOW + ttl if ttl else None)
    assert raw[:7] == plain[:7]
    assert formats.read_header(plain).compression == 0
    if hdr.compression == 1:
        assert compress
        assert len(raw) < len(plain)  # zstd is kept only when it pays
    else:
        assert raw == plain
    payload = expected_payload(case)
    if payload is not None:
        assert plain[9:] == payload

    decoded = formats.decode_block(meta, raw, now=NOW)
    assert decoded.status == "present"
    got = flat(decoded.values)
    want = expected_values(case)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want, strict=False)):
        assert same(g, w, case.kind), f"value {i}: got {g!r}, want {w!r}"
    if case.vector_lengths and len(set(case.vector_lengths)) == 1 and case.kind != "str":
        assert decoded.values.shape == (case.n, case.vector_lengths[0])
    assert len(decoded) == case.n
    for pos in range(case.n):
        feature = expected_feature(case, pos, plain[9:])
        assert decoded.feature(pos) == feature
        assert formats.feature_bytes(meta, raw, pos, now=NOW) == feature
    with pytest.raises(InvalidInputError):
        decoded.feature(case.n)
    with pytest.raises(InvalidInputError):
        formats.feature_bytes(meta, raw, case.n, now=NOW)

    if ttl:
        assert formats.decode_block(meta, raw, now=NOW + ttl).status == "present"
        late = formats.decode_block(meta, raw, now=NOW + ttl + 1)
        assert late.status == "expired"
        assert late.values is None
        assert late.header is not None
        assert late.header.expiry_at == NOW + ttl
        assert late.feature(0) is None
        assert formats.feature_bytes(meta, raw, 0, now=NOW + ttl + 1) is None
    else:
        assert formats.decode_block(meta, raw, now=2**40).status == "present"


ttls = st.sampled_from([0, 1, MAX_TTL]) | st.integers(1, MAX_TTL)


@pytest.mark.parametrize("dtype", ALL_TYPES)
@SETTINGS
@given(data=st.data(), compress=st.booleans(), ttl=ttls)
def test_round_trip_every_type(dtype: int, data: st.DataObject, compress: bool, ttl: int) -> None:
    check_round_trip(data.draw(cases(dtype)), compress, ttl)


@pytest.mark.parametrize("dtype", [5, 20, 4, 19, 6, 8, 14, 29, 15, 30])
def test_compressible_blocks_are_compressed(dtype: int) -> None:
    kind = kind_of(dtype)
    vls = [64] * 8 if dtype >= 16 else None
    n = 8 if dtype >= 16 else 512
    sls = [40] * n if kind == "str" else None
    case = Case(dtype, n, vls, sls)
    size = sum(case.per_feature)
    if kind == "str":
        case.values = ["feature store " * 2] * size
        case.input = case.values
    elif kind == "bool":
        case.values = [True, False, False, True] * (size // 4)
        case.input = np.array(case.values)
    else:
        case.values = [i % 7 for i in range(size)]
        case.input = np.array(case.values, dtype=np.float64 if kind.startswith("fp") else np.int64)
    raw = formats.encode_block(case.meta(), case.input, now=NOW, compress=True)
    assert formats.read_header(raw).compression == 1
    check_round_trip(case, True, 3600)


# ---------------------------------------------------------------------------------------------
# Bytes that are not (valid) blocks
# ---------------------------------------------------------------------------------------------


@st.composite
def metas(draw: st.DrawFn) -> formats.BlockMeta:
    case = draw(cases())
    return case.meta()


def decode_or_reject(meta: formats.BlockMeta, raw: bytes, now: int = NOW) -> formats.DecodedBlock | None:
    """Decodes, or returns None when the bytes are rejected with one of our errors."""
    try:
        decoded = formats.decode_block(meta, raw, now=now)
    except (CorruptBlockError, InvalidInputError):
        return None
    assert decoded.status in ("present", "missing", "expired")
    if decoded.status == "present":
        flat(decoded.values)
        for pos in range(meta.n_features):
            assert decoded.feature(pos) == formats.feature_bytes(meta, raw, pos, now=now)
    return decoded


def header_for(meta: formats.BlockMeta, compression: int) -> bytes:
    t = meta.data_type
    return (
        struct.pack("<H", meta.version) + bytes(5) + bytes([0x10 | compression << 1 | t >> 4, (t & 15) << 4])
    )


@more(300)
@given(meta=metas(), raw=st.binary(max_size=300), compression=st.sampled_from([None, 0, 1]))
def test_random_bytes_decode_or_raise(meta: formats.BlockMeta, raw: bytes, compression: int | None) -> None:
    if compression is not None:
        raw = header_for(meta, compression) + raw  # a valid header: the payload parser gets the bytes
    decode_or_reject(meta, raw)
    with contextlib.suppress(CorruptBlockError):
        formats.read_header(raw)


@more(150)
@given(case=cases(), compress=st.booleans(), ttl=ttls, data=st.data())
def test_truncated_blocks_raise(case: Case, compress: bool, ttl: int, data: st.DataObject) -> None:
    meta = case.meta()
    raw = formats.encode_block(meta, case.input, ttl=ttl, now=NOW, compress=compress)
    cuts = data.draw(st.lists(st.integers(1, len(raw) - 1), max_size=8)) if len(raw) > 1 else []
    for cut in [*cuts, 9, len(raw) - 1]:
        if 0 < cut < len(raw):
            with pytest.raises(CorruptBlockError):
                formats.decode_block(meta, raw[:cut], now=NOW)
    assert formats.decode_block(meta, b"", now=NOW).status == "missing"


@more(200)
@given(case=cases(), compress=st.booleans(), data=st.data())
def test_bit_flipped_blocks_decode_or_raise(case: Case, compress: bool, data: st.DataObject) -> None:
    meta = case.meta()
    raw = bytearray(formats.encode_block(meta, case.input, ttl=3600, now=NOW, compress=compress))
    flips = data.draw(st.lists(st.integers(0, len(raw) * 8 - 1), min_size=1, max_size=4))
    for bit in flips:
        raw[bit // 8] ^= 1 << (bit % 8)
    decode_or_reject(meta, bytes(raw))


@pytest.mark.parametrize("compress", [False, True])
def test_every_single_bit_flip_of_a_block(compress: bool) -> None:
    """Exhaustive over one block of each flavour: every flip of every bit decodes or raises."""
    for dtype, values, kwargs in [
        (8, np.arange(64, dtype=np.int64) % 5, {}),
        (14, ["alpha", "βeta", "", "delta"] * 4, {"string_lengths": [8] * 16}),
        (30, np.array([True, False, False] * 7), {"vector_lengths": [7, 7, 7]}),
    ]:
        n = len(kwargs.get("vector_lengths", values))
        meta = formats.BlockMeta(dtype, n, version=3, **kwargs)
        raw = formats.encode_block(meta, values, ttl=60, now=NOW, compress=compress)
        for bit in range(len(raw) * 8):
            flipped = bytearray(raw)
            flipped[bit // 8] ^= 1 << (bit % 8)
            decode_or_reject(meta, bytes(flipped))


# ---------------------------------------------------------------------------------------------
# Errors, versions, expiry
# ---------------------------------------------------------------------------------------------


def test_error_classes() -> None:
    assert issubclass(InvalidInputError, ValueError)
    assert issubclass(CorruptBlockError, InvalidInputError)
    assert issubclass(CorruptBlockError, ValueError)
    for cls in (InvalidInputError, CorruptBlockError, NotFoundError):
        assert issubclass(cls, OfsError)
    # A missing name is a lookup failure, not a bad value.
    assert issubclass(NotFoundError, LookupError)


MISUSE = [
    lambda: formats.BlockMeta(0, 1),
    lambda: formats.BlockMeta(34, 1),  # past the last extension type (33)
    lambda: formats.BlockMeta(4, 0),
    lambda: formats.BlockMeta(19, 2, vector_lengths=[1]),
    lambda: formats.BlockMeta(19, 1, vector_lengths=[0]),
    lambda: formats.BlockMeta(14, 1),
    lambda: formats.BlockMeta(14, 1, string_lengths=[65536]),
    lambda: formats.BlockMeta(4, 1, string_lengths=[3]),
    lambda: formats.encode_block(formats.BlockMeta(4, 1), ["x"], now=NOW),
    lambda: formats.encode_block(formats.BlockMeta(14, 1, string_lengths=[4]), [1.0], now=NOW),
    lambda: formats.encode_block(formats.BlockMeta(14, 1, string_lengths=[4]), "abc", now=NOW),
    lambda: formats.encode_block(formats.BlockMeta(14, 1, string_lengths=[4]), ["\ud800"], now=NOW),
    lambda: formats.encode_block(formats.BlockMeta(4, 1), [object()], now=NOW),
    lambda: formats.encode_block(formats.BlockMeta(4, 1), [1.0], ttl=MAX_TTL + 1, now=NOW),
    lambda: formats.encode_block(formats.BlockMeta(4, 1), [1.0], ttl=10, expiry_at=NOW + 10, now=NOW),
    lambda: formats.encode_block(formats.BlockMeta(6, 1), [np.nan], now=NOW),
    lambda: formats.encode_block(formats.BlockMeta(15, 1), [0.5], now=NOW),
    lambda: formats.decode_block(formats.BlockMeta(4, 1), b"\x01" * 9, now=NOW),
    lambda: formats.read_header(b"\x01\x00"),
    lambda: formats.expiry_decode(b"\x00" * 4),
    lambda: formats.expiry_decode(b"\xff" * 5),
    lambda: formats.expiry_encode(NOW - 1, now=NOW),
    lambda: formats.csdb_entries(b""),
    lambda: formats.csdb_lookup(b"\x07", [1]),
    lambda: formats.csdb_encode([(1, b"x" * 65536)], layout=1),
    lambda: formats.csdb_encode([(1, b"x")], layout=0),
    lambda: formats.quantize(b"\x00\x00\x80?", 3, 4),
    lambda: formats.quantize(b"\x00\x00\x80?", 4, 99),
    lambda: formats.parse_feature_label("emb@DataTypeFP7"),
    lambda: formats.parse_feature_label("@DataTypeFP16"),
    lambda: formats.fp8_e4m3_encode(np.zeros((2, 2), dtype=np.float32)),
    lambda: formats.fp16_decode(np.zeros(3, dtype=np.float32)),
]


@pytest.mark.parametrize("call", MISUSE)
def test_errors_are_value_errors(call: Any) -> None:
    with pytest.raises(OfsError) as info:
        call()
    assert isinstance(info.value, ValueError)
    assert str(info.value)


@pytest.mark.parametrize(
    "call",
    [
        lambda: formats.csdb_encode([(70_000, b"x")]),
        lambda: formats.BlockMeta(4, 1, version=70_000),
        lambda: formats.BlockMeta(-1, 1),
        lambda: formats.encode_block(formats.BlockMeta(4, 1), [1.0], ttl=-1, now=NOW),
        lambda: formats.quantize(b"", 300, 4),
    ],
)
def test_out_of_range_arguments_are_value_errors(call: Any) -> None:
    with pytest.raises(InvalidInputError):
        call()


def days_to_jan1(year: int) -> int:
    def f(y: int) -> int:
        return y * 365 + y // 4 - y // 100 + y // 400

    return f(year - 1) - f(1969)


def test_expiry_year_beyond_14_bits_is_refused() -> None:
    # 2026 + 16384 wraps to 2026: the bytes of 2026-03-01T12:00:00Z, a block that reads back expired.
    now = (days_to_jan1(2026 + 16384) + 59) * 86_400 + 43_200 - 3600
    with pytest.raises(InvalidInputError):
        formats.expiry_encode(now + 3600, now=now)


@SETTINGS
@given(case=cases(), delta=st.integers(1, 65535))
def test_wrong_version_meta_raises(case: Case, delta: int) -> None:
    raw = formats.encode_block(case.meta(), case.input, now=NOW, compress=False)
    with pytest.raises(CorruptBlockError, match="schema version"):
        formats.decode_block(case.meta((case.version + delta) % 65536), raw, now=NOW)


@SETTINGS
@given(case=cases(), other=st.sampled_from(ALL_TYPES))
def test_wrong_type_meta_raises(case: Case, other: int) -> None:
    raw = formats.encode_block(case.meta(), case.input, now=NOW, compress=False)
    if other == case.dtype:
        return
    kind = kind_of(other)
    meta = formats.BlockMeta(
        other,
        case.n,
        version=case.version,
        string_lengths=[4] * case.n if kind == "str" else None,
        vector_lengths=[1] * case.n if other >= 16 else None,
    )
    with pytest.raises(CorruptBlockError, match="block holds"):
        formats.decode_block(meta, raw, now=NOW)


@SETTINGS
@given(now=st.integers(0, 2**33), ttl=st.integers(1, MAX_TTL))
def test_expiry_round_trip(now: int, ttl: int) -> None:
    raw = formats.expiry_encode(now + ttl, now=now)
    assert len(raw) == 5
    assert formats.expiry_decode(raw) == now + ttl
    assert formats.expiry_encode(0, now=now) == bytes(5)
    assert formats.expiry_decode(bytes(5)) is None


@more(300)
@given(raw=st.binary(min_size=5, max_size=5))
def test_expiry_decode_random(raw: bytes) -> None:
    try:
        t = formats.expiry_decode(raw)
    except CorruptBlockError:
        return
    if t is not None:
        again = formats.expiry_encode(t, now=t - 1)
        assert formats.expiry_decode(again) == t
        # One encoding per instant, except that day 365 of a common year is also read (as Jan 1).
        packed = int.from_bytes(raw[:4], "little") << 8 | raw[4]
        year, day = packed >> 26, packed >> 17 & 0x1FF
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        assert again == raw or (day == 365 and not leap)


# ---------------------------------------------------------------------------------------------
# CSDB
# ---------------------------------------------------------------------------------------------

csdb_items = st.lists(st.tuples(st.integers(0, 65535), st.binary(max_size=80)), max_size=12)


@more(200)
@given(
    entries=csdb_items,
    layout=st.sampled_from([None, 1, 2]),
    wanted=st.lists(st.integers(0, 65535), max_size=6),
)
def test_csdb_round_trip(entries: list[tuple[int, bytes]], layout: int | None, wanted: list[int]) -> None:
    value = formats.csdb_encode(entries, layout=layout)
    assert value[0] == (layout or 1)
    assert len(value) == 1 + sum((4 if value[0] == 1 else 6) + len(b) for _, b in entries)
    assert formats.csdb_entries(value) == entries
    ids = wanted + [fg for fg, _ in entries[:3]]
    first = {}
    for fg, b in entries:
        first.setdefault(fg, b)
    assert formats.csdb_lookup(value, ids) == [first.get(fg) for fg in ids]


@SETTINGS
@given(entries=csdb_items.filter(bool), layout=st.sampled_from([1, 2]))
def test_truncated_csdb_raises_or_is_a_prefix(entries: list[tuple[int, bytes]], layout: int) -> None:
    value = formats.csdb_encode(entries, layout=layout)
    prefix = 4 if layout == 1 else 6
    boundaries = {1}
    end = 1
    for _, b in entries:
        end += prefix + len(b)
        boundaries.add(end)
    for cut in range(len(value)):
        if cut == 0:
            with pytest.raises(CorruptBlockError):
                formats.csdb_entries(value[:cut])
        elif cut in boundaries:
            parsed = formats.csdb_entries(value[:cut])
            assert parsed == entries[: len(parsed)]
        else:
            with pytest.raises(CorruptBlockError):
                formats.csdb_entries(value[:cut])


@more(300)
@given(raw=st.binary(max_size=120), wanted=st.lists(st.integers(0, 65535), max_size=4))
def test_random_csdb_parses_or_raises(raw: bytes, wanted: list[int]) -> None:
    with contextlib.suppress(CorruptBlockError):
        assert len(formats.csdb_lookup(raw, wanted)) == len(wanted)
    try:
        entries = formats.csdb_entries(raw)
    except CorruptBlockError:
        return
    assert formats.csdb_encode(entries, layout=raw[0]) == raw


def test_csdb_holds_real_blocks() -> None:
    meta = formats.BlockMeta(19, 2, version=4, vector_lengths=[3, 2])
    block = formats.encode_block(meta, [1.0, 2.0, 3.0, 4.0, 5.0], ttl=60, now=NOW)
    value = formats.csdb_encode([(9, block), (2, b"")])
    found, negative, missing = formats.csdb_lookup(value, [9, 2, 5])
    assert found == block
    assert negative == b""
    assert missing is None
    assert [v.tolist() for v in formats.decode_block(meta, found, now=NOW).values] == [
        [1.0, 2.0, 3.0],
        [4.0, 5.0],
    ]
