//! Typed input values for the write path and their checked narrowing to a block's element type.
//!
//! Values arrive in wide containers (the persist proto sends `double` for every float type and
//! `int32` for int8/int16; numpy arrays can be any dtype). Narrowing is *checked*: an int8 feature
//! given 300 is an error, not 44 as in the reference, and a float that would overflow a low-precision
//! type is rejected unless the caller opts into saturation.

use crate::dtype::{DataType, Element};
use crate::error::{Error, Result};
use crate::float;

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
            out.reserve(src.len() * 8);
            for &x in src {
                out.extend_from_slice(&x.as_f64().to_le_bytes());
            }
        }
        Element::Fp32 => {
            out.reserve(src.len() * 4);
            for (i, &x) in src.iter().enumerate() {
                out.extend_from_slice(&narrow_f32(x.as_f64(), i, dtype, saturate)?.to_le_bytes());
            }
        }
        Element::Fp16 => {
            out.reserve(src.len() * 2);
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
        Element::Fp8E4M3 | Element::Fp8E5M2 => {
            let e4m3 = element == Element::Fp8E4M3;
            out.reserve(src.len());
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
    out.reserve(src.len() * W);
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
    fn strings_are_not_numbers() {
        assert!(enc(DataType::Fp32, Values::Str(&[b"x"]), false).is_err());
        assert!(enc(DataType::String, Values::F32(&[1.0]), false).is_err());
    }
}
