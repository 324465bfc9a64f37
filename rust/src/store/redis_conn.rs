//! Connections to a standalone Redis or a Redis Cluster (redis-rs), shared by the Redis store
//! ([`super::redis`]) and the distributed cache.
//!
//! Connections are multiplexed: requests share them, and the commands that concurrent requests (or one
//! request's per-slot sub-commands) send to one node are pipelined on its socket. A standalone Redis
//! gets up to [`MAX_CONNECTIONS`] (at most `pool_size`) `ConnectionManager`s, used round robin, each
//! reconnecting in the background after a failure; a cluster gets as many `ClusterConnection`s, each
//! holding one connection per node, following `MOVED`/`ASK` and re-reading the slot map itself. A
//! cluster `MGET` of keys in many slots is split by the client into one `MGET` per slot, sent to their
//! nodes concurrently: one round trip per node, the nodes overlapped.
//!
//! Nothing connects before the first call, so a store or cache can be opened while Redis is down.
//! Every call is bounded by `socket_timeout` (each connection attempt by `connect_timeout`), and a
//! failure is an error, never a "missing" answer.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisError, RedisResult, Value};

use crate::error::{Error, Result};
use crate::store::runtime;

/// Connections opened at most per node, whatever `pool_size` asks: they are multiplexed, so a few keep
/// the sockets full (more only spread the same commands over more, smaller writes).
pub const MAX_CONNECTIONS: usize = 4;

/// Where Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `redis://host:port/db` (or `rediss://`, `unix://`).
    Url(String),
    /// `host:port` seeds of a Redis Cluster.
    Cluster(Vec<String>),
}

/// How to reach Redis.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisSettings {
    pub target: Target,
    /// Connections at most (per node on a cluster); see [`MAX_CONNECTIONS`].
    pub pool_size: usize,
    pub connect_timeout: Duration,
    /// How long a call waits for its reply.
    pub socket_timeout: Duration,
    /// Retries of a failed connection (and, on a cluster, of a command whose node failed).
    pub retries: u32,
    pub username: Option<String>,
    /// Sent apart from the URL, which is shown in messages (a password still inside it is redacted).
    pub password: Option<String>,
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("target", &describe_target(&self.target))
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("socket_timeout", &self.socket_timeout)
            .field("retries", &self.retries)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// One connection, cheap to clone (a handle on a shared multiplexed connection).
#[derive(Clone)]
pub enum Conn {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Conn::Standalone(_) => "Conn::Standalone",
            Conn::Cluster(_) => "Conn::Cluster",
        })
    }
}

enum Client {
    Standalone { client: redis::Client, config: ConnectionManagerConfig },
    Cluster(ClusterClient),
}

/// A Redis or Redis Cluster client: lazily opened connections, used round robin.
pub struct Redis {
    client: Client,
    retries: u32,
    slots: Vec<Mutex<Option<Conn>>>,
    next: AtomicUsize,
    closed: AtomicBool,
    place: String,
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redis").field("place", &self.place).finish_non_exhaustive()
    }
}

impl Redis {
    /// A client of `settings.target` (nothing connects yet). A URL or node that does not parse is
    /// [`Error::InvalidInput`]. Starts the core's runtime, which drives the connections.
    pub fn open(settings: &RedisSettings) -> Result<Redis> {
        let place = describe_target(&settings.target);
        let bad = |e: RedisError| Error::InvalidInput(format!("redis {place}: {e}"));
        let client = match &settings.target {
            Target::Url(url) => {
                let mut info = url.as_str().into_connection_info().map_err(bad)?;
                if settings.username.is_some() {
                    info.redis.username.clone_from(&settings.username);
                }
                if settings.password.is_some() {
                    info.redis.password.clone_from(&settings.password);
                }
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(settings.connect_timeout)
                    .set_response_timeout(settings.socket_timeout)
                    .set_number_of_retries(settings.retries as usize)
                    // delays of rand(0 .. 20 ms * 2^attempt), at most 500 ms
                    .set_factor(20)
                    .set_max_delay(500);
                Client::Standalone { client: redis::Client::open(info).map_err(bad)?, config }
            }
            Target::Cluster(nodes) => {
                if nodes.is_empty() {
                    return Err(Error::InvalidInput("a redis cluster needs at least one seed node".into()));
                }
                let urls = nodes.iter().map(|n| node_url(n)).collect::<Result<Vec<_>>>()?;
                let mut builder = ClusterClientBuilder::new(urls)
                    .connection_timeout(settings.connect_timeout)
                    .response_timeout(settings.socket_timeout)
                    .retries(settings.retries)
                    .min_retry_wait(10)
                    .max_retry_wait(500);
                if let Some(user) = &settings.username {
                    builder = builder.username(user.clone());
                }
                if let Some(password) = &settings.password {
                    builder = builder.password(password.clone());
                }
                Client::Cluster(builder.build().map_err(bad)?)
            }
        };
        runtime::runtime();
        let n = settings.pool_size.clamp(1, MAX_CONNECTIONS);
        Ok(Redis {
            client,
            retries: settings.retries,
            slots: (0..n).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            place,
        })
    }

    /// Where Redis is, for messages (`redis://host:6379/0`, `cluster h:p,h:p`), password redacted.
    pub fn place(&self) -> &str {
        &self.place
    }

    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.client, Client::Cluster(_))
    }

    /// A connection (opened on first use of its slot). Fails when closed or when Redis cannot be
    /// reached.
    pub async fn conn(&self) -> RedisResult<Conn> {
        self.conn_at(self.next.fetch_add(1, Ordering::Relaxed)).await
    }

    /// The connection of slot `i` (modulo their number), opened on first use.
    async fn conn_at(&self, i: usize) -> RedisResult<Conn> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(closed());
        }
        let slot = &self.slots[i % self.slots.len()];
        if let Some(conn) = lock(slot).clone() {
            return Ok(conn);
        }
        // Connected outside the lock; two callers racing both connect and the first one's is kept.
        let conn = match &self.client {
            Client::Standalone { client, config } => {
                Conn::Standalone(ConnectionManager::new_with_config(client.clone(), config.clone()).await?)
            }
            Client::Cluster(client) => Conn::Cluster(client.get_async_connection().await?),
        };
        if self.closed.load(Ordering::Relaxed) {
            return Err(closed());
        }
        Ok(lock(slot).get_or_insert(conn).clone())
    }

    /// `call(conn)`, repeated up to `retries` times (with a short exponential backoff) while it fails
    /// because the connection broke or was refused, plus once at once for a connection found broken
    /// (after Redis restarted, each connection finds out on its next use, then reconnects, so the
    /// retry uses the same one). Only for idempotent calls (reads, the merge script).
    /// Timeouts are not retried: they would only multiply a request's wait.
    pub async fn with_retries<T, F, Fut>(&self, mut call: F) -> RedisResult<T>
    where
        F: FnMut(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let slot = self.next.fetch_add(1, Ordering::Relaxed);
        let (mut attempt, mut stale_seen) = (0, false);
        loop {
            match self.call_at(slot, &mut call).await {
                // A connection that broke while idle (Redis restarted) is found on its next use: that
                // one is redone at once and does not count as a retry (as redis-py's pool checks a
                // connection before lending it).
                Err(e) if !stale_seen && !self.is_closed() && e.is_connection_dropped() => stale_seen = true,
                Err(e) if attempt < self.retries && !self.is_closed() && is_broken_connection(&e) => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis((10u64 << attempt.min(5)).min(500))).await;
                }
                other => return other,
            }
        }
    }

    /// `call(conn)` once, on the next connection (no retry).
    pub async fn once<T, F, Fut>(&self, call: F) -> RedisResult<T>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        self.call_at(self.next.fetch_add(1, Ordering::Relaxed), call).await
    }

    /// `call` on the connection of slot `slot`; when it fails on a cluster in a way that may come from
    /// a stale view of the cluster, every connection is dropped ([`Redis::forget`]).
    async fn call_at<T, F, Fut>(&self, slot: usize, call: F) -> RedisResult<T>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let result = match self.conn_at(slot).await {
            Ok(conn) => call(conn).await,
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            if self.is_cluster() && cluster_view_suspect(e) {
                self.forget();
            }
        }
        result
    }

    /// Drops every connection after a cluster call failed in a way that may come from a stale view of
    /// the cluster: they all learnt the slot map the same way, so each next call opens a new one.
    fn forget(&self) {
        for s in &self.slots {
            lock(s).take();
        }
    }

    /// Drops the connections; every later call fails.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        for slot in &self.slots {
            lock(slot).take();
        }
    }

    /// Whether [`Redis::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves an Option behind, which is always valid.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn closed() -> RedisError {
    RedisError::from((redis::ErrorKind::ClientError, "closed"))
}

impl Conn {
    /// One command; an error reply is an `Err`.
    pub async fn query(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        let value = match self {
            Conn::Standalone(c) => c.req_packed_command(cmd).await?,
            Conn::Cluster(c) => c.req_packed_command(cmd).await?,
        };
        value.extract_error()
    }

    /// Every command, each reply `Ok` or its error reply (`Err`); an `Err` of the whole call is a
    /// connection failure or timeout. Standalone: one pipeline (one round trip). Cluster: the commands
    /// sent concurrently, each to the node owning its key; those to one node share its socket.
    pub async fn run_all(&mut self, cmds: &[Cmd]) -> RedisResult<Vec<RedisResult<Value>>> {
        match self {
            Conn::Standalone(c) => {
                let mut pipe = Pipeline::with_capacity(cmds.len());
                for cmd in cmds {
                    pipe.add_command(cmd.clone());
                }
                let replies = c.req_packed_commands(&pipe, 0, cmds.len()).await?;
                Ok(replies.into_iter().map(Value::extract_error).collect())
            }
            Conn::Cluster(c) => {
                let calls = cmds.iter().map(|cmd| {
                    let mut conn = c.clone();
                    async move { conn.req_packed_command(cmd).await.and_then(Value::extract_error) }
                });
                let replies = futures_util::future::join_all(calls).await;
                // A node that could not answer fails the call: "missing" is never an answer.
                if let Some(at) = replies.iter().position(|r| r.as_ref().is_err_and(|e| !is_reply(e))) {
                    return Err(replies.into_iter().nth(at).and_then(RedisResult::err).expect("an error at `at`"));
                }
                Ok(replies)
            }
        }
    }
}

/// `MGET` of `names` (on a cluster: one `MGET` per slot, the nodes asked concurrently), each value
/// or `None` when absent; a reply of another shape is an error.
///
/// On a cluster the keys are grouped by slot here, so each `MGET` is a single-slot command the client
/// routes, retries and redirects like any keyed command. redis-rs's own split of a multi-slot `MGET`
/// drops the sub-commands of a node it holds no connection to (a master that died), fails the whole
/// command with a result-count error that nothing recovers from, and keeps failing after failover:
/// that error path never refreshes its slot map.
pub async fn mget(conn: &mut Conn, names: &[Vec<u8>]) -> RedisResult<Vec<Option<Bytes>>> {
    let Conn::Cluster(cluster) = conn else { return mget_one(conn, names.iter()).await };
    let mut by_slot: HashMap<u16, Vec<usize>> = HashMap::new();
    for (i, n) in names.iter().enumerate() {
        by_slot.entry(key_slot(n)).or_default().push(i);
    }
    let calls = by_slot.values().map(|at| {
        let mut conn = Conn::Cluster(cluster.clone());
        async move { mget_one(&mut conn, at.iter().map(|&i| &names[i])).await }
    });
    let replies = futures_util::future::join_all(calls).await;
    let mut out = vec![None; names.len()];
    for (at, reply) in by_slot.values().zip(replies) {
        for (&i, value) in at.iter().zip(reply?) {
            out[i] = value;
        }
    }
    Ok(out)
}

async fn mget_one<'a>(
    conn: &mut Conn,
    names: impl ExactSizeIterator<Item = &'a Vec<u8>>,
) -> RedisResult<Vec<Option<Bytes>>> {
    let wanted = names.len();
    let mut cmd = redis::cmd("MGET");
    for n in names {
        cmd.arg(n.as_slice());
    }
    let Value::Array(values) = conn.query(&cmd).await? else {
        return Err(unexpected("MGET did not answer an array"));
    };
    if values.len() != wanted {
        return Err(unexpected("MGET answered another number of values than keys"));
    }
    values
        .into_iter()
        .map(|v| match v {
            Value::Nil => Ok(None),
            Value::BulkString(b) => Ok(Some(Bytes::from(b))),
            _ => Err(unexpected("MGET answered a value that is not a string")),
        })
        .collect()
}

/// The Redis Cluster slot of `key`: CRC16 (XMODEM) of its hash tag (the text between the first `{`
/// and the next `}`, when not empty) or of the whole key, modulo 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        rest.iter().position(|&b| b == b'}').filter(|&close| close > 0).map(|close| &rest[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(key)) % 16384
}

/// Runs the `EVALSHA` calls `cmds` of `script` (its source), each reply `Ok` or its error reply; the
/// calls a node answered `NOSCRIPT` (restarted, flushed, a new node) are run again once after
/// `SCRIPT LOAD` (every primary of a cluster).
pub async fn run_script(conn: &mut Conn, script: &str, cmds: &[Cmd]) -> RedisResult<Vec<RedisResult<Value>>> {
    let mut replies = conn.run_all(cmds).await?;
    let unknown: Vec<usize> = replies
        .iter()
        .enumerate()
        .filter(|(_, r)| r.as_ref().is_err_and(|e| e.kind() == redis::ErrorKind::NoScriptError))
        .map(|(i, _)| i)
        .collect();
    if !unknown.is_empty() {
        conn.query(redis::cmd("SCRIPT").arg("LOAD").arg(script)).await?;
        let again: Vec<Cmd> = unknown.iter().map(|&i| cmds[i].clone()).collect();
        for (i, reply) in unknown.into_iter().zip(conn.run_all(&again).await?) {
            replies[i] = reply;
        }
    }
    Ok(replies)
}

fn unexpected(what: &'static str) -> RedisError {
    RedisError::from((redis::ErrorKind::TypeError, what))
}

/// Whether `e` says the connection broke or could not be made (not a timeout, not an error reply).
pub fn is_broken_connection(e: &RedisError) -> bool {
    !e.is_timeout() && (e.is_connection_dropped() || e.is_connection_refusal() || e.is_io_error())
}

/// Whether `e`, from a cluster connection, may come from its stale view of the cluster, so that the
/// connection is dropped and the next call opens a new one, which reads the slot map afresh from the
/// seeds: any failure but an ordinary error reply. redis-rs repairs its view after `MOVED`, but after a
/// master dies and its replica takes over, a connection can keep routing to the dead node's address and
/// time out on every call long after the cluster is whole again (measured with
/// `bench/redis_failover_bench.py`); a new connection finds the new master at once.
fn cluster_view_suspect(e: &RedisError) -> bool {
    !is_reply(e)
        || matches!(
            e.kind(),
            redis::ErrorKind::Moved
                | redis::ErrorKind::Ask
                | redis::ErrorKind::TryAgain
                | redis::ErrorKind::ClusterDown
        )
}

/// Whether `e` is an error reply of Redis (as opposed to a connection failure or timeout).
pub fn is_reply(e: &RedisError) -> bool {
    !(e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()) && e.code().is_some()
}

/// `host:port` → `redis://host:port` (`:port` alone is on 127.0.0.1).
fn node_url(node: &str) -> Result<String> {
    let node = node.trim();
    let (host, port) = node.rsplit_once(':').unwrap_or(("", node));
    if port.parse::<u16>().is_err() {
        return Err(Error::InvalidInput(format!("redis cluster node {node:?} is not host:port")));
    }
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    Ok(format!("redis://{host}:{port}"))
}

fn describe_target(target: &Target) -> String {
    match target {
        Target::Url(url) => redact(url),
        Target::Cluster(nodes) => format!("cluster {}", nodes.join(",")),
    }
}

/// `url` with a password in its user info or its query (`password=`) replaced by `***`.
pub fn redact(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..].find(['/', '?', '#']).map_or(out.len(), |i| rest_start + i);
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            let redacted = match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***"),
                None if userinfo.is_empty() => String::new(),
                // `redis://secret@host`: redis-rs takes a lone user info as the password
                None => "***".to_owned(),
            };
            out.replace_range(rest_start..rest_start + at, &redacted);
        }
    }
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let query = query
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => p.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&");
        out = format!("{head}{query}");
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn key_slots_are_redis_cluster_slots() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(super::key_slot(b"123456789"), 12739);
        assert_eq!(super::key_slot(b"foo"), 12182);
        assert_eq!(super::key_slot(b"{user1000}.following"), super::key_slot(b"user1000"));
        assert_ne!(super::key_slot(b"foo{}{bar}"), super::key_slot(b"bar"));
        assert_eq!(super::key_slot(b"foo{{bar}}zap"), super::key_slot(b"{bar"));
    }

    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("redis://:pw@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(redact("redis://user:pw@h:1/0"), "redis://user:***@h:1/0");
        assert_eq!(redact("redis://h:1/0?password=pw&x=1"), "redis://h:1/0?password=***&x=1");
        assert_eq!(redact("redis://h:1/0"), "redis://h:1/0");
        assert_eq!(redact("redis://a@b@h:1"), "redis://***@h:1");
    }

    #[test]
    fn cluster_nodes_become_urls() {
        assert_eq!(node_url("10.0.0.1:7000").unwrap(), "redis://10.0.0.1:7000");
        assert_eq!(node_url(":7000").unwrap(), "redis://127.0.0.1:7000");
        assert!(node_url("host").is_err());
    }

    #[test]
    fn nothing_connects_until_used() {
        let settings = RedisSettings {
            target: Target::Url("redis://127.0.0.1:1/0".into()),
            pool_size: 32,
            connect_timeout: Duration::from_millis(200),
            socket_timeout: Duration::from_millis(200),
            retries: 0,
            username: None,
            password: Some("secret".into()),
        };
        let redis = Redis::open(&settings).unwrap();
        assert_eq!(redis.slots.len(), MAX_CONNECTIONS);
        assert!(!format!("{settings:?} {redis:?}").contains("secret"));
        assert!(runtime::block_on(redis.conn()).is_err());
        redis.close();
        assert!(runtime::block_on(redis.conn()).is_err());
        assert!(Redis::open(&RedisSettings { target: Target::Url("nope://x".into()), ..settings }).is_err());
    }
}
