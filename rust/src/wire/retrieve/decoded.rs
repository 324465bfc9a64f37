//! `retrieve.DecodedResult`: the server renders every cell as the reference's string form straight
//! from the stored blocks ([`encode_decoded`]); clients read the rows of strings back
//! ([`decode_decoded_result`]). It carries no additions, so any server's can be read.

use prost::encoding::encode_varint;
use prost::Message;

use super::query::RetrieveRequest;
use super::schema::{
    check_blocks, feature_schemas, push_keys, push_row, read_feature, read_schema, FeatureSchema, StatusCounts,
};
use crate::error::{Error, Result};
use crate::limits::try_vec;
use crate::wire::proto::{fields, utf8, Field};

/// `retrieve.DecodedRow`: one key's values and rendered cells.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DecodedRow {
    #[prost(string, repeated, tag = "1")]
    pub keys: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub columns: Vec<String>,
}

/// `retrieve.DecodedResult`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DecodedResult {
    #[prost(string, repeated, tag = "1")]
    pub keys_schema: Vec<String>,
    #[prost(message, repeated, tag = "2")]
    pub feature_schemas: Vec<FeatureSchema>,
    #[prost(message, repeated, tag = "3")]
    pub rows: Vec<DecodedRow>,
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
    let head = DecodedResult {
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
                let (label, bodies) = read_schema(b)?;
                let features = bodies.iter().map(|f| label_and_column(f)).collect::<Result<Vec<_>>>()?;
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

/// A feature's label and column (a reference server's `Feature` has no more).
fn label_and_column(body: &[u8]) -> Result<(String, usize)> {
    let f = read_feature(body)?;
    let column = usize::try_from(f.column_idx).map_err(|_| Error::corrupt("column index out of range"))?;
    Ok((f.label, column))
}
