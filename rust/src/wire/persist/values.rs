//! `persist.Values` (with `Vector` and `FeatureValues`): one feature group's values of one row, in
//! the container its data type travels in (every float type as `double`, int8/int16 as `int32`, …;
//! `container_field` is the one table of it). The server reads them into a block
//! (`build_block`); clients write them from columns ([`to_container`], [`Cells`]).
//!
//! The message is named `Values` as in the proto, so the core's typed values are `Typed` here.

use prost::encoding::{encode_key, encode_varint, WireType};

use crate::catalog::FeatureGroup as CatFg;
use crate::dtype::{DataType, Element};
use crate::error::{Error, Result};
use crate::values::Values as Typed;
use crate::wire::proto::put_bytes;
use crate::{cell, expiry, psdb};

/// `persist.Values`: one container per element kind; a feature group uses the one of its type.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Values {
    #[prost(double, repeated, tag = "1")]
    pub fp32_values: Vec<f64>,
    #[prost(double, repeated, tag = "2")]
    pub fp64_values: Vec<f64>,
    #[prost(int32, repeated, tag = "3")]
    pub int32_values: Vec<i32>,
    #[prost(int64, repeated, tag = "4")]
    pub int64_values: Vec<i64>,
    #[prost(uint32, repeated, tag = "5")]
    pub uint32_values: Vec<u32>,
    #[prost(uint64, repeated, tag = "6")]
    pub uint64_values: Vec<u64>,
    #[prost(string, repeated, tag = "7")]
    pub string_values: Vec<String>,
    #[prost(bool, repeated, tag = "8")]
    pub bool_values: Vec<bool>,
    #[prost(message, repeated, tag = "9")]
    pub vector: Vec<Vector>,
}

/// `persist.Vector`: one vector feature's values.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Vector {
    #[prost(message, optional, tag = "1")]
    pub values: Option<Values>,
}

/// `persist.FeatureValues`: one feature group's values of a row.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FeatureValues {
    #[prost(message, optional, tag = "1")]
    pub values: Option<Values>,
}

/// The `persist.Values` field that carries `dtype`'s values: its number and name (§1.2 of the reference
/// facts). The one table of it: reading here and writing below both use it.
fn container_field(dtype: DataType) -> Result<(u32, &'static str)> {
    use crate::dtype::Element as E;
    Ok(match dtype.known_element()? {
        // The extensions travel as the reference's narrow floats do; Q8 is quantized on the server.
        E::Fp8E5M2 | E::Fp8E4M3 | E::Fp16 | E::Bf16 | E::Fp32 | E::Q8 => (1, "fp32_values"),
        E::Fp64 => (2, "fp64_values"),
        E::Int8 | E::Int16 | E::Int32 => (3, "int32_values"),
        E::Int64 => (4, "int64_values"),
        E::Uint8 | E::Uint16 | E::Uint32 => (5, "uint32_values"),
        E::Uint64 => (6, "uint64_values"),
        E::String => (7, "string_values"),
        E::Bool => (8, "bool_values"),
    })
}

/// Runs `f` on the proto container that carries `fg`'s type, with the container's name.
fn with_container<T>(fg: &CatFg, v: &Values, f: impl FnOnce(Typed<'_>, &'static str) -> Result<T>) -> Result<T> {
    let (tag, name) = container_field(fg.dtype)?;
    let strs: Vec<&[u8]>;
    let vals = match tag {
        1 => Typed::F64(&v.fp32_values),
        2 => Typed::F64(&v.fp64_values),
        3 => Typed::I32(&v.int32_values),
        4 => Typed::I64(&v.int64_values),
        5 => Typed::U32(&v.uint32_values),
        6 => Typed::U64(&v.uint64_values),
        7 => {
            strs = v.string_values.iter().map(String::as_bytes).collect();
            Typed::Str(&strs)
        }
        _ => Typed::Bool(&v.bool_values),
    };
    f(vals, name)
}

/// One FG block from the given features' values, defaults for the rest.
pub(super) fn build_block(fg: &CatFg, positions: &[usize], v: &Values, now: u64, saturate: bool) -> Result<Vec<u8>> {
    let active = fg.active();
    let meta = &active.meta;
    // Every feature of a scalar FG given in block order (what producers usually send): the values are
    // the block's value stream as they are, no cell per feature. On any error the cell-by-cell path
    // below runs to name the offending feature.
    if !fg.dtype.is_vector()
        && positions.len() == meta.n_features()
        && positions.iter().enumerate().all(|(i, &p)| i == p)
    {
        let opts = psdb::EncodeOptions {
            expiry_at: expiry::expiry_for_ttl(fg.ttl_seconds, now)?,
            now,
            compress: true,
            saturate,
        };
        if let Ok(block) = with_container(fg, v, |vals, _| psdb::encode(meta, vals, &opts)) {
            return Ok(block);
        }
    }
    let mut cells: Vec<Option<Vec<u8>>> = vec![None; meta.n_features()];
    let slen = |p: usize| meta.string_lengths().get(p).copied().unwrap_or(0);
    let vlen = |p: usize| meta.vector_lengths().get(p).copied().unwrap_or(0);
    if fg.dtype.is_vector() {
        if v.vector.len() != positions.len() {
            return Err(Error::InvalidInput(format!("{} vectors for {} features", v.vector.len(), positions.len())));
        }
        let empty = Values::default();
        for (&p, vec) in positions.iter().zip(&v.vector) {
            let inner = vec.values.as_ref().unwrap_or(&empty);
            let label = &active.labels[p];
            let cell = with_container(fg, inner, |vals, _| cell::encode(fg.dtype, slen(p), vlen(p), vals, saturate))
                .map_err(|e| Error::InvalidInput(format!("feature {label:?}: {e}")))?;
            cells[p] = Some(cell);
        }
    } else {
        with_container(fg, v, |vals, container| {
            if vals.len() != positions.len() {
                return Err(Error::InvalidInput(format!(
                    "{} values in {container} for {} features (a {} feature group takes its values in {container})",
                    vals.len(),
                    positions.len(),
                    fg.dtype,
                )));
            }
            for (i, &p) in positions.iter().enumerate() {
                let one = vals.slice(i, 1);
                let label = &active.labels[p];
                let cell = cell::encode(fg.dtype, slen(p), 0, one, saturate)
                    .map_err(|e| Error::InvalidInput(format!("feature {label:?}: {e}")))?;
                cells[p] = Some(cell);
            }
            Ok(())
        })?;
    }
    let full: Vec<&[u8]> = cells.iter().enumerate().map(|(p, c)| c.as_deref().unwrap_or(&active.defaults[p])).collect();
    let opts =
        psdb::EncodeOptions { expiry_at: expiry::expiry_for_ttl(fg.ttl_seconds, now)?, now, compress: true, saturate };
    psdb::encode_cells(meta, &full, &opts)
}

/// One FG's values converted to the proto container its data type travels in (§1.2 of the
/// reference facts: every float type as `double`, int8/int16 as `int32`, …).
#[derive(Debug, Clone, PartialEq)]
pub enum Container {
    /// `fp32_values` (FP8/FP16/FP32 types) or `fp64_values`, by the FG's type.
    F64(Vec<f64>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    Bool(Vec<bool>),
}

impl Container {
    fn len(&self) -> usize {
        match self {
            Container::F64(v) => v.len(),
            Container::I32(v) => v.len(),
            Container::I64(v) => v.len(),
            Container::U32(v) => v.len(),
            Container::U64(v) => v.len(),
            Container::Bool(v) => v.len(),
        }
    }

    /// Appends `values[start..start + len]` as the packed field of the container to `out`.
    fn encode_range(&self, dtype: DataType, start: usize, len: usize, out: &mut Vec<u8>) {
        use prost::encoding as pe;
        let end = start + len;
        let tag = container_tag(dtype);
        match self {
            Container::F64(v) => pe::double::encode_packed(tag, &v[start..end], out),
            Container::I32(v) => pe::int32::encode_packed(tag, &v[start..end], out),
            Container::I64(v) => pe::int64::encode_packed(tag, &v[start..end], out),
            Container::U32(v) => pe::uint32::encode_packed(tag, &v[start..end], out),
            Container::U64(v) => pe::uint64::encode_packed(tag, &v[start..end], out),
            Container::Bool(v) => pe::bool::encode_packed(tag, &v[start..end], out),
        }
    }
}

/// Field number of `persist.Values` that carries `dtype`'s values.
fn container_tag(dtype: DataType) -> u32 {
    // An undefined type has no container: such groups are refused before anything is encoded.
    container_field(dtype).map_or(1, |(tag, _)| tag)
}

/// One numeric input value, widened losslessly.
#[derive(Debug, Clone, Copy)]
enum Wide {
    Float(f64),
    Int(i128),
}

trait Widen: Copy {
    fn widen(self) -> Wide;
}

macro_rules! widen_int {
    ($($t:ty),*) => {$(
        impl Widen for $t {
            fn widen(self) -> Wide { Wide::Int(self as i128) }
        }
    )*};
}
widen_int!(i8, i16, i32, i64, u8, u16, u32, u64);

impl Widen for bool {
    fn widen(self) -> Wide {
        Wide::Int(i128::from(self))
    }
}
impl Widen for f32 {
    fn widen(self) -> Wide {
        Wide::Float(f64::from(self))
    }
}
impl Widen for f64 {
    fn widen(self) -> Wide {
        Wide::Float(self)
    }
}

/// Inclusive integer range of an integer element type (bool as 0..=1).
fn int_range(e: Element) -> Option<(i128, i128)> {
    Some(match e {
        Element::Int8 => (i8::MIN.into(), i8::MAX.into()),
        Element::Int16 => (i16::MIN.into(), i16::MAX.into()),
        Element::Int32 => (i32::MIN.into(), i32::MAX.into()),
        Element::Int64 => (i64::MIN.into(), i64::MAX.into()),
        Element::Uint8 => (0, u8::MAX.into()),
        Element::Uint16 => (0, u16::MAX.into()),
        Element::Uint32 => (0, u32::MAX.into()),
        Element::Uint64 => (0, u64::MAX.into()),
        Element::Bool => (0, 1),
        _ => return None,
    })
}

/// Converts `src` to `dtype`'s container. Integers are range-checked against the element type
/// (an int8 feature given 300 fails here, before anything is sent); floats pass through as
/// `double` (the server checks them against the low-precision types). On error, returns the
/// index of the bad value and why.
fn convert_slice<S: Widen>(src: &[S], dtype: DataType) -> std::result::Result<Container, (usize, String)> {
    let element = dtype.element().ok_or((0, format!("{dtype} cannot hold values")))?;
    if dtype.is_string() {
        return Err((0, format!("{dtype} takes str values, not numbers")));
    }
    if element.is_float() {
        return Ok(Container::F64(
            src.iter()
                .map(|x| match x.widen() {
                    Wide::Float(f) => f,
                    Wide::Int(i) => i as f64,
                })
                .collect(),
        ));
    }
    let (lo, hi) = int_range(element).expect("integer or bool element");
    let ints = src.iter().enumerate().map(|(i, x)| {
        let v = match x.widen() {
            Wide::Int(v) => v,
            Wide::Float(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1.7e38 => f as i128,
            Wide::Float(f) => return Err((i, format!("{f} is not an integer, as {dtype} requires"))),
        };
        if v < lo || v > hi {
            return Err((i, format!("{v} is out of range for {dtype}")));
        }
        Ok(v)
    });
    // Every value is in range for its container type here, so the `as` casts below are exact.
    Ok(match element {
        Element::Int8 | Element::Int16 | Element::Int32 => {
            Container::I32(ints.map(|r| r.map(|v| v as i32)).collect::<std::result::Result<_, _>>()?)
        }
        Element::Int64 => Container::I64(ints.map(|r| r.map(|v| v as i64)).collect::<std::result::Result<_, _>>()?),
        Element::Uint8 | Element::Uint16 | Element::Uint32 => {
            Container::U32(ints.map(|r| r.map(|v| v as u32)).collect::<std::result::Result<_, _>>()?)
        }
        Element::Uint64 => Container::U64(ints.map(|r| r.map(|v| v as u64)).collect::<std::result::Result<_, _>>()?),
        _ => Container::Bool(ints.map(|r| r.map(|v| v == 1)).collect::<std::result::Result<_, _>>()?),
    })
}

/// Converts flat numeric values to `dtype`'s proto container. `locate(i)` names value `i` (row,
/// feature, element) in the error of a value that does not fit.
pub fn to_container(values: Typed<'_>, dtype: DataType, locate: impl Fn(usize) -> String) -> Result<Container> {
    let out = match values {
        Typed::F32(v) => convert_slice(v, dtype),
        Typed::F64(v) => convert_slice(v, dtype),
        Typed::I8(v) => convert_slice(v, dtype),
        Typed::I16(v) => convert_slice(v, dtype),
        Typed::I32(v) => convert_slice(v, dtype),
        Typed::I64(v) => convert_slice(v, dtype),
        Typed::U8(v) => convert_slice(v, dtype),
        Typed::U16(v) => convert_slice(v, dtype),
        Typed::U32(v) => convert_slice(v, dtype),
        Typed::U64(v) => convert_slice(v, dtype),
        Typed::Bool(v) => convert_slice(v, dtype),
        Typed::Str(_) => return Err(Error::WrongValueKind { dtype, given: "string" }),
    };
    out.map_err(|(i, why)| Error::InvalidInput(format!("{}: {why}", locate(i))))
}

/// One FG's cells, row-major (row, feature[, element]).
#[derive(Debug)]
pub enum Cells<'a> {
    /// Numeric and bool types: `rows × features × vector_length` values (`vector_length` 1 for
    /// scalar types).
    Numbers { values: &'a Container, vector_length: usize },
    /// `DataTypeString`: one string per cell.
    Strings(Vec<&'a [u8]>),
    /// `DataTypeStringVector`: every cell's strings back to back, and each cell's count.
    StringVectors { strings: Vec<&'a [u8]>, counts: Vec<usize> },
}

impl Cells<'_> {
    /// Checks that there are exactly `rows × n` cells, of a kind `dtype` takes; the error says why not.
    pub(super) fn check(&self, dtype: DataType, n: usize, rows: usize) -> std::result::Result<(), String> {
        dtype.element().ok_or_else(|| format!("{dtype} cannot hold values"))?;
        let is_string = dtype.is_string();
        let (got, kind) = match self {
            Cells::Numbers { values, vector_length } => {
                if is_string {
                    return Err(format!("{dtype} takes str values, not numbers"));
                }
                if *vector_length == 0 || (!dtype.is_vector() && *vector_length != 1) {
                    return Err(format!("vector length {vector_length} for {dtype}"));
                }
                (values.len() / vector_length, "cells")
            }
            Cells::Strings(s) if is_string && !dtype.is_vector() => (s.len(), "strings"),
            Cells::StringVectors { counts, strings } if is_string && dtype.is_vector() => {
                if counts.iter().sum::<usize>() != strings.len() {
                    return Err("string vector counts do not add up to the strings given".into());
                }
                (counts.len(), "string vectors")
            }
            _ => return Err(format!("the values given do not suit {dtype}")),
        };
        if got != rows * n {
            return Err(format!("{got} {kind} for {rows} rows × {n} features (expected {})", rows * n));
        }
        Ok(())
    }

    /// Appends row `r`'s `persist.FeatureValues` body (a `Values` message in field 1) to `out`: the
    /// cells of its `n` features of `dtype`.
    pub(super) fn encode_row(&self, dtype: DataType, n: usize, r: usize, scratch: &mut Scratch, out: &mut Vec<u8>) {
        let values = &mut scratch.values;
        values.clear();
        let vector = &mut scratch.vector;
        match self {
            Cells::Numbers { values: c, vector_length } if dtype.is_vector() => {
                for f in 0..n {
                    vector.clear();
                    c.encode_range(dtype, (r * n + f) * vector_length, *vector_length, vector);
                    put_vector(values, vector);
                }
            }
            Cells::Numbers { values: c, .. } => c.encode_range(dtype, r * n, n, values),
            Cells::Strings(s) => {
                for cell in &s[r * n..(r + 1) * n] {
                    put_bytes(values, 7, cell);
                }
            }
            Cells::StringVectors { strings, counts } => {
                // Offsets are computed from the counts once per row: rows are encoded in order,
                // so `scratch.string_at` carries where this row's strings start.
                for &count in &counts[r * n..(r + 1) * n] {
                    vector.clear();
                    for s in &strings[scratch.string_at..scratch.string_at + count] {
                        put_bytes(vector, 7, s);
                    }
                    scratch.string_at += count;
                    put_vector(values, vector);
                }
            }
        }
        put_bytes(out, 1, values);
    }
}

/// Reused buffers of the row encoder.
#[derive(Debug, Default)]
pub(super) struct Scratch {
    values: Vec<u8>,
    vector: Vec<u8>,
    string_at: usize,
}

/// `Values.vector` (field 9) holding a `Vector` whose `values` (field 1) is `inner`.
fn put_vector(out: &mut Vec<u8>, inner: &[u8]) {
    encode_key(9, WireType::LengthDelimited, out);
    let inner_len = 1 + prost::encoding::encoded_len_varint(inner.len() as u64) + inner.len();
    encode_varint(inner_len as u64, out);
    put_bytes(out, 1, inner);
}
