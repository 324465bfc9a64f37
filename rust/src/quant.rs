//! Retrieval-time down-quantization: a request label `"emb@DataTypeFP16Vector"` asks for feature
//! `emb` converted to a narrower float type in the response.
//!
//! Rules (as the reference): source and target are both float types and both scalar or both
//! vector; the target's precision rank is strictly lower (FP64 > FP32 > FP16 > BF16 > Q8 > FP8, our
//! extensions placed by significand bits). Conversion goes through float32 and then the type's
//! encoder, so results are bit-identical to the reference for its types. A Q8 target is quantized
//! per vector with saturation (±Inf → ±127 × scale, NaN → code −128): a read never fails on what is
//! stored. The target may be named in scalar form on a vector feature (`emb@BF16`, `emb@FP16`): it
//! means that kind's vector type ([`target`]).

use crate::dtype::{DataType, Element};
use crate::error::{Error, Result};
use crate::{bf16, float, q8};

/// Splits `"label@DataTypeX"` into the base label and the requested target type.
pub fn parse_label(label: &str) -> Result<(&str, Option<DataType>)> {
    match label.split_once('@') {
        None => Ok((label, None)),
        Some((base, ty)) => {
            if base.is_empty() {
                return Err(Error::InvalidInput(format!("feature label {label:?} has an empty name")));
            }
            let dtype: DataType = ty.parse()?;
            Ok((base, Some(dtype)))
        }
    }
}

/// The type a feature stored as `from` is served as when `requested` is asked for: the requested type,
/// or its vector form when the feature is a vector and the request named the scalar form.
pub fn target(from: DataType, requested: DataType) -> DataType {
    if from.is_vector() && !requested.is_vector() {
        if let Some(v) = requested.element().and_then(|e| DataType::with_shape(e, true)) {
            return v;
        }
    }
    requested
}

/// Checks that `from` may be served as `to`.
pub fn check(from: DataType, to: DataType) -> Result<()> {
    let ranks = from.element().and_then(Element::float_rank).zip(to.element().and_then(Element::float_rank));
    let ok = matches!(ranks, Some((f, t)) if t < f)
        && from.is_vector() == to.is_vector()
        && to.element() != Some(Element::Fp64);
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "cannot quantize {from} to {to}: both must be float types of the same shape and the target strictly narrower"
        )))
    }
}

/// Converts one feature's response bytes (its cell in `from`) into `to`, appending to `out`.
///
/// The cell is widened to float32 and narrowed again a slice at a time (the vectorised codecs), not
/// value by value.
pub fn convert(bytes: &[u8], from: DataType, to: DataType, out: &mut Vec<u8>) -> Result<()> {
    check(from, to)?;
    let src = from.known_element()?;
    let dst = to.known_element()?;
    let values = widen_cell(bytes, from, src)?;
    let bound = values.len() * dst.size() + if to.is_vector() { dst.vector_prefix() } else { 0 };
    crate::limits::try_reserve(out, bound, "quantized values")?;
    let at = out.len();
    match dst {
        Element::Q8 => q8::encode(&values, true, out).expect("saturating quantization accepts every value"),
        Element::Fp32 => out.extend(values.iter().flat_map(|x| x.to_le_bytes())),
        Element::Fp16 => float::encode_f16_le(&values, out),
        Element::Bf16 => {
            let mut codes = vec![0u16; values.len()];
            bf16::encode_bf16_slice(&values, &mut codes);
            out.extend(codes.iter().flat_map(|c| c.to_le_bytes()));
        }
        Element::Fp8E4M3 => {
            out.resize(at + values.len(), 0);
            float::encode_e4m3_slice(&values, &mut out[at..]);
        }
        _ => {
            out.resize(at + values.len(), 0);
            float::encode_e5m2_slice(&values, &mut out[at..]);
        }
    }
    Ok(())
}

/// Every value of a cell of `from` as float32 (Q8 dequantized), decoded a slice at a time.
fn widen_cell(bytes: &[u8], from: DataType, src: Element) -> Result<Vec<f32>> {
    if src == Element::Q8 {
        if bytes.len() < q8::SCALE_BYTES {
            return Err(Error::corrupt(format!("{} bytes cannot hold a {from} cell's scale", bytes.len())));
        }
        let mut v = Vec::with_capacity(bytes.len() - q8::SCALE_BYTES);
        q8::decode_append(bytes, &mut v);
        return Ok(v);
    }
    let width = src.size();
    if bytes.len() % width != 0 {
        return Err(Error::corrupt(format!("{} bytes is not a whole number of {from} elements", bytes.len())));
    }
    let mut v = vec![0f32; bytes.len() / width];
    match src {
        Element::Fp64 => {
            for (d, c) in v.iter_mut().zip(bytes.chunks_exact(8)) {
                *d = f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32;
            }
        }
        Element::Fp32 => {
            for (d, c) in v.iter_mut().zip(bytes.chunks_exact(4)) {
                *d = f32::from_le_bytes(c.try_into().expect("4 bytes"));
            }
        }
        Element::Fp16 => float::decode_f16_le(bytes, &mut v),
        Element::Bf16 => bf16::decode_bf16_le(bytes, &mut v),
        Element::Fp8E4M3 => float::decode_e4m3_slice(bytes, &mut v),
        _ => float::decode_e5m2_slice(bytes, &mut v),
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(parse_label("emb").unwrap(), ("emb", None));
        assert_eq!(parse_label("emb@DataTypeFP16Vector").unwrap(), ("emb", Some(DataType::Fp16Vector)));
        assert!(parse_label("emb@DataTypeFP7").is_err());
        assert!(parse_label("@DataTypeFP16").is_err());
    }

    #[test]
    fn allowed_pairs() {
        use DataType as T;
        assert!(check(T::Fp32, T::Fp16).is_ok());
        assert!(check(T::Fp64, T::Fp8E4M3).is_ok());
        assert!(check(T::Fp16Vector, T::Fp8E5M2Vector).is_ok());
        assert!(check(T::Fp16, T::Fp32).is_err());
        assert!(check(T::Fp8E4M3, T::Fp8E5M2).is_err());
        assert!(check(T::Fp32, T::Fp16Vector).is_err());
        assert!(check(T::Int32, T::Int8).is_err());
        assert!(check(T::Fp32, T::Fp32).is_err());
        // The extensions, by significand bits: FP16 > BF16 > Q8 > FP8.
        assert!(check(T::Fp32Vector, T::Bf16Vector).is_ok());
        assert!(check(T::Fp16Vector, T::Bf16Vector).is_ok());
        assert!(check(T::Fp16Vector, T::Q8Vector).is_ok());
        assert!(check(T::Bf16Vector, T::Q8Vector).is_ok());
        assert!(check(T::Q8Vector, T::Fp8E4M3Vector).is_ok());
        assert!(check(T::Fp64, T::Bf16).is_ok());
        assert!(check(T::Bf16Vector, T::Fp16Vector).is_err());
        assert!(check(T::Q8Vector, T::Bf16Vector).is_err());
        assert!(check(T::Fp32, T::Q8Vector).is_err());
        assert!(check(T::Fp8E4M3Vector, T::Q8Vector).is_err());
    }

    #[test]
    fn scalar_names_on_vectors_mean_the_vector_form() {
        use DataType as T;
        assert_eq!(target(T::Fp32Vector, T::Bf16), T::Bf16Vector);
        assert_eq!(target(T::Fp32Vector, T::Fp16), T::Fp16Vector);
        assert_eq!(target(T::Fp32Vector, "q8".parse().unwrap()), T::Q8Vector);
        assert_eq!(target(T::Fp32, T::Bf16), T::Bf16);
        // A vector name on a scalar stays what it is, and check() refuses it.
        assert_eq!(target(T::Fp32, T::Bf16Vector), T::Bf16Vector);
    }

    #[test]
    fn converts_to_and_from_the_extensions() {
        let mut out = Vec::new();
        let src: Vec<u8> = [1.0f32, -2.0, 127.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        convert(&src, DataType::Fp32Vector, DataType::Bf16Vector, &mut out).unwrap();
        assert_eq!(out, vec![0x80, 0x3f, 0x00, 0xc0, 0xfe, 0x42]);
        out.clear();
        convert(&src, DataType::Fp32Vector, DataType::Q8Vector, &mut out).unwrap();
        assert_eq!(out, [&1f32.to_le_bytes()[..], &[1, 0xfe, 127]].concat());
        // Non-finite stored values saturate instead of failing the read.
        let odd: Vec<u8> = [f32::INFINITY, 1.0, f32::NAN].iter().flat_map(|x| x.to_le_bytes()).collect();
        out.clear();
        convert(&odd, DataType::Fp32Vector, DataType::Q8Vector, &mut out).unwrap();
        assert_eq!(&out[4..], &[127, 127, 0x80]);
        // From fp16 and bf16 sources, and Q8 onwards to FP8.
        out.clear();
        convert(&[0x00, 0x3c, 0x00, 0xc0], DataType::Fp16Vector, DataType::Bf16Vector, &mut out).unwrap();
        assert_eq!(out, vec![0x80, 0x3f, 0x00, 0xc0]);
        let q: Vec<u8> = [&1f32.to_le_bytes()[..], &[1, 0xfe]].concat();
        out.clear();
        convert(&q, DataType::Q8Vector, DataType::Fp8E4M3Vector, &mut out).unwrap();
        assert_eq!(out, vec![0x38, 0xc0]);
        assert!(convert(&[1, 2], DataType::Q8Vector, DataType::Fp8E4M3Vector, &mut out).is_err());
    }

    #[test]
    fn converts_through_f32() {
        let mut out = Vec::new();
        let src: Vec<u8> = [1.0f32, -2.0, 448.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        convert(&src, DataType::Fp32Vector, DataType::Fp8E4M3Vector, &mut out).unwrap();
        assert_eq!(out, vec![0x38, 0xc0, 0x7e]);
        out.clear();
        convert(&1.0f64.to_le_bytes(), DataType::Fp64, DataType::Fp16, &mut out).unwrap();
        assert_eq!(out, vec![0x00, 0x3c]);
        assert!(convert(&[1, 2, 3], DataType::Fp32, DataType::Fp16, &mut out).is_err());
    }
}
