//! Retrieves answered whole from the in-process cache ([`BlockCache`]), without reading a store: when
//! a plan allows the cache (its entity and every requested FG cache in process), every key's entry is
//! named and looked up in turn, and the first miss ends the attempt (the caller then reads the stores
//! for all keys). The requested FGs' blocks are then taken out of the entries and assembled.

use std::sync::Arc;

use crate::cache::{self, BlockCache};
use crate::cell::FloatForm;
use crate::engine::{blocks_from_csdbs, Counted, Plan};
use crate::error::Result;
use crate::keys;

/// One attempt to answer a request's keys from the cache: give each key's values with
/// [`CacheLookup::push`], end the key with [`CacheLookup::hit`]; stop at the first miss.
#[derive(Debug)]
pub struct CacheLookup<'a> {
    plan: &'a Plan,
    cache: &'a BlockCache,
    clock_ms: u64,
    /// The entry name being built: the entity's prefix, then the key's values so far.
    name: String,
    prefix: usize,
    values: usize,
    entries: Vec<Arc<[u8]>>,
}

impl<'a> CacheLookup<'a> {
    /// A lookup of `plan`'s keys in `cache`, or `None` when the plan may not use the in-process cache.
    pub fn new(plan: &'a Plan, cache: &'a BlockCache) -> Option<Self> {
        plan.in_process_cache?;
        let mut name = String::with_capacity(plan.entity.len() + 32);
        cache::push_entry_prefix(&mut name, &plan.entity);
        let prefix = name.len();
        Some(CacheLookup { plan, cache, clock_ms: cache::now_ms(), name, prefix, values: 0, entries: Vec::new() })
    }

    /// Adds the next value of the current key, in the entity's canonical key order.
    pub fn push(&mut self, value: &str) {
        keys::push_value(&mut self.name, self.values, value);
        self.values += 1;
    }

    /// Ends the current key and looks its entry up: false on a miss (the lookup is then over).
    pub fn hit(&mut self) -> bool {
        let entry = self.cache.entry(&self.name, self.clock_ms);
        self.name.truncate(self.prefix);
        self.values = 0;
        entry.map(|e| self.entries.push(e)).is_some()
    }

    /// Keys that hit so far.
    pub fn keys(&self) -> usize {
        self.entries.len()
    }

    /// Every key's values of the plan's FGs ([`Plan::assemble_counted_as`]), or `None` when an entry
    /// lacks one of the FGs.
    pub fn assemble(self, now: u64, form: FloatForm) -> Result<Option<Vec<Counted>>> {
        let plan = self.plan;
        self.with_blocks(|blocks| plan.assemble_counted_as(blocks, now, form))
    }

    /// `f(blocks)` with the plan's blocks key-major (`blocks[k * fgs + f]`) out of the entries, or
    /// `None` when an entry lacks one of the FGs.
    pub fn with_blocks<R>(self, f: impl FnOnce(&[&[u8]]) -> Result<R>) -> Result<Option<R>> {
        let csdbs: Vec<&[u8]> = self.entries.iter().map(|e| &e[..]).collect();
        match blocks_from_csdbs(&csdbs, &self.plan.fg_ids())? {
            Some(blocks) => f(&blocks).map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Catalog, VersionSpec};
    use crate::engine::{encode_rows, plan};
    use crate::limits::Limits;
    use crate::psdb::Array;
    use crate::values::Values;
    use crate::DataType;

    const NOW: u64 = 1_772_366_400;

    fn catalog(cached: bool) -> Catalog {
        let mut c = Catalog::new(1);
        c.add_entity("pair", &["a".into(), "b".into()]).unwrap();
        let spec = VersionSpec {
            version: 1,
            labels: vec!["x".into()],
            string_lengths: vec![],
            vector_lengths: vec![],
            defaults: vec![0f32.to_le_bytes().to_vec()],
        };
        c.add_feature_group("pair", 1, "g", DataType::Fp32, 1, 0, vec![spec]).unwrap();
        if cached {
            c.set_in_process_cache("pair", 60, 0, &[1]).unwrap();
        }
        c
    }

    #[test]
    fn keys_are_named_as_the_cache_names_them_and_a_miss_ends_the_lookup() {
        let c = catalog(true);
        let p = plan(&c, "pair", &["b", "a"], &[("g", vec!["x"])]).unwrap();
        let cache = BlockCache::new(1 << 20);
        let fg = c.entity("pair").unwrap().fg("g").unwrap();
        let block = encode_rows(fg, Values::F32(&[2.5]), 1, NOW, false, &Limits::NONE).unwrap().remove(0);
        // The canonical key string of ("x|y", "z"): what stores and writes name it by.
        let key = keys::encode_key(["x|y", "z"]);
        cache.put("pair", &key, &[1], &[&block], 60, 0).unwrap();

        let mut lookup = CacheLookup::new(&p, &cache).unwrap();
        for _ in 0..2 {
            lookup.push("x|y");
            lookup.push("z");
            assert!(lookup.hit());
        }
        assert_eq!(lookup.keys(), 2);
        let counted = lookup.assemble(NOW, FloatForm::Widened).unwrap().unwrap();
        assert_eq!(counted[0].result.values, Array::F32(vec![2.5, 2.5]));
        assert_eq!(counted[0].counts, [2, 0, 0]);

        let mut lookup = CacheLookup::new(&p, &cache).unwrap();
        lookup.push("x");
        lookup.push("y|z");
        assert!(!lookup.hit());
        // Not cached in process: no lookup at all.
        let uncached = catalog(false);
        assert!(CacheLookup::new(&plan(&uncached, "pair", &[], &[("g", vec!["x"])]).unwrap(), &cache).is_none());
    }
}
