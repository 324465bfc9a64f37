//! Int8 with one float32 scale per vector (`DataTypeQ8Vector`, this project's extension): symmetric
//! per-vector quantization, the usual way to shrink an embedding to a quarter of its float32 bytes.
//!
//! A vector `x` of `n` float32 values is stored as `4 + n` bytes, its cell:
//!
//! ```text
//! byte 0-3   scale s, float32 LE:  s = max|x| / 127   (float32 division, round to nearest even)
//! byte 4..   n int8 codes:         q = round_half_even(clamp(x / s, -127, 127))
//! ```
//!
//! and read back as `q × s` (one float32 multiply). Rounding is ties-to-even (IEEE's default, numpy's
//! `rint`, what `torch.quantize_per_tensor` does). Codes are symmetric, −127..=127, so the vector's
//! largest magnitude maps to ±127 exactly. Code −128 is reserved: it means NaN, and is written only for
//! a NaN input under saturation. A vector with no non-zero magnitude (all zeros, −0 included) stores
//! scale 0 and zero codes, and reads back as +0; so does a vector whose largest magnitude is below
//! 127 × 2^-150 (its scale underflows to 0). NaN and ±Inf are refused, naming the element, unless the
//! write saturates: then ±Inf becomes ±127 (the vector's largest finite magnitude, the scale coming
//! from the finite values alone) and NaN becomes code −128. Retrieval-time quantization always
//! saturates (a read never fails on stored data).
//!
//! Every loop is branch-free per element so it vectorises: the largest magnitude is an integer max
//! over the float bits with the sign cleared (which orders non-NaN magnitudes like the floats), and the
//! rounding adds 1.5 × 2^23, which rounds `v` to an integer by the FPU's own ties-to-even for any
//! |v| ≤ 2^22 and leaves that integer in the low mantissa bits, where the code is read from.

// The AVX2 copies of the loops exist only by inlining the portable ones into `#[target_feature]`
// functions: an inlining hint that may be ignored would leave them baseline calls.
#![allow(clippy::inline_always)]

/// Bytes of the scale that starts every Q8 cell.
pub const SCALE_BYTES: usize = 4;
/// The largest code magnitude: the vector's largest magnitude maps to ±127.
pub const MAX_CODE: i8 = 127;
/// The code that stands for NaN (written only when saturating a NaN input).
pub const NAN_CODE: i8 = -128;

const SIGN: u32 = 0x8000_0000;
const INF_BITS: u32 = 0x7F80_0000;
/// 1.5 × 2^23: `v + M` holds `v` rounded to an integer (ties to even) in its low mantissa bits, for
/// |v| ≤ 2^22.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// Bytes of the cell of a vector of `n` values.
pub const fn cell_len(n: usize) -> usize {
    SCALE_BYTES + n
}

/// A vector that cannot be quantized without saturation: the first non-finite element.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NotFinite {
    pub index: usize,
    pub value: f32,
}

/// The largest magnitude of `x` as float32 bits with the sign cleared (NaN sorts above Inf).
#[inline(always)]
fn max_magnitude_bits(x: &[f32]) -> u32 {
    x.iter().fold(0u32, |m, v| m.max(v.to_bits() & !SIGN))
}

/// The largest finite magnitude's bits (non-finite elements count as 0).
#[inline(always)]
fn max_finite_bits(x: &[f32]) -> u32 {
    x.iter().fold(0u32, |m, v| {
        let b = v.to_bits() & !SIGN;
        m.max(if b < INF_BITS { b } else { 0 })
    })
}

/// The scale of `x`: `max|x| / 127` over its finite values.
pub fn scale_of(x: &[f32]) -> f32 {
    f32::from_bits(max_finite_bits(x)) / f32::from(MAX_CODE)
}

/// Quantizes one vector into `dst` (`cell_len(x.len())` bytes: scale, then codes). Without
/// `saturate`, a NaN or ±Inf element is refused and `dst` is left unspecified.
///
/// # Panics
/// If `dst` is not `cell_len(x.len())` bytes long.
pub fn encode_into(x: &[f32], saturate: bool, dst: &mut [u8]) -> Result<(), NotFinite> {
    assert_eq!(dst.len(), cell_len(x.len()), "q8::encode_into: length mismatch");
    let (head, codes) = dst.split_at_mut(SCALE_BYTES);
    let scale = quantize_vector(x, saturate, codes_of_mut(codes))?;
    head.copy_from_slice(&scale.to_le_bytes());
    Ok(())
}

/// One vector's scale, and its codes written to `codes`: on AVX2 when the CPU has it (the same loops,
/// 8 lanes wide), else the baseline build's.
fn quantize_vector(x: &[f32], saturate: bool, codes: &mut [i8]) -> Result<f32, NotFinite> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { quantize_vector_avx2(x, saturate, codes) };
        }
    }
    quantize_vector_portable(x, saturate, codes)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_vector_avx2(x: &[f32], saturate: bool, codes: &mut [i8]) -> Result<f32, NotFinite> {
    quantize_vector_portable(x, saturate, codes)
}

#[inline(always)]
fn quantize_vector_portable(x: &[f32], saturate: bool, codes: &mut [i8]) -> Result<f32, NotFinite> {
    let scale = scale_for(x, saturate)?;
    quantize(x, scale, codes);
    Ok(scale)
}

/// The scale of one vector, or the first non-finite element when that is refused.
#[inline(always)]
fn scale_for(x: &[f32], saturate: bool) -> Result<f32, NotFinite> {
    let top = max_magnitude_bits(x);
    let finite_top = if top < INF_BITS {
        top
    } else if saturate {
        max_finite_bits(x)
    } else {
        let index = x.iter().position(|v| !v.is_finite()).expect("a non-finite element exists");
        return Err(NotFinite { index, value: x[index] });
    };
    // Never -0: the magnitude has no sign, so the quotient is +0 or positive.
    Ok(f32::from_bits(finite_top) / f32::from(MAX_CODE))
}

/// Appends the cell of `x` (scale, then codes) to `out`.
pub fn encode(x: &[f32], saturate: bool, out: &mut Vec<u8>) -> Result<(), NotFinite> {
    let at = out.len();
    out.resize(at + cell_len(x.len()), 0);
    let r = encode_into(x, saturate, &mut out[at..]);
    if r.is_err() {
        out.truncate(at);
    }
    r
}

/// The codes of `x` at `scale` (scale 0: zeros, and ±127 / NaN code for the non-finite elements).
#[inline(always)]
fn quantize(x: &[f32], scale: f32, codes: &mut [i8]) {
    let max = f32::from(MAX_CODE);
    if scale == 0.0 {
        for (c, &v) in codes.iter_mut().zip(x) {
            let q = if v.is_nan() {
                NAN_CODE
            } else if v.is_infinite() {
                MAX_CODE * if v < 0.0 { -1 } else { 1 }
            } else {
                0
            };
            *c = q;
        }
        return;
    }
    for (c, &v) in codes.iter_mut().zip(x) {
        // NaN compares false both ways: `max(min(...))` would let it through, so pick it out.
        let clamped = (v / scale).clamp(-max, max);
        // `clamped + 1.5 × 2^23` has the mantissa `2^22 + round(clamped)` (ties to even), so its low
        // byte is the code in two's complement: no float-to-int conversion, which would not vectorise.
        let code = (clamped + ROUND_MAGIC).to_bits() as u8 as i8;
        *c = if v.is_nan() { NAN_CODE } else { code };
    }
}

/// The scale of a cell, or `None` when `cell` is shorter than one.
pub fn cell_scale(cell: &[u8]) -> Option<f32> {
    cell.get(..SCALE_BYTES).map(|s| f32::from_le_bytes(s.try_into().expect("4 bytes")))
}

/// `code × scale` for each code (code −128: NaN).
///
/// # Panics
/// If the slices differ in length.
pub fn dequantize(codes: &[i8], scale: f32, dst: &mut [f32]) {
    assert_eq!(codes.len(), dst.len(), "q8::dequantize: length mismatch");
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            unsafe { dequantize_avx2(codes, scale, dst) };
            return;
        }
    }
    dequantize_portable(codes, scale, dst);
}

/// The same loop compiled for AVX2 (8 lanes, a sign-extending load): the build targets baseline
/// x86-64, where widening int8 to float32 takes several shuffles per 4 values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dequantize_avx2(codes: &[i8], scale: f32, dst: &mut [f32]) {
    dequantize_portable(codes, scale, dst);
}

#[inline(always)]
fn dequantize_portable(codes: &[i8], scale: f32, dst: &mut [f32]) {
    const NAN_BITS: u32 = 0x7FC0_0000;
    for (d, &c) in dst.iter_mut().zip(codes) {
        let x = (f32::from(c) * scale).to_bits();
        // All ones where the code is the NaN code: a 32-bit select the loop can vectorise.
        let nan = u32::from(c == NAN_CODE).wrapping_neg();
        *d = f32::from_bits((x & !nan) | (NAN_BITS & nan));
    }
}

/// Decodes one cell (scale, then `dst.len()` codes) into `dst`.
///
/// # Panics
/// If `cell` is not `cell_len(dst.len())` bytes long.
pub fn decode_into(cell: &[u8], dst: &mut [f32]) {
    assert_eq!(cell.len(), cell_len(dst.len()), "q8::decode_into: length mismatch");
    let scale = cell_scale(cell).expect("length checked");
    dequantize(codes_of(&cell[SCALE_BYTES..]), scale, dst);
}

/// Appends the decoded values of one cell to `out`.
pub fn decode_append(cell: &[u8], out: &mut Vec<f32>) {
    let n = cell.len().saturating_sub(SCALE_BYTES);
    let at = out.len();
    out.resize(at + n, 0.0);
    decode_into(cell, &mut out[at..]);
}

/// The codes of a cell's code bytes as `i8` (the same bits).
pub fn codes_of(bytes: &[u8]) -> &[i8] {
    // SAFETY: u8 and i8 have the same size, alignment and validity (every bit pattern), so a
    // slice of one is a slice of the other over the same borrow.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<i8>(), bytes.len()) }
}

fn codes_of_mut(bytes: &mut [u8]) -> &mut [i8] {
    // SAFETY: as `codes_of`; the exclusive borrow moves to the returned slice.
    unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<i8>(), bytes.len()) }
}

/// Whether a stored cell is well formed: a scale that is +0 or a positive finite number (the encoder
/// never writes anything else), at least the scale's bytes.
pub fn check_cell(cell: &[u8]) -> Result<(), String> {
    let scale = cell_scale(cell).ok_or_else(|| format!("a Q8 cell of {} bytes has no 4-byte scale", cell.len()))?;
    if scale.is_finite() && scale.to_bits() & SIGN == 0 {
        Ok(())
    } else {
        Err(format!("Q8 scale {scale} is not a finite number ≥ 0"))
    }
}

/// Quantizes `rows` vectors of `dim` values (row-major in `src`) into `codes` (`rows × dim`) and
/// `scales` (`rows`): the bulk form for arrays. Refuses the first non-finite element (its index
/// in `src`) unless `saturate`.
///
/// # Panics
/// If the slice lengths do not match `dim` and each other.
pub fn encode_rows(
    src: &[f32],
    dim: usize,
    saturate: bool,
    codes: &mut [i8],
    scales: &mut [f32],
) -> Result<(), NotFinite> {
    assert_eq!(src.len(), codes.len(), "q8::encode_rows: codes length mismatch");
    assert_eq!(src.len(), dim * scales.len(), "q8::encode_rows: scales length mismatch");
    if dim == 0 {
        scales.fill(0.0);
        return Ok(());
    }
    for (r, ((x, q), s)) in src.chunks_exact(dim).zip(codes.chunks_exact_mut(dim)).zip(scales.iter_mut()).enumerate() {
        *s = quantize_vector(x, saturate, q).map_err(|e| NotFinite { index: r * dim + e.index, value: e.value })?;
    }
    Ok(())
}

/// Dequantizes `rows` vectors of `dim` codes with one scale each into `dst`.
///
/// # Panics
/// If the slice lengths do not match `dim` and each other.
pub fn decode_rows(codes: &[i8], scales: &[f32], dim: usize, dst: &mut [f32]) {
    assert_eq!(codes.len(), dst.len(), "q8::decode_rows: length mismatch");
    assert_eq!(codes.len(), dim * scales.len(), "q8::decode_rows: scales length mismatch");
    if dim == 0 {
        return;
    }
    for ((q, d), &s) in codes.chunks_exact(dim).zip(dst.chunks_exact_mut(dim)).zip(scales) {
        dequantize(q, s, d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An independent reading of the rule in f64: scale rounded to float32, each `x / s` computed in
    /// float32 (as the rule says), then rounded half to even by looking at the fraction.
    fn reference(x: &[f32]) -> (f32, Vec<i8>) {
        let amax = x.iter().map(|v| v.abs()).fold(0f32, f32::max);
        let s = amax / 127.0;
        if s == 0.0 {
            return (0.0, vec![0; x.len()]);
        }
        let codes = x
            .iter()
            .map(|&v| {
                let r = f64::from((v / s).clamp(-127.0, 127.0));
                let fl = r.floor();
                let frac = r - fl;
                // Ties (a fraction of exactly one half) go to the even neighbour.
                let up = match frac.partial_cmp(&0.5).expect("finite") {
                    std::cmp::Ordering::Greater => true,
                    std::cmp::Ordering::Less => false,
                    std::cmp::Ordering::Equal => fl.rem_euclid(2.0) >= 1.0,
                };
                let q = if up { fl + 1.0 } else { fl };
                q as i8
            })
            .collect();
        (s, codes)
    }

    fn cell(x: &[f32], saturate: bool) -> Result<Vec<u8>, NotFinite> {
        let mut out = Vec::new();
        encode(x, saturate, &mut out).map(|()| out)
    }

    fn vectors() -> Vec<Vec<f32>> {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 41) as f32 / (1u64 << 23) as f32 * 2.0 - 1.0
        };
        let mut out: Vec<Vec<f32>> = (1..70).map(|n| (0..n).map(|_| next()).collect()).collect();
        out.push((0..768).map(|_| next() * 1e-30).collect());
        out.push((0..768).map(|_| next() * 3e38).collect());
        out.push(vec![0.5, -0.5, 1.5, 2.5, -2.5, 127.0]); // exact halves: ties to even
        out.push(vec![1.0, -1.0, 0.0]);
        out
    }

    #[test]
    fn encode_matches_the_reference() {
        for x in vectors() {
            let c = cell(&x, false).unwrap();
            let (s, codes) = reference(&x);
            assert_eq!(cell_scale(&c).unwrap().to_bits(), s.to_bits(), "{x:?}");
            assert_eq!(codes_of(&c[4..]), &codes[..], "{x:?}");
            assert!(codes.iter().any(|&q| q.abs() == 127), "the largest magnitude maps to ±127");
        }
        // Ties: 0.5/(127/127) ... with max 127, s = 1: 0.5 → 0, 1.5 → 2, 2.5 → 2, -2.5 → -2.
        let c = cell(&[0.5, -0.5, 1.5, 2.5, -2.5, 127.0], false).unwrap();
        assert_eq!(codes_of(&c[4..]), &[0, 0, 2, 2, -2, 127]);
        assert_eq!(&c[..4], &1f32.to_le_bytes());
    }

    #[test]
    fn round_trip_error_is_at_most_half_a_step() {
        for x in vectors() {
            let c = cell(&x, false).unwrap();
            let s = cell_scale(&c).unwrap();
            let mut back = vec![0f32; x.len()];
            decode_into(&c, &mut back);
            for (a, b) in x.iter().zip(&back) {
                // Half a step, plus float32 rounding of the division and of the product.
                let bound = f64::from(s) * 0.5 * (1.0 + 1e-6) + f64::from(a.abs()) * 1e-6;
                assert!(f64::from((a - b).abs()) <= bound, "{a} vs {b} at scale {s}");
            }
        }
    }

    #[test]
    fn zero_vectors_and_underflow() {
        assert_eq!(cell(&[0.0, -0.0, 0.0], false).unwrap(), vec![0, 0, 0, 0, 0, 0, 0]);
        let mut back = [1f32; 3];
        decode_into(&[0, 0, 0, 0, 0, 0, 0], &mut back);
        assert_eq!(back.map(f32::to_bits), [0, 0, 0]);
        // Largest magnitude below 127 × 2^-150: the scale underflows to zero, so do the codes.
        let tiny = f32::from_bits(0x0000_0010);
        assert_eq!(cell(&[tiny, -tiny], false).unwrap(), vec![0; 6]);
        // A subnormal scale still works.
        let c = cell(&[1e-40, -5e-41], false).unwrap();
        assert!(cell_scale(&c).unwrap() > 0.0);
        assert_eq!(codes_of(&c[4..]), &reference(&[1e-40, -5e-41]).1[..]);
        assert_eq!(cell(&[], false).unwrap(), vec![0, 0, 0, 0]);
    }

    #[test]
    fn non_finite_is_refused_or_saturated() {
        let e = cell(&[1.0, f32::NAN, 2.0], false).unwrap_err();
        assert_eq!(e.index, 1);
        let e = cell(&[1.0, 2.0, f32::NEG_INFINITY], false).unwrap_err();
        assert_eq!((e.index, e.value), (2, f32::NEG_INFINITY));
        let e = cell(&[f32::NAN], false).unwrap_err();
        assert_eq!(e.index, 0);
        assert!(e.value.is_nan());
        // Saturating: ±Inf is the largest finite magnitude, NaN the reserved code.
        let c = cell(&[f32::INFINITY, 2.0, f32::NAN, -1.0, f32::NEG_INFINITY], true).unwrap();
        assert_eq!(cell_scale(&c).unwrap().to_bits(), (2f32 / 127.0).to_bits());
        assert_eq!(codes_of(&c[4..]), &[127, 127, -128, -64, -127]);
        let mut back = [0f32; 5];
        decode_into(&c, &mut back);
        assert!((back[0] - 2.0).abs() < 1e-6);
        assert!(back[2].is_nan());
        assert!((back[4] + 2.0).abs() < 1e-6);
        // Nothing finite but zero: scale 0, the signs survive in the codes.
        let c = cell(&[f32::NEG_INFINITY, 0.0, f32::NAN], true).unwrap();
        assert_eq!(c, vec![0, 0, 0, 0, 0x81, 0, 0x80]);
    }

    /// The baseline loops give the bits the dispatched (AVX2 here) ones give.
    #[test]
    fn portable_and_dispatched_loops_agree() {
        for x in vectors() {
            let mut a = vec![0i8; x.len()];
            let mut b = vec![0i8; x.len()];
            let sa = quantize_vector(&x, false, &mut a).unwrap();
            let sb = quantize_vector_portable(&x, false, &mut b).unwrap();
            assert_eq!((sa.to_bits(), &a), (sb.to_bits(), &b));
            let (mut da, mut db) = (vec![0f32; x.len()], vec![0f32; x.len()]);
            dequantize(&a, sa, &mut da);
            dequantize_portable(&a, sa, &mut db);
            assert!(da.iter().zip(&db).all(|(p, q)| p.to_bits() == q.to_bits()));
        }
        let mut nan = [0f32; 3];
        dequantize_portable(&[NAN_CODE, 1, -127], 2.0, &mut nan);
        assert_eq!(nan.map(f32::to_bits), [0x7FC0_0000, 2f32.to_bits(), (-254f32).to_bits()]);
    }

    #[test]
    fn cells_are_checked() {
        assert!(check_cell(&[0, 0, 0, 0, 5]).is_ok());
        assert!(check_cell(&1.5f32.to_le_bytes()).is_ok());
        assert!(check_cell(&[0, 0]).is_err());
        assert!(check_cell(&(-1.0f32).to_le_bytes()).is_err());
        assert!(check_cell(&f32::NAN.to_le_bytes()).is_err());
        assert!(check_cell(&f32::INFINITY.to_le_bytes()).is_err());
    }

    #[test]
    fn rows_match_cells() {
        let src: Vec<f32> = (0..3 * 17).map(|i| ((i * 37) % 23) as f32 - 11.0).collect();
        let mut codes = vec![0i8; src.len()];
        let mut scales = vec![0f32; 3];
        encode_rows(&src, 17, false, &mut codes, &mut scales).unwrap();
        for r in 0..3 {
            let c = cell(&src[r * 17..(r + 1) * 17], false).unwrap();
            assert_eq!(cell_scale(&c).unwrap().to_bits(), scales[r].to_bits());
            assert_eq!(codes_of(&c[4..]), &codes[r * 17..(r + 1) * 17]);
        }
        let mut back = vec![0f32; src.len()];
        decode_rows(&codes, &scales, 17, &mut back);
        let mut one = vec![0f32; 17];
        let c = cell(&src[17..34], false).unwrap();
        decode_into(&c, &mut one);
        assert_eq!(&back[17..34], &one[..]);
        let mut bad = src.clone();
        bad[40] = f32::INFINITY;
        let e = encode_rows(&bad, 17, false, &mut codes, &mut scales).unwrap_err();
        assert_eq!(e.index, 40);
    }
}
