//! `persist.Query`: the server validates it and builds every block before anything is written
//! ([`parse_persist`]); clients build it from columnar values ([`encode_persist_query`]).

use prost::Message;

use super::values::{build_block, Cells, FeatureValues, Scratch, Values};
use crate::catalog::{Catalog, FeatureGroup as CatFg};
use crate::dtype::DataType;
use crate::error::{Error, Result};
use crate::limits::{try_vec, Limits};
use crate::wire::proto::{prescan, put_bytes};
use crate::{expiry, keys};

/// `persist.FeatureGroupSchema`: a feature group and the features each row gives.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FeatureGroupSchema {
    #[prost(string, tag = "1")]
    pub label: String,
    #[prost(string, repeated, tag = "2")]
    pub feature_labels: Vec<String>,
}

/// `persist.Data`: one row, its key values and one `FeatureValues` per listed feature group.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Data {
    #[prost(string, repeated, tag = "1")]
    pub key_values: Vec<String>,
    #[prost(message, repeated, tag = "2")]
    pub feature_values: Vec<FeatureValues>,
}

/// `persist.Query`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Query {
    #[prost(string, tag = "1")]
    pub entity_label: String,
    #[prost(string, repeated, tag = "2")]
    pub keys_schema: Vec<String>,
    #[prost(message, repeated, tag = "3")]
    pub feature_group_schema: Vec<FeatureGroupSchema>,
    #[prost(message, repeated, tag = "4")]
    pub data: Vec<Data>,
}

/// One block to write.
#[derive(Debug, Clone, PartialEq)]
pub struct PersistBlock {
    pub key: Vec<String>,
    pub fg_id: u16,
    pub block: Vec<u8>,
    pub expires_at: u64,
}

/// A validated persist request: the entity and every block to write.
#[derive(Debug)]
pub struct PersistRequest {
    pub entity: String,
    pub blocks: Vec<PersistBlock>,
}

impl PersistRequest {
    /// Each block's key string ([`crate::keys`]), and the distinct ones in order of first appearance:
    /// what the write invalidates in the caches.
    pub fn key_names(&self) -> (Vec<String>, Vec<String>) {
        let per_block: Vec<String> =
            self.blocks.iter().map(|b| keys::encode_key(b.key.iter().map(String::as_str))).collect();
        let mut seen = std::collections::HashSet::new();
        let distinct = per_block.iter().filter(|n| seen.insert(n.as_str())).cloned().collect();
        (per_block, distinct)
    }
}

/// Parses `persist.Query` bytes and builds every block; any invalid value fails the whole request
/// (naming entity, FG, feature and row) before anything can be written. The row count is checked
/// against `limits` before the request is decoded, and the blocks built are held to its byte limit.
pub fn parse_persist(cat: &Catalog, bytes: &[u8], now: u64, saturate: bool, limits: &Limits) -> Result<PersistRequest> {
    let (entity, rows) = prescan(bytes, 1, 4);
    limits.check_rows(rows, || format!("persist for entity {entity:?}"))?;
    let q = Query::decode(bytes).map_err(|e| Error::InvalidInput(format!("malformed persist.Query: {e}")))?;
    if q.entity_label.is_empty() {
        return Err(Error::InvalidInput("persist.Query names no entity (entity_label is empty)".into()));
    }
    let entity = cat.entity(&q.entity_label)?;
    let schema: Vec<&str> = q.keys_schema.iter().map(String::as_str).collect();
    let perm = entity.key_permutation(&schema)?;
    if q.feature_group_schema.is_empty() {
        return Err(Error::InvalidInput(format!("persist for entity {:?} names no feature group", entity.label)));
    }
    let fgs: Vec<(&CatFg, Vec<usize>)> = q
        .feature_group_schema
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if q.feature_group_schema[..i].iter().any(|o| o.label == s.label) {
                return Err(Error::InvalidInput(format!("feature group {:?} is listed twice", s.label)));
            }
            if s.feature_labels.is_empty() {
                // Every feature would get its default: a write that wipes the row, never what a
                // producer meant.
                return Err(Error::InvalidInput(format!(
                    "persist for entity {:?}: feature group {:?} lists no features (feature_labels is empty)",
                    entity.label, s.label
                )));
            }
            if let Some(dup) = s.feature_labels.iter().enumerate().find(|(j, l)| s.feature_labels[..*j].contains(l)) {
                return Err(Error::InvalidInput(format!(
                    "feature {:?} is listed twice for feature group {:?}",
                    dup.1, s.label
                )));
            }
            let fg = entity.fg(&s.label)?;
            let active = fg.active();
            let positions = s
                .feature_labels
                .iter()
                .map(|l| {
                    active.position(l).ok_or_else(|| Error::NotFound {
                        what: "feature",
                        name: format!("{}/{}/{l}", entity.label, fg.label),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok((&**fg, positions))
        })
        .collect::<Result<_>>()?;
    if q.data.is_empty() {
        return Err(Error::InvalidInput(format!("persist for entity {:?} has no rows (data is empty)", entity.label)));
    }
    let mut blocks = try_vec(q.data.len().saturating_mul(fgs.len()), "the blocks of a persist")?;
    let mut built = 0u64;
    for (r, row) in q.data.iter().enumerate() {
        if row.key_values.len() != perm.len() {
            return Err(Error::InvalidInput(format!(
                "row {r}: {} key values for keys_schema {:?}",
                row.key_values.len(),
                q.keys_schema
            )));
        }
        if row.feature_values.len() != fgs.len() {
            return Err(Error::InvalidInput(format!(
                "row {r}: {} feature value sets for {} feature groups",
                row.feature_values.len(),
                fgs.len()
            )));
        }
        if let Some(i) = row.key_values.iter().position(String::is_empty) {
            return Err(Error::InvalidInput(format!(
                "row {r}: key value for {:?} is empty",
                q.keys_schema.get(i).map_or("", String::as_str)
            )));
        }
        let key: Vec<String> = perm.iter().map(|&p| row.key_values[p].clone()).collect();
        for ((fg, positions), fv) in fgs.iter().zip(&row.feature_values) {
            let ctx =
                |e: Error| Error::InvalidInput(format!("row {r}, feature group {}/{}: {e}", entity.label, fg.label));
            let empty = Values::default();
            let values = fv.values.as_ref().unwrap_or(&empty);
            let block = build_block(fg, positions, values, now, saturate).map_err(ctx)?;
            built += (block.len() + key.iter().map(String::len).sum::<usize>()) as u64;
            limits.check_bytes(built, || {
                format!("persist for entity {:?} of {} rows, blocks built up to row {r}", entity.label, q.data.len())
            })?;
            let expires_at = expiry::expiry_for_ttl(fg.ttl_seconds, now)?;
            blocks.push(PersistBlock { key: key.clone(), fg_id: fg.id, block, expires_at });
        }
    }
    Ok(PersistRequest { entity: entity.label.clone(), blocks })
}

/// One feature group of a persist request.
#[derive(Debug)]
pub struct PersistGroup<'a> {
    pub label: String,
    pub dtype: DataType,
    pub feature_labels: Vec<String>,
    pub cells: Cells<'a>,
}

impl PersistGroup<'_> {
    /// Checks that the cells hold exactly `rows × features` cells of the right kind.
    fn check(&self, rows: usize) -> Result<()> {
        let n = self.feature_labels.len();
        let what = |e: String| Error::InvalidInput(format!("feature group {:?}: {e}", self.label));
        if n == 0 {
            return Err(what("no feature labels".into()));
        }
        self.cells.check(self.dtype, n, rows).map_err(what)
    }
}

/// Serialized `persist.Query`: `keys[r]` (aligned with `keys_schema`) gets row `r` of every group.
pub fn encode_persist_query<K: AsRef<str>>(
    entity: &str,
    keys_schema: &[String],
    keys: &[Vec<K>],
    groups: &[PersistGroup<'_>],
) -> Result<Vec<u8>> {
    if groups.is_empty() {
        return Err(Error::InvalidInput(format!("persist for entity {entity:?} names no feature group")));
    }
    let rows = keys.len();
    // An empty keys_schema leaves the key order to the server (the entity's own); the rows must still agree.
    let width = if keys_schema.is_empty() { keys.first().map_or(0, Vec::len) } else { keys_schema.len() };
    for (i, k) in keys.iter().enumerate() {
        if k.len() != width || width == 0 {
            return Err(Error::InvalidInput(format!("key {i} has {} values for keys_schema {keys_schema:?}", k.len())));
        }
    }
    for g in groups {
        g.check(rows)?;
    }
    let mut out = Vec::new();
    put_bytes(&mut out, 1, entity.as_bytes());
    for k in keys_schema {
        put_bytes(&mut out, 2, k.as_bytes());
    }
    let mut schema = Vec::new();
    for g in groups {
        schema.clear();
        put_bytes(&mut schema, 1, g.label.as_bytes());
        for l in &g.feature_labels {
            put_bytes(&mut schema, 2, l.as_bytes());
        }
        put_bytes(&mut out, 3, &schema);
    }
    let mut scratch: Vec<Scratch> = groups.iter().map(|_| Scratch::default()).collect();
    let (mut data, mut fv) = (Vec::new(), Vec::new());
    for (r, key) in keys.iter().enumerate() {
        data.clear();
        for k in key {
            put_bytes(&mut data, 1, k.as_ref().as_bytes());
        }
        for (g, s) in groups.iter().zip(&mut scratch) {
            fv.clear();
            g.cells.encode_row(g.dtype, g.feature_labels.len(), r, s, &mut fv);
            put_bytes(&mut data, 2, &fv);
        }
        put_bytes(&mut out, 4, &data);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::Values as Typed;
    use crate::wire::fixtures::group;
    use crate::wire::fixtures::{catalog, exhausted, persist_g, NOW};
    use crate::wire::persist::{self, to_container};

    #[test]
    fn bad_requests_name_what_is_wrong() {
        let q = persist::Query {
            entity_label: "user".into(),
            keys_schema: vec!["user_id".into()],
            feature_group_schema: vec![persist::FeatureGroupSchema {
                label: "g".into(),
                feature_labels: vec!["zz".into()],
            }],
            data: vec![],
        };
        let e = parse_persist(&catalog(), &q.encode_to_vec(), NOW, false, &Limits::NONE).unwrap_err();
        assert!(e.to_string().contains("user/g/zz"), "{e}");
    }

    #[test]
    fn persists_are_held_to_the_row_and_byte_limits_and_must_name_features() {
        let c = catalog();
        let keys = ["u1", "u2", "u3"];
        let q = persist_g(&keys, 1.0);
        let e = parse_persist(&c, &q, NOW, false, &Limits { max_rows: 2, ..Limits::NONE }).unwrap_err();
        assert!(exhausted(&e));
        assert_eq!(
            e.to_string(),
            "persist for entity \"user\": 3 rows, over the limit of 2 rows (max_rows_per_persist)"
        );
        let one = parse_persist(&c, &persist_g(&["u1"], 1.0), NOW, false, &Limits::NONE).unwrap();
        let per_row = (one.blocks[0].block.len() + 2) as u64;
        let e =
            parse_persist(&c, &q, NOW, false, &Limits { max_bytes: 2 * per_row as usize, ..Limits::NONE }).unwrap_err();
        assert!(exhausted(&e) && e.to_string().contains("blocks built up to row 2"), "{e}");
        assert!(parse_persist(&c, &q, NOW, false, &Limits { max_bytes: 3 * per_row as usize, ..Limits::NONE }).is_ok());
        // No features listed: every feature would be reset to its default. Refused, naming the FG.
        let empty = persist::Query {
            entity_label: "user".into(),
            keys_schema: vec!["user_id".into()],
            feature_group_schema: vec![persist::FeatureGroupSchema { label: "g".into(), feature_labels: vec![] }],
            data: vec![persist::Data {
                key_values: vec!["u1".into()],
                feature_values: vec![persist::FeatureValues { values: Some(persist::Values::default()) }],
            }],
        };
        let e = parse_persist(&c, &empty.encode_to_vec(), NOW, false, &Limits::NONE).unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::InvalidInput);
        assert_eq!(
            e.to_string(),
            "persist for entity \"user\": feature group \"g\" lists no features (feature_labels is empty)"
        );
    }

    #[test]
    fn query_parses_back_with_prost() {
        let fp = to_container(Typed::F32(&[1.0, 2.0, 3.0, 4.0]), DataType::Fp16, |i| format!("{i}")).unwrap();
        let iv =
            to_container(Typed::I64(&[1, -2, 3, 4, 5, 6, 7, 8]), DataType::Int8Vector, |i| format!("{i}")).unwrap();
        let groups = vec![
            group("f", DataType::Fp16, &["a", "b"], Cells::Numbers { values: &fp, vector_length: 1 }),
            group("v", DataType::Int8Vector, &["x", "y"], Cells::Numbers { values: &iv, vector_length: 2 }),
            group("s", DataType::String, &["t"], Cells::Strings(vec![b"p", b"q"])),
            group(
                "sv",
                DataType::StringVector,
                &["u"],
                Cells::StringVectors { strings: vec![b"a", b"b", b"c"], counts: vec![2, 1] },
            ),
        ];
        let keys = vec![vec!["k1"], vec!["k2"]];
        let bytes = encode_persist_query("user", &["id".into()], &keys, &groups).unwrap();
        let q = persist::Query::decode(&bytes[..]).unwrap();
        assert_eq!(q.entity_label, "user");
        assert_eq!(q.feature_group_schema[1].feature_labels, vec!["x", "y"]);
        assert_eq!(q.data[1].key_values, vec!["k2"]);
        let row1 = &q.data[1].feature_values;
        assert_eq!(row1[0].values.as_ref().unwrap().fp32_values, vec![3.0, 4.0]);
        let vecs = &row1[1].values.as_ref().unwrap().vector;
        assert_eq!(vecs[1].values.as_ref().unwrap().int32_values, vec![7, 8]);
        assert_eq!(row1[2].values.as_ref().unwrap().string_values, vec!["q"]);
        let sv = &q.data[0].feature_values[3].values.as_ref().unwrap().vector;
        assert_eq!(sv[0].values.as_ref().unwrap().string_values, vec!["a", "b"]);
        let sv = &row1[3].values.as_ref().unwrap().vector;
        assert_eq!(sv[0].values.as_ref().unwrap().string_values, vec!["c"]);
    }

    #[test]
    fn bad_values_and_shapes_are_named() {
        let e = to_container(Typed::I32(&[1, 300]), DataType::Int8, |i| format!("value {i}")).unwrap_err();
        assert_eq!(e.to_string(), "value 1: 300 is out of range for DataTypeInt8");
        assert!(to_container(Typed::F64(&[1.5]), DataType::Uint32, |_| String::new()).is_err());
        assert!(to_container(Typed::I32(&[-1]), DataType::Uint64, |_| String::new()).is_err());
        assert!(to_container(Typed::I32(&[2]), DataType::Bool, |_| String::new()).is_err());
        let c = to_container(Typed::F32(&[1.0, 2.0, 3.0]), DataType::Fp32, |_| String::new()).unwrap();
        let g = [group("f", DataType::Fp32, &["a", "b"], Cells::Numbers { values: &c, vector_length: 1 })];
        let e = encode_persist_query("user", &["id".into()], &[vec!["k"]], &g).unwrap_err();
        assert!(e.to_string().contains("3 cells for 1 rows × 2 features"), "{e}");
        let e = encode_persist_query::<&str>("user", &["id".into()], &[vec![]], &g).unwrap_err();
        assert!(e.to_string().contains("key 0 has 0 values"), "{e}");
        let g = [group("s", DataType::String, &["t"], Cells::StringVectors { strings: vec![], counts: vec![0] })];
        assert!(encode_persist_query("user", &["id".into()], &[vec!["k"]], &g).is_err());
    }
}
