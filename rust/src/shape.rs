//! The shape of one feature group's values in a retrieve result, stated once for every caller: the
//! embedded `FeatureStore.retrieve` (from the engine's assembly) and `Client.retrieve` (from a decoded
//! `retrieve.Result`) return the same shapes.
//!
//! Numbers come as a `(rows, features, length)` array when the features are vectors of one length,
//! else `(rows, Σ widths)`; native Q8 as its codes shaped so, its scales `(rows, features)` and the
//! vector lengths; strings as a list per row, of lists per feature for string vectors.

use crate::dtype::DataType;
use crate::error::{Error, Result};
use crate::psdb::Array;

/// How one FG's features lay out a row of its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Values per cell of each feature (1 for scalars).
    pub widths: Vec<usize>,
    /// Whether the features are vectors (as the first one's served type says).
    pub vectors: bool,
}

/// One FG's values, shaped.
#[derive(Debug, Clone, PartialEq)]
pub enum Shaped {
    /// Numbers (bools, native bf16 bits) and the dimensions of their array.
    Array { values: Array, dims: Vec<usize> },
    /// Native Q8: the codes with `dims`, one scale per cell with `scale_dims`, each feature's length.
    Q8 { codes: Vec<i8>, scales: Vec<f32>, dims: Vec<usize>, scale_dims: [usize; 2], lengths: Vec<usize> },
    /// Strings: per row, its strings.
    Strings(Vec<Vec<String>>),
    /// String vectors: per row, per feature, the cell's strings.
    StringVectors(Vec<Vec<Vec<String>>>),
}

impl Layout {
    /// The layout of features served as `(type, values per cell)`, in request order.
    pub fn new(features: impl IntoIterator<Item = (DataType, usize)>) -> Layout {
        let mut vectors = None;
        let widths = features
            .into_iter()
            .map(|(dtype, width)| {
                vectors.get_or_insert(dtype.is_vector());
                width
            })
            .collect();
        Layout { widths, vectors: vectors.unwrap_or(false) }
    }

    /// Dimensions of `rows` rows of numbers: `(rows, features, length)` for vectors of one length,
    /// else `(rows, Σ widths)`.
    pub fn dims(&self, rows: usize) -> Vec<usize> {
        match self.widths.first() {
            Some(&w) if self.vectors && self.widths.iter().all(|&x| x == w) => vec![rows, self.widths.len(), w],
            _ => vec![rows, self.widths.iter().sum()],
        }
    }

    /// `rows` rows of `values` (row-major: row, feature, element), string vector cells holding as
    /// many strings as their feature's width.
    pub fn shape(&self, values: Array, rows: usize) -> Result<Shaped> {
        let n = self.widths.len();
        self.shape_with(values, rows, |cell| self.widths[cell % n])
    }

    /// [`Layout::shape`] for string vector cells holding `counts[cell]` strings each (row-major), as
    /// a response reports them.
    pub fn shape_counted(&self, values: Array, rows: usize, counts: &[usize]) -> Result<Shaped> {
        if matches!(values, Array::Str(_)) && self.vectors && counts.len() != rows * self.widths.len() {
            return Err(Error::corrupt(format!(
                "{} string vector cells for {rows} rows of {} features",
                counts.len(),
                self.widths.len()
            )));
        }
        self.shape_with(values, rows, |cell| counts[cell])
    }

    fn shape_with(&self, values: Array, rows: usize, cell_len: impl Fn(usize) -> usize) -> Result<Shaped> {
        let per_row: usize = self.widths.iter().sum();
        let n = self.widths.len();
        let wrong = |got: usize, what: &str| Error::corrupt(format!("{got} {what} for {rows} rows of {n} features"));
        match values {
            Array::Str(flat) if self.vectors => {
                let total: usize = (0..rows * n).map(&cell_len).sum();
                if flat.len() != total {
                    return Err(wrong(flat.len(), "strings"));
                }
                let (mut strings, mut cells) = (flat.into_iter(), 0..);
                let mut cell = || strings.by_ref().take(cells.next().map_or(0, &cell_len)).collect();
                Ok(Shaped::StringVectors((0..rows).map(|_| (0..n).map(|_| cell()).collect()).collect()))
            }
            Array::Str(flat) => {
                if flat.len() != rows * per_row {
                    return Err(wrong(flat.len(), "strings"));
                }
                let mut strings = flat.into_iter();
                Ok(Shaped::Strings((0..rows).map(|_| strings.by_ref().take(per_row).collect()).collect()))
            }
            Array::Q8 { codes, scales } => {
                if codes.len() != rows * per_row || scales.len() != rows * n {
                    return Err(wrong(codes.len(), "codes"));
                }
                let dims = self.dims(rows);
                Ok(Shaped::Q8 { codes, scales, dims, scale_dims: [rows, n], lengths: self.widths.clone() })
            }
            values => {
                if values.len() != rows * per_row {
                    return Err(wrong(values.len(), "values"));
                }
                Ok(Shaped::Array { dims: self.dims(rows), values })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(n: usize) -> Vec<String> {
        (0..n).map(|i| i.to_string()).collect()
    }

    #[test]
    fn numbers_are_three_dimensional_only_for_vectors_of_one_length() {
        let vectors = Layout::new([(DataType::Fp32Vector, 3), (DataType::Fp32Vector, 3)]);
        assert_eq!(vectors.dims(4), [4, 2, 3]);
        let ragged = Layout::new([(DataType::Fp32Vector, 3), (DataType::Fp32Vector, 2)]);
        assert_eq!(ragged.dims(4), [4, 5]);
        let scalars = Layout::new([(DataType::Int64, 1), (DataType::Int64, 1)]);
        assert_eq!(scalars.dims(4), [4, 2]);
        let got = scalars.shape(Array::I64(vec![1, 2, 3, 4]), 2).unwrap();
        assert_eq!(got, Shaped::Array { values: Array::I64(vec![1, 2, 3, 4]), dims: vec![2, 2] });
        assert!(scalars.shape(Array::I64(vec![1, 2, 3]), 2).unwrap_err().to_string().contains("3 values for 2 rows"));
    }

    #[test]
    fn q8_codes_shape_like_numbers_and_scales_per_cell() {
        let l = Layout::new([(DataType::Q8Vector, 2), (DataType::Q8Vector, 2)]);
        let got = l.shape(Array::Q8 { codes: vec![1; 8], scales: vec![0.5; 4] }, 2).unwrap();
        let want = Shaped::Q8 {
            codes: vec![1; 8],
            scales: vec![0.5; 4],
            dims: vec![2, 2, 2],
            scale_dims: [2, 2],
            lengths: vec![2, 2],
        };
        assert_eq!(got, want);
        assert!(l.shape(Array::Q8 { codes: vec![1; 8], scales: vec![0.5; 3] }, 2).is_err());
    }

    #[test]
    fn strings_per_row_and_string_vectors_per_cell() {
        let s = Layout::new([(DataType::String, 1), (DataType::String, 1)]);
        let got = s.shape(Array::Str(strings(4)), 2).unwrap();
        assert_eq!(got, Shaped::Strings(vec![strings(2), vec!["2".into(), "3".into()]]));
        let v = Layout::new([(DataType::StringVector, 2), (DataType::StringVector, 1)]);
        let Shaped::StringVectors(rows) = v.shape(Array::Str(strings(6)), 2).unwrap() else { panic!() };
        assert_eq!(rows[1], [vec!["3".to_owned(), "4".into()], vec!["5".into()]]);
        // Counted cells (a response's): each cell as long as it says.
        let Shaped::StringVectors(rows) = v.shape_counted(Array::Str(strings(4)), 2, &[0, 1, 3, 0]).unwrap() else {
            panic!()
        };
        assert_eq!(rows[0], [vec![], vec!["0".to_owned()]]);
        assert_eq!(rows[1], [vec!["1".to_owned(), "2".into(), "3".into()], vec![]]);
        assert!(v.shape_counted(Array::Str(strings(4)), 2, &[0, 1, 3]).is_err());
        assert!(v.shape_counted(Array::Str(strings(4)), 2, &[0, 1, 4, 0]).is_err());
        assert!(v.shape_counted(Array::Str(strings(5)), 2, &[0, 1, 3, 0]).is_err());
    }
}
