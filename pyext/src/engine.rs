//! Bindings of the compiled catalog and the retrieve / persist engine. Blocks cross as `bytes`,
//! values as numpy buffers; planning, decoding and assembly run with the GIL released. Conversions
//! only: plans, limits, the in-process cache attempt, key names and result shapes are the core's.

use std::sync::Arc;

use numpy::PyArray1;
use ofs_core::cached::CacheLookup;
use ofs_core::catalog::{Catalog, VersionSpec};
use ofs_core::cell::FloatForm;
use ofs_core::engine::{self, Engine};
use ofs_core::shape::Shaped;
use ofs_core::{wire, DataType, Limits};
use pyo3::prelude::*;
use pyo3::pybacked::{PyBackedBytes, PyBackedStr};
use pyo3::types::{PyBytes, PyString, PyTuple};

use crate::args::{ints, now_or_clock, Int};
use crate::arrays::{bytes, input, shaped_to_py, with_values};
use crate::batch::PyEncodedRows;
use crate::cache::PyBlockCache;
use crate::errors::{invalid, IntoPy};

/// `(version, labels, string_lengths, vector_lengths, default cells)`.
type VersionTuple = (Int<u16>, Vec<String>, Vec<Int<u32>>, Vec<Int<u32>>, Vec<Vec<u8>>);
/// `(entity, id, label, data_type, active_version, ttl_seconds, versions)`.
type FgTuple = (String, Int<u16>, String, Int<u8>, Int<u16>, Int<u64>, Vec<VersionTuple>);

/// Per FG of a plan: `(fg_id, [(label, data type, values per cell)])`.
type PlannedFg = (u16, Vec<(String, u8, usize)>);
/// Per FG of a retrieve: `(values, status)`.
type FgArrays<'py> = (Bound<'py, PyAny>, Bound<'py, PyArray1<u8>>);

/// `(entity, key columns, [(FG id, store id)])`: where an entity's blocks live.
type StorageTuple = (String, Vec<String>, Vec<(Int<u16>, String)>);
/// `(entity, ttl seconds, jitter %, FG ids)`: an entity's in-process or distributed cache policy.
type CachePolicyTuple = (String, Int<u64>, Int<u8>, Vec<Int<u16>>);
/// Per FG of a cached retrieve: `(values, status, found, missing, expired)`.
pub(crate) type CountedArrays<'py> = (Bound<'py, PyAny>, Bound<'py, PyArray1<u8>>, u64, u64, u64);

/// `(fg label, found, missing, expired)` rows of one FG of a retrieve.
pub(crate) type FgCounts = (String, u64, u64, u64);
/// One FG's values shaped by the core, its status bytes and `[found, missing, expired]`.
pub(crate) type ShapedFg = (Shaped, Vec<u8>, [u64; 3]);
/// `(response bytes, entity, keys, per-FG counts)` of a wire retrieve.
type WireAnswer<'py> = (Bound<'py, PyBytes>, String, usize, Vec<FgCounts>);
/// `(canonical key, fg id, block, expires_at, key string)`: a `store.base.BlockWrite`'s fields.
type PersistTuple<'py> = (Bound<'py, PyTuple>, u16, Bound<'py, PyBytes>, u64, String);
/// `(entity, blocks, distinct key names)` of a wire persist.
type PersistAnswer<'py> = (String, Vec<PersistTuple<'py>>, Vec<String>);

/// The limits a request is held to (`ofs_core::Limits`): keys of a retrieve, rows of a persist, and
/// bytes of a retrieve response or of the blocks a persist builds. Built once by a `FeatureStore`.
#[pyclass(name = "Limits", module = "online_feature_store._native", frozen)]
#[derive(Debug)]
pub struct PyLimits {
    pub(crate) inner: Limits,
}

#[pymethods]
impl PyLimits {
    #[new]
    #[pyo3(signature = (*, max_keys_per_request, max_rows_per_persist, max_message_bytes))]
    fn new(max_keys_per_request: Int<usize>, max_rows_per_persist: Int<usize>, max_message_bytes: Int<usize>) -> Self {
        PyLimits {
            inner: Limits {
                max_keys: max_keys_per_request.0,
                max_rows: max_rows_per_persist.0,
                max_bytes: max_message_bytes.0,
            },
        }
    }

    #[getter]
    fn max_keys_per_request(&self) -> usize {
        self.inner.max_keys
    }

    #[getter]
    fn max_rows_per_persist(&self) -> usize {
        self.inner.max_rows
    }

    #[getter]
    fn max_message_bytes(&self) -> usize {
        self.inner.max_bytes
    }

    /// Raises `ResourceExhaustedError` when a persist of `rows` rows is over the limit.
    fn check_rows(&self, rows: Int<usize>, what: &str) -> PyResult<()> {
        self.inner.check_rows(rows.0, || what.to_owned()).py_err()
    }

    /// Raises `ResourceExhaustedError` when `size` bytes are over the limit.
    fn check_bytes(&self, size: Int<u64>, what: &str) -> PyResult<()> {
        self.inner.check_bytes(size.0, || what.to_owned()).py_err()
    }

    fn __repr__(&self) -> String {
        let l = &self.inner;
        format!(
            "Limits(max_keys_per_request={}, max_rows_per_persist={}, max_message_bytes={})",
            l.max_keys, l.max_rows, l.max_bytes
        )
    }
}

/// The limits given, or none.
pub(crate) fn limits_of(limits: Option<&PyLimits>) -> Limits {
    limits.map_or(Limits::NONE, |l| l.inner)
}

/// The registry compiled for serving (one per registry revision; immutable).
#[pyclass(name = "Catalog", module = "online_feature_store._native", frozen)]
#[derive(Debug)]
pub struct PyCatalog {
    pub(crate) inner: Arc<Engine>,
}

#[pymethods]
impl PyCatalog {
    /// `entities`: `(label, key labels in canonical order)`; `feature_groups`: see `FgTuple`;
    /// `in_process_cache`: per entity with the cache on, `(entity, ttl seconds, jitter %, cached FG ids)`;
    /// `distributed_cache` the same for the distributed cache; `storage`: per entity `(entity, key
    /// columns, [(FG id, store id)])` (what the native read path reads, `Tiers.retrieve`).
    #[new]
    #[pyo3(signature = (
        revision, entities, feature_groups, *, in_process_cache = Vec::new(), distributed_cache = Vec::new(),
        storage = Vec::new()
    ))]
    fn new(
        revision: Int<u64>,
        entities: Vec<(String, Vec<String>)>,
        feature_groups: Vec<FgTuple>,
        in_process_cache: Vec<CachePolicyTuple>,
        distributed_cache: Vec<CachePolicyTuple>,
        storage: Vec<StorageTuple>,
    ) -> PyResult<Self> {
        let mut cat = Catalog::new(revision.0);
        for (label, keys) in entities {
            cat.add_entity(&label, &keys).py_err()?;
        }
        for (entity, id, label, dtype, active, ttl, versions) in feature_groups {
            let versions = versions
                .into_iter()
                .map(|(v, labels, slens, vlens, defaults)| VersionSpec {
                    version: v.0,
                    labels,
                    string_lengths: ints(slens),
                    vector_lengths: ints(vlens),
                    defaults,
                })
                .collect();
            let dtype = DataType::from_u8(dtype.0).py_err()?;
            cat.add_feature_group(&entity, id.0, &label, dtype, active.0, ttl.0, versions).py_err()?;
        }
        for (entity, ttl, jitter, fg_ids) in in_process_cache {
            cat.set_in_process_cache(&entity, ttl.0, jitter.0, &ints(fg_ids)).py_err()?;
        }
        for (entity, ttl, jitter, fg_ids) in distributed_cache {
            cat.set_distributed_cache(&entity, ttl.0, jitter.0, &ints(fg_ids)).py_err()?;
        }
        for (entity, key_columns, fg_stores) in storage {
            let fg_stores: Vec<(u16, String)> = fg_stores.into_iter().map(|(Int(id), s)| (id, s)).collect();
            cat.set_storage(&entity, &key_columns, &fg_stores).py_err()?;
        }
        Ok(PyCatalog { inner: Arc::new(Engine::new(cat)) })
    }

    #[getter]
    fn revision(&self) -> u64 {
        self.inner.catalog().revision
    }

    /// Permutation from the caller's key order to the entity's: `canonical[i] = given[perm[i]]`.
    fn key_permutation(&self, entity: &str, keys_schema: Vec<String>) -> PyResult<Vec<usize>> {
        let schema: Vec<&str> = keys_schema.iter().map(String::as_str).collect();
        self.inner.catalog().entity(entity).and_then(|e| e.key_permutation(&schema)).py_err()
    }

    /// Plans a request and returns, per FG, `(fg_id, [(label, data type, values per cell)])`. With
    /// `limits`, a retrieve of `keys` keys over them is refused here, before anything is read.
    #[pyo3(
        signature = (entity, keys_schema, fgs, *, keys = Int(0), limits = None),
        text_signature = "(self, entity, keys_schema, fgs, *, keys=0, limits=None)"
    )]
    fn plan(
        &self,
        entity: &str,
        keys_schema: Vec<String>,
        fgs: Vec<(String, Vec<String>)>,
        keys: Int<usize>,
        limits: Option<&PyLimits>,
    ) -> PyResult<Vec<PlannedFg>> {
        let schema: Vec<&str> = keys_schema.iter().map(String::as_str).collect();
        let req: Vec<(&str, Vec<&str>)> =
            fgs.iter().map(|(f, l)| (f.as_str(), l.iter().map(String::as_str).collect())).collect();
        let plan = self.inner.plan(entity, &schema, &req).py_err()?;
        plan.check_limits(keys.0, &limits_of(limits)).py_err()?;
        Ok(plan
            .fgs
            .iter()
            .map(|p| (p.fg.id, p.columns.iter().map(|c| (c.label.clone(), c.dtype as u8, c.width)).collect()))
            .collect())
    }

    /// Decodes the stored blocks of a request. `blocks` is key-major: `blocks[k * len(fgs) + f]`
    /// (empty = nothing stored). Returns per FG `(values, status)`: values shaped as
    /// `FeatureStore.retrieve` returns them (`ofs_core::shape`: numbers `(keys, Σ widths)` or
    /// `(keys, features, length)` for vectors of one length; strings a list per key, of lists per feature
    /// for string vectors), status a uint8 array (0 found, 1 missing, 2 expired). With `native`, bf16
    /// values come as `ml_dtypes.bfloat16` and Q8 values as a `(codes int8, scales float32, lengths)`
    /// tuple instead of widened float32.
    #[pyo3(signature = (entity, keys_schema, fgs, blocks, *, now = None, limits = None, native = false))]
    #[allow(clippy::too_many_arguments)] // Mirrors a keyword-only Python signature.
    fn retrieve<'py>(
        &self,
        py: Python<'py>,
        entity: &str,
        keys_schema: Vec<String>,
        fgs: Vec<(String, Vec<String>)>,
        blocks: Vec<PyBackedBytes>,
        now: Option<Int<u64>>,
        limits: Option<&PyLimits>,
        native: bool,
    ) -> PyResult<Vec<FgArrays<'py>>> {
        let (limits, now) = (limits_of(limits), now_or_clock(now));
        let engine = &self.inner;
        let shaped = py
            .detach(|| -> ofs_core::Result<Vec<(Shaped, Vec<u8>)>> {
                let schema: Vec<&str> = keys_schema.iter().map(String::as_str).collect();
                let req: Vec<(&str, Vec<&str>)> =
                    fgs.iter().map(|(f, l)| (f.as_str(), l.iter().map(String::as_str).collect())).collect();
                let refs: Vec<&[u8]> = blocks.iter().map(|b| &b[..]).collect();
                let (plan, counted) = engine.retrieve(entity, &schema, &req, &refs, now, &limits, form_of(native))?;
                let n_keys = refs.len() / req.len();
                counted.into_iter().zip(&plan.fgs).map(|(c, fp)| shaped_fg(c.result, fp, n_keys)).collect()
            })
            .py_err()?;
        shaped
            .into_iter()
            .map(|(values, status)| Ok((shaped_to_py(py, values)?, PyArray1::from_vec(py, status))))
            .collect()
    }

    /// The whole retrieve from the in-process cache in one call, when it can answer it: the entity and
    /// every requested FG cache in process and every key has a live entry holding them. Returns per FG
    /// `(values, status, found, missing, expired)` as `retrieve` does, or `None` (nothing done; read
    /// through the stores). `keys`: rows of key values in `keys_schema` order (plain values for a
    /// single-key entity), each turned into text by the rule of `online_feature_store.keys.key_text`.
    /// `native` as in `retrieve` (a Q8 FG's values are then `(codes, scales, lengths)`, shaped per key).
    #[pyo3(signature = (cache, entity, keys_schema, fgs, keys, *, now = None, limits = None, native = false))]
    #[allow(clippy::too_many_arguments)] // Mirrors a keyword-only Python signature.
    fn retrieve_cached<'py>(
        &self,
        py: Python<'py>,
        cache: &PyBlockCache,
        entity: &str,
        keys_schema: Vec<PyBackedStr>,
        fgs: Vec<(PyBackedStr, Vec<PyBackedStr>)>,
        keys: &Bound<'py, PyAny>,
        now: Option<Int<u64>>,
        limits: Option<&PyLimits>,
        native: bool,
    ) -> PyResult<Option<Vec<CountedArrays<'py>>>> {
        let schema: Vec<&str> = keys_schema.iter().map(|s| &**s).collect();
        let req: Vec<(&str, Vec<&str>)> = fgs.iter().map(|(f, l)| (&**f, l.iter().map(|s| &**s).collect())).collect();
        let plan = self.inner.plan(entity, &schema, &req).py_err()?;
        plan.check_limits(keys.len()?, &limits_of(limits)).py_err()?;
        let Some(mut lookup) = CacheLookup::new(&plan, &cache.inner) else { return Ok(None) };
        // Keys are named and looked up in one pass with the GIL held (a lookup is a hash probe): no
        // per-key allocation, and the first miss ends the attempt.
        if !for_each_key(keys, &plan.key_perm, &mut lookup)? {
            return Ok(None);
        }
        let now = now_or_clock(now);
        let n_keys = lookup.keys();
        let shaped = py
            .detach(|| -> ofs_core::Result<Option<Vec<ShapedFg>>> {
                let Some(counted) = lookup.assemble(now, form_of(native))? else { return Ok(None) };
                let fgs = counted.into_iter().zip(&plan.fgs).map(|(c, fp)| {
                    let (values, status) = shaped_fg(c.result, fp, n_keys)?;
                    Ok((values, status, c.counts))
                });
                fgs.collect::<ofs_core::Result<_>>().map(Some)
            })
            .py_err()?;
        let Some(shaped) = shaped else { return Ok(None) };
        shaped
            .into_iter()
            .map(|(values, status, [found, missing, expired])| {
                Ok((shaped_to_py(py, values)?, PyArray1::from_vec(py, status), found, missing, expired))
            })
            .collect::<PyResult<Vec<_>>>()
            .map(Some)
    }

    /// Builds one block per row for a persist (`values`: rows × values per row, row-major). Every row
    /// is validated before anything is returned.
    #[pyo3(signature = (entity, fg, values, rows, *, now = None, saturate = false, limits = None))]
    #[allow(clippy::too_many_arguments)] // Mirrors a keyword-only Python signature.
    fn encode_rows<'py>(
        &self,
        py: Python<'py>,
        entity: &str,
        fg: &str,
        values: &Bound<'py, PyAny>,
        rows: Int<usize>,
        now: Option<Int<u64>>,
        saturate: bool,
        limits: Option<&PyLimits>,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let group = self.inner.catalog().entity(entity).and_then(|e| e.fg(fg)).py_err()?;
        let limits = limits_of(limits);
        engine::check_rows(group, rows.0, &limits).py_err()?;
        let inp = input(values, group.dtype.is_string())?;
        let now = now_or_clock(now);
        let blocks =
            with_values(py, &inp, |v| engine::encode_rows(group, v, rows.0, now, saturate, &limits))?.py_err()?;
        Ok(blocks.iter().map(|b| bytes(py, b)).collect())
    }

    /// Encodes the rows of a batch load (`ofs_core::batch`), the GIL released: `keys` holds one column
    /// per key of `entity` in its canonical order, each as Arrow string buffers `(offsets, data)`
    /// (int32 or int64, uint8); `groups` `(fg label, values)` pairs, values as `encode_rows` takes
    /// them (rows × values per row, row-major), as a list of 1-D numpy arrays of one dtype (one column
    /// per value of a row), or for string FGs as `(offsets, data)`. Every row
    /// is checked (errors `row N of feature group "label": …`) before the `EncodedRows` is returned.
    #[pyo3(signature = (entity, keys, groups, *, now = None, saturate = false, limits = None))]
    #[allow(clippy::too_many_arguments)] // Mirrors a keyword-only Python signature.
    fn encode_batch(
        &self,
        py: Python<'_>,
        entity: &str,
        keys: Vec<Bound<'_, PyAny>>,
        groups: Vec<(String, Bound<'_, PyAny>)>,
        now: Option<Int<u64>>,
        saturate: bool,
        limits: Option<&PyLimits>,
    ) -> PyResult<PyEncodedRows> {
        let ent = self.inner.catalog().entity(entity).py_err()?;
        crate::batch::encode(py, ent, &keys, &groups, now_or_clock(now), saturate, &limits_of(limits))
    }

    /// The whole gRPC retrieve in one call: parses and plans `query` (GIL released), calls
    /// `read(entity, canonical_keys, fg_ids) -> blocks` (key-major) for the stored blocks, then builds
    /// the `retrieve.Result` (or, with `decoded`, `retrieve.DecodedResult`) bytes (GIL released).
    /// Returns the bytes, the entity, the number of keys and, per requested FG, `(label, found,
    /// missing, expired)` row counts.
    /// With `cache`, keys whose every requested FG is cached in process are answered from it without
    /// calling `read` (when the plan allows the in-process cache and every key hits).
    /// With `limits`, a request over them is refused before `read` is called.
    #[pyo3(signature = (query, read, *, now = None, decoded = false, cache = None, limits = None))]
    #[allow(clippy::too_many_arguments)] // Mirrors a keyword-only Python signature.
    fn retrieve_wire<'py>(
        &self,
        py: Python<'py>,
        query: &[u8],
        read: &Bound<'py, PyAny>,
        now: Option<Int<u64>>,
        decoded: bool,
        cache: Option<&PyBlockCache>,
        limits: Option<&PyLimits>,
    ) -> PyResult<WireAnswer<'py>> {
        let engine = &self.inner;
        let (limits, now) = (limits_of(limits), now_or_clock(now));
        let req = py.detach(|| wire::parse_retrieve(engine, query, &limits)).py_err()?;
        let cached = match cache {
            Some(cache) => py.detach(|| req.answer_cached(&cache.inner, now, decoded)).py_err()?,
            None => None,
        };
        let (out, counts) = if let Some(done) = cached {
            done
        } else {
            let blocks: Vec<PyBackedBytes> =
                read.call1((req.query.entity_label.as_str(), req.canonical_keys(), req.fg_ids()))?.extract()?;
            py.detach(|| req.answer(&blocks.iter().map(|b| &b[..]).collect::<Vec<_>>(), now, decoded)).py_err()?
        };
        let labelled = req.plan.fgs.iter().zip(counts).map(|(f, [a, b, c])| (f.fg.label.clone(), a, b, c)).collect();
        Ok((bytes(py, &out), req.plan.entity.clone(), req.key_count(), labelled))
    }

    /// Validates `persist.Query` bytes and builds every block: `(entity, [(canonical key tuple, fg id,
    /// block, expires_at, key string)], names)`. Key strings are `store.keys.encode_key` of the key;
    /// `names` are the distinct ones in order of first appearance: what a strong-mode write invalidates.
    /// With `limits`, a request over them is refused (its row count before it is decoded).
    #[pyo3(signature = (query, *, now = None, saturate = false, limits = None))]
    fn persist_wire<'py>(
        &self,
        py: Python<'py>,
        query: &[u8],
        now: Option<Int<u64>>,
        saturate: bool,
        limits: Option<&PyLimits>,
    ) -> PyResult<PersistAnswer<'py>> {
        let catalog = self.inner.catalog();
        let (limits, now) = (limits_of(limits), now_or_clock(now));
        let (req, (per_block, names)) = py
            .detach(|| {
                let req = wire::parse_persist(catalog, query, now, saturate, &limits)?;
                let names = req.key_names();
                Ok::<_, ofs_core::Error>((req, names))
            })
            .py_err()?;
        let blocks = req
            .blocks
            .into_iter()
            .zip(per_block)
            .map(|(b, name)| Ok((PyTuple::new(py, b.key)?, b.fg_id, bytes(py, &b.block), b.expires_at, name)))
            .collect::<PyResult<_>>()?;
        Ok((req.entity, blocks, names))
    }

    /// `(id, data type, ttl seconds, active version, values per row)` of a feature group.
    fn feature_group(&self, entity: &str, fg: &str) -> PyResult<(u16, u8, u64, u16, usize)> {
        let g = self.inner.catalog().entity(entity).and_then(|e| e.fg(fg)).py_err()?;
        Ok((g.id, g.dtype as u8, g.ttl_seconds, g.active_version, g.active().meta.n_values()))
    }
}

/// Receives a request's keys one value at a time ([`for_each_key`]).
pub(crate) trait KeySink {
    /// The next value of the current key, in canonical order.
    fn push(&mut self, value: &str);
    /// Ends the current key; false stops the walk.
    fn end(&mut self) -> bool;
}

impl KeySink for CacheLookup<'_> {
    fn push(&mut self, value: &str) {
        CacheLookup::push(self, value);
    }

    fn end(&mut self) -> bool {
        self.hit()
    }
}

/// Walks `keys` (rows in the caller's key order; plain values when there is one key), giving each
/// key's values to `lookup` in canonical order (`perm`) as text, and ending each key (`KeySink::end`);
/// stops early (returning false) when that says so.
pub(crate) fn for_each_key(keys: &Bound<'_, PyAny>, perm: &[usize], lookup: &mut impl KeySink) -> PyResult<bool> {
    // The rule of `online_feature_store.keys.key_text`: str as is and int as its decimal digits here
    // (no Python object per str key); every other value (bytes, numpy scalars, the refused bool and
    // float) goes to `key_text` itself, fetched on first need.
    let py = keys.py();
    let mut rule: Option<Bound<'_, PyAny>> = None;
    let mut push = |lookup: &mut dyn KeySink, v: &Bound<'_, PyAny>| -> PyResult<()> {
        if let Ok(s) = v.cast::<PyString>() {
            lookup.push(s.to_str()?);
        } else if v.is_exact_instance_of::<pyo3::types::PyInt>() {
            lookup.push(v.str()?.to_str()?);
        } else {
            let key_text = match &rule {
                Some(f) => f,
                None => rule.insert(py.import("online_feature_store.keys")?.getattr("key_text")?),
            };
            lookup.push(key_text.call1((v,))?.cast::<PyString>()?.to_str()?);
        }
        Ok(())
    };
    for row in keys.try_iter()? {
        let row = row?;
        // As `online_feature_store.keys.key_rows`: str and bytes are one value, so is anything without
        // a length; anything else is a row.
        let scalar = row.is_instance_of::<PyString>()
            || row.is_instance_of::<pyo3::types::PyBytes>()
            || row.is_instance_of::<pyo3::types::PyInt>()
            || row.len().is_err();
        if scalar {
            if perm.len() != 1 {
                return Err(invalid(format!(
                    "key {} is a single value but the entity has {} keys",
                    row.repr()?,
                    perm.len()
                )));
            }
            push(lookup, &row)?;
        } else {
            let n = row.len()?;
            if n != perm.len() {
                return Err(invalid(format!("key {} has {n} values, expected {}", row.repr()?, perm.len())));
            }
            for &p in perm {
                push(lookup, &row.get_item(p)?)?;
            }
        }
        if !lookup.end() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// One FG's assembled values shaped as `FeatureStore.retrieve` returns them (`ofs_core::shape`), and
/// its status bytes.
pub(crate) fn shaped_fg(
    r: engine::FgResult,
    fp: &engine::FgPlan,
    n_keys: usize,
) -> ofs_core::Result<(Shaped, Vec<u8>)> {
    let status = r.status.iter().map(|&s| s as u8).collect();
    Ok((fp.layout().shape(r.values, n_keys)?, status))
}

pub(crate) fn form_of(native: bool) -> FloatForm {
    if native {
        FloatForm::Native
    } else {
        FloatForm::Widened
    }
}
