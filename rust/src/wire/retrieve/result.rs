//! `retrieve.Result`: the server builds it from the stored blocks, cells copied or converted straight
//! into the output ([`encode_retrieve`]); clients decode it into one array per feature group
//! ([`decode_retrieve_result`]), the data types coming from our additions to `Feature`.
//!
//! The message is named `Result` as in the proto, so this module spells the core's result type
//! `crate::Result`.

use prost::encoding::encode_varint;
use prost::Message;

use super::query::RetrieveRequest;
use super::schema::{
    check_blocks, feature_schemas, push_keys, push_row, read_feature, read_schema, FeatureSchema, StatusCounts,
    WireFeature,
};
use crate::cell;
use crate::dtype::{DataType, Element};
use crate::engine::Status;
use crate::error::Error;
use crate::limits::try_vec;
use crate::psdb::Array;
use crate::shape::Layout;
use crate::wire::proto::{fields, utf8, Field};

/// `retrieve.Row`: one key's values and cells.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Row {
    #[prost(string, repeated, tag = "1")]
    pub keys: Vec<String>,
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub columns: Vec<Vec<u8>>,
    /// Our addition: per requested FG, 0 found / 1 missing (defaults) / 2 expired (defaults).
    #[prost(uint32, repeated, tag = "3")]
    pub fg_status: Vec<u32>,
}

/// `retrieve.Result`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Result {
    #[prost(string, tag = "1")]
    pub entity_label: String,
    #[prost(string, repeated, tag = "2")]
    pub keys_schema: Vec<String>,
    #[prost(message, repeated, tag = "3")]
    pub feature_schemas: Vec<FeatureSchema>,
    #[prost(message, repeated, tag = "4")]
    pub rows: Vec<Row>,
}

/// Builds the `retrieve.Result` bytes. `blocks[k * n_fgs + f]` is key `k`'s stored block of FG `f`.
pub fn encode_retrieve(req: &RetrieveRequest, blocks: &[&[u8]], now: u64) -> crate::Result<Vec<u8>> {
    encode_retrieve_counted(req, blocks, now).map(|(bytes, _)| bytes)
}

/// [`encode_retrieve`], also counting how many rows of each FG were found, missing or expired.
pub fn encode_retrieve_counted(
    req: &RetrieveRequest,
    blocks: &[&[u8]],
    now: u64,
) -> crate::Result<(Vec<u8>, StatusCounts)> {
    let n_fgs = check_blocks(req, blocks)?;
    // The header fields go through prost; rows are written straight into the output buffer, so a
    // response costs no allocation per cell.
    let head = Result {
        entity_label: req.query.entity_label.clone(),
        keys_schema: req.query.keys_schema.clone(),
        feature_schemas: feature_schemas(req),
        rows: Vec::new(),
    };
    let mut out = head.encode_to_vec();
    // Each row is written into `row` (its length prefix needs its size), then appended to `out`.
    let mut row: Vec<u8> = Vec::new();
    let mut status: Vec<u8> = Vec::with_capacity(n_fgs);
    let mut counts: StatusCounts = vec![[0; 3]; n_fgs];
    for (k, key) in req.query.keys.iter().enumerate() {
        row.clear();
        status.clear();
        push_keys(&mut row, &key.cols);
        for (f, fp) in req.plan.fgs.iter().enumerate() {
            let block = blocks[k * n_fgs + f];
            // Live fixed-width blocks: cells copied straight from the payload; anything else cell by cell.
            let fast =
                fp.with_fixed_cells(block, now, |payload, ranges| push_fixed_columns(&mut row, payload, ranges))?;
            let s = match fast {
                Some(()) => Status::Found,
                None => fp.cells(block, now, |_, c| {
                    push_column(&mut row, c);
                    Ok(())
                })?,
            };
            status.push(s as u8);
            counts[f][s as usize] += 1;
        }
        row.push(0x1a); // Row.fg_status, field 3, packed varints (each < 128: one byte)
        encode_varint(status.len() as u64, &mut row);
        row.extend_from_slice(&status);
        push_row(req, &mut out, 0x22, &row, k)?; // Result.rows, field 4
    }
    Ok((out, counts))
}

/// Appends the `Row.columns` entries of a live fixed-width block's cells (`ranges` into `payload`). When
/// every cell is 4 bytes wide (fp32, int32, …: the common case) the entries are written in one pass over
/// room reserved once, a fixed 6 bytes each; otherwise cell by cell.
fn push_fixed_columns(row: &mut Vec<u8>, payload: &[u8], ranges: &[(usize, usize)]) {
    if !ranges.iter().all(|&(_, len)| len == 4) {
        for &(start, len) in ranges {
            push_column(row, &payload[start..start + len]);
        }
        return;
    }
    let at = row.len();
    row.resize(at + 6 * ranges.len(), 0);
    for (field, &(start, _)) in row[at..].chunks_exact_mut(6).zip(ranges) {
        field[0] = 0x12;
        field[1] = 4;
        field[2..].copy_from_slice(&payload[start..start + 4]);
    }
}

/// Appends one `Row.columns` entry (field 2): tag, length, cell bytes. The common widths go in as one
/// fixed-size array (one capacity check and one move, not three appends and a `memcpy` call).
#[inline]
fn push_column(row: &mut Vec<u8>, cell: &[u8]) {
    match cell.len() {
        4 => {
            let mut field = [0x12, 4, 0, 0, 0, 0];
            field[2..].copy_from_slice(cell);
            row.extend_from_slice(&field);
        }
        8 => {
            let mut field = [0x12, 8, 0, 0, 0, 0, 0, 0, 0, 0];
            field[2..].copy_from_slice(cell);
            row.extend_from_slice(&field);
        }
        n => {
            row.push(0x12);
            encode_varint(n as u64, row);
            row.extend_from_slice(cell);
        }
    }
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

impl GroupColumns {
    /// How the group's features lay out a row of its values ([`crate::shape`]).
    pub fn layout(&self) -> Layout {
        Layout::new(self.features.iter().map(|f| (f.dtype, f.vector_length.max(1) as usize)))
    }
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

/// A `retrieve.Feature` of our server's, checked: a known data type and a vector length that suits it.
fn feature_info(body: &[u8], fg: &str) -> crate::Result<FeatureInfo> {
    let WireFeature { label, column_idx, data_type: dtype, vector_length } = read_feature(body)?;
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

/// One `retrieve.FeatureSchema` as an empty group: its features checked, and an array that holds
/// every one of them in `form`.
fn group_schema(body: &[u8], form: cell::FloatForm) -> crate::Result<GroupColumns> {
    let (label, feature_bodies) = read_schema(body)?;
    let features = feature_bodies.iter().map(|b| feature_info(b, &label)).collect::<crate::Result<Vec<_>>>()?;
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
pub fn decode_retrieve_result(bytes: &[u8]) -> crate::Result<RetrieveColumns> {
    decode_retrieve_result_as(bytes, cell::FloatForm::Widened)
}

/// [`decode_retrieve_result`] with bf16 and Q8 values in the given [`cell::FloatForm`].
pub fn decode_retrieve_result_as(bytes: &[u8], form: cell::FloatForm) -> crate::Result<RetrieveColumns> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Catalog, VersionSpec};
    use crate::engine::Engine;
    use crate::limits::Limits;
    use crate::values::Values;
    use crate::wire::fixtures::group;
    use crate::wire::fixtures::{catalog, NOW};
    use crate::wire::{
        decode_decoded_result, encode_decoded, encode_persist_query, encode_retrieve_query, parse_persist,
        parse_retrieve, persist, retrieve, to_container, Cells,
    };

    #[test]
    fn fixed_columns_are_the_cells_pushed_one_by_one() {
        let payload: Vec<u8> = (0..64u8).collect();
        let one_by_one = |ranges: &[(usize, usize)]| {
            let mut row = vec![9u8];
            for &(start, len) in ranges {
                push_column(&mut row, &payload[start..start + len]);
            }
            row
        };
        // 4-byte cells (the one-pass path) in any order, with repeats; mixed widths (cell by cell).
        let cases: [&[(usize, usize)]; 4] =
            [&[(0, 4), (4, 4), (8, 4)], &[(12, 4), (0, 4), (12, 4)], &[(0, 4), (4, 8), (12, 1), (13, 0)], &[]];
        for ranges in cases {
            let mut row = vec![9u8];
            push_fixed_columns(&mut row, &payload, ranges);
            assert_eq!(row, one_by_one(ranges), "{ranges:?}");
        }
    }

    #[test]
    fn persist_then_retrieve_through_bytes() {
        let engine = Engine::new(catalog());
        let c = engine.catalog();
        let q = persist::Query {
            entity_label: "user".into(),
            keys_schema: vec!["user_id".into()],
            feature_group_schema: vec![
                persist::FeatureGroupSchema { label: "g".into(), feature_labels: vec!["b".into()] },
                persist::FeatureGroupSchema { label: "tags".into(), feature_labels: vec!["t".into()] },
            ],
            data: vec![persist::Data {
                key_values: vec!["u1".into()],
                feature_values: vec![
                    persist::FeatureValues {
                        values: Some(persist::Values { fp32_values: vec![2.0], ..Default::default() }),
                    },
                    persist::FeatureValues {
                        values: Some(persist::Values {
                            vector: vec![persist::Vector {
                                values: Some(persist::Values {
                                    string_values: vec!["ab".into(), "c".into()],
                                    ..Default::default()
                                }),
                            }],
                            ..Default::default()
                        }),
                    },
                ],
            }],
        };
        let req = parse_persist(c, &q.encode_to_vec(), NOW, false, &Limits::NONE).unwrap();
        assert_eq!(req.blocks.len(), 2);
        let rq = retrieve::Query {
            entity_label: "user".into(),
            feature_groups: vec![
                retrieve::FeatureGroup { label: "tags".into(), feature_labels: vec!["t".into()] },
                retrieve::FeatureGroup { label: "g".into(), feature_labels: vec!["a".into(), "b@DataTypeFP16".into()] },
            ],
            keys_schema: vec!["user_id".into()],
            keys: vec![retrieve::Keys { cols: vec!["u1".into()] }, retrieve::Keys { cols: vec!["u2".into()] }],
        };
        let parsed = parse_retrieve(&engine, &rq.encode_to_vec(), &Limits::NONE).unwrap();
        assert_eq!(parsed.fg_ids(), vec![1, 0]);
        let (g, tags) = (&req.blocks[0].block[..], &req.blocks[1].block[..]);
        let out = encode_retrieve(&parsed, &[tags, g, &[], &[]], NOW).unwrap();
        let res = retrieve::Result::decode(&out[..]).unwrap();
        assert_eq!(res.feature_schemas[1].features[1].column_idx, 2);
        let f = &res.feature_schemas[1].features[1];
        assert_eq!((f.data_type, f.vector_length), (DataType::Fp16 as u32, 0));
        let f = &res.feature_schemas[0].features[0];
        assert_eq!((f.data_type, f.vector_length), (DataType::StringVector as u32, 2));
        assert_eq!(res.rows[0].columns[0], vec![2, 0, 1, 0, b'a', b'b', b'c']);
        assert_eq!(res.rows[0].columns[1], 1.5f32.to_le_bytes().to_vec()); // default: "a" not sent
        assert_eq!(res.rows[0].columns[2], vec![0x00, 0x40]); // 2.0 as fp16
        assert_eq!(res.rows[1].columns[0], vec![1, 0, 1, 0, b'x', b'y']);
        assert_eq!(res.rows[0].fg_status, vec![0, 0]);
        assert_eq!(res.rows[1].fg_status, vec![1, 1]);
        let (_, counts) = encode_retrieve_counted(&parsed, &[tags, g, &[], &[]], NOW).unwrap();
        assert_eq!(counts, vec![[1, 1, 0], [1, 1, 0]]);
    }

    /// The rows `encode_retrieve` should produce, built cell by cell through `FgPlan::cells` (the path
    /// every block can take), to check the copy-straight-from-the-payload path against.
    fn rows_cell_by_cell(req: &RetrieveRequest, blocks: &[&[u8]], now: u64) -> Vec<(Vec<Vec<u8>>, Vec<u32>)> {
        let n = req.plan.fgs.len();
        (0..req.query.keys.len())
            .map(|k| {
                let (mut cells, mut status) = (Vec::new(), Vec::new());
                for (f, fp) in req.plan.fgs.iter().enumerate() {
                    let s = fp
                        .cells(blocks[k * n + f], now, |_, c| {
                            cells.push(c.to_vec());
                            Ok(())
                        })
                        .unwrap();
                    status.push(s as u32);
                }
                (cells, status)
            })
            .collect()
    }

    /// The decoded response renders the cells of the binary one `got`, row by row straight from the blocks.
    fn assert_decoded_renders(req: &RetrieveRequest, blocks: &[&[u8]], now: u64, got: &retrieve::Result) {
        let decoded = retrieve::DecodedResult::decode(&encode_decoded(req, blocks, now).unwrap()[..]).unwrap();
        assert_eq!(decoded.keys_schema, got.keys_schema);
        assert_eq!(decoded.feature_schemas, got.feature_schemas);
        let types: Vec<_> = got.feature_schemas.iter().flat_map(|f| &f.features).collect();
        for (d, row) in decoded.rows.iter().zip(&got.rows) {
            assert_eq!(d.keys, row.keys);
            let want: Vec<String> = row
                .columns
                .iter()
                .zip(&types)
                .map(|(c, t)| {
                    let dtype = DataType::from_u8(t.data_type as u8).unwrap();
                    let width = if t.vector_length > 0 { t.vector_length } else { 1 };
                    crate::render::cell_string(dtype, c, width).unwrap()
                })
                .collect();
            assert_eq!(d.columns, want, "at {now}");
        }
    }

    #[test]
    fn fixed_width_cells_copied_from_the_payload_match_the_cell_by_cell_path() {
        use crate::engine::encode_rows;
        use crate::psdb::{self, EncodeOptions};
        use crate::values::Values;
        let mut cat = Catalog::new(1);
        cat.add_entity("e", &["id".into()]).unwrap();
        let spec = |version, labels: &[&str], width: usize, cell: Vec<u8>| VersionSpec {
            version,
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
            string_lengths: vec![],
            vector_lengths: if width > 1 { vec![width as u32; labels.len()] } else { vec![] },
            defaults: vec![cell; labels.len()],
        };
        let f1 = spec(1, &["a", "b"], 1, 0.5f32.to_le_bytes().to_vec());
        let f2 = spec(2, &["a", "b", "c"], 1, 0.5f32.to_le_bytes().to_vec());
        cat.add_feature_group("e", 0, "f", DataType::Fp32, 2, 3600, vec![f1, f2]).unwrap();
        cat.add_feature_group("e", 1, "i", DataType::Int16, 1, 0, vec![spec(1, &["x", "y"], 1, vec![7, 0])]).unwrap();
        let vec_spec = spec(1, &["p", "q"], 3, [1.25f64.to_le_bytes(); 3].concat());
        cat.add_feature_group("e", 2, "v", DataType::Fp64Vector, 1, 0, vec![vec_spec]).unwrap();
        cat.add_feature_group("e", 3, "l", DataType::Int64, 1, 0, vec![spec(1, &["m", "n"], 1, vec![0; 8])]).unwrap();
        let engine = Engine::new(cat);
        let cat = engine.catalog();
        let entity = cat.entity("e").unwrap();
        let fg = |label| entity.fg(label).unwrap();
        let opts = EncodeOptions { expiry_at: 0, now: NOW, compress: true, saturate: false };
        let f_v1 = psdb::encode(&fg("f").versions[&1].meta, Values::F32(&[1.0, 2.0]), &opts).unwrap();
        let f_v2 = encode_rows(fg("f"), Values::F32(&[3.0, 4.0, 5.0]), 1, NOW, false, &Limits::NONE).unwrap().remove(0);
        let f_cached = crate::cache::uncompressed(&f_v2);
        let int16 = encode_rows(fg("i"), Values::I16(&[-3, 9]), 1, NOW, false, &Limits::NONE).unwrap().remove(0);
        let zeros = [0.0f64; 600]; // compresses: the zstd branch
        let v_big = encode_rows(fg("v"), Values::F64(&zeros[..6]), 1, NOW, false, &Limits::NONE).unwrap().remove(0);
        let v_vals = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let vecs = encode_rows(fg("v"), Values::F64(&v_vals), 1, NOW, false, &Limits::NONE).unwrap().remove(0);
        let int64 = encode_rows(fg("l"), Values::I64(&[i64::MIN, 42]), 1, NOW, false, &Limits::NONE).unwrap().remove(0);
        let key = |k: &str| retrieve::Keys { cols: vec![k.into()] };
        let group = |label: &str, features: &[&str]| retrieve::FeatureGroup {
            label: label.into(),
            feature_labels: features.iter().map(|f| (*f).to_owned()).collect(),
        };
        for features in [["c", "a"], ["a", "c@DataTypeFP16"]] {
            let rq = retrieve::Query {
                entity_label: "e".into(),
                feature_groups: vec![
                    group("f", &features),
                    group("i", &["y", "x"]),
                    group("v", &["q", "p"]),
                    group("l", &["n", "m"]),
                ],
                keys_schema: vec!["id".into()],
                keys: vec![key("k1"), key("k2"), key("k3"), key("k4")],
            };
            let req = parse_retrieve(&engine, &rq.encode_to_vec(), &Limits::NONE).unwrap();
            // Unquantized, the live version-2 blocks take the payload path; the version-1 block (no
            // "c") and a quantized request do not.
            let fast =
                |f: usize, block: &[u8]| req.plan.fgs[f].with_fixed_cells(block, NOW, |_, _| ()).unwrap().is_some();
            let quantized = features[1].contains('@');
            assert_eq!((fast(0, &f_v2), fast(0, &f_cached), fast(0, &f_v1)), (!quantized, !quantized, false));
            assert!(fast(1, &int16) && fast(2, &vecs) && fast(2, &v_big) && fast(3, &int64) && !fast(3, &[]));
            let empty: &[u8] = &[];
            #[rustfmt::skip]
            let blocks: Vec<&[u8]> = vec![
                &f_v1, &int16, &vecs, &int64,
                &f_v2, empty, &v_big, &int64,
                &f_cached, &int16, empty, empty,
                empty, empty, &vecs, &int64,
            ];
            for now in [NOW, NOW + 3601] {
                let got = retrieve::Result::decode(&encode_retrieve(&req, &blocks, now).unwrap()[..]).unwrap();
                let want = rows_cell_by_cell(&req, &blocks, now);
                assert_eq!(got.rows.len(), want.len());
                for (row, (cells, status)) in got.rows.iter().zip(&want) {
                    assert_eq!(&row.columns, cells, "{features:?} at {now}");
                    assert_eq!(&row.fg_status, status);
                }
                assert_decoded_renders(&req, &blocks, now, &got);
            }
        }
        // Spot checks of the values themselves, not only of the two paths agreeing.
        let rq = retrieve::Query {
            entity_label: "e".into(),
            feature_groups: vec![group("f", &["c", "a"]), group("l", &["n", "m"])],
            keys_schema: vec!["id".into()],
            keys: vec![key("k1")],
        };
        let req = parse_retrieve(&engine, &rq.encode_to_vec(), &Limits::NONE).unwrap();
        let got = retrieve::Result::decode(&encode_retrieve(&req, &[&f_v2, &int64], NOW).unwrap()[..]).unwrap();
        let want: Vec<Vec<u8>> = vec![
            5.0f32.to_le_bytes().to_vec(),
            3.0f32.to_le_bytes().to_vec(),
            42i64.to_le_bytes().to_vec(),
            i64::MIN.to_le_bytes().to_vec(),
        ];
        assert_eq!(got.rows[0].columns, want);
    }

    #[test]
    fn persist_then_decode_retrieve_through_the_core() {
        use crate::wire::{self, retrieve};
        const NOW: u64 = 1_772_366_400;
        // The same entity as the wire tests: FG 0 "g" (fp32 a, b), FG 1 "tags" (string vector t).
        let engine = Engine::new(catalog());
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
