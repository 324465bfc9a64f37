//! Retrieve planning and response assembly, and block building for persist.
//!
//! A request is planned once against the [`Catalog`] (names resolved, quantization checked, key order
//! mapped), then the stored blocks of every key × FG are decoded with the layout of their own schema
//! version and the requested features are laid out row-major. Missing or expired data answers the
//! active version's defaults and says so in a per-row, per-FG status.

use std::collections::HashMap;
use std::sync::Arc;

use crate::catalog::{Catalog, Entity, FeatureGroup};
use crate::dtype::DataType;
use crate::error::{Error, Result};
use crate::psdb::{self, Array, Block, EncodeOptions, Header};
use crate::values::Values;
use crate::{cell, expiry, quant};

/// Per key and FG: what the response holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// Stored, live data.
    Found = 0,
    /// Nothing stored: defaults.
    Missing = 1,
    /// Stored data past its expiry: defaults.
    Expired = 2,
}

/// One requested feature.
#[derive(Debug, Clone)]
pub struct Column {
    /// Base label (without an `@Type` suffix).
    pub label: String,
    /// Type of the served cells: the FG's, or the quantization target.
    pub dtype: DataType,
    quant: Option<DataType>,
    /// Default cell, already in `dtype`.
    default: Vec<u8>,
    /// Values per cell (vector length, or 1).
    pub width: usize,
}

/// The requested features of one FG, with their positions in every stored version.
#[derive(Debug, Clone)]
pub struct FgPlan {
    pub fg: Arc<FeatureGroup>,
    pub columns: Vec<Column>,
    positions: HashMap<u16, Vec<Option<usize>>>,
}

/// A planned request.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The entity's label.
    pub entity: String,
    /// `canonical[i] = given[key_perm[i]]`.
    pub key_perm: Vec<usize>,
    pub fgs: Vec<FgPlan>,
}

/// Resolves a request: entity, the caller's key order, and `(fg label, feature labels)` pairs.
pub fn plan(cat: &Catalog, entity: &str, keys_schema: &[&str], fgs: &[(&str, Vec<&str>)]) -> Result<Plan> {
    let entity = cat.entity(entity)?;
    let key_perm = entity.key_permutation(keys_schema)?;
    if fgs.is_empty() {
        return Err(Error::InvalidInput(format!("request for entity {:?} names no feature group", entity.label)));
    }
    let mut planned = Vec::with_capacity(fgs.len());
    for (i, (fg_label, labels)) in fgs.iter().enumerate() {
        if fgs[..i].iter().any(|(l, _)| l == fg_label) {
            return Err(Error::InvalidInput(format!("feature group {fg_label:?} is requested twice")));
        }
        planned.push(plan_fg(entity, entity.fg(fg_label)?, labels)?);
    }
    Ok(Plan { entity: entity.label.clone(), key_perm, fgs: planned })
}

fn plan_fg(entity: &Entity, fg: &Arc<FeatureGroup>, labels: &[&str]) -> Result<FgPlan> {
    if labels.is_empty() {
        return Err(Error::InvalidInput(format!("feature group {}/{} lists no features", entity.label, fg.label)));
    }
    let active = fg.active();
    let mut columns = Vec::with_capacity(labels.len());
    for raw in labels {
        let (label, q) = quant::parse_label(raw)?;
        let pos = active.position(label).ok_or_else(|| Error::NotFound {
            what: "feature",
            name: format!("{}/{}/{label}", entity.label, fg.label),
        })?;
        let mut default = active.defaults[pos].clone();
        if let Some(to) = q {
            quant::check(fg.dtype, to).map_err(|e| Error::InvalidInput(format!("feature {raw:?}: {e}")))?;
            let mut out = Vec::new();
            quant::convert(&default, fg.dtype, to, &mut out)?;
            default = out;
        }
        columns.push(Column {
            label: label.to_owned(),
            dtype: q.unwrap_or(fg.dtype),
            quant: q,
            default,
            width: active.meta.values_of(pos),
        });
    }
    let positions =
        fg.versions.iter().map(|(&v, spec)| (v, columns.iter().map(|c| spec.position(&c.label)).collect())).collect();
    Ok(FgPlan { fg: Arc::clone(fg), columns, positions })
}

/// Values of one FG for every key: `values` is row-major (key, column, element); `status[k]`.
#[derive(Debug, Clone, PartialEq)]
pub struct FgResult {
    pub values: Array,
    pub status: Vec<Status>,
}

impl FgPlan {
    /// Values per row (Σ column widths).
    pub fn row_width(&self) -> usize {
        self.columns.iter().map(|c| c.width).sum()
    }

    /// Calls `emit(column, cell)` for each requested feature of one stored block, in column order.
    pub fn cells(&self, block: &[u8], now: u64, mut emit: impl FnMut(&Column, &[u8]) -> Result<()>) -> Result<Status> {
        let header = if block.is_empty() { None } else { Some(Header::parse(block)?) };
        let version = match header {
            Some(h) => self.fg.version(h.version)?,
            None => self.fg.active(),
        };
        let decoded = psdb::decode(block, &version.meta, now)?;
        let (status, view) = match decoded {
            Block::Present(v) => (Status::Found, Some(v)),
            Block::Missing => (Status::Missing, None),
            Block::Expired(_) => (Status::Expired, None),
        };
        let positions = header.and_then(|h| self.positions.get(&h.version));
        let mut scratch = Vec::new();
        for (i, col) in self.columns.iter().enumerate() {
            let stored = match (&view, positions.and_then(|p| p[i])) {
                (Some(v), Some(pos)) => Some(v.feature(pos)),
                _ => None,
            };
            match (stored, col.quant) {
                (Some(c), Some(to)) => {
                    scratch.clear();
                    quant::convert(&c, self.fg.dtype, to, &mut scratch)?;
                    emit(col, &scratch)?;
                }
                (Some(c), None) => emit(col, &c)?,
                (None, _) => emit(col, &col.default)?,
            }
        }
        Ok(status)
    }

    /// Decodes one FG for every key. `blocks[k]` is the stored block of key `k` (empty = none).
    pub fn assemble(&self, blocks: &[&[u8]], now: u64) -> Result<FgResult> {
        let out_type = self.columns.first().map_or(self.fg.dtype, |c| c.dtype);
        let empty = cell::empty_array(out_type, 0)?;
        if self.columns.iter().any(|c| cell::empty_array(c.dtype, 0).ok().as_ref() != Some(&empty)) {
            return Err(Error::InvalidInput(format!(
                "feature group {:?}: one array cannot hold both float64 and narrower quantized features; request them separately",
                self.fg.label
            )));
        }
        let mut values = cell::empty_array(out_type, blocks.len() * self.row_width())?;
        let mut status = Vec::with_capacity(blocks.len());
        for block in blocks {
            if self.append_fast(block, now, &mut values)? {
                status.push(Status::Found);
                continue;
            }
            status.push(self.cells(block, now, |col, c| cell::append_to(&mut values, col.dtype, c))?);
        }
        Ok(FgResult { values, status })
    }

    /// The common case without per-cell work: a live block of 32/64-bit numbers whose every requested
    /// feature exists in its version, none quantized. Returns false (nothing appended) otherwise.
    fn append_fast(&self, block: &[u8], now: u64, out: &mut Array) -> Result<bool> {
        use crate::dtype::Element as E;
        if block.is_empty() || self.columns.iter().any(|c| c.quant.is_some()) {
            return Ok(false);
        }
        let header = Header::parse(block)?;
        let Some(positions) = self.positions.get(&header.version) else { return Ok(false) };
        if positions.iter().any(Option::is_none) {
            return Ok(false);
        }
        let meta = &self.fg.version(header.version)?.meta;
        let Block::Present(view) = psdb::decode(block, meta, now)? else { return Ok(false) };
        let payload = view.payload();
        macro_rules! widen {
            ($v:expr, $t:ty, $w:literal) => {{
                for pos in positions.iter().flatten() {
                    let start = meta.value_offset(*pos) * $w;
                    let bytes = &payload[start..start + meta.values_of(*pos) * $w];
                    $v.extend(bytes.chunks_exact($w).map(|c| <$t>::from_le_bytes(c.try_into().expect("exact chunk"))));
                }
            }};
        }
        match (out, self.fg.dtype.element()) {
            (Array::F32(v), Some(E::Fp32)) => widen!(v, f32, 4),
            (Array::F64(v), Some(E::Fp64)) => widen!(v, f64, 8),
            (Array::I32(v), Some(E::Int32)) => widen!(v, i32, 4),
            (Array::I64(v), Some(E::Int64)) => widen!(v, i64, 8),
            (Array::U32(v), Some(E::Uint32)) => widen!(v, u32, 4),
            (Array::U64(v), Some(E::Uint64)) => widen!(v, u64, 8),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// Builds one block per row for a persist: `values` holds `rows × fg.active().meta.n_values()` values,
/// row-major. Every row is validated before any block is returned, so a bad row fails the whole call.
pub fn encode_rows(
    fg: &FeatureGroup,
    values: Values<'_>,
    rows: usize,
    now: u64,
    saturate: bool,
) -> Result<Vec<Vec<u8>>> {
    let meta = &fg.active().meta;
    let per_row = meta.n_values();
    if values.len() != rows * per_row {
        return Err(Error::WrongCount {
            context: format!("{} rows of feature group {:?}", rows, fg.label),
            expected: rows * per_row,
            got: values.len(),
        });
    }
    let opts = EncodeOptions { expiry_at: expiry::expiry_for_ttl(fg.ttl_seconds, now)?, now, compress: true, saturate };
    (0..rows)
        .map(|r| {
            let row = slice_values(values, r * per_row, per_row);
            psdb::encode(meta, row, &opts).map_err(|e| match e {
                Error::OutOfRange { .. } | Error::NotInteger { .. } | Error::StringTooLong { .. } => {
                    Error::InvalidInput(format!("row {r} of feature group {:?}: {e}", fg.label))
                }
                other => other,
            })
        })
        .collect()
}

pub(crate) fn slice_values(v: Values<'_>, start: usize, len: usize) -> Values<'_> {
    let r = start..start + len;
    match v {
        Values::F32(s) => Values::F32(&s[r]),
        Values::F64(s) => Values::F64(&s[r]),
        Values::I8(s) => Values::I8(&s[r]),
        Values::I16(s) => Values::I16(&s[r]),
        Values::I32(s) => Values::I32(&s[r]),
        Values::I64(s) => Values::I64(&s[r]),
        Values::U8(s) => Values::U8(&s[r]),
        Values::U16(s) => Values::U16(&s[r]),
        Values::U32(s) => Values::U32(&s[r]),
        Values::U64(s) => Values::U64(&s[r]),
        Values::Bool(s) => Values::Bool(&s[r]),
        Values::Str(s) => Values::Str(&s[r]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::VersionSpec;

    const NOW: u64 = 1_772_366_400;

    fn fp32_cells(v: &[f32]) -> Vec<Vec<u8>> {
        v.iter().map(|x| x.to_le_bytes().to_vec()).collect()
    }

    fn catalog() -> Catalog {
        let mut c = Catalog::new(7);
        c.add_entity("user", &["user_id".into(), "region".into()]).unwrap();
        let v1 = VersionSpec {
            version: 1,
            labels: vec!["a".into(), "b".into()],
            string_lengths: vec![],
            vector_lengths: vec![],
            defaults: fp32_cells(&[0.5, 0.25]),
        };
        let v2 = VersionSpec {
            version: 2,
            labels: vec!["a".into(), "b".into(), "c".into()],
            defaults: fp32_cells(&[0.5, 0.25, -1.0]),
            ..v1.clone()
        };
        c.add_feature_group("user", 3, "profile", DataType::Fp32, 2, 3600, vec![v1, v2]).unwrap();
        c
    }

    #[test]
    fn plan_resolves_and_rejects() {
        let c = catalog();
        let p = plan(&c, "user", &["region", "user_id"], &[("profile", vec!["c", "a@DataTypeFP16"])]).unwrap();
        assert_eq!(p.key_perm, vec![1, 0]);
        assert_eq!(p.fgs[0].columns[1].dtype, DataType::Fp16);
        let err = |r: Result<Plan>| r.unwrap_err().to_string();
        assert!(err(plan(&c, "item", &["x"], &[])).contains("entity \"item\" not found"));
        assert!(err(plan(&c, "user", &["user_id"], &[("profile", vec!["a"])])).contains("keys_schema"));
        assert!(err(plan(&c, "user", &["user_id", "region"], &[("nope", vec!["a"])])).contains("user/nope"));
        assert!(err(plan(&c, "user", &["user_id", "region"], &[("profile", vec!["zz"])])).contains("user/profile/zz"));
        assert!(
            err(plan(&c, "user", &["user_id", "region"], &[("profile", vec!["a@DataTypeFP64"])])).contains("quantize")
        );
        let twice = [("profile", vec!["a"]), ("profile", vec!["b"])];
        assert!(err(plan(&c, "user", &["user_id", "region"], &twice)).contains("twice"));
    }

    #[test]
    fn assemble_mixes_versions_defaults_and_expiry() {
        let c = catalog();
        let fg = c.entity("user").unwrap().fg("profile").unwrap();
        let old_meta = &fg.versions[&1].meta;
        let opts = EncodeOptions { expiry_at: 0, now: NOW, compress: true, saturate: false };
        let v1_block = psdb::encode(old_meta, Values::F32(&[1.0, 2.0]), &opts).unwrap();
        let v2_block = encode_rows(fg, Values::F32(&[3.0, 4.0, 5.0]), 1, NOW, false).unwrap().remove(0);
        let p = plan(&c, "user", &["user_id", "region"], &[("profile", vec!["c", "a"])]).unwrap();
        let r = p.fgs[0].assemble(&[&v1_block, &v2_block, &[]], NOW).unwrap();
        // v1 has no "c": its default; v2 has both; the missing key gets defaults.
        assert_eq!(r.values, Array::F32(vec![-1.0, 1.0, 5.0, 3.0, -1.0, 0.5]));
        assert_eq!(r.status, vec![Status::Found, Status::Found, Status::Missing]);
        let later = p.fgs[0].assemble(&[&v2_block], NOW + 3601).unwrap();
        assert_eq!(later.status, vec![Status::Expired]);
        assert_eq!(later.values, Array::F32(vec![-1.0, 0.5]));
    }

    #[test]
    fn rows_are_validated_before_any_block_is_built() {
        let c = catalog();
        let fg = c.entity("user").unwrap().fg("profile").unwrap();
        assert!(encode_rows(fg, Values::F32(&[1.0; 5]), 2, NOW, false).is_err());
        let e = encode_rows(fg, Values::F64(&[1.0, 2.0, 3.0, 1e300, 0.0, 0.0]), 2, NOW, false).unwrap_err();
        assert!(e.to_string().contains("row 1"), "{e}");
    }
}
