//! The gRPC wire messages (`proto/retrieve.proto`, `proto/persist.proto`) as prost structs, and the
//! byte-in / byte-out retrieve and persist paths built on them: servers hand request bytes to the
//! core and send back the bytes it returns, so no per-value Python protobuf object ever exists.

use prost::encoding::{encode_varint, encoded_len_varint};
use prost::Message;

use crate::catalog::{Catalog, FeatureGroup as CatFg};
use std::sync::Arc;

use crate::dtype::DataType;
use crate::engine::{Engine, Plan};
use crate::error::{Error, Result};
use crate::limits::{try_reserve, try_vec, Limits};
use crate::values::Values;
use crate::{cell, expiry, psdb};

/// `retrieve` package messages (field numbers as the reference).
pub mod retrieve {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Keys {
        #[prost(string, repeated, tag = "1")]
        pub cols: Vec<String>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FeatureGroup {
        #[prost(string, tag = "1")]
        pub label: String,
        #[prost(string, repeated, tag = "2")]
        pub feature_labels: Vec<String>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Query {
        #[prost(string, tag = "1")]
        pub entity_label: String,
        #[prost(message, repeated, tag = "2")]
        pub feature_groups: Vec<FeatureGroup>,
        #[prost(string, repeated, tag = "3")]
        pub keys_schema: Vec<String>,
        #[prost(message, repeated, tag = "4")]
        pub keys: Vec<Keys>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Feature {
        #[prost(string, tag = "1")]
        pub label: String,
        #[prost(int32, tag = "2")]
        pub column_idx: i32,
        /// Our addition: data type id of the served cells (the quantization target, if any).
        #[prost(uint32, tag = "3")]
        pub data_type: u32,
        /// Our addition: values per cell of vector types, 0 for scalars.
        #[prost(uint32, tag = "4")]
        pub vector_length: u32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FeatureSchema {
        #[prost(string, tag = "1")]
        pub feature_group_label: String,
        #[prost(message, repeated, tag = "2")]
        pub features: Vec<Feature>,
    }
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
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DecodedRow {
        #[prost(string, repeated, tag = "1")]
        pub keys: Vec<String>,
        #[prost(string, repeated, tag = "2")]
        pub columns: Vec<String>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DecodedResult {
        #[prost(string, repeated, tag = "1")]
        pub keys_schema: Vec<String>,
        #[prost(message, repeated, tag = "2")]
        pub feature_schemas: Vec<FeatureSchema>,
        #[prost(message, repeated, tag = "3")]
        pub rows: Vec<DecodedRow>,
    }
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
}

/// `persist` package messages (field numbers as the reference).
pub mod persist {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FeatureGroupSchema {
        #[prost(string, tag = "1")]
        pub label: String,
        #[prost(string, repeated, tag = "2")]
        pub feature_labels: Vec<String>,
    }
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
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Vector {
        #[prost(message, optional, tag = "1")]
        pub values: Option<Values>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FeatureValues {
        #[prost(message, optional, tag = "1")]
        pub values: Option<Values>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Data {
        #[prost(string, repeated, tag = "1")]
        pub key_values: Vec<String>,
        #[prost(message, repeated, tag = "2")]
        pub feature_values: Vec<FeatureValues>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Query {
        #[prost(string, tag = "1")]
        pub entity_label: String,
        #[prost(string, repeated, tag = "2")]
        pub keys_schema: Vec<String>,
        #[prost(message, repeated, tag = "3")]
        pub feature_group_schema: Vec<FeatureGroupSchema>,
        #[prost(message, repeated, tag = "4")]
        pub data: Vec<Data>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Result {
        #[prost(string, tag = "2")]
        pub message: String,
    }
}

/// A parsed and planned retrieve request.
#[derive(Debug)]
pub struct RetrieveRequest {
    pub query: retrieve::Query,
    pub plan: Arc<Plan>,
    /// Each key's values in the entity's canonical key order.
    pub canonical_keys: Vec<Vec<String>>,
    /// The limits it was checked against; building the response holds them too.
    pub limits: Limits,
}

impl RetrieveRequest {
    /// Ids of the requested FGs, in request order.
    pub fn fg_ids(&self) -> Vec<u16> {
        self.plan.fgs.iter().map(|f| f.fg.id).collect()
    }

    /// Upper bound of the `retrieve.Result` bytes: the header, then per key its key values and
    /// [`Plan::row_bound`], framed. Computed from the plan alone, before any block is read.
    pub fn estimated_response_bytes(&self) -> u64 {
        let field = |len: usize| 1 + encoded_len_varint(len as u64) as u64 + len as u64;
        let q = &self.query;
        // Header: a Feature is its label plus at most 22 bytes of framing and numbers.
        let head = field(q.entity_label.len())
            + q.keys_schema.iter().map(|k| field(k.len())).sum::<u64>()
            + self
                .plan
                .fgs
                .iter()
                .map(|f| 6 + field(f.fg.label.len()) + f.columns.iter().map(|c| 22 + c.label.len() as u64).sum::<u64>())
                .sum::<u64>();
        let per_row = self.plan.row_bound();
        let rows = q.keys.iter().map(|k| {
            let row = k.cols.iter().map(|c| field(c.len())).sum::<u64>() + per_row;
            1 + encoded_len_varint(row) as u64 + row
        });
        rows.fold(head, u64::saturating_add)
    }
}

/// The first value of string field `label` and the number of occurrences of length-delimited field
/// `counted` at the top level of a protobuf message, read without decoding it: a request's entity and
/// key or row count are known before anything is allocated for it. Stops at the first malformed
/// field (the decode that follows reports it).
fn prescan(mut bytes: &[u8], label: u64, counted: u64) -> (String, usize) {
    use prost::encoding::decode_varint;
    let (mut first, mut n) = (None, 0usize);
    while !bytes.is_empty() {
        let Ok(key) = decode_varint(&mut bytes) else { break };
        let skip = match key & 7 {
            0 => match decode_varint(&mut bytes) {
                Ok(_) => 0,
                Err(_) => break,
            },
            1 => 8,
            2 => match decode_varint(&mut bytes) {
                Ok(len) => len,
                Err(_) => break,
            },
            5 => 4,
            _ => break,
        };
        let Some(skip) = usize::try_from(skip).ok().filter(|&s| s <= bytes.len()) else { break };
        if key & 7 == 2 {
            if key >> 3 == counted {
                n += 1;
            } else if key >> 3 == label && first.is_none() {
                first = Some(&bytes[..skip]);
            }
        }
        bytes = &bytes[skip..];
    }
    (first.map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default(), n)
}

/// Parses `retrieve.Query` bytes and plans them (every name checked, keys canonicalised). The key
/// count is checked against `limits` before the request is decoded, and the response estimated from
/// the plan ([`RetrieveRequest::estimated_response_bytes`]) before anything is read.
pub fn parse_retrieve(engine: &Engine, bytes: &[u8], limits: &Limits) -> Result<RetrieveRequest> {
    let (entity, keys) = prescan(bytes, 1, 4);
    limits.check_keys(keys, || format!("retrieve for entity {entity:?}"))?;
    let mut query =
        retrieve::Query::decode(bytes).map_err(|e| Error::InvalidInput(format!("malformed retrieve.Query: {e}")))?;
    if query.entity_label.is_empty() {
        return Err(Error::InvalidInput("retrieve.Query names no entity (entity_label is empty)".into()));
    }
    if query.keys.is_empty() {
        return Err(Error::InvalidInput(format!("request for entity {:?} has no keys", query.entity_label)));
    }
    let schema: Vec<&str> = query.keys_schema.iter().map(String::as_str).collect();
    let fgs: Vec<(&str, Vec<&str>)> = query
        .feature_groups
        .iter()
        .map(|g| (g.label.as_str(), g.feature_labels.iter().map(String::as_str).collect()))
        .collect();
    let plan = engine.plan(&query.entity_label, &schema, &fgs)?;
    drop((schema, fgs));
    if query.keys_schema.is_empty() {
        // No keys_schema: the keys are in the entity's order, and the response says which that is.
        query.keys_schema.clone_from(&engine.catalog().entity(&query.entity_label)?.keys);
    }
    let canonical_keys = query
        .keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            if k.cols.len() == plan.key_perm.len() {
                Ok(plan.key_perm.iter().map(|&p| k.cols[p].clone()).collect())
            } else {
                Err(Error::InvalidInput(format!(
                    "key {i} has {} values for keys_schema {:?}",
                    k.cols.len(),
                    query.keys_schema
                )))
            }
        })
        .collect::<Result<_>>()?;
    let req = RetrieveRequest { query, plan, canonical_keys, limits: *limits };
    limits.check_bytes(req.estimated_response_bytes(), || {
        format!(
            "retrieve for entity {:?}, estimated response ({} keys of up to {} bytes each, plus the keys)",
            req.plan.entity,
            req.query.keys.len(),
            req.plan.row_bound()
        )
    })?;
    Ok(req)
}

/// Builds the `retrieve.Result` bytes. `blocks[k * n_fgs + f]` is key `k`'s stored block of FG `f`.
pub fn encode_retrieve(req: &RetrieveRequest, blocks: &[&[u8]], now: u64) -> Result<Vec<u8>> {
    encode_retrieve_counted(req, blocks, now).map(|(bytes, _)| bytes)
}

/// Rows per status (`[found, missing, expired]`) of each requested FG, in request order.
pub type StatusCounts = Vec<[u64; 3]>;

/// [`encode_retrieve`], also counting how many rows of each FG were found, missing or expired.
pub fn encode_retrieve_counted(req: &RetrieveRequest, blocks: &[&[u8]], now: u64) -> Result<(Vec<u8>, StatusCounts)> {
    let n_fgs = check_blocks(req, blocks)?;
    // The header fields go through prost; rows are written straight into the output buffer, so a
    // response costs no allocation per cell.
    let head = retrieve::Result {
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
            let fast = fp.with_fixed_cells(block, now, |payload, ranges| {
                for &(start, len) in ranges {
                    push_column(&mut row, &payload[start..start + len]);
                }
            })?;
            let s = match fast {
                Some(()) => crate::engine::Status::Found,
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

/// The number of FGs of `req`, once `blocks` is checked to hold one block per key and FG.
fn check_blocks(req: &RetrieveRequest, blocks: &[&[u8]]) -> Result<usize> {
    let n_fgs = req.plan.fgs.len();
    if blocks.len() != req.query.keys.len() * n_fgs {
        return Err(Error::InvalidInput(format!(
            "{} blocks for {} keys × {n_fgs} feature groups",
            blocks.len(),
            req.query.keys.len()
        )));
    }
    Ok(n_fgs)
}

/// The response's `FeatureSchema`s: every requested feature with its column, served type and length.
fn feature_schemas(req: &RetrieveRequest) -> Vec<retrieve::FeatureSchema> {
    let mut idx = 0i32;
    req.plan
        .fgs
        .iter()
        .map(|f| retrieve::FeatureSchema {
            feature_group_label: f.fg.label.clone(),
            features: f
                .columns
                .iter()
                .map(|c| {
                    idx += 1;
                    retrieve::Feature {
                        label: c.label.clone(),
                        column_idx: idx - 1,
                        data_type: c.dtype as u32,
                        vector_length: if c.dtype.is_vector() { c.width as u32 } else { 0 },
                    }
                })
                .collect(),
        })
        .collect()
}

/// Appends the key values of a row (`Row.keys` / `DecodedRow.keys`, field 1).
fn push_keys(row: &mut Vec<u8>, cols: &[String]) {
    for c in cols {
        row.push(0x0a);
        encode_varint(c.len() as u64, row);
        row.extend_from_slice(c.as_bytes());
    }
}

/// Appends `row` (the `k`-th) to `out` as the length-delimited field whose tag byte is `tag`, held to
/// the request's byte limit, the buffer reserved fallibly.
fn push_row(req: &RetrieveRequest, out: &mut Vec<u8>, tag: u8, row: &[u8], k: usize) -> Result<()> {
    let framed = 1 + encoded_len_varint(row.len() as u64) + row.len();
    req.limits.check_bytes((out.len() + framed) as u64, || {
        format!("retrieve for entity {:?}, response built up to key {k}", req.query.entity_label)
    })?;
    // Rows of one request are about the same size: size `out` for all of them after the first
    // (within the limit, which the estimate held the whole response to).
    let want = if k == 0 { framed.saturating_mul(req.query.keys.len()).min(req.limits.max_bytes) } else { framed };
    try_reserve(out, want.max(framed), "the retrieve response")?;
    out.push(tag);
    encode_varint(row.len() as u64, out);
    out.extend_from_slice(row);
    Ok(())
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

/// Builds the `retrieve.DecodedResult` bytes: every cell rendered as the reference's string form.
pub fn encode_decoded(req: &RetrieveRequest, blocks: &[&[u8]], now: u64) -> Result<Vec<u8>> {
    encode_decoded_counted(req, blocks, now).map(|(bytes, _)| bytes)
}

/// [`encode_decoded`] with the per-FG status counts. Rows are rendered straight from the blocks into
/// the output, one at a time, so the rendered strings (longer than the cells they come from) are held
/// to the byte limit as they are made, and no binary response is built first.
pub fn encode_decoded_counted(req: &RetrieveRequest, blocks: &[&[u8]], now: u64) -> Result<(Vec<u8>, StatusCounts)> {
    let n_fgs = check_blocks(req, blocks)?;
    let head = retrieve::DecodedResult {
        keys_schema: req.query.keys_schema.clone(),
        feature_schemas: feature_schemas(req),
        rows: Vec::new(),
    };
    let mut out = head.encode_to_vec();
    let mut row: Vec<u8> = Vec::new();
    let mut counts: StatusCounts = vec![[0; 3]; n_fgs];
    for (k, key) in req.query.keys.iter().enumerate() {
        row.clear();
        push_keys(&mut row, &key.cols);
        for (f, fp) in req.plan.fgs.iter().enumerate() {
            let s = fp.cells(blocks[k * n_fgs + f], now, |col, cell| {
                let text = crate::render::cell_string(col.dtype, cell, col.width as u32)?;
                row.push(0x12); // DecodedRow.columns, field 2
                encode_varint(text.len() as u64, &mut row);
                row.extend_from_slice(text.as_bytes());
                Ok(())
            })?;
            counts[f][s as usize] += 1;
        }
        push_row(req, &mut out, 0x1a, &row, k)?; // DecodedResult.rows, field 3
    }
    Ok((out, counts))
}

/// One block to write.
#[derive(Debug, Clone, PartialEq)]
pub struct PersistBlock {
    pub key: Vec<String>,
    pub fg_id: u16,
    pub block: Vec<u8>,
    pub expires_at: u64,
}

/// A validated persist request: the entity and every block to write.
#[derive(Debug)]
pub struct PersistRequest {
    pub entity: String,
    pub blocks: Vec<PersistBlock>,
}

/// Parses `persist.Query` bytes and builds every block; any invalid value fails the whole request
/// (naming entity, FG, feature and row) before anything can be written. The row count is checked
/// against `limits` before the request is decoded, and the blocks built are held to its byte limit.
pub fn parse_persist(cat: &Catalog, bytes: &[u8], now: u64, saturate: bool, limits: &Limits) -> Result<PersistRequest> {
    let (entity, rows) = prescan(bytes, 1, 4);
    limits.check_rows(rows, || format!("persist for entity {entity:?}"))?;
    let q = persist::Query::decode(bytes).map_err(|e| Error::InvalidInput(format!("malformed persist.Query: {e}")))?;
    if q.entity_label.is_empty() {
        return Err(Error::InvalidInput("persist.Query names no entity (entity_label is empty)".into()));
    }
    let entity = cat.entity(&q.entity_label)?;
    let schema: Vec<&str> = q.keys_schema.iter().map(String::as_str).collect();
    let perm = entity.key_permutation(&schema)?;
    if q.feature_group_schema.is_empty() {
        return Err(Error::InvalidInput(format!("persist for entity {:?} names no feature group", entity.label)));
    }
    let fgs: Vec<(&CatFg, Vec<usize>)> = q
        .feature_group_schema
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if q.feature_group_schema[..i].iter().any(|o| o.label == s.label) {
                return Err(Error::InvalidInput(format!("feature group {:?} is listed twice", s.label)));
            }
            if s.feature_labels.is_empty() {
                // Every feature would get its default: a write that wipes the row, never what a
                // producer meant.
                return Err(Error::InvalidInput(format!(
                    "persist for entity {:?}: feature group {:?} lists no features (feature_labels is empty)",
                    entity.label, s.label
                )));
            }
            if let Some(dup) = s.feature_labels.iter().enumerate().find(|(j, l)| s.feature_labels[..*j].contains(l)) {
                return Err(Error::InvalidInput(format!(
                    "feature {:?} is listed twice for feature group {:?}",
                    dup.1, s.label
                )));
            }
            let fg = entity.fg(&s.label)?;
            let active = fg.active();
            let positions = s
                .feature_labels
                .iter()
                .map(|l| {
                    active.position(l).ok_or_else(|| Error::NotFound {
                        what: "feature",
                        name: format!("{}/{}/{l}", entity.label, fg.label),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok((&**fg, positions))
        })
        .collect::<Result<_>>()?;
    if q.data.is_empty() {
        return Err(Error::InvalidInput(format!("persist for entity {:?} has no rows (data is empty)", entity.label)));
    }
    let mut blocks = try_vec(q.data.len().saturating_mul(fgs.len()), "the blocks of a persist")?;
    let mut built = 0u64;
    for (r, row) in q.data.iter().enumerate() {
        if row.key_values.len() != perm.len() {
            return Err(Error::InvalidInput(format!(
                "row {r}: {} key values for keys_schema {:?}",
                row.key_values.len(),
                q.keys_schema
            )));
        }
        if row.feature_values.len() != fgs.len() {
            return Err(Error::InvalidInput(format!(
                "row {r}: {} feature value sets for {} feature groups",
                row.feature_values.len(),
                fgs.len()
            )));
        }
        if let Some(i) = row.key_values.iter().position(String::is_empty) {
            return Err(Error::InvalidInput(format!(
                "row {r}: key value for {:?} is empty",
                q.keys_schema.get(i).map_or("", String::as_str)
            )));
        }
        let key: Vec<String> = perm.iter().map(|&p| row.key_values[p].clone()).collect();
        for ((fg, positions), fv) in fgs.iter().zip(&row.feature_values) {
            let ctx =
                |e: Error| Error::InvalidInput(format!("row {r}, feature group {}/{}: {e}", entity.label, fg.label));
            let empty = persist::Values::default();
            let values = fv.values.as_ref().unwrap_or(&empty);
            let block = build_block(fg, positions, values, now, saturate).map_err(ctx)?;
            built += (block.len() + key.iter().map(String::len).sum::<usize>()) as u64;
            limits.check_bytes(built, || {
                format!("persist for entity {:?} of {} rows, blocks built up to row {r}", entity.label, q.data.len())
            })?;
            let expires_at = expiry::expiry_for_ttl(fg.ttl_seconds, now)?;
            blocks.push(PersistBlock { key: key.clone(), fg_id: fg.id, block, expires_at });
        }
    }
    Ok(PersistRequest { entity: entity.label.clone(), blocks })
}

/// One FG block from the given features' values, defaults for the rest.
fn build_block(fg: &CatFg, positions: &[usize], v: &persist::Values, now: u64, saturate: bool) -> Result<Vec<u8>> {
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
        let empty = persist::Values::default();
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

/// The `persist.Values` field that carries `dtype`'s values: its number and name (§1.2 of the reference
/// facts). The one table of it: decoding here and encoding in `client` both use it.
pub(crate) fn container_field(dtype: DataType) -> Result<(u32, &'static str)> {
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
fn with_container<T>(
    fg: &CatFg,
    v: &persist::Values,
    f: impl FnOnce(Values<'_>, &'static str) -> Result<T>,
) -> Result<T> {
    let (tag, name) = container_field(fg.dtype)?;
    let strs: Vec<&[u8]>;
    let vals = match tag {
        1 => Values::F64(&v.fp32_values),
        2 => Values::F64(&v.fp64_values),
        3 => Values::I32(&v.int32_values),
        4 => Values::I64(&v.int64_values),
        5 => Values::U32(&v.uint32_values),
        6 => Values::U64(&v.uint64_values),
        7 => {
            strs = v.string_values.iter().map(String::as_bytes).collect();
            Values::Str(&strs)
        }
        _ => Values::Bool(&v.bool_values),
    };
    f(vals, name)
}

/// `persist.Result` bytes for a successful persist (the reference's message).
pub fn persist_ok() -> Vec<u8> {
    persist::Result { message: "Data Persisted Successfully".into() }.encode_to_vec()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::catalog::VersionSpec;
    use crate::dtype::DataType;

    const NOW: u64 = 1_772_366_400;

    /// A catalog for tests: entity "user" with FG 0 "g" (fp32 a, b) and FG 1 "tags" (string vector t).
    pub(crate) fn catalog() -> Catalog {
        let mut c = Catalog::new(1);
        c.add_entity("user", &["user_id".into()]).unwrap();
        let v1 = VersionSpec {
            version: 1,
            labels: vec!["a".into(), "b".into()],
            string_lengths: vec![],
            vector_lengths: vec![],
            defaults: vec![1.5f32.to_le_bytes().to_vec(), (-1.0f32).to_le_bytes().to_vec()],
        };
        c.add_feature_group("user", 0, "g", DataType::Fp32, 1, 0, vec![v1]).unwrap();
        let tags = VersionSpec {
            version: 1,
            labels: vec!["t".into()],
            string_lengths: vec![4],
            vector_lengths: vec![2],
            defaults: vec![vec![1, 0, 1, 0, b'x', b'y']],
        };
        c.add_feature_group("user", 1, "tags", DataType::StringVector, 1, 0, vec![tags]).unwrap();
        c
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
    fn bad_requests_name_what_is_wrong() {
        let engine = Engine::new(catalog());
        let c = engine.catalog();
        let q = persist::Query {
            entity_label: "user".into(),
            keys_schema: vec!["user_id".into()],
            feature_group_schema: vec![persist::FeatureGroupSchema {
                label: "g".into(),
                feature_labels: vec!["zz".into()],
            }],
            data: vec![],
        };
        let e = parse_persist(c, &q.encode_to_vec(), NOW, false, &Limits::NONE).unwrap_err();
        assert!(e.to_string().contains("user/g/zz"), "{e}");
        assert!(parse_retrieve(&engine, b"\xff\xff", &Limits::NONE).unwrap_err().to_string().contains("malformed"));
        let rq =
            retrieve::Query { entity_label: "user".into(), keys_schema: vec!["user_id".into()], ..Default::default() };
        assert!(parse_retrieve(&engine, &rq.encode_to_vec(), &Limits::NONE)
            .unwrap_err()
            .to_string()
            .contains("no keys"));
    }

    fn retrieve_query(fgs: &[(&str, &[&str])], n_keys: usize) -> Vec<u8> {
        retrieve::Query {
            entity_label: "user".into(),
            feature_groups: fgs
                .iter()
                .map(|(l, f)| retrieve::FeatureGroup {
                    label: (*l).into(),
                    feature_labels: f.iter().map(|x| (*x).to_owned()).collect(),
                })
                .collect(),
            keys_schema: vec!["user_id".into()],
            keys: (0..n_keys).map(|i| retrieve::Keys { cols: vec![format!("user-{i}")] }).collect(),
        }
        .encode_to_vec()
    }

    fn exhausted(e: &Error) -> bool {
        e.kind() == crate::error::ErrorKind::ResourceExhausted
    }

    #[test]
    fn the_response_estimate_bounds_what_is_built() {
        let engine = Engine::new(catalog());
        let cat = engine.catalog();
        let g_rows = parse_persist(cat, &persist_g(&["u1"], 2.0), NOW, false, &Limits::NONE).unwrap().blocks;
        // Full-length strings: the largest cells the booked length allows.
        let tags = persist::Query {
            entity_label: "user".into(),
            keys_schema: vec!["user_id".into()],
            feature_group_schema: vec![persist::FeatureGroupSchema {
                label: "tags".into(),
                feature_labels: vec!["t".into()],
            }],
            data: vec![persist::Data {
                key_values: vec!["u1".into()],
                feature_values: vec![persist::FeatureValues {
                    values: Some(persist::Values {
                        vector: vec![persist::Vector {
                            values: Some(persist::Values {
                                string_values: vec!["abcd".into(), "efgh".into()],
                                ..Default::default()
                            }),
                        }],
                        ..Default::default()
                    }),
                }],
            }],
        };
        let t_rows = parse_persist(cat, &tags.encode_to_vec(), NOW, false, &Limits::NONE).unwrap().blocks;
        let (gb, tb) = (&g_rows[0].block[..], &t_rows[0].block[..]);
        for n in [1, 7, 300] {
            let query = retrieve_query(&[("g", &["a", "b@DataTypeFP16"]), ("tags", &["t"])], n);
            let req = parse_retrieve(&engine, &query, &Limits::NONE).unwrap();
            let estimate = req.estimated_response_bytes();
            for blocks in [vec![gb, tb], vec![&[][..], &[][..]]] {
                let all: Vec<&[u8]> = (0..n).flat_map(|_| blocks.iter().copied()).collect();
                let built = encode_retrieve(&req, &all, NOW).unwrap().len() as u64;
                assert!(built <= estimate, "{n} keys: built {built} > estimated {estimate}");
            }
            // Fixed widths and full strings: the estimate is the response, give or take the header.
            let all: Vec<&[u8]> = (0..n).flat_map(|_| [gb, tb]).collect();
            let built = encode_retrieve(&req, &all, NOW).unwrap().len() as u64;
            assert!(estimate - built < 64, "{n} keys: estimated {estimate}, built {built}");
            // One byte less than the estimate: refused when parsed, before any block is read.
            let tight = Limits { max_bytes: estimate as usize - 1, ..Limits::NONE };
            let err = parse_retrieve(&engine, &query, &tight).unwrap_err();
            assert!(exhausted(&err), "{err}");
            assert!(
                err.to_string().contains(&format!("{estimate} bytes, over the limit of {} bytes", estimate - 1)),
                "{err}"
            );
            assert!(parse_retrieve(&engine, &query, &Limits { max_bytes: estimate as usize, ..Limits::NONE }).is_ok());
        }
    }

    fn persist_g(keys: &[&str], b: f64) -> Vec<u8> {
        persist::Query {
            entity_label: "user".into(),
            keys_schema: vec!["user_id".into()],
            feature_group_schema: vec![persist::FeatureGroupSchema {
                label: "g".into(),
                feature_labels: vec!["b".into()],
            }],
            data: keys
                .iter()
                .map(|k| persist::Data {
                    key_values: vec![(*k).into()],
                    feature_values: vec![persist::FeatureValues {
                        values: Some(persist::Values { fp32_values: vec![b], ..Default::default() }),
                    }],
                })
                .collect(),
        }
        .encode_to_vec()
    }

    #[test]
    fn too_many_keys_are_refused_before_the_request_is_decoded() {
        let c = Engine::new(catalog());
        let limits = Limits { max_keys: 2, ..Limits::NONE };
        assert!(parse_retrieve(&c, &retrieve_query(&[("g", &["a"])], 2), &limits).is_ok());
        let e = parse_retrieve(&c, &retrieve_query(&[("g", &["a"])], 3), &limits).unwrap_err();
        assert!(exhausted(&e));
        assert_eq!(
            e.to_string(),
            "retrieve for entity \"user\": 3 keys, over the limit of 2 keys (max_keys_per_request)"
        );
        // Counted from the raw bytes: a request that names nothing that exists is still refused for
        // its size, so no name lookup or decode is spent on it.
        let mut q = retrieve_query(&[("nope", &["a"])], 3);
        assert!(exhausted(&parse_retrieve(&c, &q, &limits).unwrap_err()));
        q.extend_from_slice(b"\xff"); // a malformed tail: the count stops there, the decode reports it
        assert!(parse_retrieve(&c, &q, &Limits::NONE).unwrap_err().to_string().contains("malformed"));
        assert_eq!(prescan(b"", 1, 4), (String::new(), 0));
    }

    #[test]
    fn a_huge_vector_fg_is_refused_by_its_estimate_not_by_the_allocator() {
        // The request that used to abort the process: 60k keys of one fp64 vector of 65535 values
        // (row width × keys = 31 GB reserved up front).
        let mut c = Catalog::new(1);
        c.add_entity("user", &["user_id".into()]).unwrap();
        let spec = VersionSpec {
            version: 1,
            labels: vec!["v".into()],
            string_lengths: vec![],
            vector_lengths: vec![65_535],
            defaults: vec![vec![0; 65_535 * 8]],
        };
        c.add_feature_group("user", 0, "emb", DataType::Fp64Vector, 1, 0, vec![spec]).unwrap();
        let c = Engine::new(c);
        let q = retrieve_query(&[("emb", &["v"])], 60_000);
        let defaults = Limits { max_keys: 10_000, max_rows: 100_000, max_bytes: 64 << 20 };
        let e = parse_retrieve(&c, &q, &defaults).unwrap_err();
        assert!(e.to_string().contains("60000 keys, over the limit of 10000 keys"), "{e}");
        let e = parse_retrieve(&c, &q, &Limits { max_keys: 100_000, ..defaults }).unwrap_err();
        assert!(exhausted(&e));
        let row = 1 + 3 + 65_535 * 8 + 3;
        assert!(e.to_string().contains(&format!("(60000 keys of up to {row} bytes each, plus the keys)")), "{e}");
        assert!(e.to_string().contains("over the limit of 67108864 bytes (max_message_bytes)"), "{e}");
        // The response built is held to the limit too, whatever the estimate said.
        let mut req = parse_retrieve(&c, &retrieve_query(&[("emb", &["v"])], 3), &Limits::NONE).unwrap();
        req.limits.max_bytes = 2 * row + 100; // two rows with their keys and framing, and the header
        let e = encode_retrieve(&req, &[&[], &[], &[]], NOW).unwrap_err();
        assert!(exhausted(&e) && e.to_string().contains("response built up to key 2"), "{e}");
        // Decoded: each row renders its 65535 zeros as "0:0:…" (131069 bytes), held to the limit as it goes.
        req.limits.max_bytes = 2 * 131_069 + 100;
        let e = encode_decoded(&req, &[&[], &[], &[]], NOW).unwrap_err();
        assert!(exhausted(&e) && e.to_string().contains("response built up to key 2"), "{e}");
        req.limits.max_bytes = 3 * 131_069 + 100;
        let (out, counts) = encode_decoded_counted(&req, &[&[], &[], &[]], NOW).unwrap();
        assert_eq!(counts, vec![[0, 3, 0]]);
        let rows = retrieve::DecodedResult::decode(&out[..]).unwrap().rows;
        assert_eq!(rows[2].columns[0], vec!["0"; 65_535].join(":"));
    }

    #[test]
    fn persists_are_held_to_the_row_and_byte_limits_and_must_name_features() {
        let c = catalog();
        let keys = ["u1", "u2", "u3"];
        let q = persist_g(&keys, 1.0);
        let e = parse_persist(&c, &q, NOW, false, &Limits { max_rows: 2, ..Limits::NONE }).unwrap_err();
        assert!(exhausted(&e));
        assert_eq!(
            e.to_string(),
            "persist for entity \"user\": 3 rows, over the limit of 2 rows (max_rows_per_persist)"
        );
        let one = parse_persist(&c, &persist_g(&["u1"], 1.0), NOW, false, &Limits::NONE).unwrap();
        let per_row = (one.blocks[0].block.len() + 2) as u64;
        let e =
            parse_persist(&c, &q, NOW, false, &Limits { max_bytes: 2 * per_row as usize, ..Limits::NONE }).unwrap_err();
        assert!(exhausted(&e) && e.to_string().contains("blocks built up to row 2"), "{e}");
        assert!(parse_persist(&c, &q, NOW, false, &Limits { max_bytes: 3 * per_row as usize, ..Limits::NONE }).is_ok());
        // No features listed: every feature would be reset to its default. Refused, naming the FG.
        let empty = persist::Query {
            entity_label: "user".into(),
            keys_schema: vec!["user_id".into()],
            feature_group_schema: vec![persist::FeatureGroupSchema { label: "g".into(), feature_labels: vec![] }],
            data: vec![persist::Data {
                key_values: vec!["u1".into()],
                feature_values: vec![persist::FeatureValues { values: Some(persist::Values::default()) }],
            }],
        };
        let e = parse_persist(&c, &empty.encode_to_vec(), NOW, false, &Limits::NONE).unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::InvalidInput);
        assert_eq!(
            e.to_string(),
            "persist for entity \"user\": feature group \"g\" lists no features (feature_labels is empty)"
        );
    }
}
