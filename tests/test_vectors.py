"""Golden byte vectors (``tests/vectors/*.json``), checked through the Python package.

The expected bytes are NOT produced by our encoder. This file holds a small, independent reference
encoder written from the format rules in ``bharatmlstack-onfs-facts.md`` (§1.2 type numbers, §2 PSDB,
§2.3 expiry, §3.1 CSDB, §6 low-precision floats and quantization, §8.5 response bytes). It shares
nothing with the Rust core: minifloats are rounded with exact rational arithmetic (nearest code,
ties to the even code) instead of c10's bit tricks, the calendar comes from :mod:`datetime`, and
binary16 decoding from :mod:`struct`. The Appendix A examples of the facts file are hard-coded below
and the reference encoder must reproduce them byte for byte.

Our extension types (``docs/formats.md``, ``docs/embeddings.md``) come from other implementations:
bfloat16 from ``ml_dtypes`` (``x.astype(ml_dtypes.bfloat16)``), Q8 (int8 with a per-vector float32
scale) from a few lines of numpy written from the rule (``s = max|x| / 127``, ``q = rint(x / s)``).

Three-way check:

* ``test_vectors_match_reference_encoder``: every stored case equals what the reference encoder makes
  of its inputs (so the JSON cannot drift or be hand-edited into agreement with a bug);
* ``test_*`` below: every case through ``online_feature_store`` (encode, decode, per-feature bytes);
* ``rust/tests/vectors.rs``: every case through ``ofs_core``.

Regenerate the JSON after changing a case: ``python tests/test_vectors.py --write``.
The case schema is documented in ``tests/vectors/README.md``.
"""

from __future__ import annotations

import json
import math
import re
import struct
import sys
from bisect import bisect_left
from datetime import datetime, timezone
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from online_feature_store import CorruptBlockError, InvalidInputError, formats

VECTOR_DIR = Path(__file__).resolve().parent / "vectors"

# ---------------------------------------------------------------------------------------------
# Independent reference encoder (facts file rules only)
# ---------------------------------------------------------------------------------------------

# §1.2: the numeric value is the position in this list.
TYPE_NAMES = [
    "DataTypeUnknown",
    "DataTypeFP8E5M2",
    "DataTypeFP8E4M3",
    "DataTypeFP16",
    "DataTypeFP32",
    "DataTypeFP64",
    "DataTypeInt8",
    "DataTypeInt16",
    "DataTypeInt32",
    "DataTypeInt64",
    "DataTypeUint8",
    "DataTypeUint16",
    "DataTypeUint32",
    "DataTypeUint64",
    "DataTypeString",
    "DataTypeBool",
    "DataTypeFP8E5M2Vector",
    "DataTypeFP8E4M3Vector",
    "DataTypeFP16Vector",
    "DataTypeFP32Vector",
    "DataTypeFP64Vector",
    "DataTypeInt8Vector",
    "DataTypeInt16Vector",
    "DataTypeInt32Vector",
    "DataTypeInt64Vector",
    "DataTypeUint8Vector",
    "DataTypeUint16Vector",
    "DataTypeUint32Vector",
    "DataTypeUint64Vector",
    "DataTypeStringVector",
    "DataTypeBoolVector",
    # This project's extensions: the header's 5-bit field reads 31, byte 8's low nibble the offset.
    "DataTypeBF16",
    "DataTypeBF16Vector",
    "DataTypeQ8Vector",
]
FIRST_EXTENSION = 31
EXTENSION_ELEMENTS = {31: "bf16", 32: "bf16", 33: "q8"}
EXTENSION_VECTORS = {32, 33}
# Element kind of scalar types 0..15; vector type t (16..30) has the element of t - 15.
ELEMENTS = [
    None,
    "e5m2",
    "e4m3",
    "fp16",
    "fp32",
    "fp64",
    "i8",
    "i16",
    "i32",
    "i64",
    "u8",
    "u16",
    "u32",
    "u64",
    "str",
    "bool",
]
INT_FORMATS = {
    "i8": ("<b", -(2**7), 2**7 - 1),
    "i16": ("<h", -(2**15), 2**15 - 1),
    "i32": ("<i", -(2**31), 2**31 - 1),
    "i64": ("<q", -(2**63), 2**63 - 1),
    "u8": ("<B", 0, 2**8 - 1),
    "u16": ("<H", 0, 2**16 - 1),
    "u32": ("<I", 0, 2**32 - 1),
    "u64": ("<Q", 0, 2**64 - 1),
}
FLOAT_ELEMENTS = ("e5m2", "e4m3", "fp16", "fp32", "fp64")
WIDTH = {"e5m2": 1, "e4m3": 1, "fp16": 2, "fp32": 4, "fp64": 8, "i8": 1, "i16": 2, "i32": 4, "i64": 8}
WIDTH.update({"u8": 1, "u16": 2, "u32": 4, "u64": 8})
F32_MAX = struct.unpack("<f", bytes.fromhex("ffff7f7f"))[0]
MAX_TTL = 513 * 86400


class RefError(Exception):
    """The reference encoder refuses the input (the vector expects an error)."""


def type_number(name: str) -> int:
    return TYPE_NAMES.index(name)


def element_of(num: int) -> str:
    if num >= FIRST_EXTENSION:
        return EXTENSION_ELEMENTS[num]
    kind = ELEMENTS[num if num < 16 else num - 15]
    assert kind is not None
    return kind


def is_vector(num: int) -> bool:
    return num in EXTENSION_VECTORS if num >= FIRST_EXTENSION else num >= 16


def from_json(v: Any) -> Any:
    """JSON value → Python value; non-finite floats are strings."""
    if isinstance(v, str) and v in ("nan", "-nan", "inf", "-inf"):
        return {"nan": math.nan, "-nan": -math.nan, "inf": math.inf, "-inf": -math.inf}[v]
    return v


def to_json(v: Any) -> Any:
    if isinstance(v, float):
        if math.isnan(v):
            return "-nan" if math.copysign(1.0, v) < 0 else "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
    return v


def f32_bits(x: float) -> int:
    return int(struct.unpack("<I", struct.pack("<f", x))[0])


def to_f32(x: float, *, strict: bool = False, saturate: bool = False) -> float:
    """Rounds a double to float32 (nearest-even). A finite value that rounds to Inf is refused when
    `strict` (our write policy), clamped to ±max when `saturate`, and Inf otherwise (IEEE cast)."""
    try:
        return float(struct.unpack("<f", struct.pack("<f", x))[0])
    except OverflowError:
        if saturate:
            return math.copysign(F32_MAX, x)
        if strict:
            raise RefError("out of range") from None
        return math.copysign(math.inf, x)


class MiniFloat:
    """A binary float format read plainly: code c = (exponent, mantissa), bias, subnormals at exp 0.

    `table` holds the value of every finite magnitude code plus the one just past the largest
    (the step that rounding "to overflow" lands on)."""

    def __init__(self, mbits: int, bias: int, max_code: int, sign_bit: int) -> None:
        self.mbits = mbits
        self.bias = bias
        self.max_code = max_code
        self.sign_bit = sign_bit
        self.table = [self.value(c) for c in range(max_code + 2)]

    def value(self, code: int) -> Fraction:
        exp, man = code >> self.mbits, code & ((1 << self.mbits) - 1)
        if exp == 0:
            return Fraction(man, 1 << self.mbits) * Fraction(2) ** (1 - self.bias)
        return (1 + Fraction(man, 1 << self.mbits)) * Fraction(2) ** (exp - self.bias)

    def round_magnitude(self, a: Fraction) -> int:
        """Nearest code to |x|, ties to the even code; max_code + 1 means overflow."""
        i = bisect_left(self.table, a)
        if i == len(self.table):
            return self.max_code + 1
        if self.table[i] == a or i == 0:
            return i
        below, above = a - self.table[i - 1], self.table[i] - a
        if below < above:
            return i - 1
        if above < below:
            return i
        return i - 1 if (i - 1) % 2 == 0 else i


E4M3 = MiniFloat(3, 7, 0x7E, 0x80)
E5M2 = MiniFloat(2, 15, 0x7B, 0x80)
F16 = MiniFloat(10, 15, 0x7BFF, 0x8000)


def encode_minifloat(fmt: str, x32: float, *, strict: bool = False, saturate: bool = False) -> int:
    """float32 value → code of `fmt` ("e4m3", "e5m2", "fp16").

    Reference rules (§6.2, §6.3): E4M3 has no Inf, so overflow and ±Inf give the NaN code 0x7F with the
    input's sign; E5M2/FP16 overflow to ±Inf; NaN keeps its sign (E5M2 0x7F/0xFF; FP16 a quiet NaN
    with the top payload bits). Our write policy on top: `strict` refuses overflow (a value the
    format would lose), `saturate` clamps it to ±max (E4M3 also clamps ±Inf, E5M2/FP16 keep Inf)."""
    m = {"e4m3": E4M3, "e5m2": E5M2, "fp16": F16}[fmt]
    bits = f32_bits(x32)
    sign = m.sign_bit if bits >> 31 else 0
    if math.isnan(x32):
        if fmt == "fp16":
            return sign | 0x7E00 | ((bits & 0x7FFFFF) >> 13)
        return sign | 0x7F
    overflow_code = m.max_code + 1
    code = overflow_code if math.isinf(x32) else m.round_magnitude(Fraction(abs(x32)))
    if code == overflow_code:
        if math.isinf(x32) and fmt != "e4m3":
            return sign | code  # a representable Inf is not an overflow
        if saturate:
            return sign | m.max_code
        if strict:
            raise RefError("out of range")
    return sign | code


def decode_minifloat(fmt: str, code: int) -> float:
    if fmt == "fp16":
        return float(struct.unpack("<e", code.to_bytes(2, "little"))[0])
    m = E4M3 if fmt == "e4m3" else E5M2
    neg = bool(code & 0x80)
    mag = code & 0x7F
    if fmt == "e4m3" and mag == 0x7F:
        v = math.nan
    elif fmt == "e5m2" and mag >> 2 == 31:
        v = math.inf if mag & 3 == 0 else math.nan
    else:
        v = float(m.value(mag))
    return -v if neg else v


def code_bytes(fmt: str, code: int) -> bytes:
    return code.to_bytes(2 if fmt == "fp16" else 1, "little")


def encode_float_element(kind: str, x: float, *, saturate: bool) -> tuple[bytes, float]:
    """One float value of a block (§2.2): proto doubles are cast to float32 first, then narrowed.
    Returns the stored bytes and the value a reader decodes."""
    if kind == "fp64":
        return struct.pack("<d", x), x
    x32 = to_f32(x, strict=True, saturate=saturate)
    if kind == "fp32":
        return struct.pack("<f", x32), x32
    code = encode_minifloat(kind, x32, strict=True, saturate=saturate)
    return code_bytes(kind, code), decode_minifloat(kind, code)


def encode_int_element(kind: str, v: Any) -> int:
    _, lo, hi = INT_FORMATS[kind]
    if isinstance(v, float):
        if not v.is_integer():
            raise RefError("not an integer")
        v = int(v)
    if not lo <= v <= hi:
        raise RefError("out of range")
    return int(v)


def expiry_bytes(expiry_at: int, now: int) -> bytes:
    """§2.3: 0 = never; else year<<26 | day<<17 | second, as LE u32 of packed>>8, then the low byte."""
    if expiry_at == 0:
        return bytes(5)
    if expiry_at <= now:
        raise RefError("not in the future")
    if expiry_at - now > MAX_TTL:
        raise RefError("beyond 513 days")
    return pack_expiry(expiry_at)


def pack_expiry(expiry_at: int) -> bytes:
    year = datetime.fromtimestamp(expiry_at, tz=timezone.utc).year
    rest = expiry_at - int(datetime(year, 1, 1, tzinfo=timezone.utc).timestamp())
    days, secs = divmod(rest, 86400)
    packed = (year << 26) | ((days & 0x1FF) << 17) | (secs & 0x1FFFF)
    return (packed >> 8).to_bytes(4, "little") + bytes([packed & 0xFF])


def header(version: int, expiry: bytes, compression: int, num: int, last: int) -> bytes:
    """§2.1: version LE, expiry, b7 = layout 1 | compression | type bit 4, b8 = type bits 3..0 | last.
    Extensions: the type field holds 31 and the low nibble of b8 the number's offset from 31."""
    if num >= FIRST_EXTENSION:
        num, last = FIRST_EXTENSION, num - FIRST_EXTENSION
    b7 = (1 << 4) | (compression << 1) | ((num >> 4) & 1)
    b8 = ((num & 0x0F) << 4) | (last & 0x0F)
    return version.to_bytes(2, "little") + expiry + bytes([b7, b8])


def layout_of(case: dict[str, Any]) -> tuple[int, str, bool, int, list[int]]:
    """(type number, element kind, is vector, number of features, values per feature)."""
    num = type_number(case["data_type"])
    kind = element_of(num)
    vector = is_vector(num)
    values = case["values"]
    if vector:
        per_feature = list(case["vector_lengths"])
    elif kind == "str":
        per_feature = [1] * len(case["string_lengths"])
    else:
        per_feature = [1] * case.get("n_features", len(values))
    return num, kind, vector, len(per_feature), per_feature


def encode_block_ref(case: dict[str, Any]) -> dict[str, Any]:
    """Expected outputs of a block case: hex, per-feature response bytes, decoded values.
    Raises RefError when the input must be refused."""
    num, kind, vector, n, per_feature = layout_of(case)
    values = [from_json(v) for v in case["values"]]
    saturate = case.get("saturate", False)
    if len(values) != sum(per_feature):
        raise RefError("count")
    expiry = expiry_bytes(case["expiry_at"], case["now"])
    elems: list[bytes] = []  # stored bytes of each value (strings: the raw bytes)
    decoded: list[Any] = []
    last = 0
    if kind == "str":
        lengths = [case["string_lengths"][f] for f in range(n) for _ in range(per_feature[f])]
        raw = [v.encode("utf-8") for v in values]
        for r, booked in zip(raw, lengths, strict=False):
            if len(r) > booked or len(r) > 65535:
                raise RefError("too long")
        payload = b"".join(len(r).to_bytes(2, "little") for r in raw) + b"".join(raw)
        elems, decoded = raw, list(values)
    elif kind == "bool":
        bits = []
        for v in values:
            if v not in (0, 1) or isinstance(v, float):
                raise RefError("out of range")
            bits.append(int(v))
        payload = bytes(
            sum(b << (7 - j) for j, b in enumerate(bits[i : i + 8])) for i in range(0, len(bits), 8)
        )
        last = (8 - len(bits) % 8) % 8
        elems, decoded = [bytes([b]) for b in bits], [bool(b) for b in bits]
    elif kind == "bf16":
        for v in values:
            code = bf16_code(to_f32(float(v), strict=True, saturate=saturate), strict=True, saturate=saturate)
            elems.append(code.to_bytes(2, "little"))
            decoded.append(bf16_value(code))
        payload = b"".join(elems)
    elif kind == "q8":
        # One cell per vector (scale, then codes); `elems` holds the cells, one per feature.
        start = 0
        for count in per_feature:
            xs = [to_f32(float(v), strict=True, saturate=saturate) for v in values[start : start + count]]
            cell, back = q8_cell(xs, saturate=saturate)
            elems.append(cell)
            decoded += back
            start += count
        payload = b"".join(elems)
        per_feature = [1] * n
    elif kind in FLOAT_ELEMENTS:
        for v in values:
            b, d = encode_float_element(kind, float(v), saturate=saturate)
            elems.append(b)
            decoded.append(d)
        payload = b"".join(elems)
    else:
        fmt = INT_FORMATS[kind][0]
        for v in values:
            i = encode_int_element(kind, v)
            elems.append(struct.pack(fmt, i))
            decoded.append(i)
        payload = b"".join(elems)
    if case.get("compress", False):
        # Opportunistic zstd (§2.4) can only pay off on longer payloads; vectors with compress=true
        # are kept tiny so the stored form is the plain one, whatever the zstd build.
        assert len(payload) <= 8, "compress=true vectors must stay uncompressible"
    block = header(case["version"], expiry, 0, num, last) + payload
    features = []
    start = 0
    for f in range(n):
        part = elems[start : start + per_feature[f]]
        start += per_feature[f]
        if kind == "str" and vector:
            features.append(b"".join(len(p).to_bytes(2, "little") for p in part) + b"".join(part))
        else:
            features.append(b"".join(part))
    return {"hex": block.hex(), "features_hex": [f.hex() for f in features], "decoded": decoded}


def bf16_code(x32: float, *, strict: bool = False, saturate: bool = False) -> int:
    """float32 → bfloat16 bits through ml_dtypes (round to nearest even, NaN → canonical quiet NaN with
    the sign). Our write policy on top: `strict` refuses a finite value that rounds to Inf, `saturate`
    clamps it to ±0x7F7F."""
    import ml_dtypes

    code = int(np.array([x32], dtype=np.float32).astype(ml_dtypes.bfloat16).view(np.uint16)[0])
    if code & 0x7FFF == 0x7F80 and math.isfinite(x32):
        if saturate:
            return (code & 0x8000) | 0x7F7F
        if strict:
            raise RefError("out of range")
    return code


def bf16_value(code: int) -> float:
    """bfloat16 bits → the float32 they stand for (16 zero bits appended)."""
    return float(struct.unpack("<f", struct.pack("<I", code << 16))[0])


def q8_cell(xs: list[float], *, saturate: bool) -> tuple[bytes, list[float]]:
    """One vector (float32 values) → its Q8 cell and the values a reader decodes, in numpy from the
    rule: s = max|x| / 127 over the finite values (float32), q = rint(clip(x / s, -127, 127)); s = 0 →
    zero codes. NaN / ±Inf are refused unless saturating: then ±Inf → ±127 and NaN → -128 (read as NaN)."""
    x = np.array(xs, dtype=np.float32)
    finite = np.isfinite(x)
    if not finite.all() and not saturate:
        raise RefError("not finite")
    amax = np.float32(np.max(np.abs(x[finite]), initial=np.float32(0)))
    scale = np.float32(amax / np.float32(127))
    with np.errstate(divide="ignore", invalid="ignore"):
        if scale == 0:
            q = np.where(np.isinf(x), np.sign(x) * 127, 0)
        else:
            q = np.rint(np.clip(x / scale, np.float32(-127), np.float32(127)))
    q = np.where(np.isnan(x), -128, q).astype(np.int8)
    back = np.where(q == -128, np.float32(np.nan), q.astype(np.float32) * scale).astype(np.float32)
    return struct.pack("<f", float(scale)) + q.tobytes(), [float(v) for v in back]


def q8_decode_cell(cell: bytes) -> list[float]:
    (scale,) = struct.unpack("<f", cell[:4])
    q = np.frombuffer(cell[4:], dtype=np.int8)
    back = np.where(q == -128, np.float32(np.nan), q.astype(np.float32) * np.float32(scale))
    return [float(v) for v in back.astype(np.float32)]


def csdb_ref(case: dict[str, Any]) -> dict[str, Any]:
    """§3.1: [layout] { [fg u16 LE] [len u16 LE (layout 1) / u32 LE (our layout 2)] [block] }*."""
    layout = case["layout"]
    if layout not in (1, 2):
        raise RefError("layout")
    width = 2 if layout == 1 else 4
    parts = [f"{layout:02x}"]  # kept in run notation, so 64 KiB blocks stay short in the JSON
    for e in case["entries"]:
        size = len(expand_hex(e["hex"]))
        if size >= 1 << (8 * width):
            raise RefError("too long")
        parts.append((e["fg_id"].to_bytes(2, "little") + size.to_bytes(width, "little")).hex())
        parts.append(e["hex"])
    result: dict[str, Any] = {"hex": " ".join(p for p in parts if p)}
    if "lookup" in case:
        found = []
        for fg in case["lookup"]["fg_ids"]:
            hit = next((e["hex"] for e in case["entries"] if e["fg_id"] == fg), None)
            found.append(hit)
        result["lookup"] = {"fg_ids": case["lookup"]["fg_ids"], "found": found}
    return result


def expand_hex(text: str) -> bytes:
    """Hex with optional whitespace-separated runs: "0102 5a*300" = 01 02 then 300 bytes 5a."""
    out = bytearray()
    for token in text.split():
        hex_part, _, count = token.partition("*")
        out += bytes.fromhex(hex_part) * (int(count) if count else 1)
    return bytes(out)


def csdb_parse_ref(raw: bytes) -> list[dict[str, Any]]:
    if not raw or raw[0] not in (1, 2):
        raise RefError("layout")
    width = 2 if raw[0] == 1 else 4
    pos, out = 1, []
    while pos < len(raw):
        if pos + 2 + width > len(raw):
            raise RefError("truncated prefix")
        fg = int.from_bytes(raw[pos : pos + 2], "little")
        n = int.from_bytes(raw[pos + 2 : pos + 2 + width], "little")
        pos += 2 + width
        if pos + n > len(raw):
            raise RefError("overrun")
        out.append({"fg_id": fg, "hex": raw[pos : pos + n].hex()})
        pos += n
    return out


# Our extensions placed by significand bits: FP16 (10) > BF16 (7) > Q8 > FP8.
FLOAT_RANK = {"fp64": 6, "fp32": 5, "fp16": 4, "bf16": 3, "q8": 2, "e4m3": 1, "e5m2": 1}


def quantize_allowed(src: str, dst: str) -> bool:
    """§6.4: float → narrower float (targets FP32/FP16/FP8, and our BF16/Q8), same shape."""
    a, b = type_number(src), type_number(dst)
    if a == 0 or b == 0 or is_vector(a) != is_vector(b):
        return False
    ka, kb = element_of(a), element_of(b)
    if ka not in FLOAT_RANK or kb not in FLOAT_RANK or kb == "fp64":
        return False
    return FLOAT_RANK[kb] < FLOAT_RANK[ka]


def source_bytes(kind: str, x: float) -> bytes:
    """A stored source element (values are exact in the source type)."""
    if kind == "fp64":
        return struct.pack("<d", x)
    if kind == "fp32":
        return struct.pack("<f", x)
    if kind == "bf16":
        return bf16_code(to_f32(x)).to_bytes(2, "little")
    return code_bytes(kind, encode_minifloat(kind, to_f32(x)))


def source_value(kind: str, raw: bytes) -> float:
    if kind == "fp64":
        return float(struct.unpack("<d", raw)[0])
    if kind == "fp32":
        return float(struct.unpack("<f", raw)[0])
    if kind == "bf16":
        return bf16_value(int.from_bytes(raw, "little"))
    return decode_minifloat(kind, int.from_bytes(raw, "little"))


def quantize_ref(case: dict[str, Any]) -> dict[str, Any]:
    """§6.4: every element goes to float32 (a plain IEEE cast, Inf on overflow), then the target's
    reference encoder (no saturation, no refusal)."""
    if not quantize_allowed(case["from"], case["to"]):
        raise RefError("not allowed")
    ks, kt = element_of(type_number(case["from"])), element_of(type_number(case["to"]))
    src = bytes.fromhex(case["src_hex"]) if "src_hex" in case else None
    if src is None:
        xs = [float(from_json(v)) for v in case["values"]]
        if ks == "q8":
            src = q8_cell([to_f32(x) for x in xs], saturate=True)[0]
        else:
            src = b"".join(source_bytes(ks, x) for x in xs)
    if ks == "q8":
        if len(src) < 4:
            raise RefError("no scale")
        values = q8_decode_cell(src)
    else:
        width = {"fp64": 8, "fp32": 4, "fp16": 2, "bf16": 2}.get(ks, 1)
        if len(src) % width:
            raise RefError("partial element")
        values = [to_f32(source_value(ks, src[i : i + width])) for i in range(0, len(src), width)]
    out = bytearray()
    if kt == "q8":  # one cell for the whole vector; a read saturates instead of failing
        out += q8_cell(values, saturate=True)[0]
    for x32 in values if kt != "q8" else []:
        if kt == "fp32":
            out += struct.pack("<f", x32)
        elif kt == "bf16":
            out += bf16_code(x32).to_bytes(2, "little")
        else:
            out += code_bytes(kt, encode_minifloat(kt, x32))
    return {"src_hex": src.hex(), "hex": out.hex()}


def codec_ref(case: dict[str, Any]) -> dict[str, Any]:
    """Raw float32 → code conversion (§6.2/6.3, binary16), reference policy, optional saturation.
    Ours: bf16 (codes as LE u16), q8 (`values` is one vector; the codes are its cell)."""
    fmt = case["codec"]
    sat = case.get("saturate", False)
    xs = [to_f32(float(from_json(v))) for v in case["values"]]
    if fmt == "bf16":
        bf = [bf16_code(x, saturate=sat) for x in xs]
        return {
            "hex": b"".join(c.to_bytes(2, "little") for c in bf).hex(),
            "decoded": [to_json(bf16_value(c)) for c in bf],
        }
    if fmt == "q8":
        cell, back = q8_cell(xs, saturate=sat)
        return {"hex": cell.hex(), "decoded": [to_json(v) for v in back]}
    codes = [
        encode_minifloat(fmt, to_f32(float(from_json(v))), saturate=case.get("saturate", False))
        for v in case["values"]
    ]
    return {
        "hex": b"".join(code_bytes(fmt, c) for c in codes).hex(),
        "decoded": [to_json(decode_minifloat(fmt, c)) for c in codes],
    }


def expected_of(case: dict[str, Any]) -> dict[str, Any]:
    """What the reference encoder says a case's expected fields are ({"error": True} = refused)."""
    kind = case.get("kind", "block")
    try:
        if kind == "block":
            r = encode_block_ref(case)
            out = {"hex": r["hex"], "features_hex": r["features_hex"]}
            decoded = [to_json(d) for d in r["decoded"]]
            if json.dumps(decoded) != json.dumps(case["values"]):
                out["decoded"] = decoded
            if case["expiry_at"]:
                out["expiry_hex"] = expiry_bytes(case["expiry_at"], case["now"]).hex()
            return out
        if kind == "csdb":
            return csdb_ref(case)
        if kind == "csdb_decode":
            return {"entries": csdb_parse_ref(bytes.fromhex(case["hex"]))}
        if kind == "quantize":
            return quantize_ref(case)
        if kind == "codec":
            return codec_ref(case)
        if kind == "decode":
            status, values = decode_status_ref(case)
            return {"status": status} if values is None else {"status": status, "values": values}
        if kind == "expiry_decode":
            raw = bytes.fromhex(case["expiry_hex"])
            return {"expiry_at": decode_expiry_ref(raw)}
    except RefError:
        return {"error": True}
    raise AssertionError(f"no reference for kind {kind}")


def decode_status_ref(case: dict[str, Any]) -> tuple[str, list[Any] | None]:
    """Validates stored bytes against a meta (§2.1, §2.2, §2.5) and decodes the values of a live
    block; refuses anything malformed."""
    raw = bytes.fromhex(case["hex"])
    if not raw:
        return "missing", None
    if len(raw) < 9:
        raise RefError("short")
    num = type_number(case["data_type"])
    b7, b8 = raw[7], raw[8]
    stored_type = ((b7 & 1) << 4) | (b8 >> 4)
    if stored_type == FIRST_EXTENSION:
        stored_type += b8 & 0x0F
    if b7 >> 4 != 1 or (b7 >> 1) & 7 not in (0, 1) or stored_type >= len(TYPE_NAMES):
        raise RefError("header")
    expiry = decode_expiry_ref(raw[2:7])
    if stored_type != num or int.from_bytes(raw[:2], "little") != case["version"]:
        raise RefError("meta mismatch")
    if expiry is not None and case["now"] > expiry:
        return "expired", None
    payload = raw[9:]
    if (b7 >> 1) & 7 == 1:
        payload = zstd_decompress_ref(payload)
    kind = element_of(num)
    n_values = sum(case["vector_lengths"]) if "vector_lengths" in case else case["n_features"]
    values: list[Any] = []
    if kind == "str":
        table = payload[: 2 * n_values]
        if len(table) < 2 * n_values:
            raise RefError("short length table")
        lengths = [int.from_bytes(table[i : i + 2], "little") for i in range(0, len(table), 2)]
        if sum(lengths) != len(payload) - 2 * n_values:
            raise RefError("lengths")
        start = 2 * n_values
        for length in lengths:
            try:
                values.append(payload[start : start + length].decode("utf-8"))
            except UnicodeDecodeError:
                raise RefError("utf-8") from None
            start += length
        return "present", values
    if kind == "q8":
        lengths = case["vector_lengths"]
        if len(payload) != n_values + 4 * len(lengths):
            raise RefError("payload size")
        start = 0
        for count in lengths:
            values += q8_decode_cell(payload[start : start + 4 + count])
            start += 4 + count
        return "present", [to_json(v) for v in values]
    size = (n_values + 7) // 8 if kind == "bool" else n_values * {**WIDTH, "bf16": 2}[kind]
    if len(payload) != size:
        raise RefError("payload size")
    if kind == "bool":
        values = [bool(payload[i // 8] >> (7 - i % 8) & 1) for i in range(n_values)]
    elif kind in ("e4m3", "e5m2"):
        values = [decode_minifloat(kind, b) for b in payload]
    elif kind == "fp16":
        values = [
            decode_minifloat(kind, int.from_bytes(payload[i : i + 2], "little")) for i in range(0, size, 2)
        ]
    elif kind == "bf16":
        values = [bf16_value(int.from_bytes(payload[i : i + 2], "little")) for i in range(0, size, 2)]
    else:
        fmt = {"fp32": "<f", "fp64": "<d"}.get(kind) or INT_FORMATS[kind][0]
        values = [v for (v,) in struct.iter_unpack(fmt, payload)]
    return "present", [to_json(v) for v in values]


def zstd_decompress_ref(frame: bytes) -> bytes:
    """A zstd frame (RFC 8878) made only of raw and RLE blocks; compressed blocks are refused (the
    vectors hand-build their frames, so no entropy decoder is needed)."""
    if frame[:4] != bytes.fromhex("28b52ffd") or len(frame) < 6:
        raise RefError("not a zstd frame")
    fhd = frame[4]
    single_segment, checksum, dict_flag, fcs_flag = fhd >> 5 & 1, fhd >> 2 & 1, fhd & 3, fhd >> 6
    if dict_flag:
        raise RefError("dictionary")
    pos = 5 + (0 if single_segment else 1)
    fcs_len = [1 if single_segment else 0, 2, 4, 8][fcs_flag]
    fcs = int.from_bytes(frame[pos : pos + fcs_len], "little") + (256 if fcs_len == 2 else 0)
    pos += fcs_len
    out = bytearray()
    while True:
        if pos + 3 > len(frame):
            raise RefError("truncated block header")
        bh = int.from_bytes(frame[pos : pos + 3], "little")
        last, btype, bsize = bh & 1, bh >> 1 & 3, bh >> 3
        pos += 3
        if btype == 0:
            if pos + bsize > len(frame):
                raise RefError("truncated raw block")
            out += frame[pos : pos + bsize]
            pos += bsize
        elif btype == 1:
            if pos >= len(frame):
                raise RefError("truncated RLE block")
            out += frame[pos : pos + 1] * bsize
            pos += 1
        else:
            raise RefError("compressed or reserved block")
        if last:
            break
    if checksum:
        if frame[pos : pos + 4] != zstd_checksum(bytes(out)):
            raise RefError("checksum")
        pos += 4
    if pos != len(frame) or (fcs_len and fcs != len(out)):
        raise RefError("frame size")
    return bytes(out)


def zstd_checksum(content: bytes) -> bytes:
    """The frame checksum: low 32 bits of XXH64(content, seed 0), LE. Short inputs only (< 32 bytes)."""
    assert len(content) < 32
    p1, p2, p3, p4, p5 = (
        0x9E3779B185EBCA87,
        0xC2B2AE3D27D4EB4F,
        0x165667B19E3779F9,
        0x85EBCA77C2B2AE63,
        0x27D4EB2F165667C5,
    )
    mask = (1 << 64) - 1

    def rotl(x: int, r: int) -> int:
        return ((x << r) | (x >> (64 - r))) & mask

    h = (p5 + len(content)) & mask
    i = 0
    while i + 8 <= len(content):
        k = rotl(int.from_bytes(content[i : i + 8], "little") * p2 & mask, 31) * p1 & mask
        h = (rotl(h ^ k, 27) * p1 + p4) & mask
        i += 8
    if i + 4 <= len(content):
        h = (rotl(h ^ (int.from_bytes(content[i : i + 4], "little") * p1 & mask), 23) * p2 + p3) & mask
        i += 4
    for b in content[i:]:
        h = rotl(h ^ (b * p5 & mask), 11) * p1 & mask
    h ^= h >> 33
    h = h * p2 & mask
    h ^= h >> 29
    h = h * p3 & mask
    h ^= h >> 32
    return (h & 0xFFFFFFFF).to_bytes(4, "little")


def decode_expiry_ref(raw: bytes) -> int | None:
    if raw == bytes(5):
        return None
    packed = (int.from_bytes(raw[:4], "little") << 8) | raw[4]
    year, day, sec = packed >> 26, (packed >> 17) & 0x1FF, packed & 0x1FFFF
    if year < 1970 or day > 365 or sec >= 86400:
        raise RefError("corrupt expiry")
    return int(datetime(year, 1, 1, tzinfo=timezone.utc).timestamp()) + day * 86400 + sec


# ---------------------------------------------------------------------------------------------
# Case inputs. Expected fields are filled in by the reference encoder above.
# ---------------------------------------------------------------------------------------------

NOW = 1_772_000_000  # 2026-02-25T06:13:20Z
DAY = 86_400
T = 2.0  # powers of two, exact in every format: T**-9 etc.

# Appendix A of the facts file, verbatim (spaces and "|" only separate fields).
APPENDIX = {
    "appendix: FP32 v2 [1.0, 2.5, -3.0]": (
        "02 00 | 00 00 00 00 00 | 10 | 40 | 00 00 80 3f  00 00 20 40  00 00 40 c0"
    ),
    "appendix: Bool v1 10 bits": "01 00 | 00 00 00 00 00 | 10 | f6 | ff 40",
    "appendix: String v3 [ab, '', xyz]": (
        "03 00 | 00 00 00 00 00 | 10 | e0 | 02 00 00 00 03 00 | 61 62 78 79 7a"
    ),
    "appendix: expiry 2026-03-01T12:00:00Z": "a8 76 a8 1f c0",
    "appendix: CSDB FG 3 (FP32 block) + negative FG 7": "01 | 03 00 15 00 <21 bytes> | 07 00 00 00",
}
APPENDIX_HEADER_BITS = {"appendix: FP32Vector header b7=0x11 b8=0x30": (0x11, 0x30)}
APPENDIX_FP8 = {
    # name: (codec, input, code)
    "appendix: E4M3 1.0": ("e4m3", 1.0, 0x38),
    "appendix: E4M3 448": ("e4m3", 448.0, 0x7E),
    "appendix: E4M3 464 (tie to even)": ("e4m3", 464.0, 0x7E),
    "appendix: E4M3 479.9 (NaN, no saturation)": ("e4m3", 479.9, 0x7F),
    "appendix: E4M3 480": ("e4m3", 480.0, 0x7F),
    "appendix: E4M3 1e6 (>=480)": ("e4m3", 1e6, 0x7F),
    "appendix: E4M3 Inf": ("e4m3", "inf", 0x7F),
    "appendix: E4M3 NaN": ("e4m3", "nan", 0x7F),
    "appendix: E4M3 2^-9": ("e4m3", T**-9, 0x01),
    "appendix: E4M3 1e-4": ("e4m3", 1e-4, 0x00),
    "appendix: E4M3 -2.0 (§6.2)": ("e4m3", -2.0, 0xC0),
    "appendix: E5M2 1.0": ("e5m2", 1.0, 0x3C),
    "appendix: E5M2 57344": ("e5m2", 57344.0, 0x7B),
    "appendix: E5M2 61439": ("e5m2", 61439.0, 0x7B),
    "appendix: E5M2 61440": ("e5m2", 61440.0, 0x7C),
    "appendix: E5M2 65536": ("e5m2", 65536.0, 0x7C),
    "appendix: E5M2 Inf": ("e5m2", "inf", 0x7C),
    "appendix: E5M2 NaN": ("e5m2", "nan", 0x7F),
    "appendix: E5M2 2^-16": ("e5m2", T**-16, 0x01),
    "appendix: E5M2 -NaN (§6.3 sign kept)": ("e5m2", "-nan", 0xFF),
}
FP32_EXAMPLE_HEX = "0200000000000010400000803f00002040000040c0"


def appendix_hex(name: str) -> str:
    return re.sub(r"[\s|]", "", APPENDIX[name])


def block(
    name: str,
    data_type: str,
    values: list[Any],
    *,
    version: int = 1,
    string_lengths: list[int] | None = None,
    vector_lengths: list[int] | None = None,
    now: int = NOW,
    expiry_at: int = 0,
    compress: bool = False,
    saturate: bool = False,
    n_features: int | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    case: dict[str, Any] = {"name": name, "data_type": data_type, "version": version}
    if string_lengths is not None:
        case["string_lengths"] = string_lengths
    if vector_lengths is not None:
        case["vector_lengths"] = vector_lengths
    if n_features is not None:
        case["n_features"] = n_features
    case.update(values=[to_json(v) for v in values], now=now, expiry_at=expiry_at, compress=compress)
    if saturate:
        case["saturate"] = True
    if error is not None:
        case["error"] = error
    return case


def decode_case(
    name: str,
    data_type: str,
    hex_: str,
    *,
    version: int = 1,
    n_features: int = 1,
    string_lengths: list[int] | None = None,
    vector_lengths: list[int] | None = None,
    now: int = NOW,
    status: str | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """Decode-only case: a meta, bytes and the outcome (status or error)."""
    case: dict[str, Any] = {
        "kind": "decode",
        "name": name,
        "data_type": data_type,
        "version": version,
        "n_features": n_features,
    }
    if string_lengths is not None:
        case["string_lengths"] = string_lengths
    if vector_lengths is not None:
        case["vector_lengths"] = vector_lengths
    case.update(hex=hex_, now=now)
    if status is not None:
        case["status"] = status
    if error is not None:
        case["error"] = error
    return case


def psdb_cases() -> list[dict[str, Any]]:
    c = [
        block("appendix: FP32 v2 [1.0, 2.5, -3.0]", "DataTypeFP32", [1.0, 2.5, -3.0], version=2),
        block("appendix: Bool v1 10 bits", "DataTypeBool", [True] * 8 + [False, True]),
        block(
            "appendix: String v3 [ab, '', xyz]",
            "DataTypeString",
            ["ab", "", "xyz"],
            version=3,
            string_lengths=[10, 10, 10],
        ),
        block(
            "appendix: FP32Vector header b7=0x11 b8=0x30",
            "DataTypeFP32Vector",
            [1.0, 2.0],
            vector_lengths=[2],
        ),
        # -- every scalar type ------------------------------------------------------------------
        block(
            "FP8E5M2 scalars: rounding, subnormals, signed zero, Inf, NaN",
            "DataTypeFP8E5M2",
            [1.0, -2.0, 0.3, 57344.0, 61439.0, T**-16, 3 * T**-17, 1e-6, -0.0, math.inf, -math.inf, math.nan],
        ),
        block(
            "FP8E4M3 scalars: rounding, ties, subnormals, signed zero, NaN",
            "DataTypeFP8E4M3",
            [1.0, -2.0, 0.3, 448.0, 464.0, -464.0, 17.0, 19.0, T**-9, 3 * T**-10, 1e-4, 0.0, -0.0, math.nan],
        ),
        block(
            "FP16 scalars: rounding, ties to even, subnormals, max, Inf, NaN",
            "DataTypeFP16",
            [
                1.0,
                -2.5,
                0.1,
                65504.0,
                65519.0,
                -65519.0,
                T**-24,
                T**-25,
                3 * T**-25,
                1 + T**-11,
                1 + 3 * T**-11,
                -0.0,
                math.inf,
                -math.inf,
                math.nan,
            ],
        ),
        block(
            "FP16 double rounding through float32, as the reference casts first",
            "DataTypeFP16",
            [1 + T**-11 + T**-40, -(1 + T**-11 + T**-40)],
        ),
        block(
            "FP32 scalars: inexact decimals, max, subnormal, underflow, Inf, NaN",
            "DataTypeFP32",
            [0.1, -0.0, 3.4028234663852886e38, T**-149, 1e-50, -1e-50, 16777217.0, math.inf, math.nan],
        ),
        block(
            "FP64 scalars",
            "DataTypeFP64",
            [1.5, -0.1, 1e300, 1e-22, 5e-324, -0.0, 1e308, math.inf, -math.inf, math.nan],
        ),
        block("Int8 scalars incl. negatives", "DataTypeInt8", [-128, 127, 0, -1, 5]),
        block("Int16 scalars", "DataTypeInt16", [-32768, 32767, -2, 258]),
        block("Int32 scalars", "DataTypeInt32", [-2147483648, 2147483647, -1, 16909060]),
        block(
            "Int64 scalars",
            "DataTypeInt64",
            [-9223372036854775808, 9223372036854775807, -1, 72623859790382856],
        ),
        block("Uint8 scalars", "DataTypeUint8", [0, 255, 128]),
        block("Uint16 scalars", "DataTypeUint16", [0, 65535, 258]),
        block("Uint32 scalars", "DataTypeUint32", [0, 4294967295, 16909060]),
        block("Uint64 scalars", "DataTypeUint64", [0, 18446744073709551615, 9223372036854775808]),
        block(
            "String: unicode, empty, booked exactly",
            "DataTypeString",
            ["héllo", "日本", "", "a"],
            string_lengths=[6, 6, 0, 1],
        ),
        block("Bool 7 bits (last index 1)", "DataTypeBool", [True, False, True, True, False, False, True]),
        block("Bool 8 bits (last index 0)", "DataTypeBool", [False, True] * 4),
        block("Bool 1 bit", "DataTypeBool", [True]),
        block("Bool 17 bits", "DataTypeBool", [True, False, False] * 5 + [True, True]),
        block("Bool from integers 0/1", "DataTypeBool", [1, 0, 1]),
        # -- every vector type ------------------------------------------------------------------
        block(
            "FP8E5M2Vector",
            "DataTypeFP8E5M2Vector",
            [1.0, -0.3, 100.0, T**-16, -57344.0],
            vector_lengths=[2, 3],
        ),
        block(
            "FP8E4M3Vector",
            "DataTypeFP8E4M3Vector",
            [1.0, -0.3, 100.0, -448.0],
            vector_lengths=[3, 1],
        ),
        block(
            "FP16Vector",
            "DataTypeFP16Vector",
            [0.1, -0.2, 65504.0, T**-24, math.nan],
            vector_lengths=[2, 3],
        ),
        block("FP32Vector ragged", "DataTypeFP32Vector", [0.5, -1.25, 0.1, 1e30], vector_lengths=[1, 3]),
        block("FP64Vector", "DataTypeFP64Vector", [0.1, -2.5, 1e300], vector_lengths=[2, 1]),
        block("Int8Vector", "DataTypeInt8Vector", [-128, -1, 7, 127, 0], vector_lengths=[3, 2]),
        block("Int16Vector", "DataTypeInt16Vector", [-32768, 32767, -300], vector_lengths=[1, 2]),
        block(
            "Int32Vector",
            "DataTypeInt32Vector",
            [-2147483648, 2147483647, -5, 6],
            vector_lengths=[2, 2],
        ),
        block(
            "Int64Vector",
            "DataTypeInt64Vector",
            [-9223372036854775808, 9223372036854775807, -256],
            vector_lengths=[2, 1],
        ),
        block("Uint8Vector", "DataTypeUint8Vector", [0, 255, 1, 2], vector_lengths=[1, 3]),
        block("Uint16Vector", "DataTypeUint16Vector", [65535, 0, 4660], vector_lengths=[3]),
        block("Uint32Vector", "DataTypeUint32Vector", [4294967295, 305419896], vector_lengths=[1, 1]),
        block(
            "Uint64Vector",
            "DataTypeUint64Vector",
            [18446744073709551615, 1, 81985529216486895],
            vector_lengths=[2, 1],
        ),
        block(
            "StringVector: unicode, empty strings, ragged",
            "DataTypeStringVector",
            ["ab", "", "xyz", "é", "hello"],
            string_lengths=[3, 5],
            vector_lengths=[2, 3],
        ),
        block(
            "BoolVector 13 bits (last index 3)",
            "DataTypeBoolVector",
            [True, False, True, False, False, True, True, True, True, False, True, False, True],
            vector_lengths=[3, 4, 6],
        ),
        block(
            "BoolVector 5 bits", "DataTypeBoolVector", [False, True, True, False, True], vector_lengths=[5]
        ),
        block(
            "BoolVector 16 bits",
            "DataTypeBoolVector",
            [True, True, False] * 5 + [True],
            vector_lengths=[8, 8],
        ),
        # -- header fields ------------------------------------------------------------------------
        block("version 0x1234 is little-endian", "DataTypeInt8", [1], version=0x1234),
        block("version 65535", "DataTypeUint8", [9], version=65535),
        block("compress=true on a tiny payload stays uncompressed", "DataTypeInt16", [1, 2], compress=True),
        # -- refused input ------------------------------------------------------------------------
        block(
            "int8 300 is refused",
            "DataTypeInt8",
            [1, 300],
            error="value 300 is out of range for DataTypeInt8",
        ),
        block("int8 -129 is refused", "DataTypeInt8", [-129], error="out of range for DataTypeInt8"),
        block("int16 32768 is refused", "DataTypeInt16", [32768], error="out of range for DataTypeInt16"),
        block("int32 2^31 is refused", "DataTypeInt32", [2**31], error="out of range for DataTypeInt32"),
        block("int64 2^63 is refused", "DataTypeInt64", [2**63], error="out of range for DataTypeInt64"),
        block("uint8 -1 is refused", "DataTypeUint8", [-1], error="out of range for DataTypeUint8"),
        block("uint8 256 is refused", "DataTypeUint8", [256], error="out of range for DataTypeUint8"),
        block("uint16 65536 is refused", "DataTypeUint16", [65536], error="out of range for DataTypeUint16"),
        block("uint32 2^32 is refused", "DataTypeUint32", [2**32], error="out of range for DataTypeUint32"),
        block("uint64 -1 is refused", "DataTypeUint64", [-1], error="out of range for DataTypeUint64"),
        block(
            "int8 vector element 300 is refused",
            "DataTypeInt8Vector",
            [1, 2, 3, 300],
            vector_lengths=[2, 2],
            error="value 300 is out of range for DataTypeInt8Vector",
        ),
        block("int16 2.5 is not an integer", "DataTypeInt16", [2.5], error="is not an integer"),
        block("bool 2 is refused", "DataTypeBool", [1, 2], error="out of range for DataTypeBool"),
        block("FP32 1e39 overflows", "DataTypeFP32", [1e39], error="out of range for DataTypeFP32"),
        block("FP16 65520 overflows", "DataTypeFP16", [65520.0], error="out of range for DataTypeFP16"),
        block(
            "vector length mismatch",
            "DataTypeInt32Vector",
            [1, 2, 3, 4],
            vector_lengths=[3, 2],
            error="expected 5 values, got 4",
        ),
        block(
            "scalar count mismatch",
            "DataTypeFP32",
            [1.0, 2.0],
            n_features=3,
            error="expected 3 values, got 2",
        ),
        block(
            "string longer than booked",
            "DataTypeString",
            ["ok", "abc"],
            string_lengths=[2, 2],
            error="string of 3 bytes exceeds its booked length 2",
        ),
        block(
            "unicode string longer than booked (bytes, not characters)",
            "DataTypeString",
            ["日本"],
            string_lengths=[5],
            error="exceeds its booked length 5",
        ),
        block(
            "string vector element longer than booked",
            "DataTypeStringVector",
            ["a", "bb", "ccc"],
            string_lengths=[2],
            vector_lengths=[3],
            error="exceeds its booked length 2",
        ),
        block(
            "string vector count mismatch",
            "DataTypeStringVector",
            ["a", "b"],
            string_lengths=[2, 2],
            vector_lengths=[2, 1],
            error="expected 3 values, got 2",
        ),
        block(
            "bool vector count mismatch",
            "DataTypeBoolVector",
            [True] * 9,
            vector_lengths=[5, 5],
            error="expected 10 values, got 9",
        ),
        block("saturate: FP32 1e39 clamps to max", "DataTypeFP32", [1e39, -1e300], saturate=True),
        block(
            "saturate: FP16 clamps finite overflow, keeps Inf",
            "DataTypeFP16",
            [7e4, -1e9, math.inf],
            saturate=True,
        ),
    ]
    # -- decoding stored bytes ----------------------------------------------------------------------
    fp32 = FP32_EXAMPLE_HEX
    c += [
        decode_case("empty bytes are a missing block", "DataTypeFP32", "", n_features=3, status="missing"),
        decode_case(
            "payload one byte short",
            "DataTypeFP32",
            fp32[:-2],
            version=2,
            n_features=3,
            error="payload of 11 bytes",
        ),
        decode_case(
            "payload one byte long",
            "DataTypeFP32",
            fp32 + "00",
            version=2,
            n_features=3,
            error="payload of 13 bytes",
        ),
        decode_case(
            "shorter than the header",
            "DataTypeFP32",
            fp32[:10],
            version=2,
            n_features=3,
            error="9-byte header",
        ),
        decode_case(
            "layout version 2", "DataTypeFP32", "02000000000000204000", version=2, error="layout version 2"
        ),
        decode_case(
            "compression type 3",
            "DataTypeFP32",
            "0200000000000016400000803f",
            version=2,
            error="compression type 3",
        ),
        decode_case(
            "type field 31 with an extension offset past the last one",
            "DataTypeFP32",
            "0200000000000011f5",
            error="extension type 36 (31 + 5)",
        ),
        decode_case(
            "type field 31, offset 0: a BF16 block, not the FP32 of the meta",
            "DataTypeFP32",
            "0100000000000011f0",
            error="block holds DataTypeBF16 but the feature group is DataTypeFP32",
        ),
        decode_case(
            "block type differs from the meta",
            "DataTypeInt32",
            fp32,
            version=2,
            n_features=3,
            error="block holds DataTypeFP32 but the feature group is DataTypeInt32",
        ),
        decode_case(
            "block version differs from the meta",
            "DataTypeFP32",
            fp32,
            version=3,
            n_features=3,
            error="schema version 2",
        ),
        decode_case(
            "string lengths do not match the payload",
            "DataTypeString",
            "0300000000000010e0020000000400616278797a",
            version=3,
            n_features=3,
            string_lengths=[10, 10, 10],
            error="string lengths sum to 6",
        ),
        decode_case(
            "string length table cut short",
            "DataTypeString",
            "0300000000000010e00200",
            version=3,
            n_features=3,
            string_lengths=[10, 10, 10],
            error="cannot hold 3 lengths",
        ),
        decode_case(
            "invalid UTF-8 in a stored string",
            "DataTypeString",
            "0100000000000010e00100ff",
            string_lengths=[4],
            error="not valid UTF-8",
        ),
        decode_case(
            "zstd flag on a payload that is not a zstd frame",
            "DataTypeFP32",
            "0200000000000012400000803f00002040000040c0",
            version=2,
            n_features=3,
            error="zstd",
        ),
        decode_case(
            "bool payload of the wrong size",
            "DataTypeBool",
            "0100000000000010f6ff",
            n_features=10,
            error="payload of 1 bytes",
        ),
        decode_case(
            "expiry day 400 is corrupt",
            "DataTypeInt8",
            (bytes([1, 0]) + pack_int(2026, 400, 0) + bytes([0x10, 0x60, 1])).hex(),
            error="expiry field out of range",
        ),
        decode_case(
            "an expiring block before its expiry is present",
            "DataTypeInt32",
            "0100a876a81fc0108007000000",
            now=1_772_366_400,
            status="present",
        ),
        decode_case(
            "an expiring block one second after its expiry is expired",
            "DataTypeInt32",
            "0100a876a81fc0108007000000",
            now=1_772_366_401,
            status="expired",
        ),
        decode_case(
            "an expired block is reported without looking at its payload",
            "DataTypeInt32",
            "0100a876a81fc0128007",
            now=1_772_366_401,
            status="expired",
        ),
        # Hand-built zstd frames (RFC 8878): any conforming compressor's output must decode, not
        # just ours. Magic 28b52ffd, frame header, then raw (type 0) / RLE (type 1) blocks.
        decode_case(
            "zstd frame with one RLE block: 1000 Int32 zeros",
            "DataTypeInt32",
            "010000000000001280" + "28b52ffd" + "60a00e" + "037d00" + "00",
            n_features=1000,
            status="present",
        ),
        decode_case(
            "zstd frame with one raw block: FP32 [1.0, 2.5, -3.0]",
            "DataTypeFP32",
            "020000000000001240" + "28b52ffd" + "200c" + "610000" + "0000803f00002040000040c0",
            version=2,
            n_features=3,
            status="present",
        ),
        decode_case(
            "zstd frame of two blocks (raw + RLE) with a checksum field",
            "DataTypeUint8",
            "01000000000000"
            + "12a0"
            + "28b52ffd"
            + "24"
            + "05"
            + "100000"
            + "0102"
            + "1b0000"
            + "ff"
            + zstd_checksum(bytes.fromhex("0102ffffff")).hex(),
            n_features=5,
            status="present",
        ),
        decode_case(
            "zstd frame larger than the version's payload is refused",
            "DataTypeInt32",
            "010000000000001280" + "28b52ffd" + "60a00e" + "037d00" + "00",
            n_features=999,
            error="zstd",
        ),
        decode_case(
            "zstd frame of the wrong size is refused",
            "DataTypeInt32",
            "010000000000001280" + "28b52ffd" + "60a00e" + "037d00" + "00",
            n_features=1001,
            error="payload of 4000 bytes",
        ),
        decode_case(
            "truncated zstd frame is refused",
            "DataTypeFP32",
            "020000000000001240" + "28b52ffd" + "200c" + "610000" + "0000803f00002040",
            version=2,
            n_features=3,
            error="zstd",
        ),
    ]
    return c


def expiry_cases() -> list[dict[str, Any]]:
    t_appendix = 1_772_366_400  # 2026-03-01T12:00:00Z

    def at(iso: str) -> int:
        return int(datetime.fromisoformat(iso).replace(tzinfo=timezone.utc).timestamp())

    c = [
        block(
            "appendix: expiry 2026-03-01T12:00:00Z",
            "DataTypeInt32",
            [7],
            now=t_appendix - 4 * DAY,
            expiry_at=t_appendix,
        ),
        block("never expires (expiry_at 0)", "DataTypeInt32", [7], expiry_at=0),
        block("1 second TTL", "DataTypeInt32", [7], expiry_at=NOW + 1),
        block("exactly 513 days (the maximum)", "DataTypeInt32", [7], expiry_at=NOW + 513 * DAY),
        block(
            "leap day 2028-02-29T23:59:59Z",
            "DataTypeUint8",
            [1],
            now=at("2028-01-01T00:00:00"),
            expiry_at=at("2028-02-29T23:59:59"),
        ),
        block(
            "last second of leap year 2028 (day 365)",
            "DataTypeUint8",
            [1],
            now=at("2028-06-01T00:00:00"),
            expiry_at=at("2028-12-31T23:59:59"),
        ),
        block(
            "new year 2027-01-01T00:00:00Z (day 0, second 0)",
            "DataTypeUint8",
            [1],
            now=at("2026-12-31T00:00:00"),
            expiry_at=at("2027-01-01T00:00:00"),
        ),
        block(
            "year 2000 (divisible by 400)",
            "DataTypeBool",
            [True],
            now=at("2000-01-01T00:00:00"),
            expiry_at=at("2000-12-31T12:34:56"),
        ),
        block(
            "expiry with a vector block",
            "DataTypeFP16Vector",
            [1.0, 2.0],
            vector_lengths=[2],
            expiry_at=NOW + 3600,
        ),
        block(
            "expiry equal to now is refused", "DataTypeInt32", [7], expiry_at=NOW, error="not in the future"
        ),
        block(
            "expiry in the past is refused",
            "DataTypeInt32",
            [7],
            expiry_at=NOW - 10,
            error="not in the future",
        ),
        block(
            "TTL of 513 days + 1 s is refused",
            "DataTypeInt32",
            [7],
            expiry_at=NOW + 513 * DAY + 1,
            error="more than 513 days",
        ),
        block(
            "TTL of 2 years is refused",
            "DataTypeInt32",
            [7],
            expiry_at=NOW + 730 * DAY,
            error="more than 513 days",
        ),
    ]
    # The five bytes alone.
    bad = "expiry field out of range"
    raw = [
        ("five zero bytes: never", "0000000000", None),
        ("appendix bytes decode to 2026-03-01T12:00:00Z", "a876a81fc0", None),
        ("day 365 of 2028 is valid", pack_int(2028, 365, 0).hex(), None),
        ("all ones: corrupt", "ffffffffff", bad),
        ("year 0 with second 1: corrupt", "0000000001", bad),
        ("second 86400 of a day: corrupt", pack_int(2026, 0, 86400).hex(), bad),
        ("day 366 of a year: corrupt", pack_int(2026, 366, 0).hex(), bad),
    ]
    for name, hx, error in raw:
        case: dict[str, Any] = {"kind": "expiry_decode", "name": name, "expiry_hex": hx}
        if error:
            case["error"] = error
        c.append(case)
    return c


def pack_int(year: int, day: int, sec: int) -> bytes:
    packed = (year << 26) | (day << 17) | sec
    return (packed >> 8).to_bytes(4, "little") + bytes([packed & 0xFF])


def fp8_cases() -> list[dict[str, Any]]:
    c: list[dict[str, Any]] = []
    for name, (fmt, x, _code) in APPENDIX_FP8.items():
        c.append({"kind": "codec", "name": name, "codec": fmt, "values": [to_json(from_json(x))]})
    c += [
        {
            "kind": "codec",
            "name": "E4M3 signed values and subnormal ties",
            "codec": "e4m3",
            "values": [
                -0.0,
                -1.0,
                -448.0,
                -464.0,
                -480.0,
                "-inf",
                "-nan",
                T**-10,
                3 * T**-10,
                5 * T**-10,
                0.3,
            ],
        },
        {
            "kind": "codec",
            "name": "E4M3 normal ties and smallest normal",
            "codec": "e4m3",
            "values": [17.0, 19.0, 1.0625, 1.1875, T**-6, T**-6 - T**-10, 240.0, 248.0, 232.0],
        },
        {
            "kind": "codec",
            "name": "E5M2 signed, ties and subnormals",
            "codec": "e5m2",
            "values": [-0.0, -1.0, "-inf", -61440.0, 1.125, 1.375, T**-17, 3 * T**-17, T**-14, 0.3, 1e-9],
        },
        {
            "kind": "codec",
            "name": "E4M3 saturating",
            "codec": "e4m3",
            "saturate": True,
            "values": [500.0, -1e9, "inf", "-inf", 464.0, 1.0, "nan"],
        },
        {
            "kind": "codec",
            "name": "E5M2 saturating (Inf stays Inf)",
            "codec": "e5m2",
            "saturate": True,
            "values": [61440.0, -1e9, "inf", "-inf", 1.0, "nan"],
        },
        {
            "kind": "codec",
            "name": "FP16 codec",
            "codec": "fp16",
            "values": [1.0, 65504.0, 65519.0, 65520.0, -1e9, T**-24, T**-25, 3 * T**-25, "nan", "-inf"],
        },
        {
            "kind": "codec",
            "name": "FP16 saturating",
            "codec": "fp16",
            "saturate": True,
            "values": [65520.0, -1e9, "inf", 1.0],
        },
    ]
    # As blocks: our write policy refuses what the format would lose.
    c += [
        block(
            "E4M3 block: appendix check values that fit",
            "DataTypeFP8E4M3",
            [1.0, 448.0, 464.0, T**-9, 1e-4, -2.0],
        ),
        block(
            "E5M2 block: appendix check values that fit",
            "DataTypeFP8E5M2",
            [1.0, 57344.0, 61439.0, T**-16, math.inf],
        ),
        block(
            "E4M3 500 without saturation is refused",
            "DataTypeFP8E4M3",
            [500.0],
            error="out of range for DataTypeFP8E4M3",
        ),
        block("E4M3 479.9 is refused (would store NaN)", "DataTypeFP8E4M3", [479.9], error="out of range"),
        block("E4M3 Inf is refused (no Inf in E4M3FN)", "DataTypeFP8E4M3", [math.inf], error="out of range"),
        block("E5M2 61440 is refused (would store Inf)", "DataTypeFP8E5M2", [61440.0], error="out of range"),
        block(
            "E4M3 vector element 500 is refused",
            "DataTypeFP8E4M3Vector",
            [1.0, 500.0],
            vector_lengths=[2],
            error="out of range for DataTypeFP8E4M3Vector",
        ),
        block("E4M3 500 saturating", "DataTypeFP8E4M3", [500.0, -1e9, math.inf], saturate=True),
        block("E5M2 1e9 saturating", "DataTypeFP8E5M2", [1e9, -61440.0, math.inf], saturate=True),
    ]
    return c


def csdb_cases() -> list[dict[str, Any]]:
    fp32 = FP32_EXAMPLE_HEX
    return [
        {
            "kind": "csdb",
            "name": "appendix: CSDB FG 3 (FP32 block) + negative FG 7",
            "layout": 1,
            "entries": [{"fg_id": 3, "hex": fp32}, {"fg_id": 7, "hex": ""}],
            "lookup": {"fg_ids": [7, 3, 9]},
        },
        {"kind": "csdb", "name": "no entries", "layout": 1, "entries": [], "lookup": {"fg_ids": [1]}},
        {
            "kind": "csdb",
            "name": "16-bit ids and lengths are little-endian (300-byte block, FG 513)",
            "layout": 1,
            "entries": [{"fg_id": 513, "hex": "ab*300"}, {"fg_id": 65535, "hex": "01"}],
            "lookup": {"fg_ids": [65535, 513]},
        },
        {
            "kind": "csdb",
            "name": "duplicate FG: lookup takes the first; a repeated wanted id is filled twice",
            "layout": 1,
            "entries": [{"fg_id": 5, "hex": "aa"}, {"fg_id": 5, "hex": "bbbb"}, {"fg_id": 0, "hex": "cc"}],
            "lookup": {"fg_ids": [5, 0, 5]},
        },
        {
            "kind": "csdb",
            "name": "block of exactly 65535 bytes fits layout 1",
            "layout": 1,
            "entries": [{"fg_id": 2, "hex": "5a*65535"}],
        },
        {
            "kind": "csdb",
            "name": "layout 2 (ours): 32-bit lengths",
            "layout": 2,
            "entries": [{"fg_id": 3, "hex": fp32}, {"fg_id": 7, "hex": ""}],
            "lookup": {"fg_ids": [3, 7, 8]},
        },
        {
            "kind": "csdb",
            "name": "layout 2 holds a block over 64 KiB",
            "layout": 2,
            "entries": [{"fg_id": 1, "hex": "01*70000"}, {"fg_id": 2, "hex": "02"}],
            "lookup": {"fg_ids": [2]},
        },
        {
            "kind": "csdb",
            "name": "layout 1 refuses a block of 65536 bytes",
            "layout": 1,
            "entries": [{"fg_id": 1, "hex": "00*65536"}],
            "error": "does not fit CSDB layout 1",
        },
        {
            "kind": "csdb",
            "name": "unknown layout 3 cannot be written",
            "layout": 3,
            "entries": [],
            "error": "unsupported CSDB layout 3",
        },
        {"kind": "csdb_decode", "name": "empty value", "hex": "", "error": "empty CSDB"},
        {
            "kind": "csdb_decode",
            "name": "unknown layout 9",
            "hex": "09",
            "error": "unsupported CSDB layout 9",
        },
        {"kind": "csdb_decode", "name": "truncated entry prefix", "hex": "010300", "error": "truncated"},
        {
            "kind": "csdb_decode",
            "name": "layout 2 truncated entry prefix",
            "hex": "020300050000",
            "error": "truncated",
        },
        {
            "kind": "csdb_decode",
            "name": "entry overruns the value",
            "hex": "010300050001",
            "error": "overruns",
        },
        {
            "kind": "csdb_decode",
            "name": "second entry overruns",
            "hex": "0103000100aa04000200bb",
            "error": "feature group 4 overruns",
        },
    ]


def quantize_cases() -> list[dict[str, Any]]:
    vals = [1.0, -2.5, 0.1, 448.0, 500.0, 65504.0, 70000.0, T**-20, -0.0, "inf", "nan"]
    c: list[dict[str, Any]] = []
    pairs = [
        ("DataTypeFP64", "DataTypeFP32"),
        ("DataTypeFP64", "DataTypeFP16"),
        ("DataTypeFP64", "DataTypeFP8E4M3"),
        ("DataTypeFP64", "DataTypeFP8E5M2"),
        ("DataTypeFP32", "DataTypeFP16"),
        ("DataTypeFP32", "DataTypeFP8E4M3"),
        ("DataTypeFP32", "DataTypeFP8E5M2"),
        ("DataTypeFP16", "DataTypeFP8E4M3"),
        ("DataTypeFP16", "DataTypeFP8E5M2"),
    ]
    for src, dst in pairs:
        ks = element_of(type_number(src))
        # A binary16 source cannot hold 70000 (it would be Inf already).
        v = [x for x in vals if x != 70000.0] if ks == "fp16" else vals
        c.append({"kind": "quantize", "name": f"{src} -> {dst}", "from": src, "to": dst, "values": v})
        c.append(
            {
                "kind": "quantize",
                "name": f"{src}Vector -> {dst}Vector",
                "from": src + "Vector",
                "to": dst + "Vector",
                "values": [1.0, 0.3, -1e-3],
            }
        )
    c.append(
        {
            "kind": "quantize",
            "name": "FP64 beyond float32 becomes Inf before narrowing",
            "from": "DataTypeFP64",
            "to": "DataTypeFP16",
            "values": [1e300, -1e300],
        }
    )
    refused = [
        ("DataTypeFP16", "DataTypeFP32", "upward"),
        ("DataTypeFP32", "DataTypeFP32", "same precision"),
        ("DataTypeFP8E4M3", "DataTypeFP8E5M2", "FP8 to FP8"),
        ("DataTypeFP8E5M2", "DataTypeFP8E4M3", "FP8 to FP8"),
        ("DataTypeFP64", "DataTypeFP64", "FP64 target"),
        ("DataTypeFP32", "DataTypeFP16Vector", "scalar to vector"),
        ("DataTypeFP32Vector", "DataTypeFP16", "vector to scalar"),
        ("DataTypeInt32", "DataTypeInt8", "ints"),
        ("DataTypeFP32", "DataTypeInt8", "float to int"),
        ("DataTypeString", "DataTypeFP16", "string source"),
    ]
    for src, dst, why in refused:
        c.append(
            {
                "kind": "quantize",
                "name": f"refused: {src} -> {dst} ({why})",
                "from": src,
                "to": dst,
                "src_hex": "0000803f",
                "error": "cannot quantize",
            }
        )
    c.append(
        {
            "kind": "quantize",
            "name": "3 bytes are not whole FP32 elements",
            "from": "DataTypeFP32",
            "to": "DataTypeFP16",
            "src_hex": "000080",
            "error": "not a whole number",
        }
    )
    return c


def embedding_cases() -> list[dict[str, Any]]:
    """Our extension types: BF16 (31), BF16Vector (32), Q8Vector (33)."""
    c: list[dict[str, Any]] = [
        block(
            "BF16 scalars: rounding ties, subnormals, signed zero, Inf, NaN, float32 range",
            "DataTypeBF16",
            [
                1.0,
                -2.0,
                1 + T**-8,
                1 + 3 * T**-8,
                0.1,
                3.0e38,
                -(T**-133),
                T**-140,
                -0.0,
                math.inf,
                -math.nan,
            ],
        ),
        block("BF16 version and expiry", "DataTypeBF16", [2.5], version=7, expiry_at=NOW + DAY),
        block(
            "BF16 beyond the largest bf16 is refused (would store Inf)",
            "DataTypeBF16",
            [1.0, 3.4e38],
            error="out of range for DataTypeBF16",
        ),
        block("BF16 saturating", "DataTypeBF16", [3.4e38, -1e39, math.inf, 1.0], saturate=True),
        block(
            "BF16Vector, two features of lengths 3 and 1",
            "DataTypeBF16Vector",
            [0.5, -0.25, 3.14159, 65504.0],
            vector_lengths=[3, 1],
        ),
        block(
            "Q8Vector: scale then codes per vector; ties to even; the largest magnitude at ±127",
            "DataTypeQ8Vector",
            [0.0, 254.0, -127.0, 1.0, 0.5, -1.5, 2.5, -3.5, 0.1, -0.7, 0.33],
            vector_lengths=[3, 8],
        ),
        block(
            "Q8Vector: an all-zero vector stores scale 0 (and -0 reads back as +0)",
            "DataTypeQ8Vector",
            [0.0, -0.0, 0.0, 1e-3, -2e-3],
            vector_lengths=[3, 2],
        ),
        block(
            "Q8Vector: magnitudes from 1e-38 to 1e38",
            "DataTypeQ8Vector",
            [1e-38, -3e-39, 1e38, -2.5e37, 7.0],
            vector_lengths=[2, 3],
        ),
        block(
            "Q8Vector with expiry, version 3",
            "DataTypeQ8Vector",
            [1.0, -1.0],
            vector_lengths=[2],
            version=3,
            expiry_at=NOW + 3 * DAY,
        ),
        block(
            "Q8Vector: NaN is refused",
            "DataTypeQ8Vector",
            [1.0, math.nan, 2.0],
            vector_lengths=[3],
            error="feature 0 element 1: NaN cannot be stored as DataTypeQ8Vector",
        ),
        block(
            "Q8Vector: Inf is refused",
            "DataTypeQ8Vector",
            [1.0, 2.0, -math.inf],
            vector_lengths=[1, 2],
            error="feature 1 element 1: -inf cannot be stored as DataTypeQ8Vector",
        ),
        block(
            "Q8Vector saturating: ±Inf → ±127, NaN → code -128 (NaN)",
            "DataTypeQ8Vector",
            [math.inf, 2.0, math.nan, -1.0, -math.inf],
            vector_lengths=[5],
            saturate=True,
        ),
        block(
            "Q8Vector: a double beyond float32 is refused",
            "DataTypeQ8Vector",
            [1.0, 1e300],
            vector_lengths=[2],
            error="out of range for DataTypeQ8Vector",
        ),
        decode_case(
            "Q8Vector payload must hold every vector's scale",
            "DataTypeQ8Vector",
            "0100000000000011f2" + "0000803f" + "7f00",
            n_features=2,
            vector_lengths=[1, 1],
            error="payload of 6 bytes",
        ),
        decode_case(
            "Q8Vector decodes code -128 as NaN",
            "DataTypeQ8Vector",
            "0100000000000011f2" + "0000803f" + "7f80c1",
            n_features=1,
            vector_lengths=[3],
            status="present",
        ),
        {
            "kind": "codec",
            "name": "bf16 codec: ties, NaN sign, overflow to Inf",
            "codec": "bf16",
            "values": [1.0, 1 + T**-8, 1 + 3 * T**-8, -(T**-130), 3.4e38, "-inf", "nan", "-nan", 0.1],
        },
        {
            "kind": "codec",
            "name": "bf16 codec saturating",
            "codec": "bf16",
            "saturate": True,
            "values": [3.4e38, -3.4e38, "inf", 1.0],
        },
        {
            "kind": "codec",
            "name": "q8 codec: one vector",
            "codec": "q8",
            "values": [0.25, -1.0, 0.5, 0.125, -0.0625, 0.75, 0.0, 1.0 / 3],
        },
        {"kind": "codec", "name": "q8 codec: zeros", "codec": "q8", "values": [0.0, -0.0]},
        {
            "kind": "codec",
            "name": "q8 codec saturating",
            "codec": "q8",
            "saturate": True,
            "values": ["-inf", 0.0, "nan", 3.0],
        },
    ]
    pairs = [
        ("DataTypeFP32", "DataTypeBF16"),
        ("DataTypeFP64", "DataTypeBF16"),
        ("DataTypeFP16", "DataTypeBF16"),
        ("DataTypeBF16", "DataTypeFP8E4M3"),
        ("DataTypeBF16", "DataTypeFP8E5M2"),
    ]
    vals = [1.0, -2.5, 0.1, 448.0, 500.0, 65504.0, T**-20, -0.0, "inf", "nan"]
    for src, dst in pairs:
        c.append({"kind": "quantize", "name": f"{src} -> {dst}", "from": src, "to": dst, "values": vals})
        c.append(
            {
                "kind": "quantize",
                "name": f"{src}Vector -> {dst}Vector",
                "from": src + "Vector",
                "to": dst + "Vector",
                "values": [1.0, 0.3, -1e-3],
            }
        )
    emb = [0.12, -0.5, 0.031, 0.9, -0.77, 0.0, 0.25, -0.125]
    for src in ("DataTypeFP64Vector", "DataTypeFP32Vector", "DataTypeFP16Vector", "DataTypeBF16Vector"):
        c.append(
            {"kind": "quantize", "name": f"{src} -> Q8", "from": src, "to": "DataTypeQ8Vector", "values": emb}
        )
    c += [
        {
            "kind": "quantize",
            "name": "FP32Vector -> Q8 saturates what is stored (Inf, NaN)",
            "from": "DataTypeFP32Vector",
            "to": "DataTypeQ8Vector",
            "values": ["inf", 1.0, "nan", -0.5],
        },
        {
            "kind": "quantize",
            "name": "FP32Vector -> Q8, all zero",
            "from": "DataTypeFP32Vector",
            "to": "DataTypeQ8Vector",
            "values": [0.0, 0.0, -0.0],
        },
        {
            "kind": "quantize",
            "name": "Q8Vector -> FP8E4M3Vector",
            "from": "DataTypeQ8Vector",
            "to": "DataTypeFP8E4M3Vector",
            "values": emb,
        },
    ]
    refused = [
        ("DataTypeBF16Vector", "DataTypeFP16Vector", "upward"),
        ("DataTypeQ8Vector", "DataTypeBF16Vector", "upward"),
        ("DataTypeFP32", "DataTypeQ8Vector", "scalar to vector"),
        ("DataTypeFP8E4M3Vector", "DataTypeQ8Vector", "upward"),
        ("DataTypeBF16", "DataTypeBF16", "same precision"),
    ]
    for src, dst, why in refused:
        c.append(
            {
                "kind": "quantize",
                "name": f"refused: {src} -> {dst} ({why})",
                "from": src,
                "to": dst,
                "src_hex": "0000803f",
                "error": "cannot quantize",
            }
        )
    return c


TOPICS = {
    "psdb": psdb_cases,
    "csdb": csdb_cases,
    "expiry": expiry_cases,
    "fp8": fp8_cases,
    "quantize": quantize_cases,
    "embeddings": embedding_cases,
}


def build_topic(topic: str) -> list[dict[str, Any]]:
    """Inputs + reference-computed expectations; appendix cases are checked against the facts text."""
    out = []
    for case in TOPICS[topic]():
        exp = expected_of(case)
        if "error" in case:
            assert exp == {"error": True}, f"{case['name']}: the reference encoder accepts it: {exp}"
        else:
            assert "error" not in exp, f"{case['name']}: the reference encoder refuses it"
            for key, value in exp.items():
                given = case.setdefault(key, value)
                if isinstance(given, dict):  # e.g. "lookup": the inputs given, the outputs computed
                    assert given.items() <= value.items()
                    case[key] = value
                assert case[key] == value, f"{case['name']}: {key} {case[key]} != {value}"
        check_appendix(case)
        out.append(case)
    return out


def check_appendix(case: dict[str, Any]) -> None:
    name = case["name"]
    if name == "appendix: expiry 2026-03-01T12:00:00Z":
        assert case["expiry_hex"] == appendix_hex(name)
    elif name == "appendix: CSDB FG 3 (FP32 block) + negative FG 7":
        assert expand_hex(case["hex"]).hex() == appendix_hex(name).replace("<21bytes>", FP32_EXAMPLE_HEX)
        assert case["entries"][0]["hex"] == appendix_hex("appendix: FP32 v2 [1.0, 2.5, -3.0]")
    elif name in APPENDIX:
        assert case["hex"] == appendix_hex(name), name
    elif name in APPENDIX_HEADER_BITS:
        b7, b8 = APPENDIX_HEADER_BITS[name]
        assert bytes.fromhex(case["hex"])[7:9] == bytes([b7, b8])
    elif name in APPENDIX_FP8:
        assert case["hex"] == f"{APPENDIX_FP8[name][2]:02x}", name


def dump(cases: list[dict[str, Any]]) -> str:
    """One case per line: readable diffs, no giant vertical lists."""
    lines = [json.dumps(c, ensure_ascii=False, allow_nan=False) for c in cases]
    return "[\n" + ",\n".join(lines) + "\n]\n"


def write_vectors() -> None:
    VECTOR_DIR.mkdir(exist_ok=True)
    for topic in TOPICS:
        (VECTOR_DIR / f"{topic}.json").write_text(dump(build_topic(topic)), encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------


@cache
def load(topic: str) -> list[dict[str, Any]]:
    path = VECTOR_DIR / f"{topic}.json"
    if not path.exists():  # only while writing them for the first time
        return []
    cases: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    return cases


def cases_of(kind: str) -> list[Any]:
    out = []
    for topic in TOPICS:
        for case in load(topic):
            if case.get("kind", "block") == kind:
                out.append(pytest.param(case, id=f"{topic}: {case['name']}"))
    return out


def meta_of(case: dict[str, Any]) -> formats.BlockMeta:
    num = type_number(case["data_type"])
    if "vector_lengths" in case:
        n = len(case["vector_lengths"])
    elif "string_lengths" in case:
        n = len(case["string_lengths"])
    else:
        n = case.get("n_features", len(case.get("values", [])))
    return formats.BlockMeta(
        num,
        n,
        version=case["version"],
        string_lengths=case.get("string_lengths"),
        vector_lengths=case.get("vector_lengths"),
    )


def input_array(case: dict[str, Any]) -> Any:
    """JSON values as the natural Python input: str list, bool array, int64/uint64, float64."""
    values = [from_json(v) for v in case["values"]]
    kind = element_of(type_number(case["data_type"]))
    if kind == "str":
        return values
    if all(isinstance(v, bool) for v in values) and values:
        return np.array(values, dtype=bool)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        if all(-(2**63) <= v < 2**63 for v in values):
            return np.array(values, dtype=np.int64)
        if all(0 <= v < 2**64 for v in values):
            return np.array(values, dtype=np.uint64)
    return np.array([float(v) for v in values], dtype=np.float64)


def flat_values(values: Any) -> list[Any]:
    """Decoded values, whatever their shape (1-D, 2-D, list of per-feature arrays/lists)."""
    if isinstance(values, np.ndarray):
        return list(values.ravel())
    out: list[Any] = []
    for v in values:
        if isinstance(v, (list, np.ndarray)):
            out.extend(flat_values(v))
        else:
            out.append(v)
    return out


def same_value(got: Any, want: Any, kind: str) -> bool:
    """Equality that is exact for floats: bit patterns at the decoded width, NaN by sign only."""
    if kind in FLOAT_ELEMENTS or kind in ("bf16", "q8"):
        g, w = float(got), float(want)
        if math.isnan(w):
            return math.isnan(g) and math.copysign(1, g) == math.copysign(1, w)
        if kind == "fp64":
            return struct.pack("<d", g) == struct.pack("<d", w)
        return struct.pack("<f", g) == struct.pack("<f", w)
    if kind == "bool":
        return isinstance(got, (bool, np.bool_)) and bool(got) == want
    if kind == "str":
        return isinstance(got, str) and got == want
    return int(got) == want


def test_vectors_match_reference_encoder() -> None:
    """The stored JSON is exactly what the independent encoder above derives from the inputs."""
    for topic in TOPICS:
        stored = (VECTOR_DIR / f"{topic}.json").read_text(encoding="utf-8")
        assert stored == dump(build_topic(topic)), (
            f"{topic}.json is stale: run python tests/test_vectors.py --write"
        )


def test_vector_files_cover_every_type_and_appendix() -> None:
    names = {c["name"] for t in TOPICS for c in load(t)}
    for n in [*APPENDIX, *APPENDIX_HEADER_BITS, *APPENDIX_FP8]:
        assert n in names, n
    typed = {c["data_type"] for t in TOPICS for c in load(t) if c.get("kind", "block") == "block"}
    assert typed == set(TYPE_NAMES[1:])
    assert {f"{t}.json" for t in TOPICS} <= {p.name for p in VECTOR_DIR.glob("*.json")}


@pytest.mark.parametrize("case", cases_of("block"))
def test_block(case: dict[str, Any]) -> None:
    meta = meta_of(case)
    kwargs = {
        "expiry_at": case["expiry_at"],
        "now": case["now"],
        "compress": case["compress"],
        "saturate": case.get("saturate", False),
    }
    if "error" in case:
        with pytest.raises(InvalidInputError, match=re.escape(case["error"])):
            formats.encode_block(meta, input_array(case), **kwargs)
        return
    raw = formats.encode_block(meta, input_array(case), **kwargs)
    assert raw.hex() == case["hex"]
    if case["expiry_at"]:
        assert raw[2:7].hex() == case["expiry_hex"]
        assert formats.expiry_encode(case["expiry_at"], now=case["now"]).hex() == case["expiry_hex"]
        assert formats.expiry_decode(bytes.fromhex(case["expiry_hex"])) == case["expiry_at"]
    hdr = formats.read_header(raw)
    assert (hdr.version, hdr.data_type, hdr.layout, hdr.compression) == (
        case["version"],
        type_number(case["data_type"]),
        1,
        0,
    )
    assert hdr.expiry_at == (case["expiry_at"] or None)

    decoded = formats.decode_block(meta, raw, now=case["now"])
    assert decoded.status == "present"
    kind = element_of(type_number(case["data_type"]))
    want = [from_json(v) for v in case.get("decoded", case["values"])]
    got = flat_values(decoded.values)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want, strict=False)):
        assert same_value(g, w, kind), f"value {i}: got {g!r}, want {w!r}"
    assert len(decoded) == len(case["features_hex"])
    for pos, fhex in enumerate(case["features_hex"]):
        assert decoded.feature(pos).hex() == fhex
        assert formats.feature_bytes(meta, raw, pos, now=case["now"]).hex() == fhex
    if case["expiry_at"]:
        assert formats.decode_block(meta, raw, now=case["expiry_at"]).status == "present"
        late = formats.decode_block(meta, raw, now=case["expiry_at"] + 1)
        assert late.status == "expired"
        assert late.values is None
        assert formats.feature_bytes(meta, raw, 0, now=case["expiry_at"] + 1) is None


@pytest.mark.parametrize("case", cases_of("decode"))
def test_decode(case: dict[str, Any]) -> None:
    meta = meta_of(case)
    raw = bytes.fromhex(case["hex"])
    if "error" in case:
        with pytest.raises(CorruptBlockError, match=re.escape(case["error"])):
            formats.decode_block(meta, raw, now=case["now"])
    else:
        decoded = formats.decode_block(meta, raw, now=case["now"])
        assert decoded.status == case["status"]
        if case["status"] == "present":
            kind = element_of(type_number(case["data_type"]))
            got = flat_values(decoded.values)
            assert len(got) == len(case["values"])
            assert all(same_value(g, from_json(w), kind) for g, w in zip(got, case["values"], strict=False))
        else:
            assert decoded.values is None


@pytest.mark.parametrize("case", cases_of("expiry_decode"))
def test_expiry_decode(case: dict[str, Any]) -> None:
    raw = bytes.fromhex(case["expiry_hex"])
    if "error" in case:
        with pytest.raises(CorruptBlockError, match=re.escape(case["error"])):
            formats.expiry_decode(raw)
    else:
        assert formats.expiry_decode(raw) == case["expiry_at"]


def csdb_entries_of(case: dict[str, Any]) -> list[tuple[int, bytes]]:
    return [(e["fg_id"], expand_hex(e["hex"])) for e in case["entries"]]


@pytest.mark.parametrize("case", cases_of("csdb"))
def test_csdb(case: dict[str, Any]) -> None:
    entries = csdb_entries_of(case)
    if "error" in case:
        with pytest.raises(InvalidInputError, match=re.escape(case["error"])):
            formats.csdb_encode(entries, layout=case["layout"])
        return
    value = formats.csdb_encode(entries, layout=case["layout"])
    assert value == expand_hex(case["hex"])
    assert formats.csdb_entries(value) == entries
    if "lookup" in case:
        found = formats.csdb_lookup(value, case["lookup"]["fg_ids"])
        assert found == [None if f is None else expand_hex(f) for f in case["lookup"]["found"]]
    # csdb_encode without a layout picks layout 1 whenever the blocks fit.
    if all(len(b) <= 65535 for _, b in entries) and case["layout"] == 1:
        assert formats.csdb_encode(entries) == value


@pytest.mark.parametrize("case", cases_of("csdb_decode"))
def test_csdb_decode(case: dict[str, Any]) -> None:
    raw = bytes.fromhex(case["hex"])
    with pytest.raises(CorruptBlockError, match=re.escape(case["error"])):
        formats.csdb_entries(raw)
    with pytest.raises(CorruptBlockError, match=re.escape(case["error"])):
        formats.csdb_lookup(raw, [0xFFFF])


@pytest.mark.parametrize("case", cases_of("quantize"))
def test_quantize(case: dict[str, Any]) -> None:
    src = bytes.fromhex(case["src_hex"])
    a, b = type_number(case["from"]), type_number(case["to"])
    if "error" in case:
        with pytest.raises(InvalidInputError, match=re.escape(case["error"])):
            formats.quantize(src, a, b)
    else:
        assert formats.quantize(src, a, b).hex() == case["hex"]


CODECS = {
    "e4m3": (lambda v, s: formats.fp8_e4m3_encode(v, saturate=s), formats.fp8_e4m3_decode, np.uint8),
    "e5m2": (lambda v, s: formats.fp8_e5m2_encode(v, saturate=s), formats.fp8_e5m2_decode, np.uint8),
    "fp16": (lambda v, s: formats.fp16_encode(v, saturate=s), formats.fp16_decode, np.dtype("<u2")),
    "bf16": (lambda v, s: formats.bf16_encode(v, saturate=s), formats.bf16_decode, np.dtype("<u2")),
}


@pytest.mark.parametrize("case", cases_of("codec"))
def test_codec(case: dict[str, Any]) -> None:
    if case["codec"] == "q8":
        xs = np.array([from_json(v) for v in case["values"]], dtype=np.float32)
        codes, scales = formats.q8_encode(xs, saturate=case.get("saturate", False))
        assert codes.shape == (1, len(xs))
        assert scales.shape == (1,)
        assert (scales.astype("<f4").tobytes() + codes.astype(np.int8).tobytes()).hex() == case["hex"]
        cell = bytes.fromhex(case["hex"])
        back = formats.q8_decode(
            np.frombuffer(cell[4:], dtype=np.int8)[None, :], np.frombuffer(cell[:4], "<f4")
        )
        for g, w in zip(back.ravel().tolist(), [from_json(v) for v in case["decoded"]], strict=False):
            assert same_value(g, w, "fp32"), (g, w)
        return
    enc, dec, code_type = CODECS[case["codec"]]
    xs = np.array([from_json(v) for v in case["values"]], dtype=np.float32)
    codes = enc(xs, case.get("saturate", False))
    assert codes.astype(code_type).tobytes().hex() == case["hex"]
    back = dec(np.frombuffer(bytes.fromhex(case["hex"]), dtype=code_type))
    want = [from_json(v) for v in case["decoded"]]
    for g, w in zip(back.tolist(), want, strict=False):
        assert same_value(g, w, "fp32"), (g, w)


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_vectors.py --write")
    write_vectors()
    print(f"wrote {', '.join(f'{t}.json' for t in TOPICS)} to {VECTOR_DIR}")
