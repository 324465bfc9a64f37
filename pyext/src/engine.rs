//! Bindings of the compiled catalog and the retrieve / persist engine. Blocks cross as `bytes`,
//! values as numpy buffers; planning, decoding and assembly run with the GIL released.

use std::sync::Arc;

use numpy::PyArray1;
use ofs_core::catalog::{Catalog, VersionSpec};
use ofs_core::{engine, wire, DataType};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::PyBytes;

use crate::args::{ints, now_or_clock, Int};
use crate::arrays::{array_to_py, bytes, input, with_values};
use crate::errors::{invalid, IntoPy};

/// `(version, labels, string_lengths, vector_lengths, default cells)`.
type VersionTuple = (Int<u16>, Vec<String>, Vec<Int<u32>>, Vec<Int<u32>>, Vec<Vec<u8>>);
/// `(entity, id, label, data_type, active_version, ttl_seconds, versions)`.
type FgTuple = (String, Int<u16>, String, Int<u8>, Int<u16>, Int<u64>, Vec<VersionTuple>);

/// Per FG of a plan: `(fg_id, [(label, data type, values per cell)])`.
type PlannedFg = (u16, Vec<(String, u8, usize)>);
/// Per FG of a retrieve: `(values, status)`.
type FgArrays<'py> = (Bound<'py, PyAny>, Bound<'py, PyArray1<u8>>);

/// `(fg label, found, missing, expired)` rows of one FG of a retrieve.
type FgCounts = (String, u64, u64, u64);
/// `(canonical key, fg id, block, expires_at)`.
type PersistTuple<'py> = (Vec<String>, u16, Bound<'py, PyBytes>, u64);

/// The registry compiled for serving (one per registry revision; immutable).
#[pyclass(name = "Catalog", module = "online_feature_store._native", frozen)]
#[derive(Debug)]
pub struct PyCatalog {
    inner: Arc<Catalog>,
}

#[pymethods]
impl PyCatalog {
    /// `entities`: `(label, key labels in canonical order)`; `feature_groups`: see `FgTuple`.
    #[new]
    fn new(revision: Int<u64>, entities: Vec<(String, Vec<String>)>, feature_groups: Vec<FgTuple>) -> PyResult<Self> {
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
        Ok(PyCatalog { inner: Arc::new(cat) })
    }

    #[getter]
    fn revision(&self) -> u64 {
        self.inner.revision
    }

    /// Permutation from the caller's key order to the entity's: `canonical[i] = given[perm[i]]`.
    fn key_permutation(&self, entity: &str, keys_schema: Vec<String>) -> PyResult<Vec<usize>> {
        let schema: Vec<&str> = keys_schema.iter().map(String::as_str).collect();
        self.inner.entity(entity).and_then(|e| e.key_permutation(&schema)).py_err()
    }

    /// Plans a request and returns, per FG, `(fg_id, [(label, data type, values per cell)])`.
    fn plan(
        &self,
        entity: &str,
        keys_schema: Vec<String>,
        fgs: Vec<(String, Vec<String>)>,
    ) -> PyResult<Vec<PlannedFg>> {
        let schema: Vec<&str> = keys_schema.iter().map(String::as_str).collect();
        let req: Vec<(&str, Vec<&str>)> =
            fgs.iter().map(|(f, l)| (f.as_str(), l.iter().map(String::as_str).collect())).collect();
        let plan = self.inner.plan_cached(entity, &schema, &req).py_err()?;
        Ok(plan
            .fgs
            .iter()
            .map(|p| (p.fg.id, p.columns.iter().map(|c| (c.label.clone(), c.dtype as u8, c.width)).collect()))
            .collect())
    }

    /// Decodes the stored blocks of a request. `blocks` is key-major: `blocks[k * len(fgs) + f]`
    /// (empty = nothing stored). Returns per FG `(values, status)`: values row-major
    /// `(key, feature, element)` as a flat numpy array (a list for strings), status a uint8 array
    /// (0 found, 1 missing, 2 expired).
    #[pyo3(signature = (entity, keys_schema, fgs, blocks, *, now = None))]
    fn retrieve<'py>(
        &self,
        py: Python<'py>,
        entity: &str,
        keys_schema: Vec<String>,
        fgs: Vec<(String, Vec<String>)>,
        blocks: Vec<PyBackedBytes>,
        now: Option<Int<u64>>,
    ) -> PyResult<Vec<FgArrays<'py>>> {
        let now = now_or_clock(now);
        let n_fgs = fgs.len();
        if n_fgs == 0 || blocks.len() % n_fgs != 0 {
            return Err(invalid(format!(
                "{} blocks is not a whole number of rows of {n_fgs} feature groups",
                blocks.len()
            )));
        }
        let cat = &self.inner;
        let results = py
            .detach(|| -> ofs_core::Result<Vec<engine::FgResult>> {
                let schema: Vec<&str> = keys_schema.iter().map(String::as_str).collect();
                let req: Vec<(&str, Vec<&str>)> =
                    fgs.iter().map(|(f, l)| (f.as_str(), l.iter().map(String::as_str).collect())).collect();
                let plan = cat.plan_cached(entity, &schema, &req)?;
                plan.fgs
                    .iter()
                    .enumerate()
                    .map(|(f, fp)| {
                        let column: Vec<&[u8]> = blocks.iter().skip(f).step_by(n_fgs).map(|b| &b[..]).collect();
                        fp.assemble(&column, now)
                    })
                    .collect()
            })
            .py_err()?;
        results
            .into_iter()
            .map(|r| {
                let status = r.status.iter().map(|&s| s as u8).collect::<Vec<u8>>();
                Ok((array_to_py(py, r.values)?, PyArray1::from_vec(py, status)))
            })
            .collect()
    }

    /// Builds one block per row for a persist (`values`: rows × values per row, row-major). Every row
    /// is validated before anything is returned.
    #[pyo3(signature = (entity, fg, values, rows, *, now = None, saturate = false))]
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
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let group = self.inner.entity(entity).and_then(|e| e.fg(fg)).py_err()?;
        let is_str = group.dtype.element() == Some(ofs_core::Element::String);
        let inp = input(values, is_str)?;
        let now = now_or_clock(now);
        let blocks = with_values(py, &inp, |v| engine::encode_rows(group, v, rows.0, now, saturate))?.py_err()?;
        Ok(blocks.iter().map(|b| bytes(py, b)).collect())
    }

    /// The whole gRPC retrieve in one call: parses and plans `query` (GIL released), calls
    /// `read(entity, canonical_keys, fg_ids) -> blocks` (key-major) for the stored blocks, then builds
    /// the `retrieve.Result` (or, with `decoded`, `retrieve.DecodedResult`) bytes (GIL released).
    /// Returns the bytes and, per requested FG, `(label, found, missing, expired)` row counts.
    #[pyo3(signature = (query, read, *, now = None, decoded = false))]
    fn retrieve_wire<'py>(
        &self,
        py: Python<'py>,
        query: &[u8],
        read: &Bound<'py, PyAny>,
        now: Option<Int<u64>>,
        decoded: bool,
    ) -> PyResult<(Bound<'py, PyBytes>, Vec<FgCounts>)> {
        let cat = &self.inner;
        let now = now_or_clock(now);
        let req = py.detach(|| wire::parse_retrieve(cat, query)).py_err()?;
        let blocks: Vec<PyBackedBytes> =
            read.call1((req.query.entity_label.as_str(), req.canonical_keys.clone(), req.fg_ids()))?.extract()?;
        let (out, counts) = py
            .detach(|| {
                let refs: Vec<&[u8]> = blocks.iter().map(|b| &b[..]).collect();
                let (binary, counts) = wire::encode_retrieve_counted(&req, &refs, now)?;
                let out = if decoded { wire::encode_decoded(&req, &refs, now)? } else { binary };
                Ok::<_, ofs_core::Error>((out, counts))
            })
            .py_err()?;
        let labelled = req.plan.fgs.iter().zip(counts).map(|(f, [a, b, c])| (f.fg.label.clone(), a, b, c)).collect();
        Ok((bytes(py, &out), labelled))
    }

    /// `retrieve.Result` bytes for `query` (or `retrieve.DecodedResult` with `decoded`), given the
    /// blocks read for its plan (key-major).
    #[pyo3(signature = (query, blocks, *, now = None, decoded = false))]
    fn encode_wire<'py>(
        &self,
        py: Python<'py>,
        query: &[u8],
        blocks: Vec<PyBackedBytes>,
        now: Option<Int<u64>>,
        decoded: bool,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let cat = &self.inner;
        let now = now_or_clock(now);
        let out = py
            .detach(|| {
                let req = wire::parse_retrieve(cat, query)?;
                let refs: Vec<&[u8]> = blocks.iter().map(|b| &b[..]).collect();
                if decoded {
                    wire::encode_decoded(&req, &refs, now)
                } else {
                    wire::encode_retrieve(&req, &refs, now)
                }
            })
            .py_err()?;
        Ok(bytes(py, &out))
    }

    /// Validates `persist.Query` bytes and builds every block:
    /// `(entity, [(canonical key, fg id, block, expires_at)])`.
    #[pyo3(signature = (query, *, now = None, saturate = false))]
    fn persist_wire<'py>(
        &self,
        py: Python<'py>,
        query: &[u8],
        now: Option<Int<u64>>,
        saturate: bool,
    ) -> PyResult<(String, Vec<PersistTuple<'py>>)> {
        let cat = &self.inner;
        let now = now_or_clock(now);
        let req = py.detach(|| wire::parse_persist(cat, query, now, saturate)).py_err()?;
        let blocks = req.blocks.into_iter().map(|b| (b.key, b.fg_id, bytes(py, &b.block), b.expires_at)).collect();
        Ok((req.entity, blocks))
    }

    /// `(id, data type, ttl seconds, active version, values per row)` of a feature group.
    fn feature_group(&self, entity: &str, fg: &str) -> PyResult<(u16, u8, u64, u16, usize)> {
        let g = self.inner.entity(entity).and_then(|e| e.fg(fg)).py_err()?;
        Ok((g.id, g.dtype as u8, g.ttl_seconds, g.active_version, g.active().meta.n_values()))
    }
}
