//! The distributed cache tier on Redis / Redis Cluster: [`RedisCache`] implements
//! [`crate::remote::RemoteTier`] with the protocol of docs/caching.md (the one the Python client had, so
//! processes of both versions can share a cache during an upgrade).
//!
//! One value per entity key, `ofs:c:<entity>:<key>` (the store's are `ofs:s:…`): a CSDB of the key's
//! cached FG blocks as the store returned them; an empty entry is a negative entry.
//! - **Reads**: one `MGET` of the distinct keys (cluster: one per slot, the nodes concurrently). A value
//!   holding every requested FG is a hit; absent, a tombstone, a value that does not parse (reported as
//!   `decode`) or one lacking an FG is a miss.
//! - **Backfill**: queued (bounded: `backfill_queue`; more are dropped and reported) and run by
//!   `backfill_workers` tasks of the core's runtime, off the request path. Each key is set by a
//!   compare-and-set script ([`CAS_SCRIPT`]): only if its value is still the one the read saw, merged
//!   with the FGs that value held, TTL ± jitter per key. A job older than half the tombstone life is
//!   dropped: the tombstone a write left may have expired since the read.
//! - **Invalidation**: the keys become a fresh tombstone (`\x00` + 15 random bytes, `tombstone` long)
//!   and the message is published, in one round trip per node. When Redis cannot be reached, the keys
//!   and the message are kept (at most `pending_limit` each) and sent before any later use of Redis.
//! - **Failures**: every call goes through a [`Breaker`]; a failed or refused call is reported
//!   ([`TierEvents`]) and the caller goes on without the tier (a read answers `None`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::{Cmd, RedisResult, Script};
use tokio::sync::mpsc;

use crate::breaker::Breaker;
use crate::csdb;
use crate::remote::{Backfill, BreakerState, Publish, RemoteLookup, RemoteTier, TierEvents};
use crate::store::redis::key_prefix;
use crate::store::redis_conn::{mget, run_script, Conn, Redis, RedisSettings};
use crate::store::{runtime, BoxFuture};

/// Key namespace of cached values (`ofs:c:…`).
pub const NAMESPACE: &str = "c";

/// First byte of a tombstone; CSDB values start with their layout (1 or 2).
pub const TOMBSTONE: u8 = 0;

/// Sets `KEYS[1]` to `ARGV[2]` (`PX ARGV[3]`) only if its value is still `ARGV[1]` (`''` = absent).
pub const CAS_SCRIPT: &str = "
local cur = redis.call('GET', KEYS[1])
if (cur or '') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
";

/// The settings of a [`RedisCache`] beyond its connection.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    pub redis: RedisSettings,
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// How long the breaker stays open before one trial call.
    pub reset: Duration,
    /// Backfill jobs waiting at most.
    pub backfill_queue: usize,
    /// Tasks running backfills.
    pub backfill_workers: usize,
    /// Life of an invalidation tombstone.
    pub tombstone: Duration,
    /// Keys (and messages) of failed invalidations kept for replay.
    pub pending_limit: usize,
    /// This process's id in published invalidations (its own messages are ignored by its bus).
    pub source: String,
}

#[derive(Debug, Default)]
struct Pending {
    keys: HashSet<Vec<u8>>,
    messages: Vec<(String, Vec<u8>)>,
}

#[derive(Debug)]
struct Shared {
    redis: Redis,
    breaker: Breaker,
    events: Arc<dyn TierEvents>,
    tombstone: Duration,
    pending: Mutex<Pending>,
    has_pending: AtomicBool,
    pending_limit: usize,
    source: String,
    cas_sha: String,
    /// Backfill jobs queued or running.
    backfills: AtomicUsize,
}

/// The Redis distributed cache tier.
#[derive(Debug)]
pub struct RedisCache {
    shared: Arc<Shared>,
    queue: Mutex<Option<mpsc::Sender<Backfill>>>,
}

impl RedisCache {
    /// A cache on `settings` (connects on first use), reporting to `events`; starts its backfill tasks
    /// on the core's runtime.
    pub fn open(settings: &CacheSettings, events: Arc<dyn TierEvents>) -> crate::Result<RedisCache> {
        let shared = Arc::new(Shared {
            redis: Redis::open(&settings.redis)?,
            breaker: Breaker::new(settings.failure_threshold, settings.reset),
            events,
            tombstone: settings.tombstone,
            pending: Mutex::new(Pending::default()),
            has_pending: AtomicBool::new(false),
            pending_limit: settings.pending_limit,
            source: settings.source.clone(),
            cas_sha: Script::new(CAS_SCRIPT).get_hash().to_owned(),
            backfills: AtomicUsize::new(0),
        });
        let (tx, rx) = mpsc::channel::<Backfill>(settings.backfill_queue.max(1));
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..settings.backfill_workers.max(1) {
            let (rx, shared) = (rx.clone(), shared.clone());
            runtime::runtime().spawn(async move {
                loop {
                    let job = rx.lock().await.recv().await;
                    let Some(job) = job else { break };
                    if !shared.redis.is_closed() {
                        shared.backfill(job).await;
                    }
                    shared.backfills.fetch_sub(1, Ordering::AcqRel);
                }
            });
        }
        Ok(RedisCache { shared, queue: Mutex::new(Some(tx)) })
    }

    /// Backfill jobs queued or running.
    pub fn backfills_pending(&self) -> usize {
        self.shared.backfills.load(Ordering::Acquire)
    }

    /// Keys whose invalidation waits for Redis to come back.
    pub fn pending_invalidations(&self) -> usize {
        lock(&self.shared.pending).keys.len()
    }

    /// The breaker's state.
    pub fn breaker_state(&self) -> BreakerState {
        self.shared.breaker.state()
    }

    /// One guarded `PING`: whether Redis answers now (also lets a half-open breaker close).
    pub async fn ping(&self) -> bool {
        self.shared
            .guarded("ping", |mut conn| async move { conn.query(&redis::cmd("PING")).await.map(drop) })
            .await
            .is_some()
    }

    /// The published form of one invalidation: `{"source": …, "entity": …, "keys": […]}`.
    pub fn message(&self, entity: &str, keys: &[&str]) -> Vec<u8> {
        message(&self.shared.source, entity, keys)
    }

    /// Drops queued backfills and the connections; later calls fail (reads answer `None`).
    pub fn close(&self) {
        lock(&self.queue).take();
        self.shared.redis.close();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    fn report(&self, moved: Option<BreakerState>) {
        if let Some(state) = moved {
            self.events.breaker(state);
        }
    }

    /// `call(conn)` through the breaker, pending invalidations replayed first; `None` (reported as an
    /// error of `op`) when the breaker refuses or anything fails.
    async fn guarded<T, F, Fut>(&self, op: &'static str, call: F) -> Option<T>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let (allowed, moved) = self.breaker.allow();
        self.report(moved);
        if !allowed {
            self.events.error(op);
            return None;
        }
        let result = self
            .redis
            .once(|mut conn| async move {
                if self.has_pending.load(Ordering::Acquire) {
                    self.replay(&mut conn).await?;
                }
                call(conn).await
            })
            .await;
        if let Ok(v) = result {
            self.report(self.breaker.success());
            Some(v)
        } else {
            self.report(self.breaker.failure());
            self.events.error(op);
            None
        }
    }

    async fn replay(&self, conn: &mut Conn) -> RedisResult<()> {
        let Pending { keys, messages } = {
            let mut pending = lock(&self.pending);
            self.has_pending.store(false, Ordering::Release);
            std::mem::take(&mut *pending)
        };
        let names: Vec<Vec<u8>> = keys.iter().cloned().collect();
        if let Err(e) = tombstones(conn, &names, &messages, self.tombstone).await {
            let mut pending = lock(&self.pending);
            pending.keys.extend(keys);
            let later = std::mem::replace(&mut pending.messages, messages);
            pending.messages.extend(later);
            self.has_pending.store(true, Ordering::Release);
            return Err(e);
        }
        Ok(())
    }

    fn keep(&self, names: Vec<Vec<u8>>, message: Option<(String, Vec<u8>)>) {
        let mut pending = lock(&self.pending);
        let room = self.pending_limit.saturating_sub(pending.keys.len());
        if room < names.len() || pending.messages.len() >= self.pending_limit {
            // Beyond the bound the cached copies expire by their TTL (docs/caching.md).
            self.events.dropped("invalidate");
        }
        pending.keys.extend(names.into_iter().take(room));
        if let Some(m) = message.filter(|_| pending.messages.len() < self.pending_limit) {
            pending.messages.push(m);
        }
        self.has_pending.store(true, Ordering::Release);
    }

    async fn backfill(&self, job: Backfill) {
        if job.at.elapsed() > self.tombstone / 2 {
            // A write's tombstone may have expired since the read: the compare-and-set could no longer
            // tell a pre-write value from a current one.
            self.events.dropped("backfill");
            return;
        }
        let cmds = backfill_calls(&job, &self.cas_sha);
        if cmds.is_empty() {
            return;
        }
        self.guarded("backfill", |mut conn| async move {
            let replies = run_script(&mut conn, CAS_SCRIPT, &cmds).await?;
            replies.into_iter().find_map(RedisResult::err).map_or(Ok(()), Err)
        })
        .await;
    }
}

/// The compare-and-set calls of one backfill job: one per distinct key, its value the FGs the seen
/// value held merged with the blocks read from the stores, TTL ± jitter drawn per key.
fn backfill_calls(job: &Backfill, cas_sha: &str) -> Vec<Cmd> {
    let n = job.fg_ids.len();
    let prefix = key_prefix(NAMESPACE, &job.entity);
    let jitter = job.ttl_seconds as f64 * f64::from(job.jitter_percent) / 100.0;
    let mut done = HashSet::with_capacity(job.keys.len());
    let mut cmds = Vec::with_capacity(job.keys.len());
    for (i, key) in job.keys.iter().enumerate() {
        let (Some(seen), Some(blocks)) = (job.seen.get(i), job.blocks.get(i * n..(i + 1) * n)) else {
            break; // a malformed job: the keys that have their data are still written
        };
        if !done.insert(key.as_str()) {
            continue;
        }
        let mut entries: BTreeMap<u16, &[u8]> = cached_entries(seen);
        for (fg, block) in job.fg_ids.iter().zip(blocks) {
            entries.insert(*fg, block);
        }
        let pairs: Vec<(u16, &[u8])> = entries.into_iter().collect();
        let value = csdb::encode_auto(&pairs);
        let ttl = job.ttl_seconds as f64 + (fastrand::f64() * 2.0 - 1.0) * jitter;
        let ttl_ms = ((ttl * 1000.0) as u64).max(1);
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(cas_sha).arg(1).arg(format!("{prefix}{key}")).arg(&seen[..]).arg(value).arg(ttl_ms);
        cmds.push(cmd);
    }
    cmds
}

/// The FG entries of a cached value: none for an absent value, a tombstone or a value that does not
/// parse (the backfill then overwrites it).
fn cached_entries(value: &[u8]) -> BTreeMap<u16, &[u8]> {
    if value.first().map_or(true, |&b| b == TOMBSTONE) {
        return BTreeMap::new();
    }
    csdb::entries(value).and_then(Iterator::collect).unwrap_or_default()
}

/// Replaces `names` by one fresh tombstone (unique per call: no ABA for the compare-and-set) living
/// `life`, and publishes `messages`, in one round trip per node.
async fn tombstones(
    conn: &mut Conn,
    names: &[Vec<u8>],
    messages: &[(String, Vec<u8>)],
    life: Duration,
) -> RedisResult<()> {
    if names.is_empty() && messages.is_empty() {
        return Ok(());
    }
    let mut tombstone = [0u8; 16];
    tombstone[0] = TOMBSTONE;
    fastrand::fill(&mut tombstone[1..]);
    let px = life.as_millis().max(1) as u64;
    let mut cmds: Vec<Cmd> = Vec::with_capacity(names.len() + messages.len());
    for name in names {
        let mut cmd = redis::cmd("SET");
        cmd.arg(name.as_slice()).arg(&tombstone[..]).arg("PX").arg(px);
        cmds.push(cmd);
    }
    for (channel, message) in messages {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel.as_str()).arg(message.as_slice());
        cmds.push(cmd);
    }
    conn.run_all(&cmds).await?.into_iter().find_map(RedisResult::err).map_or(Ok(()), Err)
}

/// `{"source": …, "entity": …, "keys": […]}` (what `cache/invalidation.py` parses).
fn message(source: &str, entity: &str, keys: &[&str]) -> Vec<u8> {
    let mut out = String::with_capacity(64 + keys.iter().map(|k| k.len() + 3).sum::<usize>());
    out.push_str("{\"source\": ");
    json_string(&mut out, source);
    out.push_str(", \"entity\": ");
    json_string(&mut out, entity);
    out.push_str(", \"keys\": [");
    for (i, k) in keys.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        json_string(&mut out, k);
    }
    out.push_str("]}");
    out.into_bytes()
}

fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

impl RemoteTier for RedisCache {
    fn describe(&self) -> String {
        self.shared.redis.place().to_owned()
    }

    fn get_many<'a>(
        &'a self,
        entity: &'a str,
        keys: &'a [&'a str],
        fg_ids: &'a [u16],
    ) -> BoxFuture<'a, Option<RemoteLookup>> {
        Box::pin(async move {
            let at = Instant::now();
            if keys.is_empty() {
                return Some(RemoteLookup { rows: Vec::new(), seen: Vec::new(), at });
            }
            let prefix = key_prefix(NAMESPACE, entity);
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
            let names = &names;
            let values = self.shared.guarded("read", |mut conn| async move { mget(&mut conn, names).await }).await?;
            let n = fg_ids.len();
            let answers: Vec<(Option<Vec<Bytes>>, Bytes)> = values
                .into_iter()
                .map(|value| {
                    let Some(value) = value else { return (None, Bytes::new()) };
                    if value.first() == Some(&TOMBSTONE) {
                        return (None, value);
                    }
                    let mut found = vec![None; n];
                    let row = match csdb::lookup(&value, fg_ids, &mut found) {
                        Err(_) => {
                            self.shared.events.error("decode"); // overwritten by the next backfill
                            None
                        }
                        Ok(hits) if hits == n => {
                            Some(found.iter().map(|b| value.slice_ref(b.unwrap_or_default())).collect())
                        }
                        Ok(_) => None,
                    };
                    (row, value)
                })
                .collect();
            let rows = slots.iter().map(|&s| answers[s].0.clone()).collect();
            let seen = slots.iter().map(|&s| answers[s].1.clone()).collect();
            Some(RemoteLookup { rows, seen, at })
        })
    }

    fn backfill(&self, job: Backfill) {
        if job.keys.is_empty() || job.ttl_seconds == 0 {
            return;
        }
        let queue = lock(&self.queue);
        let Some(tx) = queue.as_ref() else { return };
        self.shared.backfills.fetch_add(1, Ordering::AcqRel);
        if let Err(e) = tx.try_send(job) {
            self.shared.backfills.fetch_sub(1, Ordering::AcqRel);
            if matches!(e, mpsc::error::TrySendError::Full(_)) {
                self.shared.events.dropped("backfill");
            }
        }
    }

    fn invalidate<'a>(
        &'a self,
        entity: &'a str,
        keys: &'a [&'a str],
        publish: Option<Publish<'a>>,
    ) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let prefix = key_prefix(NAMESPACE, entity);
            let mut distinct = HashSet::with_capacity(keys.len());
            let names: Vec<Vec<u8>> =
                keys.iter().filter(|k| distinct.insert(**k)).map(|k| format!("{prefix}{k}").into_bytes()).collect();
            let message = publish.map(|p| (p.channel.to_owned(), self.message(entity, p.keys)));
            if names.is_empty() && message.is_none() {
                return true;
            }
            let (names_ref, message_ref) = (&names, &message);
            let life = self.shared.tombstone;
            let sent = self
                .shared
                .guarded("invalidate", |mut conn| async move {
                    tombstones(&mut conn, names_ref, message_ref.as_slice(), life).await
                })
                .await
                .is_some();
            if !sent {
                self.shared.keep(names, message);
            }
            sent
        })
    }

    fn healthy(&self) -> bool {
        self.shared.breaker.state() == BreakerState::Closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_json() {
        let m = message("src", "user", &["a\"b", "c\\d", "é\n"]);
        assert_eq!(
            std::str::from_utf8(&m).unwrap(),
            r#"{"source": "src", "entity": "user", "keys": ["a\"b", "c\\d", "é\u000a"]}"#
        );
    }

    #[test]
    fn backfill_merges_the_seen_fgs_once_per_key() {
        let old = csdb::encode_auto(&[(1, b"one"), (2, b"two")]);
        let job = Backfill {
            entity: "user".into(),
            keys: vec!["k".into(), "k".into(), "j".into()],
            seen: vec![Bytes::from(old), Bytes::new(), Bytes::from_static(b"\x00tomb")],
            at: Instant::now(),
            fg_ids: vec![2, 3],
            blocks: ["TWO", "three", "x", "y", "", "z"].iter().map(|b| Bytes::from_static(b.as_bytes())).collect(),
            ttl_seconds: 100,
            jitter_percent: 10,
        };
        let cmds = backfill_calls(&job, "sha");
        assert_eq!(cmds.len(), 2);
        let args: Vec<Vec<u8>> = cmds[0]
            .args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => b.to_vec(),
                redis::Arg::Cursor => Vec::new(),
            })
            .collect();
        assert_eq!(args[3], b"ofs:c:user:k");
        let value = &args[5];
        let entries: Vec<(u16, &[u8])> = csdb::entries(value).unwrap().collect::<crate::Result<_>>().unwrap();
        assert_eq!(entries, [(1, &b"one"[..]), (2, b"TWO"), (3, b"three")]);
        let ttl: u64 = std::str::from_utf8(&args[6]).unwrap().parse().unwrap();
        assert!((90_000..=110_000).contains(&ttl), "{ttl}");
        // a tombstone holds no entries: only the blocks read are cached
        assert!(cached_entries(b"\x00tomb").is_empty());
        assert!(cached_entries(b"\x07bad").is_empty());
    }
}
