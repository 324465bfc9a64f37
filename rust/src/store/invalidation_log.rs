//! The writing end of the invalidation log of the processes of one host (`cache/invalidation.py`
//! `SqliteInvalidationLog`): one row per strong-mode write, `(at, source, entity, keys)`, which every
//! process polls. The reading end, and which source this process is, stay Python's; the core appends
//! the rows of the writes it makes itself (the serving front's persists), with the same table, the same
//! row format and the same pruning, so a poller cannot tell the two writers apart.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection};

use crate::error::{Error, Result};

/// The table, as `SqliteInvalidationLog._connect` creates it.
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS invalidations (id INTEGER PRIMARY KEY AUTOINCREMENT, \
                      at REAL NOT NULL, source TEXT NOT NULL, entity TEXT NOT NULL, keys TEXT NOT NULL)";

/// How long an append waits for another process's write lock (the Python writer's `timeout`).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Appends invalidations to the log in `path` as `source`; shared by every writing thread.
#[derive(Debug)]
pub struct InvalidationLog {
    path: PathBuf,
    source: String,
    retention_seconds: f64,
    writer: Mutex<Writer>,
}

#[derive(Debug)]
struct Writer {
    /// The connection and the process that opened it (a connection never crosses `fork()`).
    conn: Option<(Connection, u32)>,
    last_prune: f64,
}

fn unix_seconds() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

impl InvalidationLog {
    /// The log in `path`, written as `source` (the Python log's own, so its poller skips these rows),
    /// pruning rows older than `retention_seconds` now and then. Opens nothing yet.
    pub fn new(path: impl AsRef<Path>, source: &str, retention_seconds: f64) -> InvalidationLog {
        InvalidationLog {
            path: path.as_ref().to_path_buf(),
            source: source.to_owned(),
            retention_seconds,
            writer: Mutex::new(Writer { conn: None, last_prune: 0.0 }),
        }
    }

    /// Names the log in messages.
    pub fn describe(&self) -> String {
        format!("invalidation log {}", self.path.display())
    }

    fn connect(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open(&self.path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
        // Invalidations matter only to live processes: a crash of the host loses their caches too.
        conn.execute_batch("PRAGMA synchronous=OFF")?;
        conn.execute_batch(SCHEMA)?;
        Ok(conn)
    }

    /// Appends the invalidation of `keys` of `entity` (and prunes old rows once per quarter of the
    /// retention). Blocks up to the busy timeout; an error names the log (the write it follows has
    /// succeeded: the other processes' caches then expire by their TTL).
    pub fn publish(&self, entity: &str, keys: &[&str]) -> Result<()> {
        let fail = |e: &dyn std::fmt::Display| Error::Unavailable(format!("{} not written: {e}", self.describe()));
        let doc = serde_json::to_string(keys).map_err(|e| fail(&e))?;
        let now = unix_seconds();
        let mut writer = self.writer.lock().expect("invalidation log lock");
        let pid = std::process::id();
        if writer.conn.as_ref().is_some_and(|(_, owner)| *owner != pid) {
            // Opened by the parent before a fork: left alone, not even closed.
            if let Some((conn, _)) = writer.conn.take() {
                std::mem::forget(conn);
            }
        }
        let conn = if let Some((conn, _)) = writer.conn.take() {
            conn
        } else {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
            }
            self.connect().map_err(|e| fail(&e))?
        };
        let appended = conn
            .prepare_cached("INSERT INTO invalidations (at, source, entity, keys) VALUES (?1, ?2, ?3, ?4)")
            .and_then(|mut stmt| stmt.execute(params![now, self.source, entity, doc]));
        // A connection that failed is dropped: the next append opens another.
        appended.map_err(|e| fail(&e))?;
        let pruned = if now - writer.last_prune > self.retention_seconds / 4.0 {
            writer.last_prune = now;
            conn.execute("DELETE FROM invalidations WHERE at < ?1", params![now - self.retention_seconds])
        } else {
            Ok(0)
        };
        writer.conn = Some((conn, pid));
        pruned.map_err(|e| fail(&e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(path: &Path) -> Vec<(String, String, String)> {
        let conn = Connection::open(path).unwrap();
        let mut stmt = conn.prepare("SELECT source, entity, keys FROM invalidations ORDER BY id").unwrap();
        let got = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap();
        got.map(|r| r.unwrap()).collect()
    }

    #[test]
    fn appends_rows_as_the_python_log_writes_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("invalidations.db");
        let log = InvalidationLog::new(&path, "me", 60.0);
        log.publish("user", &["u1", "quote\"and\\slash", "tab\tnl\n"]).unwrap();
        log.publish("shop", &[]).unwrap();
        let got = rows(&path);
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].0.as_str(), got[0].1.as_str()), ("me", "user"));
        let keys: Vec<String> = serde_json::from_str(&got[0].2).unwrap();
        assert_eq!(keys, ["u1", "quote\"and\\slash", "tab\tnl\n"]);
        assert_eq!(got[1].2, "[]");
    }

    #[test]
    fn prunes_rows_past_the_retention() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("invalidations.db");
        let log = InvalidationLog::new(&path, "me", 60.0);
        log.publish("user", &["a"]).unwrap();
        let conn = Connection::open(&path).unwrap();
        conn.execute("UPDATE invalidations SET at = at - 3600", []).unwrap();
        log.writer.lock().unwrap().last_prune = 0.0;
        log.publish("user", &["b"]).unwrap();
        let got = rows(&path);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].2, "[\"b\"]");
    }

    #[test]
    fn a_log_it_cannot_open_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        std::fs::write(&file, b"not a directory").unwrap();
        let log = InvalidationLog::new(file.join("invalidations.db"), "me", 60.0);
        let err = log.publish("user", &["a"]).unwrap_err();
        assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
        assert!(err.to_string().contains("invalidation log") && err.to_string().contains("plain"), "{err}");
    }
}
