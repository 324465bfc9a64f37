//! Bit-exact float32 <-> low-precision conversions used when features are stored narrowed:
//! FP8 E4M3 ("FN": no infinities, `0x7F`/`0xFF` are NaN), FP8 E5M2 (IEEE-like) and IEEE binary16.
//!
//! The FP8 encoders reproduce `PyTorch` c10's `fp8e4m3fn_from_fp32_value` and
//! `fp8e5m2_from_fp32_value` bit for bit, because the reference store writes bytes with ports of
//! those routines and both sides must agree on every stored byte. Range policy (what overflows,
//! what saturating writes clamp to) lives here too, so the write path has one place that knows
//! each format's limits.

use half::f16;
use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};

/// Largest finite E4M3 (FN) value, code `0x7E`.
pub const E4M3_MAX: f32 = 448.0;
/// Largest finite E5M2 value, code `0x7B`.
pub const E5M2_MAX: f32 = 57344.0;
/// Largest finite binary16 value, bits `0x7BFF`.
pub const F16_MAX: f32 = 65504.0;

/// Halfway between `E4M3_MAX` and the next step (480, which is the NaN code): the tie rounds to
/// even (`0x7E`), so only magnitudes strictly above it are lost.
const E4M3_OVERFLOW_ABOVE: f32 = 464.0;
/// Halfway between `E5M2_MAX` (code `0x7B`, odd) and 65536; the tie rounds to even, which is Inf.
const E5M2_OVERFLOW_FROM: f32 = 61440.0;
/// Halfway between `F16_MAX` and 65536; the tie rounds to even, which is Inf.
const F16_OVERFLOW_FROM: f32 = 65520.0;

const SIGN_MASK: u32 = 0x8000_0000;

// E4M3 encode constants (c10 `fp8e4m3fn_from_fp32_value`).
/// 480.0: the first magnitude whose nearest E4M3 pattern is the NaN code, so c10 short-cuts it.
const E4M3_NAN_FROM: u32 = 0x43F0_0000;
/// 2^-6, the smallest normal E4M3 magnitude.
const E4M3_MIN_NORMAL: u32 = 121 << 23;
/// 2^14: adding it puts float32's ulp at 2^-9, the E4M3 subnormal spacing, so the FPU's own
/// round-to-nearest-even does the subnormal rounding.
const E4M3_DENORM_MAGIC: u32 = 141 << 23;
/// Rebias the exponent (127 -> 7) and add just-under-half an E4M3 ulp; the mantissa LSB added
/// separately turns that into round-half-to-even.
const E4M3_REBIAS_ROUND: u32 = 0xC407_FFFF;

// E5M2 encode constants (c10 `fp8e5m2_from_fp32_value`).
/// 65536.0: everything from here on (including Inf) encodes as Inf, and NaN as NaN.
const E5M2_INF_FROM: u32 = 143 << 23;
/// 2^-14, the smallest normal E5M2 magnitude.
const E5M2_MIN_NORMAL: u32 = 113 << 23;
/// 2^7: float32's ulp there is 2^-16, the E5M2 subnormal spacing.
const E5M2_DENORM_MAGIC: u32 = 134 << 23;
/// Rebias (127 -> 15) plus just-under-half an E5M2 ulp.
const E5M2_REBIAS_ROUND: u32 = 0xC80F_FFFF;

/// Encodes `x` as FP8 E4M3 (FN variant), rounding to nearest-even.
///
/// Matches c10 exactly, including its lack of saturation: magnitudes above 464, ±Inf and NaN
/// all become the NaN pattern `0x7F` with the input's sign.
#[inline]
pub fn f32_to_e4m3(x: f32) -> u8 {
    let bits = x.to_bits();
    let m = bits & !SIGN_MASK;
    // All candidates are computed unconditionally and then selected, so the slice loop has no
    // branches and LLVM can vectorise it; a NaN operand in the float add is harmless.
    let subnormal = (f32::from_bits(m) + f32::from_bits(E4M3_DENORM_MAGIC)).to_bits().wrapping_sub(E4M3_DENORM_MAGIC);
    let mant_odd = (m >> 20) & 1;
    let normal = m.wrapping_add(E4M3_REBIAS_ROUND).wrapping_add(mant_odd) >> 20;
    let magnitude = if m >= E4M3_NAN_FROM {
        0x7F
    } else if m < E4M3_MIN_NORMAL {
        subnormal
    } else {
        normal
    };
    (magnitude | ((bits & SIGN_MASK) >> 24)) as u8
}

/// Encodes `x` as FP8 E5M2, rounding to nearest-even; overflow becomes ±Inf (`0x7C`), NaN
/// becomes `0x7F` with the input's sign.
#[inline]
pub fn f32_to_e5m2(x: f32) -> u8 {
    let bits = x.to_bits();
    let m = bits & !SIGN_MASK;
    let subnormal = (f32::from_bits(m) + f32::from_bits(E5M2_DENORM_MAGIC)).to_bits().wrapping_sub(E5M2_DENORM_MAGIC);
    let mant_odd = (m >> 21) & 1;
    let normal = m.wrapping_add(E5M2_REBIAS_ROUND).wrapping_add(mant_odd) >> 21;
    let huge = if m > f32::INFINITY.to_bits() { 0x7F } else { 0x7C };
    let magnitude = if m >= E5M2_INF_FROM {
        huge
    } else if m < E5M2_MIN_NORMAL {
        subnormal
    } else {
        normal
    };
    (magnitude | ((bits & SIGN_MASK) >> 24)) as u8
}

/// Encodes `x` as IEEE binary16 bits, rounding to nearest-even; overflow becomes ±Inf and NaN
/// stays NaN (quiet, top payload bits kept).
#[inline]
pub fn f32_to_f16(x: f32) -> u16 {
    f16::from_f32(x).to_bits()
}

/// Decodes an FP8 E4M3 (FN) byte. `0x7F`/`0xFF` decode to NaN with that sign; every other code
/// is finite (max ±448, min subnormal 2^-9).
#[inline]
pub fn e4m3_to_f32(b: u8) -> f32 {
    f32::from_bits(E4M3_DECODE[b as usize])
}

/// Decodes an FP8 E5M2 byte; exponent 31 gives ±Inf (mantissa 0) or NaN.
#[inline]
pub fn e5m2_to_f32(b: u8) -> f32 {
    f32::from_bits(E5M2_DECODE[b as usize])
}

/// Decodes IEEE binary16 bits (exact: every binary16 value is a float32 value).
#[inline]
pub fn f16_to_f32(b: u16) -> f32 {
    f16::from_bits(b).to_f32()
}

/// True when `x` would be stored as NaN although it is not NaN: |x| > 464 or ±Inf (E4M3 FN
/// has no infinities).
#[inline]
pub fn e4m3_overflows(x: f32) -> bool {
    // NaN compares false, Inf compares true: exactly the policy.
    x.abs() > E4M3_OVERFLOW_ABOVE
}

/// True when a finite `x` would be stored as ±Inf (|x| >= 61440).
#[inline]
pub fn e5m2_overflows(x: f32) -> bool {
    let a = x.abs();
    (E5M2_OVERFLOW_FROM..f32::INFINITY).contains(&a)
}

/// True when a finite `x` would be stored as ±Inf (|x| >= 65520).
#[inline]
pub fn f16_overflows(x: f32) -> bool {
    let a = x.abs();
    (F16_OVERFLOW_FROM..f32::INFINITY).contains(&a)
}

/// Like [`f32_to_e4m3`], but out-of-range magnitudes, ±Inf included, clamp to ±448
/// (`0x7E`/`0xFE`). NaN stays NaN.
#[inline]
pub fn f32_to_e4m3_sat(x: f32) -> u8 {
    // `clamp` passes NaN through, and anything in (448, 464] already rounds to 448.
    f32_to_e4m3(x.clamp(-E4M3_MAX, E4M3_MAX))
}

/// Like [`f32_to_e5m2`], but finite out-of-range magnitudes clamp to ±57344 (`0x7B`/`0xFB`).
/// ±Inf stays ±Inf and NaN stays NaN.
#[inline]
pub fn f32_to_e5m2_sat(x: f32) -> u8 {
    let y = if x.is_infinite() { x } else { x.clamp(-E5M2_MAX, E5M2_MAX) };
    f32_to_e5m2(y)
}

/// Like [`f32_to_f16`], but finite out-of-range magnitudes clamp to ±65504 (`0x7BFF`/`0xFBFF`).
/// ±Inf stays ±Inf and NaN stays NaN.
#[inline]
pub fn f32_to_f16_sat(x: f32) -> u16 {
    let y = if x.is_infinite() { x } else { x.clamp(-F16_MAX, F16_MAX) };
    f32_to_f16(y)
}

/// Encodes `src` into `dst` with [`f32_to_e4m3`].
///
/// # Panics
/// If the slices differ in length.
pub fn encode_e4m3_slice(src: &[f32], dst: &mut [u8]) {
    assert_eq!(src.len(), dst.len(), "encode_e4m3_slice: length mismatch");
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = f32_to_e4m3(s);
    }
}

/// Decodes `src` into `dst` with [`e4m3_to_f32`].
///
/// # Panics
/// If the slices differ in length.
pub fn decode_e4m3_slice(src: &[u8], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "decode_e4m3_slice: length mismatch");
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = e4m3_to_f32(s);
    }
}

/// Encodes `src` into `dst` with [`f32_to_e5m2`].
///
/// # Panics
/// If the slices differ in length.
pub fn encode_e5m2_slice(src: &[f32], dst: &mut [u8]) {
    assert_eq!(src.len(), dst.len(), "encode_e5m2_slice: length mismatch");
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = f32_to_e5m2(s);
    }
}

/// Decodes `src` into `dst` with [`e5m2_to_f32`].
///
/// # Panics
/// If the slices differ in length.
pub fn decode_e5m2_slice(src: &[u8], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "decode_e5m2_slice: length mismatch");
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = e5m2_to_f32(s);
    }
}

/// Encodes `src` into binary16 bits in `dst`, identical to [`f32_to_f16`] per element
/// (uses `half`'s SIMD path where the CPU has one).
///
/// # Panics
/// If the slices differ in length.
pub fn encode_f16_slice(src: &[f32], dst: &mut [u16]) {
    assert_eq!(src.len(), dst.len(), "encode_f16_slice: length mismatch");
    dst.reinterpret_cast_mut::<f16>().convert_from_f32_slice(src);
}

/// Decodes binary16 bits from `src` into `dst`, identical to [`f16_to_f32`] per element.
///
/// # Panics
/// If the slices differ in length.
pub fn decode_f16_slice(src: &[u16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "decode_f16_slice: length mismatch");
    src.reinterpret_cast::<f16>().convert_to_f32_slice(dst);
}

/// Values per step of the little-endian binary16 converters (a 1 KiB stack buffer of bits).
const LE_CHUNK: usize = 512;

/// Decodes little-endian binary16 bytes (`2 × dst.len()` of them) into `dst`.
///
/// # Panics
/// If `src` is not exactly two bytes per value of `dst`.
pub fn decode_f16_le(src: &[u8], dst: &mut [f32]) {
    assert_eq!(src.len(), 2 * dst.len(), "decode_f16_le: length mismatch");
    // Through a u16 buffer, so `half`'s SIMD slice conversion does the work (a call per value of its
    // scalar conversion costs ~4× as much).
    let mut bits = [0u16; LE_CHUNK];
    for (s, d) in src.chunks(2 * LE_CHUNK).zip(dst.chunks_mut(LE_CHUNK)) {
        let n = d.len();
        for (b, c) in bits[..n].iter_mut().zip(s.chunks_exact(2)) {
            *b = u16::from_le_bytes([c[0], c[1]]);
        }
        decode_f16_slice(&bits[..n], d);
    }
}

/// Encodes `src` as little-endian binary16 bytes appended to `out` (through `half`'s SIMD slice path).
pub fn encode_f16_le(src: &[f32], out: &mut Vec<u8>) {
    let mut bits = [0u16; LE_CHUNK];
    for s in src.chunks(LE_CHUNK) {
        let n = s.len();
        encode_f16_slice(s, &mut bits[..n]);
        for b in &bits[..n] {
            out.extend_from_slice(&b.to_le_bytes());
        }
    }
}

/// float32 bits of every E4M3 code, built with integer arithmetic so it stays a `const` on the
/// crate's minimum Rust version (float arithmetic in `const fn` is newer).
static E4M3_DECODE: [u32; 256] = build_table(Fp8::E4M3);
/// float32 bits of every E5M2 code.
static E5M2_DECODE: [u32; 256] = build_table(Fp8::E5M2);

#[derive(Clone, Copy)]
enum Fp8 {
    E4M3,
    E5M2,
}

const fn build_table(format: Fp8) -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = match format {
            Fp8::E4M3 => e4m3_bits(i as u8),
            Fp8::E5M2 => e5m2_bits(i as u8),
        };
        i += 1;
    }
    table
}

/// float32 bits of `man * 2^(biased_scale - 127)` for a small `man > 0` (an FP8 subnormal):
/// the leading one becomes float32's implicit bit and the rest shifts up into its mantissa.
const fn renormalise(man: u32, biased_scale: u32) -> u32 {
    let top = man.ilog2();
    ((top + biased_scale) << 23) | ((man << (23 - top)) & 0x007F_FFFF)
}

const fn e4m3_bits(b: u8) -> u32 {
    let sign = ((b & 0x80) as u32) << 24;
    let mag = (b & 0x7F) as u32;
    let exp = mag >> 3;
    let man = mag & 0x7;
    if mag == 0x7F {
        // The NaN that c10's branch-free decoder produces; kept so decoded bits match it too.
        sign | 0x7FF0_0000
    } else if mag == 0 {
        sign
    } else if exp == 0 {
        // (man / 8) * 2^-6 = man * 2^-9.
        sign | renormalise(man, 127 - 9)
    } else {
        sign | ((exp + (127 - 7)) << 23) | (man << 20)
    }
}

const fn e5m2_bits(b: u8) -> u32 {
    let sign = ((b & 0x80) as u32) << 24;
    let mag = (b & 0x7F) as u32;
    let exp = mag >> 2;
    let man = mag & 0x3;
    if exp == 31 {
        if man == 0 {
            sign | 0x7F80_0000
        } else {
            // Same quiet NaN (payload kept) that widening the byte as binary16's top half gives.
            sign | 0x7FC0_0000 | (man << 21)
        }
    } else if mag == 0 {
        sign
    } else if exp == 0 {
        // (man / 4) * 2^-14 = man * 2^-16.
        sign | renormalise(man, 127 - 16)
    } else {
        sign | ((exp + (127 - 15)) << 23) | (man << 21)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---------------------------------------------------------------------------------------
    // Independent reference: code values from the format definitions (in f64), the midpoint
    // between each pair of neighbours turned into a float32 threshold with ties going to the
    // even code, then the overflow policy. Shares nothing with the fast encoders.
    // ---------------------------------------------------------------------------------------

    /// What a format does with values past its largest finite magnitude.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Overflow {
        ToNan,
        ToInf,
    }

    struct RefFormat {
        /// `upper[c]`: the largest float32 magnitude, as bits, that rounds to magnitude code `c`,
        /// for every finite code in ascending order. Anything above the last one overflows.
        /// (Non-NaN float32 magnitudes order the same way as their bit patterns.)
        upper: Vec<u32>,
        sign_bit: u32,
        overflow: Overflow,
        /// The magnitude code that overflow produces.
        overflow_code: u32,
        /// Encoding of a NaN input with float32 bits `bits` (sign included).
        nan: fn(u32) -> u32,
    }

    fn pow2(k: i32) -> f64 {
        f64::from_bits(((1023 + k) as u64) << 52)
    }

    /// The value a magnitude code has under the usual binary-float reading.
    fn code_value(code: u32, mbits: u32, bias: i32) -> f64 {
        let exp = (code >> mbits) as i32;
        let man = f64::from(code & ((1 << mbits) - 1));
        let mbits = mbits as i32;
        if exp == 0 {
            man * pow2(1 - bias - mbits)
        } else {
            (pow2(mbits) + man) * pow2(exp - bias - mbits)
        }
    }

    impl RefFormat {
        fn new(
            mbits: u32,
            bias: i32,
            max_finite_code: u32,
            sign_bit: u32,
            overflow: Overflow,
            overflow_code: u32,
            nan: fn(u32) -> u32,
        ) -> Self {
            // The finite codes plus the step just past the largest one, read as plain binary
            // floats; rounding towards that extra step is what overflow means.
            let values = (0..=max_finite_code + 1).map(|c| code_value(c, mbits, bias)).collect::<Vec<_>>();
            assert!(values.windows(2).all(|w| w[0] < w[1]));
            let upper = values
                .windows(2)
                .enumerate()
                .map(|(code, w)| {
                    // Nearest wins; exactly halfway, the even code (even mantissa LSB) wins.
                    let mid = (w[0] + w[1]) / 2.0;
                    let mid32 = mid as f32;
                    assert_eq!(f64::from(mid32).to_bits(), mid.to_bits(), "midpoint {mid}");
                    if code % 2 == 0 {
                        mid32.to_bits()
                    } else {
                        mid32.to_bits() - 1
                    }
                })
                .collect();
            RefFormat { upper, sign_bit, overflow, overflow_code, nan }
        }

        fn e4m3() -> Self {
            Self::new(3, 7, 0x7E, 0x80, Overflow::ToNan, 0x7F, |b| 0x7F | ((b >> 24) & 0x80))
        }

        fn e5m2() -> Self {
            Self::new(2, 15, 0x7B, 0x80, Overflow::ToInf, 0x7C, |b| 0x7F | ((b >> 24) & 0x80))
        }

        fn f16() -> Self {
            // IEEE: quiet the NaN and keep the top ten payload bits.
            Self::new(10, 15, 0x7BFF, 0x8000, Overflow::ToInf, 0x7C00, |b| {
                ((b >> 16) & 0x8000) | 0x7E00 | ((b & 0x007F_FFFF) >> 13)
            })
        }

        fn encode(&self, x: f32) -> u32 {
            self.encode_hinted(x, &mut 0)
        }

        /// `hint` remembers the last code found; inputs that arrive in order (consecutive bit
        /// patterns) nearly always map to the same code, which keeps the exhaustive runs fast.
        /// Any hint gives the same answer.
        fn encode_hinted(&self, x: f32, hint: &mut usize) -> u32 {
            if x.is_nan() {
                return (self.nan)(x.to_bits());
            }
            let sign = if x.is_sign_negative() { self.sign_bit } else { 0 };
            let m = x.to_bits() & !SIGN_MASK;
            let u = &self.upper;
            // Code c takes the magnitudes in (upper[c - 1], upper[c]]; c == len is overflow.
            let takes = |c: usize| (c == u.len() || m <= u[c]) && (c == 0 || u[c - 1] < m);
            let code = if *hint <= u.len() && takes(*hint) { *hint } else { u.partition_point(|&t| t < m) };
            *hint = code;
            if code == u.len() {
                sign | self.overflow_code
            } else {
                sign | code as u32
            }
        }

        /// `want[k] = encode(f32::from_bits(first + k))`, a code-run at a time: every pattern
        /// from the current one up to its code's upper bound shares that code. Runs end inside
        /// the same sign, since no bound exceeds the Inf pattern.
        fn encode_consecutive(&self, first: u32, want: &mut [u32]) {
            let mut hint = 0;
            let mut k = 0;
            while k < want.len() {
                let bits = first + k as u32;
                let x = f32::from_bits(bits);
                let code = self.encode_hinted(x, &mut hint);
                let run = if x.is_nan() {
                    1
                } else {
                    let top = self.upper.get(hint).copied().unwrap_or(0x7F80_0000);
                    (top - (bits & !SIGN_MASK)) as usize + 1
                };
                let end = (k + run).min(want.len());
                want[k..end].fill(code);
                k = end;
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // One harness for all three formats: scalar vs reference, slice vs scalar, the overflow
    // predicate vs what the encoder actually produced, and the saturating variant.
    // ---------------------------------------------------------------------------------------

    /// One format under test. Static dispatch matters: the exhaustive runs make billions of
    /// calls, and through function pointers nothing would inline.
    trait Codec {
        type Code: Copy + Default + Into<u32> + TryFrom<u32> + Send + Sync;
        const NAME: &'static str;
        const MAX_FINITE_CODE: u32;
        fn encode(x: f32) -> Self::Code;
        fn encode_sat(x: f32) -> Self::Code;
        fn overflows(x: f32) -> bool;
        fn encode_slice(src: &[f32], dst: &mut [Self::Code]);
        fn decode(code: Self::Code) -> f32;
        fn reference() -> RefFormat;
    }

    struct E4m3;
    struct E5m2;
    struct F16;

    impl Codec for E4m3 {
        type Code = u8;
        const NAME: &'static str = "e4m3";
        const MAX_FINITE_CODE: u32 = 0x7E;
        fn encode(x: f32) -> u8 {
            f32_to_e4m3(x)
        }
        fn encode_sat(x: f32) -> u8 {
            f32_to_e4m3_sat(x)
        }
        fn overflows(x: f32) -> bool {
            e4m3_overflows(x)
        }
        fn encode_slice(src: &[f32], dst: &mut [u8]) {
            encode_e4m3_slice(src, dst);
        }
        fn decode(code: u8) -> f32 {
            e4m3_to_f32(code)
        }
        fn reference() -> RefFormat {
            RefFormat::e4m3()
        }
    }

    impl Codec for E5m2 {
        type Code = u8;
        const NAME: &'static str = "e5m2";
        const MAX_FINITE_CODE: u32 = 0x7B;
        fn encode(x: f32) -> u8 {
            f32_to_e5m2(x)
        }
        fn encode_sat(x: f32) -> u8 {
            f32_to_e5m2_sat(x)
        }
        fn overflows(x: f32) -> bool {
            e5m2_overflows(x)
        }
        fn encode_slice(src: &[f32], dst: &mut [u8]) {
            encode_e5m2_slice(src, dst);
        }
        fn decode(code: u8) -> f32 {
            e5m2_to_f32(code)
        }
        fn reference() -> RefFormat {
            RefFormat::e5m2()
        }
    }

    impl Codec for F16 {
        type Code = u16;
        const NAME: &'static str = "f16";
        const MAX_FINITE_CODE: u32 = 0x7BFF;
        fn encode(x: f32) -> u16 {
            f32_to_f16(x)
        }
        fn encode_sat(x: f32) -> u16 {
            f32_to_f16_sat(x)
        }
        fn overflows(x: f32) -> bool {
            f16_overflows(x)
        }
        fn encode_slice(src: &[f32], dst: &mut [u16]) {
            encode_f16_slice(src, dst);
        }
        fn decode(code: u16) -> f32 {
            f16_to_f32(code)
        }
        fn reference() -> RefFormat {
            RefFormat::f16()
        }
    }

    #[derive(Default)]
    struct Report {
        checked: u64,
        failures: u64,
        examples: Vec<String>,
    }

    impl Report {
        fn fail(&mut self, what: &str, bits: u32, got: u32, want: u32) {
            self.failures += 1;
            if self.examples.len() < 12 {
                self.examples.push(format!("{what}: x=0x{bits:08X} got 0x{got:X} want 0x{want:X}"));
            }
        }

        fn merge(&mut self, other: Report) {
            self.checked += other.checked;
            self.failures += other.failures;
            let room = 12usize.saturating_sub(self.examples.len());
            self.examples.extend(other.examples.into_iter().take(room));
        }
    }

    /// Small enough that a chunk and its outputs stay in L1 between the passes over it.
    const CHUNK: usize = 1 << 12;

    /// The codes whose decoding shows the overflow outcome (NaN for E4M3, Inf otherwise): one
    /// per sign. Found through `decode` rather than written down, so the overflow check leans on
    /// the decoder, which the all-codes tests pin separately.
    fn lost_codes<F: Codec>(reference: &RefFormat) -> [u32; 2] {
        let codes = 1u32 << (8 * std::mem::size_of::<F::Code>());
        let lost: Vec<u32> = (0..codes)
            .filter(|&c| {
                let Ok(code) = F::Code::try_from(c) else { unreachable!("code {c} out of range") };
                let x = F::decode(code);
                match reference.overflow {
                    Overflow::ToNan => x.is_nan(),
                    Overflow::ToInf => x.is_infinite(),
                }
            })
            .collect();
        assert_eq!(lost.len(), 2, "{}: one overflow code per sign", F::NAME);
        [lost[0], lost[1]]
    }

    /// Checks the `count` bit patterns `first, first + stride, ...` (callers stay inside u32).
    ///
    /// Each function under test runs over the whole chunk in its own tight loop (so it
    /// vectorises as in production), a branch-free pass decides whether the chunk is clean, and
    /// only a dirty chunk is walked again element by element to say what went wrong.
    // Non-short-circuit `&`/`|` on bools keep that verdict pass branch-free and vectorised.
    #[allow(clippy::needless_bitwise_bool)]
    fn check_patterns<F: Codec>(reference: &RefFormat, first: u64, count: u64, stride: u64) -> Report {
        let lost = lost_codes::<F>(reference);
        let mut report = Report::default();
        let mut src = [0f32; CHUNK];
        let mut from_slice = [F::Code::default(); CHUNK];
        let mut scalar = [F::Code::default(); CHUNK];
        let mut sat = [F::Code::default(); CHUNK];
        let mut want = [0u32; CHUNK];
        let mut hint = 0;
        let mut done = 0u64;
        while done < count {
            let n = (count - done).min(CHUNK as u64) as usize;
            let src = &mut src[..n];
            let from_slice = &mut from_slice[..n];
            let scalar = &mut scalar[..n];
            let sat = &mut sat[..n];
            let want = &mut want[..n];
            for (i, s) in src.iter_mut().enumerate() {
                *s = f32::from_bits((first + (done + i as u64) * stride) as u32);
            }
            F::encode_slice(src, from_slice);
            for (o, &x) in scalar.iter_mut().zip(src.iter()) {
                *o = F::encode(x);
            }
            for (o, &x) in sat.iter_mut().zip(src.iter()) {
                *o = F::encode_sat(x);
            }
            if stride == 1 {
                reference.encode_consecutive((first + done) as u32, want);
            } else {
                for (w, &x) in want.iter_mut().zip(src.iter()) {
                    *w = reference.encode_hinted(x, &mut hint);
                }
            }
            let mut clean = true;
            for i in 0..n {
                let x = src[i];
                let got: u32 = scalar[i].into();
                let lost = ((got == lost[0]) | (got == lost[1]))
                    & match reference.overflow {
                        Overflow::ToNan => !x.is_nan(),
                        Overflow::ToInf => x.is_finite(),
                    };
                let predicted = F::overflows(x);
                let sat_want = if predicted { F::MAX_FINITE_CODE | (got & reference.sign_bit) } else { got };
                clean &= (from_slice[i].into() == got)
                    & (got == want[i])
                    & (predicted == lost)
                    & (sat[i].into() == sat_want);
            }
            if !clean {
                let before = report.failures;
                for (&x, &s) in src.iter().zip(from_slice.iter()) {
                    check_one::<F>(reference, x, s.into(), &mut report);
                }
                if report.failures == before {
                    // The two passes must agree; never let a flagged chunk pass silently.
                    report.fail("fast pass flagged a clean chunk", src[0].to_bits(), 0, 0);
                }
            }
            report.checked += n as u64;
            done += n as u64;
        }
        report
    }

    fn check_one<F: Codec>(reference: &RefFormat, x: f32, from_slice: u32, report: &mut Report) {
        let bits = x.to_bits();
        let code = F::encode(x);
        let got: u32 = code.into();
        if from_slice != got {
            report.fail("slice != scalar", bits, from_slice, got);
        }
        let want = reference.encode(x);
        if got != want {
            report.fail("scalar != reference", bits, got, want);
        }
        let decoded = F::decode(code);
        let lost = match reference.overflow {
            Overflow::ToNan => !x.is_nan() && decoded.is_nan(),
            Overflow::ToInf => x.is_finite() && decoded.is_infinite(),
        };
        let predicted = F::overflows(x);
        if predicted != lost {
            report.fail("overflows predicate", bits, u32::from(predicted), u32::from(lost));
        }
        let sat: u32 = F::encode_sat(x).into();
        let sat_want = if predicted { F::MAX_FINITE_CODE | (got & reference.sign_bit) } else { got };
        if sat != sat_want {
            report.fail("saturating", bits, sat, sat_want);
        }
    }

    fn assert_clean(name: &str, report: &Report) {
        assert!(
            report.failures == 0,
            "{name}: {} of {} patterns failed:\n{}",
            report.failures,
            report.checked,
            report.examples.join("\n")
        );
    }

    /// Every float32 bit pattern, split over two threads.
    fn exhaustive<F: Codec>() {
        let reference = &F::reference();
        let half_range = 1u64 << 31;
        let mut total = Report::default();
        std::thread::scope(|s| {
            let handles =
                [0, half_range].map(|first| s.spawn(move || check_patterns::<F>(reference, first, half_range, 1)));
            for h in handles {
                total.merge(h.join().expect("checker thread panicked"));
            }
        });
        assert_eq!(total.checked, 1u64 << 32);
        assert_clean(F::NAME, &total);
    }

    /// A spread of patterns across the whole space, cheap enough for debug builds.
    fn sampled<F: Codec>() {
        const STRIDE: u64 = 4099;
        let count = u64::from(u32::MAX) / STRIDE + 1;
        let report = check_patterns::<F>(&F::reference(), 0, count, STRIDE);
        assert_clean(F::NAME, &report);
    }

    #[test]
    #[ignore = "exhaustive: run with cargo test --release -- --ignored"]
    fn e4m3_exhaustive() {
        exhaustive::<E4m3>();
    }

    #[test]
    #[ignore = "exhaustive: run with cargo test --release -- --ignored"]
    fn e5m2_exhaustive() {
        exhaustive::<E5m2>();
    }

    #[test]
    #[ignore = "exhaustive: run with cargo test --release -- --ignored"]
    fn f16_exhaustive() {
        exhaustive::<F16>();
    }

    #[test]
    fn e4m3_sampled() {
        sampled::<E4m3>();
    }

    #[test]
    fn e5m2_sampled() {
        sampled::<E5m2>();
    }

    #[test]
    fn f16_sampled() {
        sampled::<F16>();
    }

    /// Checks an arbitrary list of inputs element by element.
    fn check_list<F: Codec>(reference: &RefFormat, xs: &[f32]) -> Report {
        let mut from_slice = vec![F::Code::default(); xs.len()];
        F::encode_slice(xs, &mut from_slice);
        let mut report = Report::default();
        for (&x, &s) in xs.iter().zip(&from_slice) {
            check_one::<F>(reference, x, s.into(), &mut report);
        }
        report.checked = xs.len() as u64;
        report
    }

    /// Every rounding decision point of a format (each midpoint between neighbouring codes,
    /// where ties-to-even applies) and two float32 steps either side, both signs. Ties are too
    /// rare for the sample to hit reliably.
    fn rounding_edges<F: Codec>() {
        let reference = F::reference();
        let xs: Vec<f32> = reference
            .upper
            .iter()
            .flat_map(|&t| t - 2..=t + 2)
            .flat_map(|b| [b, b | SIGN_MASK])
            .map(f32::from_bits)
            .collect();
        assert_clean(F::NAME, &check_list::<F>(&reference, &xs));
    }

    #[test]
    fn rounding_edges_all_formats() {
        rounding_edges::<E4m3>();
        rounding_edges::<E5m2>();
        rounding_edges::<F16>();
    }

    /// Patterns around every boundary the encoders branch on, where a sparse sample could miss.
    #[test]
    fn boundary_neighbourhoods() {
        let refs = (E4m3::reference(), E5m2::reference(), F16::reference());
        let centres = [
            0u32,
            E4M3_MIN_NORMAL,
            E4M3_NAN_FROM,
            E5M2_MIN_NORMAL,
            E5M2_INF_FROM,
            E4M3_OVERFLOW_ABOVE.to_bits(),
            E5M2_OVERFLOW_FROM.to_bits(),
            F16_OVERFLOW_FROM.to_bits(),
            E4M3_MAX.to_bits(),
            E5M2_MAX.to_bits(),
            F16_MAX.to_bits(),
            (2f32).powi(-10).to_bits(),
            (2f32).powi(-17).to_bits(),
            (2f32).powi(-25).to_bits(),
            0x3880_0000, // 2^-14, binary16's smallest normal
            0x7F80_0000,
        ];
        for centre in centres {
            for sign in [0, SIGN_MASK] {
                let first = u64::from(centre.saturating_sub(512) | sign);
                assert_clean("e4m3", &check_patterns::<E4m3>(&refs.0, first, 1024, 1));
                assert_clean("e5m2", &check_patterns::<E5m2>(&refs.1, first, 1024, 1));
                assert_clean("f16", &check_patterns::<F16>(&refs.2, first, 1024, 1));
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // Fixed check values from the reference system's facts.
    // ---------------------------------------------------------------------------------------

    #[test]
    fn e4m3_check_values() {
        assert_eq!(f32_to_e4m3(448.0), 0x7E);
        assert_eq!(f32_to_e4m3(464.0), 0x7E);
        assert_eq!(f32_to_e4m3(479.9), 0x7F);
        assert_eq!(f32_to_e4m3(480.0), 0x7F);
        assert_eq!(f32_to_e4m3(1.0e6), 0x7F);
        assert_eq!(f32_to_e4m3(f32::INFINITY), 0x7F);
        assert_eq!(f32_to_e4m3(f32::NEG_INFINITY), 0xFF);
        assert_eq!(f32_to_e4m3(f32::NAN), 0x7F);
        assert_eq!(f32_to_e4m3(1.0), 0x38);
        assert_eq!(f32_to_e4m3(-2.0), 0xC0);
        assert_eq!(f32_to_e4m3(2f32.powi(-9)), 0x01);
        assert_eq!(f32_to_e4m3(1.0e-4), 0x00);
        assert_eq!(f32_to_e4m3(-0.0), 0x80);
    }

    #[test]
    fn e5m2_check_values() {
        assert_eq!(f32_to_e5m2(1.0), 0x3C);
        assert_eq!(f32_to_e5m2(57344.0), 0x7B);
        assert_eq!(f32_to_e5m2(61439.0), 0x7B);
        assert_eq!(f32_to_e5m2(61440.0), 0x7C);
        assert_eq!(f32_to_e5m2(65536.0), 0x7C);
        assert_eq!(f32_to_e5m2(f32::INFINITY), 0x7C);
        assert_eq!(f32_to_e5m2(f32::NEG_INFINITY), 0xFC);
        assert_eq!(f32_to_e5m2(f32::NAN), 0x7F);
        assert_eq!(f32_to_e5m2(-f32::NAN), 0xFF);
        assert_eq!(f32_to_e5m2(2f32.powi(-16)), 0x01);
        assert_eq!(f32_to_e5m2(-0.0), 0x80);
    }

    #[test]
    fn f16_check_values() {
        assert_eq!(f32_to_f16(1.0), 0x3C00);
        assert_eq!(f32_to_f16(65504.0), 0x7BFF);
        assert_eq!(f32_to_f16(65519.0), 0x7BFF);
        assert_eq!(f32_to_f16(65520.0), 0x7C00);
        assert_eq!(f32_to_f16(f32::NEG_INFINITY), 0xFC00);
        assert_eq!(f32_to_f16(2f32.powi(-24)), 0x0001);
        assert!(f16_to_f32(f32_to_f16(f32::NAN)).is_nan());
        assert_eq!(f16_to_f32(0x7BFF).to_bits(), F16_MAX.to_bits());
    }

    #[test]
    fn overflow_and_saturation_policy() {
        assert!(!e4m3_overflows(464.0));
        assert!(e4m3_overflows(464.000_03));
        assert!(e4m3_overflows(f32::NEG_INFINITY));
        assert!(!e4m3_overflows(f32::NAN));
        assert!(!e5m2_overflows(61439.0));
        assert!(e5m2_overflows(-61440.0));
        assert!(!e5m2_overflows(f32::INFINITY));
        assert!(!f16_overflows(65519.0));
        assert!(f16_overflows(65520.0));
        assert!(!f16_overflows(f32::INFINITY));

        assert_eq!(f32_to_e4m3_sat(500.0), 0x7E);
        assert_eq!(f32_to_e4m3_sat(f32::NEG_INFINITY), 0xFE);
        assert_eq!(f32_to_e4m3_sat(-1.0), 0xB8);
        assert!(e4m3_to_f32(f32_to_e4m3_sat(f32::NAN)).is_nan());
        assert_eq!(f32_to_e5m2_sat(1.0e9), 0x7B);
        assert_eq!(f32_to_e5m2_sat(-1.0e9), 0xFB);
        assert_eq!(f32_to_e5m2_sat(f32::INFINITY), 0x7C);
        assert_eq!(f32_to_e5m2_sat(-f32::NAN), 0xFF);
        assert_eq!(f32_to_f16_sat(1.0e9), 0x7BFF);
        assert_eq!(f32_to_f16_sat(-1.0e9), 0xFBFF);
        assert_eq!(f32_to_f16_sat(f32::NEG_INFINITY), 0xFC00);
        assert!(f16_to_f32(f32_to_f16_sat(f32::NAN)).is_nan());
        assert_eq!(E4M3_MAX.to_bits(), e4m3_to_f32(0x7E).to_bits());
        assert_eq!(E5M2_MAX.to_bits(), e5m2_to_f32(0x7B).to_bits());
    }

    // ---------------------------------------------------------------------------------------
    // Decoding: all 256 codes of each FP8 format.
    // ---------------------------------------------------------------------------------------

    fn signed(b: u8, magnitude: f64) -> f64 {
        if b & 0x80 == 0 {
            magnitude
        } else {
            -magnitude
        }
    }

    #[test]
    fn e4m3_decode_all_codes() {
        for b in 0..=255u8 {
            let x = e4m3_to_f32(b);
            assert_eq!(x.is_sign_negative(), b & 0x80 != 0, "sign of 0x{b:02X}");
            if b & 0x7F == 0x7F {
                assert!(x.is_nan(), "0x{b:02X} must be NaN");
                continue;
            }
            assert!(x.is_finite(), "0x{b:02X} must be finite");
            let want = signed(b, code_value(u32::from(b & 0x7F), 3, 7));
            assert_eq!(f64::from(x).to_bits(), want.to_bits(), "value of 0x{b:02X}");
            assert_eq!(f32_to_e4m3(x), b, "round trip of 0x{b:02X}");
        }
        assert_eq!(e4m3_to_f32(0x01).to_bits(), 2f32.powi(-9).to_bits());
        assert_eq!(e4m3_to_f32(0x7E).to_bits(), 448f32.to_bits());
    }

    #[test]
    fn e5m2_decode_all_codes() {
        for b in 0..=255u8 {
            let x = e5m2_to_f32(b);
            assert_eq!(x.is_sign_negative(), b & 0x80 != 0, "sign of 0x{b:02X}");
            // E5M2 is binary16 with the low byte dropped, so half's widening is a second oracle.
            let widened = f16::from_bits(u16::from(b) << 8).to_f32();
            assert_eq!(x.to_bits(), widened.to_bits(), "0x{b:02X} vs binary16");
            let mag = b & 0x7F;
            if mag > 0x7C {
                assert!(x.is_nan(), "0x{b:02X} must be NaN");
                continue;
            }
            if mag == 0x7C {
                assert!(x.is_infinite(), "0x{b:02X} must be Inf");
            } else {
                assert!(x.is_finite(), "0x{b:02X} must be finite");
                let want = signed(b, code_value(u32::from(mag), 2, 15));
                assert_eq!(f64::from(x).to_bits(), want.to_bits(), "value of 0x{b:02X}");
            }
            assert_eq!(f32_to_e5m2(x), b, "round trip of 0x{b:02X}");
        }
    }

    /// c10's branch-free E4M3 decoder, restated, must give the same bits for every code
    /// (NaN included) so decoded output matches the reference bit for bit.
    #[test]
    fn e4m3_decode_matches_c10_formula() {
        for b in 0..=255u8 {
            let w = u32::from(b) << 24;
            let sign = w & SIGN_MASK;
            let nonsign = w & !SIGN_MASK;
            let lz = nonsign.leading_zeros();
            let shift = lz.saturating_sub(4);
            let inf_nan = (((nonsign.wrapping_add(0x0100_0000)) as i32 >> 8) as u32) & 0x7F80_0000;
            let zero = ((nonsign.wrapping_sub(1)) as i32 >> 31) as u32;
            let c10 = sign
                | ((((nonsign << shift) >> 4).wrapping_add((0x78u32.wrapping_sub(shift)) << 23) | inf_nan) & !zero);
            assert_eq!(e4m3_to_f32(b).to_bits(), c10, "0x{b:02X}");
        }
    }

    #[test]
    fn decode_slices_match_scalar() {
        let bytes: Vec<u8> = (0..=255).collect();
        let mut out = vec![0f32; 256];
        decode_e4m3_slice(&bytes, &mut out);
        for (&b, x) in bytes.iter().zip(&out) {
            assert_eq!(x.to_bits(), e4m3_to_f32(b).to_bits());
        }
        decode_e5m2_slice(&bytes, &mut out);
        for (&b, x) in bytes.iter().zip(&out) {
            assert_eq!(x.to_bits(), e5m2_to_f32(b).to_bits());
        }
        // Every binary16 pattern, at odd lengths so SIMD remainders are exercised.
        let halves: Vec<u16> = (0..=u16::MAX).collect();
        let mut wide = vec![0f32; halves.len()];
        for chunk in [1usize, 3, 7, 13, 4096] {
            for (src, dst) in halves.chunks(chunk).zip(wide.chunks_mut(chunk)) {
                decode_f16_slice(src, dst);
            }
            for (&h, x) in halves.iter().zip(&wide) {
                assert_eq!(x.to_bits(), f16_to_f32(h).to_bits(), "0x{h:04X}");
                if !x.is_nan() {
                    assert_eq!(f32_to_f16(*x), h, "round trip 0x{h:04X}");
                }
            }
        }
    }

    #[test]
    fn short_and_odd_length_slices() {
        let src: Vec<f32> = (0..37u8).map(|i| f32::from(i) * 13.7 - 200.0).collect();
        for len in 0..src.len() {
            let mut a = vec![0u8; len];
            encode_e4m3_slice(&src[..len], &mut a);
            assert!(a.iter().zip(&src).all(|(&c, &x)| c == f32_to_e4m3(x)));
            encode_e5m2_slice(&src[..len], &mut a);
            assert!(a.iter().zip(&src).all(|(&c, &x)| c == f32_to_e5m2(x)));
            let mut h = vec![0u16; len];
            encode_f16_slice(&src[..len], &mut h);
            assert!(h.iter().zip(&src).all(|(&c, &x)| c == f32_to_f16(x)));
        }
    }

    #[test]
    fn little_endian_byte_forms_match_the_slices() {
        let xs: Vec<f32> = (0..1300).map(|i| (i as f32 - 650.0) * 0.37).collect();
        let mut le = Vec::new();
        encode_f16_le(&xs, &mut le);
        let mut bits = vec![0u16; xs.len()];
        encode_f16_slice(&xs, &mut bits);
        assert_eq!(le, bits.iter().flat_map(|b| b.to_le_bytes()).collect::<Vec<_>>());
        let mut back = vec![0f32; xs.len()];
        decode_f16_le(&le, &mut back);
        assert!(back.iter().zip(&bits).all(|(x, &b)| x.to_bits() == f16_to_f32(b).to_bits()));
    }

    #[test]
    #[should_panic(expected = "length mismatch")]
    fn slice_length_mismatch_panics() {
        encode_e4m3_slice(&[1.0, 2.0], &mut [0u8; 1]);
    }
}
