//! The `retrieve` package (`proto/retrieve.proto`, field numbers as the reference's): a module per
//! message, each with both of its ends.
//!
//! - `query`: `retrieve.Query`, parsed and planned by the server, built by clients;
//! - `result`: `retrieve.Result`, built from stored blocks, decoded into columns;
//! - `decoded`: `retrieve.DecodedResult`, every cell rendered as a string, and read back;
//! - `schema`: what the two responses share (`FeatureSchema`, `Feature`, the row framing).

mod decoded;
mod query;
mod result;
mod schema;

pub use decoded::{
    decode_decoded_result, encode_decoded, encode_decoded_counted, DecodedColumns, DecodedResult, DecodedRow,
};
pub use query::{encode_retrieve_query, parse_retrieve, FeatureGroup, Keys, Query, RetrieveRequest};
pub use result::{
    decode_retrieve_result, decode_retrieve_result_as, encode_retrieve, encode_retrieve_counted, FeatureInfo,
    GroupColumns, Result, RetrieveColumns, Row,
};
pub use schema::{Feature, FeatureSchema, StatusCounts};
