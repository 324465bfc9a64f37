//! String forms of cells for `RetrieveDecodedResult`, as the reference renders them: scalars like Go's
//! `%v` (floats through float32, shortest round-trip digits, exponent below 1e-4 or from 1e21), bools
//! `true`/`false`, vectors' elements joined with `:` (floats in plain shortest decimal). Unlike the
//! reference, string vectors use their vector length, not the string length.

use std::fmt::Write;

use crate::cell;
use crate::dtype::DataType;
use crate::error::Result;
use crate::psdb::Array;

/// Go's `strconv.FormatFloat(x, 'g', -1, 32)`, which `%v` uses for float32.
pub fn go_g(x: f32) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "-1.2345e-7".
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').expect("`{:e}` always has an exponent");
    let exp: i32 = exp.parse().expect("integer exponent");
    if (-4..21).contains(&exp) {
        format!("{x}")
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

fn join<T>(v: &[T], f: impl Fn(&T) -> String) -> String {
    let mut out = String::new();
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&f(x));
    }
    out
}

/// Renders one cell of `dtype` (`width` values for vectors).
pub fn cell_string(dtype: DataType, c: &[u8], width: u32) -> Result<String> {
    let arr = cell::decode(dtype, c, width)?;
    let vector = dtype.is_vector();
    let plain = |x: f64| {
        let mut s = String::new();
        let _ = write!(s, "{x}");
        s
    };
    Ok(match arr {
        Array::F32(v) if vector => join(&v, |x| format!("{x}")),
        Array::F32(v) => go_g(v[0]),
        // FP64 scalars also go through float32, as the reference does.
        Array::F64(v) if vector => join(&v, |&x| plain(x)),
        Array::F64(v) => go_g(v[0] as f32),
        Array::I8(v) => join(&v, ToString::to_string),
        Array::I16(v) => join(&v, ToString::to_string),
        Array::I32(v) => join(&v, ToString::to_string),
        Array::I64(v) => join(&v, ToString::to_string),
        Array::U8(v) => join(&v, ToString::to_string),
        Array::U16(v) => join(&v, ToString::to_string),
        Array::U32(v) => join(&v, ToString::to_string),
        Array::U64(v) => join(&v, ToString::to_string),
        Array::Bool(v) => join(&v, ToString::to_string),
        Array::Str(v) => v.join(":"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_float_forms() {
        assert_eq!(go_g(1.5), "1.5");
        assert_eq!(go_g(0.1), "0.1");
        assert_eq!(go_g(100.0), "100");
        assert_eq!(go_g(1e21), "1e+21");
        assert_eq!(go_g(1e20), "100000000000000000000");
        assert_eq!(go_g(0.0001), "0.0001");
        assert_eq!(go_g(0.00001), "1e-05");
        assert_eq!(go_g(-2.5e-7), "-2.5e-07");
        assert_eq!(go_g(f32::NAN), "NaN");
        assert_eq!(go_g(f32::NEG_INFINITY), "-Inf");
    }

    #[test]
    fn cells() {
        assert_eq!(cell_string(DataType::Bool, &[1], 0).unwrap(), "true");
        assert_eq!(cell_string(DataType::BoolVector, &[1, 0], 2).unwrap(), "true:false");
        assert_eq!(cell_string(DataType::Fp16Vector, &[0, 0x3c, 0, 0xc0], 2).unwrap(), "1:-2");
        assert_eq!(cell_string(DataType::StringVector, &[1, 0, 2, 0, b'a', b'b', b'c'], 2).unwrap(), "a:bc");
        assert_eq!(cell_string(DataType::Int8, &[0xff], 0).unwrap(), "-1");
        assert_eq!(cell_string(DataType::Fp64, &0.1f64.to_le_bytes(), 0).unwrap(), "0.1");
    }
}
