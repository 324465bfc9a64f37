//! Binding of the tiered read path (`ofs_core::tiers::Tiers`): one call per request, the GIL released
//! from the moment the keys are named until the answer is converted. Conversions only: which tier
//! serves, backfills and invalidation marks are the core's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use numpy::PyArray1;
use ofs_core::keys;
use ofs_core::remote::RemoteTier;
use ofs_core::store::invalidation_log::InvalidationLog;
use ofs_core::tiers::{ReadReport, Tiers};
use ofs_core::{store::runtime, wire};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::PyBytes;

use crate::args::{now_or_clock, Int};
use crate::arrays::{bytes, shaped_to_py};
use crate::cache::PyBlockCache;
use crate::engine::{
    for_each_key, form_of, limits_of, shaped_fg, CountedArrays, FgCounts, KeySink, PyCatalog, PyLimits, ShapedFg,
};
use crate::errors::IntoPy;
use crate::remote::PyRedisCache;
use crate::store::PyStore;

/// What a read or write did: `(entity, keys, in-process (hits, misses) or None, distributed (hits,
/// misses) or None, [(store id, op, seconds, failed)])`.
type ReportTuple = (String, usize, Option<(u64, u64)>, Option<(u64, u64)>, Vec<(String, &'static str, f64, bool)>);
/// `(answer or None when declined, report, error or None)`.
type Answer<T> = (Option<T>, ReportTuple, Option<PyErr>);
/// `(response bytes, entity, keys, per-FG counts)` of a wire retrieve.
type WireDone<'py> = (Bound<'py, PyBytes>, String, usize, Vec<FgCounts>);

/// The cache tiers and stores one `FeatureStore` reads through, natively.
#[pyclass(name = "Tiers", module = "online_feature_store._native", frozen)]
#[derive(Debug)]
pub struct PyTiers {
    inner: Arc<Tiers>,
}

/// The instant `time_left` seconds from now (the call's deadline for starting store I/O).
fn deadline_of(time_left: Option<f64>) -> Option<Instant> {
    time_left.map(|t| Instant::now() + Duration::try_from_secs_f64(t).unwrap_or(Duration::ZERO))
}

fn report_tuple(entity: &str, keys: usize, r: ReadReport) -> ReportTuple {
    let calls = r.store_calls.into_iter().map(|c| (c.store_id, c.op, c.seconds, c.failed)).collect();
    (entity.to_owned(), keys, r.in_process, r.distributed, calls)
}

/// Canonical key strings of a request's keys, one after the other in one buffer (no allocation per key).
#[derive(Debug, Default)]
struct Names {
    text: String,
    ends: Vec<usize>,
    values: usize,
}

impl Names {
    fn refs(&self) -> Vec<&str> {
        let mut start = 0;
        self.ends
            .iter()
            .map(|&end| {
                let name = &self.text[start..end];
                start = end;
                name
            })
            .collect()
    }
}

impl KeySink for Names {
    fn push(&mut self, value: &str) {
        keys::push_value(&mut self.text, self.values, value);
        self.values += 1;
    }

    fn end(&mut self) -> bool {
        self.ends.push(self.text.len());
        self.values = 0;
        true
    }
}

impl PyTiers {
    /// The read path, for the serving front.
    pub(crate) fn shared(&self) -> Arc<Tiers> {
        Arc::clone(&self.inner)
    }
}

#[pymethods]
impl PyTiers {
    /// Tiers over the in-process cache `cache` (None: no in-process tier).
    #[new]
    #[pyo3(signature = (cache = None))]
    fn new(cache: Option<&PyBlockCache>) -> Self {
        PyTiers { inner: Arc::new(Tiers::new(cache.map(|c| Arc::clone(&c.inner)))) }
    }

    /// Registers the native store behind registry store id `store_id`.
    fn set_store(&self, store_id: &str, store: &PyStore) {
        self.inner.set_store(store_id, Arc::clone(&store.inner));
    }

    /// Lets writes to store `store_id` go to the native store `store` natively (a store class that
    /// overrides its writes is not registered: they go through Python).
    fn set_writer(&self, store_id: &str, store: &PyStore) {
        self.inner.set_writer(store_id, Arc::clone(&store.inner));
    }

    /// Writes publish their invalidations on Redis pub/sub `channel`, through the native distributed
    /// cache.
    fn set_bus_channel(&self, channel: &str) {
        self.inner.set_bus_channel(channel);
    }

    /// Writes append their invalidations to the `SQLite` log in `path` as `source` (the Python log's),
    /// pruning rows older than `retention_seconds`.
    fn set_bus_log(&self, path: std::path::PathBuf, source: &str, retention_seconds: f64) {
        self.inner.set_bus_log(Arc::new(InvalidationLog::new(path, source, retention_seconds)));
    }

    /// The bus is one the core cannot publish to: writes of entities cached in-process go through
    /// Python.
    fn set_bus_elsewhere(&self) {
        self.inner.set_bus_elsewhere();
    }

    /// `(messages, count)` of the failures to publish invalidations since the last take (the writes
    /// succeeded; the first few messages are kept).
    fn take_bus_errors(&self) -> (Vec<String>, u64) {
        self.inner.take_bus_errors()
    }

    /// The native distributed cache `cache` serves the requests whose entity and FGs use one.
    fn set_remote(&self, cache: &PyRedisCache) {
        self.inner.set_remote(Arc::clone(&cache.inner) as Arc<dyn RemoteTier>);
    }

    /// A distributed cache the core cannot call is configured: requests whose entity and FGs use it
    /// are declined (the caller reads through Python).
    fn set_remote_elsewhere(&self) {
        self.inner.set_remote_elsewhere();
    }

    /// The invalidation bus is healthy for the next `seconds` (None: until told otherwise; 0: not now).
    #[pyo3(signature = (seconds))]
    fn bus_healthy_for(&self, seconds: Option<f64>) {
        self.inner.bus_healthy_for(seconds);
    }

    /// Whether the invalidation bus is healthy now.
    #[getter]
    fn bus_healthy(&self) -> bool {
        self.inner.bus_healthy()
    }

    /// `(resets, generation of entity)`: moves with every invalidation of the entity and every reset.
    fn mark(&self, entity: &str) -> (u64, u64) {
        self.inner.mark(entity)
    }

    /// Drops `keys` (canonical key strings) of `entity` from the in-process cache, the entity's
    /// generation moved first.
    fn invalidate_local(&self, py: Python<'_>, entity: &str, keys: Vec<String>) {
        let tiers = &self.inner;
        py.detach(|| tiers.invalidate_local(entity, &keys.iter().map(String::as_str).collect::<Vec<_>>()));
    }

    /// Empties the in-process cache and counts a reset.
    fn reset_local(&self) {
        self.inner.reset_local();
    }

    /// `FeatureStore.retrieve` through the tiers in one call: keys named (rows in `keys_schema` order,
    /// as `Catalog.retrieve_cached` takes them), then read, assembled and shaped with the GIL released.
    /// Returns `(per FG (values, status, found, missing, expired) or None when declined, report,
    /// error or None)`: a store failure comes back as the error, with the report of the calls made.
    /// `time_left`: seconds the call has to start its store I/O (past it, `DeadlineExceededError`).
    #[pyo3(signature = (
        catalog, entity, keys_schema, fgs, keys, *, now = None, limits = None, native = false, time_left = None
    ))]
    #[allow(clippy::too_many_arguments)] // Mirrors a keyword-only Python signature.
    fn retrieve<'py>(
        &self,
        py: Python<'py>,
        catalog: &PyCatalog,
        entity: &str,
        keys_schema: Vec<PyBackedStr>,
        fgs: Vec<(PyBackedStr, Vec<PyBackedStr>)>,
        keys: &Bound<'py, PyAny>,
        now: Option<Int<u64>>,
        limits: Option<&PyLimits>,
        native: bool,
        time_left: Option<f64>,
    ) -> PyResult<Answer<Vec<CountedArrays<'py>>>> {
        let deadline = deadline_of(time_left);
        // Borrowed from the Python strings: no copy of the (often many) feature labels.
        let schema: Vec<&str> = keys_schema.iter().map(|s| &**s).collect();
        let req: Vec<(&str, Vec<&str>)> = fgs.iter().map(|(f, l)| (&**f, l.iter().map(|s| &**s).collect())).collect();
        let plan = catalog.inner.plan(entity, &schema, &req).py_err()?;
        let n_keys = keys.len()?;
        plan.check_limits(n_keys, &limits_of(limits)).py_err()?;
        let Some(route) = self.inner.route(&plan) else {
            return Ok((None, report_tuple(entity, 0, ReadReport::default()), None));
        };
        let mut names = Names { text: String::with_capacity(16 * n_keys), ends: Vec::with_capacity(n_keys), values: 0 };
        for_each_key(keys, &plan.key_perm, &mut names)?;
        let (now, tiers) = (now_or_clock(now), &self.inner);
        let (result, report) = py.detach(|| {
            let refs = names.refs();
            let (read, report) = runtime::block_on(tiers.read_routed(&plan, &route, &refs, deadline));
            let shaped = read.and_then(|blocks| {
                let counted = blocks.with_blocks(|b| plan.assemble_counted_as(b, now, form_of(native)))?;
                let fgs = counted.into_iter().zip(&plan.fgs).map(|(c, fp)| {
                    let (values, status) = shaped_fg(c.result, fp, refs.len())?;
                    Ok((values, status, c.counts))
                });
                fgs.collect::<ofs_core::Result<Vec<ShapedFg>>>().map(Some)
            });
            (shaped, report)
        });
        let report = report_tuple(&plan.entity, names.ends.len(), report);
        match result {
            Ok(Some(shaped)) => {
                let arrays = shaped
                    .into_iter()
                    .map(|(values, status, [found, missing, expired])| {
                        Ok((shaped_to_py(py, values)?, PyArray1::from_vec(py, status), found, missing, expired))
                    })
                    .collect::<PyResult<Vec<_>>>()?;
                Ok((Some(arrays), report, None))
            }
            Ok(None) => Ok((None, report, None)),
            Err(e) => Ok((None, report, Some(crate::errors::to_py(&e)))),
        }
    }

    /// `FeatureStore.retrieve_wire` through the tiers in one call, the GIL released throughout: parse
    /// and plan `query`, read, build the `retrieve.Result` (or `retrieve.DecodedResult`) bytes. Returns
    /// `((bytes, entity, keys, per FG (label, found, missing, expired)) or None when declined, report,
    /// error or None)`. Bad requests raise.
    #[pyo3(signature = (catalog, query, *, now = None, decoded = false, limits = None, time_left = None))]
    #[allow(clippy::too_many_arguments)] // Mirrors a keyword-only Python signature.
    fn retrieve_wire<'py>(
        &self,
        py: Python<'py>,
        catalog: &PyCatalog,
        query: &[u8],
        now: Option<Int<u64>>,
        decoded: bool,
        limits: Option<&PyLimits>,
        time_left: Option<f64>,
    ) -> PyResult<Answer<WireDone<'py>>> {
        let deadline = deadline_of(time_left);
        let (engine, tiers) = (&catalog.inner, &self.inner);
        let (limits, now) = (limits_of(limits), now_or_clock(now));
        let req = py.detach(|| wire::parse_retrieve(engine, query, &limits)).py_err()?;
        let Some(route) = tiers.route(&req.plan) else {
            return Ok((None, report_tuple(&req.plan.entity, 0, ReadReport::default()), None));
        };
        let (result, report) = py.detach(|| {
            let names = req.key_names();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let (read, report) = runtime::block_on(tiers.read_routed(&req.plan, &route, &refs, deadline));
            let answer = read.and_then(|blocks| blocks.with_blocks(|b| req.answer(b, now, decoded)).map(Some));
            (answer, report)
        });
        let report = report_tuple(&req.plan.entity, req.key_count(), report);
        match result {
            Ok(Some((out, counts))) => {
                let labelled =
                    req.plan.fgs.iter().zip(counts).map(|(f, [a, b, c])| (f.fg.label.clone(), a, b, c)).collect();
                Ok((Some((bytes(py, &out), req.plan.entity.clone(), req.key_count(), labelled)), report, None))
            }
            Ok(None) => Ok((None, report, None)),
            Err(e) => Ok((None, report, Some(crate::errors::to_py(&e)))),
        }
    }

    /// `FeatureStore.persist_wire` through the tiers in one call, the GIL released throughout: validate
    /// `query` and build its blocks, write them to their stores, invalidate the written keys in every
    /// tier and publish them (strong mode). Returns `((entity, distinct keys, blocks) or None when
    /// declined, report, error or None)`; a request that can never be stored raises. `time_left`:
    /// seconds the call has to start its store writes (past it, `DeadlineExceededError`).
    #[pyo3(signature = (catalog, query, *, now = None, saturate = false, limits = None, time_left = None))]
    #[allow(clippy::too_many_arguments)] // Mirrors a keyword-only Python signature.
    fn persist_wire(
        &self,
        py: Python<'_>,
        catalog: &PyCatalog,
        query: &[u8],
        now: Option<Int<u64>>,
        saturate: bool,
        limits: Option<&PyLimits>,
        time_left: Option<f64>,
    ) -> PyResult<Answer<(String, usize, usize)>> {
        let deadline = deadline_of(time_left);
        let (engine, tiers) = (&catalog.inner, &self.inner);
        let (limits, now) = (limits_of(limits), now_or_clock(now));
        let cat = engine.catalog();
        let (req, route) = py
            .detach(|| {
                let req = wire::parse_persist(cat, query, now, saturate, &limits)?;
                let route = tiers.write_route(cat.entity(&req.entity)?, &req.blocks);
                Ok::<_, ofs_core::Error>((req, route))
            })
            .py_err()?;
        let Some(route) = route else {
            return Ok((None, report_tuple(&req.entity, 0, ReadReport::default()), None));
        };
        let (result, calls, n_names) = py.detach(|| {
            let (keys, names) = req.key_names();
            let (written, calls) = runtime::block_on(tiers.write_routed(&route, &req.blocks, &keys, &names, deadline));
            (written, calls, names.len())
        });
        let report = report_tuple(&req.entity, n_names, ReadReport { store_calls: calls, ..ReadReport::default() });
        match result {
            Ok(()) => Ok((Some((req.entity.clone(), n_names, req.blocks.len())), report, None)),
            Err(e) => Ok((None, report, Some(crate::errors::to_py(&e)))),
        }
    }
}
