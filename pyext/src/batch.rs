//! Binding of a batch load's encoded rows (`ofs_core::batch`): `Catalog.encode_batch` takes key columns
//! as Arrow string buffers (offsets, data) and each FG's values as one numpy array, a list of numpy
//! columns (one per value of a row), or for strings a list of str or Arrow string buffers, borrows them without a Python object per row and encodes with
//! the GIL released; `EncodedRows` keeps the result in native memory until `Store.write_encoded` writes
//! it.

use std::sync::Arc;

use numpy::{PyArray1, PyArrayDyn, PyArrayMethods, PyReadonlyArray1, PyReadonlyArrayDyn};
use ofs_core::batch::{EncodedRows, GroupValues, Offsets, StrColumn};
use ofs_core::catalog::Entity;
use ofs_core::{keys, Limits, Values};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyBytes, PyList, PyTuple};

use crate::args::{ints, Int};
use crate::arrays::{bytes, input, Input};
use crate::errors::{invalid, IntoPy};

/// `(key values, fg id, block, expires_at, key name)`: a `store.base.BlockWrite`'s fields.
type BlockWriteTuple<'py> = (Bound<'py, PyTuple>, u16, Bound<'py, PyBytes>, u64, String);

/// Rows of a batch load, encoded (`ofs_core::batch::EncodedRows`): key names and one block per row and
/// feature group, held natively until written.
#[pyclass(name = "EncodedRows", module = "online_feature_store._native", frozen)]
#[derive(Debug)]
pub struct PyEncodedRows {
    pub(crate) inner: Arc<EncodedRows>,
}

#[pymethods]
impl PyEncodedRows {
    fn __len__(&self) -> usize {
        self.inner.rows()
    }

    /// The entity's label.
    #[getter]
    fn entity(&self) -> &str {
        self.inner.entity()
    }

    /// `(fg_id, expires_at)` of each feature group, in the order they were encoded.
    #[getter]
    fn groups(&self) -> Vec<(u16, u64)> {
        self.inner.groups().iter().map(|g| (g.fg_id, g.expires_at)).collect()
    }

    /// Every row's canonical key name (`store.keys.encode_key` of its key).
    fn names(&self) -> Vec<&str> {
        (0..self.inner.rows()).map(|i| self.inner.name(i)).collect()
    }

    /// The writes of the FGs `fg_ids` (all when empty) as `store.base.BlockWrite` fields, row-major:
    /// `(key values, fg id, block, expires_at, key name)`, for stores written from Python.
    #[pyo3(signature = (fg_ids = Vec::new()))]
    fn block_writes<'py>(&self, py: Python<'py>, fg_ids: Vec<Int<u16>>) -> PyResult<Vec<BlockWriteTuple<'py>>> {
        let fg_ids = ints(fg_ids);
        let mut out = Vec::new();
        let mut key = None;
        for w in self.inner.writes(&fg_ids) {
            let values = match &key {
                Some((name, values)) if *name == w.key => Bound::clone(values),
                _ => PyTuple::new(py, keys::decode_key(w.key))?,
            };
            key = Some((w.key, values.clone()));
            out.push((values, w.fg_id, bytes(py, w.block), w.expires_at, w.key.to_owned()));
        }
        Ok(out)
    }

    fn __repr__(&self) -> String {
        format!(
            "<EncodedRows {} rows of {:?}, {} FGs>",
            self.inner.rows(),
            self.inner.entity(),
            self.inner.groups().len()
        )
    }
}

/// Borrowed Arrow string buffers: offsets (int32 or int64) and UTF-8 data (uint8).
struct StrBuffers<'py> {
    offsets: OffsetsArray<'py>,
    data: PyReadonlyArray1<'py, u8>,
}

enum OffsetsArray<'py> {
    I32(PyReadonlyArray1<'py, i32>),
    I64(PyReadonlyArray1<'py, i64>),
}

impl<'py> StrBuffers<'py> {
    /// `(offsets, data)`: 1-D contiguous arrays, offsets int32 or int64, data uint8.
    fn borrow(pair: &Bound<'py, PyAny>, what: &str) -> PyResult<Self> {
        let bad = || invalid(format!("{what}: expected (offsets, data): int32/int64 and uint8 1-D arrays"));
        let tuple = pair.cast::<PyTuple>().map_err(|_| bad())?;
        if tuple.len() != 2 {
            return Err(bad());
        }
        let (o, d) = (tuple.get_item(0)?, tuple.get_item(1)?);
        let offsets = if let Ok(a) = o.cast::<PyArray1<i32>>() {
            OffsetsArray::I32(a.readonly())
        } else if let Ok(a) = o.cast::<PyArray1<i64>>() {
            OffsetsArray::I64(a.readonly())
        } else {
            return Err(bad());
        };
        let data = d.cast::<PyArray1<u8>>().map_err(|_| bad())?.readonly();
        Ok(StrBuffers { offsets, data })
    }

    fn column(&self, what: &str) -> PyResult<StrColumn<'_>> {
        let offsets = match &self.offsets {
            OffsetsArray::I32(a) => Offsets::I32(a.as_slice().map_err(|e| not_contiguous(what, e))?),
            OffsetsArray::I64(a) => Offsets::I64(a.as_slice().map_err(|e| not_contiguous(what, e))?),
        };
        StrColumn::new(offsets, self.data.as_slice().map_err(|e| not_contiguous(what, e))?)
            .map_err(|e| invalid(format!("{what}: {e}")))
    }
}

fn not_contiguous(what: &str, e: impl std::fmt::Display) -> PyErr {
    invalid(format!("{what}: {e}"))
}

macro_rules! held_values {
    ($(($t:ty, $variant:ident)),*) => {
        /// One FG's values, borrowed for the encode.
        enum Held<'py> {
            $($variant(PyReadonlyArrayDyn<'py, $t>),)*
            Strs(Vec<PyBackedStr>),
            Arrow(StrBuffers<'py>),
            Columns(Vec<Held<'py>>),
        }

        impl<'py> Held<'py> {
            fn borrow(obj: &Bound<'py, PyAny>, strings: bool, what: &str) -> PyResult<Self> {
                if strings && obj.is_instance_of::<PyTuple>() {
                    return StrBuffers::borrow(obj, what).map(Held::Arrow);
                }
                if !strings && obj.is_instance_of::<PyList>() {
                    // one numpy array per value of a row (Arrow's columns), interleaved natively
                    let columns = obj.cast::<PyList>()?;
                    return columns
                        .iter()
                        .map(|c| {
                            if c.is_instance_of::<PyList>() {
                                return Err(invalid(format!("{what}: value columns must be numpy arrays")));
                            }
                            Held::borrow(&c, false, what)
                        })
                        .collect::<PyResult<Vec<_>>>()
                        .map(Held::Columns);
                }
                match input(obj, strings)? {
                    Input::Strings(s) => Ok(Held::Strs(s)),
                    Input::Array(arr) => {
                        $(if let Ok(a) = arr.cast::<PyArrayDyn<$t>>() {
                            return Ok(Held::$variant(a.readonly()));
                        })*
                        let dtype = arr.getattr("dtype").map(|d| d.to_string()).unwrap_or_default();
                        Err(invalid(format!("{what}: unsupported value dtype {dtype}: use a numeric or bool array")))
                    }
                }
            }

            /// The strings' bytes (empty for numeric values): what `Values::Str` borrows.
            fn strings(&self, what: &str) -> PyResult<Vec<&[u8]>> {
                Ok(match self {
                    Held::Strs(s) => s.iter().map(|s| s.as_bytes()).collect(),
                    Held::Arrow(b) => {
                        let c = b.column(what)?;
                        (0..c.len()).map(|i| c.bytes(i)).collect()
                    }
                    _ => Vec::new(),
                })
            }

            fn values<'a>(&'a self, strings: &'a [&'a [u8]], what: &str) -> PyResult<Values<'a>> {
                Ok(match self {
                    $(Held::$variant(a) => Values::$variant(a.as_slice().map_err(|e| not_contiguous(what, e))?),)*
                    Held::Strs(_) | Held::Arrow(_) => Values::Str(strings),
                    Held::Columns(_) => return Err(invalid(format!("{what}: value columns inside columns"))),
                })
            }

            fn group_values<'a>(&'a self, strings: &'a [&'a [u8]], what: &str) -> PyResult<GroupValues<'a>> {
                Ok(match self {
                    Held::Columns(columns) => GroupValues::Columns(
                        columns.iter().map(|c| c.values(&[], what)).collect::<PyResult<Vec<_>>>()?,
                    ),
                    other => GroupValues::Rows(other.values(strings, what)?),
                })
            }
        }
    };
}

held_values!(
    (f32, F32),
    (f64, F64),
    (i8, I8),
    (i16, I16),
    (i32, I32),
    (i64, I64),
    (u8, U8),
    (u16, U16),
    (u32, U32),
    (u64, U64),
    (bool, Bool)
);

/// `Catalog.encode_batch`: names the rows of `keys` and encodes every `(fg label, values)` of `groups`,
/// the GIL released.
pub fn encode(
    py: Python<'_>,
    entity: &Entity,
    keys: &[Bound<'_, PyAny>],
    groups: &[(String, Bound<'_, PyAny>)],
    now: u64,
    saturate: bool,
    limits: &Limits,
) -> PyResult<PyEncodedRows> {
    let key_what = |i: usize| format!("key column {i} of entity {:?}", entity.label);
    let key_buffers =
        keys.iter().enumerate().map(|(i, k)| StrBuffers::borrow(k, &key_what(i))).collect::<PyResult<Vec<_>>>()?;
    let key_columns =
        key_buffers.iter().enumerate().map(|(i, b)| b.column(&key_what(i))).collect::<PyResult<Vec<_>>>()?;
    let mut held = Vec::with_capacity(groups.len());
    for (label, values) in groups {
        let fg = entity.fg(label).py_err()?;
        held.push(Held::borrow(values, fg.dtype.is_string(), &format!("feature group {label:?}"))?);
    }
    let strings = held
        .iter()
        .zip(groups)
        .map(|(h, (label, _))| h.strings(&format!("feature group {label:?}")))
        .collect::<PyResult<Vec<_>>>()?;
    let values = held
        .iter()
        .zip(&strings)
        .zip(groups)
        .map(|((h, s), (label, _))| Ok((label.as_str(), h.group_values(s, &format!("feature group {label:?}"))?)))
        .collect::<PyResult<Vec<_>>>()?;
    let rows = py.detach(|| EncodedRows::encode(entity, &key_columns, &values, now, saturate, limits)).py_err()?;
    Ok(PyEncodedRows { inner: Arc::new(rows) })
}
