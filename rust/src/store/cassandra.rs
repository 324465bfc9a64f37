//! Apache Cassandra / `ScyllaDB` as a store, over CQL (protocol v4) with `ScyllaDB`'s async driver
//! (`scylla`), which speaks to both. The layout is the one the Python store (`cassandra-driver`) wrote
//! before it moved here, so existing keyspaces keep working.
//!
//! Layout: one table per entity in the keyspace, named by the entity label (quoted: case kept). The
//! partition key is the entity's key columns (`text`, named by `Key.column`); each FG is one `blob`
//! column `fg_<id>` holding the PSDB block as written. A write of some FGs of a key is one
//! `UPDATE … USING TTL ? SET fg_a = ?, … WHERE k1 = ? AND …`: cells only, never a read first, so
//! writers of different FGs never meet, and Cassandra purges expired cells itself (TTL = `expires_at -
//! now`). A read is one single-partition `SELECT fg_a, … WHERE k1 = ? AND …` per distinct key, routed
//! token-aware to a replica, at most `concurrency` of them in flight; when every node holds every
//! partition, single-column keys are read by `IN` of up to [`IN_CHUNK`] keys per request instead (far
//! fewer requests for the cluster, no locality lost). Statements are prepared once per (table, FG set).
//!
//! FG columns are added by `ensure` and by a write of an FG without one (`ALTER TABLE … ADD`, additive
//! and idempotent: several processes may race to add it). Which FG columns a table has is cached; an
//! FG the cache does not know is looked up again (at most once per [`COLUMNS_RECHECK`] per table), so a
//! column another process added is read as soon as it is there.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use scylla::client::execution_profile::{ExecutionProfile, ExecutionProfileHandle};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::cluster::metadata::{ColumnType, Strategy};
use scylla::errors::{DbError, ExecutionError, NewSessionError, PrepareError, RequestAttemptError};
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::policies::retry::{RequestInfo, RetryDecision, RetryPolicy, RetrySession};
use scylla::policies::speculative_execution::SimpleSpeculativeExecutionPolicy;
use scylla::policies::timestamp_generator::MonotonicTimestampGenerator;
use scylla::serialize::value::SerializeValue;
use scylla::serialize::writers::{CellWriter, WrittenCellProof};
use scylla::serialize::SerializationError;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, Statement};
use scylla::value::{CqlValue, Row};

use crate::error::{Error, Result};
use crate::keys::decode_key;
use crate::store::{runtime, BlockStore, BlockWrite, BoxFuture, EntityLayout};

/// The consistency levels a setting may name (CQL's names, any case).
pub const CONSISTENCY_LEVELS: [&str; 9] =
    ["ANY", "ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_QUORUM", "EACH_QUORUM", "LOCAL_ONE"];

/// How long a table's cached FG columns are trusted to say an FG has no column yet.
pub const COLUMNS_RECHECK: Duration = Duration::from_secs(1);

/// Cassandra's longest TTL (20 years): a later expiry is stored without one.
const MAX_TTL: u64 = 630_720_000;

/// A keyspace or table name Cassandra accepts unquoted-safe: 1-48 letters, digits or `_`.
fn is_name(s: &str) -> bool {
    (1..=48).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

fn fg_column(fg_id: u16) -> String {
    format!("fg_{fg_id}")
}

/// A consistency level by its CQL name (any case), or the error listing the names.
pub fn consistency(name: &str) -> Result<Consistency> {
    Ok(match name.to_ascii_uppercase().as_str() {
        "ANY" => Consistency::Any,
        "ONE" => Consistency::One,
        "TWO" => Consistency::Two,
        "THREE" => Consistency::Three,
        "QUORUM" => Consistency::Quorum,
        "ALL" => Consistency::All,
        "LOCAL_QUORUM" => Consistency::LocalQuorum,
        "EACH_QUORUM" => Consistency::EachQuorum,
        "LOCAL_ONE" => Consistency::LocalOne,
        _ => {
            return Err(Error::InvalidInput(format!(
                "unknown consistency level {name:?} (one of {})",
                CONSISTENCY_LEVELS.join(", ")
            )))
        }
    })
}

/// How to reach the cluster and what to ask of it (`docs/stores.md`, kind `scylla`).
#[derive(Debug, Clone)]
pub struct CassandraConfig {
    /// Contact points (host names or addresses), all on `port`.
    pub hosts: Vec<String>,
    pub port: u16,
    pub keyspace: String,
    /// The replication map `ensure` creates a missing keyspace with (`class` first).
    pub replication: Vec<(String, String)>,
    pub read_consistency: Consistency,
    pub write_consistency: Consistency,
    /// Requests in flight per `read` / `write` call.
    pub concurrency: usize,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// The data centre preferred (None: the first contact point's).
    pub local_dc: Option<String>,
    /// Retries of a failed request on the next node of its plan (see [`NextNodeRetries`]), all inside
    /// `request_timeout`.
    pub retries: u32,
    /// Speculative executions: after this long without an answer, the request is also sent to the next
    /// node of its plan, at most `speculative_max` times (the first answer wins); None: off.
    pub speculative_delay: Option<Duration>,
    pub speculative_max: usize,
}

impl CassandraConfig {
    /// The defaults of the settings, for `hosts:port/keyspace`.
    pub fn new(hosts: Vec<String>, port: u16, keyspace: impl Into<String>) -> CassandraConfig {
        CassandraConfig {
            hosts,
            port,
            keyspace: keyspace.into(),
            replication: vec![("class".into(), "SimpleStrategy".into()), ("replication_factor".into(), "1".into())],
            read_consistency: Consistency::LocalQuorum,
            write_consistency: Consistency::LocalQuorum,
            concurrency: 64,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            local_dc: None,
            retries: 2,
            speculative_delay: None,
            speculative_max: 2,
        }
    }
}

/// A prepared statement's use, table (entity label) and FG columns.
type StatementKey = (Kind, String, Vec<u16>);

/// The rows of one `UPDATE`: key values, expiry, and the (FG id, block) cells.
type UpdateGroup<'a> = (Vec<String>, u64, Vec<(u16, &'a [u8])>);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Read,
    /// `SELECT key, fg_a, … WHERE key IN ?`: single-column keys, many partitions per request.
    ReadIn,
    Write,
}

/// Partitions per `IN` read: few enough that one slow partition holds few keys back.
pub const IN_CHUNK: usize = 50;

/// What the store knows of one table's FG columns, and since when.
#[derive(Debug)]
struct Columns {
    fgs: HashSet<u16>,
    checked: Instant,
}

/// FG blocks in a Cassandra / `ScyllaDB` keyspace. Connects on first use (a server starts while the
/// cluster is down); a failed connect is retried by the next call.
#[derive(Debug)]
pub struct CassandraStore {
    config: CassandraConfig,
    profile: ExecutionProfileHandle,
    session: Mutex<Option<Arc<Session>>>,
    connecting: tokio::sync::Mutex<()>,
    closed: std::sync::atomic::AtomicBool,
    prepared: Mutex<HashMap<StatementKey, PreparedStatement>>,
    columns: Mutex<HashMap<String, Columns>>,
}

/// The retry policy: an idempotent request (every statement this store prepares: blob `SELECT`s and
/// cell `UPDATE`s with client timestamps) that failed in a way another node may not is sent to the next
/// node of its plan, up to `retries` times: a broken connection (a node that died mid-request), a
/// coordinator's read or write timeout (it waited on a replica that is down but not yet convicted),
/// `Unavailable` (the coordinator thinks too few replicas are up), overload and server errors. The
/// driver's `request_timeout` bounds the whole run. Anything else (a refused statement, a protocol
/// error) and any non-idempotent request fails at once.
#[derive(Debug, Clone, Copy)]
pub struct NextNodeRetries {
    pub retries: u32,
}

#[derive(Debug)]
struct NextNodeRetrySession {
    retries: u32,
    used: u32,
}

impl RetryPolicy for NextNodeRetries {
    fn new_session(&self) -> Box<dyn RetrySession> {
        Box::new(NextNodeRetrySession { retries: self.retries, used: 0 })
    }
}

/// Whether a failed attempt is worth repeating on another node.
fn retryable(error: &RequestAttemptError) -> bool {
    match error {
        RequestAttemptError::BrokenConnectionError(_) | RequestAttemptError::UnableToAllocStreamId => true,
        RequestAttemptError::DbError(db, _) => matches!(
            db,
            DbError::Overloaded
                | DbError::ServerError
                | DbError::Unavailable { .. }
                | DbError::ReadTimeout { .. }
                | DbError::WriteTimeout { .. }
                | DbError::ReadFailure { .. }
                | DbError::WriteFailure { .. }
                | DbError::IsBootstrapping
        ),
        _ => false,
    }
}

impl RetrySession for NextNodeRetrySession {
    fn decide_should_retry(&mut self, info: RequestInfo) -> RetryDecision {
        if !info.is_idempotent || info.consistency.is_serial() || self.used >= self.retries || !retryable(info.error) {
            return RetryDecision::DontRetry;
        }
        self.used += 1;
        RetryDecision::RetryNextTarget(None)
    }

    fn reset(&mut self) {
        self.used = 0;
    }
}

/// One bound value of a statement: the TTL, a block or a key value, serialized without copying.
enum Bind<'a> {
    Int(i32),
    Blob(&'a [u8]),
    Text(&'a str),
}

impl SerializeValue for Bind<'_> {
    fn serialize<'b>(
        &self,
        typ: &ColumnType,
        writer: CellWriter<'b>,
    ) -> std::result::Result<WrittenCellProof<'b>, SerializationError> {
        match self {
            Bind::Int(v) => v.serialize(typ, writer),
            Bind::Blob(v) => v.serialize(typ, writer),
            Bind::Text(v) => v.serialize(typ, writer),
        }
    }
}

/// The Cassandra error code of a failure, when the cluster answered with one.
fn db_error(e: &ExecutionError) -> Option<&DbError> {
    let (ExecutionError::LastAttemptError(attempt)
    | ExecutionError::PrepareError(PrepareError::AllAttemptsFailed { first_attempt: attempt })) = e
    else {
        return None;
    };
    match attempt {
        RequestAttemptError::DbError(db, _) => Some(db),
        _ => None,
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl CassandraStore {
    /// The store (not yet connected: the first call connects). Refuses a keyspace that is not a
    /// Cassandra name, no contact point, or a zero port.
    pub fn new(mut config: CassandraConfig) -> Result<CassandraStore> {
        if !is_name(&config.keyspace) {
            return Err(Error::InvalidInput(format!(
                "keyspace {:?}: use 1-48 letters, digits or underscores",
                config.keyspace
            )));
        }
        if config.hosts.is_empty() {
            return Err(Error::InvalidInput("a cassandra store needs at least one host".into()));
        }
        if config.port == 0 {
            return Err(Error::InvalidInput("cassandra port 0 is not a port (1-65535)".into()));
        }
        config.concurrency = config.concurrency.max(1);
        // The driver's tasks (connections, metadata refresh) live on the core's runtime.
        runtime::runtime();
        let profile = Self::profile(&config, config.local_dc.clone()).into_handle();
        Ok(CassandraStore {
            config,
            profile,
            session: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            closed: std::sync::atomic::AtomicBool::new(false),
            prepared: Mutex::new(HashMap::new()),
            columns: Mutex::new(HashMap::new()),
        })
    }

    /// Token-aware routing over the replicas of `local_dc` (all nodes while unknown), the request
    /// timeout, retries on the next node ([`NextNodeRetries`]) and speculative executions when set. The
    /// driver's `request_timeout` bounds a request with all its retries and speculative executions.
    fn profile(config: &CassandraConfig, local_dc: Option<String>) -> ExecutionProfile {
        let mut policy = DefaultPolicy::builder().token_aware(true);
        if let Some(dc) = local_dc {
            policy = policy.prefer_datacenter(dc);
        }
        let speculative = config.speculative_delay.filter(|_| config.speculative_max > 0).map(|delay| {
            Arc::new(SimpleSpeculativeExecutionPolicy {
                max_retry_count: config.speculative_max,
                retry_interval: delay,
            }) as Arc<dyn scylla::policies::speculative_execution::SpeculativeExecutionPolicy>
        });
        ExecutionProfile::builder()
            .load_balancing_policy(policy.build())
            .retry_policy(Arc::new(NextNodeRetries { retries: config.retries }))
            .speculative_execution_policy(speculative)
            .request_timeout(Some(config.request_timeout))
            .consistency(config.read_consistency)
            .build()
    }

    /// The configuration this store was made with.
    pub fn config(&self) -> &CassandraConfig {
        &self.config
    }

    fn unavailable(&self, what: &str, e: &dyn std::fmt::Display) -> Error {
        Error::Unavailable(format!("{}: {what} failed: {e}", self.describe()))
    }

    /// A driver failure as the core's: a statement Cassandra refuses is bad input, anything else
    /// (no host, timeouts, overload, broken connections) means the store cannot answer.
    fn error(&self, what: &str, e: &ExecutionError) -> Error {
        match db_error(e) {
            Some(DbError::Invalid | DbError::SyntaxError) => {
                Error::InvalidInput(format!("{}: {what}: {e}", self.describe()))
            }
            _ => self.unavailable(what, e),
        }
    }

    /// The session, connecting when there is none.
    async fn session(&self) -> Result<Arc<Session>> {
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(Error::Unavailable(format!("{} is closed", self.describe())));
        }
        if let Some(s) = self.session.lock().expect("cassandra session lock").as_ref() {
            return Ok(s.clone());
        }
        let _gate = self.connecting.lock().await;
        if let Some(s) = self.session.lock().expect("cassandra session lock").as_ref() {
            return Ok(s.clone());
        }
        let session = Arc::new(self.connect().await?);
        let mut slot = self.session.lock().expect("cassandra session lock");
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(Error::Unavailable(format!("{} is closed", self.describe())));
        }
        *slot = Some(session.clone());
        Ok(session)
    }

    async fn connect(&self) -> Result<Session> {
        let c = &self.config;
        let nodes: Vec<String> = c.hosts.iter().map(|h| join_host_port(h, c.port)).collect();
        let builder = SessionBuilder::new()
            .known_nodes(&nodes)
            .connection_timeout(c.connect_timeout)
            .default_execution_profile_handle(self.profile.clone())
            .timestamp_generator(Arc::new(MonotonicTimestampGenerator::new()))
            .keyspaces_to_fetch([c.keyspace.clone()]);
        let build = builder.build();
        // The driver's own connect timeout covers each connection; the whole handshake (metadata
        // included) gets the same bound again.
        let session = match tokio::time::timeout(c.connect_timeout * 2 + c.request_timeout, build).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(self.connect_error(&e)),
            Err(_) => return Err(Error::Unavailable(format!("{}: connect timed out", self.describe()))),
        };
        if c.local_dc.is_none() {
            if let Some(dc) = first_contact_dc(&session, &c.hosts[0], c.port).await {
                let mut handle = self.profile.clone();
                handle.map_to_another_profile(Self::profile(c, Some(dc)));
            }
        }
        Ok(session)
    }

    fn connect_error(&self, e: &NewSessionError) -> Error {
        self.unavailable("connect", e)
    }

    fn table(&self, entity: &EntityLayout) -> Result<String> {
        if !is_name(&entity.label) {
            return Err(Error::InvalidInput(format!(
                "entity {:?}: a Cassandra table name needs 1-48 letters, digits or underscores",
                entity.label
            )));
        }
        Ok(format!("{}.{}", self.config.keyspace, quote(&entity.label)))
    }

    /// The FG columns of the entity's table as Cassandra's schema says now (empty: no table).
    async fn fetch_columns(&self, session: &Session, label: &str) -> Result<HashSet<u16>> {
        let rows = session
            .query_unpaged(
                system("SELECT column_name FROM system_schema.columns WHERE keyspace_name = ? AND table_name = ?"),
                (self.config.keyspace.as_str(), label),
            )
            .await
            .map_err(|e| self.error("schema read", &e))?
            .into_rows_result()
            .map_err(|e| Error::corrupt(format!("{}: schema read: {e}", self.describe())))?;
        let mut fgs = HashSet::new();
        for row in
            rows.rows::<(String,)>().map_err(|e| Error::corrupt(format!("{}: schema read: {e}", self.describe())))?
        {
            let (name,) = row.map_err(|e| Error::corrupt(format!("{}: schema read: {e}", self.describe())))?;
            if let Some(id) = name.strip_prefix("fg_").and_then(|n| n.parse::<u16>().ok()) {
                fgs.insert(id);
            }
        }
        self.columns
            .lock()
            .expect("cassandra columns lock")
            .insert(label.to_owned(), Columns { fgs: fgs.clone(), checked: Instant::now() });
        Ok(fgs)
    }

    /// Which of `fg_ids` have a column: from the cache, looked up again when one is missing from it and
    /// the cache is older than [`COLUMNS_RECHECK`] (or the table was never looked at).
    async fn present(&self, session: &Session, label: &str, fg_ids: &[u16]) -> Result<Vec<u16>> {
        let known = {
            let cache = self.columns.lock().expect("cassandra columns lock");
            match cache.get(label) {
                Some(c) if fg_ids.iter().all(|f| c.fgs.contains(f)) || c.checked.elapsed() < COLUMNS_RECHECK => {
                    Some(c.fgs.clone())
                }
                _ => None,
            }
        };
        let fgs = match known {
            Some(fgs) => fgs,
            None => self.fetch_columns(session, label).await?,
        };
        let mut present: Vec<u16> = Vec::with_capacity(fg_ids.len());
        for &f in fg_ids {
            if fgs.contains(&f) && !present.contains(&f) {
                present.push(f);
            }
        }
        Ok(present)
    }

    /// Creates the keyspace when missing, the entity's table when missing, and the columns of
    /// `fg_ids` it lacks.
    async fn ensure_columns(&self, session: &Session, entity: &EntityLayout, fg_ids: &[u16]) -> Result<()> {
        let table = self.table(entity)?;
        if let Some(k) = entity.key_columns.iter().find(|k| is_fg_column(k)) {
            return Err(Error::InvalidInput(format!(
                "entity {:?}: key column {k:?} clashes with FG columns",
                entity.label
            )));
        }
        if entity.key_columns.is_empty() {
            return Err(Error::InvalidInput(format!("entity {:?} has no key columns", entity.label)));
        }
        self.ensure_keyspace(session).await?;
        let mut wanted: Vec<u16> = Vec::with_capacity(fg_ids.len());
        for &f in fg_ids {
            if !wanted.contains(&f) {
                wanted.push(f);
            }
        }
        let mut have = self.fetch_columns(session, &entity.label).await?;
        if have.is_empty() && !self.table_exists(session, &entity.label).await? {
            let defs: Vec<String> = entity.key_columns.iter().map(|k| format!("{} text", quote(k))).collect();
            let keys: Vec<String> = entity.key_columns.iter().map(|k| quote(k)).collect();
            let fgs: String = wanted.iter().map(|&f| ", ".to_owned() + &fg_column(f) + " blob").collect();
            let cql = format!(
                "CREATE TABLE IF NOT EXISTS {table} ({}{fgs}, PRIMARY KEY (({})))",
                defs.join(", "),
                keys.join(", ")
            );
            session.query_unpaged(system(cql), ()).await.map_err(|e| self.error("ensure", &e))?;
            have = self.fetch_columns(session, &entity.label).await?;
        }
        for f in wanted {
            if have.contains(&f) {
                continue;
            }
            let cql = format!("ALTER TABLE {table} ADD {} blob", fg_column(f));
            if let Err(e) = session.query_unpaged(system(cql), ()).await {
                // Another process added it first: the column is there, which is all we want.
                let msg = e.to_string();
                if !(msg.contains("conflicts with an existing column") || msg.contains("already exists")) {
                    return Err(self.error("ensure", &e));
                }
            }
        }
        self.fetch_columns(session, &entity.label).await?;
        Ok(())
    }

    async fn ensure_keyspace(&self, session: &Session) -> Result<()> {
        let ks = &self.config.keyspace;
        let found = session
            .query_unpaged(
                system("SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = ?"),
                (ks.as_str(),),
            )
            .await
            .map_err(|e| self.error("ensure", &e))?
            .into_rows_result()
            .map_or(0, |r| r.rows_num());
        if found > 0 {
            return Ok(());
        }
        let map: Vec<String> = self
            .config
            .replication
            .iter()
            .map(|(k, v)| format!("'{}': '{}'", k.replace('\'', "''"), v.replace('\'', "''")))
            .collect();
        let cql = format!("CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {{{}}}", map.join(", "));
        session.query_unpaged(system(cql), ()).await.map_err(|e| self.error("ensure", &e))?;
        // The driver learns the new keyspace's replication now rather than at its next refresh (reads
        // choose their request shape by it); a failed refresh only delays that.
        let _ = session.refresh_metadata().await;
        Ok(())
    }

    async fn table_exists(&self, session: &Session, label: &str) -> Result<bool> {
        let rows = session
            .query_unpaged(
                system("SELECT table_name FROM system_schema.tables WHERE keyspace_name = ? AND table_name = ?"),
                (self.config.keyspace.as_str(), label),
            )
            .await
            .map_err(|e| self.error("ensure", &e))?;
        Ok(rows.into_rows_result().map_or(0, |r| r.rows_num()) > 0)
    }

    /// The prepared statement of `kind` for the entity's table and `fg_ids` (prepared once).
    async fn statement(
        &self,
        session: &Session,
        kind: Kind,
        entity: &EntityLayout,
        fg_ids: &[u16],
    ) -> Result<PreparedStatement> {
        let cache_key = (kind, entity.label.clone(), fg_ids.to_vec());
        if let Some(s) = self.prepared.lock().expect("cassandra statements lock").get(&cache_key) {
            return Ok(s.clone());
        }
        let table = self.table(entity)?;
        let filter: Vec<String> = entity.key_columns.iter().map(|k| format!("{} = ?", quote(k))).collect();
        let filter = filter.join(" AND ");
        let cql = match kind {
            Kind::Read => {
                let cols: Vec<String> = fg_ids.iter().map(|&f| fg_column(f)).collect();
                format!("SELECT {} FROM {table} WHERE {filter}", cols.join(", "))
            }
            Kind::ReadIn => {
                let key = quote(&entity.key_columns[0]);
                let cols: Vec<String> = fg_ids.iter().map(|&f| fg_column(f)).collect();
                format!("SELECT {key}, {} FROM {table} WHERE {key} IN ?", cols.join(", "))
            }
            Kind::Write => {
                let sets: Vec<String> = fg_ids.iter().map(|&f| format!("{} = ?", fg_column(f))).collect();
                format!("UPDATE {table} USING TTL ? SET {} WHERE {filter}", sets.join(", "))
            }
        };
        let mut stmt =
            session.prepare(cql).await.map_err(|e| self.error("prepare", &ExecutionError::PrepareError(e)))?;
        stmt.set_consistency(match kind {
            Kind::Read | Kind::ReadIn => self.config.read_consistency,
            Kind::Write => self.config.write_consistency,
        });
        // Blob SETs and SELECTs are idempotent: the retry policy may retry them after a timeout.
        stmt.set_is_idempotent(true);
        self.prepared.lock().expect("cassandra statements lock").insert(cache_key, stmt.clone());
        Ok(stmt)
    }

    /// The key values of a canonical key string, checked against the entity's key columns.
    fn key_values(entity: &EntityLayout, key: &str) -> Result<Vec<String>> {
        let values = decode_key(key);
        if values.len() != entity.key_columns.len() {
            return Err(Error::InvalidInput(format!(
                "entity {:?}: key {key:?} has {} values, the entity has {} key columns ({})",
                entity.label,
                values.len(),
                entity.key_columns.len(),
                entity.key_columns.join(", ")
            )));
        }
        Ok(values)
    }

    async fn read_all(&self, entity: &EntityLayout, keys: &[&str], fg_ids: &[u16]) -> Result<Vec<Bytes>> {
        let n = fg_ids.len();
        let mut out = vec![Bytes::new(); keys.len() * n];
        let table = self.table(entity)?;
        let mut unique: Vec<(&str, Vec<String>)> = Vec::with_capacity(keys.len());
        let mut at: HashMap<&str, Vec<usize>> = HashMap::with_capacity(keys.len());
        for (i, &k) in keys.iter().enumerate() {
            let slots = at.entry(k).or_default();
            if slots.is_empty() {
                let values = Self::key_values(entity, k)?;
                // Cassandra refuses an empty single-column partition key: such a key holds nothing.
                if !(values.len() == 1 && values[0].is_empty()) {
                    unique.push((k, values));
                }
            }
            slots.push(i);
        }
        if unique.is_empty() || n == 0 {
            return Ok(out);
        }
        let session = self.session().await?;
        let present = self.present(&session, &entity.label, fg_ids).await?;
        if present.is_empty() {
            return Ok(out);
        }
        if entity.key_columns.len() == 1 && unique.len() > 1 && self.every_node_holds_everything(&session) {
            let rows = self.read_in(&session, entity, &table, &present, &unique).await?;
            Self::place(&mut out, &at, fg_ids, &present, rows);
            return Ok(out);
        }
        let stmt = self.statement(&session, Kind::Read, entity, &present).await?;
        let (session, stmt, table) = (&session, &stmt, table.as_str());
        // The futures are made up front (a stream of closures over borrowed rows trips the compiler's
        // higher-ranked `Send` check) and run `concurrency` at a time.
        let reads: Vec<_> = unique.iter().map(|(k, values)| self.read_key(session, stmt, table, k, values)).collect();
        let rows: Vec<(&str, Option<Vec<Bytes>>)> =
            stream::iter(reads).buffer_unordered(self.config.concurrency).try_collect().await?;
        Self::place(&mut out, &at, fg_ids, &present, rows);
        Ok(out)
    }

    /// Puts each key's row (the cells of `present`) at the key's places in the answer.
    fn place(
        out: &mut [Bytes],
        at: &HashMap<&str, Vec<usize>>,
        fg_ids: &[u16],
        present: &[u16],
        rows: Vec<(&str, Option<Vec<Bytes>>)>,
    ) {
        let n = fg_ids.len();
        let cols: Vec<Option<usize>> = fg_ids.iter().map(|fg| present.iter().position(|x| x == fg)).collect();
        for (k, blocks) in rows {
            let Some(blocks) = blocks else { continue };
            for &i in &at[k] {
                for (f, col) in cols.iter().enumerate() {
                    if let Some(c) = col {
                        out[i * n + f] = blocks[*c].clone();
                    }
                }
            }
        }
    }

    /// Whether every node of the cluster holds a replica of every partition of the keyspace (one node,
    /// or a replication factor of at least the nodes of each data centre). Then token-aware routing
    /// gains nothing, and `IN` reads of many partitions per request cost the cluster far fewer
    /// requests than one per key.
    fn every_node_holds_everything(&self, session: &Session) -> bool {
        let state = session.get_cluster_state();
        let Some(ks) = state.get_keyspace(&self.config.keyspace) else { return false };
        let nodes = state.get_nodes_info();
        match &ks.strategy {
            Strategy::SimpleStrategy { replication_factor } => *replication_factor >= nodes.len(),
            Strategy::NetworkTopologyStrategy { datacenter_repfactors } => nodes.iter().all(|n| {
                let dc = n.datacenter.as_deref().unwrap_or_default();
                let in_dc = nodes.iter().filter(|m| m.datacenter.as_deref().unwrap_or_default() == dc).count();
                datacenter_repfactors.get(dc).is_some_and(|rf| *rf >= in_dc)
            }),
            _ => false,
        }
    }

    /// Single-column keys by `IN` of up to [`IN_CHUNK`] partitions per request, at most `concurrency`
    /// requests in flight.
    async fn read_in<'k>(
        &self,
        session: &Session,
        entity: &EntityLayout,
        table: &str,
        present: &[u16],
        unique: &[(&'k str, Vec<String>)],
    ) -> Result<Vec<(&'k str, Option<Vec<Bytes>>)>> {
        let stmt = self.statement(session, Kind::ReadIn, entity, present).await?;
        let by_value: HashMap<&str, &'k str> = unique.iter().map(|(k, v)| (v[0].as_str(), *k)).collect();
        let chunks: Vec<_> = unique
            .chunks(IN_CHUNK)
            .map(|chunk| {
                let values: Vec<&str> = chunk.iter().map(|(_, v)| v[0].as_str()).collect();
                self.read_chunk(session, &stmt, table, values)
            })
            .collect();
        let parts: Vec<Vec<(String, Vec<Bytes>)>> =
            stream::iter(chunks).buffer_unordered(self.config.concurrency).try_collect().await?;
        let mut rows = Vec::with_capacity(unique.len());
        for (value, blocks) in parts.into_iter().flatten() {
            let key = by_value.get(value.as_str()).ok_or_else(|| {
                Error::corrupt(format!("{}: read of {table}: a row for key {value:?}, not asked for", self.describe()))
            })?;
            rows.push((*key, Some(blocks)));
        }
        Ok(rows)
    }

    /// The rows of one `IN` request: key value, then the blocks.
    async fn read_chunk(
        &self,
        session: &Session,
        stmt: &PreparedStatement,
        table: &str,
        values: Vec<&str>,
    ) -> Result<Vec<(String, Vec<Bytes>)>> {
        let corrupt = |e: &dyn std::fmt::Display| Error::corrupt(format!("{}: read of {table}: {e}", self.describe()));
        let result = session.execute_unpaged(stmt, (values,)).await.map_err(|e| self.error("read", &e))?;
        let rows = result.into_rows_result().map_err(|e| corrupt(&e))?;
        let mut out = Vec::with_capacity(rows.rows_num());
        for row in rows.rows::<Row>().map_err(|e| corrupt(&e))? {
            let mut cells = row.map_err(|e| corrupt(&e))?.columns.into_iter();
            let Some(Some(CqlValue::Text(value))) = cells.next() else {
                return Err(corrupt(&"a row without its key"));
            };
            out.push((value, cells.map(|c| blob(c).map_err(|e| corrupt(&e))).collect::<Result<Vec<Bytes>>>()?));
        }
        Ok(out)
    }

    /// One key's row (None: no row).
    async fn read_key<'k>(
        &self,
        session: &Session,
        stmt: &PreparedStatement,
        table: &str,
        key: &'k str,
        values: &[String],
    ) -> Result<(&'k str, Option<Vec<Bytes>>)> {
        let binds: Vec<Bind<'_>> = values.iter().map(|v| Bind::Text(v)).collect();
        let result = session.execute_unpaged(stmt, &binds).await.map_err(|e| self.error("read", &e))?;
        Ok((key, self.row_blocks(table, result)?))
    }

    /// One key's `UPDATE` of the cells of `blocks`.
    async fn write_key(
        &self,
        session: &Session,
        stmt: &PreparedStatement,
        ttl: i32,
        values: &[String],
        blocks: &[(u16, &[u8])],
    ) -> Result<()> {
        let mut binds: Vec<Bind<'_>> = Vec::with_capacity(1 + blocks.len() + values.len());
        binds.push(Bind::Int(ttl));
        binds.extend(blocks.iter().map(|&(_, b)| Bind::Blob(b)));
        binds.extend(values.iter().map(|v| Bind::Text(v)));
        session.execute_unpaged(stmt, &binds).await.map(|_| ()).map_err(|e| self.error("write", &e))
    }

    /// The blocks of a single-partition `SELECT`'s row (None: no row); a cell that is not a blob is
    /// corrupt.
    fn row_blocks(
        &self,
        table: &str,
        result: scylla::response::query_result::QueryResult,
    ) -> Result<Option<Vec<Bytes>>> {
        let corrupt = |e: &dyn std::fmt::Display| Error::corrupt(format!("{}: read of {table}: {e}", self.describe()));
        let rows = result.into_rows_result().map_err(|e| corrupt(&e))?;
        let Some(row) = rows.maybe_first_row::<Row>().map_err(|e| corrupt(&e))? else {
            return Ok(None);
        };
        row.columns
            .into_iter()
            .map(|cell| blob(cell).map_err(|e| corrupt(&e)))
            .collect::<Result<Vec<Bytes>>>()
            .map(Some)
    }

    async fn write_all(&self, entity: &EntityLayout, writes: &[BlockWrite<'_>]) -> Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        self.table(entity)?;
        // Later writes of the same (key, FG) win, as in the other stores.
        let mut last: HashMap<(&str, u16), &BlockWrite<'_>> = HashMap::with_capacity(writes.len());
        let mut order: Vec<(&str, u16)> = Vec::with_capacity(writes.len());
        for w in writes {
            if last.insert((w.key, w.fg_id), w).is_none() {
                order.push((w.key, w.fg_id));
            }
        }
        // FGs of one key with the same expiry go in one UPDATE (one mutation of one partition).
        let now = unix_now();
        let mut groups: Vec<UpdateGroup<'_>> = Vec::new();
        let mut group_of: HashMap<(&str, u64), usize> = HashMap::new();
        for key_fg in &order {
            let w = last[key_fg];
            let g = if let Some(&g) = group_of.get(&(w.key, w.expires_at)) {
                g
            } else {
                let values = Self::key_values(entity, w.key)?;
                if values.len() == 1 && values[0].is_empty() {
                    return Err(Error::InvalidInput(format!(
                        "entity {:?}: Cassandra cannot store an empty key value",
                        entity.label
                    )));
                }
                groups.push((values, w.expires_at, Vec::new()));
                group_of.insert((w.key, w.expires_at), groups.len() - 1);
                groups.len() - 1
            };
            groups[g].2.push((w.fg_id, w.block));
        }
        let session = self.session().await?;
        let mut fg_ids: Vec<u16> = order.iter().map(|&(_, f)| f).collect();
        fg_ids.sort_unstable();
        fg_ids.dedup();
        if self.present(&session, &entity.label, &fg_ids).await?.len() < fg_ids.len() {
            self.ensure_columns(&session, entity, &fg_ids).await?;
        }
        let mut statements = Vec::with_capacity(groups.len());
        for (values, expires_at, mut blocks) in groups {
            blocks.sort_unstable_by_key(|&(f, _)| f);
            let ids: Vec<u16> = blocks.iter().map(|&(f, _)| f).collect();
            let stmt = self.statement(&session, Kind::Write, entity, &ids).await?;
            let ttl = match expires_at {
                0 => 0,
                e if e.saturating_sub(now) > MAX_TTL => 0,
                e => e.saturating_sub(now).max(1),
            };
            statements.push((stmt, ttl as i32, values, blocks));
        }
        let writes: Vec<_> = statements
            .iter()
            .map(|(stmt, ttl, values, blocks)| self.write_key(&session, stmt, *ttl, values, blocks))
            .collect();
        stream::iter(writes).buffer_unordered(self.config.concurrency).try_collect::<Vec<()>>().await?;
        Ok(())
    }
}

/// A block cell's bytes (null: empty); anything but a blob is refused (the message says what it holds).
fn blob(cell: Option<CqlValue>) -> std::result::Result<Bytes, String> {
    match cell {
        Some(CqlValue::Blob(b)) => Ok(Bytes::from(b)),
        None | Some(CqlValue::Empty) => Ok(Bytes::new()),
        Some(other) => Err(format!("a block cell holds {other:?}, not a blob")),
    }
}

/// A schema statement (DDL, `system_schema`, `system.local`) at consistency `ONE`: schema tables are
/// node-local, so the data's consistency levels (which a small cluster may not meet) do not apply.
fn system(cql: impl Into<String>) -> Statement {
    let mut statement = Statement::new(cql.into());
    statement.set_consistency(Consistency::One);
    statement
}

/// `host:port`, bracketing an IPv6 address.
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn is_fg_column(name: &str) -> bool {
    name.strip_prefix("fg_").is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

/// The data centre of the node at the first contact point (what `cassandra-driver`'s DC-aware policy
/// prefers when none is named), if the cluster metadata names one.
async fn first_contact_dc(session: &Session, host: &str, port: u16) -> Option<String> {
    let addrs: Vec<std::net::IpAddr> = tokio::net::lookup_host((host, port)).await.ok()?.map(|a| a.ip()).collect();
    let state = session.get_cluster_state();
    state.get_nodes_info().iter().find(|n| addrs.contains(&n.address.ip())).and_then(|n| n.datacenter.clone())
}

impl BlockStore for CassandraStore {
    fn describe(&self) -> String {
        format!("cassandra {}:{}/{}", self.config.hosts.join(","), self.config.port, self.config.keyspace)
    }

    fn ensure<'a>(&'a self, entities: &'a [EntityLayout]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            for e in entities {
                self.table(e)?;
            }
            let session = self.session().await?;
            for e in entities {
                self.ensure_columns(&session, e, &e.fg_ids).await?;
            }
            Ok(())
        })
    }

    fn read<'a>(
        &'a self,
        entity: &'a EntityLayout,
        keys: &'a [&'a str],
        fg_ids: &'a [u16],
    ) -> BoxFuture<'a, Result<Vec<Bytes>>> {
        Box::pin(self.read_all(entity, keys, fg_ids))
    }

    fn write<'a>(&'a self, entity: &'a EntityLayout, writes: &'a [BlockWrite<'a>]) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.write_all(entity, writes))
    }

    fn ping(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let session = self.session().await?;
            session
                .query_unpaged(system("SELECT release_version FROM system.local"), ())
                .await
                .map(|_| ())
                .map_err(|e| self.error("ping", &e))
        })
    }

    fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::Release);
        // Dropping the last handle closes the connections; calls in flight hold their own.
        let session = self.session.lock().expect("cassandra session lock").take();
        drop(session);
        self.prepared.lock().expect("cassandra statements lock").clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consistency_levels_by_name() {
        assert_eq!(consistency("local_quorum").unwrap(), Consistency::LocalQuorum);
        assert_eq!(consistency("ONE").unwrap(), Consistency::One);
        let err = consistency("MOST").unwrap_err().to_string();
        assert!(err.contains("MOST") && err.contains("LOCAL_ONE"), "{err}");
        for name in CONSISTENCY_LEVELS {
            consistency(name).unwrap();
        }
    }

    #[test]
    fn failures_another_node_may_not_have_are_retried() {
        let db = |e: DbError| RequestAttemptError::DbError(e, String::new());
        assert!(retryable(&db(DbError::Overloaded)));
        assert!(retryable(&db(DbError::Unavailable { consistency: Consistency::Quorum, required: 2, alive: 1 })));
        assert!(retryable(&db(DbError::IsBootstrapping)));
        assert!(retryable(&RequestAttemptError::UnableToAllocStreamId));
        assert!(!retryable(&db(DbError::Invalid)));
        assert!(!retryable(&db(DbError::SyntaxError)));
        assert!(!retryable(&db(DbError::Unauthorized)));
        let config = CassandraConfig::new(vec!["h".into()], 9042, "ofs");
        assert_eq!((config.retries, config.speculative_delay), (2, None));
    }

    #[test]
    fn names_and_settings_are_checked() {
        let bad = CassandraStore::new(CassandraConfig::new(vec!["h".into()], 9042, "bad-name")).unwrap_err();
        assert!(bad.to_string().contains("keyspace"), "{bad}");
        assert!(CassandraStore::new(CassandraConfig::new(vec![], 9042, "ofs")).is_err());
        assert!(CassandraStore::new(CassandraConfig::new(vec!["h".into()], 0, "ofs")).is_err());
        let store = CassandraStore::new(CassandraConfig::new(vec!["h".into()], 9042, "ofs")).unwrap();
        assert_eq!(store.describe(), "cassandra h:9042/ofs");
        let entity = EntityLayout { label: "has-dash".into(), key_columns: vec!["k".into()], fg_ids: vec![1] };
        assert!(store.table(&entity).unwrap_err().to_string().contains("table name"));
        assert!(is_fg_column("fg_12") && !is_fg_column("fg_") && !is_fg_column("fg_x") && !is_fg_column("user"));
        assert_eq!(join_host_port("::1", 9042), "[::1]:9042");
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn keys_split_into_their_columns() {
        let entity = EntityLayout { label: "t".into(), key_columns: vec!["a".into(), "b".into()], fg_ids: vec![] };
        assert_eq!(CassandraStore::key_values(&entity, "x\\|y|z").unwrap(), vec!["x|y", "z"]);
        assert!(CassandraStore::key_values(&entity, "x").is_err());
    }

    #[test]
    fn unreachable_cluster_is_unavailable_not_missing() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut config = CassandraConfig::new(vec!["127.0.0.1".into()], port, "ofs_down");
        config.connect_timeout = Duration::from_millis(300);
        let store = CassandraStore::new(config).unwrap();
        let entity = EntityLayout { label: "t".into(), key_columns: vec!["k".into()], fg_ids: vec![1] };
        let err = runtime::block_on(store.read(&entity, &["a"], &[1])).unwrap_err();
        assert!(matches!(err, Error::Unavailable(_)), "{err}");
        let w = [BlockWrite { key: "a", fg_id: 1, block: b"x", expires_at: 0 }];
        assert!(matches!(runtime::block_on(store.write(&entity, &w)), Err(Error::Unavailable(_))));
        assert!(matches!(runtime::block_on(store.ping()), Err(Error::Unavailable(_))));
        store.close();
        assert!(runtime::block_on(store.ping()).unwrap_err().to_string().contains("closed"));
    }
}
