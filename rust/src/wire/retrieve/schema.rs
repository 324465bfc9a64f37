//! What `retrieve.Result` and `retrieve.DecodedResult` share: the feature schema (written from the
//! plan, read back field by field) and the framing of their rows.

use prost::encoding::{encode_varint, encoded_len_varint};

use super::query::RetrieveRequest;
use crate::error::{Error, Result};
use crate::limits::try_reserve;
use crate::wire::proto::{fields, utf8, Field};

/// `retrieve.Feature`: one served feature and its column in every row.
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

/// `retrieve.FeatureSchema`: one requested feature group's features.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FeatureSchema {
    #[prost(string, tag = "1")]
    pub feature_group_label: String,
    #[prost(message, repeated, tag = "2")]
    pub features: Vec<Feature>,
}

/// Rows per status (`[found, missing, expired]`) of each requested FG, in request order.
pub type StatusCounts = Vec<[u64; 3]>;

/// The response's `FeatureSchema`s: every requested feature with its column, served type and length.
pub(super) fn feature_schemas(req: &RetrieveRequest) -> Vec<FeatureSchema> {
    let mut idx = 0i32;
    req.plan
        .fgs
        .iter()
        .map(|f| FeatureSchema {
            feature_group_label: f.fg.label.clone(),
            features: f
                .columns
                .iter()
                .map(|c| {
                    idx += 1;
                    Feature {
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

/// One `retrieve.Feature` as read off the wire, its numbers not yet checked (each response checks
/// what it relies on).
#[derive(Debug)]
pub(super) struct WireFeature {
    pub label: String,
    pub column_idx: u64,
    pub data_type: u64,
    pub vector_length: u64,
}

/// Reads one `retrieve.Feature`.
pub(super) fn read_feature(body: &[u8]) -> Result<WireFeature> {
    let mut f = WireFeature { label: String::new(), column_idx: 0, data_type: 0, vector_length: 0 };
    for field in fields(body, "retrieve.Feature") {
        match field? {
            (1, Field::Bytes(b)) => f.label = utf8(b, "feature label")?,
            (2, Field::Varint(v)) => f.column_idx = v,
            (3, Field::Varint(v)) => f.data_type = v,
            (4, Field::Varint(v)) => f.vector_length = v,
            _ => {}
        }
    }
    Ok(f)
}

/// Reads one `retrieve.FeatureSchema`: its feature group label and its features' bodies.
pub(super) fn read_schema(body: &[u8]) -> Result<(String, Vec<&[u8]>)> {
    let (mut label, mut features) = (String::new(), Vec::new());
    for f in fields(body, "retrieve.FeatureSchema") {
        match f? {
            (1, Field::Bytes(b)) => label = utf8(b, "feature group label")?,
            (2, Field::Bytes(b)) => features.push(b),
            _ => {}
        }
    }
    Ok((label, features))
}

/// The number of FGs of `req`, once `blocks` is checked to hold one block per key and FG.
pub(super) fn check_blocks(req: &RetrieveRequest, blocks: &[&[u8]]) -> Result<usize> {
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

/// Appends the key values of a row (`Row.keys` / `DecodedRow.keys`, field 1).
pub(super) fn push_keys(row: &mut Vec<u8>, cols: &[String]) {
    for c in cols {
        row.push(0x0a);
        encode_varint(c.len() as u64, row);
        row.extend_from_slice(c.as_bytes());
    }
}

/// Appends `row` (the `k`-th) to `out` as the length-delimited field whose tag byte is `tag`, held to
/// the request's byte limit, the buffer reserved fallibly.
pub(super) fn push_row(req: &RetrieveRequest, out: &mut Vec<u8>, tag: u8, row: &[u8], k: usize) -> Result<()> {
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
