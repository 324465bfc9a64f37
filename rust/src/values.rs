//! Typed input values for the write path and their checked narrowing to a block's element type.
//!
//! Values arrive in wide containers (the persist proto sends `double` for every float type and
//! `int32` for int8/int16; numpy arrays can be any dtype). Narrowing is *checked*: an int8 feature
//! given 300 is an error, not 44 as in the reference, and a float that would overflow a low-precision
//! type is rejected unless the caller opts into saturation.
//!
//! Also the reading side of the one variable-length value layout, a string vector's
//! `[u16 LE length × n][bytes]` ([`string_vector_items`]): blocks and cells hold string vectors alike.

use crate::dtype::{DataType, Element};
use crate::error::{Error, Result};
use crate::limits::try_reserve;
use crate::{bf16, float, q8};

/// A flat run of input values: one per scalar feature, or every element of every vector feature in
/// feature order (row-major), as laid out by [`crate::meta::BlockMeta`].
#[derive(Debug, Clone, Copy)]
pub enum Values<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
    I8(&'a [i8]),
    I16(&'a [i16]),
    I32(&'a [i32]),
    I64(&'a [i64]),
    U8(&'a [u8]),
    U16(&'a [u16]),
    U32(&'a [u32]),
    U64(&'a [u64]),
    Bool(&'a [bool]),
    Str(&'a [&'a [u8]]),
}

impl Values<'_> {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::F64(v) => v.len(),
            Values::I8(v) => v.len(),
            Values::I16(v) => v.len(),
            Values::I32(v) => v.len(),
            Values::I64(v) => v.len(),
            Values::U8(v) => v.len(),
            Values::U16(v) => v.len(),
            Values::U32(v) => v.len(),
            Values::U64(v) => v.len(),
            Values::Bool(v) => v.len(),
            Values::Str(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `len` values from `start` (a row of a row-major run, one vector of a feature).
    #[must_use]
    pub fn slice(self, start: usize, len: usize) -> Self {
        let r = start..start + len;
        match self {
            Values::F32(s) => Values::F32(&s[r]),
            Values::F64(s) => Values::F64(&s[r]),
            Values::I8(s) => Values::I8(&s[r]),
            Values::I16(s) => Values::I16(&s[r]),
            Values::I32(s) => Values::I32(&s[r]),
            Values::I64(s) => Values::I64(&s[r]),
            Values::U8(s) => Values::U8(&s[r]),
            Values::U16(s) => Values::U16(&s[r]),
            Values::U32(s) => Values::U32(&s[r]),
            Values::U64(s) => Values::U64(&s[r]),
            Values::Bool(s) => Values::Bool(&s[r]),
            Values::Str(s) => Values::Str(&s[r]),
        }
    }

    /// Name of the container kind, for error messages.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Values::F32(_) => "float32",
            Values::F64(_) => "float64",
            Values::I8(_) => "int8",
            Values::I16(_) => "int16",
            Values::I32(_) => "int32",
            Values::I64(_) => "int64",
            Values::U8(_) => "uint8",
            Values::U16(_) => "uint16",
            Values::U32(_) => "uint32",
            Values::U64(_) => "uint64",
            Values::Bool(_) => "bool",
            Values::Str(_) => "string",
        }
    }
}

/// The strings of a string-vector cell (`[u16 LE length × n][bytes]`). With `count`, the cell must hold
/// exactly that many; without, `n` is found by walking lengths until they account for the whole cell.
pub fn string_vector_items(cell: &[u8], count: Option<usize>) -> Result<Vec<&[u8]>> {
    let len_at = |i: usize| u16::from_le_bytes([cell[2 * i], cell[2 * i + 1]]) as usize;
    let n = match count {
        Some(n) if 2 * n <= cell.len() => n,
        Some(_) => return Err(Error::corrupt("string vector cell shorter than its lengths")),
        None => {
            let (mut n, mut total) = (0, 0usize);
            while 2 * n + total < cell.len() {
                if 2 * n + 2 > cell.len() {
                    return Err(Error::corrupt("truncated string vector cell"));
                }
                total += len_at(n);
                n += 1;
            }
            n
        }
    };
    let mut at = 2 * n;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let s = cell.get(at..at + len_at(i)).ok_or_else(|| Error::corrupt("string vector cell truncated"))?;
        out.push(s);
        at += len_at(i);
    }
    if at != cell.len() {
        return Err(Error::corrupt("string vector cell lengths do not match its size"));
    }
    Ok(out)
}

/// One numeric input value, widened losslessly.
#[derive(Debug, Clone, Copy)]
enum Num {
    Float(f64),
    Int(i128),
}

impl Num {
    fn show(self) -> String {
        match self {
            Num::Float(x) => format!("{x}"),
            Num::Int(i) => i.to_string(),
        }
    }
}

/// A numeric source slice that can be read value by value.
trait Source: Copy {
    fn num(self) -> Num;
    /// Fast path for float targets.
    fn as_f64(self) -> f64;
}

macro_rules! int_source {
    ($($t:ty),*) => {$(
        impl Source for $t {
            fn num(self) -> Num { Num::Int(self as i128) }
            fn as_f64(self) -> f64 { self as f64 }
        }
    )*};
}
int_source!(i8, i16, i32, i64, u8, u16, u32, u64);

impl Source for bool {
    fn num(self) -> Num {
        Num::Int(i128::from(self))
    }
    fn as_f64(self) -> f64 {
        f64::from(u8::from(self))
    }
}

impl Source for f32 {
    fn num(self) -> Num {
        Num::Float(f64::from(self))
    }
    fn as_f64(self) -> f64 {
        f64::from(self)
    }
}

impl Source for f64 {
    fn num(self) -> Num {
        Num::Float(self)
    }
    fn as_f64(self) -> f64 {
        self
    }
}

/// Converts values to the element type and appends their little-endian stored form to `out`.
/// Errors carry the index in `values` as their `feature`; callers with a layout relocate it.
/// `Bool` elements are appended one byte (0/1) per value; the caller packs them into bits.
pub(crate) fn append_elements(out: &mut Vec<u8>, dtype: DataType, values: Values<'_>, saturate: bool) -> Result<()> {
    let element = dtype.known_element()?;
    if append_same_type(out, element, values) {
        return Ok(());
    }
    if let (Values::F32(v), Element::Bf16) = (values, element) {
        if append_bf16_f32(out, v, saturate)? {
            return Ok(());
        }
    }
    match values {
        Values::F32(v) => append_from(out, dtype, element, v, saturate),
        Values::F64(v) => append_from(out, dtype, element, v, saturate),
        Values::I8(v) => append_from(out, dtype, element, v, saturate),
        Values::I16(v) => append_from(out, dtype, element, v, saturate),
        Values::I32(v) => append_from(out, dtype, element, v, saturate),
        Values::I64(v) => append_from(out, dtype, element, v, saturate),
        Values::U8(v) => append_from(out, dtype, element, v, saturate),
        Values::U16(v) => append_from(out, dtype, element, v, saturate),
        Values::U32(v) => append_from(out, dtype, element, v, saturate),
        Values::U64(v) => append_from(out, dtype, element, v, saturate),
        Values::Bool(v) => append_from(out, dtype, element, v, saturate),
        Values::Str(_) => Err(Error::WrongValueKind { dtype, given: "string" }),
    }
}

/// Fast path: when the source already is the stored type every value fits, and the stored form is
/// the source's own little-endian bytes (a plain copy on little-endian targets). Returns whether it
/// applied; nothing is appended when it did not.
fn append_same_type(out: &mut Vec<u8>, element: Element, values: Values<'_>) -> bool {
    match (values, element) {
        (Values::F32(v), Element::Fp32) => append_le(out, v, f32::to_le_bytes),
        (Values::F64(v), Element::Fp64) => append_le(out, v, f64::to_le_bytes),
        (Values::I8(v), Element::Int8) => append_le(out, v, i8::to_le_bytes),
        (Values::I16(v), Element::Int16) => append_le(out, v, i16::to_le_bytes),
        (Values::I32(v), Element::Int32) => append_le(out, v, i32::to_le_bytes),
        (Values::I64(v), Element::Int64) => append_le(out, v, i64::to_le_bytes),
        (Values::U8(v), Element::Uint8) => out.extend_from_slice(v),
        (Values::U16(v), Element::Uint16) => append_le(out, v, u16::to_le_bytes),
        (Values::U32(v), Element::Uint32) => append_le(out, v, u32::to_le_bytes),
        (Values::U64(v), Element::Uint64) => append_le(out, v, u64::to_le_bytes),
        _ => return false,
    }
    true
}

/// float32 → bf16 without per-value branches (the common embedding write): when no value overflows, or
/// when saturating, the whole slice goes through the vectorised encoder. Returns false (nothing
/// appended) when a value overflows and the checked path must name it.
fn append_bf16_f32(out: &mut Vec<u8>, src: &[f32], saturate: bool) -> Result<bool> {
    let overflow = src.iter().fold(false, |any, &x| any | bf16::bf16_overflows(x));
    if overflow && !saturate {
        return Ok(false);
    }
    let mut codes = vec![0u16; src.len()];
    if overflow {
        for (c, &x) in codes.iter_mut().zip(src) {
            *c = bf16::f32_to_bf16_sat(x);
        }
    } else {
        bf16::encode_bf16_slice(src, &mut codes);
    }
    try_reserve(out, src.len() * 2, "block values")?;
    append_le(out, &codes, u16::to_le_bytes);
    Ok(true)
}

/// Appends the Q8 cells (scale, then codes) of consecutive vectors of `lengths` values each, taken in
/// order from `values`. Errors carry the index in `values` as their `feature`, like
/// [`append_elements`].
pub(crate) fn append_q8(
    out: &mut Vec<u8>,
    dtype: DataType,
    values: Values<'_>,
    lengths: impl Iterator<Item = usize>,
    saturate: bool,
) -> Result<()> {
    let mut start = 0;
    let mut scratch: Vec<f32> = Vec::new();
    for n in lengths {
        let vector: &[f32] = if let Values::F32(v) = values {
            &v[start..start + n]
        } else {
            scratch.clear();
            try_reserve(&mut scratch, n, "a vector's values")?;
            let part = values.slice(start, n);
            widen_to_f32(part, dtype, saturate, &mut scratch).map_err(|e| e.at_value(|i| (start + i, None)))?;
            &scratch
        };
        try_reserve(out, q8::cell_len(n), "block values")?;
        q8::encode(vector, saturate, out).map_err(|e| Error::NotFinite {
            feature: start + e.index,
            element: None,
            value: format!("{}", e.value),
            dtype,
        })?;
        start += n;
    }
    Ok(())
}

/// Every value as float32 (floats narrowed with the write path's range check), into `out`.
fn widen_to_f32(values: Values<'_>, dtype: DataType, saturate: bool, out: &mut Vec<f32>) -> Result<()> {
    fn each<S: Source>(src: &[S], dtype: DataType, saturate: bool, out: &mut Vec<f32>) -> Result<()> {
        for (i, &x) in src.iter().enumerate() {
            out.push(narrow_f32(x.as_f64(), i, dtype, saturate)?);
        }
        Ok(())
    }
    match values {
        Values::F32(v) => {
            out.extend_from_slice(v);
            Ok(())
        }
        Values::F64(v) => each(v, dtype, saturate, out),
        Values::I8(v) => each(v, dtype, saturate, out),
        Values::I16(v) => each(v, dtype, saturate, out),
        Values::I32(v) => each(v, dtype, saturate, out),
        Values::I64(v) => each(v, dtype, saturate, out),
        Values::U8(v) => each(v, dtype, saturate, out),
        Values::U16(v) => each(v, dtype, saturate, out),
        Values::U32(v) => each(v, dtype, saturate, out),
        Values::U64(v) => each(v, dtype, saturate, out),
        Values::Bool(v) => each(v, dtype, saturate, out),
        Values::Str(_) => Err(Error::WrongValueKind { dtype, given: "string" }),
    }
}

/// Primitive numbers: no padding, every byte initialised, so a slice of them may be read as bytes.
///
/// # Safety
/// Implement only for types whose every bit is initialised and meaningful (no padding).
unsafe trait Plain: Copy {}
// SAFETY: primitive integers and floats have no padding bytes.
unsafe impl Plain for f32 {}
unsafe impl Plain for f64 {}
unsafe impl Plain for i8 {}
unsafe impl Plain for i16 {}
unsafe impl Plain for i32 {}
unsafe impl Plain for i64 {}
unsafe impl Plain for u16 {}
unsafe impl Plain for u32 {}
unsafe impl Plain for u64 {}

/// Appends the `W`-byte little-endian form of every value: one `memcpy` of the slice's own bytes on
/// little-endian targets (where `to_le` is the identity), a per-value loop elsewhere.
fn append_le<T: Plain, const W: usize>(out: &mut Vec<u8>, src: &[T], to_le: fn(T) -> [u8; W]) {
    debug_assert_eq!(std::mem::size_of::<T>(), W);
    if cfg!(target_endian = "little") {
        // SAFETY: `T: Plain` has no padding, so all `size_of_val(src)` bytes behind the pointer are
        // initialised; u8 has alignment 1; the borrow of `src` outlives the byte view.
        let bytes = unsafe { std::slice::from_raw_parts(src.as_ptr().cast::<u8>(), std::mem::size_of_val(src)) };
        out.extend_from_slice(bytes);
    } else {
        out.reserve(src.len() * W);
        for &x in src {
            out.extend_from_slice(&to_le(x));
        }
    }
}

fn out_of_range(feature_value: usize, n: Num, dtype: DataType) -> Error {
    Error::OutOfRange { feature: feature_value, element: None, value: n.show(), dtype }
}

/// f64 → f32 for a float target: a finite value beyond f32's range is an error unless saturating.
fn narrow_f32(x: f64, idx: usize, dtype: DataType, saturate: bool) -> Result<f32> {
    let f = x as f32;
    if f.is_infinite() && x.is_finite() {
        if saturate {
            return Ok(f32::MAX.copysign(f));
        }
        return Err(out_of_range(idx, Num::Float(x), dtype));
    }
    Ok(f)
}

fn append_from<S: Source>(
    out: &mut Vec<u8>,
    dtype: DataType,
    element: Element,
    src: &[S],
    saturate: bool,
) -> Result<()> {
    match element {
        Element::Fp64 => {
            try_reserve(out, src.len() * 8, "block values")?;
            for &x in src {
                out.extend_from_slice(&x.as_f64().to_le_bytes());
            }
        }
        Element::Fp32 => {
            try_reserve(out, src.len() * 4, "block values")?;
            for (i, &x) in src.iter().enumerate() {
                out.extend_from_slice(&narrow_f32(x.as_f64(), i, dtype, saturate)?.to_le_bytes());
            }
        }
        Element::Fp16 => {
            try_reserve(out, src.len() * 2, "block values")?;
            for (i, &x) in src.iter().enumerate() {
                let f = narrow_f32(x.as_f64(), i, dtype, saturate)?;
                let bits = if !float::f16_overflows(f) {
                    float::f32_to_f16(f)
                } else if saturate {
                    float::f32_to_f16_sat(f)
                } else {
                    return Err(out_of_range(i, x.num(), dtype));
                };
                out.extend_from_slice(&bits.to_le_bytes());
            }
        }
        Element::Bf16 => {
            try_reserve(out, src.len() * 2, "block values")?;
            for (i, &x) in src.iter().enumerate() {
                let f = narrow_f32(x.as_f64(), i, dtype, saturate)?;
                let bits = if !bf16::bf16_overflows(f) {
                    bf16::f32_to_bf16(f)
                } else if saturate {
                    bf16::f32_to_bf16_sat(f)
                } else {
                    return Err(out_of_range(i, x.num(), dtype));
                };
                out.extend_from_slice(&bits.to_le_bytes());
            }
        }
        Element::Q8 => {
            // One scale per vector: the caller must say where the vectors are (`append_q8`).
            return Err(Error::InvalidInput(format!(
                "{dtype} values are quantized one vector at a time, through a block layout"
            )));
        }
        Element::Fp8E4M3 | Element::Fp8E5M2 => {
            let e4m3 = element == Element::Fp8E4M3;
            try_reserve(out, src.len(), "block values")?;
            for (i, &x) in src.iter().enumerate() {
                let f = narrow_f32(x.as_f64(), i, dtype, saturate)?;
                let overflows = if e4m3 { float::e4m3_overflows(f) } else { float::e5m2_overflows(f) };
                let byte = match (overflows, saturate, e4m3) {
                    (false, _, true) => float::f32_to_e4m3(f),
                    (false, _, false) => float::f32_to_e5m2(f),
                    (true, true, true) => float::f32_to_e4m3_sat(f),
                    (true, true, false) => float::f32_to_e5m2_sat(f),
                    (true, false, _) => return Err(out_of_range(i, x.num(), dtype)),
                };
                out.push(byte);
            }
        }
        Element::Int8 => append_ints::<S, 1>(out, dtype, src, i128::from(i8::MIN), i128::from(i8::MAX))?,
        Element::Int16 => append_ints::<S, 2>(out, dtype, src, i128::from(i16::MIN), i128::from(i16::MAX))?,
        Element::Int32 => append_ints::<S, 4>(out, dtype, src, i128::from(i32::MIN), i128::from(i32::MAX))?,
        Element::Int64 => append_ints::<S, 8>(out, dtype, src, i128::from(i64::MIN), i128::from(i64::MAX))?,
        Element::Uint8 => append_ints::<S, 1>(out, dtype, src, 0, i128::from(u8::MAX))?,
        Element::Uint16 => append_ints::<S, 2>(out, dtype, src, 0, i128::from(u16::MAX))?,
        Element::Uint32 => append_ints::<S, 4>(out, dtype, src, 0, i128::from(u32::MAX))?,
        Element::Uint64 => append_ints::<S, 8>(out, dtype, src, 0, i128::from(u64::MAX))?,
        Element::Bool => append_ints::<S, 1>(out, dtype, src, 0, 1)?,
        Element::String => {
            return Err(Error::WrongValueKind { dtype, given: "numeric" });
        }
    }
    Ok(())
}

/// Appends integers of `W` bytes (two's complement LE), checking `[lo, hi]`. Floats are accepted
/// only when they hold an exact integer (so a pandas float column of whole numbers still works).
fn append_ints<S: Source, const W: usize>(
    out: &mut Vec<u8>,
    dtype: DataType,
    src: &[S],
    lo: i128,
    hi: i128,
) -> Result<()> {
    try_reserve(out, src.len() * W, "block values")?;
    for (i, &x) in src.iter().enumerate() {
        let n = x.num();
        let v = match n {
            Num::Int(v) => v,
            Num::Float(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1.7e38 => f as i128,
            Num::Float(f) => {
                return Err(Error::NotInteger { feature: i, element: None, value: f.to_string(), dtype });
            }
        };
        if v < lo || v > hi {
            return Err(out_of_range(i, n, dtype));
        }
        out.extend_from_slice(&v.to_le_bytes()[..W]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(dtype: DataType, v: Values<'_>, sat: bool) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        append_elements(&mut out, dtype, v, sat)?;
        Ok(out)
    }

    /// The same-type fast path writes exactly what the checked per-value path writes.
    #[test]
    fn same_type_fast_path_matches_checked_path() {
        fn check<S: Source>(dtype: DataType, src: &[S], values: Values<'_>) {
            let element = dtype.known_element().unwrap();
            let mut fast = vec![0xAA];
            assert!(append_same_type(&mut fast, element, values), "{dtype}: fast path not taken");
            let mut slow = vec![0xAA];
            append_from(&mut slow, dtype, element, src, false).unwrap();
            assert_eq!(fast, slow, "{dtype}");
        }
        let f32s = [0.0, -0.0, 1.5, -f32::MAX, f32::MIN_POSITIVE, 1e-45, f32::INFINITY, f32::NAN];
        check(DataType::Fp32Vector, &f32s, Values::F32(&f32s));
        let f64s = [0.0, -0.0, 1.5, f64::MAX, -f64::MIN_POSITIVE, f64::NEG_INFINITY, f64::NAN];
        check(DataType::Fp64, &f64s, Values::F64(&f64s));
        check(DataType::Int8, &[i8::MIN, -1, 0, i8::MAX], Values::I8(&[i8::MIN, -1, 0, i8::MAX]));
        check(DataType::Int16, &[i16::MIN, -1, 0, i16::MAX], Values::I16(&[i16::MIN, -1, 0, i16::MAX]));
        check(DataType::Int32, &[i32::MIN, -1, 0, i32::MAX], Values::I32(&[i32::MIN, -1, 0, i32::MAX]));
        check(DataType::Int64, &[i64::MIN, -1, 0, i64::MAX], Values::I64(&[i64::MIN, -1, 0, i64::MAX]));
        check(DataType::Uint8, &[0u8, 1, u8::MAX], Values::U8(&[0, 1, u8::MAX]));
        check(DataType::Uint16, &[0u16, 1, u16::MAX], Values::U16(&[0, 1, u16::MAX]));
        check(DataType::Uint32Vector, &[0u32, 1, u32::MAX], Values::U32(&[0, 1, u32::MAX]));
        check(DataType::Uint64, &[0u64, 1, u64::MAX], Values::U64(&[0, 1, u64::MAX]));
        // Cross-type inputs still take the checked path.
        assert!(!append_same_type(&mut Vec::new(), Element::Int32, Values::I64(&[1])));
        assert!(!append_same_type(&mut Vec::new(), Element::Fp32, Values::F64(&[1.0])));
    }

    #[test]
    fn ints_are_range_checked() {
        assert_eq!(enc(DataType::Int8, Values::I32(&[-128, 127]), false).unwrap(), vec![0x80, 0x7f]);
        let e = enc(DataType::Int8, Values::I32(&[1, 300]), false).unwrap_err();
        assert_eq!(e, Error::OutOfRange { feature: 1, element: None, value: "300".into(), dtype: DataType::Int8 });
        assert!(enc(DataType::Uint8, Values::I64(&[-1]), false).is_err());
        assert!(enc(DataType::Uint64, Values::U64(&[u64::MAX]), false).is_ok());
        assert!(enc(DataType::Int64, Values::U64(&[u64::MAX]), false).is_err());
        assert_eq!(enc(DataType::Int16, Values::F64(&[-2.0]), false).unwrap(), vec![0xfe, 0xff]);
        assert!(enc(DataType::Int16, Values::F64(&[2.5]), false).is_err());
        assert!(enc(DataType::Int16, Values::F64(&[f64::NAN]), false).is_err());
    }

    #[test]
    fn bools_must_be_zero_or_one() {
        assert_eq!(enc(DataType::Bool, Values::Bool(&[true, false]), false).unwrap(), vec![1, 0]);
        assert_eq!(enc(DataType::Bool, Values::I32(&[1, 0]), false).unwrap(), vec![1, 0]);
        assert!(enc(DataType::Bool, Values::I32(&[2]), false).is_err());
    }

    #[test]
    fn floats_overflow_unless_saturating() {
        assert!(enc(DataType::Fp32, Values::F64(&[1e300]), false).is_err());
        assert_eq!(enc(DataType::Fp32, Values::F64(&[-1e300]), true).unwrap(), (-f32::MAX).to_le_bytes().to_vec());
        assert_eq!(enc(DataType::Fp8E4M3, Values::F32(&[448.0, 464.0]), false).unwrap(), vec![0x7e, 0x7e]);
        assert!(enc(DataType::Fp8E4M3, Values::F32(&[500.0]), false).is_err());
        assert_eq!(enc(DataType::Fp8E4M3, Values::F32(&[500.0, -1e9]), true).unwrap(), vec![0x7e, 0xfe]);
        assert!(enc(DataType::Fp8E5M2, Values::F32(&[61_440.0]), false).is_err());
        assert_eq!(enc(DataType::Fp8E5M2, Values::F32(&[61_440.0]), true).unwrap(), vec![0x7b]);
        assert!(enc(DataType::Fp16, Values::F32(&[70_000.0]), false).is_err());
        assert_eq!(enc(DataType::Fp16, Values::F32(&[1.0]), false).unwrap(), vec![0x00, 0x3c]);
        // NaN and infinities that the type can represent pass through.
        assert_eq!(enc(DataType::Fp16, Values::F32(&[f32::INFINITY]), false).unwrap(), vec![0x00, 0x7c]);
        assert!(enc(DataType::Fp32, Values::F64(&[f64::NAN]), false).unwrap()[3] & 0x7f == 0x7f);
    }

    #[test]
    fn bf16_is_range_checked_like_fp16() {
        assert_eq!(enc(DataType::Bf16, Values::F32(&[1.0, -2.0]), false).unwrap(), vec![0x80, 0x3f, 0x00, 0xc0]);
        assert_eq!(enc(DataType::Bf16, Values::F64(&[1.0]), false).unwrap(), vec![0x80, 0x3f]);
        for v in [Values::F32(&[1.0, f32::MAX]), Values::F64(&[3.4e38])] {
            let e = enc(DataType::Bf16Vector, v, false).unwrap_err();
            assert!(matches!(e, Error::OutOfRange { .. }), "{e}");
            assert_eq!(enc(DataType::Bf16Vector, v, true).unwrap().len(), 2 * v.len());
        }
        assert_eq!(enc(DataType::Bf16, Values::F32(&[f32::MAX]), true).unwrap(), vec![0x7f, 0x7f]);
        assert_eq!(enc(DataType::Bf16, Values::F32(&[f32::NEG_INFINITY]), false).unwrap(), vec![0x80, 0xff]);
        assert_eq!(enc(DataType::Bf16, Values::I32(&[3]), false).unwrap(), vec![0x40, 0x40]);
    }

    #[test]
    fn q8_goes_vector_by_vector() {
        let mut out = Vec::new();
        append_q8(&mut out, DataType::Q8Vector, Values::F64(&[0.0, 127.0, -1.0, 2.0]), [2, 2].into_iter(), false)
            .unwrap();
        assert_eq!(out, [&1f32.to_le_bytes()[..], &[0, 127], &(2f32 / 127.0).to_le_bytes(), &[0xc0, 127]].concat());
        let e = append_q8(&mut out, DataType::Q8Vector, Values::F32(&[1.0, 2.0, f32::NAN]), [1, 2].into_iter(), false)
            .unwrap_err();
        assert_eq!(e.to_string().split(" cannot").next(), Some("feature 2: NaN"));
        let e = append_q8(&mut out, DataType::Q8Vector, Values::F64(&[1e300]), [1].into_iter(), false).unwrap_err();
        assert!(matches!(e, Error::OutOfRange { feature: 0, .. }), "{e}");
        assert!(enc(DataType::Q8Vector, Values::F32(&[1.0]), false).is_err());
        assert!(append_q8(&mut out, DataType::Q8Vector, Values::Str(&[b"x"]), [1].into_iter(), false).is_err());
    }

    #[test]
    fn strings_are_not_numbers() {
        assert!(enc(DataType::Fp32, Values::Str(&[b"x"]), false).is_err());
        assert!(enc(DataType::String, Values::F32(&[1.0]), false).is_err());
    }
}
