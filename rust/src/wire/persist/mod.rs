//! The `persist` package (`proto/persist.proto`, field numbers as the reference's): a module per
//! message, each with both of its ends.
//!
//! - `query`: `persist.Query`, validated into blocks by the server, built by clients;
//! - `values`: `persist.Values`, one FG's values in the container its type travels in, read into a
//!   block and written from columns;
//! - here: `persist.Result`, the server's answer.

mod query;
mod values;

use prost::Message;

pub use query::{
    encode_persist_query, parse_persist, Data, FeatureGroupSchema, PersistBlock, PersistGroup, PersistRequest, Query,
};
pub use values::{to_container, Cells, Container, FeatureValues, Values, Vector};

/// `persist.Result`: the server's answer to a persist.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Result {
    #[prost(string, tag = "2")]
    pub message: String,
}

/// `persist.Result` bytes for a successful persist (the reference's message).
pub fn persist_ok() -> Vec<u8> {
    Result { message: "Data Persisted Successfully".into() }.encode_to_vec()
}
