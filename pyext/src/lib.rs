//! `online_feature_store._native`: `PyO3` bindings of the `ofs-core` crate. Conversions, GIL release
//! and error mapping only; all feature-store logic lives in the core.

// PyO3 extracts #[pyfunction] arguments as owned values; borrowing them is not an option.
#![allow(clippy::needless_pass_by_value)]
mod args;
mod arrays;
mod batch;
mod blocks;
mod cache;
mod client;
mod engine;
mod errors;
mod formats;
mod front;
mod remote;
mod store;
mod tiers;

use pyo3::prelude::*;

/// The extension's own allocations (the serving front's buffers, the read path's blocks and responses)
/// go to mimalloc rather than the C library's malloc: its per-thread free lists avoid the arena locks and
/// consolidation glibc does on every large free. Python's objects keep Python's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("PSDB_HEADER_LEN", ofs_core::psdb::HEADER_LEN)?;
    m.add("MAX_TTL_SECONDS", ofs_core::expiry::MAX_TTL_SECONDS)?;
    m.add_class::<blocks::PyBlockMeta>()?;
    m.add_class::<blocks::PyBlockHeader>()?;
    m.add_class::<blocks::PyDecodedBlock>()?;
    m.add_class::<engine::PyCatalog>()?;
    m.add_class::<engine::PyLimits>()?;
    m.add_class::<cache::PyBlockCache>()?;
    m.add_class::<store::PyStore>()?;
    m.add_class::<remote::PyRedisCache>()?;
    m.add_class::<tiers::PyTiers>()?;
    m.add_class::<batch::PyEncodedRows>()?;
    m.add_class::<front::PyFront>()?;
    m.add("FRONT_METHODS", front::methods())?;
    m.add("ERROR_CLASSES", front::error_classes())?;
    m.add_function(wrap_pyfunction!(blocks::encode_block, m)?)?;
    m.add_function(wrap_pyfunction!(blocks::decode_block, m)?)?;
    m.add_function(wrap_pyfunction!(blocks::feature_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(blocks::read_header, m)?)?;
    m.add_function(wrap_pyfunction!(blocks::encode_cell, m)?)?;
    m.add_function(wrap_pyfunction!(blocks::decode_cell, m)?)?;
    m.add_function(wrap_pyfunction!(blocks::cell_max_len, m)?)?;
    m.add_function(wrap_pyfunction!(blocks::expiry_encode, m)?)?;
    m.add_function(wrap_pyfunction!(blocks::expiry_decode, m)?)?;
    m.add_function(wrap_pyfunction!(client::encode_persist_query, m)?)?;
    m.add_function(wrap_pyfunction!(client::encode_retrieve_query, m)?)?;
    m.add_function(wrap_pyfunction!(client::decode_retrieve_result, m)?)?;
    m.add_function(wrap_pyfunction!(client::decode_decoded_result, m)?)?;
    m.add_function(wrap_pyfunction!(formats::csdb_encode, m)?)?;
    m.add_function(wrap_pyfunction!(formats::csdb_entries, m)?)?;
    m.add_function(wrap_pyfunction!(formats::csdb_lookup, m)?)?;
    m.add_function(wrap_pyfunction!(formats::fp16_encode, m)?)?;
    m.add_function(wrap_pyfunction!(formats::fp16_decode, m)?)?;
    m.add_function(wrap_pyfunction!(formats::fp8_e4m3_encode, m)?)?;
    m.add_function(wrap_pyfunction!(formats::fp8_e4m3_decode, m)?)?;
    m.add_function(wrap_pyfunction!(formats::fp8_e5m2_encode, m)?)?;
    m.add_function(wrap_pyfunction!(formats::fp8_e5m2_decode, m)?)?;
    m.add_function(wrap_pyfunction!(formats::bf16_encode, m)?)?;
    m.add_function(wrap_pyfunction!(formats::bf16_decode, m)?)?;
    m.add_function(wrap_pyfunction!(formats::q8_encode, m)?)?;
    m.add_function(wrap_pyfunction!(formats::q8_decode, m)?)?;
    m.add_function(wrap_pyfunction!(formats::quantize, m)?)?;
    m.add_function(wrap_pyfunction!(formats::parse_feature_label, m)?)?;
    m.add_function(wrap_pyfunction!(formats::data_type_names, m)?)?;
    m.add_function(wrap_pyfunction!(formats::parse_data_type, m)?)?;
    m.add_function(wrap_pyfunction!(store::set_io_threads, m)?)?;
    m.add_function(wrap_pyfunction!(store::io_threads, m)?)?;
    Ok(())
}
