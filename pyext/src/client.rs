//! Bindings of the client side of the wire (`ofs_core::wire`): `persist.Query` bytes from numpy
//! arrays and lists of str (for the Python client SDK and the Kafka producer), and retrieve
//! responses decoded into one numpy array per feature group.

use numpy::{PyArray1, PyUntypedArray, PyUntypedArrayMethods};
use ofs_core::wire::{self, Cells, PersistGroup};
use ofs_core::DataType;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyBytes, PyList, PyString};

use crate::args::Int;
use crate::arrays::{input, shaped_to_py, with_values, Input};
use crate::errors::{invalid, IntoPy};

/// `(fg_label, data type id, feature labels, values)`.
type GroupTuple<'py> = (String, Int<u8>, Vec<String>, Bound<'py, PyAny>);

/// Strings of one FG, owned by Python and borrowed by the encoder.
enum Owned {
    Numbers(wire::Container, usize),
    Strings(Vec<PyBackedStr>),
    StringVectors(Vec<PyBackedStr>, Vec<usize>),
}

/// Rows of key values: each a sequence of str, or a str (a one-value row).
fn key_rows(keys: &Bound<'_, PyAny>) -> PyResult<Vec<Vec<PyBackedStr>>> {
    if keys.is_instance_of::<PyString>() {
        return Err(invalid("keys must be a sequence of key rows, not a str"));
    }
    keys.try_iter()?
        .enumerate()
        .map(|(i, row)| {
            let row = row?;
            if let Ok(one) = row.extract::<PyBackedStr>() {
                return Ok(vec![one]);
            }
            let bad = || invalid(format!("key row {i} must be a str or a sequence of str, got {row}"));
            row.try_iter().map_err(|_| bad())?.map(|v| v?.extract::<PyBackedStr>().map_err(|_| bad())).collect()
        })
        .collect()
}

/// A flat sequence of str (`what` names it in errors).
fn strings(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<PyBackedStr>> {
    match input(obj, true) {
        Ok(Input::Strings(s)) => Ok(s),
        _ => Err(invalid(format!("{what} must be a flat sequence of str"))),
    }
}

/// Converts one FG's Python values to its wire container, checking the array shape.
fn group_values(
    py: Python<'_>,
    label: &str,
    dtype: DataType,
    n: usize,
    rows: usize,
    obj: &Bound<'_, PyAny>,
) -> PyResult<Owned> {
    let ctx = |e: String| invalid(format!("feature group {label:?} ({dtype}): {e}"));
    if dtype.is_string() {
        if !dtype.is_vector() {
            return Ok(Owned::Strings(strings(obj, &format!("feature group {label:?} ({dtype}) values"))?));
        }
        if obj.is_instance_of::<PyString>() {
            return Err(ctx("values must be a flat list of rows × features lists of str".into()));
        }
        let (mut flat, mut counts) = (Vec::new(), Vec::new());
        for (i, cell) in obj.try_iter()?.enumerate() {
            let cell = strings(&cell?, &format!("feature group {label:?} ({dtype}) cell {i}"))?;
            counts.push(cell.len());
            flat.extend(cell);
        }
        return Ok(Owned::StringVectors(flat, counts));
    }
    let Input::Array(arr) = input(obj, false)? else { unreachable!("numeric input is an array") };
    // numpy's float16 has no Rust buffer type here; float32 holds every float16 exactly.
    let arr = if arr.getattr("dtype")?.getattr("kind")?.extract::<String>()? == "f"
        && arr.getattr("dtype")?.getattr("itemsize")?.extract::<usize>()? == 2
    {
        arr.call_method1("astype", ("float32",))?
    } else {
        arr
    };
    let shape =
        arr.cast::<PyUntypedArray>().map_err(|_| ctx("values must be a numeric array".into()))?.shape().to_vec();
    let vector_length = match (dtype.is_vector(), shape.as_slice()) {
        (false, &[r, f]) if r == rows && f == n => 1,
        (true, &[r, f, l]) if r == rows && f == n && l > 0 => l,
        (vector, _) => {
            let want = if vector { "(rows, features, vector_length)" } else { "(rows, features)" };
            return Err(ctx(format!("values of shape {shape:?}, expected {want} with rows={rows}, features={n}")));
        }
    };
    let per_row = n * vector_length;
    let locate = |i: usize| {
        let (r, rest) = (i / per_row, i % per_row);
        let (f, e) = (rest / vector_length, rest % vector_length);
        let element = if dtype.is_vector() { format!(" element {e}") } else { String::new() };
        format!("feature group {label:?}, row {r}, feature {f}{element}")
    };
    let container = with_values(py, &Input::Array(arr), |v| wire::to_container(v, dtype, locate))?.py_err()?;
    Ok(Owned::Numbers(container, vector_length))
}

/// Serialized `persist.Query` bytes. `keys`: rows of key values aligned with `keys_schema`;
/// `feature_groups`: `(fg_label, data type id, feature labels, values)` with numeric values an array
/// of shape `(rows, features)` (`(rows, features, vector_length)` for vector types), strings a flat
/// list of `rows × features` str, string vectors a flat list of `rows × features` lists of str.
#[pyfunction]
pub fn encode_persist_query<'py>(
    py: Python<'py>,
    entity: String,
    keys_schema: Vec<String>,
    keys: &Bound<'py, PyAny>,
    feature_groups: Vec<GroupTuple<'py>>,
) -> PyResult<Bound<'py, PyBytes>> {
    let keys = key_rows(keys)?;
    let mut parts = Vec::with_capacity(feature_groups.len());
    for (label, dtype, labels, values) in feature_groups {
        let dt = DataType::from_u8(dtype.0).py_err()?;
        let owned = group_values(py, &label, dt, labels.len(), keys.len(), &values)?;
        parts.push((label, dt, labels, owned));
    }
    let out = py
        .detach(|| {
            let groups: Vec<PersistGroup<'_>> = parts
                .iter()
                .map(|(label, dtype, labels, owned)| PersistGroup {
                    label: label.clone(),
                    dtype: *dtype,
                    feature_labels: labels.clone(),
                    cells: match owned {
                        Owned::Numbers(c, l) => Cells::Numbers { values: c, vector_length: *l },
                        Owned::Strings(s) => Cells::Strings(s.iter().map(|s| s.as_bytes()).collect()),
                        Owned::StringVectors(s, counts) => Cells::StringVectors {
                            strings: s.iter().map(|s| s.as_bytes()).collect(),
                            counts: counts.clone(),
                        },
                    },
                })
                .collect();
            let key_refs: Vec<Vec<&str>> = keys.iter().map(|k| k.iter().map(|s| &**s).collect()).collect();
            wire::encode_persist_query(&entity, &keys_schema, &key_refs, &groups)
        })
        .py_err()?;
    Ok(PyBytes::new(py, &out))
}

/// Serialized `retrieve.Query` bytes. `keys`: rows of key values aligned with `keys_schema` (a str
/// is a one-value row); `feature_groups`: `(fg label, feature labels)`.
#[pyfunction]
pub fn encode_retrieve_query<'py>(
    py: Python<'py>,
    entity: String,
    keys_schema: Vec<String>,
    keys: &Bound<'py, PyAny>,
    feature_groups: Vec<(PyBackedStr, Vec<PyBackedStr>)>,
) -> PyResult<Bound<'py, PyBytes>> {
    let keys = key_rows(keys)?;
    let out = py.detach(|| {
        let key_refs: Vec<Vec<&str>> = keys.iter().map(|k| k.iter().map(|s| &**s).collect()).collect();
        let fgs: Vec<(&str, Vec<&str>)> =
            feature_groups.iter().map(|(l, f)| (&**l, f.iter().map(|s| &**s).collect())).collect();
        wire::encode_retrieve_query(&entity, &keys_schema, &key_refs, &fgs)
    });
    Ok(PyBytes::new(py, &out))
}

/// `(fg label, feature labels, data type ids, vector lengths, values, status)`.
type GroupOut<'py> = (String, Vec<String>, Vec<u8>, Vec<u32>, Bound<'py, PyAny>, Bound<'py, PyArray1<u8>>);

/// `(entity, keys_schema, keys back to back, groups)`.
type RetrieveOut<'py> = (String, Vec<String>, Vec<String>, Vec<GroupOut<'py>>);

/// Splits `items` into consecutive lists of the given sizes.
fn chunked<'py>(
    py: Python<'py>,
    items: &[String],
    sizes: impl Iterator<Item = usize>,
) -> PyResult<Vec<Bound<'py, PyList>>> {
    let mut at = 0;
    sizes
        .map(|n| {
            let list = PyList::new(py, &items[at..at + n]);
            at += n;
            list
        })
        .collect()
}

/// Decodes `retrieve.Result` bytes from our server (GIL released) into
/// `(entity, keys_schema, keys, groups)`: `keys` every row's key values back to back; per feature
/// group `(label, feature labels, data type ids, vector lengths, values, status)` with values shaped
/// as the embedded `FeatureStore.retrieve` returns them and status a uint8 array per row. `native` as
/// in `Catalog.retrieve`: bf16 as `ml_dtypes.bfloat16`, Q8 as `(codes, scales)`.
#[pyfunction]
#[pyo3(signature = (data, *, native = false))]
pub fn decode_retrieve_result<'py>(py: Python<'py>, data: &[u8], native: bool) -> PyResult<RetrieveOut<'py>> {
    let form = if native { ofs_core::cell::FloatForm::Native } else { ofs_core::cell::FloatForm::Widened };
    let decoded = py.detach(|| wire::decode_retrieve_result_as(data, form)).py_err()?;
    let rows = decoded.rows;
    let groups = decoded
        .groups
        .into_iter()
        .map(|g| {
            let labels = g.features.iter().map(|f| f.label.clone()).collect();
            let types = g.features.iter().map(|f| f.dtype as u8).collect();
            let lengths = g.features.iter().map(|f| f.vector_length).collect();
            // Shaped like the embedded `FeatureStore.retrieve` (one rule: `ofs_core::shape`).
            let values = g.layout().shape_counted(g.values, rows, &g.string_counts).py_err()?;
            let status = PyArray1::from_vec(py, g.status);
            Ok((g.label, labels, types, lengths, shaped_to_py(py, values)?, status))
        })
        .collect::<PyResult<Vec<_>>>()?;
    Ok((decoded.entity, decoded.keys_schema, decoded.keys, groups))
}

/// `(fg label, feature labels, rows of rendered cells)`.
type DecodedGroupOut<'py> = (String, Vec<String>, Bound<'py, PyList>);

/// Decodes `retrieve.DecodedResult` bytes (GIL released) into `(keys_schema, keys, groups)`: `keys`
/// every row's key values back to back; per feature group `(label, feature labels, rows)` with each
/// row a list of the server's rendered strings.
#[pyfunction]
pub fn decode_decoded_result<'py>(
    py: Python<'py>,
    data: &[u8],
) -> PyResult<(Vec<String>, Vec<String>, Vec<DecodedGroupOut<'py>>)> {
    let decoded = py.detach(|| wire::decode_decoded_result(data)).py_err()?;
    let rows = decoded.rows;
    let groups = decoded
        .groups
        .into_iter()
        .map(|(label, features, cells)| {
            let n = features.len();
            let rows = chunked(py, &cells, std::iter::repeat_n(n, rows))?;
            Ok((label, features, PyList::new(py, rows)?))
        })
        .collect::<PyResult<Vec<_>>>()?;
    Ok((decoded.keys_schema, decoded.keys, groups))
}
