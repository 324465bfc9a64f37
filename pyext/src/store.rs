//! Binding of the core's stores (`ofs_core::store`): one class, `Store`, over any `BlockStore`, made by
//! one constructor per kind. Keys and writes are checked and converted here (with the GIL), then every
//! store call runs with the GIL released. The Python store classes (`online_feature_store/store/`) are
//! configuration around these.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ofs_core::store::cassandra::{consistency, CassandraConfig, CassandraStore};
use ofs_core::store::redis::{RedisStore, Wait};
use ofs_core::store::redis_conn::{RedisSettings, Target};
use ofs_core::store::sqlite::{SqliteStore, SWEEP_ROWS};
use ofs_core::store::{runtime, BlockStore, BlockWrite, EntityLayout};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyInt, PyString};

use crate::args::{ints, now_or_clock, Int};
use crate::arrays::bytes;
use crate::batch::PyEncodedRows;
use crate::errors::{invalid, IntoPy};

/// `(label, key columns in canonical order, FG ids)`: what a store knows of an entity.
type LayoutTuple = (String, Vec<String>, Vec<Int<u16>>);

/// A native block store (`ofs_core::store::BlockStore`).
#[pyclass(name = "Store", module = "online_feature_store._native", frozen)]
#[derive(Debug)]
pub struct PyStore {
    pub(crate) inner: Arc<dyn BlockStore>,
    sqlite: Option<Arc<SqliteStore>>,
}

/// Seconds from a Python float setting, refused when negative or not finite.
pub fn seconds(name: &str, value: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| invalid(format!("{name}={value} must be a number of seconds ≥ 0")))
}

impl PyStore {
    fn sqlite_only(&self, what: &str) -> PyResult<&SqliteStore> {
        self.sqlite
            .as_deref()
            .ok_or_else(|| invalid(format!("{what} is for sqlite stores, not {}", self.inner.describe())))
    }
}

#[pymethods]
impl PyStore {
    /// The `SQLite` store in the file `path` (created with its directory when missing): WAL, fsync at
    /// each commit. `busy_timeout`: seconds a write waits for another process's write lock before
    /// `UnavailableError`; `purge_interval`: seconds between sweep steps run by writes (0 = never).
    #[staticmethod]
    #[pyo3(signature = (path, *, busy_timeout = 10.0, purge_interval = 60.0))]
    fn sqlite(py: Python<'_>, path: PathBuf, busy_timeout: f64, purge_interval: f64) -> PyResult<Self> {
        let (busy, purge) = (seconds("busy_timeout", busy_timeout)?, seconds("purge_interval", purge_interval)?);
        let store = Arc::new(py.detach(|| SqliteStore::open(path, busy, purge)).py_err()?);
        Ok(PyStore { inner: store.clone(), sqlite: Some(store) })
    }

    /// The Cassandra / `ScyllaDB` store at `hosts` (contact points) on `port`, in `keyspace`; connects on
    /// first use. `replication`: the map `ensure` creates a missing keyspace with (default
    /// `SimpleStrategy` with `replication_factor`); consistency levels by CQL name; `concurrency`:
    /// requests in flight per call; timeouts in seconds; `local_dc`: the preferred data centre
    /// (default: the first contact point's); `retries`: of a failed request on the next node;
    /// `speculative_delay`: seconds before a request is also sent to the next node (0: never), at most
    /// `speculative_max` times.
    #[staticmethod]
    #[pyo3(signature = (
        hosts, port = 9042, keyspace = "ofs", *, replication = None, replication_factor = 1,
        read_consistency = "LOCAL_QUORUM", write_consistency = "LOCAL_QUORUM", concurrency = 64,
        connect_timeout = 5.0, request_timeout = 10.0, local_dc = None, retries = 2, speculative_delay = 0.0,
        speculative_max = 2
    ))]
    #[allow(clippy::too_many_arguments)] // one per setting of the store kind (docs/stores.md)
    fn cassandra(
        hosts: Vec<String>,
        port: u16,
        keyspace: &str,
        replication: Option<Vec<(String, String)>>,
        replication_factor: u32,
        read_consistency: &str,
        write_consistency: &str,
        concurrency: usize,
        connect_timeout: f64,
        request_timeout: f64,
        local_dc: Option<String>,
        retries: u32,
        speculative_delay: f64,
        speculative_max: usize,
    ) -> PyResult<Self> {
        let mut config = CassandraConfig::new(hosts, port, keyspace);
        if let Some(map) = replication {
            config.replication = map;
        } else {
            config.replication[1].1 = replication_factor.to_string();
        }
        config.read_consistency = consistency(read_consistency).py_err()?;
        config.write_consistency = consistency(write_consistency).py_err()?;
        config.concurrency = concurrency;
        config.connect_timeout = seconds("connect_timeout", connect_timeout)?;
        config.request_timeout = seconds("request_timeout", request_timeout)?;
        config.local_dc = local_dc;
        config.retries = retries;
        let delay = seconds("speculative_delay", speculative_delay)?;
        config.speculative_delay = (!delay.is_zero()).then_some(delay);
        config.speculative_max = speculative_max;
        let store = CassandraStore::new(config).py_err()?;
        Ok(PyStore { inner: Arc::new(store), sqlite: None })
    }

    /// The Redis store: a standalone Redis at `url` (`redis://host:port/db`) or a Redis Cluster from
    /// its `cluster_nodes` seeds (`host:port`), exactly one of them. Nothing connects before the first
    /// call. `pool_size`: connections at most (per node; multiplexed, 4 at most are opened);
    /// `connect_timeout` / `socket_timeout`: seconds; `retries`: of a failed connection; `username` and
    /// `password` are sent apart from the URL (which messages show, redacted).
    #[staticmethod]
    #[pyo3(signature = (
        url = None, *, cluster_nodes = None, pool_size = 32, connect_timeout = 2.0, socket_timeout = 2.0,
        retries = 2, username = None, password = None, wait_replicas = 0, wait_timeout = 1.0
    ))]
    #[allow(clippy::too_many_arguments)] // the settings of a redis store, each a keyword
    fn redis(
        url: Option<String>,
        cluster_nodes: Option<Vec<String>>,
        pool_size: usize,
        connect_timeout: f64,
        socket_timeout: f64,
        retries: u32,
        username: Option<String>,
        password: Option<String>,
        wait_replicas: u32,
        wait_timeout: f64,
    ) -> PyResult<Self> {
        if !(wait_timeout.is_finite() && wait_timeout > 0.0 && wait_timeout <= 3600.0) {
            return Err(invalid(format!("wait_timeout must be between 0 and 3600 seconds, not {wait_timeout}")));
        }
        let wait = Wait { replicas: wait_replicas, timeout: Duration::from_secs_f64(wait_timeout) };
        let settings = redis_settings(
            url,
            cluster_nodes,
            pool_size,
            (connect_timeout, socket_timeout),
            retries,
            username,
            password,
        )?;
        let store = Arc::new(RedisStore::open(&settings).py_err()?.with_wait(Some(wait)));
        Ok(PyStore { inner: store, sqlite: None })
    }

    /// The store in messages, e.g. `sqlite store /data/store-main.db`.
    fn describe(&self) -> String {
        self.inner.describe()
    }

    /// Creates what the entities' FGs need (idempotent, additive only).
    fn ensure(&self, py: Python<'_>, entities: Vec<LayoutTuple>) -> PyResult<()> {
        let layouts: Vec<EntityLayout> = entities
            .into_iter()
            .map(|(label, key_columns, fg_ids)| EntityLayout {
                label,
                key_columns,
                fg_ids: fg_ids.into_iter().map(|Int(f)| f).collect(),
            })
            .collect();
        let store = &self.inner;
        py.detach(|| runtime::block_on(store.ensure(&layouts))).py_err()
    }

    /// The blocks of `fg_ids` for each key (a tuple of str per key, in the key columns' order) as
    /// `result[key][fg]`, `b""` where nothing is stored. Bad keys or FG ids are refused before any I/O.
    fn read<'py>(
        &self,
        py: Python<'py>,
        entity: String,
        key_columns: Vec<String>,
        keys: &Bound<'py, PyAny>,
        fg_ids: &Bound<'py, PyAny>,
    ) -> PyResult<Vec<Vec<Bound<'py, PyBytes>>>> {
        let layout = EntityLayout { label: entity, key_columns, fg_ids: Vec::new() };
        let names = keys.try_iter()?.map(|k| key_name(&layout, &k?)).collect::<PyResult<Vec<String>>>()?;
        let fg_ids = fg_ids.try_iter()?.map(|f| fg_id(&layout, &f?)).collect::<PyResult<Vec<u16>>>()?;
        let store = &self.inner;
        let blocks = py
            .detach(|| {
                let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                runtime::block_on(store.read(&layout, &refs, &fg_ids))
            })
            .py_err()?;
        let n = fg_ids.len();
        Ok((0..names.len()).map(|k| blocks[k * n..(k + 1) * n].iter().map(|b| bytes(py, b)).collect()).collect())
    }

    /// Upserts `writes` (`store.base.BlockWrite`s: key tuple, FG id, block, `expires_at`, key string or
    /// None) atomically per (key, FG); every write is checked before anything is written.
    fn write(
        &self,
        py: Python<'_>,
        entity: String,
        key_columns: Vec<String>,
        writes: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let layout = EntityLayout { label: entity, key_columns, fg_ids: Vec::new() };
        let mut rows: Vec<(String, u16, PyBackedBytes, u64)> = Vec::with_capacity(writes.len().unwrap_or(0));
        for w in writes.try_iter()? {
            rows.push(block_write(&layout, &w?)?);
        }
        let store = &self.inner;
        py.detach(|| {
            let writes: Vec<BlockWrite<'_>> = rows
                .iter()
                .map(|(key, fg_id, block, expires_at)| BlockWrite {
                    key,
                    fg_id: *fg_id,
                    block,
                    expires_at: *expires_at,
                })
                .collect();
            runtime::block_on(store.write(&layout, &writes))
        })
        .py_err()
    }

    /// Writes the rows of `batches` (`EncodedRows` of `entity`) for the feature groups `fg_ids` (all
    /// of each batch's when empty), all in one store write (one transaction where the store has
    /// them), the GIL released; later rows of the same (key, FG) win.
    #[pyo3(signature = (entity, key_columns, batches, fg_ids = Vec::new()))]
    fn write_encoded(
        &self,
        py: Python<'_>,
        entity: String,
        key_columns: Vec<String>,
        batches: Vec<PyRef<'_, PyEncodedRows>>,
        fg_ids: Vec<Int<u16>>,
    ) -> PyResult<()> {
        if let Some(other) = batches.iter().find(|b| b.inner.entity() != entity) {
            return Err(invalid(format!(
                "rows of entity {:?} cannot be written as entity {entity:?}",
                other.inner.entity()
            )));
        }
        let layout = EntityLayout { label: entity, key_columns, fg_ids: ints(fg_ids) };
        let held: Vec<_> = batches.iter().map(|b| b.inner.clone()).collect();
        let store = &self.inner;
        py.detach(|| {
            let writes: Vec<BlockWrite<'_>> = held.iter().flat_map(|b| b.writes(&layout.fg_ids)).collect();
            runtime::block_on(store.write(&layout, &writes))
        })
        .py_err()
    }

    /// Raises `UnavailableError` unless the backend answers.
    fn ping(&self, py: Python<'_>) -> PyResult<()> {
        let store = &self.inner;
        py.detach(|| runtime::block_on(store.ping())).py_err()
    }

    /// Releases connections; every later call raises `UnavailableError`.
    fn close(&self, py: Python<'_>) {
        let store = &self.inner;
        py.detach(|| store.close());
    }

    /// `SQLite` only: deletes every row expired at `now` (default: the clock); returns how many.
    #[pyo3(signature = (now = None))]
    fn purge_expired(&self, py: Python<'_>, now: Option<Int<u64>>) -> PyResult<usize> {
        let store = self.sqlite_only("purge_expired")?;
        let now = now_or_clock(now);
        py.detach(|| store.purge_expired(now)).py_err()
    }

    /// `SQLite` only: deletes the rows expired at `now` among the next `rows` rows in key order after the
    /// last step's, starting over after the last row; returns how many.
    #[pyo3(signature = (now = None, rows = Int(SWEEP_ROWS)), text_signature = "(self, /, now=None, rows=50000)")]
    fn sweep_step(&self, py: Python<'_>, now: Option<Int<u64>>, rows: Int<u64>) -> PyResult<usize> {
        let store = self.sqlite_only("sweep_step")?;
        let now = now_or_clock(now);
        py.detach(|| store.sweep_step(now, rows.0)).py_err()
    }

    /// `SQLite` only: `PRAGMA name` as the store's connections see it, as text.
    fn pragma(&self, py: Python<'_>, name: &str) -> PyResult<String> {
        let store = self.sqlite_only("pragma")?;
        py.detach(|| store.pragma(name)).py_err()
    }

    fn __repr__(&self) -> String {
        format!("<Store {}>", self.inner.describe())
    }
}

/// Redis connection settings from keyword arguments, checked (exactly one of `url`, `cluster_nodes`).
pub fn redis_settings(
    url: Option<String>,
    cluster_nodes: Option<Vec<String>>,
    pool_size: usize,
    (connect_timeout, socket_timeout): (f64, f64),
    retries: u32,
    username: Option<String>,
    password: Option<String>,
) -> PyResult<RedisSettings> {
    let target = match (url, cluster_nodes.filter(|n| !n.is_empty())) {
        (Some(url), None) => Target::Url(url),
        (None, Some(nodes)) => Target::Cluster(nodes),
        _ => return Err(invalid("a redis store or cache needs exactly one of url or cluster_nodes")),
    };
    if pool_size == 0 {
        return Err(invalid("pool_size must be >= 1"));
    }
    Ok(RedisSettings {
        target,
        pool_size,
        connect_timeout: seconds("connect_timeout", connect_timeout)?,
        socket_timeout: seconds("socket_timeout", socket_timeout)?,
        retries,
        username,
        password,
    })
}

/// The canonical key string of one key (a sequence of str, one per key column), or the error naming
/// what is wrong with it.
pub fn key_name(entity: &EntityLayout, key: &Bound<'_, PyAny>) -> PyResult<String> {
    let n = entity.key_columns.len();
    let bad = |what: String| invalid(format!("entity {:?}: key {}{what}", entity.label, repr(key)));
    let values = if key.is_instance_of::<PyString>() { None } else { key.len().ok() };
    if values != Some(n) {
        let got = values.map_or_else(|| "is not a sequence of".to_owned(), |v| format!("has {v} values,"));
        return Err(bad(format!(" {got} the entity has {n} key columns ({})", entity.key_columns.join(", "))));
    }
    let mut name = String::new();
    for i in 0..n {
        let v = key.get_item(i)?;
        let s = v.cast::<PyString>().map_err(|_| bad(": key values must be str".into()))?;
        ofs_core::keys::push_value(&mut name, i, s.to_str()?);
    }
    Ok(name)
}

/// An FG id, refused unless an int in 0..=65535.
fn fg_id(entity: &EntityLayout, v: &Bound<'_, PyAny>) -> PyResult<u16> {
    v.cast::<PyInt>()
        .ok()
        .and_then(|i| i.extract::<u16>().ok())
        .ok_or_else(|| invalid(format!("entity {:?}: FG id {} is not in 0..65535", entity.label, repr(v))))
}

/// One `BlockWrite` (`(key, fg_id, block, expires_at[, name])`), checked.
fn block_write(entity: &EntityLayout, w: &Bound<'_, PyAny>) -> PyResult<(String, u16, PyBackedBytes, u64)> {
    let key = w.get_item(0)?;
    let fg = fg_id(entity, &w.get_item(1)?)?;
    let name = match w.len()? {
        n if n > 4 => w.get_item(4)?,
        _ => py_none(w.py()),
    };
    let name = if name.is_none() {
        key_name(entity, &key)?
    } else {
        // Given by the native persist path: the key is still checked for its arity.
        if key.len().ok() != Some(entity.key_columns.len()) {
            key_name(entity, &key)?;
        }
        name.extract::<String>()?
    };
    let block = w.get_item(2)?;
    if !block.is_instance_of::<PyBytes>() {
        return Err(invalid(format!("entity {:?}: FG {fg}: a block must be bytes", entity.label)));
    }
    let expires = w.get_item(3)?;
    let expires_at = expires.cast::<PyInt>().ok().and_then(|i| i.extract::<u64>().ok()).ok_or_else(|| {
        invalid(format!(
            "entity {:?}: FG {fg}: expires_at {} must be unix seconds or 0 (never)",
            entity.label,
            repr(&expires)
        ))
    })?;
    Ok((name, fg, block.extract()?, expires_at))
}

fn py_none(py: Python<'_>) -> Bound<'_, PyAny> {
    py.None().into_bound(py)
}

fn repr(v: &Bound<'_, PyAny>) -> String {
    v.repr().map_or_else(|_| "<unprintable>".to_owned(), |r| r.to_string())
}

/// Sets the worker threads of the core's runtime (the serving front and the store clients); only before
/// anything starts it. `ofs serve` calls it with its `io_threads`.
#[pyfunction]
pub fn set_io_threads(threads: usize) -> PyResult<()> {
    ofs_core::store::runtime::set_worker_threads(threads).map_err(invalid)
}

/// The worker threads the core's runtime has, or will start with.
#[pyfunction]
pub fn io_threads() -> usize {
    ofs_core::store::runtime::worker_threads()
}
