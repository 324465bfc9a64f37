//! `retrieve.Query`: the server parses and plans it ([`parse_retrieve`]), clients build it
//! ([`encode_retrieve_query`]).

use std::sync::Arc;

use prost::encoding::encoded_len_varint;
use prost::Message;

use crate::engine::{Engine, Plan};
use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::wire::proto::{prescan, put_bytes};

/// `retrieve.Keys`: one key's values, in `keys_schema` order.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Keys {
    #[prost(string, repeated, tag = "1")]
    pub cols: Vec<String>,
}

/// `retrieve.FeatureGroup`: a feature group and the features asked of it (a label may carry an `@Type` suffix).
#[derive(Clone, PartialEq, prost::Message)]
pub struct FeatureGroup {
    #[prost(string, tag = "1")]
    pub label: String,
    #[prost(string, repeated, tag = "2")]
    pub feature_labels: Vec<String>,
}

/// `retrieve.Query`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Query {
    #[prost(string, tag = "1")]
    pub entity_label: String,
    #[prost(message, repeated, tag = "2")]
    pub feature_groups: Vec<FeatureGroup>,
    #[prost(string, repeated, tag = "3")]
    pub keys_schema: Vec<String>,
    #[prost(message, repeated, tag = "4")]
    pub keys: Vec<Keys>,
}

/// A parsed and planned retrieve request.
#[derive(Debug)]
pub struct RetrieveRequest {
    pub query: Query,
    pub plan: Arc<Plan>,
    /// The limits it was checked against; building the response holds them too.
    pub limits: Limits,
}

impl RetrieveRequest {
    /// How many keys the request names.
    pub fn key_count(&self) -> usize {
        self.query.keys.len()
    }

    /// Key `k`'s values in the entity's canonical key order, borrowed from the request (parsing checked
    /// that every key has one value per key column).
    pub fn canonical_key(&self, k: usize) -> impl Iterator<Item = &str> {
        let cols = &self.query.keys[k].cols;
        self.plan.key_perm.iter().map(move |&p| cols[p].as_str())
    }

    /// Every key's values in the entity's canonical key order.
    pub fn canonical_keys(&self) -> Vec<Vec<String>> {
        (0..self.key_count()).map(|k| self.canonical_key(k).map(str::to_owned).collect()).collect()
    }

    /// Every key's canonical name ([`crate::keys::encode_key`]): what the tiers and stores look it up by.
    pub fn key_names(&self) -> Vec<String> {
        (0..self.key_count()).map(|k| crate::keys::encode_key(self.canonical_key(k))).collect()
    }

    /// Ids of the requested FGs, in request order.
    pub fn fg_ids(&self) -> Vec<u16> {
        self.plan.fgs.iter().map(|f| f.fg.id).collect()
    }

    /// Upper bound of the `retrieve.Result` bytes: the header, then per key its key values and
    /// [`Plan::row_bound`], framed. Computed from the plan alone, before any block is read.
    pub fn estimated_response_bytes(&self) -> u64 {
        let field = |len: usize| 1 + encoded_len_varint(len as u64) as u64 + len as u64;
        let q = &self.query;
        // Header: a Feature is its label plus at most 22 bytes of framing and numbers.
        let head = field(q.entity_label.len())
            + q.keys_schema.iter().map(|k| field(k.len())).sum::<u64>()
            + self
                .plan
                .fgs
                .iter()
                .map(|f| 6 + field(f.fg.label.len()) + f.columns.iter().map(|c| 22 + c.label.len() as u64).sum::<u64>())
                .sum::<u64>();
        let per_row = self.plan.row_bound();
        let rows = q.keys.iter().map(|k| {
            let row = k.cols.iter().map(|c| field(c.len())).sum::<u64>() + per_row;
            1 + encoded_len_varint(row) as u64 + row
        });
        rows.fold(head, u64::saturating_add)
    }
}

/// Parses `retrieve.Query` bytes and plans them (every name checked, keys canonicalised). The key
/// count is checked against `limits` before the request is decoded, and the response estimated from
/// the plan ([`RetrieveRequest::estimated_response_bytes`]) before anything is read.
pub fn parse_retrieve(engine: &Engine, bytes: &[u8], limits: &Limits) -> Result<RetrieveRequest> {
    let (entity, keys) = prescan(bytes, 1, 4);
    limits.check_keys(keys, || format!("retrieve for entity {entity:?}"))?;
    let mut query = Query::decode(bytes).map_err(|e| Error::InvalidInput(format!("malformed retrieve.Query: {e}")))?;
    if query.entity_label.is_empty() {
        return Err(Error::InvalidInput("retrieve.Query names no entity (entity_label is empty)".into()));
    }
    if query.keys.is_empty() {
        return Err(Error::InvalidInput(format!("request for entity {:?} has no keys", query.entity_label)));
    }
    let schema: Vec<&str> = query.keys_schema.iter().map(String::as_str).collect();
    let fgs: Vec<(&str, Vec<&str>)> = query
        .feature_groups
        .iter()
        .map(|g| (g.label.as_str(), g.feature_labels.iter().map(String::as_str).collect()))
        .collect();
    let plan = engine.plan(&query.entity_label, &schema, &fgs)?;
    drop((schema, fgs));
    if query.keys_schema.is_empty() {
        // No keys_schema: the keys are in the entity's order, and the response says which that is.
        query.keys_schema.clone_from(&engine.catalog().entity(&query.entity_label)?.keys);
    }
    if let Some((i, k)) = query.keys.iter().enumerate().find(|(_, k)| k.cols.len() != plan.key_perm.len()) {
        return Err(Error::InvalidInput(format!(
            "key {i} has {} values for keys_schema {:?}",
            k.cols.len(),
            query.keys_schema
        )));
    }
    let req = RetrieveRequest { query, plan, limits: *limits };
    limits.check_bytes(req.estimated_response_bytes(), || {
        format!(
            "retrieve for entity {:?}, estimated response ({} keys of up to {} bytes each, plus the keys)",
            req.plan.entity,
            req.query.keys.len(),
            req.plan.row_bound()
        )
    })?;
    Ok(req)
}

/// Serialized `retrieve.Query`: `keys[r]` aligned with `keys_schema`; `feature_groups` as
/// `(fg label, feature labels)` (a label may carry an `@Type` suffix).
pub fn encode_retrieve_query<K: AsRef<str>, F: AsRef<str>>(
    entity: &str,
    keys_schema: &[String],
    keys: &[Vec<K>],
    feature_groups: &[(F, Vec<F>)],
) -> Vec<u8> {
    let mut out = Vec::new();
    put_bytes(&mut out, 1, entity.as_bytes());
    let mut body = Vec::new();
    for (label, features) in feature_groups {
        body.clear();
        put_bytes(&mut body, 1, label.as_ref().as_bytes());
        for f in features {
            put_bytes(&mut body, 2, f.as_ref().as_bytes());
        }
        put_bytes(&mut out, 2, &body);
    }
    for k in keys_schema {
        put_bytes(&mut out, 3, k.as_bytes());
    }
    for key in keys {
        body.clear();
        for v in key {
            put_bytes(&mut body, 1, v.as_ref().as_bytes());
        }
        put_bytes(&mut out, 4, &body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Catalog, VersionSpec};
    use crate::dtype::DataType;
    use crate::wire::fixtures::{catalog, exhausted, persist_g, retrieve_query, NOW};
    use crate::wire::{encode_decoded, encode_decoded_counted, encode_retrieve, parse_persist, persist, retrieve};

    #[test]
    fn bad_requests_name_what_is_wrong() {
        let engine = Engine::new(catalog());
        assert!(parse_retrieve(&engine, b"\xff\xff", &Limits::NONE).unwrap_err().to_string().contains("malformed"));
        let rq =
            retrieve::Query { entity_label: "user".into(), keys_schema: vec!["user_id".into()], ..Default::default() };
        assert!(parse_retrieve(&engine, &rq.encode_to_vec(), &Limits::NONE)
            .unwrap_err()
            .to_string()
            .contains("no keys"));
    }

    #[test]
    fn the_response_estimate_bounds_what_is_built() {
        let engine = Engine::new(catalog());
        let cat = engine.catalog();
        let g_rows = parse_persist(cat, &persist_g(&["u1"], 2.0), NOW, false, &Limits::NONE).unwrap().blocks;
        // Full-length strings: the largest cells the booked length allows.
        let tags = persist::Query {
            entity_label: "user".into(),
            keys_schema: vec!["user_id".into()],
            feature_group_schema: vec![persist::FeatureGroupSchema {
                label: "tags".into(),
                feature_labels: vec!["t".into()],
            }],
            data: vec![persist::Data {
                key_values: vec!["u1".into()],
                feature_values: vec![persist::FeatureValues {
                    values: Some(persist::Values {
                        vector: vec![persist::Vector {
                            values: Some(persist::Values {
                                string_values: vec!["abcd".into(), "efgh".into()],
                                ..Default::default()
                            }),
                        }],
                        ..Default::default()
                    }),
                }],
            }],
        };
        let t_rows = parse_persist(cat, &tags.encode_to_vec(), NOW, false, &Limits::NONE).unwrap().blocks;
        let (gb, tb) = (&g_rows[0].block[..], &t_rows[0].block[..]);
        for n in [1, 7, 300] {
            let query = retrieve_query(&[("g", &["a", "b@DataTypeFP16"]), ("tags", &["t"])], n);
            let req = parse_retrieve(&engine, &query, &Limits::NONE).unwrap();
            let estimate = req.estimated_response_bytes();
            for blocks in [vec![gb, tb], vec![&[][..], &[][..]]] {
                let all: Vec<&[u8]> = (0..n).flat_map(|_| blocks.iter().copied()).collect();
                let built = encode_retrieve(&req, &all, NOW).unwrap().len() as u64;
                assert!(built <= estimate, "{n} keys: built {built} > estimated {estimate}");
            }
            // Fixed widths and full strings: the estimate is the response, give or take the header.
            let all: Vec<&[u8]> = (0..n).flat_map(|_| [gb, tb]).collect();
            let built = encode_retrieve(&req, &all, NOW).unwrap().len() as u64;
            assert!(estimate - built < 64, "{n} keys: estimated {estimate}, built {built}");
            // One byte less than the estimate: refused when parsed, before any block is read.
            let tight = Limits { max_bytes: estimate as usize - 1, ..Limits::NONE };
            let err = parse_retrieve(&engine, &query, &tight).unwrap_err();
            assert!(exhausted(&err), "{err}");
            assert!(
                err.to_string().contains(&format!("{estimate} bytes, over the limit of {} bytes", estimate - 1)),
                "{err}"
            );
            assert!(parse_retrieve(&engine, &query, &Limits { max_bytes: estimate as usize, ..Limits::NONE }).is_ok());
        }
    }

    #[test]
    fn too_many_keys_are_refused_before_the_request_is_decoded() {
        let c = Engine::new(catalog());
        let limits = Limits { max_keys: 2, ..Limits::NONE };
        assert!(parse_retrieve(&c, &retrieve_query(&[("g", &["a"])], 2), &limits).is_ok());
        let e = parse_retrieve(&c, &retrieve_query(&[("g", &["a"])], 3), &limits).unwrap_err();
        assert!(exhausted(&e));
        assert_eq!(
            e.to_string(),
            "retrieve for entity \"user\": 3 keys, over the limit of 2 keys (max_keys_per_request)"
        );
        // Counted from the raw bytes: a request that names nothing that exists is still refused for
        // its size, so no name lookup or decode is spent on it.
        let mut q = retrieve_query(&[("nope", &["a"])], 3);
        assert!(exhausted(&parse_retrieve(&c, &q, &limits).unwrap_err()));
        q.extend_from_slice(b"\xff"); // a malformed tail: the count stops there, the decode reports it
        assert!(parse_retrieve(&c, &q, &Limits::NONE).unwrap_err().to_string().contains("malformed"));
        assert_eq!(prescan(b"", 1, 4), (String::new(), 0));
    }

    #[test]
    fn a_huge_vector_fg_is_refused_by_its_estimate_not_by_the_allocator() {
        // The request that used to abort the process: 60k keys of one fp64 vector of 65535 values
        // (row width × keys = 31 GB reserved up front).
        let mut c = Catalog::new(1);
        c.add_entity("user", &["user_id".into()]).unwrap();
        let spec = VersionSpec {
            version: 1,
            labels: vec!["v".into()],
            string_lengths: vec![],
            vector_lengths: vec![65_535],
            defaults: vec![vec![0; 65_535 * 8]],
        };
        c.add_feature_group("user", 0, "emb", DataType::Fp64Vector, 1, 0, vec![spec]).unwrap();
        let c = Engine::new(c);
        let q = retrieve_query(&[("emb", &["v"])], 60_000);
        let defaults = Limits { max_keys: 10_000, max_rows: 100_000, max_bytes: 64 << 20 };
        let e = parse_retrieve(&c, &q, &defaults).unwrap_err();
        assert!(e.to_string().contains("60000 keys, over the limit of 10000 keys"), "{e}");
        let e = parse_retrieve(&c, &q, &Limits { max_keys: 100_000, ..defaults }).unwrap_err();
        assert!(exhausted(&e));
        let row = 1 + 3 + 65_535 * 8 + 3;
        assert!(e.to_string().contains(&format!("(60000 keys of up to {row} bytes each, plus the keys)")), "{e}");
        assert!(e.to_string().contains("over the limit of 67108864 bytes (max_message_bytes)"), "{e}");
        // The response built is held to the limit too, whatever the estimate said.
        let mut req = parse_retrieve(&c, &retrieve_query(&[("emb", &["v"])], 3), &Limits::NONE).unwrap();
        req.limits.max_bytes = 2 * row + 100; // two rows with their keys and framing, and the header
        let e = encode_retrieve(&req, &[&[], &[], &[]], NOW).unwrap_err();
        assert!(exhausted(&e) && e.to_string().contains("response built up to key 2"), "{e}");
        // Decoded: each row renders its 65535 zeros as "0:0:…" (131069 bytes), held to the limit as it goes.
        req.limits.max_bytes = 2 * 131_069 + 100;
        let e = encode_decoded(&req, &[&[], &[], &[]], NOW).unwrap_err();
        assert!(exhausted(&e) && e.to_string().contains("response built up to key 2"), "{e}");
        req.limits.max_bytes = 3 * 131_069 + 100;
        let (out, counts) = encode_decoded_counted(&req, &[&[], &[], &[]], NOW).unwrap();
        assert_eq!(counts, vec![[0, 3, 0]]);
        let rows = retrieve::DecodedResult::decode(&out[..]).unwrap().rows;
        assert_eq!(rows[2].columns[0], vec!["0"; 65_535].join(":"));
    }
}
