//! Bindings of CSDB values, low-precision float conversion and retrieval-time quantization.

use numpy::PyArray1;
use ofs_core::{bf16, csdb, float, q8, quant, DataType};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::args::{ints, Int};
use crate::arrays::{bytes, slice_of};
use crate::errors::{invalid, IntoPy};

/// Builds a CSDB from `(fg_id, block)` pairs (empty block = negative entry). `layout` None picks
/// layout 1 when every block fits 16-bit lengths, else layout 2.
#[pyfunction]
#[pyo3(signature = (entries, *, layout = None))]
pub fn csdb_encode(
    py: Python<'_>,
    entries: Vec<(Int<u16>, Vec<u8>)>,
    layout: Option<Int<u8>>,
) -> PyResult<Bound<'_, PyBytes>> {
    let refs: Vec<(u16, &[u8])> = entries.iter().map(|(fg, b)| (fg.0, b.as_slice())).collect();
    let out = match layout {
        None => csdb::encode_auto(&refs),
        Some(Int(l)) => csdb::encode(&refs, l).py_err()?,
    };
    Ok(bytes(py, &out))
}

/// Every `(fg_id, block)` entry of a CSDB, in stored order.
#[pyfunction]
pub fn csdb_entries<'py>(py: Python<'py>, value: &[u8]) -> PyResult<Vec<(u16, Bound<'py, PyBytes>)>> {
    csdb::entries(value).py_err()?.map(|e| e.py_err().map(|(fg, b)| (fg, bytes(py, b)))).collect()
}

/// Blocks of the wanted FGs, skipping the others: None = no entry, b"" = negative entry.
#[pyfunction]
pub fn csdb_lookup<'py>(
    py: Python<'py>,
    value: &[u8],
    fg_ids: Vec<Int<u16>>,
) -> PyResult<Vec<Option<Bound<'py, PyBytes>>>> {
    let fg_ids = ints(fg_ids);
    let mut out = vec![None; fg_ids.len()];
    csdb::lookup(value, &fg_ids, &mut out).py_err()?;
    Ok(out.into_iter().map(|o| o.map(|b| bytes(py, b))).collect())
}

macro_rules! float_codec {
    ($enc:ident, $dec:ident, $code:ty, $encode_slice:path, $sat:path, $decode_slice:path, $doc_enc:literal, $doc_dec:literal) => {
        #[doc = $doc_enc]
        #[pyfunction]
        #[pyo3(signature = (values, *, saturate = false))]
        pub fn $enc<'py>(
            py: Python<'py>,
            values: &Bound<'py, PyAny>,
            saturate: bool,
        ) -> PyResult<Bound<'py, PyArray1<$code>>> {
            let src = slice_of::<f32>(values, "values")?;
            let src = src.as_slice().map_err(|e| invalid(e.to_string()))?;
            let out = py.detach(|| {
                if saturate {
                    src.iter().map(|&x| $sat(x)).collect::<Vec<$code>>()
                } else {
                    let mut out: Vec<$code> = vec![0; src.len()];
                    $encode_slice(src, &mut out);
                    out
                }
            });
            Ok(PyArray1::from_vec(py, out))
        }

        #[doc = $doc_dec]
        #[pyfunction]
        pub fn $dec<'py>(py: Python<'py>, codes: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyArray1<f32>>> {
            let src = slice_of::<$code>(codes, "codes")?;
            let src = src.as_slice().map_err(|e| invalid(e.to_string()))?;
            let out = py.detach(|| {
                let mut out = vec![0f32; src.len()];
                $decode_slice(src, &mut out);
                out
            });
            Ok(PyArray1::from_vec(py, out))
        }
    };
}

float_codec!(
    fp16_encode,
    fp16_decode,
    u16,
    float::encode_f16_slice,
    float::f32_to_f16_sat,
    float::decode_f16_slice,
    "float32 → IEEE binary16 bit patterns (round-to-nearest-even; overflow → ±Inf, or ±65504 when saturating).",
    "IEEE binary16 bit patterns → float32."
);
float_codec!(
    fp8_e4m3_encode,
    fp8_e4m3_decode,
    u8,
    float::encode_e4m3_slice,
    float::f32_to_e4m3_sat,
    float::decode_e4m3_slice,
    "float32 → FP8 E4M3FN codes, bit-exact with the reference (|x| > 464 → NaN, or ±448 when saturating).",
    "FP8 E4M3FN codes → float32."
);
float_codec!(
    fp8_e5m2_encode,
    fp8_e5m2_decode,
    u8,
    float::encode_e5m2_slice,
    float::f32_to_e5m2_sat,
    float::decode_e5m2_slice,
    "float32 → FP8 E5M2 codes, bit-exact with the reference (|x| ≥ 61440 → ±Inf, or ±57344 when saturating).",
    "FP8 E5M2 codes → float32."
);

float_codec!(
    bf16_encode,
    bf16_decode,
    u16,
    bf16::encode_bf16_slice,
    bf16::f32_to_bf16_sat,
    bf16::decode_bf16_slice,
    "float32 → bfloat16 bit patterns (round-to-nearest-even, NaN kept; overflow → ±Inf, or ±0x7F7F when saturating).",
    "bfloat16 bit patterns → float32 (exact)."
);

/// float32 rows (`(rows, dim)`, or one vector) → Q8: `(codes int8 (rows, dim), scales float32 (rows,))`,
/// one scale `max|x| / 127` per row, codes rounded half to even. NaN / ±Inf raise `InvalidInputError`
/// naming the row and element, unless `saturate` (±Inf → ±127, NaN → code -128).
#[pyfunction]
#[pyo3(signature = (values, *, saturate = false))]
pub fn q8_encode<'py>(
    py: Python<'py>,
    values: &Bound<'py, PyAny>,
    saturate: bool,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyArray1<f32>>)> {
    let (rows, dim, src) = rows_of(values)?;
    let src = src.as_slice().map_err(|e| invalid(e.to_string()))?;
    let (codes, scales) = py
        .detach(|| {
            let mut codes = vec![0i8; src.len()];
            let mut scales = vec![0f32; rows];
            q8::encode_rows(src, dim, saturate, &mut codes, &mut scales).map(|()| (codes, scales))
        })
        .map_err(|e| {
            let (row, col) = (e.index / dim.max(1), e.index % dim.max(1));
            invalid(format!(
                "row {row} element {col}: {} cannot be quantized to Q8 (finite values only; saturate=True stores ±Inf as ±127 × scale and NaN as code -128)",
                e.value
            ))
        })?;
    let codes = PyArray1::from_vec(py, codes).call_method1("reshape", ((rows, dim),))?;
    Ok((codes, PyArray1::from_vec(py, scales)))
}

/// Q8 `codes` (int8, `(rows, dim)`) and `scales` (float32, `(rows,)`) → float32 `(rows, dim)`:
/// `code × scale` (code -128: NaN).
#[pyfunction]
pub fn q8_decode<'py>(
    py: Python<'py>,
    codes: &Bound<'py, PyAny>,
    scales: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let np = py.import("numpy")?;
    let codes2 = np.getattr("atleast_2d")?.call1((codes,))?;
    let shape: Vec<usize> = codes2.getattr("shape")?.extract()?;
    let [rows, dim] = shape[..] else {
        return Err(invalid(format!("codes: expected a (rows, dim) array, got shape {shape:?}")));
    };
    let flat = codes2.call_method1("reshape", (rows * dim,))?;
    let codes = slice_of::<i8>(&flat, "codes")?;
    let scales = slice_of::<f32>(scales, "scales")?;
    let (c, s) =
        (codes.as_slice().map_err(|e| invalid(e.to_string()))?, scales.as_slice().map_err(|e| invalid(e.to_string()))?);
    if s.len() != rows {
        return Err(invalid(format!("{} scales for {rows} rows of codes", s.len())));
    }
    let out = py.detach(|| {
        let mut out = vec![0f32; c.len()];
        q8::decode_rows(c, s, dim, &mut out);
        out
    });
    PyArray1::from_vec(py, out).call_method1("reshape", ((rows, dim),))
}

/// `(rows, dim, flat float32 values)` of a 1-D (one row) or 2-D array.
fn rows_of<'py>(values: &Bound<'py, PyAny>) -> PyResult<(usize, usize, numpy::PyReadonlyArray1<'py, f32>)> {
    let py = values.py();
    let np = py.import("numpy")?;
    let arr = np.getattr("atleast_2d")?.call1((np.getattr("asarray")?.call1((values,))?,))?;
    let shape: Vec<usize> = arr.getattr("shape")?.extract()?;
    let [rows, dim] = shape[..] else {
        return Err(invalid(format!("values: expected one vector or a (rows, dim) array, got shape {shape:?}")));
    };
    let flat = arr.call_method1("reshape", (rows * dim,))?;
    Ok((rows, dim, slice_of::<f32>(&flat, "values")?))
}

/// Converts one feature's response bytes from `from_type` to the narrower float `to_type`.
#[pyfunction]
pub fn quantize<'py>(
    py: Python<'py>,
    data: &[u8],
    from_type: Int<u8>,
    to_type: Int<u8>,
) -> PyResult<Bound<'py, PyBytes>> {
    let from = DataType::from_u8(from_type.0).py_err()?;
    let to = DataType::from_u8(to_type.0).py_err()?;
    let mut out = Vec::new();
    py.detach(|| quant::convert(data, from, to, &mut out)).py_err()?;
    Ok(bytes(py, &out))
}

/// Splits `"label@DataTypeX"` into `(label, type number or None)`.
#[pyfunction]
pub fn parse_feature_label(label: &str) -> PyResult<(String, Option<u8>)> {
    let (base, ty) = quant::parse_label(label).py_err()?;
    Ok((base.to_owned(), ty.map(|t| t as u8)))
}

/// Names of the data types (the reference's 31, then our extensions), indexed by their number.
#[pyfunction]
pub fn data_type_names() -> Vec<&'static str> {
    DataType::ALL.iter().map(|t| t.name()).collect()
}

/// Parses a data type name (`"DataTypeFP16"`, `"fp16"`) to its number.
#[pyfunction]
pub fn parse_data_type(name: &str) -> PyResult<u8> {
    name.parse::<DataType>().py_err().map(|t| t as u8)
}
