//! Binding of the in-process block cache. Keys are the store's encoded key strings; blocks cross as
//! `bytes`; lookups and inserts run with the GIL released.

use std::sync::Arc;

use ofs_core::cache::BlockCache;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::PyBytes;

use crate::args::{ints, Int};
use crate::arrays::bytes;
use crate::errors::{invalid, IntoPy};

/// Blocks of one key, or `None` on a miss.
type KeyBlocks<'py> = Option<Vec<Bound<'py, PyBytes>>>;

/// In-process cache of uncompressed FG blocks per (entity, key), bounded by bytes.
#[pyclass(name = "BlockCache", module = "online_feature_store._native", frozen)]
#[derive(Debug)]
pub struct PyBlockCache {
    pub(crate) inner: Arc<BlockCache>,
}

#[pymethods]
impl PyBlockCache {
    #[new]
    fn new(capacity_bytes: Int<u64>) -> Self {
        PyBlockCache { inner: Arc::new(BlockCache::new(capacity_bytes.0)) }
    }

    /// For each key, the blocks of `fg_ids` (b"" = known absent), or None on a miss.
    fn get_many<'py>(
        &self,
        py: Python<'py>,
        entity: &str,
        keys: Vec<String>,
        fg_ids: Vec<Int<u16>>,
    ) -> PyResult<Vec<KeyBlocks<'py>>> {
        let fg_ids = ints(fg_ids);
        let found = py
            .detach(|| keys.iter().map(|k| self.inner.get(entity, k, &fg_ids)).collect::<ofs_core::Result<Vec<_>>>())
            .py_err()?;
        Ok(found.into_iter().map(|o| o.map(|blocks| blocks.iter().map(|b| bytes(py, b)).collect())).collect())
    }

    /// Caches `blocks` (key-major: `blocks[k * len(fg_ids) + f]`) for `ttl_seconds` ± `jitter_percent`.
    #[allow(clippy::too_many_arguments)] // Mirrors the Python signature.
    fn put_many(
        &self,
        py: Python<'_>,
        entity: &str,
        keys: Vec<String>,
        fg_ids: Vec<Int<u16>>,
        blocks: Vec<PyBackedBytes>,
        ttl_seconds: Int<u64>,
        jitter_percent: Int<u8>,
    ) -> PyResult<()> {
        let fg_ids = ints(fg_ids);
        if blocks.len() != keys.len() * fg_ids.len() {
            return Err(invalid(format!("{} blocks for {} keys × {} FGs", blocks.len(), keys.len(), fg_ids.len())));
        }
        py.detach(|| {
            let n = fg_ids.len();
            keys.iter().enumerate().try_for_each(|(k, key)| {
                let row: Vec<&[u8]> = blocks[k * n..(k + 1) * n].iter().map(|b| &b[..]).collect();
                self.inner.put(entity, key, &fg_ids, &row, ttl_seconds.0, jitter_percent.0)
            })
        })
        .py_err()
    }

    /// Drops the cached blocks of these keys.
    fn invalidate(&self, entity: &str, keys: Vec<String>) {
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        self.inner.invalidate(entity, &refs);
    }

    /// Bytes held.
    #[getter]
    fn weight(&self) -> u64 {
        self.inner.weight()
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn clear(&self) {
        self.inner.clear();
    }
}
