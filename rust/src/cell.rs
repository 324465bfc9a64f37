//! One feature's value in the response ("cell") encoding: what a retrieve response carries per
//! feature and what the registry stores as a feature's default, so defaults and live data can never
//! disagree (the reference stores bool `true` as `0x80`, which reads back as false).
//!
//! Numbers: LE elements in the stored width (vectors concatenated). Bool: one byte 0/1 per element.
//! String: raw UTF-8 bytes. String vector: `[u16 LE length × n][bytes]`. Q8 vector: the float32 LE
//! scale, then the n int8 codes (the block's own bytes for that vector).

use crate::dtype::{DataType, Element};
use crate::error::{Error, Result};
use crate::meta::BlockMeta;
use crate::psdb::{self, Block, EncodeOptions};
use crate::values::Values;

/// Layout of a single feature of `dtype` (string length for strings, vector length for vectors).
fn single(dtype: DataType, string_len: u32, vector_len: u32) -> Result<BlockMeta> {
    let slens = if dtype.is_string() { vec![string_len] } else { Vec::new() };
    let vlens = if dtype.is_vector() { vec![vector_len] } else { Vec::new() };
    BlockMeta::new(dtype, 1, 1, slens, vlens)
}

/// Encodes one feature's values (1 value, or `vector_len` for vectors) in the cell encoding, with
/// the same checks as a block write (range, length, count).
pub fn encode(
    dtype: DataType,
    string_len: u32,
    vector_len: u32,
    values: Values<'_>,
    saturate: bool,
) -> Result<Vec<u8>> {
    let meta = single(dtype, string_len, vector_len)?;
    let opts = EncodeOptions { expiry_at: 0, now: 0, compress: false, saturate };
    let block = psdb::encode(&meta, values, &opts)?;
    match psdb::decode(&block, &meta, 0)? {
        Block::Present(view) => Ok(view.feature(0).into_owned()),
        Block::Missing | Block::Expired(_) => unreachable!("a fresh never-expiring block is present"),
    }
}

/// The most bytes one cell of `dtype` can take: a feature's share of a response row, and of a
/// registry row's size bound. `string_len` is the booked string length (strings), `vector_len` the
/// vector length (vectors; ignored for scalars).
pub fn max_len(dtype: DataType, string_len: u32, vector_len: u32) -> Result<u64> {
    let e = dtype.known_element()?;
    let n = if dtype.is_vector() { u64::from(vector_len) } else { 1 };
    Ok(match e {
        Element::Bool => n,
        Element::String if dtype.is_vector() => n * (2 + u64::from(string_len)),
        Element::String => u64::from(string_len),
        _ if dtype.is_vector() => n * e.size() as u64 + e.vector_prefix() as u64,
        _ => n * e.size() as u64,
    })
}

/// Decodes a cell back to its values (fp8/fp16 widened to f32). `vector_len` is the expected number
/// of elements for vector types (ignored for scalars).
pub fn decode(dtype: DataType, cell: &[u8], vector_len: u32) -> Result<psdb::Array> {
    let e = dtype.known_element()?;
    let n = if dtype.is_vector() { vector_len as usize } else { 1 };
    let bad = |what: String| Error::corrupt(format!("{dtype} cell: {what}"));
    let payload: Vec<u8> = match e {
        Element::Bool => {
            if cell.len() != n || cell.iter().any(|&b| b > 1) {
                return Err(bad(format!("expected {n} bytes of 0/1, got {cell:?}")));
            }
            psdb::pack_bits(cell).collect()
        }
        Element::String if !dtype.is_vector() => {
            let len = u16::try_from(cell.len()).map_err(|_| bad(format!("{} bytes is too long", cell.len())))?;
            let mut p = len.to_le_bytes().to_vec();
            p.extend_from_slice(cell);
            p
        }
        Element::String => cell.to_vec(),
        _ => {
            let want = n * e.size() + if dtype.is_vector() { e.vector_prefix() } else { 0 };
            if cell.len() != want {
                return Err(bad(format!("expected {want} bytes, got {}", cell.len())));
            }
            cell.to_vec()
        }
    };
    let meta = single(dtype, u32::from(u16::MAX), vector_len.max(1))?;
    let mut block = psdb::Header::bytes_for(dtype, psdb::bool_last_index(n));
    block.extend_from_slice(&payload);
    match psdb::decode(&block, &meta, 0)? {
        Block::Present(view) => view.to_array(),
        Block::Missing | Block::Expired(_) => unreachable!("header never expires"),
    }
}

/// Appends the values of a cell of `dtype` to `out`: widened like [`psdb::BlockView::to_array`]
/// (fp8/fp16/bf16 → f32, Q8 dequantized) into an F32 array, or as they are into a native
/// (`Bf16`, `Q8`) one. `out` must be an array kind of [`empty_array`] for `dtype`.
pub fn append_to(out: &mut psdb::Array, dtype: DataType, cell: &[u8]) -> Result<()> {
    use crate::{bf16, float, q8};
    use psdb::Array as A;
    fn le<const W: usize, T>(v: &mut Vec<T>, cell: &[u8], f: fn([u8; W]) -> T) -> Result<()> {
        if cell.len() % W != 0 {
            return Err(Error::corrupt(format!(
                "cell of {} bytes is not a whole number of {W}-byte values",
                cell.len()
            )));
        }
        v.extend(cell.chunks_exact(W).map(|c| f(c.try_into().expect("exact chunk"))));
        Ok(())
    }
    match (out, dtype.known_element()?) {
        (A::F32(v), Element::Fp32) => le(v, cell, f32::from_le_bytes),
        (A::F32(v), Element::Fp16) => le(v, cell, |b: [u8; 2]| float::f16_to_f32(u16::from_le_bytes(b))),
        (A::F32(v), Element::Fp8E4M3) => le(v, cell, |b: [u8; 1]| float::e4m3_to_f32(b[0])),
        (A::F32(v), Element::Fp8E5M2) => le(v, cell, |b: [u8; 1]| float::e5m2_to_f32(b[0])),
        (A::F32(v), Element::Bf16) => le(v, cell, |b: [u8; 2]| bf16::bf16_to_f32(u16::from_le_bytes(b))),
        (A::Bf16(v), Element::Bf16) | (A::U16(v), Element::Uint16) => le(v, cell, u16::from_le_bytes),
        (A::F32(v), Element::Q8) => {
            if cell.len() < q8::SCALE_BYTES {
                return Err(Error::corrupt("Q8 cell shorter than its scale"));
            }
            q8::decode_append(cell, v);
            Ok(())
        }
        (A::Q8 { codes, scales }, Element::Q8) => {
            scales.push(q8::cell_scale(cell).ok_or_else(|| Error::corrupt("Q8 cell shorter than its scale"))?);
            codes.extend_from_slice(q8::codes_of(&cell[q8::SCALE_BYTES..]));
            Ok(())
        }
        (A::F64(v), Element::Fp64) => le(v, cell, f64::from_le_bytes),
        (A::I8(v), Element::Int8) => le(v, cell, i8::from_le_bytes),
        (A::I16(v), Element::Int16) => le(v, cell, i16::from_le_bytes),
        (A::I32(v), Element::Int32) => le(v, cell, i32::from_le_bytes),
        (A::I64(v), Element::Int64) => le(v, cell, i64::from_le_bytes),
        (A::U8(v), Element::Uint8) => le(v, cell, u8::from_le_bytes),
        (A::U32(v), Element::Uint32) => le(v, cell, u32::from_le_bytes),
        (A::U64(v), Element::Uint64) => le(v, cell, u64::from_le_bytes),
        (A::Bool(v), Element::Bool) => le(v, cell, |b: [u8; 1]| b[0] != 0),
        (A::Str(v), Element::String) if !dtype.is_vector() => {
            v.push(std::str::from_utf8(cell).map_err(|_| Error::corrupt("string cell is not UTF-8"))?.to_owned());
            Ok(())
        }
        (A::Str(v), Element::String) => {
            for s in crate::values::string_vector_items(cell, None)? {
                v.push(std::str::from_utf8(s).map_err(|_| Error::corrupt("string cell is not UTF-8"))?.to_owned());
            }
            Ok(())
        }
        (_, element) => Err(Error::InvalidInput(format!("a {element:?} cell cannot be added to this output array"))),
    }
}

/// How decoded float features come out of a retrieve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FloatForm {
    /// Every float narrower than float32 widened to float32 (Q8 dequantized): one array type for any
    /// mix of them.
    #[default]
    Widened,
    /// bf16 as its bit patterns ([`psdb::Array::Bf16`]) and Q8 as codes plus per-vector scales
    /// ([`psdb::Array::Q8`]), for callers that compute on them as they are; other types as widened.
    Native,
}

/// An empty output array of the kind `dtype`'s cells widen to, with room for `capacity` values
/// (an allocation the allocator refuses is an error).
pub fn empty_array(dtype: DataType, capacity: usize) -> Result<psdb::Array> {
    empty_array_as(dtype, capacity, FloatForm::Widened)
}

/// [`empty_array`] for the given [`FloatForm`].
pub fn empty_array_as(dtype: DataType, capacity: usize, form: FloatForm) -> Result<psdb::Array> {
    use crate::limits::try_vec;
    use psdb::Array as A;
    const WHAT: &str = "an output array";
    Ok(match dtype.known_element()? {
        Element::Bf16 if form == FloatForm::Native => A::Bf16(try_vec(capacity, WHAT)?),
        Element::Q8 if form == FloatForm::Native => A::Q8 { codes: try_vec(capacity, WHAT)?, scales: Vec::new() },
        Element::Fp32 | Element::Fp16 | Element::Fp8E4M3 | Element::Fp8E5M2 | Element::Bf16 | Element::Q8 => {
            A::F32(try_vec(capacity, WHAT)?)
        }
        Element::Fp64 => A::F64(try_vec(capacity, WHAT)?),
        Element::Int8 => A::I8(try_vec(capacity, WHAT)?),
        Element::Int16 => A::I16(try_vec(capacity, WHAT)?),
        Element::Int32 => A::I32(try_vec(capacity, WHAT)?),
        Element::Int64 => A::I64(try_vec(capacity, WHAT)?),
        Element::Uint8 => A::U8(try_vec(capacity, WHAT)?),
        Element::Uint16 => A::U16(try_vec(capacity, WHAT)?),
        Element::Uint32 => A::U32(try_vec(capacity, WHAT)?),
        Element::Uint64 => A::U64(try_vec(capacity, WHAT)?),
        Element::Bool => A::Bool(try_vec(capacity, WHAT)?),
        Element::String => A::Str(try_vec(capacity, WHAT)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::psdb::Array;

    #[test]
    fn bool_default_true_is_one() {
        assert_eq!(encode(DataType::Bool, 0, 0, Values::Bool(&[true]), false).unwrap(), vec![1]);
        assert_eq!(decode(DataType::Bool, &[1], 0).unwrap(), Array::Bool(vec![true]));
        assert!(decode(DataType::Bool, &[0x80], 0).is_err());
    }

    #[test]
    fn cells_round_trip() {
        let c = encode(DataType::BoolVector, 0, 3, Values::Bool(&[true, false, true]), false).unwrap();
        assert_eq!(c, vec![1, 0, 1]);
        assert_eq!(decode(DataType::BoolVector, &c, 3).unwrap(), Array::Bool(vec![true, false, true]));
        let c = encode(DataType::StringVector, 5, 2, Values::Str(&[b"ab", b"c"]), false).unwrap();
        assert_eq!(c, vec![2, 0, 1, 0, b'a', b'b', b'c']);
        assert_eq!(decode(DataType::StringVector, &c, 2).unwrap(), Array::Str(vec!["ab".into(), "c".into()]));
        let c = encode(DataType::String, 5, 0, Values::Str(&[b"hey"]), false).unwrap();
        assert_eq!(c, b"hey");
        assert_eq!(decode(DataType::String, &c, 0).unwrap(), Array::Str(vec!["hey".into()]));
        let c = encode(DataType::Fp16Vector, 0, 2, Values::F32(&[1.0, -2.0]), false).unwrap();
        assert_eq!(c, vec![0x00, 0x3c, 0x00, 0xc0]);
        assert_eq!(decode(DataType::Fp16Vector, &c, 2).unwrap(), Array::F32(vec![1.0, -2.0]));
        assert!(encode(DataType::Int8, 0, 0, Values::I32(&[300]), false).is_err());
        assert!(encode(DataType::String, 2, 0, Values::Str(&[b"hey"]), false).is_err());
        assert!(decode(DataType::Fp32, &[0, 0], 0).is_err());
        let c = encode(DataType::Bf16Vector, 0, 2, Values::F64(&[1.0, -2.0]), false).unwrap();
        assert_eq!(c, vec![0x80, 0x3f, 0x00, 0xc0]);
        assert_eq!(decode(DataType::Bf16Vector, &c, 2).unwrap(), Array::F32(vec![1.0, -2.0]));
        let c = encode(DataType::Q8Vector, 0, 3, Values::F64(&[0.0, 254.0, -127.0]), false).unwrap();
        assert_eq!(c, [&2f32.to_le_bytes()[..], &[0, 127, 0xc0]].concat()); // -63.5: ties to even
        assert_eq!(decode(DataType::Q8Vector, &c, 3).unwrap(), Array::F32(vec![0.0, 254.0, -128.0]));
        assert!(decode(DataType::Q8Vector, &c[1..], 3).is_err());
    }

    #[test]
    fn native_forms_keep_bf16_bits_and_q8_codes() {
        let mut bits = empty_array_as(DataType::Bf16Vector, 4, FloatForm::Native).unwrap();
        append_to(&mut bits, DataType::Bf16Vector, &[0x80, 0x3f, 0x00, 0xc0]).unwrap();
        assert_eq!(bits, Array::Bf16(vec![0x3f80, 0xc000]));
        let cell = [&2f32.to_le_bytes()[..], &[0, 127, 0xc1]].concat();
        let mut q = empty_array_as(DataType::Q8Vector, 6, FloatForm::Native).unwrap();
        append_to(&mut q, DataType::Q8Vector, &cell).unwrap();
        append_to(&mut q, DataType::Q8Vector, &cell).unwrap();
        assert_eq!(q, Array::Q8 { codes: vec![0, 127, -63, 0, 127, -63], scales: vec![2.0, 2.0] });
        let mut wide = empty_array_as(DataType::Q8Vector, 3, FloatForm::Widened).unwrap();
        append_to(&mut wide, DataType::Q8Vector, &cell).unwrap();
        assert_eq!(wide, Array::F32(vec![0.0, 254.0, -126.0]));
        assert!(append_to(&mut wide, DataType::Q8Vector, &[0, 0]).is_err());
        assert_eq!(empty_array_as(DataType::Fp16, 0, FloatForm::Native).unwrap(), Array::F32(vec![]));
    }

    #[test]
    fn max_len_bounds_every_cell_of_the_layout() {
        let full = [b'x'; 7];
        for (dtype, slen, vlen, values) in [
            (DataType::String, 7, 0, Values::Str(&[&full[..]])),
            (DataType::StringVector, 7, 3, Values::Str(&[&full[..], &full[..], &full[..]])),
            (DataType::BoolVector, 0, 3, Values::Bool(&[true, false, true])),
            (DataType::Fp64Vector, 0, 3, Values::F64(&[1.0, 2.0, 3.0])),
            (DataType::Int16, 0, 0, Values::I32(&[5])),
        ] {
            let cell = encode(dtype, slen, vlen, values, false).unwrap();
            assert_eq!(max_len(dtype, slen, vlen).unwrap(), cell.len() as u64, "{dtype}");
        }
        // The largest layouts the registry allows do not overflow.
        assert_eq!(max_len(DataType::StringVector, 65_535, 65_535).unwrap(), 65_535 * 65_537);
        assert_eq!(max_len(DataType::Fp64Vector, 0, u32::MAX).unwrap(), 8 * u64::from(u32::MAX));
        assert!(max_len(DataType::Unknown, 0, 0).is_err());
        assert_eq!(max_len(DataType::Q8Vector, 0, 768).unwrap(), 772);
        assert_eq!(max_len(DataType::Bf16Vector, 0, 768).unwrap(), 1536);
        assert!(empty_array(DataType::Fp64, usize::MAX / 2).is_err());
    }
}
