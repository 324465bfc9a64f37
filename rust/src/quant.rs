//! Retrieval-time down-quantization: a request label `"emb@DataTypeFP16Vector"` asks for feature
//! `emb` converted to a narrower float type in the response.
//!
//! Rules (as the reference): source and target are both float types and both scalar or both
//! vector; the target's precision rank is strictly lower (FP64 > FP32 > FP16 > FP8). Conversion goes
//! through float32 and then the type's encoder, so results are bit-identical to the reference.

use crate::dtype::{DataType, Element};
use crate::error::{Error, Result};
use crate::float;

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

/// Converts one feature's response bytes (LE elements of `from`) into `to`, appending to `out`.
pub fn convert(bytes: &[u8], from: DataType, to: DataType, out: &mut Vec<u8>) -> Result<()> {
    check(from, to)?;
    let src = from.known_element()?;
    let dst = to.known_element()?;
    let width = src.size();
    if bytes.len() % width != 0 {
        return Err(Error::corrupt(format!("{} bytes is not a whole number of {from} elements", bytes.len())));
    }
    crate::limits::try_reserve(out, bytes.len() / width * dst.size(), "quantized values")?;
    for c in bytes.chunks_exact(width) {
        let x = match src {
            Element::Fp64 => f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32,
            Element::Fp32 => f32::from_le_bytes(c.try_into().expect("4 bytes")),
            Element::Fp16 => float::f16_to_f32(u16::from_le_bytes([c[0], c[1]])),
            Element::Fp8E4M3 => float::e4m3_to_f32(c[0]),
            _ => float::e5m2_to_f32(c[0]),
        };
        match dst {
            Element::Fp32 => out.extend_from_slice(&x.to_le_bytes()),
            Element::Fp16 => out.extend_from_slice(&float::f32_to_f16(x).to_le_bytes()),
            Element::Fp8E4M3 => out.push(float::f32_to_e4m3(x)),
            _ => out.push(float::f32_to_e5m2(x)),
        }
    }
    Ok(())
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
