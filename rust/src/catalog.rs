//! The registry compiled for serving: per entity its canonical key order, per feature group every
//! schema version's block layout, feature positions and default cells. Built once per registry
//! revision and then only read (shared behind an `Arc`), so request threads never lock.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::cell;
use crate::dtype::DataType;
use crate::error::{Error, Result};
use crate::meta::BlockMeta;

/// One schema version of a feature group.
#[derive(Debug, Clone)]
pub struct Version {
    pub meta: BlockMeta,
    pub labels: Vec<String>,
    /// Default of each feature, as a cell of the FG's type.
    pub defaults: Vec<Vec<u8>>,
    index: HashMap<String, usize>,
}

impl Version {
    /// Position of feature `label` in this version's blocks.
    pub fn position(&self, label: &str) -> Option<usize> {
        self.index.get(label).copied()
    }
}

/// A feature group with every version it ever had.
#[derive(Debug, Clone)]
pub struct FeatureGroup {
    pub id: u16,
    pub label: String,
    pub dtype: DataType,
    pub active_version: u16,
    pub ttl_seconds: u64,
    pub versions: BTreeMap<u16, Version>,
    /// Whether the FG's blocks may be kept in the in-process cache (the registry's FG flag).
    pub in_process_cache: bool,
    /// Whether the FG's blocks may be kept in the distributed cache (the registry's FG flag).
    pub distributed_cache: bool,
    /// The registry id of the store holding the FG's blocks (empty: not given, so the native read
    /// path cannot read it).
    pub store_id: String,
}

impl FeatureGroup {
    /// The active version (always present: checked when the catalog is built).
    pub fn active(&self) -> &Version {
        &self.versions[&self.active_version]
    }

    /// Layout of the version a block was written with.
    pub fn version(&self, v: u16) -> Result<&Version> {
        self.versions.get(&v).ok_or_else(|| {
            Error::corrupt(format!("feature group {:?} has no schema version {v} (stored block)", self.label))
        })
    }
}

/// An entity: its ordered key labels and feature groups.
#[derive(Debug, Clone, Default)]
pub struct Entity {
    pub label: String,
    pub keys: Vec<String>,
    pub fgs: Vec<Arc<FeatureGroup>>,
    /// The entity's in-process cache policy `(ttl seconds, jitter %)`, when enabled.
    pub in_process_cache: Option<(u64, u8)>,
    /// The entity's distributed cache policy `(ttl seconds, jitter %)`, when enabled.
    pub distributed_cache: Option<(u64, u8)>,
    /// The stored names of the key columns (`Key.column`), in canonical key order.
    pub key_columns: Vec<String>,
    by_label: HashMap<String, usize>,
}

impl Entity {
    pub fn fg(&self, label: &str) -> Result<&Arc<FeatureGroup>> {
        self.by_label
            .get(label)
            .map(|&i| &self.fgs[i])
            .ok_or_else(|| Error::NotFound { what: "feature group", name: format!("{}/{label}", self.label) })
    }

    /// Permutation from the caller's key order to the canonical one: `canonical[i] = given[perm[i]]`.
    /// An empty `keys_schema` means the entity's own key order (an addition to the reference, which
    /// requires the labels: clients that know the order need not repeat it).
    pub fn key_permutation(&self, keys_schema: &[&str]) -> Result<Vec<usize>> {
        if keys_schema.is_empty() {
            return Ok((0..self.keys.len()).collect());
        }
        if keys_schema.len() != self.keys.len() {
            return Err(Error::InvalidInput(format!(
                "entity {:?} is keyed by {:?}; keys_schema {:?} does not match",
                self.label, self.keys, keys_schema
            )));
        }
        self.keys
            .iter()
            .map(|k| {
                keys_schema.iter().position(|g| g == k).ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "keys_schema {keys_schema:?} lacks key {k:?} of entity {:?} (keys {:?})",
                        self.label, self.keys
                    ))
                })
            })
            .collect()
    }
}

/// One version's description, as handed over by the registry.
#[derive(Debug, Clone)]
pub struct VersionSpec {
    pub version: u16,
    pub labels: Vec<String>,
    pub string_lengths: Vec<u32>,
    pub vector_lengths: Vec<u32>,
    pub defaults: Vec<Vec<u8>>,
}

/// The compiled registry.
#[derive(Debug, Default)]
pub struct Catalog {
    pub revision: u64,
    entities: HashMap<String, Entity>,
}

impl Catalog {
    pub fn new(revision: u64) -> Catalog {
        Catalog { revision, entities: HashMap::new() }
    }

    pub fn entity(&self, label: &str) -> Result<&Entity> {
        self.entities.get(label).ok_or_else(|| Error::NotFound { what: "entity", name: label.to_owned() })
    }

    /// Declares an entity and its canonical key order (idempotent for the same keys).
    pub fn add_entity(&mut self, label: &str, keys: &[String]) -> Result<()> {
        if keys.is_empty() {
            return Err(Error::InvalidMeta(format!("entity {label:?} has no keys")));
        }
        let e = self.entities.entry(label.to_owned()).or_insert_with(|| Entity {
            label: label.to_owned(),
            keys: keys.to_vec(),
            key_columns: keys.to_vec(),
            ..Entity::default()
        });
        if e.keys != keys {
            return Err(Error::InvalidMeta(format!("entity {label:?} declared twice with different keys")));
        }
        Ok(())
    }

    /// Adds a feature group with all its versions; every default is checked against its layout.
    #[allow(clippy::too_many_arguments)] // One call per FG mirrors the registry record.
    pub fn add_feature_group(
        &mut self,
        entity: &str,
        id: u16,
        label: &str,
        dtype: DataType,
        active_version: u16,
        ttl_seconds: u64,
        versions: Vec<VersionSpec>,
    ) -> Result<()> {
        let e = self
            .entities
            .get_mut(entity)
            .ok_or_else(|| Error::InvalidMeta(format!("feature group {label:?} of undeclared entity {entity:?}")))?;
        if e.by_label.contains_key(label) || e.fgs.iter().any(|g| g.id == id) {
            return Err(Error::InvalidMeta(format!("feature group {entity}/{label} (id {id}) declared twice")));
        }
        let mut compiled = BTreeMap::new();
        for v in versions {
            compiled.insert(v.version, compile_version(entity, label, dtype, v)?);
        }
        if !compiled.contains_key(&active_version) {
            return Err(Error::InvalidMeta(format!(
                "{entity}/{label}: active version {active_version} is not defined"
            )));
        }
        e.by_label.insert(label.to_owned(), e.fgs.len());
        e.fgs.push(Arc::new(FeatureGroup {
            id,
            label: label.to_owned(),
            dtype,
            active_version,
            ttl_seconds,
            versions: compiled,
            in_process_cache: false,
            distributed_cache: false,
            store_id: String::new(),
        }));
        Ok(())
    }

    /// Enables the in-process cache for `entity` (entries live `ttl_seconds` ± `jitter_percent`) and
    /// for its FGs `fg_ids`; FGs not listed are never cached in process.
    pub fn set_in_process_cache(
        &mut self,
        entity: &str,
        ttl_seconds: u64,
        jitter_percent: u8,
        fg_ids: &[u16],
    ) -> Result<()> {
        let e = self
            .entities
            .get_mut(entity)
            .ok_or_else(|| Error::InvalidMeta(format!("cache policy for undeclared entity {entity:?}")))?;
        if ttl_seconds == 0 {
            return Err(Error::InvalidMeta(format!("entity {entity:?}: an in-process cache needs a TTL above 0")));
        }
        e.in_process_cache = Some((ttl_seconds, jitter_percent.min(100)));
        for &id in fg_ids {
            Arc::make_mut(e.fg_by_id(id, "cache policy")?).in_process_cache = true;
        }
        Ok(())
    }

    /// Enables the distributed cache for `entity` (keys live `ttl_seconds` ± `jitter_percent`) and for
    /// its FGs `fg_ids`; FGs not listed never use it.
    pub fn set_distributed_cache(
        &mut self,
        entity: &str,
        ttl_seconds: u64,
        jitter_percent: u8,
        fg_ids: &[u16],
    ) -> Result<()> {
        let e = self.entity_mut(entity, "distributed cache policy")?;
        if ttl_seconds == 0 {
            return Err(Error::InvalidMeta(format!("entity {entity:?}: a distributed cache needs a TTL above 0")));
        }
        e.distributed_cache = Some((ttl_seconds, jitter_percent.min(100)));
        for &id in fg_ids {
            Arc::make_mut(e.fg_by_id(id, "distributed cache policy")?).distributed_cache = true;
        }
        Ok(())
    }

    /// Where `entity`'s blocks live: its key columns' stored names (canonical order) and, per FG id,
    /// the registry id of its store (what the native read path reads).
    pub fn set_storage(&mut self, entity: &str, key_columns: &[String], fg_stores: &[(u16, String)]) -> Result<()> {
        let e = self.entity_mut(entity, "storage")?;
        if key_columns.len() != e.keys.len() {
            return Err(Error::InvalidMeta(format!(
                "entity {entity:?}: {} key columns for {} keys",
                key_columns.len(),
                e.keys.len()
            )));
        }
        e.key_columns = key_columns.to_vec();
        for (id, store) in fg_stores {
            Arc::make_mut(e.fg_by_id(*id, "storage")?).store_id.clone_from(store);
        }
        Ok(())
    }

    fn entity_mut(&mut self, entity: &str, what: &str) -> Result<&mut Entity> {
        self.entities
            .get_mut(entity)
            .ok_or_else(|| Error::InvalidMeta(format!("{what} for undeclared entity {entity:?}")))
    }
}

impl Entity {
    fn fg_by_id(&mut self, id: u16, what: &str) -> Result<&mut Arc<FeatureGroup>> {
        let label = &self.label;
        self.fgs
            .iter_mut()
            .find(|g| g.id == id)
            .ok_or_else(|| Error::InvalidMeta(format!("{what} names feature group id {id} not in entity {label:?}")))
    }
}

fn compile_version(entity: &str, fg: &str, dtype: DataType, v: VersionSpec) -> Result<Version> {
    let n = v.labels.len();
    let ctx = |e: Error| Error::InvalidMeta(format!("{entity}/{fg} version {}: {e}", v.version));
    let meta = BlockMeta::new(dtype, v.version, n, v.string_lengths, v.vector_lengths).map_err(ctx)?;
    if v.defaults.len() != n {
        return Err(ctx(Error::InvalidInput(format!("{} defaults for {n} features", v.defaults.len()))));
    }
    for (i, d) in v.defaults.iter().enumerate() {
        let vlen = meta.vector_lengths().get(i).copied().unwrap_or(0);
        cell::decode(dtype, d, vlen)
            .map_err(|e| ctx(Error::InvalidInput(format!("default of feature {:?}: {e}", v.labels[i]))))?;
    }
    let index: HashMap<String, usize> = v.labels.iter().enumerate().map(|(i, l)| (l.clone(), i)).collect();
    if index.len() != n {
        return Err(ctx(Error::InvalidInput("duplicate feature labels".into())));
    }
    Ok(Version { meta, labels: v.labels, defaults: v.defaults, index })
}
