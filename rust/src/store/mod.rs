//! The stores, in the core: where PSDB blocks live, one per (entity, key, feature group).
//!
//! Every backend implements [`BlockStore`]; the read path ([`crate::tiers`]) and the bindings call it
//! through `Arc<dyn BlockStore>`, so a store kind plugs in by implementing the trait (behind a cargo
//! feature of its own: `sqlite`, `cassandra`, `redis`). Stores move bytes only: the engine builds, decodes and
//! expiry-checks blocks.
//!
//! The calls are futures ([`BoxFuture`]) because the network stores' clients are async (tokio); a
//! request awaits the reads of all its stores at once ([`futures_util::future::join_all`]), so one
//! request fans out across stores, and a store fans out across its nodes inside its own `read`. A store
//! whose client is synchronous (`SQLite`) does its work when first polled, on the calling thread. The
//! bindings drive the futures with [`runtime::block_on`], the GIL released.
//!
//! Keys cross the trait as their canonical strings ([`crate::keys`]): what `SQLite` and Redis name a key
//! by; a store that needs the values (Cassandra's key columns) splits the string with
//! [`crate::keys::decode_key`].

#[cfg(feature = "cassandra")]
pub mod cassandra;
#[cfg(feature = "sqlite")]
pub mod invalidation_log;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "redis")]
pub mod redis_cache;
#[cfg(feature = "redis")]
pub mod redis_conn;
pub mod runtime;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

use crate::error::Result;

/// The future of a store call.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a store needs to know of an entity: its label, its key columns in canonical (registry) order
/// (`Key.column`: Cassandra's column names) and the ids of its feature groups (what `ensure` makes room
/// for).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EntityLayout {
    pub label: String,
    pub key_columns: Vec<String>,
    pub fg_ids: Vec<u16>,
}

/// One FG block to upsert for one key: `key` is the canonical key string, `expires_at` the block's
/// absolute expiry in unix seconds (0 = never), which stores use as the database's own TTL so expired
/// data is purged, not only hidden.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockWrite<'a> {
    pub key: &'a str,
    pub fg_id: u16,
    pub block: &'a [u8],
    pub expires_at: u64,
}

/// A backend holding FG blocks. Failures are [`crate::Error::Unavailable`] (the store cannot answer:
/// down, timed out, locked past its busy timeout) or [`crate::Error::InvalidInput`] (a block the store
/// cannot hold); a value that does not parse is [`crate::Error::Corrupt`]. A store never answers
/// "missing" for a read it could not perform.
pub trait BlockStore: Send + Sync + fmt::Debug {
    /// Names the store in messages (`sqlite store /path/to/file.db`).
    fn describe(&self) -> String;

    /// Whether the store's calls block the thread that polls them (a synchronous client: `SQLite`,
    /// whose writes wait for fsync): a caller on the runtime's own threads runs them off it.
    fn blocking(&self) -> bool {
        false
    }

    /// Creates whatever tables / columns the entities' FGs need (idempotent, additive only).
    fn ensure<'a>(&'a self, entities: &'a [EntityLayout]) -> BoxFuture<'a, Result<()>>;

    /// The blocks of `fg_ids` for each key, key-major (`[k * fg_ids.len() + f]`), empty where nothing is
    /// stored (or the database already purged it). One round trip (or a bounded number of batched
    /// ones) for all keys and FGs; duplicate keys are allowed.
    fn read<'a>(
        &'a self,
        entity: &'a EntityLayout,
        keys: &'a [&'a str],
        fg_ids: &'a [u16],
    ) -> BoxFuture<'a, Result<Vec<Bytes>>>;

    /// Upserts every block atomically per (key, FG), without reading first and without touching the
    /// key's other FGs; a later write of the same (key, FG) in one call wins. Either all writes are
    /// durable when this returns, or it fails; a failed write never damages the stored block.
    fn write<'a>(&'a self, entity: &'a EntityLayout, writes: &'a [BlockWrite<'a>]) -> BoxFuture<'a, Result<()>>;

    /// Fails with [`crate::Error::Unavailable`] unless the backend answers.
    fn ping(&self) -> BoxFuture<'_, Result<()>>;

    /// Releases connections; every later call fails with [`crate::Error::Unavailable`].
    fn close(&self);
}
