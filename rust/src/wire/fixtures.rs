//! Test fixtures of the wire messages: a small catalog and the requests the tests send it.

use prost::Message;

use super::{persist, retrieve, Cells, PersistGroup};
use crate::catalog::{Catalog, VersionSpec};
use crate::dtype::DataType;
use crate::error::Error;

pub(crate) const NOW: u64 = 1_772_366_400;

/// A catalog for tests: entity "user" with FG 0 "g" (fp32 a, b) and FG 1 "tags" (string vector t).
pub(crate) fn catalog() -> Catalog {
    let mut c = Catalog::new(1);
    c.add_entity("user", &["user_id".into()]).unwrap();
    let v1 = VersionSpec {
        version: 1,
        labels: vec!["a".into(), "b".into()],
        string_lengths: vec![],
        vector_lengths: vec![],
        defaults: vec![1.5f32.to_le_bytes().to_vec(), (-1.0f32).to_le_bytes().to_vec()],
    };
    c.add_feature_group("user", 0, "g", DataType::Fp32, 1, 0, vec![v1]).unwrap();
    let tags = VersionSpec {
        version: 1,
        labels: vec!["t".into()],
        string_lengths: vec![4],
        vector_lengths: vec![2],
        defaults: vec![vec![1, 0, 1, 0, b'x', b'y']],
    };
    c.add_feature_group("user", 1, "tags", DataType::StringVector, 1, 0, vec![tags]).unwrap();
    c
}

pub(crate) fn retrieve_query(fgs: &[(&str, &[&str])], n_keys: usize) -> Vec<u8> {
    retrieve::Query {
        entity_label: "user".into(),
        feature_groups: fgs
            .iter()
            .map(|(l, f)| retrieve::FeatureGroup {
                label: (*l).into(),
                feature_labels: f.iter().map(|x| (*x).to_owned()).collect(),
            })
            .collect(),
        keys_schema: vec!["user_id".into()],
        keys: (0..n_keys).map(|i| retrieve::Keys { cols: vec![format!("user-{i}")] }).collect(),
    }
    .encode_to_vec()
}

pub(crate) fn exhausted(e: &Error) -> bool {
    e.kind() == crate::error::ErrorKind::ResourceExhausted
}

pub(crate) fn persist_g(keys: &[&str], b: f64) -> Vec<u8> {
    persist::Query {
        entity_label: "user".into(),
        keys_schema: vec!["user_id".into()],
        feature_group_schema: vec![persist::FeatureGroupSchema { label: "g".into(), feature_labels: vec!["b".into()] }],
        data: keys
            .iter()
            .map(|k| persist::Data {
                key_values: vec![(*k).into()],
                feature_values: vec![persist::FeatureValues {
                    values: Some(persist::Values { fp32_values: vec![b], ..Default::default() }),
                }],
            })
            .collect(),
    }
    .encode_to_vec()
}

/// A persist group for [`super::encode_persist_query`].
pub(crate) fn group<'a>(label: &str, dtype: DataType, labels: &[&str], cells: Cells<'a>) -> PersistGroup<'a> {
    PersistGroup { label: label.into(), dtype, feature_labels: labels.iter().map(|s| (*s).into()).collect(), cells }
}
