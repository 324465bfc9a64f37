//! The client side of the wire: `persist.Query` bytes built from columnar values (for the Python
//! client SDK and the Kafka producer), and `retrieve.Result` bytes decoded back into columns. Both
//! work on flat buffers, so a client never builds a protobuf object per feature value.

use prost::encoding::{encode_key, encode_varint, WireType};

use crate::cell;
use crate::dtype::{DataType, Element};
use crate::error::{Error, Result};
use crate::limits::try_vec;
use crate::psdb::Array;
use crate::values::Values;

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
    crate::wire::container_field(dtype).map_or(1, |(tag, _)| tag)
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
pub fn to_container(values: Values<'_>, dtype: DataType, locate: impl Fn(usize) -> String) -> Result<Container> {
    let out = match values {
        Values::F32(v) => convert_slice(v, dtype),
        Values::F64(v) => convert_slice(v, dtype),
        Values::I8(v) => convert_slice(v, dtype),
        Values::I16(v) => convert_slice(v, dtype),
        Values::I32(v) => convert_slice(v, dtype),
        Values::I64(v) => convert_slice(v, dtype),
        Values::U8(v) => convert_slice(v, dtype),
        Values::U16(v) => convert_slice(v, dtype),
        Values::U32(v) => convert_slice(v, dtype),
        Values::U64(v) => convert_slice(v, dtype),
        Values::Bool(v) => convert_slice(v, dtype),
        Values::Str(_) => return Err(Error::WrongValueKind { dtype, given: "string" }),
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

/// One feature group of a persist request.
#[derive(Debug)]
pub struct PersistGroup<'a> {
    pub label: String,
    pub dtype: DataType,
    pub feature_labels: Vec<String>,
    pub cells: Cells<'a>,
}

impl PersistGroup<'_> {
    /// Checks that the cells hold exactly `rows × features` cells of the right kind.
    fn check(&self, rows: usize) -> Result<()> {
        let n = self.feature_labels.len();
        let what = |e: String| Error::InvalidInput(format!("feature group {:?}: {e}", self.label));
        if n == 0 {
            return Err(what("no feature labels".into()));
        }
        self.dtype.element().ok_or_else(|| what(format!("{} cannot hold values", self.dtype)))?;
        let is_string = self.dtype.is_string();
        let (got, kind) = match &self.cells {
            Cells::Numbers { values, vector_length } => {
                if is_string {
                    return Err(what(format!("{} takes str values, not numbers", self.dtype)));
                }
                if *vector_length == 0 || (!self.dtype.is_vector() && *vector_length != 1) {
                    return Err(what(format!("vector length {vector_length} for {}", self.dtype)));
                }
                (values.len() / vector_length, "cells")
            }
            Cells::Strings(s) if is_string && !self.dtype.is_vector() => (s.len(), "strings"),
            Cells::StringVectors { counts, strings } if is_string && self.dtype.is_vector() => {
                if counts.iter().sum::<usize>() != strings.len() {
                    return Err(what("string vector counts do not add up to the strings given".into()));
                }
                (counts.len(), "string vectors")
            }
            _ => return Err(what(format!("the values given do not suit {}", self.dtype))),
        };
        if got != rows * n {
            return Err(what(format!("{got} {kind} for {rows} rows × {n} features (expected {})", rows * n)));
        }
        Ok(())
    }

    /// Appends row `r`'s `persist.FeatureValues` body (a `Values` message in field 1) to `out`.
    fn encode_row(&self, r: usize, scratch: &mut Scratch, out: &mut Vec<u8>) {
        let n = self.feature_labels.len();
        let values = &mut scratch.values;
        values.clear();
        let vector = &mut scratch.vector;
        match &self.cells {
            Cells::Numbers { values: c, vector_length } if self.dtype.is_vector() => {
                for f in 0..n {
                    vector.clear();
                    c.encode_range(self.dtype, (r * n + f) * vector_length, *vector_length, vector);
                    put_vector(values, vector);
                }
            }
            Cells::Numbers { values: c, .. } => c.encode_range(self.dtype, r * n, n, values),
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
struct Scratch {
    values: Vec<u8>,
    vector: Vec<u8>,
    string_at: usize,
}

/// A length-delimited field.
fn put_bytes(out: &mut Vec<u8>, tag: u32, body: &[u8]) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(body.len() as u64, out);
    out.extend_from_slice(body);
}

/// `Values.vector` (field 9) holding a `Vector` whose `values` (field 1) is `inner`.
fn put_vector(out: &mut Vec<u8>, inner: &[u8]) {
    encode_key(9, WireType::LengthDelimited, out);
    let inner_len = 1 + prost::encoding::encoded_len_varint(inner.len() as u64) + inner.len();
    encode_varint(inner_len as u64, out);
    put_bytes(out, 1, inner);
}

/// Serialized `persist.Query`: `keys[r]` (aligned with `keys_schema`) gets row `r` of every group.
pub fn encode_persist_query<K: AsRef<str>>(
    entity: &str,
    keys_schema: &[String],
    keys: &[Vec<K>],
    groups: &[PersistGroup<'_>],
) -> Result<Vec<u8>> {
    if groups.is_empty() {
        return Err(Error::InvalidInput(format!("persist for entity {entity:?} names no feature group")));
    }
    let rows = keys.len();
    // An empty keys_schema leaves the key order to the server (the entity's own); the rows must still agree.
    let width = if keys_schema.is_empty() { keys.first().map_or(0, Vec::len) } else { keys_schema.len() };
    for (i, k) in keys.iter().enumerate() {
        if k.len() != width || width == 0 {
            return Err(Error::InvalidInput(format!("key {i} has {} values for keys_schema {keys_schema:?}", k.len())));
        }
    }
    for g in groups {
        g.check(rows)?;
    }
    let mut out = Vec::new();
    put_bytes(&mut out, 1, entity.as_bytes());
    for k in keys_schema {
        put_bytes(&mut out, 2, k.as_bytes());
    }
    let mut schema = Vec::new();
    for g in groups {
        schema.clear();
        put_bytes(&mut schema, 1, g.label.as_bytes());
        for l in &g.feature_labels {
            put_bytes(&mut schema, 2, l.as_bytes());
        }
        put_bytes(&mut out, 3, &schema);
    }
    let mut scratch: Vec<Scratch> = groups.iter().map(|_| Scratch::default()).collect();
    let (mut data, mut fv) = (Vec::new(), Vec::new());
    for (r, key) in keys.iter().enumerate() {
        data.clear();
        for k in key {
            put_bytes(&mut data, 1, k.as_ref().as_bytes());
        }
        for (g, s) in groups.iter().zip(&mut scratch) {
            fv.clear();
            g.encode_row(r, s, &mut fv);
            put_bytes(&mut data, 2, &fv);
        }
        put_bytes(&mut out, 4, &data);
    }
    Ok(out)
}

/// Serialized `retrieve.Query`: `keys[r]` aligned with `keys_schema`; `feature_groups` as
/// `(fg label, feature labels)` (a label may carry an `@Type` suffix).
pub fn encode_retrieve_query<K: AsRef<str>, F: AsRef<str>>(
    entity: &str,
    keys_schema: &[String],
    keys: &[Vec<K>],
    feature_groups: &[(F, Vec<F>)],
) -> Vec<u8> {
    let mut out = Vec::new();
    put_bytes(&mut out, 1, entity.as_bytes());
    let mut body = Vec::new();
    for (label, features) in feature_groups {
        body.clear();
        put_bytes(&mut body, 1, label.as_ref().as_bytes());
        for f in features {
            put_bytes(&mut body, 2, f.as_ref().as_bytes());
        }
        put_bytes(&mut out, 2, &body);
    }
    for k in keys_schema {
        put_bytes(&mut out, 3, k.as_bytes());
    }
    for key in keys {
        body.clear();
        for v in key {
            put_bytes(&mut body, 1, v.as_ref().as_bytes());
        }
        put_bytes(&mut out, 4, &body);
    }
    out
}

/// One field of a protobuf message, borrowed from the message bytes.
#[derive(Debug, Clone, Copy)]
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    /// Fixed-width fields (wire types 1 and 5) are skipped: no retrieve message uses them.
    Fixed,
}

/// Iterates the fields of one message without copying: cells stay slices of the response.
#[derive(Debug)]
struct Fields<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Field<'a>)>;

    fn next(&mut self) -> Option<Self::Item> {
        use prost::encoding::{decode_key, decode_varint};
        if self.buf.is_empty() {
            return None;
        }
        let what = self.what;
        let bad = move |e: String| Error::corrupt(format!("malformed {what}: {e}"));
        let mut step = || -> Result<(u32, Field<'a>)> {
            let (tag, wire) = decode_key(&mut self.buf).map_err(|e| bad(e.to_string()))?;
            let field = match wire {
                WireType::Varint => Field::Varint(decode_varint(&mut self.buf).map_err(|e| bad(e.to_string()))?),
                WireType::LengthDelimited => {
                    let len = decode_varint(&mut self.buf).map_err(|e| bad(e.to_string()))?;
                    let len = usize::try_from(len).ok().filter(|&l| l <= self.buf.len());
                    let len = len.ok_or_else(|| bad(format!("field {tag} runs past the end")))?;
                    let (body, rest) = self.buf.split_at(len);
                    self.buf = rest;
                    Field::Bytes(body)
                }
                WireType::SixtyFourBit | WireType::ThirtyTwoBit => {
                    let n = if wire == WireType::SixtyFourBit { 8 } else { 4 };
                    if self.buf.len() < n {
                        return Err(bad(format!("field {tag} runs past the end")));
                    }
                    self.buf = &self.buf[n..];
                    Field::Fixed
                }
                WireType::StartGroup | WireType::EndGroup => return Err(bad("groups are not supported".into())),
            };
            Ok((tag, field))
        };
        let item = step();
        if item.is_err() {
            self.buf = &[]; // stop after the first error
        }
        Some(item)
    }
}

fn fields<'a>(buf: &'a [u8], what: &'static str) -> Fields<'a> {
    Fields { buf, what }
}

fn utf8(b: &[u8], what: &str) -> Result<String> {
    String::from_utf8(b.to_vec()).map_err(|_| Error::corrupt(format!("{what} is not UTF-8")))
}

/// One feature of a `retrieve.Result` schema, as our server describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureInfo {
    pub label: String,
    pub column_idx: usize,
    /// Type of the served cells (`Feature.data_type`).
    pub dtype: DataType,
    /// Values per cell of vector types (`Feature.vector_length`), 0 for scalars.
    pub vector_length: u32,
}

/// One feature group of a decoded `retrieve.Result`, as columns.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupColumns {
    pub label: String,
    pub features: Vec<FeatureInfo>,
    /// Every row's cells back to back, row-major (row, feature, element), widened as the embedded
    /// engine widens them (FP8/FP16 → f32).
    pub values: Array,
    /// Strings per cell, row-major (string types only; vectors' counts may differ per cell).
    pub string_counts: Vec<usize>,
    /// Per row: 0 found, 1 missing (defaults), 2 expired (defaults).
    pub status: Vec<u8>,
}

/// A decoded `retrieve.Result`.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrieveColumns {
    pub entity: String,
    pub keys_schema: Vec<String>,
    /// Every row's key values back to back (`keys_schema.len()` per row).
    pub keys: Vec<String>,
    pub rows: usize,
    pub groups: Vec<GroupColumns>,
}

impl FeatureInfo {
    /// Bytes of one cell of a fixed-width type (bools: one byte per value); `None` for strings.
    fn cell_bytes(&self) -> Option<usize> {
        let (per_value, prefix) = match self.dtype.element()? {
            Element::String => return None,
            Element::Bool => (1, 0),
            e if self.dtype.is_vector() => (e.size(), e.vector_prefix()),
            e => (e.size(), 0),
        };
        Some(per_value * self.vector_length.max(1) as usize + prefix)
    }
}

fn feature_info(body: &[u8], fg: &str) -> Result<FeatureInfo> {
    let (mut label, mut column_idx, mut dtype, mut vector_length) = (String::new(), 0u64, 0u64, 0u64);
    for f in fields(body, "retrieve.Feature") {
        match f? {
            (1, Field::Bytes(b)) => label = utf8(b, "feature label")?,
            (2, Field::Varint(v)) => column_idx = v,
            (3, Field::Varint(v)) => dtype = v,
            (4, Field::Varint(v)) => vector_length = v,
            _ => {}
        }
    }
    let named = |e: &str| Error::corrupt(format!("feature {fg}/{label}: {e}"));
    if dtype == 0 {
        return Err(named("the response has no data type (Feature.data_type): the server predates it"));
    }
    let dtype = u8::try_from(dtype).ok().and_then(|d| DataType::from_u8(d).ok());
    let dtype = dtype.ok_or_else(|| named("unknown data type id"))?;
    let column_idx = usize::try_from(column_idx).map_err(|_| named("column index out of range"))?;
    let vector_length = u32::try_from(vector_length).map_err(|_| named("vector length out of range"))?;
    if dtype.is_vector() != (vector_length > 0) {
        return Err(named(&format!("vector length {vector_length} for {dtype}")));
    }
    Ok(FeatureInfo { label, column_idx, dtype, vector_length })
}

fn group_schema(body: &[u8], form: cell::FloatForm) -> Result<GroupColumns> {
    let mut label = String::new();
    let mut feature_bodies = Vec::new();
    for f in fields(body, "retrieve.FeatureSchema") {
        match f? {
            (1, Field::Bytes(b)) => label = utf8(b, "feature group label")?,
            (2, Field::Bytes(b)) => feature_bodies.push(b),
            _ => {}
        }
    }
    let features = feature_bodies.iter().map(|b| feature_info(b, &label)).collect::<Result<Vec<_>>>()?;
    let first = features.first().ok_or_else(|| Error::corrupt(format!("feature group {label:?} has no features")))?;
    let values = cell::empty_array_as(first.dtype, 0, form)?;
    for f in &features {
        if cell::empty_array_as(f.dtype, 0, form)? != values {
            return Err(Error::InvalidInput(format!(
                "feature group {label:?}: one array cannot hold both {} and {}; request them separately",
                first.dtype, f.dtype
            )));
        }
    }
    Ok(GroupColumns { label, features, values, string_counts: Vec::new(), status: Vec::new() })
}

/// Decodes `retrieve.Result` bytes from our server into one array per feature group (the data types
/// and vector lengths come from the `Feature` additions, so no registry is needed). Any cell that
/// does not match its announced type fails the whole decode.
pub fn decode_retrieve_result(bytes: &[u8]) -> Result<RetrieveColumns> {
    decode_retrieve_result_as(bytes, cell::FloatForm::Widened)
}

/// [`decode_retrieve_result`] with bf16 and Q8 values in the given [`cell::FloatForm`].
pub fn decode_retrieve_result_as(bytes: &[u8], form: cell::FloatForm) -> Result<RetrieveColumns> {
    let (mut entity, mut keys_schema, mut groups, mut rows) = (String::new(), Vec::new(), Vec::new(), Vec::new());
    for f in fields(bytes, "retrieve.Result") {
        match f? {
            (1, Field::Bytes(b)) => entity = utf8(b, "entity label")?,
            (2, Field::Bytes(b)) => keys_schema.push(utf8(b, "keys_schema")?),
            (3, Field::Bytes(b)) => groups.push(group_schema(b, form)?),
            (4, Field::Bytes(b)) => rows.push(b),
            _ => {}
        }
    }
    let n_columns: usize = groups.iter().map(|g| g.features.len()).sum();
    if let Some(f) = groups.iter().flat_map(|g| &g.features).find(|f| f.column_idx >= n_columns) {
        return Err(Error::corrupt(format!("feature {:?}: column {} of {n_columns}", f.label, f.column_idx)));
    }
    // Counts come from the response: capacities stay within what its bytes can hold (a key value takes
    // at least 2 bytes), so a response announcing huge counts cannot size an allocation.
    let mut keys = try_vec(rows.len().saturating_mul(keys_schema.len()).min(bytes.len() / 2), "key values")?;
    let mut cells: Vec<&[u8]> = Vec::with_capacity(n_columns);
    let mut status: Vec<u64> = Vec::with_capacity(groups.len());
    for (r, row) in rows.iter().enumerate() {
        cells.clear();
        status.clear();
        let before = keys.len();
        for f in fields(row, "retrieve.Row") {
            match f? {
                (1, Field::Bytes(b)) => keys.push(utf8(b, "key value")?),
                (2, Field::Bytes(b)) => cells.push(b),
                (3, Field::Varint(v)) => status.push(v),
                (3, Field::Bytes(mut packed)) => {
                    while !packed.is_empty() {
                        status.push(
                            prost::encoding::decode_varint(&mut packed).map_err(|e| Error::corrupt(e.to_string()))?,
                        );
                    }
                }
                _ => {}
            }
        }
        let bad = |e: String| Error::corrupt(format!("row {r}: {e}"));
        if keys.len() - before != keys_schema.len() {
            return Err(bad(format!("{} key values for keys_schema {keys_schema:?}", keys.len() - before)));
        }
        if cells.len() != n_columns {
            return Err(bad(format!("{} cells for {n_columns} features", cells.len())));
        }
        if status.len() != groups.len() {
            return Err(bad(format!("{} statuses (Row.fg_status) for {} feature groups", status.len(), groups.len())));
        }
        for (g, &s) in groups.iter_mut().zip(&status) {
            g.status.push(u8::try_from(s).map_err(|_| bad(format!("status {s}")))?);
            for f in &g.features {
                let cell = cells[f.column_idx];
                let named = |e: String| bad(format!("feature {}/{}: {e}", g.label, f.label));
                if let Some(width) = f.cell_bytes() {
                    // Fixed-width cells: checking the byte length up front is the whole shape check.
                    if cell.len() != width {
                        return Err(named(format!("{} bytes in a {} cell of {width}", cell.len(), f.dtype)));
                    }
                    cell::append_to(&mut g.values, f.dtype, cell).map_err(|e| named(e.to_string()))?;
                } else {
                    let at = g.values.len();
                    cell::append_to(&mut g.values, f.dtype, cell).map_err(|e| named(e.to_string()))?;
                    g.string_counts.push(g.values.len() - at);
                }
            }
        }
    }
    Ok(RetrieveColumns { entity, keys_schema, keys, rows: rows.len(), groups })
}

/// A decoded `retrieve.DecodedResult`: per feature group, every row's rendered cells.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedColumns {
    pub keys_schema: Vec<String>,
    /// Every row's key values back to back.
    pub keys: Vec<String>,
    pub rows: usize,
    /// `(fg label, feature labels, cells row-major)`.
    pub groups: Vec<(String, Vec<String>, Vec<String>)>,
}

/// Decodes `retrieve.DecodedResult` bytes (any server: it carries no additions).
pub fn decode_decoded_result(bytes: &[u8]) -> Result<DecodedColumns> {
    let (mut keys_schema, mut schemas, mut rows) = (Vec::new(), Vec::new(), Vec::new());
    for f in fields(bytes, "retrieve.DecodedResult") {
        match f? {
            (1, Field::Bytes(b)) => keys_schema.push(utf8(b, "keys_schema")?),
            (2, Field::Bytes(b)) => {
                let (mut label, mut features) = (String::new(), Vec::new());
                for f in fields(b, "retrieve.FeatureSchema") {
                    match f? {
                        (1, Field::Bytes(b)) => label = utf8(b, "feature group label")?,
                        (2, Field::Bytes(b)) => features.push(feature_label_and_column(b)?),
                        _ => {}
                    }
                }
                schemas.push((label, features));
            }
            (3, Field::Bytes(b)) => rows.push(b),
            _ => {}
        }
    }
    let n_columns: usize = schemas.iter().map(|(_, f)| f.len()).sum();
    let mut groups: Vec<(String, Vec<String>, Vec<String>)> = schemas
        .iter()
        .map(|(l, f)| {
            let cap = rows.len().saturating_mul(f.len()).min(bytes.len() / 2);
            Ok((l.clone(), f.iter().map(|(l, _)| l.clone()).collect(), try_vec(cap, "decoded cells")?))
        })
        .collect::<Result<_>>()?;
    let mut keys = try_vec(rows.len().saturating_mul(keys_schema.len()).min(bytes.len() / 2), "key values")?;
    let mut cells: Vec<&[u8]> = Vec::with_capacity(n_columns);
    for (r, row) in rows.iter().enumerate() {
        cells.clear();
        for f in fields(row, "retrieve.DecodedRow") {
            match f? {
                (1, Field::Bytes(b)) => keys.push(utf8(b, "key value")?),
                (2, Field::Bytes(b)) => cells.push(b),
                _ => {}
            }
        }
        if cells.len() != n_columns {
            return Err(Error::corrupt(format!("row {r}: {} cells for {n_columns} features", cells.len())));
        }
        for ((_, features), (_, _, out)) in schemas.iter().zip(&mut groups) {
            for &(_, c) in features {
                let cell = cells.get(c).ok_or_else(|| Error::corrupt(format!("row {r}: no column {c}")))?;
                out.push(utf8(cell, "decoded cell")?);
            }
        }
    }
    if keys.len() != rows.len() * keys_schema.len() {
        return Err(Error::corrupt(format!("{} key values for {} rows of {keys_schema:?}", keys.len(), rows.len())));
    }
    Ok(DecodedColumns { keys_schema, keys, rows: rows.len(), groups })
}

fn feature_label_and_column(body: &[u8]) -> Result<(String, usize)> {
    let (mut label, mut column) = (String::new(), 0usize);
    for f in fields(body, "retrieve.Feature") {
        match f? {
            (1, Field::Bytes(b)) => label = utf8(b, "feature label")?,
            (2, Field::Varint(v)) => {
                column = usize::try_from(v).map_err(|_| Error::corrupt("column index out of range"))?;
            }
            _ => {}
        }
    }
    Ok((label, column))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::persist;
    use prost::Message;

    fn group<'a>(label: &str, dtype: DataType, labels: &[&str], cells: Cells<'a>) -> PersistGroup<'a> {
        PersistGroup { label: label.into(), dtype, feature_labels: labels.iter().map(|s| (*s).into()).collect(), cells }
    }

    #[test]
    fn query_parses_back_with_prost() {
        let fp = to_container(Values::F32(&[1.0, 2.0, 3.0, 4.0]), DataType::Fp16, |i| format!("{i}")).unwrap();
        let iv =
            to_container(Values::I64(&[1, -2, 3, 4, 5, 6, 7, 8]), DataType::Int8Vector, |i| format!("{i}")).unwrap();
        let groups = vec![
            group("f", DataType::Fp16, &["a", "b"], Cells::Numbers { values: &fp, vector_length: 1 }),
            group("v", DataType::Int8Vector, &["x", "y"], Cells::Numbers { values: &iv, vector_length: 2 }),
            group("s", DataType::String, &["t"], Cells::Strings(vec![b"p", b"q"])),
            group(
                "sv",
                DataType::StringVector,
                &["u"],
                Cells::StringVectors { strings: vec![b"a", b"b", b"c"], counts: vec![2, 1] },
            ),
        ];
        let keys = vec![vec!["k1"], vec!["k2"]];
        let bytes = encode_persist_query("user", &["id".into()], &keys, &groups).unwrap();
        let q = persist::Query::decode(&bytes[..]).unwrap();
        assert_eq!(q.entity_label, "user");
        assert_eq!(q.feature_group_schema[1].feature_labels, vec!["x", "y"]);
        assert_eq!(q.data[1].key_values, vec!["k2"]);
        let row1 = &q.data[1].feature_values;
        assert_eq!(row1[0].values.as_ref().unwrap().fp32_values, vec![3.0, 4.0]);
        let vecs = &row1[1].values.as_ref().unwrap().vector;
        assert_eq!(vecs[1].values.as_ref().unwrap().int32_values, vec![7, 8]);
        assert_eq!(row1[2].values.as_ref().unwrap().string_values, vec!["q"]);
        let sv = &q.data[0].feature_values[3].values.as_ref().unwrap().vector;
        assert_eq!(sv[0].values.as_ref().unwrap().string_values, vec!["a", "b"]);
        let sv = &row1[3].values.as_ref().unwrap().vector;
        assert_eq!(sv[0].values.as_ref().unwrap().string_values, vec!["c"]);
    }

    #[test]
    fn bad_values_and_shapes_are_named() {
        let e = to_container(Values::I32(&[1, 300]), DataType::Int8, |i| format!("value {i}")).unwrap_err();
        assert_eq!(e.to_string(), "value 1: 300 is out of range for DataTypeInt8");
        assert!(to_container(Values::F64(&[1.5]), DataType::Uint32, |_| String::new()).is_err());
        assert!(to_container(Values::I32(&[-1]), DataType::Uint64, |_| String::new()).is_err());
        assert!(to_container(Values::I32(&[2]), DataType::Bool, |_| String::new()).is_err());
        let c = to_container(Values::F32(&[1.0, 2.0, 3.0]), DataType::Fp32, |_| String::new()).unwrap();
        let g = [group("f", DataType::Fp32, &["a", "b"], Cells::Numbers { values: &c, vector_length: 1 })];
        let e = encode_persist_query("user", &["id".into()], &[vec!["k"]], &g).unwrap_err();
        assert!(e.to_string().contains("3 cells for 1 rows × 2 features"), "{e}");
        let e = encode_persist_query::<&str>("user", &["id".into()], &[vec![]], &g).unwrap_err();
        assert!(e.to_string().contains("key 0 has 0 values"), "{e}");
        let g = [group("s", DataType::String, &["t"], Cells::StringVectors { strings: vec![], counts: vec![0] })];
        assert!(encode_persist_query("user", &["id".into()], &[vec!["k"]], &g).is_err());
    }

    #[test]
    fn persist_then_decode_retrieve_through_the_core() {
        use crate::wire::{self, retrieve};
        const NOW: u64 = 1_772_366_400;
        // The same entity as the wire tests: FG 0 "g" (fp32 a, b), FG 1 "tags" (string vector t).
        let engine = crate::engine::Engine::new(crate::wire::tests::catalog());
        let cat = engine.catalog();

        let fp32 = to_container(Values::F64(&[2.0, 3.0]), DataType::Fp32, |i| format!("{i}")).unwrap();
        let groups = [
            group("g", DataType::Fp32, &["b", "a"], Cells::Numbers { values: &fp32, vector_length: 1 }),
            group(
                "tags",
                DataType::StringVector,
                &["t"],
                Cells::StringVectors { strings: vec![b"p", b"q"], counts: vec![2] },
            ),
        ];
        let q = encode_persist_query("user", &["user_id".into()], &[vec!["u1"]], &groups).unwrap();
        let persisted = wire::parse_persist(cat, &q, NOW, false, &crate::Limits::NONE).unwrap();
        let block = |fg: u16| persisted.blocks.iter().find(|b| b.fg_id == fg).unwrap().block.clone();
        let (g_block, tags_block) = (block(0), block(1));

        let rq = retrieve::Query {
            entity_label: "user".into(),
            feature_groups: vec![
                retrieve::FeatureGroup { label: "g".into(), feature_labels: vec!["a".into(), "b@DataTypeFP16".into()] },
                retrieve::FeatureGroup { label: "tags".into(), feature_labels: vec!["t".into()] },
            ],
            keys_schema: vec!["user_id".into()],
            keys: vec![retrieve::Keys { cols: vec!["u1".into()] }, retrieve::Keys { cols: vec!["u2".into()] }],
        };
        let fgs = [("g", vec!["a", "b@DataTypeFP16"]), ("tags", vec!["t"])];
        let ours = encode_retrieve_query("user", &["user_id".into()], &[vec!["u1"], vec!["u2"]], &fgs);
        assert_eq!(ours, prost::Message::encode_to_vec(&rq));
        let req = wire::parse_retrieve(&engine, &ours, &crate::Limits::NONE).unwrap();
        let blocks: [&[u8]; 4] = [&g_block, &tags_block, &[], &[]];
        let out = decode_retrieve_result(&wire::encode_retrieve(&req, &blocks, NOW).unwrap()).unwrap();
        assert_eq!((out.entity.as_str(), out.rows), ("user", 2));
        assert_eq!(out.keys, vec!["u1", "u2"]);
        let g = &out.groups[0];
        assert_eq!(g.features[1].dtype, DataType::Fp16);
        assert_eq!(g.values, Array::F32(vec![3.0, 2.0, 1.5, -1.0]));
        assert_eq!(g.status, vec![0, 1]);
        let t = &out.groups[1];
        assert_eq!((t.features[0].dtype, t.features[0].vector_length), (DataType::StringVector, 2));
        assert_eq!(t.values, Array::Str(vec!["p".into(), "q".into(), "x".into(), "y".into()]));
        assert_eq!(t.string_counts, vec![2, 2]);

        let decoded = decode_decoded_result(&wire::encode_decoded(&req, &blocks, NOW).unwrap()).unwrap();
        assert_eq!(decoded.keys, vec!["u1", "u2"]);
        assert_eq!(decoded.groups[0].1, vec!["a", "b"]);
        assert_eq!(decoded.groups[0].2.len(), 4);

        assert!(decode_retrieve_result(b"\x1a\x05").unwrap_err().to_string().contains("runs past the end"));
        // A reference server's schema has no data types: the decoder says so instead of guessing.
        let old = retrieve::Result {
            feature_schemas: vec![retrieve::FeatureSchema {
                feature_group_label: "g".into(),
                features: vec![retrieve::Feature { label: "a".into(), ..Default::default() }],
            }],
            ..Default::default()
        };
        let e = decode_retrieve_result(&prost::Message::encode_to_vec(&old)).unwrap_err();
        assert!(e.to_string().contains("predates"), "{e}");
    }
}
