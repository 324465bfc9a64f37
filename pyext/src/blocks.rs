//! Python bindings of PSDB blocks: layout metadata, encode, decode, headers.

use std::sync::Arc;

use ofs_core::psdb::{self, Block};
use ofs_core::{expiry, BlockMeta, DataType, EncodeOptions, Header};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::args::{ints, now_or_clock, Int};
use crate::arrays::{array_to_py, bytes, input, shape_by_feature, with_values};
use crate::errors::{invalid, IntoPy};

fn dtype_of(n: u8) -> PyResult<DataType> {
    DataType::from_u8(n).py_err()
}

/// Layout of one feature-group version (type, feature count, string and vector lengths).
#[pyclass(name = "BlockMeta", module = "online_feature_store._native", frozen)]
#[derive(Debug)]
pub struct PyBlockMeta {
    pub inner: Arc<BlockMeta>,
}

#[pymethods]
impl PyBlockMeta {
    #[new]
    #[pyo3(
        signature = (data_type, n_features, *, version = Int(1), string_lengths = None, vector_lengths = None),
        text_signature = "(data_type, n_features, *, version=1, string_lengths=None, vector_lengths=None)"
    )]
    fn new(
        data_type: Int<u8>,
        n_features: Int<usize>,
        version: Int<u16>,
        string_lengths: Option<Vec<Int<u32>>>,
        vector_lengths: Option<Vec<Int<u32>>>,
    ) -> PyResult<Self> {
        let meta = BlockMeta::new(
            dtype_of(data_type.0)?,
            version.0,
            n_features.0,
            string_lengths.map(ints).unwrap_or_default(),
            vector_lengths.map(ints).unwrap_or_default(),
        )
        .py_err()?;
        Ok(PyBlockMeta { inner: Arc::new(meta) })
    }

    #[getter]
    fn data_type(&self) -> u8 {
        self.inner.dtype() as u8
    }
    #[getter]
    fn version(&self) -> u16 {
        self.inner.version()
    }
    #[getter]
    fn n_features(&self) -> usize {
        self.inner.n_features()
    }
    /// Number of values in the flat value stream (Σ vector lengths for vector types).
    #[getter]
    fn n_values(&self) -> usize {
        self.inner.n_values()
    }
    #[getter]
    fn string_lengths(&self) -> Vec<u32> {
        self.inner.string_lengths().to_vec()
    }
    #[getter]
    fn vector_lengths(&self) -> Vec<u32> {
        self.inner.vector_lengths().to_vec()
    }

    fn __repr__(&self) -> String {
        format!(
            "BlockMeta({}, n_features={}, version={})",
            self.inner.dtype(),
            self.inner.n_features(),
            self.inner.version()
        )
    }
}

/// The 9-byte PSDB header.
#[pyclass(name = "BlockHeader", module = "online_feature_store._native", frozen, get_all)]
#[derive(Debug)]
pub struct PyBlockHeader {
    version: u16,
    expiry_at: Option<u64>,
    layout: u8,
    compression: u8,
    data_type: u8,
    bool_last_index: u8,
}

#[pymethods]
impl PyBlockHeader {
    fn __repr__(&self) -> String {
        format!(
            "BlockHeader(version={}, expiry_at={}, layout={}, compression={}, data_type={}, bool_last_index={})",
            self.version,
            self.expiry_at.map_or_else(|| "None".to_owned(), |e| e.to_string()),
            self.layout,
            self.compression,
            self.data_type,
            self.bool_last_index
        )
    }
}

impl From<Header> for PyBlockHeader {
    fn from(h: Header) -> Self {
        PyBlockHeader {
            version: h.version,
            expiry_at: h.expiry_at,
            layout: h.layout,
            compression: h.compression as u8,
            data_type: h.dtype as u8,
            bool_last_index: h.bool_last_index,
        }
    }
}

/// A decoded block: its status ("present", "missing" or "expired"), header and values.
#[pyclass(name = "DecodedBlock", module = "online_feature_store._native", frozen)]
#[derive(Debug)]
pub struct PyDecodedBlock {
    #[pyo3(get)]
    status: &'static str,
    #[pyo3(get)]
    header: Option<Py<PyBlockHeader>>,
    /// Decoded values (None unless present).
    #[pyo3(get)]
    values: Option<Py<PyAny>>,
    /// The block uncompressed (present blocks only), so `feature()` never decompresses again.
    plain: Vec<u8>,
    meta: Arc<BlockMeta>,
}

#[pymethods]
impl PyDecodedBlock {
    /// Feature `pos` in the serving response encoding, or None when the block is not present.
    fn feature<'py>(&self, py: Python<'py>, pos: usize) -> PyResult<Option<Bound<'py, PyBytes>>> {
        if pos >= self.meta.n_features() {
            return Err(invalid(format!("feature {pos} out of range ({} features)", self.meta.n_features())));
        }
        if self.status != "present" {
            return Ok(None);
        }
        match psdb::decode(&self.plain, &self.meta, 0).py_err()? {
            Block::Present(view) => Ok(Some(bytes(py, &view.feature(pos)))),
            Block::Missing | Block::Expired(_) => Ok(None),
        }
    }

    fn __len__(&self) -> usize {
        self.meta.n_features()
    }

    fn __repr__(&self) -> String {
        format!("DecodedBlock(status={:?})", self.status)
    }
}

/// Encodes values into one PSDB block.
#[pyfunction]
#[pyo3(
    signature = (meta, values, *, ttl = Int(0), expiry_at = None, now = None, compress = true, saturate = false),
    text_signature = "(meta, values, *, ttl=0, expiry_at=None, now=None, compress=True, saturate=False)"
)]
#[allow(clippy::too_many_arguments)] // Mirrors a keyword-only Python signature.
pub fn encode_block<'py>(
    py: Python<'py>,
    meta: &PyBlockMeta,
    values: &Bound<'py, PyAny>,
    ttl: Int<u64>,
    expiry_at: Option<Int<u64>>,
    now: Option<Int<u64>>,
    compress: bool,
    saturate: bool,
) -> PyResult<Bound<'py, PyBytes>> {
    let now = now_or_clock(now);
    let Int(ttl) = ttl;
    let expiry_at = match expiry_at {
        Some(_) if ttl != 0 => return Err(invalid("give either ttl or expiry_at, not both")),
        Some(Int(e)) => e,
        None => expiry::expiry_for_ttl(ttl, now).py_err()?,
    };
    let opts = EncodeOptions { expiry_at, now, compress, saturate };
    let meta = &meta.inner;
    let inp = input(values, meta.dtype().is_string())?;
    let block = with_values(py, &inp, |v| psdb::encode(meta, v, &opts))?.py_err()?;
    Ok(bytes(py, &block))
}

/// Decodes one block with the metadata of its own schema version.
#[pyfunction]
#[pyo3(signature = (meta, block, *, now = None))]
pub fn decode_block(
    py: Python<'_>,
    meta: &PyBlockMeta,
    block: &[u8],
    now: Option<Int<u64>>,
) -> PyResult<PyDecodedBlock> {
    let now = now_or_clock(now);
    let meta_arc = Arc::clone(&meta.inner);
    let meta = &meta.inner;
    let decoded = py
        .detach(|| -> ofs_core::Result<_> {
            Ok(match psdb::decode(block, meta, now)? {
                Block::Missing => ("missing", None, None, Vec::new()),
                Block::Expired(h) => ("expired", Some(h), None, Vec::new()),
                Block::Present(view) => {
                    // Expiry is checked here; the kept copy never expires so feature() stays answerable.
                    let mut plain = view.to_uncompressed_block();
                    plain[2..7].fill(0);
                    ("present", Some(*view.header()), Some(view.to_array()?), plain)
                }
            })
        })
        .py_err()?;
    let (status, header, arr, plain) = decoded;
    Ok(PyDecodedBlock {
        status,
        header: header.map(|h| Py::new(py, PyBlockHeader::from(h))).transpose()?,
        values: arr
            .map(|a| array_to_py(py, a).and_then(|v| shape_by_feature(v, meta)).map(Bound::unbind))
            .transpose()?,
        plain,
        meta: meta_arc,
    })
}

/// One feature of a block in the serving response encoding, touching no other feature's bytes
/// beyond what the layout needs. None when the block is missing or expired.
#[pyfunction]
#[pyo3(signature = (meta, block, pos, *, now = None))]
pub fn feature_bytes<'py>(
    py: Python<'py>,
    meta: &PyBlockMeta,
    block: &[u8],
    pos: Int<usize>,
    now: Option<Int<u64>>,
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    let meta = &meta.inner;
    let Int(pos) = pos;
    if pos >= meta.n_features() {
        return Err(invalid(format!("feature {pos} out of range ({} features)", meta.n_features())));
    }
    let now = now_or_clock(now);
    let out = py
        .detach(|| -> ofs_core::Result<Option<Vec<u8>>> {
            Ok(match psdb::decode(block, meta, now)? {
                Block::Present(view) => Some(view.feature(pos).into_owned()),
                _ => None,
            })
        })
        .py_err()?;
    Ok(out.map(|b| bytes(py, &b)))
}

/// One feature's value in the response ("cell") encoding — also how defaults are stored.
#[pyfunction]
#[pyo3(
    signature = (data_type, values, *, string_length = Int(65_535), vector_length = Int(0), saturate = false),
    text_signature = "(data_type, values, *, string_length=65535, vector_length=0, saturate=False)"
)]
pub fn encode_cell<'py>(
    py: Python<'py>,
    data_type: Int<u8>,
    values: &Bound<'py, PyAny>,
    string_length: Int<u32>,
    vector_length: Int<u32>,
    saturate: bool,
) -> PyResult<Bound<'py, PyBytes>> {
    let dtype = dtype_of(data_type.0)?;
    let (Int(string_length), Int(vector_length)) = (string_length, vector_length);
    // A scalar may be given bare: wrap it so it reads as a one-value stream.
    let values = if dtype.is_vector() { values.clone() } else { pyo3::types::PyList::new(py, [values])?.into_any() };
    let inp = input(&values, dtype.is_string())?;
    let cell = with_values(py, &inp, |v| ofs_core::cell::encode(dtype, string_length, vector_length, v, saturate))?
        .py_err()?;
    Ok(bytes(py, &cell))
}

/// The most bytes one cell of `data_type` can take (`string_length`: the booked length of a string
/// feature; `vector_length`: the length of a vector feature). The registry's row-size rule and the
/// servers' response estimate both use it.
#[pyfunction]
#[pyo3(signature = (data_type, *, string_length = Int(0), vector_length = Int(0)), text_signature = "(data_type, *, string_length=0, vector_length=0)")]
pub fn cell_max_len(data_type: Int<u8>, string_length: Int<u32>, vector_length: Int<u32>) -> PyResult<u64> {
    ofs_core::cell::max_len(dtype_of(data_type.0)?, string_length.0, vector_length.0).py_err()
}

/// Decodes a cell to a numpy array (a list of str for string types).
#[pyfunction]
#[pyo3(signature = (data_type, cell, *, vector_length = Int(0)), text_signature = "(data_type, cell, *, vector_length=0)")]
pub fn decode_cell<'py>(
    py: Python<'py>,
    data_type: Int<u8>,
    cell: &[u8],
    vector_length: Int<u32>,
) -> PyResult<Bound<'py, PyAny>> {
    let dtype = dtype_of(data_type.0)?;
    let arr = py.detach(|| ofs_core::cell::decode(dtype, cell, vector_length.0)).py_err()?;
    array_to_py(py, arr)
}

/// Parses the 9-byte header of a block.
#[pyfunction]
pub fn read_header(block: &[u8]) -> PyResult<PyBlockHeader> {
    Header::parse(block).py_err().map(PyBlockHeader::from)
}

/// The five expiry bytes for an absolute expiry (0 = never), checked against `now`.
#[pyfunction]
#[pyo3(signature = (expiry_at, *, now = None))]
pub fn expiry_encode(py: Python<'_>, expiry_at: Int<u64>, now: Option<Int<u64>>) -> PyResult<Bound<'_, PyBytes>> {
    let b = expiry::encode(expiry_at.0, now_or_clock(now)).py_err()?;
    Ok(bytes(py, &b))
}

/// Decodes five expiry bytes to an absolute unix second, or None for "never".
#[pyfunction]
pub fn expiry_decode(raw: &[u8]) -> PyResult<Option<u64>> {
    let arr: [u8; 5] = raw.try_into().map_err(|_| invalid(format!("expiry is 5 bytes, got {}", raw.len())))?;
    expiry::decode(arr).py_err()
}
