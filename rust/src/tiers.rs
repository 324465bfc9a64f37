//! The tiered read, in one native call per request: in-process cache ([`BlockCache`]) → distributed
//! cache ([`RemoteTier`]) → stores ([`BlockStore`]), as docs/caching.md describes it.
//!
//! A tier serves a request when the entity's policy enables it and every requested FG is flagged for
//! it (the [`Plan`] carries both), and, for the in-process cache, while the invalidation bus is healthy
//! (the bus reports its health here as a deadline, [`Tiers::bus_healthy_for`], so no request asks
//! Python). Keys the in-process cache misses go to the distributed cache, and what that misses to the
//! stores, one read per store, all stores of a request at once (a join of their futures). Misses are
//! backfilled: the in-process cache inline (with the TTL jitter of its policy), the distributed cache by
//! a job queued to the tier ([`RemoteTier::backfill`]). Empty blocks are cached too: negative entries,
//! dropped by invalidations like any other.
//!
//! Invalidations bump a per-entity generation (and a whole-cache reset count): a read takes the mark
//! before its first lookup and, after putting what it read into the in-process cache, drops it again if
//! the mark moved or the bus broke meanwhile, since what it read may predate the write.
//!
//! A request the core cannot serve whole is declined (`Ok(None)`, before any I/O): a store that is not
//! native (not registered with [`Tiers::set_store`]), or a distributed cache the core cannot call
//! ([`Tiers::set_remote_elsewhere`]: the Python client). The caller then takes the Python path.
//!
//! Writes take the same tiers the other way ([`Tiers::write_route`], [`Tiers::write_routed`]): the
//! blocks of a validated persist go to their stores (one write per store, all stores at once), then the
//! written keys are invalidated as `cache/tiers.py` `CacheTiers.invalidate` does it: dropped from the
//! in-process cache, tombstoned in the distributed cache, and published to the other processes on the
//! invalidation bus Python configured ([`Tiers::set_bus_channel`], [`Tiers::set_bus_log`]). A write is
//! declined when a store is not registered for writes ([`Tiers::set_writer`]) or the bus or
//! distributed cache is one the core cannot call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use bytes::Bytes;
use futures_util::future::join_all;

use crate::cache::{self, BlockCache};
use crate::catalog::Entity;
use crate::engine::Plan;
use crate::error::Result;
use crate::remote::{Backfill, Publish, RemoteTier};
#[cfg(feature = "sqlite")]
use crate::store::invalidation_log::InvalidationLog;
use crate::store::{BlockStore, BlockWrite, EntityLayout};
use crate::wire::PersistBlock;

/// A cache tier's policy for an entity: `(ttl seconds, jitter %)`.
type Policy = (u64, u8);
/// The in-process cache and its policy, when it serves a read.
type LocalTier<'a> = (&'a Arc<BlockCache>, Policy);
/// The distributed cache and its policy, when it serves a read.
type RemoteTierUse = (Arc<dyn RemoteTier>, Policy);

/// The distributed cache as the core sees it.
#[derive(Debug, Clone, Default)]
enum Remote {
    /// None configured.
    #[default]
    None,
    /// A native client: the core calls it.
    Native(Arc<dyn RemoteTier>),
    /// One the core cannot call (the Python client): requests that would use it are declined.
    Elsewhere,
}

/// How a strong-mode write tells the other processes: the bus Python's `CacheTiers` uses, as handed
/// over.
#[derive(Debug, Clone, Default)]
enum Bus {
    /// None (invalidation stays in this process).
    #[default]
    None,
    /// Redis pub/sub on this channel, published through the native distributed cache.
    Channel(String),
    /// The invalidation log of the processes of this host.
    #[cfg(feature = "sqlite")]
    Log(Arc<InvalidationLog>),
    /// One the core cannot publish to: writes that would use it are declined.
    Elsewhere,
}

/// Where a write's invalidation is published.
#[derive(Debug, Clone)]
enum Publisher {
    /// Redis pub/sub on this channel, through the native distributed cache.
    Channel(String, Arc<dyn RemoteTier>),
    #[cfg(feature = "sqlite")]
    Log(Arc<InvalidationLog>),
}

/// The read path's tiers of one `FeatureStore`: shared by every request thread.
#[derive(Debug)]
pub struct Tiers {
    local: Option<Arc<BlockCache>>,
    remote: RwLock<Remote>,
    stores: RwLock<HashMap<String, Arc<dyn BlockStore>>>,
    /// The stores writes may go to natively (a subclass that overrides a store's writes is Python's).
    writers: RwLock<HashMap<String, Arc<dyn BlockStore>>>,
    bus: RwLock<Bus>,
    /// Why publishing invalidations failed since the last [`Tiers::take_bus_errors`] (the first few),
    /// and how many failed.
    bus_errors: Mutex<(Vec<String>, u64)>,
    marks: Marks,
    /// The invalidation bus is healthy until this instant (ms since the epoch; `u64::MAX`: until told
    /// otherwise, 0: unhealthy).
    bus_until_ms: AtomicU64,
}

/// Per-entity invalidation generations and the count of whole-cache resets.
#[derive(Debug, Default)]
struct Marks {
    resets: AtomicU64,
    generations: Mutex<HashMap<String, u64>>,
}

impl Marks {
    fn mark(&self, entity: &str) -> (u64, u64) {
        let generation = self.generations.lock().expect("marks lock").get(entity).copied().unwrap_or(0);
        (self.resets.load(Ordering::SeqCst), generation)
    }
}

/// What a read did, for the metrics hooks: `(hits, misses)` of each tier it consulted and every store
/// call with its duration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadReport {
    pub in_process: Option<(u64, u64)>,
    pub distributed: Option<(u64, u64)>,
    pub store_calls: Vec<StoreCall>,
}

/// One store call of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreCall {
    pub store_id: String,
    /// `read` or `write` (the `op` label of the store metrics).
    pub op: &'static str,
    pub seconds: f64,
    pub failed: bool,
}

/// Most bus failures kept for [`Tiers::take_bus_errors`] between two takes (the rest are counted).
#[cfg_attr(not(feature = "sqlite"), allow(dead_code))] // only the SQLite log fails to publish
const MAX_BUS_ERRORS: usize = 8;

/// What serves a write ([`Tiers::write_route`]): its stores with the blocks each takes, the
/// distributed cache to tombstone and where to publish the invalidation.
#[derive(Debug, Clone)]
pub struct WriteRoute {
    layout: EntityLayout,
    /// Per store: its registry id, the store, the indexes of the blocks it takes.
    stores: Vec<(String, Arc<dyn BlockStore>, Vec<usize>)>,
    remote: Option<Arc<dyn RemoteTier>>,
    publisher: Option<Publisher>,
}

impl WriteRoute {
    /// Whether the write blocks the thread that drives it (a synchronous store or the `SQLite`
    /// invalidation log): a caller on the runtime's threads runs it off them.
    pub fn blocking(&self) -> bool {
        #[cfg(feature = "sqlite")]
        if matches!(self.publisher, Some(Publisher::Log(_))) {
            return true;
        }
        self.stores.iter().any(|(_, s, _)| s.blocking())
    }
}

/// What serves a plan below the in-process cache ([`Tiers::route`]).
#[derive(Debug, Clone)]
pub struct Route {
    stores: Vec<Arc<dyn BlockStore>>,
    remote: Option<RemoteTierUse>,
}

/// Where one block of a read comes from.
#[derive(Debug, Clone, Copy)]
enum Src {
    /// `entries[e][start..start + len]`: a block inside an in-process cache entry.
    Entry(u32, u32, u32),
    /// `owned[i]`: read from the distributed cache or a store.
    Owned(u32),
}

/// The blocks of a read, key-major (`[k * fgs + f]`), held without copying the cache entries.
#[derive(Debug)]
pub struct TierBlocks {
    entries: Vec<Arc<[u8]>>,
    owned: Vec<Bytes>,
    src: Vec<Src>,
}

impl TierBlocks {
    fn new(cells: usize) -> TierBlocks {
        TierBlocks { entries: Vec::new(), owned: Vec::new(), src: vec![Src::Owned(0); cells] }
    }

    fn set_owned(&mut self, at: usize, block: Bytes) {
        self.src[at] = Src::Owned(self.owned.len() as u32);
        self.owned.push(block);
    }

    fn block(&self, at: usize) -> &[u8] {
        match self.src[at] {
            Src::Entry(e, start, len) => &self.entries[e as usize][start as usize..(start + len) as usize],
            Src::Owned(i) => self.owned.get(i as usize).map_or(&[], |b| &b[..]),
        }
    }

    /// `f(blocks)` with every block as a slice, key-major.
    pub fn with_blocks<R>(&self, f: impl FnOnce(&[&[u8]]) -> R) -> R {
        let refs: Vec<&[u8]> = (0..self.src.len()).map(|i| self.block(i)).collect();
        f(&refs)
    }
}

impl Tiers {
    /// Tiers over the in-process cache `local` (none: no in-process tier). The bus counts as healthy
    /// until [`Tiers::bus_healthy_for`] says otherwise.
    pub fn new(local: Option<Arc<BlockCache>>) -> Tiers {
        Tiers {
            local,
            remote: RwLock::default(),
            stores: RwLock::default(),
            writers: RwLock::default(),
            bus: RwLock::default(),
            bus_errors: Mutex::default(),
            marks: Marks::default(),
            bus_until_ms: AtomicU64::new(u64::MAX),
        }
    }

    /// The in-process cache.
    pub fn local(&self) -> Option<&Arc<BlockCache>> {
        self.local.as_ref()
    }

    /// Registers the native store behind registry store id `store_id`.
    pub fn set_store(&self, store_id: &str, store: Arc<dyn BlockStore>) {
        self.stores.write().expect("stores lock").insert(store_id.to_owned(), store);
    }

    /// Lets writes to registry store `store_id` go to the native `store` (reads are registered apart,
    /// [`Tiers::set_store`]: a store class that overrides its writes is registered for reads only).
    pub fn set_writer(&self, store_id: &str, store: Arc<dyn BlockStore>) {
        self.writers.write().expect("writers lock").insert(store_id.to_owned(), store);
    }

    /// Invalidations of writes are published on Redis pub/sub `channel`, through the native distributed
    /// cache (`RedisInvalidationBus`).
    pub fn set_bus_channel(&self, channel: &str) {
        *self.bus.write().expect("bus lock") = Bus::Channel(channel.to_owned());
    }

    /// Invalidations of writes are appended to the host's invalidation log (`SqliteInvalidationLog`).
    #[cfg(feature = "sqlite")]
    pub fn set_bus_log(&self, log: Arc<InvalidationLog>) {
        *self.bus.write().expect("bus lock") = Bus::Log(log);
    }

    /// A bus the core cannot publish to: writes of entities whose processes use it are declined.
    pub fn set_bus_elsewhere(&self) {
        *self.bus.write().expect("bus lock") = Bus::Elsewhere;
    }

    /// The failures to publish invalidations since the last take (the first few messages, and how many
    /// there were): the writes themselves succeeded, the other processes' caches expire by their TTL.
    pub fn take_bus_errors(&self) -> (Vec<String>, u64) {
        std::mem::take(&mut *self.bus_errors.lock().expect("bus errors lock"))
    }

    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    fn bus_failed(&self, message: String) {
        let mut errors = self.bus_errors.lock().expect("bus errors lock");
        if errors.0.len() < MAX_BUS_ERRORS {
            errors.0.push(message);
        }
        errors.1 += 1;
    }

    /// The native distributed cache.
    pub fn set_remote(&self, remote: Arc<dyn RemoteTier>) {
        *self.remote.write().expect("remote lock") = Remote::Native(remote);
    }

    /// A distributed cache the core cannot call: requests whose plan uses it are declined.
    pub fn set_remote_elsewhere(&self) {
        *self.remote.write().expect("remote lock") = Remote::Elsewhere;
    }

    /// The bus is healthy for the next `seconds` (`None`: until told otherwise; `Some(0.0)`: not now).
    pub fn bus_healthy_for(&self, seconds: Option<f64>) {
        let until = match seconds {
            None => u64::MAX,
            Some(s) if s > 0.0 => cache::now_ms().saturating_add((s * 1000.0) as u64),
            Some(_) => 0,
        };
        self.bus_until_ms.store(until, Ordering::SeqCst);
    }

    /// Whether invalidations from other processes are known to arrive in time.
    pub fn bus_healthy(&self) -> bool {
        let until = self.bus_until_ms.load(Ordering::SeqCst);
        until == u64::MAX || cache::now_ms() < until
    }

    /// `(resets, generation of entity)`: what a read compares before and after filling the cache.
    pub fn mark(&self, entity: &str) -> (u64, u64) {
        self.marks.mark(entity)
    }

    /// Drops `keys` of `entity` from the in-process cache after a write (here or in another process);
    /// the generation moves first, so a read that checks it after this point drops what it put.
    pub fn invalidate_local(&self, entity: &str, keys: &[&str]) {
        *self.marks.generations.lock().expect("marks lock").entry(entity.to_owned()).or_insert(0) += 1;
        if let Some(local) = &self.local {
            local.invalidate(entity, keys);
        }
    }

    /// Empties the in-process cache (invalidations may have been missed).
    pub fn reset_local(&self) {
        self.marks.resets.fetch_add(1, Ordering::SeqCst);
        if let Some(local) = &self.local {
            local.clear();
        }
    }

    /// What serves `plan` below the in-process cache (its native stores in [`Plan::stores`] order, the
    /// distributed cache when the plan uses it), or `None` when a tier it needs is not native.
    pub fn route(&self, plan: &Plan) -> Option<Route> {
        if plan.stores.is_empty() {
            return None;
        }
        let remote = match (plan.distributed_cache, &*self.remote.read().expect("remote lock")) {
            (Some(_), Remote::Elsewhere) => return None,
            (Some(policy), Remote::Native(r)) => Some((Arc::clone(r), policy)),
            _ => None,
        };
        let stores = self.stores.read().expect("stores lock");
        let stores = plan.stores.iter().map(|(id, _)| stores.get(id).cloned()).collect::<Option<Vec<_>>>()?;
        Some(Route { stores, remote })
    }

    /// Whether the core can serve `plan` whole ([`Tiers::route`]).
    pub fn serves(&self, plan: &Plan) -> bool {
        self.route(plan).is_some()
    }

    /// What serves a write of `blocks` of `entity`, or `None` when a tier it needs is not native: an FG
    /// without a store id, a store not registered for writes, a distributed cache or bus the core
    /// cannot call.
    pub fn write_route(&self, entity: &Entity, blocks: &[PersistBlock]) -> Option<WriteRoute> {
        let writers = self.writers.read().expect("writers lock");
        let mut stores: Vec<(String, Arc<dyn BlockStore>, Vec<usize>)> = Vec::new();
        for (i, b) in blocks.iter().enumerate() {
            let fg = entity.fgs.iter().find(|f| f.id == b.fg_id)?;
            if let Some((.., at)) = stores.iter_mut().find(|(id, ..)| *id == fg.store_id) {
                at.push(i);
            } else {
                stores.push((fg.store_id.clone(), Arc::clone(writers.get(&fg.store_id)?), vec![i]));
            }
        }
        if stores.is_empty() {
            return None;
        }
        let remote = match (entity.distributed_cache, &*self.remote.read().expect("remote lock")) {
            (Some(_), Remote::Elsewhere) => return None,
            (Some(_), Remote::Native(r)) => Some(Arc::clone(r)),
            _ => None,
        };
        let publisher = match (entity.in_process_cache, &*self.bus.read().expect("bus lock")) {
            (None, _) | (_, Bus::None) => None,
            (Some(_), Bus::Elsewhere) => return None,
            (Some(_), Bus::Channel(channel)) => match &*self.remote.read().expect("remote lock") {
                // Published through the distributed cache (a Redis bus always has one): a native one.
                Remote::Native(r) => Some(Publisher::Channel(channel.clone(), Arc::clone(r))),
                _ => return None,
            },
            #[cfg(feature = "sqlite")]
            (Some(_), Bus::Log(log)) => Some(Publisher::Log(Arc::clone(log))),
        };
        let layout =
            EntityLayout { label: entity.label.clone(), key_columns: entity.key_columns.clone(), fg_ids: Vec::new() };
        Some(WriteRoute { layout, stores, remote, publisher })
    }

    /// Writes `blocks` along `route` (one write per store, every store at once), then invalidates the
    /// written keys `names` (canonical key strings, distinct) in every tier and tells the other
    /// processes, as a strong-mode write does. `keys[i]` is the canonical key string of `blocks[i]`
    /// ([`PersistRequest::key_names`](crate::wire::PersistRequest::key_names) gives both). Past
    /// `deadline` nothing is written: `DeadlineExceeded`. When a store fails, the keys are still
    /// invalidated if another store took its blocks, and the first failure is the write's error; every
    /// call is in the returned list. Failures to publish never fail the write (see
    /// [`Tiers::take_bus_errors`]).
    pub async fn write_routed(
        &self,
        route: &WriteRoute,
        blocks: &[PersistBlock],
        keys: &[String],
        names: &[String],
        deadline: Option<Instant>,
    ) -> (Result<()>, Vec<StoreCall>) {
        if let Err(e) = before_store_calls(deadline, names.len(), &route.layout.label) {
            return (Err(e), Vec::new());
        }
        let writes = route.stores.iter().map(|(_, store, at)| async move {
            let rows: Vec<BlockWrite<'_>> = at
                .iter()
                .map(|&i| BlockWrite {
                    key: &keys[i],
                    fg_id: blocks[i].fg_id,
                    block: &blocks[i].block,
                    expires_at: blocks[i].expires_at,
                })
                .collect();
            let started = Instant::now();
            let got = store.write(&route.layout, &rows).await;
            (got, started.elapsed().as_secs_f64())
        });
        let results = join_all(writes).await;
        let mut calls = Vec::with_capacity(results.len());
        let mut first_error = None;
        let mut written = false;
        for ((store_id, ..), (got, seconds)) in route.stores.iter().zip(results) {
            calls.push(StoreCall { store_id: store_id.clone(), op: "write", seconds, failed: got.is_err() });
            match got {
                Ok(()) => written = true,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if written {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            self.invalidate_written(route, &names).await;
        }
        match first_error {
            Some(e) => (Err(e), calls),
            None => (Ok(()), calls),
        }
    }

    /// `CacheTiers.invalidate`: after a strong-mode write of `names`, drops them from this process's
    /// cache and the distributed cache, and tells the other processes to drop them.
    async fn invalidate_written(&self, route: &WriteRoute, names: &[&str]) {
        let entity = &route.layout.label;
        self.invalidate_local(entity, names);
        let channel = match &route.publisher {
            Some(Publisher::Channel(channel, via)) => Some((channel.as_str(), via)),
            _ => None,
        };
        let publish = channel.map(|(channel, _)| Publish { channel, keys: names });
        match (&route.remote, channel) {
            // Tombstones and the pub/sub message in one round trip per node.
            (Some(remote), _) => {
                remote.invalidate(entity, names, publish).await;
            }
            (None, Some((_, via))) => {
                via.invalidate(entity, &[], publish).await;
            }
            (None, None) => {}
        }
        #[cfg(feature = "sqlite")]
        if let Some(Publisher::Log(log)) = &route.publisher {
            if let Err(e) = log.publish(entity, names) {
                self.bus_failed(e.to_string());
            }
        }
    }

    /// The blocks of `plan`'s FGs for `keys` (canonical key strings, duplicates allowed) through the
    /// tiers, and what the read did. `Ok(None)`: declined before any I/O (see the module header).
    /// A store failure is the read's error (the report still lists the call). Past `deadline`, a read
    /// that would call the distributed cache or the stores fails with `DeadlineExceeded` instead
    /// (in-process hits still answer).
    pub async fn read(
        &self,
        plan: &Plan,
        keys: &[&str],
        deadline: Option<Instant>,
    ) -> (Result<Option<TierBlocks>>, ReadReport) {
        match self.route(plan) {
            Some(route) => {
                let (got, report) = self.read_routed(plan, &route, keys, deadline).await;
                (got.map(Some), report)
            }
            None => (Ok(None), ReadReport::default()),
        }
    }

    /// [`Tiers::read`] along a [`Tiers::route`] already taken.
    pub async fn read_routed(
        &self,
        plan: &Plan,
        route: &Route,
        keys: &[&str],
        deadline: Option<Instant>,
    ) -> (Result<TierBlocks>, ReadReport) {
        let mut report = ReadReport::default();
        let local =
            plan.in_process_cache.and_then(|p| self.local.as_ref().map(|c| (c, p))).filter(|_| self.bus_healthy());
        let tiers = (local, route.remote.clone());
        let result = self.read_tiers(plan, keys, &route.stores, tiers, deadline, &mut report).await;
        (result, report)
    }

    async fn read_tiers(
        &self,
        plan: &Plan,
        keys: &[&str],
        stores: &[Arc<dyn BlockStore>],
        (local, remote): (Option<LocalTier<'_>>, Option<RemoteTierUse>),
        deadline: Option<Instant>,
        report: &mut ReadReport,
    ) -> Result<TierBlocks> {
        let fg_ids = &plan.layout.fg_ids;
        let n = fg_ids.len();
        let mut out = TierBlocks::new(keys.len() * n);
        let missed = match local {
            Some((cache, _)) => {
                let missed = lookup_local(cache, &plan.entity, keys, fg_ids, &mut out)?;
                report.in_process = Some(((keys.len() - missed.len()) as u64, missed.len() as u64));
                missed
            }
            None => (0..keys.len()).collect(),
        };
        if missed.is_empty() {
            return Ok(out);
        }
        // Before anything below the in-process cache is read: an invalidation after this point means
        // what is read may predate a write (a write ends before its invalidation is sent).
        let mark = self.mark(&plan.entity);
        before_store_calls(deadline, missed.len(), &plan.entity)?;
        let missed_keys: Vec<&str> = missed.iter().map(|&i| keys[i]).collect();
        let mut to_store: Vec<usize> = (0..missed.len()).collect();
        let mut lookup = None;
        if let Some((r, _)) = &remote {
            if let Some(found) = r.get_many(&plan.entity, &missed_keys, fg_ids).await {
                to_store.clear();
                for (j, row) in found.rows.iter().enumerate() {
                    match row {
                        Some(blocks) if blocks.len() == n => {
                            for (f, b) in blocks.iter().enumerate() {
                                out.set_owned(missed[j] * n + f, b.clone());
                            }
                        }
                        _ => to_store.push(j),
                    }
                }
                report.distributed = Some(((missed.len() - to_store.len()) as u64, to_store.len() as u64));
                lookup = Some(found);
            }
        }
        if !to_store.is_empty() {
            let store_keys: Vec<&str> = to_store.iter().map(|&j| missed_keys[j]).collect();
            let fetched = read_stores(plan, stores, &store_keys, deadline, report).await?;
            for (m, &j) in to_store.iter().enumerate() {
                for f in 0..n {
                    out.set_owned(missed[j] * n + f, fetched[m * n + f].clone());
                }
            }
            if let (Some((r, (ttl_seconds, jitter_percent))), Some(seen)) = (&remote, &lookup) {
                r.backfill(Backfill {
                    entity: plan.entity.clone(),
                    keys: store_keys.iter().map(|&k| k.to_owned()).collect(),
                    seen: to_store.iter().map(|&j| seen.seen.get(j).cloned().unwrap_or_default()).collect(),
                    at: seen.at,
                    fg_ids: fg_ids.clone(),
                    blocks: fetched,
                    ttl_seconds: *ttl_seconds,
                    jitter_percent: *jitter_percent,
                });
            }
        }
        if let Some((cache, (ttl, jitter))) = local {
            for (j, &i) in missed.iter().enumerate() {
                let row: Vec<&[u8]> = (0..n).map(|f| out.block(i * n + f)).collect();
                cache.put(&plan.entity, missed_keys[j], fg_ids, &row, ttl, jitter)?;
            }
            if self.mark(&plan.entity) != mark || !self.bus_healthy() {
                // An invalidation arrived while this read ran: what it read may predate the write.
                cache.invalidate(&plan.entity, &missed_keys);
            }
        }
        Ok(out)
    }
}

/// `DeadlineExceeded` once `deadline` has passed, before a request's store calls for `keys` keys of
/// `entity` (the message `server/calls.py`'s hooks give the same refusal).
fn before_store_calls(deadline: Option<Instant>, keys: usize, entity: &str) -> Result<()> {
    if deadline.is_some_and(|d| Instant::now() >= d) {
        return Err(crate::Error::DeadlineExceeded(format!(
            "deadline exceeded before the store calls for {keys} keys of {entity:?}"
        )));
    }
    Ok(())
}

/// Looks every key up in the in-process cache, taking the blocks of hits into `out`; returns the
/// indexes of the keys missed (absent, expired, or lacking a requested FG).
fn lookup_local(
    cache: &BlockCache,
    entity: &str,
    keys: &[&str],
    fg_ids: &[u16],
    out: &mut TierBlocks,
) -> Result<Vec<usize>> {
    let n = fg_ids.len();
    let now = cache::now_ms();
    let mut name = String::with_capacity(entity.len() + 32);
    cache::push_entry_prefix(&mut name, entity);
    let prefix = name.len();
    let mut ranges: Vec<(u32, u32)> = Vec::with_capacity(n);
    let mut missed = Vec::new();
    for (k, key) in keys.iter().enumerate() {
        name.truncate(prefix);
        name.push_str(key);
        let Some(entry) = cache.entry(&name, now) else {
            missed.push(k);
            continue;
        };
        if !block_ranges(&entry, fg_ids, &mut ranges)? {
            missed.push(k);
            continue;
        }
        let e = out.entries.len() as u32;
        for (f, &(start, len)) in ranges.iter().enumerate() {
            out.src[k * n + f] = Src::Entry(e, start, len);
        }
        out.entries.push(entry);
    }
    Ok(missed)
}

/// Each of `fg_ids`' block in the cache entry `entry` as `(start, len)`; false when one is missing.
fn block_ranges(entry: &[u8], fg_ids: &[u16], ranges: &mut Vec<(u32, u32)>) -> Result<bool> {
    let mut stack: [Option<&[u8]>; 16] = [None; 16];
    let mut heap: Vec<Option<&[u8]>>;
    let cells: &mut [Option<&[u8]>] = if fg_ids.len() <= stack.len() {
        &mut stack[..fg_ids.len()]
    } else {
        heap = vec![None; fg_ids.len()];
        &mut heap
    };
    if crate::csdb::lookup(entry, fg_ids, cells)? < fg_ids.len() {
        return Ok(false);
    }
    let base = entry.as_ptr() as usize;
    ranges.clear();
    ranges.extend(cells.iter().map(|c| {
        let cell = c.unwrap_or_default();
        // An empty block (negative entry) needs no position inside the entry.
        let start = if cell.is_empty() { 0 } else { (cell.as_ptr() as usize - base) as u32 };
        (start, cell.len() as u32)
    }));
    Ok(true)
}

/// The blocks of `plan`'s FGs for `keys`, key-major, reading every store of the plan at once; each
/// call is timed into `report`. A store that has not answered by `deadline` fails the read with
/// `DeadlineExceeded` and its call is dropped (the network stores cancel it; retries and speculative
/// reads of a store's driver therefore also end there). Only on the core's runtime: a read driven
/// without it (`SQLite` alone) runs on the calling thread and cannot be cut short.
async fn read_stores(
    plan: &Plan,
    stores: &[Arc<dyn BlockStore>],
    keys: &[&str],
    deadline: Option<Instant>,
    report: &mut ReadReport,
) -> Result<Vec<Bytes>> {
    let n = plan.layout.fg_ids.len();
    let deadline = deadline.filter(|_| tokio::runtime::Handle::try_current().is_ok());
    let reads = plan.stores.iter().zip(stores).map(|((_, at), store)| async move {
        let fg_ids: Vec<u16> = at.iter().map(|&i| plan.layout.fg_ids[i]).collect();
        let started = Instant::now();
        let read = store.read(&plan.layout, keys, &fg_ids);
        let got = match deadline {
            Some(at) => tokio::time::timeout_at(at.into(), read).await.unwrap_or_else(|_| {
                Err(crate::Error::DeadlineExceeded(format!(
                    "{} did not answer {} keys before the deadline",
                    store.describe(),
                    keys.len()
                )))
            }),
            None => read.await,
        };
        (got, started.elapsed().as_secs_f64())
    });
    let results = join_all(reads).await;
    let mut out = vec![Bytes::new(); keys.len() * n];
    let mut first_error = None;
    for (((store_id, at), store), (got, seconds)) in plan.stores.iter().zip(stores).zip(results) {
        report.store_calls.push(StoreCall { store_id: store_id.clone(), op: "read", seconds, failed: got.is_err() });
        match got {
            Ok(blocks) if blocks.len() == keys.len() * at.len() => {
                for k in 0..keys.len() {
                    for (j, &f) in at.iter().enumerate() {
                        out[k * n + f] = blocks[k * at.len() + j].clone();
                    }
                }
            }
            Ok(blocks) => {
                first_error.get_or_insert(crate::Error::Unavailable(format!(
                    "{} answered {} blocks for {} keys × {} FGs",
                    store.describe(),
                    blocks.len(),
                    keys.len(),
                    at.len()
                )));
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::catalog::{Catalog, VersionSpec};
    use crate::engine::{encode_rows, plan};
    use crate::limits::Limits;
    use crate::psdb::Array;
    use crate::remote::RemoteLookup;
    use crate::store::runtime::block_on;
    use crate::store::{BlockWrite, BoxFuture, EntityLayout};
    use crate::values::Values;
    use crate::DataType;

    const NOW: u64 = 1_772_366_400;

    /// A store holding blocks in a map, counting reads; `during_read` runs inside each read (an
    /// invalidation arriving while the read is in flight).
    #[derive(Default)]
    struct MapStore {
        blocks: Mutex<HashMap<(String, u16), Bytes>>,
        reads: AtomicUsize,
        during_read: Mutex<Option<Box<dyn Fn() + Send>>>,
        fail: std::sync::atomic::AtomicBool,
        /// Milliseconds each read waits (on the core's runtime) before answering.
        delay_ms: std::sync::atomic::AtomicU64,
    }

    impl fmt::Debug for MapStore {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("MapStore")
        }
    }

    use std::fmt;

    impl BlockStore for MapStore {
        fn describe(&self) -> String {
            "map store".into()
        }

        fn ensure<'a>(&'a self, _entities: &'a [EntityLayout]) -> BoxFuture<'a, Result<()>> {
            Box::pin(async { Ok(()) })
        }

        fn read<'a>(
            &'a self,
            _entity: &'a EntityLayout,
            keys: &'a [&'a str],
            fg_ids: &'a [u16],
        ) -> BoxFuture<'a, Result<Vec<Bytes>>> {
            Box::pin(async move {
                self.reads.fetch_add(1, Ordering::SeqCst);
                if let Some(hook) = &*self.during_read.lock().unwrap() {
                    hook();
                }
                if self.fail.load(Ordering::SeqCst) {
                    return Err(crate::Error::Unavailable("map store is down".into()));
                }
                let delay = self.delay_ms.load(Ordering::SeqCst);
                if delay > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                }
                let blocks = self.blocks.lock().unwrap();
                Ok(keys
                    .iter()
                    .flat_map(|k| {
                        fg_ids.iter().map(|f| blocks.get(&((*k).to_owned(), *f)).cloned().unwrap_or_default())
                    })
                    .collect())
            })
        }

        fn write<'a>(&'a self, _entity: &'a EntityLayout, writes: &'a [BlockWrite<'a>]) -> BoxFuture<'a, Result<()>> {
            Box::pin(async move {
                if self.fail.load(Ordering::SeqCst) {
                    return Err(crate::Error::Unavailable("map store is down".into()));
                }
                let mut blocks = self.blocks.lock().unwrap();
                for w in writes {
                    blocks.insert((w.key.to_owned(), w.fg_id), Bytes::copy_from_slice(w.block));
                }
                Ok(())
            })
        }

        fn ping(&self) -> BoxFuture<'_, Result<()>> {
            Box::pin(async { Ok(()) })
        }

        fn close(&self) {}
    }

    /// An invalidation a [`MapRemote`] was asked for: entity, keys tombstoned, (channel, keys published).
    type Invalidation = (String, Vec<String>, Option<(String, Vec<String>)>);

    /// A distributed cache in a map (values: one block per FG), recording backfills and invalidations.
    #[derive(Debug, Default)]
    struct MapRemote {
        values: Mutex<HashMap<String, HashMap<u16, Bytes>>>,
        backfills: Mutex<Vec<Backfill>>,
        invalidations: Mutex<Vec<Invalidation>>,
    }

    impl RemoteTier for MapRemote {
        fn describe(&self) -> String {
            "map remote".into()
        }

        fn get_many<'a>(
            &'a self,
            _entity: &'a str,
            keys: &'a [&'a str],
            fg_ids: &'a [u16],
        ) -> BoxFuture<'a, Option<RemoteLookup>> {
            Box::pin(async move {
                let values = self.values.lock().unwrap();
                let rows = keys
                    .iter()
                    .map(|k| values.get(*k).and_then(|v| fg_ids.iter().map(|f| v.get(f).cloned()).collect()))
                    .collect();
                Some(RemoteLookup { rows, seen: vec![Bytes::new(); keys.len()], at: Instant::now() })
            })
        }

        fn backfill(&self, job: Backfill) {
            self.backfills.lock().unwrap().push(job);
        }

        fn invalidate<'a>(
            &'a self,
            entity: &'a str,
            keys: &'a [&'a str],
            publish: Option<crate::remote::Publish<'a>>,
        ) -> BoxFuture<'a, bool> {
            let owned = |keys: &[&str]| keys.iter().map(|k| (*k).to_owned()).collect::<Vec<_>>();
            let published = publish.map(|p| (p.channel.to_owned(), owned(p.keys)));
            self.invalidations.lock().unwrap().push((entity.to_owned(), owned(keys), published));
            Box::pin(async { true })
        }

        fn healthy(&self) -> bool {
            true
        }
    }

    fn catalog(in_process: bool, distributed: bool) -> Catalog {
        let mut c = Catalog::new(1);
        c.add_entity("user", &["id".into()]).unwrap();
        for (id, label) in [(1, "a"), (2, "b")] {
            let spec = VersionSpec {
                version: 1,
                labels: vec!["x".into()],
                string_lengths: vec![],
                vector_lengths: vec![],
                defaults: vec![0f32.to_le_bytes().to_vec()],
            };
            c.add_feature_group("user", id, label, DataType::Fp32, 1, 0, vec![spec]).unwrap();
        }
        // FG a in store "one", FG b in store "two": a request for both reads both stores at once.
        c.set_storage("user", &["id".into()], &[(1, "one".into()), (2, "two".into())]).unwrap();
        if in_process {
            c.set_in_process_cache("user", 60, 10, &[1, 2]).unwrap();
        }
        if distributed {
            c.set_distributed_cache("user", 60, 10, &[1, 2]).unwrap();
        }
        c
    }

    fn block(c: &Catalog, fg: &str, v: f32) -> Bytes {
        let g = c.entity("user").unwrap().fg(fg).unwrap();
        encode_rows(g, Values::F32(&[v]), 1, NOW, false, &Limits::NONE).unwrap().remove(0).into()
    }

    fn setup(in_process: bool, distributed: bool) -> (Catalog, Tiers, Arc<MapStore>, Arc<MapStore>) {
        let c = catalog(in_process, distributed);
        let (one, two) = (Arc::new(MapStore::default()), Arc::new(MapStore::default()));
        one.blocks.lock().unwrap().insert(("k1".into(), 1), block(&c, "a", 1.5));
        two.blocks.lock().unwrap().insert(("k1".into(), 2), block(&c, "b", 2.5));
        let tiers = Tiers::new(Some(Arc::new(BlockCache::new(1 << 20))));
        tiers.set_store("one", one.clone());
        tiers.set_store("two", two.clone());
        (c, tiers, one, two)
    }

    fn values(c: &Catalog, tiers: &Tiers, keys: &[&str]) -> (Vec<Array>, ReadReport) {
        let p = plan(c, "user", &[], &[("a", vec!["x"]), ("b", vec!["x"])]).unwrap();
        let (got, report) = block_on(tiers.read(&p, keys, None));
        let blocks = got.unwrap().expect("served natively");
        let counted = blocks.with_blocks(|b| p.assemble_counted(b, NOW)).unwrap();
        (counted.into_iter().map(|c| c.result.values).collect(), report)
    }

    #[test]
    fn stores_fan_out_then_the_in_process_cache_serves_hits_and_negative_entries() {
        let (c, tiers, one, two) = setup(true, false);
        let (got, report) = values(&c, &tiers, &["k1", "k2", "k1"]);
        assert_eq!(got, vec![Array::F32(vec![1.5, 0.0, 1.5]), Array::F32(vec![2.5, 0.0, 2.5])]);
        assert_eq!(report.in_process, Some((0, 3)));
        assert_eq!(report.store_calls.iter().map(|s| s.store_id.as_str()).collect::<Vec<_>>(), ["one", "two"]);
        // Second read: every key (the missing k2 too: a negative entry) from the cache, no store read.
        let (again, report) = values(&c, &tiers, &["k2", "k1"]);
        assert_eq!(again, vec![Array::F32(vec![0.0, 1.5]), Array::F32(vec![0.0, 2.5])]);
        assert_eq!(report.in_process, Some((2, 0)));
        assert!(report.store_calls.is_empty());
        assert_eq!((one.reads.load(Ordering::SeqCst), two.reads.load(Ordering::SeqCst)), (1, 1));
        // An invalidation drops the entry: the next read goes to the stores again.
        tiers.invalidate_local("user", &["k1"]);
        let (_, report) = values(&c, &tiers, &["k1"]);
        assert_eq!(report.in_process, Some((0, 1)));
        assert_eq!(one.reads.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_read_racing_an_invalidation_does_not_keep_what_it_read() {
        let (c, tiers, one, _two) = setup(true, false);
        let tiers = Arc::new(tiers);
        let during = Arc::clone(&tiers);
        *one.during_read.lock().unwrap() = Some(Box::new(move || during.invalidate_local("user", &["k1"])));
        values(&c, &tiers, &["k1"]);
        *one.during_read.lock().unwrap() = None;
        let (_, report) = values(&c, &tiers, &["k1"]);
        assert_eq!(report.in_process, Some((0, 1)), "the racing read's blocks were dropped");
        // A reset racing a read drops it too; an invalidation of another entity does not.
        let during = Arc::clone(&tiers);
        *one.during_read.lock().unwrap() = Some(Box::new(move || during.invalidate_local("item", &["k2"])));
        values(&c, &tiers, &["k2"]);
        let (_, report) = values(&c, &tiers, &["k2"]);
        assert_eq!(report.in_process, Some((1, 0)));
        let during = Arc::clone(&tiers);
        *one.during_read.lock().unwrap() = Some(Box::new(move || during.reset_local()));
        values(&c, &tiers, &["k3"]);
        *one.during_read.lock().unwrap() = None;
        let (_, report) = values(&c, &tiers, &["k3"]);
        assert_eq!(report.in_process, Some((0, 1)));
    }

    #[test]
    fn an_unhealthy_bus_keeps_the_in_process_cache_out() {
        let (c, tiers, one, _two) = setup(true, false);
        tiers.bus_healthy_for(Some(0.0));
        values(&c, &tiers, &["k1"]);
        let (_, report) = values(&c, &tiers, &["k1"]);
        assert_eq!(report.in_process, None, "not consulted");
        assert_eq!(one.reads.load(Ordering::SeqCst), 2);
        tiers.bus_healthy_for(Some(60.0));
        values(&c, &tiers, &["k1"]);
        assert_eq!(values(&c, &tiers, &["k1"]).1.in_process, Some((1, 0)));
    }

    #[test]
    fn policy_and_flags_choose_the_tiers() {
        // No in-process policy: never consulted, never filled.
        let (c, tiers, one, _two) = setup(false, false);
        values(&c, &tiers, &["k1"]);
        assert_eq!(values(&c, &tiers, &["k1"]).1.in_process, None);
        assert_eq!(one.reads.load(Ordering::SeqCst), 2);
        // The distributed tier: hits served from it, misses read from the stores and backfilled.
        let (c, tiers, one, _two) = setup(false, true);
        let remote = Arc::new(MapRemote::default());
        remote.values.lock().unwrap().insert("k1".into(), HashMap::from([(1, block(&c, "a", 7.0)), (2, Bytes::new())]));
        tiers.set_remote(remote.clone());
        let (got, report) = values(&c, &tiers, &["k1", "k2"]);
        assert_eq!(got[0], Array::F32(vec![7.0, 0.0]));
        assert_eq!(report.distributed, Some((1, 1)));
        let jobs = remote.backfills.lock().unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(
            (jobs[0].keys.clone(), jobs[0].fg_ids.clone(), jobs[0].blocks.len()),
            (vec!["k2".into()], vec![1, 2], 2)
        );
        assert_eq!(one.reads.load(Ordering::SeqCst), 1);
        // A distributed cache the core cannot call: declined before any I/O.
        tiers.set_remote_elsewhere();
        let p = plan(&c, "user", &[], &[("a", vec!["x"])]).unwrap();
        assert!(!tiers.serves(&p));
        assert!(block_on(tiers.read(&p, &["k1"], None)).0.unwrap().is_none());
        // A store that is not native: declined.
        let tiers = Tiers::new(None);
        tiers.set_store("one", one.clone());
        let p = plan(&c, "user", &[], &[("a", vec!["x"]), ("b", vec!["x"])]).unwrap();
        assert!(!tiers.serves(&p));
    }

    #[test]
    fn past_the_deadline_only_cache_hits_answer() {
        let (c, tiers, one, _two) = setup(true, false);
        values(&c, &tiers, &["k1"]);
        let p = plan(&c, "user", &[], &[("a", vec!["x"]), ("b", vec!["x"])]).unwrap();
        let past = Some(Instant::now());
        assert!(block_on(tiers.read(&p, &["k1"], past)).0.unwrap().is_some());
        let (got, report) = block_on(tiers.read(&p, &["k1", "k2"], past));
        assert_eq!(got.unwrap_err().kind(), crate::ErrorKind::DeadlineExceeded);
        assert!(report.store_calls.is_empty());
        assert_eq!(one.reads.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_store_slower_than_the_deadline_is_cut_off_on_the_runtime() {
        let (c, tiers, _a, b) = setup(false, false);
        b.delay_ms.store(2_000, Ordering::SeqCst);
        crate::store::runtime::runtime();
        let p = plan(&c, "user", &[], &[("a", vec!["x"]), ("b", vec!["x"])]).unwrap();
        let deadline = Some(Instant::now() + std::time::Duration::from_millis(100));
        let (got, report) = crate::store::runtime::block_on(tiers.read(&p, &["k1"], deadline));
        // The slow store would have answered Ok: the error is the deadline cutting its read off.
        let e = got.unwrap_err();
        assert!(matches!(e, crate::Error::DeadlineExceeded(_)), "{e}");
        assert!(e.to_string().contains("map store did not answer 1 keys before the deadline"), "{e}");
        assert!(report.store_calls.iter().any(|c| c.failed));
    }

    #[test]
    fn a_store_failure_is_the_reads_error_and_is_reported() {
        let (c, tiers, _one, two) = setup(true, false);
        two.fail.store(true, Ordering::SeqCst);
        let p = plan(&c, "user", &[], &[("a", vec!["x"]), ("b", vec!["x"])]).unwrap();
        let (got, report) = block_on(tiers.read(&p, &["k1"], None));
        assert_eq!(got.unwrap_err().kind(), crate::ErrorKind::Unavailable);
        let failed: Vec<_> = report.store_calls.iter().map(|s| (s.store_id.as_str(), s.failed)).collect();
        assert_eq!(failed, [("one", false), ("two", true)]);
        // Nothing was cached.
        two.fail.store(false, Ordering::SeqCst);
        assert_eq!(values(&c, &tiers, &["k1"]).1.in_process, Some((0, 1)));
    }

    /// [`setup`] with both stores registered for writes too.
    fn setup_writable(in_process: bool, distributed: bool) -> (Catalog, Tiers, Arc<MapStore>, Arc<MapStore>) {
        let (c, tiers, one, two) = setup(in_process, distributed);
        tiers.set_writer("one", one.clone());
        tiers.set_writer("two", two.clone());
        (c, tiers, one, two)
    }

    fn persist_blocks(c: &Catalog, rows: &[(&str, &str, f32)]) -> Vec<PersistBlock> {
        let e = c.entity("user").unwrap();
        rows.iter()
            .map(|(key, fg, v)| PersistBlock {
                key: vec![(*key).to_owned()],
                fg_id: e.fg(fg).unwrap().id,
                block: block(c, fg, *v).to_vec(),
                expires_at: 0,
            })
            .collect()
    }

    /// Writes `rows` through `tiers` natively (panics when declined).
    fn write(c: &Catalog, tiers: &Tiers, rows: &[(&str, &str, f32)]) -> (Result<()>, Vec<StoreCall>) {
        let blocks = persist_blocks(c, rows);
        let route = tiers.write_route(c.entity("user").unwrap(), &blocks).expect("written natively");
        let keys: Vec<String> = rows.iter().map(|r| r.0.to_owned()).collect();
        let mut names = keys.clone();
        names.dedup();
        block_on(tiers.write_routed(&route, &blocks, &keys, &names, None))
    }

    #[test]
    fn a_write_goes_to_each_fgs_store_and_drops_the_keys_from_the_in_process_cache() {
        let (c, tiers, one, two) = setup(true, false);
        let blocks = persist_blocks(&c, &[("k1", "a", 9.0)]);
        // Registered for reads only (a store whose writes Python must see): declined.
        assert!(tiers.write_route(c.entity("user").unwrap(), &blocks).is_none());
        tiers.set_writer("one", one.clone());
        tiers.set_writer("two", two.clone());
        assert_eq!(values(&c, &tiers, &["k1"]).0[0], Array::F32(vec![1.5]), "cached now");
        let (got, calls) = write(&c, &tiers, &[("k1", "a", 9.0), ("k1", "b", 8.0), ("k2", "a", 7.0)]);
        got.unwrap();
        assert_eq!(
            calls.iter().map(|s| (s.store_id.as_str(), s.op, s.failed)).collect::<Vec<_>>(),
            [("one", "write", false), ("two", "write", false)]
        );
        let (after, report) = values(&c, &tiers, &["k1", "k2"]);
        assert_eq!(after, vec![Array::F32(vec![9.0, 7.0]), Array::F32(vec![8.0, 0.0])]);
        assert_eq!(report.in_process, Some((0, 2)), "the written keys were dropped");
        assert_eq!(one.blocks.lock().unwrap().len(), 2);
        // Past its deadline a write calls no store.
        let blocks = persist_blocks(&c, &[("k9", "a", 1.0)]);
        let route = tiers.write_route(c.entity("user").unwrap(), &blocks).unwrap();
        let keys = vec!["k9".to_owned()];
        let (got, calls) = block_on(tiers.write_routed(&route, &blocks, &keys, &keys, Some(Instant::now())));
        assert_eq!(got.unwrap_err().kind(), crate::ErrorKind::DeadlineExceeded);
        assert!(calls.is_empty());
        assert_eq!(one.blocks.lock().unwrap().len(), 2);
    }

    #[test]
    fn a_failed_store_fails_the_write_and_the_keys_another_store_took_are_still_dropped() {
        let (c, tiers, one, two) = setup_writable(true, false);
        values(&c, &tiers, &["k1"]);
        two.fail.store(true, Ordering::SeqCst);
        let (got, calls) = write(&c, &tiers, &[("k1", "a", 9.0), ("k1", "b", 8.0)]);
        assert_eq!(got.unwrap_err().kind(), crate::ErrorKind::Unavailable);
        assert_eq!(calls.iter().map(|s| s.failed).collect::<Vec<_>>(), [false, true]);
        two.fail.store(false, Ordering::SeqCst);
        let (after, report) = values(&c, &tiers, &["k1"]);
        assert_eq!(report.in_process, Some((0, 1)));
        assert_eq!(after, vec![Array::F32(vec![9.0]), Array::F32(vec![2.5])], "store two kept its block");
        // Nothing written anywhere: nothing to drop.
        one.fail.store(true, Ordering::SeqCst);
        two.fail.store(true, Ordering::SeqCst);
        let mark = tiers.mark("user");
        assert!(write(&c, &tiers, &[("k1", "a", 1.0), ("k1", "b", 1.0)]).0.is_err());
        assert_eq!(tiers.mark("user"), mark);
    }

    #[test]
    fn the_distributed_cache_and_the_redis_bus_hear_of_a_write_in_one_call() {
        let rows = [("k1", "a", 9.0), ("k1", "b", 8.0), ("k2", "a", 1.0)];
        let names = vec!["k1".to_owned(), "k2".to_owned()];
        // What the distributed cache is asked after one write, with the entity's tiers as given.
        let invalidations = |in_process: bool, distributed: bool| {
            let (c, tiers, ..) = setup_writable(in_process, distributed);
            let remote = Arc::new(MapRemote::default());
            tiers.set_remote(remote.clone());
            tiers.set_bus_channel("ofs:c:invalidations");
            write(&c, &tiers, &rows).0.unwrap();
            let asked = remote.invalidations.lock().unwrap().clone();
            asked
        };
        let published = Some(("ofs:c:invalidations".to_owned(), names.clone()));
        // Both tiers: tombstones and the message in one call.
        assert_eq!(invalidations(true, true), [("user".to_owned(), names.clone(), published.clone())]);
        // In-process cache only: the message alone, through the distributed cache's connection.
        assert_eq!(invalidations(true, false), [("user".to_owned(), vec![], published)]);
        // Distributed cache only: tombstones, no message (no process caches the entity).
        assert_eq!(invalidations(false, true), [("user".to_owned(), names, None)]);
    }

    #[test]
    fn a_write_is_declined_when_a_tier_it_must_tell_is_not_native() {
        let (c, tiers, ..) = setup_writable(true, true);
        let blocks = persist_blocks(&c, &[("k1", "a", 9.0)]);
        let entity = c.entity("user").unwrap();
        tiers.set_remote_elsewhere();
        assert!(tiers.write_route(entity, &blocks).is_none(), "a Python distributed cache");
        let (c, tiers, one, _two) = setup(true, false);
        tiers.set_writer("one", one.clone());
        let entity = c.entity("user").unwrap();
        assert!(tiers.write_route(entity, &blocks).is_some());
        tiers.set_bus_elsewhere();
        assert!(tiers.write_route(entity, &blocks).is_none(), "a bus the core cannot publish to");
        tiers.set_bus_channel("ch");
        assert!(tiers.write_route(entity, &blocks).is_none(), "a Redis bus without a native distributed cache");
        // An FG whose store is not registered for writes.
        let both = persist_blocks(&c, &[("k1", "a", 9.0), ("k1", "b", 9.0)]);
        let tiers = Tiers::new(None);
        tiers.set_writer("one", one.clone());
        assert!(tiers.write_route(entity, &both).is_none());
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn the_invalidation_log_gets_a_row_per_write_and_its_failures_are_kept_not_raised() {
        let dir = tempfile::tempdir().unwrap();
        let (c, tiers, one, _two) = setup_writable(true, false);
        let path = dir.path().join("invalidations.db");
        tiers.set_bus_log(Arc::new(InvalidationLog::new(&path, "me", 60.0)));
        let blocks = persist_blocks(&c, &[("k1", "a", 9.0)]);
        assert!(tiers.write_route(c.entity("user").unwrap(), &blocks).unwrap().blocking());
        write(&c, &tiers, &[("k1", "a", 9.0), ("k2", "a", 9.0)]).0.unwrap();
        let conn = rusqlite::Connection::open(&path).unwrap();
        let row: (String, String, String) = conn
            .query_row("SELECT source, entity, keys FROM invalidations", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap();
        assert_eq!(row, ("me".into(), "user".into(), "[\"k1\",\"k2\"]".into()));
        // A log that cannot be written: the write succeeds, the failure is kept for the next take.
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        tiers.set_bus_log(Arc::new(InvalidationLog::new(dir.path().join("file").join("log.db"), "me", 60.0)));
        write(&c, &tiers, &[("k3", "a", 1.0)]).0.unwrap();
        assert_eq!(one.blocks.lock().unwrap().len(), 3);
        let (errors, count) = tiers.take_bus_errors();
        assert_eq!((errors.len(), count), (1, 1));
        assert!(errors[0].contains("log.db"), "{errors:?}");
        assert_eq!(tiers.take_bus_errors(), (vec![], 0));
    }
}
