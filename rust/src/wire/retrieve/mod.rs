//! The `retrieve` package (`proto/retrieve.proto`, field numbers as the reference's): a module per
//! message, each with both of its ends.
//!
//! - `query`: `retrieve.Query`, parsed and planned by the server, built by clients;
//! - `result`: `retrieve.Result`, built from stored blocks, decoded into columns;
//! - `decoded`: `retrieve.DecodedResult`, every cell rendered as a string, and read back;
//! - `schema`: what the two responses share (`FeatureSchema`, `Feature`, the row framing).
//!
//! Here: a parsed request answered with either response, from blocks read or from the in-process cache.

mod decoded;
mod query;
mod result;
mod schema;

use crate::cache::BlockCache;
use crate::cached::CacheLookup;

pub use decoded::{
    decode_decoded_result, encode_decoded, encode_decoded_counted, DecodedColumns, DecodedResult, DecodedRow,
};
pub use query::{encode_retrieve_query, parse_retrieve, FeatureGroup, Keys, Query, RetrieveRequest};
pub use result::{
    decode_retrieve_result, decode_retrieve_result_as, encode_retrieve, encode_retrieve_counted, FeatureInfo,
    GroupColumns, Result, RetrieveColumns, Row,
};
pub use schema::{Feature, FeatureSchema, StatusCounts};

impl RetrieveRequest {
    /// The response bytes, `retrieve.DecodedResult` when `decoded` else `retrieve.Result`, built from
    /// the blocks read for the plan (key-major), with the rows per status of each FG.
    pub fn answer(&self, blocks: &[&[u8]], now: u64, decoded: bool) -> crate::Result<(Vec<u8>, StatusCounts)> {
        if decoded {
            encode_decoded_counted(self, blocks, now)
        } else {
            encode_retrieve_counted(self, blocks, now)
        }
    }

    /// [`RetrieveRequest::answer`] from the in-process `cache` alone, when it holds every key's
    /// requested FGs and the plan allows it; `None` otherwise (read the blocks, then answer).
    pub fn answer_cached(
        &self,
        cache: &BlockCache,
        now: u64,
        decoded: bool,
    ) -> crate::Result<Option<(Vec<u8>, StatusCounts)>> {
        let Some(mut lookup) = CacheLookup::new(&self.plan, cache) else { return Ok(None) };
        for k in 0..self.key_count() {
            for v in self.canonical_key(k) {
                lookup.push(v);
            }
            if !lookup.hit() {
                return Ok(None);
            }
        }
        lookup.with_blocks(|blocks| self.answer(blocks, now, decoded))
    }
}
