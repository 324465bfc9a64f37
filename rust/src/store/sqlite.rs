//! The embedded store: one `SQLite` file in WAL mode, durable once `write` returns. The file is the one
//! the Python store wrote before it moved here (same table, same key strings, same pragmas), so
//! existing data directories keep working.
//!
//! Layout: one table `blocks(entity, key, fg_id, block, expires_at)` keyed by `(entity, key, fg_id)`,
//! `WITHOUT ROWID`, where `key` is the canonical key string ([`crate::keys`]). WAL lets several
//! processes read while one writes; `synchronous=FULL` fsyncs the WAL at each commit, so an acknowledged
//! write survives kill -9 and power loss. Expired rows are hidden on read; [`SqliteStore::purge_expired`]
//! deletes them all, and writes run [`SqliteStore::sweep_step`] once per `purge_interval`, deleting the
//! expired rows among the next [`SWEEP_ROWS`] rows in key order, wrapping around. There is no index on
//! the expiry: keeping one cost ~2 µs of CPU per written row, while the sweep costs milliseconds a
//! minute.
//!
//! Reads are one statement whatever the number of keys and FGs: `key IN rarray(?)` binds the keys as
//! one array (`SQLite`'s carray extension), so the statement is prepared once per connection and never
//! meets the variable limit. Writes are one `BEGIN IMMEDIATE` transaction of single-row upserts of one
//! cached statement. Connections are pooled (one per concurrent caller), and a pool used after `fork()`
//! leaves the parent's connections alone and opens its own.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rusqlite::types::Value;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};

use crate::error::{Error, Result};
use crate::store::{BlockStore, BlockWrite, BoxFuture, EntityLayout};

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS blocks (
        entity TEXT NOT NULL,
        key TEXT NOT NULL,
        fg_id INTEGER NOT NULL,
        block BLOB NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (entity, key, fg_id)
    ) WITHOUT ROWID;
    DROP INDEX IF EXISTS blocks_expiry;";
// Files written before the sweep replaced it had an expiry index, which every write paid for: dropped.

const READ: &str = "SELECT key, fg_id, block FROM blocks WHERE entity = ?1 AND key IN rarray(?2) \
                    AND fg_id IN rarray(?3) AND (expires_at = 0 OR expires_at >= ?4)";
const UPSERT: &str = "INSERT INTO blocks(entity, key, fg_id, block, expires_at) VALUES (?1, ?2, ?3, ?4, ?5) \
                      ON CONFLICT(entity, key, fg_id) DO UPDATE SET block = excluded.block, expires_at = excluded.expires_at";
const PURGE: &str = "DELETE FROM blocks WHERE expires_at > 0 AND expires_at < ?1";
const SWEEP_END: &str = "SELECT entity, key, fg_id FROM blocks WHERE (entity, key, fg_id) > (?1, ?2, ?3) \
                         ORDER BY entity, key, fg_id LIMIT 1 OFFSET ?4";
const SWEEP_SLICE: &str = "DELETE FROM blocks WHERE (entity, key, fg_id) > (?1, ?2, ?3) \
                           AND (entity, key, fg_id) <= (?4, ?5, ?6) AND expires_at > 0 AND expires_at < ?7";
const SWEEP_TAIL: &str =
    "DELETE FROM blocks WHERE (entity, key, fg_id) > (?1, ?2, ?3) AND expires_at > 0 AND expires_at < ?4";

/// Rows one opportunistic sweep step looks at: ~20 ms for rows of 265-byte blocks (a 1M-row table is
/// swept every 20 minutes at the default `purge_interval`).
pub const SWEEP_ROWS: u64 = 50_000;

/// Idle connections kept for reuse; more concurrent callers open more, closed when they are done.
const MAX_IDLE: usize = 16;

/// Where the sweep is: after this (entity, key, fg id). Entity labels are never empty, so the start is
/// before every row.
type SweepPoint = (String, String, i64);

fn sweep_start() -> SweepPoint {
    (String::new(), String::new(), -1)
}

#[derive(Debug)]
struct Pool {
    pid: u32,
    idle: Vec<Connection>,
    closed: bool,
}

/// FG blocks in one `SQLite` file; shared by any number of threads, opened by any number of processes.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    busy_timeout: Duration,
    purge_interval: Option<Duration>,
    pool: Mutex<Pool>,
    next_purge: Mutex<Instant>,
    sweep_from: Mutex<SweepPoint>,
}

/// Seconds since the unix epoch.
fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl SqliteStore {
    /// Opens (creating it and its directory when missing) the store in `path`. `busy_timeout`: how long
    /// a write waits for another process's write lock before failing; `purge_interval`: time between
    /// sweep steps run by writes (zero: only [`SqliteStore::purge_expired`]).
    pub fn open(path: impl AsRef<Path>, busy_timeout: Duration, purge_interval: Duration) -> Result<SqliteStore> {
        let path = path.as_ref().to_path_buf();
        let store = SqliteStore {
            busy_timeout,
            purge_interval: (!purge_interval.is_zero()).then_some(purge_interval),
            pool: Mutex::new(Pool { pid: std::process::id(), idle: Vec::new(), closed: false }),
            next_purge: Mutex::new(Instant::now() + purge_interval),
            sweep_from: Mutex::new(sweep_start()),
            path,
        };
        if let Some(dir) = store.path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Unavailable(format!("{}: open failed: {e}", store.describe())))?;
        }
        store.with_conn("open", |c| c.execute_batch(SCHEMA))?;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn connect(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open(&self.path)?;
        conn.busy_timeout(self.busy_timeout)?;
        // journal_mode answers with the mode: read it as a row.
        conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
        conn.execute_batch("PRAGMA synchronous=FULL")?;
        rusqlite::vtab::array::load_module(&conn)?;
        Ok(conn)
    }

    /// A pooled connection (opened when none is idle).
    fn take(&self) -> Result<Connection> {
        let mut pool = self.pool.lock().expect("sqlite pool lock");
        if pool.closed {
            return Err(Error::Unavailable(format!("{} is closed", self.describe())));
        }
        let pid = std::process::id();
        if pool.pid != pid {
            // A connection must never cross fork(): the child leaves the parent's alone (not even
            // closing them, which could touch the parent's locks) and opens its own.
            for conn in pool.idle.drain(..) {
                std::mem::forget(conn);
            }
            pool.pid = pid;
        }
        if let Some(conn) = pool.idle.pop() {
            return Ok(conn);
        }
        drop(pool);
        self.connect().map_err(|e| self.error("open", &e))
    }

    fn give_back(&self, conn: Connection) {
        let mut pool = self.pool.lock().expect("sqlite pool lock");
        if !pool.closed && pool.pid == std::process::id() && pool.idle.len() < MAX_IDLE {
            pool.idle.push(conn);
        }
    }

    /// `f` on a pooled connection; its errors are mapped ([`SqliteStore::error`]) with `what` the call.
    fn with_conn<T>(&self, what: &str, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T> {
        let mut conn = self.take()?;
        let out = f(&mut conn).map_err(|e| self.error(what, &e));
        self.give_back(conn);
        out
    }

    /// `SQLite`'s failures as the core's: a value over `SQLite`'s length limit is bad input, a stored
    /// key that is not text is corrupt, anything else (locked past the busy timeout, I/O, not a
    /// database) means the store cannot answer.
    fn error(&self, what: &str, e: &rusqlite::Error) -> Error {
        match e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::TooBig => {
                Error::InvalidInput(format!("{}: {what}: {e}", self.describe()))
            }
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::Utf8Error(..) => Error::corrupt(format!("{}: {what}: {e}", self.describe())),
            _ => Error::Unavailable(format!("{}: {what} failed: {e}", self.describe())),
        }
    }

    /// The blocks of `fg_ids` for `keys` (canonical key strings), key-major; empty where nothing live is
    /// stored.
    pub fn read_blocks(&self, entity: &str, keys: &[&str], fg_ids: &[u16], now: u64) -> Result<Vec<Bytes>> {
        let n = fg_ids.len();
        let mut out = vec![Bytes::new(); keys.len() * n];
        if keys.is_empty() || n == 0 {
            return Ok(out);
        }
        // Each distinct key once; where it goes in the answer.
        let mut at: std::collections::HashMap<&str, Vec<usize>> = std::collections::HashMap::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            at.entry(k).or_default().push(i);
        }
        let key_array: Rc<Vec<Value>> = Rc::new(at.keys().map(|k| Value::Text((*k).to_owned())).collect());
        let fg_array: Rc<Vec<Value>> = Rc::new(fg_ids.iter().map(|&f| Value::Integer(f.into())).collect());
        self.with_conn("read", |conn| {
            let mut stmt = conn.prepare_cached(READ)?;
            let mut rows = stmt.query(params![entity, key_array, fg_array, now as i64])?;
            while let Some(row) = rows.next()? {
                let key = row.get_ref(0)?.as_str()?;
                let fg = row.get::<_, i64>(1)?;
                let block = row.get_ref(2)?.as_blob()?;
                let (Some(indexes), Some(f)) = (at.get(key), fg_ids.iter().position(|&g| i64::from(g) == fg)) else {
                    continue;
                };
                let block = Bytes::copy_from_slice(block);
                for &k in indexes {
                    // Every requested FG at its place (an FG may be requested twice).
                    for (g, &id) in fg_ids.iter().enumerate().skip(f) {
                        if i64::from(id) == fg {
                            out[k * n + g] = block.clone();
                        }
                    }
                }
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// All `writes` in one transaction, fsynced before returning; then a sweep step when one is due.
    pub fn write_blocks(&self, entity: &str, writes: &[BlockWrite<'_>]) -> Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        self.with_conn("write", |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut stmt = tx.prepare_cached(UPSERT)?;
                for w in writes {
                    stmt.execute(params![entity, w.key, w.fg_id, w.block, w.expires_at as i64])?;
                }
            }
            tx.commit()
        })?;
        self.sweep_if_due();
        Ok(())
    }

    /// A sweep step when `purge_interval` has passed since the last. The write that runs it has already
    /// succeeded: a step that fails (another process holds the write lock) leaves the sweep where it
    /// was, and the next one does that slice again.
    fn sweep_if_due(&self) {
        let Some(interval) = self.purge_interval else { return };
        {
            let mut next = self.next_purge.lock().expect("purge clock lock");
            let now = Instant::now();
            if now < *next {
                return;
            }
            *next = now + interval;
        }
        let _ = self.sweep_step(unix_now(), SWEEP_ROWS);
    }

    /// Deletes every row expired at `now` (a scan of the whole table); returns how many.
    pub fn purge_expired(&self, now: u64) -> Result<usize> {
        self.with_conn("purge", |c| c.execute(PURGE, params![now as i64]))
    }

    /// Deletes the rows expired at `now` among the next `rows` rows in key order after the last step's,
    /// starting over after the last row; returns how many.
    pub fn sweep_step(&self, now: u64, rows: u64) -> Result<usize> {
        let mut from = self.sweep_from.lock().expect("sweep lock");
        let (deleted, next) = self.with_conn("purge", |c| {
            let (e, k, f) = &*from;
            let end: Option<SweepPoint> = c
                .query_row(SWEEP_END, params![e, k, f, rows.saturating_sub(1) as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()?;
            match end {
                // The rest of the table: the next step starts over.
                None => Ok((c.execute(SWEEP_TAIL, params![e, k, f, now as i64])?, sweep_start())),
                Some(end) => {
                    let n = c.execute(SWEEP_SLICE, params![e, k, f, end.0, end.1, end.2, now as i64])?;
                    Ok((n, end))
                }
            }
        })?;
        *from = next;
        Ok(deleted)
    }

    /// `PRAGMA name` as a pooled connection sees it (`journal_mode`, `synchronous`, `busy_timeout` …): what the
    /// durability tests check.
    pub fn pragma(&self, name: &str) -> Result<String> {
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(Error::InvalidInput(format!("{name:?} is not a pragma name")));
        }
        self.with_conn("pragma", |c| {
            c.query_row(&format!("PRAGMA {name}"), [], |r| {
                Ok(match r.get_ref(0)? {
                    rusqlite::types::ValueRef::Integer(i) => i.to_string(),
                    other => other.as_str().unwrap_or_default().to_owned(),
                })
            })
        })
    }
}

impl BlockStore for SqliteStore {
    fn describe(&self) -> String {
        format!("sqlite store {}", self.path.display())
    }

    fn blocking(&self) -> bool {
        true
    }

    fn ensure<'a>(&'a self, _entities: &'a [EntityLayout]) -> BoxFuture<'a, Result<()>> {
        // One table holds every entity, created when the store opens.
        Box::pin(std::future::ready(Ok(())))
    }

    fn read<'a>(
        &'a self,
        entity: &'a EntityLayout,
        keys: &'a [&'a str],
        fg_ids: &'a [u16],
    ) -> BoxFuture<'a, Result<Vec<Bytes>>> {
        Box::pin(async move { self.read_blocks(&entity.label, keys, fg_ids, unix_now()) })
    }

    fn write<'a>(&'a self, entity: &'a EntityLayout, writes: &'a [BlockWrite<'a>]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { self.write_blocks(&entity.label, writes) })
    }

    fn ping(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.with_conn("ping", |c| c.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(())))
        })
    }

    fn close(&self) {
        let mut pool = self.pool.lock().expect("sqlite pool lock");
        pool.closed = true;
        if pool.pid == std::process::id() {
            pool.idle.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::runtime::block_on;

    fn store(dir: &tempfile::TempDir) -> SqliteStore {
        SqliteStore::open(dir.path().join("s.db"), Duration::from_secs(1), Duration::ZERO).unwrap()
    }

    fn w<'a>(key: &'a str, fg_id: u16, block: &'a [u8], expires_at: u64) -> BlockWrite<'a> {
        BlockWrite { key, fg_id, block, expires_at }
    }

    #[test]
    fn round_trip_duplicates_missing_and_expired() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let e = EntityLayout { label: "user".into(), key_columns: vec!["id".into()], fg_ids: vec![1, 2] };
        let now = unix_now();
        let writes =
            [w("a", 1, b"a1", 0), w("a", 2, b"a2", now + 100), w("b", 1, b"b1", now - 10), w("a", 1, b"A1", 0)];
        block_on(s.write(&e, &writes)).unwrap();
        let got = block_on(s.read(&e, &["a", "b", "zz", "a"], &[2, 1, 1])).unwrap();
        let got: Vec<&[u8]> = got.iter().map(|b| &b[..]).collect();
        assert_eq!(got, [&b"a2"[..], b"A1", b"A1", b"", b"", b"", b"", b"", b"", b"a2", b"A1", b"A1"]);
        assert_eq!(s.purge_expired(now).unwrap(), 1);
        assert_eq!(s.pragma("journal_mode").unwrap(), "wal");
        assert_eq!(s.pragma("synchronous").unwrap(), "2");
        block_on(s.ping()).unwrap();
        s.close();
        let err = block_on(s.ping()).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Unavailable);
        assert!(err.to_string().contains("is closed"), "{err}");
    }

    #[test]
    fn reads_use_the_primary_key() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let plan: Vec<String> = s
            .with_conn("plan", |c| {
                let keys: Rc<Vec<Value>> = Rc::new(vec![Value::Text("a".into())]);
                let fgs: Rc<Vec<Value>> = Rc::new(vec![Value::Integer(1)]);
                let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {READ}"))?;
                let rows = stmt.query_map(params!["e", keys, fgs, 0], |r| r.get::<_, String>(3))?;
                rows.collect()
            })
            .unwrap();
        assert!(plan.iter().any(|p| p.contains("USING PRIMARY KEY (entity=? AND key=? AND fg_id=?)")), "{plan:?}");
    }

    #[test]
    fn unopenable_files_are_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.db");
        std::fs::write(&garbage, b"this is not a database file".repeat(100)).unwrap();
        let err = SqliteStore::open(&garbage, Duration::from_secs(1), Duration::ZERO).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Unavailable, "{err}");
    }
}
