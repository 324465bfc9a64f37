//! The distributed cache tier as the read path sees it ([`RemoteTier`]): between the in-process cache
//! ([`crate::cache::BlockCache`]) and the stores ([`crate::store::BlockStore`]). The Redis / Redis
//! Cluster client implements it; the tiers orchestration (`crate::tiers`) calls it through
//! `Arc<dyn RemoteTier>`, so the read path knows nothing of Redis.
//!
//! The protocol is the one of `online_feature_store/cache/redis_cache.py` (docs/caching.md):
//! - one value per entity key, a CSDB of the key's cached FG blocks *as stored* (compressed); an empty
//!   block is a negative entry (the store had nothing for that FG);
//! - a strong-mode write replaces the written keys by a *tombstone* (a value that is not a CSDB, unique
//!   per invalidation), which a read treats as a miss;
//! - a backfill sets each key only if its value is still the one the read saw ([`RemoteLookup::seen`]:
//!   compare-and-set), merged with the FGs that value held, so a read that overlapped a write never puts
//!   the pre-write blocks back; a backfill older than half the tombstone life is dropped instead;
//! - every call goes through the tier's circuit breaker with short timeouts: a failed or refused read is
//!   a miss of the whole tier ([`RemoteTier::get_many`] answers `None`; the request reads the stores,
//!   never defaults), never an error of the request.

use std::fmt;
use std::time::Instant;

use bytes::Bytes;

use crate::store::BoxFuture;

/// What one [`RemoteTier::get_many`] saw, per requested key in request order (a duplicate key repeats
/// its answer).
#[derive(Debug, Clone)]
pub struct RemoteLookup {
    /// The blocks of the requested FGs in `fg_ids` order, as stored (compressed; empty = negative
    /// entry), or `None` on a miss: absent, a tombstone, a value that does not parse, or one lacking
    /// a requested FG.
    pub rows: Vec<Option<Vec<Bytes>>>,
    /// The raw value read (empty when absent): what a backfill of the key must still find.
    pub seen: Vec<Bytes>,
    /// When the read was sent: a backfill is dropped once older than half the tombstone life.
    pub at: Instant,
}

/// Keys a [`RemoteTier::get_many`] missed, with the blocks the stores returned for them, to be cached
/// off the request path.
#[derive(Debug, Clone)]
pub struct Backfill {
    pub entity: String,
    /// Canonical key strings ([`crate::keys`]); duplicates are written once.
    pub keys: Vec<String>,
    /// Per key, [`RemoteLookup::seen`] of the lookup that missed it.
    pub seen: Vec<Bytes>,
    /// [`RemoteLookup::at`] of that lookup.
    pub at: Instant,
    pub fg_ids: Vec<u16>,
    /// Key-major (`[k * fg_ids.len() + f]`), as the stores returned them (empty = nothing stored).
    pub blocks: Vec<Bytes>,
    /// The entity's distributed-cache policy: each key lives `ttl_seconds` ± `jitter_percent`.
    pub ttl_seconds: u64,
    pub jitter_percent: u8,
}

/// The invalidation message a strong-mode write publishes to the other processes, with its tombstones.
#[derive(Debug, Clone, Copy)]
pub struct Publish<'a> {
    /// The pub/sub channel (`ofs:c:invalidations`).
    pub channel: &'a str,
    /// The keys the message names (canonical key strings).
    pub keys: &'a [&'a str],
}

/// The state of a tier's circuit breaker (`ofs_cache_breaker_state`: 0, 1, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed = 0,
    HalfOpen = 1,
    Open = 2,
}

/// Where a [`RemoteTier`] reports its rare events (the metrics hooks `cache_error`, `cache_breaker`,
/// `cache_dropped` of `FeatureStoreMetrics`); never called per key or on a request's success.
pub trait TierEvents: Send + Sync + fmt::Debug {
    /// A call `op` (`read`, `backfill`, `invalidate`, `decode`, `ping`) failed or the open breaker
    /// refused it.
    fn error(&self, op: &'static str);
    /// The breaker moved to `state`.
    fn breaker(&self, state: BreakerState);
    /// Background work `op` was dropped (queue full, or too old to be safe).
    fn dropped(&self, op: &'static str);
}

/// A distributed cache tier. Reads are futures (driven by the request's thread with the GIL released,
/// [`crate::store::runtime::block_on`]); backfills are queued and run off the request path.
pub trait RemoteTier: Send + Sync + fmt::Debug {
    /// Names the tier in messages (`redis://host:6379/0`, `cluster host:port,…`).
    fn describe(&self) -> String;

    /// The blocks of `fg_ids` for each key (canonical key strings, duplicates allowed) in one round trip
    /// per node, or `None` when the tier cannot be used now (breaker open, timeout, connection failure:
    /// reported through [`TierEvents::error`]); the caller then reads the stores.
    fn get_many<'a>(
        &'a self,
        entity: &'a str,
        keys: &'a [&'a str],
        fg_ids: &'a [u16],
    ) -> BoxFuture<'a, Option<RemoteLookup>>;

    /// Queues `job` and returns at once; when the queue is full the job is dropped
    /// ([`TierEvents::dropped`]). Each key is set by compare-and-set against its `seen` value, merged
    /// with the FGs that value held; a job older than half the tombstone life is dropped.
    fn backfill(&self, job: Backfill);

    /// Replaces `keys` of `entity` by a fresh tombstone and (with `publish`) publishes the invalidation,
    /// in one round trip per node. Never fails: when the tier cannot be reached the keys and the message
    /// are kept (up to a bound) and sent before the tier's next use. Returns whether it was delivered
    /// now.
    fn invalidate<'a>(
        &'a self,
        entity: &'a str,
        keys: &'a [&'a str],
        publish: Option<Publish<'a>>,
    ) -> BoxFuture<'a, bool>;

    /// Whether the breaker is closed.
    fn healthy(&self) -> bool;
}
