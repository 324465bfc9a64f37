//! Retrieve planning and response assembly, and block building for persist.
//!
//! A request is planned against the [`Catalog`] (names resolved, quantization checked, key order
//! mapped) once per request shape, the plan kept by the [`Engine`] serving that catalog. Then the
//! stored blocks of every key × FG are decoded with the layout of their own schema version and the
//! requested features are laid out row-major. Missing or expired data answers the active version's
//! defaults and says so in a per-row, per-FG status.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prost::encoding::encoded_len_varint;

use crate::catalog::{Catalog, Entity, FeatureGroup};
use crate::cell::FloatForm;
use crate::dtype::DataType;
use crate::error::{Error, Result};
use crate::limits::{try_vec, Limits};
use crate::psdb::{self, Array, Block, EncodeOptions, Header};
use crate::shape::Layout;
use crate::store::EntityLayout;
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
    /// The most bytes one served cell can take: over every stored version holding the feature (booked
    /// string lengths for strings) and the default.
    pub max_len: u64,
}

/// The requested features of one FG, with their positions in every stored version.
#[derive(Debug, Clone)]
pub struct FgPlan {
    pub fg: Arc<FeatureGroup>,
    pub columns: Vec<Column>,
    positions: HashMap<u16, Vec<Option<usize>>>,
    /// Per version whose blocks hold every requested feature (none quantized): the requested values
    /// as runs of `(first value, value count)` in the payload, adjacent features merged, so a live
    /// fixed-width block is copied run by run instead of cell by cell.
    runs: HashMap<u16, Vec<(usize, usize)>>,
    /// Per version whose blocks hold every requested feature (none quantized) as fixed-width numbers:
    /// each column's cell as a `(first byte, byte count)` range of the payload, so the wire response
    /// copies cells straight out of a live block.
    cell_bytes: HashMap<u16, Vec<(usize, usize)>>,
    /// Whether every column's cells fit one output array (float64 and narrower quantized features do not).
    one_array: bool,
}

/// A planned request.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The entity's label.
    pub entity: String,
    /// `canonical[i] = given[key_perm[i]]`.
    pub key_perm: Vec<usize>,
    pub fgs: Vec<FgPlan>,
    /// `(ttl seconds, jitter %)` when the entity and every requested FG may use the in-process cache.
    pub in_process_cache: Option<(u64, u8)>,
    /// `(ttl seconds, jitter %)` when the entity and every requested FG may use the distributed cache.
    pub distributed_cache: Option<(u64, u8)>,
    /// What the stores are told of the entity: label, key columns, the requested FG ids.
    pub layout: EntityLayout,
    /// Per store (registry id) the positions in [`Plan::fgs`] of the FGs it holds, in first-use order.
    /// Empty when an FG's store is not known (the catalog was built without storage).
    pub stores: Vec<(String, Vec<usize>)>,
}

/// Most plans an [`Engine`] keeps; request shapes beyond it are planned on every call.
const MAX_CACHED_PLANS: usize = 4096;

/// A compiled registry and the plans made against it: what serves one registry revision. Shared
/// behind an `Arc` by every request thread; only the plan cache locks, briefly.
#[derive(Debug)]
pub struct Engine {
    catalog: Catalog,
    /// Plans by request shape (entity, key order, FGs and features): planning is done once per shape.
    plans: Mutex<HashMap<String, Arc<Plan>>>,
}

impl Engine {
    pub fn new(catalog: Catalog) -> Engine {
        Engine { catalog, plans: Mutex::default() }
    }

    /// The compiled registry served.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The plan of a request shape ([`plan`]), built on first use and then shared.
    pub fn plan(&self, entity: &str, keys_schema: &[&str], fgs: &[(&str, Vec<&str>)]) -> Result<Arc<Plan>> {
        let mut key = String::with_capacity(64 + 16 * fgs.iter().map(|(_, l)| l.len() + 1).sum::<usize>());
        key.push_str(entity);
        for part in keys_schema {
            key.push('\u{1}');
            key.push_str(part);
        }
        for (fg, labels) in fgs {
            key.push('\u{2}');
            key.push_str(fg);
            for l in labels {
                key.push('\u{1}');
                key.push_str(l);
            }
        }
        if let Some(p) = self.plans.lock().expect("plan cache lock").get(&key) {
            return Ok(Arc::clone(p));
        }
        let plan = Arc::new(plan(&self.catalog, entity, keys_schema, fgs)?);
        let mut cache = self.plans.lock().expect("plan cache lock");
        if cache.len() >= MAX_CACHED_PLANS {
            cache.clear();
        }
        cache.insert(key, Arc::clone(&plan));
        Ok(plan)
    }

    /// The retrieve of a request over blocks already read, key-major (`blocks[k * fgs.len() + f]`,
    /// empty = nothing stored): planned, held to `limits` (the keys are the blocks' rows), and every FG
    /// assembled with its found / missing / expired counts.
    #[allow(clippy::too_many_arguments)] // The request's parts, its blocks and how to answer.
    pub fn retrieve(
        &self,
        entity: &str,
        keys_schema: &[&str],
        fgs: &[(&str, Vec<&str>)],
        blocks: &[&[u8]],
        now: u64,
        limits: &Limits,
        form: FloatForm,
    ) -> Result<(Arc<Plan>, Vec<Counted>)> {
        let n_fgs = fgs.len();
        if n_fgs == 0 || blocks.len() % n_fgs != 0 {
            return Err(Error::InvalidInput(format!(
                "{} blocks is not a whole number of rows of {n_fgs} feature groups",
                blocks.len()
            )));
        }
        let plan = self.plan(entity, keys_schema, fgs)?;
        plan.check_limits(blocks.len() / n_fgs, limits)?;
        let counted = plan.assemble_counted_as(blocks, now, form)?;
        Ok((plan, counted))
    }
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
    let in_process_cache = entity.in_process_cache.filter(|_| planned.iter().all(|p| p.fg.in_process_cache));
    let distributed_cache = entity.distributed_cache.filter(|_| planned.iter().all(|p| p.fg.distributed_cache));
    let layout = EntityLayout {
        label: entity.label.clone(),
        key_columns: entity.key_columns.clone(),
        fg_ids: planned.iter().map(|p| p.fg.id).collect(),
    };
    let mut stores: Vec<(String, Vec<usize>)> = Vec::new();
    if planned.iter().all(|p| !p.fg.store_id.is_empty()) {
        for (i, p) in planned.iter().enumerate() {
            match stores.iter_mut().find(|(id, _)| *id == p.fg.store_id) {
                Some((_, at)) => at.push(i),
                None => stores.push((p.fg.store_id.clone(), vec![i])),
            }
        }
    }
    Ok(Plan {
        entity: entity.label.clone(),
        key_perm,
        fgs: planned,
        in_process_cache,
        distributed_cache,
        layout,
        stores,
    })
}

/// Values of one FG plus how many rows were found / missing / expired.
#[derive(Debug, Clone, PartialEq)]
pub struct Counted {
    pub result: FgResult,
    pub counts: [u64; 3],
}

impl Plan {
    /// Upper bound of one `retrieve.Result` row without its key values: every requested cell at its
    /// largest, with its field framing, and the per-FG status field.
    pub fn row_bound(&self) -> u64 {
        let cells: u64 = self
            .fgs
            .iter()
            .flat_map(|f| &f.columns)
            .map(|c| 1 + encoded_len_varint(c.max_len) as u64 + c.max_len)
            .sum();
        let n = self.fgs.len() as u64;
        cells + 1 + encoded_len_varint(n) as u64 + n
    }

    /// Refuses a retrieve of `keys` keys over `limits` (key count, then the response estimated as
    /// `keys ×` [`Plan::row_bound`]) before anything is read or allocated.
    pub fn check_limits(&self, keys: usize, limits: &Limits) -> Result<()> {
        limits.check_keys(keys, || format!("retrieve for entity {:?}", self.entity))?;
        let per_row = self.row_bound();
        limits.check_bytes(per_row.saturating_mul(keys as u64), || {
            format!(
                "retrieve for entity {:?}, estimated response ({keys} keys of up to {per_row} bytes each)",
                self.entity
            )
        })
    }

    /// The FG ids of the plan, in request order.
    pub fn fg_ids(&self) -> Vec<u16> {
        self.fgs.iter().map(|p| p.fg.id).collect()
    }

    /// Assembles every FG from blocks key-major (`blocks[k * fgs + f]`, empty = nothing stored), with
    /// the found / missing / expired count of each FG.
    pub fn assemble_counted(&self, blocks: &[&[u8]], now: u64) -> Result<Vec<Counted>> {
        self.assemble_counted_as(blocks, now, FloatForm::Widened)
    }

    /// [`Plan::assemble_counted`] with bf16 and Q8 values in the given [`FloatForm`].
    pub fn assemble_counted_as(&self, blocks: &[&[u8]], now: u64, form: FloatForm) -> Result<Vec<Counted>> {
        let n = self.fgs.len();
        let mut column: Vec<&[u8]> = Vec::with_capacity(blocks.len() / n.max(1));
        self.fgs
            .iter()
            .enumerate()
            .map(|(f, fp)| {
                column.clear();
                column.extend(blocks.iter().skip(f).step_by(n).copied());
                let result = fp.assemble_as(&column, now, form)?;
                let mut counts = [0u64; 3];
                for s in &result.status {
                    counts[*s as usize] += 1;
                }
                Ok(Counted { result, counts })
            })
            .collect()
    }
}

/// The blocks of `fg_ids` key-major from one CSDB per key (cache entries), or `None` when an entry
/// lacks one of them (the caller then reads the store).
pub fn blocks_from_csdbs<'a>(csdbs: &[&'a [u8]], fg_ids: &[u16]) -> Result<Option<Vec<&'a [u8]>>> {
    let n = fg_ids.len();
    let mut cells: Vec<Option<&'a [u8]>> = try_vec(csdbs.len().saturating_mul(n), "cache entry blocks")?;
    cells.resize(csdbs.len() * n, None);
    for (k, entry) in csdbs.iter().enumerate() {
        if crate::csdb::lookup(entry, fg_ids, &mut cells[k * n..(k + 1) * n])? < n {
            return Ok(None);
        }
    }
    Ok(Some(cells.into_iter().map(Option::unwrap_or_default).collect()))
}

fn plan_fg(entity: &Entity, fg: &Arc<FeatureGroup>, labels: &[&str]) -> Result<FgPlan> {
    if labels.is_empty() {
        return Err(Error::InvalidInput(format!("feature group {}/{} lists no features", entity.label, fg.label)));
    }
    let active = fg.active();
    let mut columns = Vec::with_capacity(labels.len());
    for raw in labels {
        let (label, q) = quant::parse_label(raw)?;
        let q = q.map(|t| quant::target(fg.dtype, t));
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
        let dtype = q.unwrap_or(fg.dtype);
        let max_len = max_cell_len(fg, label, dtype)?.max(default.len() as u64);
        columns.push(Column {
            label: label.to_owned(),
            dtype,
            quant: q,
            default,
            width: active.meta.values_of(pos),
            max_len,
        });
    }
    let positions: HashMap<u16, Vec<Option<usize>>> =
        fg.versions.iter().map(|(&v, spec)| (v, columns.iter().map(|c| spec.position(&c.label)).collect())).collect();
    let mut runs = HashMap::new();
    if columns.iter().all(|c| c.quant.is_none()) {
        for (v, pos) in &positions {
            let meta = &fg.versions[v].meta;
            let mut merged: Vec<(usize, usize)> = Vec::new();
            for p in pos {
                let Some(p) = *p else {
                    merged.clear();
                    break;
                };
                let (start, count) = (meta.value_offset(p), meta.values_of(p));
                match merged.last_mut() {
                    Some(last) if last.0 + last.1 == start => last.1 += count,
                    _ => merged.push((start, count)),
                }
            }
            if !merged.is_empty() {
                runs.insert(*v, merged);
            }
        }
    }
    let size = fg.dtype.element_size();
    let cell_bytes: HashMap<u16, Vec<(usize, usize)>> = if size == 0 || columns.iter().any(|c| c.quant.is_some()) {
        HashMap::new()
    } else {
        positions
            .iter()
            .filter_map(|(v, pos)| {
                let meta = &fg.versions[v].meta;
                let ranges: Option<Vec<_>> =
                    pos.iter().map(|p| p.map(|p| (meta.byte_offset(p), meta.cell_len(p)))).collect();
                ranges.map(|r| (*v, r))
            })
            .collect()
    };
    let out_type = columns.first().map_or(fg.dtype, |c| c.dtype);
    let empty = cell::empty_array(out_type, 0)?;
    let one_array = columns.iter().all(|c| cell::empty_array(c.dtype, 0).ok().as_ref() == Some(&empty));
    Ok(FgPlan { fg: Arc::clone(fg), columns, positions, runs, cell_bytes, one_array })
}

/// The largest cell of feature `label` served as `dtype`, over every version of `fg` that holds it.
fn max_cell_len(fg: &FeatureGroup, label: &str, dtype: DataType) -> Result<u64> {
    let mut most = 0;
    for spec in fg.versions.values() {
        if let Some(p) = spec.position(label) {
            let meta = &spec.meta;
            let slen = meta.string_lengths().get(p).copied().unwrap_or(0);
            let vlen = meta.vector_lengths().get(p).copied().unwrap_or(0);
            most = most.max(cell::max_len(dtype, slen, vlen)?);
        }
    }
    Ok(most)
}

/// Values of one FG for every key: `values` is row-major (key, column, element); `status[k]`.
#[derive(Debug, Clone, PartialEq)]
pub struct FgResult {
    pub values: Array,
    pub status: Vec<Status>,
}

impl FgPlan {
    /// How the requested features lay out a row of this FG's values ([`crate::shape`]).
    pub fn layout(&self) -> Layout {
        Layout::new(self.columns.iter().map(|c| (c.dtype, c.width)))
    }

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
        self.assemble_as(blocks, now, FloatForm::Widened)
    }

    /// [`FgPlan::assemble`] with bf16 and Q8 values in the given [`FloatForm`].
    pub fn assemble_as(&self, blocks: &[&[u8]], now: u64, form: FloatForm) -> Result<FgResult> {
        let out_type = self.columns.first().map_or(self.fg.dtype, |c| c.dtype);
        let capacity = blocks.len().saturating_mul(self.row_width());
        let mut values = cell::empty_array_as(out_type, capacity, form)?;
        let one_array = match form {
            FloatForm::Widened => self.one_array,
            FloatForm::Native => self.columns.iter().all(|c| {
                cell::empty_array_as(c.dtype, 0, form)
                    .is_ok_and(|a| std::mem::discriminant(&a) == std::mem::discriminant(&values))
            }),
        };
        if !one_array {
            let types: Vec<String> = self.columns.iter().map(|c| c.dtype.to_string()).collect();
            return Err(Error::InvalidInput(format!(
                "feature group {:?}: one array cannot hold features served as {}; request them separately",
                self.fg.label,
                types.join(", ")
            )));
        }
        let mut status = try_vec(blocks.len(), "per-key statuses")?;
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
        if self.fg.dtype.element() == Some(crate::dtype::Element::Q8) {
            // Per-vector scales: cell by cell, but straight from the live payload.
            let dtype = self.fg.dtype;
            let done = self.with_live_payload(block, now, &self.cell_bytes, |payload, ranges| {
                ranges.iter().try_for_each(|&(start, len)| cell::append_to(out, dtype, &payload[start..start + len]))
            })?;
            return done.transpose().map(|d| d.is_some());
        }
        Ok(self
            .with_live_payload(block, now, &self.runs, |payload, runs| self.widen(payload, runs, out))?
            .unwrap_or(false))
    }

    /// For a live block of fixed-width numbers whose version holds every requested feature unquantized:
    /// `f(payload, ranges)` with each column's cell as a `(first byte, byte count)` range of the
    /// payload (the cell bytes of the wire response). `None` (and `f` not called) otherwise: the
    /// caller goes through [`FgPlan::cells`].
    pub fn with_fixed_cells<R>(
        &self,
        block: &[u8],
        now: u64,
        f: impl FnOnce(&[u8], &[(usize, usize)]) -> R,
    ) -> Result<Option<R>> {
        self.with_live_payload(block, now, &self.cell_bytes, |payload, ranges| f(payload, ranges))
    }

    /// `f(payload, plan)` for a non-empty, live block whose version has an entry in `by_version`;
    /// `None` for any other block.
    fn with_live_payload<T, R>(
        &self,
        block: &[u8],
        now: u64,
        by_version: &HashMap<u16, T>,
        f: impl FnOnce(&[u8], &T) -> R,
    ) -> Result<Option<R>> {
        if block.is_empty() {
            return Ok(None);
        }
        let header = Header::parse(block)?;
        let Some(plan) = by_version.get(&header.version) else { return Ok(None) };
        let meta = &self.fg.version(header.version)?.meta;
        match header.compression {
            // Cache entries hold uncompressed blocks: take the payload as it is, once its type and size
            // are those of the version (what decoding checks), and it is live.
            psdb::Compression::None if header.dtype == meta.dtype() => {
                let payload = &block[psdb::HEADER_LEN..];
                if meta.fixed_payload_len() != Some(payload.len()) || expiry::is_expired(header.expiry_at, now) {
                    return Ok(None);
                }
                Ok(Some(f(payload, plan)))
            }
            _ => {
                let Block::Present(view) = psdb::decode(block, meta, now)? else { return Ok(None) };
                Ok(Some(f(view.payload(), plan)))
            }
        }
    }

    /// Appends the `runs` of `payload` to `out` when its element type is the FG's; false otherwise.
    fn widen(&self, payload: &[u8], runs: &[(usize, usize)], out: &mut Array) -> bool {
        use crate::dtype::Element as E;
        macro_rules! widen {
            ($v:expr, $t:ty, $w:literal) => {{
                for &(start, count) in runs {
                    let bytes = &payload[start * $w..(start + count) * $w];
                    $v.extend(bytes.chunks_exact($w).map(|c| <$t>::from_le_bytes(c.try_into().expect("exact chunk"))));
                }
            }};
        }
        /// Runs of 16-bit floats decoded in place by a vectorised slice decoder.
        fn decode16(v: &mut Vec<f32>, payload: &[u8], runs: &[(usize, usize)], decode: fn(&[u8], &mut [f32])) {
            for &(start, count) in runs {
                let at = v.len();
                v.resize(at + count, 0.0);
                decode(&payload[start * 2..(start + count) * 2], &mut v[at..]);
            }
        }
        /// Runs of 8-bit floats decoded by their table slice decoders.
        fn decode8(v: &mut Vec<f32>, payload: &[u8], runs: &[(usize, usize)], decode: fn(&[u8], &mut [f32])) {
            for &(start, count) in runs {
                let at = v.len();
                v.resize(at + count, 0.0);
                decode(&payload[start..start + count], &mut v[at..]);
            }
        }
        match (out, self.fg.dtype.element()) {
            (Array::F32(v), Some(E::Fp32)) => widen!(v, f32, 4),
            (Array::F32(v), Some(E::Bf16)) => decode16(v, payload, runs, crate::bf16::decode_bf16_le),
            (Array::F32(v), Some(E::Fp16)) => decode16(v, payload, runs, crate::float::decode_f16_le),
            (Array::F32(v), Some(E::Fp8E4M3)) => decode8(v, payload, runs, crate::float::decode_e4m3_slice),
            (Array::F32(v), Some(E::Fp8E5M2)) => decode8(v, payload, runs, crate::float::decode_e5m2_slice),
            (Array::Bf16(v), Some(E::Bf16)) => widen!(v, u16, 2),
            (Array::F64(v), Some(E::Fp64)) => widen!(v, f64, 8),
            (Array::I32(v), Some(E::Int32)) => widen!(v, i32, 4),
            (Array::I64(v), Some(E::Int64)) => widen!(v, i64, 8),
            (Array::U32(v), Some(E::Uint32)) => widen!(v, u32, 4),
            (Array::U64(v), Some(E::Uint64)) => widen!(v, u64, 8),
            _ => return false,
        }
        true
    }
}

/// Refuses a persist of `rows` rows to `fg` over `limits`, before any value is looked at.
pub fn check_rows(fg: &FeatureGroup, rows: usize, limits: &Limits) -> Result<()> {
    limits.check_rows(rows, || format!("persist to feature group {:?}", fg.label))
}

/// Builds one block per row for a persist: `values` holds `rows × fg.active().meta.n_values()` values,
/// row-major. Every row is validated before any block is returned, so a bad row fails the whole call;
/// more rows than `limits.max_rows`, or blocks adding up to more than `limits.max_bytes`, fail it too.
pub fn encode_rows(
    fg: &FeatureGroup,
    values: Values<'_>,
    rows: usize,
    now: u64,
    saturate: bool,
    limits: &Limits,
) -> Result<Vec<Vec<u8>>> {
    check_rows(fg, rows, limits)?;
    let meta = &fg.active().meta;
    let per_row = meta.n_values();
    if Some(values.len()) != rows.checked_mul(per_row) {
        return Err(Error::WrongCount {
            context: format!("{} rows of feature group {:?}", rows, fg.label),
            expected: rows.saturating_mul(per_row),
            got: values.len(),
        });
    }
    let opts = EncodeOptions { expiry_at: expiry::expiry_for_ttl(fg.ttl_seconds, now)?, now, compress: true, saturate };
    let mut blocks = try_vec(rows, "the blocks of a persist")?;
    let mut built = 0u64;
    for r in 0..rows {
        let row = values.slice(r * per_row, per_row);
        let block = psdb::encode(meta, row, &opts).map_err(|e| match e {
            Error::OutOfRange { .. }
            | Error::NotInteger { .. }
            | Error::NotFinite { .. }
            | Error::StringTooLong { .. } => {
                Error::InvalidInput(format!("row {r} of feature group {:?}: {e}", fg.label))
            }
            other => other,
        })?;
        built += block.len() as u64;
        limits.check_bytes(built, || {
            format!("persist of {rows} rows to feature group {:?}, blocks built up to row {r}", fg.label)
        })?;
        blocks.push(block);
    }
    Ok(blocks)
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
        // No keys_schema: the entity's own key order.
        assert_eq!(plan(&c, "user", &[], &[("profile", vec!["a"])]).unwrap().key_perm, vec![0, 1]);
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
        let v2_block = encode_rows(fg, Values::F32(&[3.0, 4.0, 5.0]), 1, NOW, false, &Limits::NONE).unwrap().remove(0);
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
    fn cache_entries_assemble_like_blocks_and_plans_know_cacheability() {
        let mut c = catalog();
        let p = plan(&c, "user", &["user_id", "region"], &[("profile", vec!["a", "b", "c"])]).unwrap();
        assert_eq!(p.in_process_cache, None);
        c.set_in_process_cache("user", 60, 10, &[3]).unwrap();
        assert!(c.set_in_process_cache("user", 60, 10, &[9]).is_err());
        assert!(c.set_in_process_cache("user", 0, 10, &[3]).is_err());
        let p = plan(&c, "user", &["user_id", "region"], &[("profile", vec!["a", "b", "c"])]).unwrap();
        assert_eq!(p.in_process_cache, Some((60, 10)));
        let fg = c.entity("user").unwrap().fg("profile").unwrap();
        let block = crate::cache::uncompressed(
            &encode_rows(fg, Values::F32(&[3.0, 4.0, 5.0]), 1, NOW, false, &Limits::NONE).unwrap()[0],
        );
        let with = crate::csdb::encode_auto(&[(3, &block)]);
        let absent = crate::csdb::encode_auto(&[(3, &[][..])]);
        let other = crate::csdb::encode_auto(&[(4, &block)]);
        let blocks = blocks_from_csdbs(&[&with, &absent], &[3]).unwrap().unwrap();
        let counted = p.assemble_counted(&blocks, NOW).unwrap();
        assert_eq!(counted[0].result.values, Array::F32(vec![3.0, 4.0, 5.0, 0.5, 0.25, -1.0]));
        assert_eq!(counted[0].counts, [1, 1, 0]);
        assert_eq!(counted[0].result, p.fgs[0].assemble(&[&block, &[]], NOW).unwrap());
        // An entry without the FG is a miss for the whole request.
        assert!(blocks_from_csdbs(&[&with, &other], &[3]).unwrap().is_none());
    }

    #[test]
    fn rows_are_validated_before_any_block_is_built() {
        let c = catalog();
        let fg = c.entity("user").unwrap().fg("profile").unwrap();
        assert!(encode_rows(fg, Values::F32(&[1.0; 5]), 2, NOW, false, &Limits::NONE).is_err());
        let e =
            encode_rows(fg, Values::F64(&[1.0, 2.0, 3.0, 1e300, 0.0, 0.0]), 2, NOW, false, &Limits::NONE).unwrap_err();
        assert!(e.to_string().contains("row 1"), "{e}");
    }

    #[test]
    fn plans_bound_their_rows_and_refuse_requests_over_the_limits() {
        let c = catalog();
        let p = plan(&c, "user", &["user_id", "region"], &[("profile", vec!["c", "a@DataTypeFP16"])]).unwrap();
        // c as fp32 (tag, length, 4 bytes), a quantized to fp16 (2 bytes), the status field of one FG.
        assert_eq!(p.row_bound(), (1 + 1 + 4) + (1 + 1 + 2) + (1 + 1 + 1));
        let l = Limits { max_keys: 100, max_rows: 0, max_bytes: 13 * 100 };
        assert!(p.check_limits(100, &l).is_ok());
        let e = p.check_limits(101, &l).unwrap_err();
        assert_eq!(
            e.to_string(),
            "retrieve for entity \"user\": 101 keys, over the limit of 100 keys (max_keys_per_request)"
        );
        let e = p.check_limits(100, &Limits { max_bytes: 13 * 100 - 1, ..l }).unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::ResourceExhausted);
        assert!(e.to_string().contains("(100 keys of up to 13 bytes each): 1300 bytes, over the limit of 1299"), "{e}");
        // A persist of more rows than allowed is refused before any value is looked at.
        let fg = c.entity("user").unwrap().fg("profile").unwrap();
        let e = encode_rows(fg, Values::F32(&[]), 1, NOW, false, &l).unwrap_err();
        assert!(e.to_string().contains("1 rows, over the limit of 0 rows (max_rows_per_persist)"), "{e}");
    }
}
