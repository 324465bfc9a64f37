//! The in-process block cache: per (entity, key) one CSDB of *uncompressed* FG blocks, so a hit never
//! pays for zstd. Bounded by bytes (`quick_cache`'s S3-FIFO with a byte weigher), sharded and thread-safe,
//! each entry with its own TTL (the entity's cache TTL ± jitter). An empty block is a negative entry: the
//! store had nothing for that FG, and asking again within the TTL is a hit.
//!
//! Entries hold the union of the FGs fetched for a key, so requests for different FG subsets of one key
//! share one entry instead of evicting each other (the reference caches per requested subset).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use quick_cache::sync::Cache;
use quick_cache::Weighter;

use crate::csdb;
use crate::error::Result;
use crate::psdb::{Header, HEADER_LEN};

#[derive(Debug, Clone)]
struct Entry {
    csdb: Arc<[u8]>,
    expires_at_ms: u64,
}

#[derive(Debug, Clone, Copy)]
struct ByBytes;

impl Weighter<String, Entry> for ByBytes {
    fn weight(&self, key: &String, val: &Entry) -> u64 {
        // Key, value and a fixed overhead per entry (Arc, map slot).
        (key.len() + val.csdb.len() + 64) as u64
    }
}

/// A byte-bounded cache of uncompressed FG blocks per entity key.
#[derive(Debug)]
pub struct BlockCache {
    cache: Cache<String, Entry, ByBytes>,
}

/// Milliseconds since the unix epoch (the clock entry expiry is measured on).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn cache_key(entity: &str, key: &str) -> String {
    let mut k = String::with_capacity(entity.len() + 1 + key.len());
    push_entry_prefix(&mut k, entity);
    k.push_str(key);
    k
}

/// Starts the name of an entry of `entity`: the canonical key string (`crate::keys`) follows it.
pub fn push_entry_prefix(out: &mut String, entity: &str) {
    out.push_str(entity);
    out.push('\0');
}

/// The block with its payload decompressed and the compression bits cleared; blocks whose frame does
/// not state its size (or that do not parse) are kept as they are, the decoder handles them.
pub fn uncompressed(block: &[u8]) -> Vec<u8> {
    let Ok(h) = Header::parse(block) else { return block.to_vec() };
    if h.compression == crate::psdb::Compression::None {
        return block.to_vec();
    }
    let payload = &block[HEADER_LEN..];
    let Ok(Some(size)) = zstd::zstd_safe::get_frame_content_size(payload) else { return block.to_vec() };
    // The thread's reused zstd context: a fresh one per block costs more than the decompression.
    match crate::psdb::zstd_decompress(payload, size as usize) {
        Ok(raw) => {
            let mut out = Vec::with_capacity(HEADER_LEN + raw.len());
            out.extend_from_slice(&block[..HEADER_LEN]);
            out[7] &= !0x0E;
            out.extend_from_slice(&raw);
            out
        }
        Err(_) => block.to_vec(),
    }
}

impl BlockCache {
    /// A cache holding at most `capacity_bytes` (keys, blocks and per-entry overhead).
    pub fn new(capacity_bytes: u64) -> BlockCache {
        let items = (capacity_bytes / 1024).clamp(16, 1 << 24) as usize;
        BlockCache { cache: Cache::with_weighter(items, capacity_bytes, ByBytes) }
    }

    /// The blocks of `fg_ids` for `key`, or `None` on a miss (absent, expired, or lacking one of the FGs).
    pub fn get(&self, entity: &str, key: &str, fg_ids: &[u16]) -> Result<Option<Vec<Vec<u8>>>> {
        let k = cache_key(entity, key);
        let Some(entry) = self.cache.get(&k) else { return Ok(None) };
        if entry.expires_at_ms <= now_ms() {
            self.cache.remove(&k);
            return Ok(None);
        }
        let mut out = vec![None; fg_ids.len()];
        if csdb::lookup(&entry.csdb, fg_ids, &mut out)? < fg_ids.len() {
            return Ok(None);
        }
        Ok(Some(out.into_iter().map(|b| b.unwrap_or_default().to_vec()).collect()))
    }

    /// The live entry named `name` (see [`push_entry_prefix`]) at `now_ms`.
    pub fn entry(&self, name: &str, now_ms: u64) -> Option<Arc<[u8]>> {
        self.cache.get(name).filter(|e| e.expires_at_ms > now_ms).map(|e| e.csdb)
    }

    /// Stores `blocks[i]` (stored form; decompressed here) as FG `fg_ids[i]` of `key`, merged with the
    /// FGs already cached for it, for `ttl_seconds` ± `jitter_percent`.
    pub fn put(
        &self,
        entity: &str,
        key: &str,
        fg_ids: &[u16],
        blocks: &[&[u8]],
        ttl_seconds: u64,
        jitter_percent: u8,
    ) -> Result<()> {
        if ttl_seconds == 0 {
            return Ok(());
        }
        let k = cache_key(entity, key);
        let mut merged: Vec<(u16, Vec<u8>)> = fg_ids.iter().zip(blocks).map(|(&fg, b)| (fg, uncompressed(b))).collect();
        if let Some(old) = self.cache.get(&k) {
            if old.expires_at_ms > now_ms() {
                for e in csdb::entries(&old.csdb)? {
                    let (fg, b) = e?;
                    if !fg_ids.contains(&fg) {
                        merged.push((fg, b.to_vec()));
                    }
                }
            }
        }
        let refs: Vec<(u16, &[u8])> = merged.iter().map(|(fg, b)| (*fg, b.as_slice())).collect();
        let value = csdb::encode_auto(&refs);
        let spread = ttl_seconds * 1000 * u64::from(jitter_percent.min(100)) / 100;
        let ttl_ms = (ttl_seconds * 1000 - spread) + fastrand::u64(0..=2 * spread);
        self.cache.insert(k, Entry { csdb: value.into(), expires_at_ms: now_ms() + ttl_ms.max(1) });
        Ok(())
    }

    /// Drops every cached FG of these keys (after a write).
    pub fn invalidate(&self, entity: &str, keys: &[&str]) {
        for key in keys {
            self.cache.remove(&cache_key(entity, key));
        }
    }

    /// Bytes currently held.
    pub fn weight(&self) -> u64 {
        self.cache.weight()
    }

    /// Entries currently held.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn clear(&self) {
        self.cache.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::psdb::{self, EncodeOptions};
    use crate::{BlockMeta, DataType, Values};

    fn block(v: f32) -> Vec<u8> {
        let meta = BlockMeta::scalar(DataType::Fp32, 1, 256).unwrap();
        let opts = EncodeOptions { expiry_at: 0, now: 0, compress: true, saturate: false };
        psdb::encode(&meta, Values::F32(&[v; 256]), &opts).unwrap()
    }

    #[test]
    fn hits_misses_merge_and_invalidate() {
        let c = BlockCache::new(1 << 20);
        let b1 = block(1.0);
        assert_eq!((b1[7] >> 1) & 7, 1, "compressible block");
        assert!(c.get("user", "u1", &[1]).unwrap().is_none());
        c.put("user", "u1", &[1, 2], &[&b1, &[]], 60, 10).unwrap();
        let got = c.get("user", "u1", &[2, 1]).unwrap().unwrap();
        assert!(got[0].is_empty(), "negative entry is a hit");
        assert_eq!((got[1][7] >> 1) & 7, 0, "cached uncompressed");
        assert_eq!(got[1].len(), HEADER_LEN + 1024);
        // A partial hit is a miss; putting FG 3 keeps 1 and 2.
        assert!(c.get("user", "u1", &[1, 3]).unwrap().is_none());
        c.put("user", "u1", &[3], &[&block(3.0)], 60, 0).unwrap();
        assert!(c.get("user", "u1", &[1, 2, 3]).unwrap().is_some());
        c.invalidate("user", &["u1"]);
        assert!(c.get("user", "u1", &[1]).unwrap().is_none());
    }

    #[test]
    fn bounded_by_bytes() {
        let c = BlockCache::new(64 * 1024);
        for i in 0..1000 {
            c.put("user", &format!("u{i}"), &[1], &[&block(i as f32)], 60, 0).unwrap();
        }
        assert!(c.weight() <= 64 * 1024, "{}", c.weight());
        assert!(c.len() < 1000);
    }

    #[test]
    fn zero_ttl_is_not_cached() {
        let c = BlockCache::new(1 << 20);
        c.put("user", "u1", &[1], &[&block(1.0)], 0, 0).unwrap();
        assert!(c.is_empty());
    }
}
