//! Pure Rust core of online-feature-store.
//!
//! Owns the storage formats (PSDB blocks, CSDB cache values), the data types (the reference's 31 and
//! our bf16 / q8 extensions), low-precision float conversion and retrieval-time quantization, the
//! compiled registry and the engine that plans and answers requests (with the in-process cache and the
//! one shape of a result), and the gRPC wire messages, both ends of each. No Python here: `pyext/`
//! binds this crate, and the services reach it only through those bindings.

pub mod batch;
pub mod bf16;
pub mod breaker;
pub mod cache;
pub mod cached;
pub mod catalog;
pub mod cell;
pub mod csdb;
pub mod dtype;
pub mod engine;
pub mod error;
pub mod expiry;
pub mod float;
pub mod gofmt;
pub mod keys;
pub mod limits;
pub mod meta;
pub mod psdb;
pub mod q8;
pub mod quant;
pub mod remote;
pub mod render;
pub mod shape;
pub mod store;
pub mod tier_events;
pub mod tiers;
pub mod values;
pub mod wire;

pub use dtype::{DataType, Element};
pub use error::{Error, ErrorKind, Result};
pub use limits::Limits;
pub use meta::BlockMeta;
pub use psdb::{Array, Block, BlockView, EncodeOptions, Header};
pub use values::Values;
