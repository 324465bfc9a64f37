//! bfloat16 (`DataTypeBF16`, `DataTypeBF16Vector`, this project's extensions): the top 16 bits of a
//! float32, so float32's whole range in half the bytes with a 7-bit mantissa. The default training
//! and serving precision of most current models, hence what their embeddings come out as.
//!
//! float32 → bf16 rounds to nearest, ties to even. NaN stays NaN: it becomes the canonical quiet NaN
//! with the input's sign (`0x7FC0` / `0xFFC0`; plain truncation could turn a NaN whose payload sits
//! in the low bits into Inf), exactly as `ml_dtypes.bfloat16` converts, so our bytes equal
//! `x.astype(ml_dtypes.bfloat16)`'s for every float32. bf16 → float32 is exact (16 zero bits
//! appended). Finite values from
//! 2^128 − 2^119 (the midpoint between the largest bf16, 0x7F7F ≈ 3.3895e38, and 2^128) up round to
//! ±Inf; the write path refuses them unless it saturates to ±0x7F7F. Both directions are branch-free
//! per element, so the slice loops vectorise.

/// bits of the largest finite bfloat16 magnitude, ≈ 3.3895314e38.
pub const BF16_MAX_BITS: u16 = 0x7F7F;

const SIGN: u32 = 0x8000_0000;
const INF_BITS: u32 = 0x7F80_0000;
/// float32 magnitude bits from which a finite value rounds to Inf: halfway between `0x7F7F_0000` and
/// `0x7F80_0000`, a tie whose even neighbour is Inf.
const OVERFLOW_FROM: u32 = 0x7F7F_8000;

/// Encodes `x` as bfloat16 bits, rounding to nearest-even; overflow becomes ±Inf, NaN stays NaN.
#[inline]
pub fn f32_to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    // Adding 0x7FFF plus the kept LSB rounds the dropped half to nearest, ties to even; a carry out of
    // the mantissa bumps the exponent, which is exactly the next bf16 up (Inf after the largest).
    let rounded = bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) >> 16;
    let quiet_nan = ((bits >> 16) & 0x8000) | 0x7FC0;
    (if bits & !SIGN > INF_BITS { quiet_nan } else { rounded }) as u16
}

/// Decodes bfloat16 bits (exact: every bfloat16 value is a float32 value).
#[inline]
pub fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits(u32::from(b) << 16)
}

/// True when a finite `x` would be stored as ±Inf (|x| ≥ 2^128 − 2^119).
#[inline]
pub fn bf16_overflows(x: f32) -> bool {
    let m = x.to_bits() & !SIGN;
    (OVERFLOW_FROM..INF_BITS).contains(&m)
}

/// Like [`f32_to_bf16`], but finite out-of-range magnitudes clamp to ±0x7F7F. ±Inf stays ±Inf and
/// NaN stays NaN.
#[inline]
pub fn f32_to_bf16_sat(x: f32) -> u16 {
    if bf16_overflows(x) {
        ((x.to_bits() & SIGN) >> 16) as u16 | BF16_MAX_BITS
    } else {
        f32_to_bf16(x)
    }
}

/// Encodes `src` into `dst` with [`f32_to_bf16`].
///
/// # Panics
/// If the slices differ in length.
pub fn encode_bf16_slice(src: &[f32], dst: &mut [u16]) {
    assert_eq!(src.len(), dst.len(), "encode_bf16_slice: length mismatch");
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = f32_to_bf16(s);
    }
}

/// Decodes `src` into `dst` with [`bf16_to_f32`].
///
/// # Panics
/// If the slices differ in length.
pub fn decode_bf16_slice(src: &[u16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "decode_bf16_slice: length mismatch");
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = bf16_to_f32(s);
    }
}

/// Decodes little-endian bfloat16 bytes (`2 × dst.len()` of them) into `dst`.
///
/// # Panics
/// If `src` is not exactly two bytes per value of `dst`.
pub fn decode_bf16_le(src: &[u8], dst: &mut [f32]) {
    assert_eq!(src.len(), 2 * dst.len(), "decode_bf16_le: length mismatch");
    for (d, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *d = bf16_to_f32(u16::from_le_bytes([c[0], c[1]]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::bf16;

    /// An independent reading of the rule: the two bf16 neighbours of `x` as exact f64 values, the
    /// nearer wins, a tie goes to the even code. Shares nothing with the bit trick above.
    fn reference(x: f32) -> u16 {
        if x.is_nan() {
            return if x.is_sign_negative() { 0xFFC0 } else { 0x7FC0 };
        }
        let bits = x.to_bits();
        let down = (bits >> 16) as u16; // truncation: the neighbour towards zero
        if bits.trailing_zeros() >= 16 {
            return down;
        }
        let up = down + 1; // away from zero (0x7F7F + 1 is Inf, as it should be)
                           // Past the largest finite code the next step is 2^128 (which rounds to Inf), as if the
                           // exponent went on.
        let hi = if up & 0x7FFF == 0x7F80 { 2f64.powi(128) } else { f64::from(bf16_to_f32(up)) };
        let (lo, hi) = (f64::from(bf16_to_f32(down)), hi);
        let (x, lo, hi) = (f64::from(x).abs(), lo.abs(), hi.abs());
        let nearer_down = match (x - lo).partial_cmp(&(hi - x)).expect("finite distances") {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Greater => false,
            std::cmp::Ordering::Equal => down & 1 == 0,
        };
        if nearer_down {
            down
        } else {
            up
        }
    }

    /// A spread of every kind of float32 pattern: each exponent, the rounding edges of the dropped
    /// half (0x7FFF, 0x8000, 0x8001 with odd and even kept LSB), both signs, NaNs with low payloads.
    fn patterns() -> Vec<u32> {
        let mut out = Vec::new();
        for exp in 0..=255u32 {
            for mant in [0u32, 1, 0x7FFF, 0x8000, 0x8001, 0x1_7FFF, 0x1_8000, 0x1_8001, 0x7F_8000, 0x7F_FFFF, 0x35_1234]
            {
                for sign in [0, SIGN] {
                    out.push(sign | (exp << 23) | mant);
                }
            }
        }
        let mut x: u32 = 0x1234_5678;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            out.push(x);
        }
        out
    }

    #[test]
    fn encode_matches_the_reference_and_half() {
        for bits in patterns() {
            let x = f32::from_bits(bits);
            let got = f32_to_bf16(x);
            assert_eq!(got, reference(x), "0x{bits:08X}");
            // `half` is a second, independent implementation of the same rounding (it keeps NaN
            // payload bits where we, as ml_dtypes, write the canonical NaN).
            let theirs = bf16::from_f32(x);
            if x.is_nan() {
                assert!(theirs.is_nan() && theirs.is_sign_negative() == x.is_sign_negative());
            } else {
                assert_eq!(got, theirs.to_bits(), "0x{bits:08X} vs half");
            }
            let mut one = [0u16];
            encode_bf16_slice(&[x], &mut one);
            assert_eq!(one[0], got);
        }
    }

    #[test]
    fn every_code_decodes_exactly_and_round_trips() {
        for b in 0..=u16::MAX {
            let x = bf16_to_f32(b);
            assert_eq!(x.to_bits(), u32::from(b) << 16, "0x{b:04X}");
            if x.is_nan() {
                // `half` quiets NaNs as it widens; ours keeps the bits (exact): both NaN.
                assert!(bf16::from_bits(b).to_f32().is_nan());
                assert!(bf16_to_f32(f32_to_bf16(x)).is_nan());
                assert_eq!(f32_to_bf16(x) & 0x8000, b & 0x8000, "NaN sign of 0x{b:04X}");
            } else {
                assert_eq!(x.to_bits(), bf16::from_bits(b).to_f32().to_bits(), "0x{b:04X} vs half");
                assert_eq!(f32_to_bf16(x), b, "round trip 0x{b:04X}");
            }
        }
    }

    #[test]
    fn check_values_and_range_policy() {
        assert_eq!(f32_to_bf16(1.0), 0x3F80);
        assert_eq!(f32_to_bf16(-2.0), 0xC000);
        // 1 + 2^-8 is a tie between 1 (even) and 1 + 2^-7: stays 1. 1 + 3·2^-8 ties up to the even code.
        assert_eq!(f32_to_bf16(1.0 + 2f32.powi(-8)), 0x3F80);
        assert_eq!(f32_to_bf16(1.0 + 3.0 * 2f32.powi(-8)), 0x3F82);
        assert_eq!(f32_to_bf16(f32::INFINITY), 0x7F80);
        assert_eq!(f32_to_bf16(f32::MAX), 0x7F80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x7F7F_7FFF)), 0x7F7F);
        assert_eq!(f32_to_bf16(f32::from_bits(0x7F80_0001)), 0x7FC0); // signalling NaN stays NaN
        assert_eq!(f32_to_bf16(f32::from_bits(0xFF81_2345)), 0xFFC0); // payload dropped, sign kept
        assert_eq!(f32_to_bf16(-f32::NAN), 0xFFC0);
        assert_eq!(bf16_to_f32(BF16_MAX_BITS).to_bits(), 3.389_531_4e38f32.to_bits());
        assert!(!bf16_overflows(f32::from_bits(0x7F7F_7FFF)));
        assert!(bf16_overflows(f32::from_bits(0x7F7F_8000)));
        assert!(bf16_overflows(-f32::MAX));
        assert!(!bf16_overflows(f32::INFINITY));
        assert!(!bf16_overflows(f32::NAN));
        assert_eq!(f32_to_bf16_sat(f32::MAX), 0x7F7F);
        assert_eq!(f32_to_bf16_sat(-f32::MAX), 0xFF7F);
        assert_eq!(f32_to_bf16_sat(f32::NEG_INFINITY), 0xFF80);
        assert_eq!(f32_to_bf16_sat(2.5), f32_to_bf16(2.5));
        // Subnormals keep their rounding too: the smallest float32 subnormal rounds to zero.
        assert_eq!(f32_to_bf16(f32::from_bits(1)), 0);
        assert_eq!(f32_to_bf16(f32::from_bits(0x8001_0000)), 0x8001);
    }

    #[test]
    fn slices_match_scalars_at_odd_lengths() {
        let src: Vec<f32> = (0..67).map(|i| (i as f32 - 30.0) * 1.7e-3 + (i as f32).powi(5)).collect();
        for len in 0..src.len() {
            let mut codes = vec![0u16; len];
            encode_bf16_slice(&src[..len], &mut codes);
            assert!(codes.iter().zip(&src).all(|(&c, &x)| c == f32_to_bf16(x)));
            let mut back = vec![0f32; len];
            decode_bf16_slice(&codes, &mut back);
            assert!(back.iter().zip(&codes).all(|(x, &c)| x.to_bits() == bf16_to_f32(c).to_bits()));
            let le: Vec<u8> = codes.iter().flat_map(|c| c.to_le_bytes()).collect();
            let mut from_le = vec![0f32; len];
            decode_bf16_le(&le, &mut from_le);
            assert_eq!(from_le, back);
        }
    }
}
