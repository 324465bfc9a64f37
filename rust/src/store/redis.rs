//! Redis (standalone or Redis Cluster) as a store: one CSDB value per entity key holding all its FGs.
//!
//! The value of `ofs:s:<entity>:<key>` (entity label escaped like key values, then the canonical key
//! string) is a CSDB: `[layout][fg id u16][len u16|u32][PSDB]…`; the distributed cache uses `ofs:c:…`,
//! so both can share one Redis. These are the names and bytes the Python store wrote, so existing data
//! stays readable.
//!
//! - **Writes** run a server-side Lua script per key ([`MERGE_SCRIPT`], `EVALSHA`, loaded again when a
//!   node forgot it) that replaces the written FG entries inside the value atomically: concurrent
//!   writers of different FGs of one key never lose each other's update. The script drops entries
//!   whose PSDB header says they expired and sets the key's expiry to the latest entry's (`PEXPIREAT`),
//!   none if an entry never expires, so Redis deletes a key once all its FGs have expired. A value that
//!   is not a CSDB fails the write with [`Error::Corrupt`] and stays as it was. Standalone: one
//!   pipeline; cluster: every key's call in flight at once, pipelined per node.
//! - **Reads** are one `MGET` of the distinct keys (on a cluster split by the client into one `MGET` per
//!   slot, sent to the nodes concurrently) and a CSDB lookup per value, the blocks sliced out of the
//!   reply without copying. An expired entry inside a live value is returned as stored, for the
//!   decoder to reject (its header carries the expiry).
//! - **Failures**: connection errors and timeouts are [`Error::Unavailable`]; a cluster node that fails
//!   mid-read fails the read (never "missing").

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use redis::{Cmd, RedisError, Script};

use crate::csdb;
use crate::error::{Error, Result};
use crate::expiry::unix_now;
use crate::keys::push_escaped;
use crate::store::redis_conn::{is_reply, mget, run_script, Redis, RedisSettings};
use crate::store::{BlockStore, BlockWrite, BoxFuture, EntityLayout};

/// The merge script (the one the Python store ran: same behaviour, same SHA).
pub const MERGE_SCRIPT: &str = include_str!("redis_merge.lua");

/// Key namespace of stored values (`ofs:s:…`); the distributed cache uses `ofs:c:…`.
pub const NAMESPACE: &str = "s";

/// `ofs:<namespace>:<escaped entity label>:`: a key's Redis name is this followed by its canonical
/// key string.
pub fn key_prefix(namespace: &str, entity: &str) -> String {
    let mut out = format!("ofs:{namespace}:");
    push_escaped(&mut out, entity);
    out.push(':');
    out
}

/// The Redis store.
#[derive(Debug)]
pub struct RedisStore {
    redis: Redis,
    script: Script,
    wait: Option<Wait>,
}

/// A write is acknowledged once this many replicas of each master it wrote to hold it (`WAIT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    pub replicas: u32,
    pub timeout: Duration,
}

impl RedisStore {
    /// A store on `settings` (connects on first use).
    pub fn open(settings: &RedisSettings) -> Result<RedisStore> {
        Ok(RedisStore { redis: Redis::open(settings)?, script: Script::new(MERGE_SCRIPT), wait: None })
    }

    /// Writes end with `WAIT replicas timeout` on the connection that made them, and fail unless that
    /// many replicas (of every master, on a cluster) acknowledged them in time: a master that dies
    /// after acknowledging a write then cannot take it with it, since the replica that takes over holds
    /// it. Replication stays asynchronous for everything else; a failed wait leaves the write applied
    /// on the master (a retry rewrites the same blocks).
    #[must_use]
    pub fn with_wait(mut self, wait: Option<Wait>) -> RedisStore {
        self.wait = wait.filter(|w| w.replicas > 0);
        self
    }

    fn error(&self, what: &str, e: &RedisError) -> Error {
        redis_error(&format!("redis store {}", self.redis.place()), what, e)
    }

    async fn write_calls(&self, calls: &[Cmd]) -> Result<()> {
        let wait = self.wait;
        let (replies, acked) = self
            .redis
            .with_retries(|mut conn| async move {
                let replies = run_script(&mut conn, MERGE_SCRIPT, calls).await?;
                let Some(w) = wait else { return Ok((replies, None)) };
                // On a cluster the client sends WAIT to every master and answers the smallest count.
                let timeout_ms = w.timeout.as_millis().max(1) as u64;
                let acked: i64 = redis::FromRedisValue::from_redis_value(
                    &conn.query(redis::cmd("WAIT").arg(w.replicas).arg(timeout_ms)).await?,
                )?;
                Ok((replies, Some(acked)))
            })
            .await
            .map_err(|e| self.error("write", &e))?;
        if let Some(e) = replies.into_iter().find_map(std::result::Result::err) {
            return Err(self.error("write", &e));
        }
        match (wait, acked) {
            (Some(w), Some(n)) if n < i64::from(w.replicas) => Err(Error::Unavailable(format!(
                "redis store {}: write reached {n} replica(s) of the {} asked (wait_replicas) within {} ms",
                self.redis.place(),
                w.replicas,
                w.timeout.as_millis()
            ))),
            _ => Ok(()),
        }
    }
}

/// A redis-rs error as the core's: an `OFSCORRUPT` error reply of a script is [`Error::Corrupt`],
/// anything else (connection, timeout, other error replies) [`Error::Unavailable`].
pub fn redis_error(place: &str, what: &str, e: &RedisError) -> Error {
    if is_reply(e) && e.code() == Some("OFSCORRUPT") {
        return Error::Corrupt(format!("{place}: {what}: {}", e.detail().unwrap_or_default()));
    }
    Error::Unavailable(format!("{place}: {what} failed: {e}"))
}

impl BlockStore for RedisStore {
    fn describe(&self) -> String {
        format!("redis store {}", self.redis.place())
    }

    fn ensure<'a>(&'a self, _entities: &'a [EntityLayout]) -> BoxFuture<'a, Result<()>> {
        // Nothing to create: values appear on first write.
        Box::pin(async { Ok(()) })
    }

    fn read<'a>(
        &'a self,
        entity: &'a EntityLayout,
        keys: &'a [&'a str],
        fg_ids: &'a [u16],
    ) -> BoxFuture<'a, Result<Vec<Bytes>>> {
        Box::pin(async move {
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            let prefix = key_prefix(NAMESPACE, &entity.label);
            let mut index: HashMap<&str, usize> = HashMap::with_capacity(keys.len());
            let mut names: Vec<Vec<u8>> = Vec::with_capacity(keys.len());
            let slots: Vec<usize> = keys
                .iter()
                .map(|k| {
                    *index.entry(k).or_insert_with(|| {
                        names.push(format!("{prefix}{k}").into_bytes());
                        names.len() - 1
                    })
                })
                .collect();
            let names_ref = &names;
            let values = self
                .redis
                .with_retries(|mut conn| async move { mget(&mut conn, names_ref).await })
                .await
                .map_err(|e| self.error("read", &e))?;
            let n = fg_ids.len();
            let mut rows: Vec<Vec<Bytes>> = Vec::with_capacity(values.len());
            for (name, value) in names.iter().zip(values) {
                let mut row = vec![Bytes::new(); n];
                if let Some(value) = value.filter(|_| n > 0) {
                    let mut found = vec![None; n];
                    csdb::lookup(&value, fg_ids, &mut found).map_err(|e| {
                        let name = String::from_utf8_lossy(name);
                        Error::Corrupt(format!("{}: value of {name}: {e}", self.describe()))
                    })?;
                    for (out, block) in row.iter_mut().zip(&found) {
                        if let Some(block) = block {
                            *out = value.slice_ref(block);
                        }
                    }
                }
                rows.push(row);
            }
            Ok(slots.iter().flat_map(|&s| rows[s].iter().cloned()).collect())
        })
    }

    fn write<'a>(&'a self, entity: &'a EntityLayout, writes: &'a [BlockWrite<'a>]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if writes.is_empty() {
                return Ok(());
            }
            let now = unix_now();
            let prefix = key_prefix(NAMESPACE, &entity.label);
            let sha = self.script.get_hash();
            let mut index: HashMap<&str, usize> = HashMap::new();
            let mut calls: Vec<Cmd> = Vec::new();
            for w in writes {
                let i = *index.entry(w.key).or_insert_with(|| {
                    let mut cmd = redis::cmd("EVALSHA");
                    cmd.arg(sha).arg(1).arg(format!("{prefix}{}", w.key)).arg(now);
                    calls.push(cmd);
                    calls.len() - 1
                });
                // Later entries of the same FG win inside the script (it applies them in order).
                calls[i].arg(w.fg_id).arg(w.expires_at).arg(w.block);
            }
            self.write_calls(&calls).await
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let ping = redis::cmd("PING");
            let ping = &ping;
            self.redis
                .with_retries(|mut conn| async move { conn.query(ping).await })
                .await
                .map_err(|e| self.error("ping", &e))?;
            Ok(())
        })
    }

    fn close(&self) {
        self.redis.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_python_store() {
        assert_eq!(key_prefix("s", "user"), "ofs:s:user:");
        assert_eq!(key_prefix("c", "x:y"), "ofs:c:x\\:y:");
    }

    #[test]
    fn script_errors_classify() {
        let corrupt = redis::make_extension_error("OFSCORRUPT".into(), Some("CSDB layout 7".into()));
        let e = redis_error("redis store x", "write", &corrupt);
        assert_eq!(e.kind(), crate::ErrorKind::Corrupt, "{e}");
        assert!(e.to_string().contains("CSDB layout 7"));
        let io = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(redis_error("redis store x", "read", &io).kind(), crate::ErrorKind::Unavailable);
    }
}
