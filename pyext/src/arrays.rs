//! numpy ⇄ core conversions. Values cross as contiguous buffers; no Python object per value.

use numpy::{Element as NpElement, PyArray1, PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use ofs_core::shape::Shaped;
use ofs_core::{Array, Values};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyBytes, PyList, PyTuple};

use crate::errors::invalid;

/// The message when bfloat16 arrays are asked for without `ml_dtypes` installed.
const NO_ML_DTYPES: &str = "bfloat16 arrays need the ml_dtypes package (pip install ml_dtypes); \
     or retrieve with embeddings=\"float32\"";

/// A numpy array of bfloat16 bit patterns viewed as `ml_dtypes.bfloat16` (no copy).
fn bf16_to_py(py: Python<'_>, bits: Vec<u16>) -> PyResult<Bound<'_, PyAny>> {
    let bf16 = py.import("ml_dtypes").map_err(|_| invalid(NO_ML_DTYPES))?.getattr("bfloat16")?;
    vec_to_py(py, bits).call_method1("view", (bf16,))
}

/// Owned, GIL-independent input values: contiguous numpy buffers or backed strings.
pub enum Input<'py> {
    Array(Bound<'py, PyAny>),
    Strings(Vec<PyBackedStr>),
}

/// Coerces `obj` into a C-contiguous numpy array (any dtype) or, for string types, a list of str.
pub fn input<'py>(obj: &Bound<'py, PyAny>, strings: bool) -> PyResult<Input<'py>> {
    let py = obj.py();
    if strings {
        if obj.is_instance_of::<pyo3::types::PyString>() {
            return Err(invalid("string values must be a sequence of str, not a single str"));
        }
        let items = obj.try_iter()?.map(|item| item?.extract::<PyBackedStr>()).collect::<PyResult<Vec<_>>>();
        return items.map(Input::Strings).map_err(|_| invalid("string features take a sequence of str values"));
    }
    let np = py.import("numpy")?;
    let arr = np.getattr("ascontiguousarray")?.call1((obj,))?;
    Ok(Input::Array(arr))
}

macro_rules! dispatch_array {
    ($arr:expr, $f:expr, [$(($t:ty, $variant:ident)),*]) => {{
        let arr: &Bound<'_, PyAny> = $arr;
        $(
            if let Ok(a) = arr.cast::<PyArrayDyn<$t>>() {
                let ro = a.readonly();
                let slice = ro.as_slice().map_err(|e| invalid(e.to_string()))?;
                return Ok($f(Values::$variant(slice)));
            }
        )*
        let dtype = arr.getattr("dtype").map(|d| d.to_string()).unwrap_or_default();
        Err(invalid(format!("unsupported value dtype {dtype}: use a numeric, bool or str array")))
    }};
}

/// Runs `f` on the flat values (the GIL is released inside `f` by the caller's `detach`).
pub fn with_values<R>(py: Python<'_>, input: &Input<'_>, f: impl Fn(Values<'_>) -> R + Sync + Send) -> PyResult<R>
where
    R: Send,
{
    match input {
        Input::Strings(s) => {
            let refs: Vec<&[u8]> = s.iter().map(|s| s.as_bytes()).collect();
            Ok(py.detach(|| f(Values::Str(&refs))))
        }
        Input::Array(arr) => {
            let run = |v: Values<'_>| py.detach(|| f(v));
            dispatch_array!(
                arr,
                run,
                [
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
                ]
            )
        }
    }
}

fn vec_to_py<T: NpElement>(py: Python<'_>, v: Vec<T>) -> Bound<'_, PyAny> {
    PyArray1::from_vec(py, v).into_any()
}

/// A decoded block as a 1-D numpy array (numbers, bools), a list of str, or for the native Q8 form a
/// `(codes int8, scales float32)` tuple (bf16's native form is an `ml_dtypes.bfloat16` array).
pub fn array_to_py(py: Python<'_>, a: Array) -> PyResult<Bound<'_, PyAny>> {
    Ok(match a {
        Array::F32(v) => vec_to_py(py, v),
        Array::F64(v) => vec_to_py(py, v),
        Array::I8(v) => vec_to_py(py, v),
        Array::I16(v) => vec_to_py(py, v),
        Array::I32(v) => vec_to_py(py, v),
        Array::I64(v) => vec_to_py(py, v),
        Array::U8(v) => vec_to_py(py, v),
        Array::U16(v) => vec_to_py(py, v),
        Array::U32(v) => vec_to_py(py, v),
        Array::U64(v) => vec_to_py(py, v),
        Array::Bool(v) => vec_to_py(py, v),
        Array::Str(v) => PyList::new(py, v)?.into_any(),
        Array::Bf16(v) => bf16_to_py(py, v)?,
        Array::Q8 { codes, scales } => (vec_to_py(py, codes), vec_to_py(py, scales)).into_pyobject(py)?.into_any(),
    })
}

/// One FG's values as the core shaped them (`ofs_core::shape`): a numpy array of its dimensions, a
/// list per row of str (of lists per feature for string vectors), or for the native Q8 form a
/// `(codes, scales, lengths)` tuple of its codes and scales shaped likewise.
pub fn shaped_to_py(py: Python<'_>, shaped: Shaped) -> PyResult<Bound<'_, PyAny>> {
    fn reshape<'py>(flat: &Bound<'py, PyAny>, dims: &[usize]) -> PyResult<Bound<'py, PyAny>> {
        flat.call_method1("reshape", (PyTuple::new(flat.py(), dims)?,))
    }
    Ok(match shaped {
        Shaped::Array { values, dims } => reshape(&array_to_py(py, values)?, &dims)?,
        Shaped::Q8 { codes, scales, dims, scale_dims, lengths } => {
            let codes = reshape(&vec_to_py(py, codes), &dims)?;
            let scales = reshape(&vec_to_py(py, scales), &scale_dims)?;
            (codes, scales, lengths).into_pyobject(py)?.into_any()
        }
        Shaped::Strings(rows) => PyList::new(py, rows)?.into_any(),
        Shaped::StringVectors(rows) => PyList::new(py, rows)?.into_any(),
    })
}

/// Borrows `obj` as a contiguous 1-D array of `T`. Lists and other dtypes are converted when every
/// value survives the conversion unchanged (floats may round to `T`); otherwise it is an error.
pub fn slice_of<'py, T: NpElement>(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<numpy::PyReadonlyArray1<'py, T>> {
    let py = obj.py();
    let np = py.import("numpy")?;
    let want = numpy::dtype::<T>(py);
    let arr = np.getattr("ascontiguousarray")?.call1((obj,))?;
    let converted = if arr.cast::<PyArray1<T>>().is_ok() {
        arr
    } else {
        let conv = arr.call_method1("astype", (&want,))?;
        let kind = |a: &Bound<'py, PyAny>| -> PyResult<String> { a.getattr("kind")?.extract() };
        let is_float = kind(want.as_any())? == "f";
        let from_float = kind(&arr.getattr("dtype")?)? == "f";
        if !is_float && (from_float || !np.getattr("array_equal")?.call1((&conv, &arr))?.is_truthy()?) {
            return Err(invalid(format!("{what}: values do not fit {want}")));
        }
        conv
    };
    let typed = converted.cast::<PyArray1<T>>().map_err(|_| {
        let ndim = converted.cast::<numpy::PyUntypedArray>().map_or(0, PyUntypedArrayMethods::ndim);
        invalid(format!("{what}: expected a 1-D array, got {ndim} dimensions"))
    })?;
    Ok(typed.readonly())
}

pub fn bytes<'py>(py: Python<'py>, b: &[u8]) -> Bound<'py, PyBytes> {
    PyBytes::new(py, b)
}

/// Shapes flat decoded values by feature: vector types with one common length become a
/// `(n_features, length)` array (a list of lists for strings); ragged vectors become a list of
/// per-feature arrays; scalars stay 1-D.
pub fn shape_by_feature<'py>(flat: Bound<'py, PyAny>, meta: &ofs_core::BlockMeta) -> PyResult<Bound<'py, PyAny>> {
    if !meta.dtype().is_vector() {
        return Ok(flat);
    }
    let lens = meta.vector_lengths();
    let uniform = lens.windows(2).all(|w| w[0] == w[1]);
    if let Ok(list) = flat.cast::<PyList>() {
        let py = flat.py();
        let groups = (0..meta.n_features())
            .map(|i| list.get_slice(meta.value_offset(i), meta.value_offset(i) + meta.values_of(i)))
            .collect::<Vec<_>>();
        return Ok(PyList::new(py, groups)?.into_any());
    }
    if uniform {
        return flat.call_method1("reshape", ((meta.n_features(), lens[0] as usize),));
    }
    let py = flat.py();
    let parts = (0..meta.n_features())
        .map(|i| {
            flat.get_item(pyo3::types::PySlice::new(
                py,
                meta.value_offset(i) as isize,
                (meta.value_offset(i) + meta.values_of(i)) as isize,
                1,
            ))
        })
        .collect::<PyResult<Vec<_>>>()?;
    Ok(PyList::new(py, parts)?.into_any())
}
