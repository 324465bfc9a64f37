//! The gRPC wire contract (`proto/retrieve.proto`, `proto/persist.proto`): one module per message,
//! each holding both of its ends, the server's (parse a query, build a response from stored blocks)
//! and the client's (build a query from columnar values, decode a response into columns), so a field
//! change is one edit in one place. Servers hand request bytes to the core and send back the bytes it
//! returns, clients the other way round, so no per-value protobuf object ever exists.
//!
//! - [`retrieve`]: `retrieve.Query`, `retrieve.Result`, `retrieve.DecodedResult` (and the feature
//!   schema the two responses share);
//! - [`persist`]: `persist.Query`, `persist.Values`, `persist.Result`;
//! - `proto`: the field reader and writer they are built on.

pub mod persist;
mod proto;
pub mod retrieve;

#[cfg(test)]
pub(crate) mod fixtures;

pub use persist::{
    encode_persist_query, parse_persist, persist_ok, to_container, Cells, Container, PersistBlock, PersistGroup,
    PersistRequest,
};
pub use retrieve::{
    decode_decoded_result, decode_retrieve_result, decode_retrieve_result_as, encode_decoded, encode_decoded_counted,
    encode_retrieve, encode_retrieve_counted, encode_retrieve_query, parse_retrieve, DecodedColumns, FeatureInfo,
    GroupColumns, RetrieveColumns, RetrieveRequest, StatusCounts,
};
