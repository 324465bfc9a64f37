//! Binding of the distributed cache client (`ofs_core::store::redis_cache::RedisCache`, the core's
//! `RemoteTier` on Redis): one class, `RedisCache`. Every call that touches Redis runs with the GIL
//! released; backfills are queued to the core's runtime and return at once. The tier's events (errors,
//! breaker changes, drops) wait in a bounded queue that Python drains (`take_events`), never a Python
//! call from the core. `cache/redis_cache.py` `DistributedCache` is the Python face around it.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ofs_core::breaker::state_name;
use ofs_core::remote::{Backfill, Publish, RemoteTier};
use ofs_core::store::redis_cache::{CacheSettings, RedisCache};
use ofs_core::store::runtime;
use ofs_core::tier_events::{EventQueue, TierEvent};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::PyBytes;

use crate::arrays::bytes;
use crate::errors::{invalid, IntoPy};
use crate::store::{redis_settings, seconds};

/// Events kept for Python at most between two drains (the oldest are dropped beyond it, counted).
const EVENTS: usize = 4096;

/// The clock of `get_many`'s `at` (seconds since the first use): what `backfill` gets back.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// `(rows, seen, at)` of one lookup: per key the blocks of the requested FGs or None (a miss), the raw
/// value read, and when the read was sent.
type Lookup<'py> = (Vec<Option<Vec<Bound<'py, PyBytes>>>>, Vec<Bound<'py, PyBytes>>, f64);

/// The Redis distributed cache tier.
#[pyclass(name = "RedisCache", module = "online_feature_store._native", frozen)]
#[derive(Debug)]
pub struct PyRedisCache {
    pub(crate) inner: Arc<RedisCache>,
    events: Arc<EventQueue>,
}

#[pymethods]
impl PyRedisCache {
    /// A cache on a standalone Redis (`url`) or a Redis Cluster (`cluster_nodes` seeds); nothing
    /// connects before the first call. `source`: this process's id in published invalidations.
    #[new]
    #[pyo3(signature = (
        url = None, *, cluster_nodes = None, pool_size = 32, connect_timeout = 0.05, socket_timeout = 0.05,
        failure_threshold = 3, reset_seconds = 2.0, backfill_queue = 1024, backfill_workers = 2,
        tombstone_seconds = 10.0, pending_limit = 100_000, source = String::new()
    ))]
    #[allow(clippy::too_many_arguments)] // the settings of a distributed cache, each a keyword
    fn new(
        url: Option<String>,
        cluster_nodes: Option<Vec<String>>,
        pool_size: usize,
        connect_timeout: f64,
        socket_timeout: f64,
        failure_threshold: u32,
        reset_seconds: f64,
        backfill_queue: usize,
        backfill_workers: usize,
        tombstone_seconds: f64,
        pending_limit: usize,
        source: String,
    ) -> PyResult<Self> {
        if failure_threshold < 1 {
            return Err(invalid(format!("failure_threshold must be >= 1, got {failure_threshold}")));
        }
        if backfill_queue < 1 || backfill_workers < 1 {
            return Err(invalid("backfill_queue and backfill_workers must be >= 1"));
        }
        let reset = seconds("reset_seconds", reset_seconds)?;
        let tombstone = seconds("tombstone_seconds", tombstone_seconds)?;
        if reset.is_zero() || tombstone.is_zero() {
            return Err(invalid("reset_seconds and tombstone_seconds must be > 0"));
        }
        let settings = CacheSettings {
            // no retries: the breaker decides, and a retry would only double the wait of a request
            redis: redis_settings(url, cluster_nodes, pool_size, (connect_timeout, socket_timeout), 0, None, None)?,
            failure_threshold,
            reset,
            backfill_queue,
            backfill_workers,
            tombstone,
            pending_limit,
            source,
        };
        let events = Arc::new(EventQueue::new(EVENTS));
        let inner = Arc::new(RedisCache::open(&settings, events.clone()).py_err()?);
        Ok(PyRedisCache { inner, events })
    }

    /// Where the cache lives, for messages.
    fn describe(&self) -> String {
        self.inner.describe()
    }

    /// Blocks of `fg_ids` for each key (canonical key strings, duplicates allowed) in one round trip
    /// per node, as `(rows, seen, at)`; None when Redis cannot be used now (the caller reads the
    /// stores).
    fn get_many<'py>(
        &self,
        py: Python<'py>,
        entity: String,
        names: Vec<String>,
        fg_ids: Vec<u16>,
    ) -> Option<Lookup<'py>> {
        let inner = &self.inner;
        let lookup = py.detach(|| {
            let keys: Vec<&str> = names.iter().map(String::as_str).collect();
            runtime::block_on(inner.get_many(&entity, &keys, &fg_ids))
        })?;
        let rows = lookup.rows.iter().map(|r| r.as_ref().map(|r| r.iter().map(|b| bytes(py, b)).collect())).collect();
        let seen = lookup.seen.iter().map(|b| bytes(py, b)).collect();
        Some((rows, seen, lookup.at.saturating_duration_since(epoch()).as_secs_f64()))
    }

    /// Queues the caching of `blocks` (key-major, `len(fg_ids)` per key, `b""` = nothing stored) of
    /// `names`, with `seen` / `at` from the lookup that missed them; returns at once.
    #[allow(clippy::too_many_arguments)] // one backfill job's fields
    fn backfill(
        &self,
        entity: String,
        names: Vec<String>,
        seen: Vec<PyBackedBytes>,
        at: f64,
        fg_ids: Vec<u16>,
        blocks: Vec<PyBackedBytes>,
        ttl_seconds: u64,
        jitter_percent: u8,
    ) -> PyResult<()> {
        if seen.len() != names.len() || blocks.len() != names.len() * fg_ids.len() {
            return Err(invalid(format!(
                "backfill of {} keys x {} FGs needs {} seen values and {} blocks, got {} and {}",
                names.len(),
                fg_ids.len(),
                names.len(),
                names.len() * fg_ids.len(),
                seen.len(),
                blocks.len()
            )));
        }
        let at = epoch() + Duration::try_from_secs_f64(at).unwrap_or_default();
        self.inner.backfill(Backfill {
            entity,
            keys: names,
            seen: seen.iter().map(|b| Bytes::copy_from_slice(b)).collect(),
            at,
            fg_ids,
            blocks: blocks.iter().map(|b| Bytes::copy_from_slice(b)).collect(),
            ttl_seconds,
            jitter_percent,
        });
        Ok(())
    }

    /// Tombstones `names` of `entity` and (with `channel`) publishes the invalidation of
    /// `message_names` (default `names`), in one round trip per node. Never raises: when Redis cannot
    /// be reached the keys and the message are kept and replayed first thing next time. Returns whether
    /// it was delivered now.
    #[pyo3(signature = (entity, names, channel = None, message_names = None))]
    fn invalidate(
        &self,
        py: Python<'_>,
        entity: String,
        names: Vec<String>,
        channel: Option<String>,
        message_names: Option<Vec<String>>,
    ) -> bool {
        let inner = &self.inner;
        py.detach(|| {
            let keys: Vec<&str> = names.iter().map(String::as_str).collect();
            let published: Vec<&str> =
                message_names.as_ref().map_or_else(|| keys.clone(), |m| m.iter().map(String::as_str).collect());
            let publish = channel.as_deref().map(|channel| Publish { channel, keys: &published });
            runtime::block_on(inner.invalidate(&entity, &keys, publish))
        })
    }

    /// The published form of one invalidation.
    fn message<'py>(&self, py: Python<'py>, entity: &str, names: Vec<String>) -> Bound<'py, PyBytes> {
        let keys: Vec<&str> = names.iter().map(String::as_str).collect();
        bytes(py, &self.inner.message(entity, &keys))
    }

    /// One guarded PING: whether Redis answers now (also lets a half-open breaker close).
    fn ping(&self, py: Python<'_>) -> bool {
        let inner = &self.inner;
        py.detach(|| runtime::block_on(inner.ping()))
    }

    /// True while the breaker is closed.
    #[getter]
    fn healthy(&self) -> bool {
        self.inner.healthy()
    }

    /// `closed`, `half-open` or `open`.
    #[getter]
    fn breaker_state(&self) -> &'static str {
        state_name(self.inner.breaker_state())
    }

    /// Keys whose invalidation waits for Redis to come back.
    #[getter]
    fn pending_invalidations(&self) -> usize {
        self.inner.pending_invalidations()
    }

    /// Backfill jobs queued or running.
    #[getter]
    fn backfills_pending(&self) -> usize {
        self.inner.backfills_pending()
    }

    /// Events dropped because nobody drained them in time.
    #[getter]
    fn events_lost(&self) -> u64 {
        self.events.lost()
    }

    /// The events since the last call, in order: `("error", op)`, `("breaker", state)`,
    /// `("dropped", op)`.
    fn take_events(&self) -> Vec<(&'static str, &'static str)> {
        self.events
            .drain()
            .into_iter()
            .map(|e| match e {
                TierEvent::Error(op) => ("error", op),
                TierEvent::Breaker(state) => ("breaker", state_name(state)),
                TierEvent::Dropped(op) => ("dropped", op),
            })
            .collect()
    }

    /// Drops queued backfills and the connections.
    fn close(&self, py: Python<'_>) {
        let inner = &self.inner;
        py.detach(|| inner.close());
    }

    fn __repr__(&self) -> String {
        format!("<RedisCache {}>", self.inner.describe())
    }
}
