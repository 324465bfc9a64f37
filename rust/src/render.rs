//! String forms of cells for `RetrieveDecodedResult` (gRPC and HTTP alike), as the reference renders
//! them (facts file §8.5): a scalar is Go's `%v` of the decoded Go value, so floats go through
//! [`gofmt::push_g`] at their Go width (FP64 as float64; FP32, FP16 and FP8 as the float32 they decode
//! to), integers in decimal and bools `true`/`false`; a vector's elements are joined with `:`, floats
//! through [`gofmt::push_f`] (shortest, never an exponent), integers in decimal, bools `1`/`0`, strings
//! as they are. Unlike the reference, string vectors use their vector length, not the string length.
//!
//! A new data type is one arm in [`cell_string`] (its decoded [`Array`] and which form its values take).

use std::fmt::{Display, Write};

use crate::cell;
use crate::dtype::DataType;
use crate::error::Result;
use crate::gofmt::{self, GoFloat};
use crate::psdb::Array;

/// Appends `items` to `out` separated by `:`, each through `f`.
fn join<T: Copy>(out: &mut String, items: &[T], mut f: impl FnMut(&mut String, T)) {
    for (i, &x) in items.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        f(out, x);
    }
}

fn decimal<T: Display>(out: &mut String, x: T) {
    let _ = write!(out, "{x}"); // writing to a String cannot fail
}

/// Floats: a scalar in Go's `%v` form, a vector's elements in shortest `'f'` form.
fn floats<T: Copy + Into<GoFloat>>(out: &mut String, v: &[T], vector: bool) {
    if vector {
        join(out, v, |o, x| gofmt::push_f(o, x));
    } else {
        gofmt::push_g(out, v[0]);
    }
}

/// Renders one cell of `dtype` (`width` values for vectors).
pub fn cell_string(dtype: DataType, c: &[u8], width: u32) -> Result<String> {
    let arr = cell::decode(dtype, c, width)?;
    let vector = dtype.is_vector();
    let mut out = String::new();
    match &arr {
        Array::F32(v) => floats(&mut out, v, vector),
        Array::F64(v) => floats(&mut out, v, vector),
        Array::I8(v) => join(&mut out, v, decimal),
        Array::I16(v) => join(&mut out, v, decimal),
        Array::I32(v) => join(&mut out, v, decimal),
        Array::I64(v) => join(&mut out, v, decimal),
        Array::U8(v) => join(&mut out, v, decimal),
        Array::U16(v) => join(&mut out, v, decimal),
        Array::U32(v) => join(&mut out, v, decimal),
        Array::U64(v) => join(&mut out, v, decimal),
        Array::Bool(v) if vector => join(&mut out, v, |o, b| o.push(if b { '1' } else { '0' })),
        Array::Bool(v) => out.push_str(if v[0] { "true" } else { "false" }),
        Array::Str(v) => {
            for (i, s) in v.iter().enumerate() {
                if i > 0 {
                    out.push(':');
                }
                out.push_str(s);
            }
        }
        // `cell::decode` widens bf16 and Q8 to F32 (above); their native forms read the same.
        Array::Bf16(v) => {
            let x: Vec<f32> = v.iter().map(|&b| crate::bf16::bf16_to_f32(b)).collect();
            floats(&mut out, &x, vector);
        }
        Array::Q8 { codes, scales } => {
            let mut x = vec![0f32; codes.len()];
            crate::q8::dequantize(codes, scales.first().copied().unwrap_or(0.0), &mut x);
            floats(&mut out, &x, vector);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells() {
        assert_eq!(cell_string(DataType::Bool, &[1], 0).unwrap(), "true");
        assert_eq!(cell_string(DataType::Bool, &[0], 0).unwrap(), "false");
        assert_eq!(cell_string(DataType::BoolVector, &[1, 0], 2).unwrap(), "1:0");
        assert_eq!(cell_string(DataType::Fp16Vector, &[0, 0x3c, 0, 0xc0], 2).unwrap(), "1:-2");
        assert_eq!(cell_string(DataType::StringVector, &[1, 0, 2, 0, b'a', b'b', b'c'], 2).unwrap(), "a:bc");
        assert_eq!(cell_string(DataType::Int8, &[0xff], 0).unwrap(), "-1");
        assert_eq!(cell_string(DataType::Fp64, &0.1f64.to_le_bytes(), 0).unwrap(), "0.1");
        // FP64 at float64 width: through float32 these were "-Inf", "0" and "3.1415927".
        assert_eq!(cell_string(DataType::Fp64, &(-1e300f64).to_le_bytes(), 0).unwrap(), "-1e+300");
        assert_eq!(cell_string(DataType::Fp64, &5e-324f64.to_le_bytes(), 0).unwrap(), "5e-324");
        let pi = std::f64::consts::PI.to_le_bytes();
        assert_eq!(cell_string(DataType::Fp64, &pi, 0).unwrap(), "3.141592653589793");
        assert_eq!(
            cell_string(DataType::Fp64Vector, &[pi, 1e21f64.to_le_bytes()].concat(), 2).unwrap(),
            "3.141592653589793:1000000000000000000000"
        );
        assert_eq!(cell_string(DataType::Fp32, &1_938_266_000f32.to_le_bytes(), 0).unwrap(), "1.938266e+09");
        assert_eq!(cell_string(DataType::Fp32Vector, &1_938_266_000f32.to_le_bytes(), 1).unwrap(), "1938266000");
        // FP16 0x2E66 decodes to the float32 0.0999755859375, printed at float32 width.
        assert_eq!(cell_string(DataType::Fp16, &[0x66, 0x2e], 0).unwrap(), "0.099975586");
        assert_eq!(cell_string(DataType::Bf16, &[0xc0, 0x3f], 0).unwrap(), "1.5");
        assert_eq!(cell_string(DataType::Bf16Vector, &[0x80, 0x3f, 0x00, 0xc0], 2).unwrap(), "1:-2");
        let q8 = [&0.5f32.to_le_bytes()[..], &[2, 0xff, 0]].concat();
        assert_eq!(cell_string(DataType::Q8Vector, &q8, 3).unwrap(), "1:-0.5:0");
    }
}
