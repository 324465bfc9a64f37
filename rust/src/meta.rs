//! The layout of one feature-group version: what a block of that version contains.
//!
//! A PSDB carries no boundaries of its own (except string lengths), so encoding and decoding need
//! the FG's metadata *for the block's own schema version*: the data type, the number of features,
//! and per feature its booked string length (string types) or fixed vector length (vector types).

use crate::dtype::{DataType, Element};
use crate::error::{Error, Result};

/// Largest booked string length: string lengths are stored as `u16`.
pub const MAX_STRING_LEN: u32 = u16::MAX as u32;

/// Layout of one FG version. Immutable once built; cheap to share behind an `Arc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockMeta {
    dtype: DataType,
    element: Element,
    version: u16,
    n_features: usize,
    string_lengths: Vec<u32>,
    vector_lengths: Vec<u32>,
    /// Element offset of each feature in the flattened value stream, plus the total at the end.
    offsets: Vec<usize>,
}

impl BlockMeta {
    /// Builds and validates the layout.
    ///
    /// * `string_lengths`: one booked maximum per feature for `String`/`StringVector` (1..=65535), else empty.
    /// * `vector_lengths`: one length per feature for vector types (≥ 1), else empty.
    pub fn new(
        dtype: DataType,
        version: u16,
        n_features: usize,
        string_lengths: Vec<u32>,
        vector_lengths: Vec<u32>,
    ) -> Result<BlockMeta> {
        let element = dtype
            .element()
            .ok_or_else(|| Error::InvalidMeta("data type DataTypeUnknown cannot hold features".into()))?;
        if n_features == 0 {
            return Err(Error::InvalidMeta("a feature group needs at least one feature".into()));
        }
        if dtype.is_string() {
            check_len("string_lengths", &string_lengths, n_features)?;
            if let Some((i, l)) = string_lengths.iter().enumerate().find(|(_, &l)| l > MAX_STRING_LEN) {
                return Err(Error::InvalidMeta(format!("feature {i}: string length {l} exceeds {MAX_STRING_LEN}")));
            }
        } else if !string_lengths.is_empty() {
            return Err(Error::InvalidMeta(format!("{dtype} takes no string lengths")));
        }
        if dtype.is_vector() {
            check_len("vector_lengths", &vector_lengths, n_features)?;
            if let Some(i) = vector_lengths.iter().position(|&l| l == 0) {
                return Err(Error::InvalidMeta(format!("feature {i}: vector length must be at least 1")));
            }
        } else if !vector_lengths.is_empty() {
            return Err(Error::InvalidMeta(format!("{dtype} takes no vector lengths")));
        }
        let mut offsets = Vec::with_capacity(n_features + 1);
        let mut total = 0usize;
        for i in 0..n_features {
            offsets.push(total);
            total += vector_lengths.get(i).map_or(1, |&l| l as usize);
        }
        offsets.push(total);
        Ok(BlockMeta { dtype, element, version, n_features, string_lengths, vector_lengths, offsets })
    }

    /// Scalar layout shortcut: `n` features of a fixed-width or bool type.
    pub fn scalar(dtype: DataType, version: u16, n: usize) -> Result<BlockMeta> {
        BlockMeta::new(dtype, version, n, Vec::new(), Vec::new())
    }

    pub fn dtype(&self) -> DataType {
        self.dtype
    }

    pub fn element(&self) -> Element {
        self.element
    }

    pub fn version(&self) -> u16 {
        self.version
    }

    pub fn n_features(&self) -> usize {
        self.n_features
    }

    pub fn string_lengths(&self) -> &[u32] {
        &self.string_lengths
    }

    pub fn vector_lengths(&self) -> &[u32] {
        &self.vector_lengths
    }

    /// Number of values in the flattened stream: features for scalars, Σ vector lengths for vectors.
    pub fn n_values(&self) -> usize {
        self.offsets[self.n_features]
    }

    /// Index of the first value of feature `pos` in the flattened stream.
    pub fn value_offset(&self, pos: usize) -> usize {
        self.offsets[pos]
    }

    /// Number of values of feature `pos` (its vector length, or 1).
    pub fn values_of(&self, pos: usize) -> usize {
        self.offsets[pos + 1] - self.offsets[pos]
    }

    /// The feature that holds value `idx` of the flattened stream.
    pub fn feature_of_value(&self, idx: usize) -> usize {
        self.offsets.partition_point(|&o| o <= idx) - 1
    }

    /// Booked string length of the feature holding value `idx` (strings only).
    pub(crate) fn string_len_of_value(&self, idx: usize) -> u32 {
        self.string_lengths[self.feature_of_value(idx)]
    }

    /// Bytes each vector cell carries before its elements (Q8's scale); 0 for everything else.
    fn prefix(&self) -> usize {
        if self.dtype.is_vector() {
            self.element.vector_prefix()
        } else {
            0
        }
    }

    /// Byte offset of feature `pos` in the payload of a fixed-width type (numbers, Q8).
    pub fn byte_offset(&self, pos: usize) -> usize {
        self.offsets[pos] * self.element.size() + pos * self.prefix()
    }

    /// Bytes of feature `pos` in the payload of a fixed-width type: its cell.
    pub fn cell_len(&self, pos: usize) -> usize {
        self.values_of(pos) * self.element.size() + self.prefix()
    }

    /// Exact payload size for fixed-width and bool types; `None` for strings (variable).
    pub fn fixed_payload_len(&self) -> Option<usize> {
        match self.element {
            Element::String => None,
            Element::Bool => Some(self.n_values().div_ceil(8)),
            e => Some(self.n_values() * e.size() + self.n_features * self.prefix()),
        }
    }
}

fn check_len(what: &str, v: &[u32], n: usize) -> Result<()> {
    if v.len() == n {
        Ok(())
    } else {
        Err(Error::InvalidMeta(format!("{what} has {} entries for {n} features", v.len())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_sizes() {
        let m = BlockMeta::new(DataType::Fp32Vector, 1, 3, vec![], vec![2, 1, 4]).unwrap();
        assert_eq!(m.n_values(), 7);
        assert_eq!(m.value_offset(2), 3);
        assert_eq!(m.values_of(2), 4);
        assert_eq!(m.feature_of_value(0), 0);
        assert_eq!(m.feature_of_value(2), 1);
        assert_eq!(m.feature_of_value(6), 2);
        assert_eq!(m.fixed_payload_len(), Some(28));
        let b = BlockMeta::scalar(DataType::Bool, 1, 10).unwrap();
        assert_eq!(b.fixed_payload_len(), Some(2));
        assert_eq!((m.byte_offset(2), m.cell_len(2)), (12, 16));
        // Q8: every vector carries its 4-byte scale before its codes.
        let q = BlockMeta::new(DataType::Q8Vector, 1, 3, vec![], vec![2, 1, 4]).unwrap();
        assert_eq!(q.fixed_payload_len(), Some(7 + 3 * 4));
        assert_eq!((q.byte_offset(0), q.cell_len(0)), (0, 6));
        assert_eq!((q.byte_offset(1), q.cell_len(1)), (6, 5));
        assert_eq!((q.byte_offset(2), q.cell_len(2)), (11, 8));
        let h = BlockMeta::scalar(DataType::Bf16, 1, 3).unwrap();
        assert_eq!((h.fixed_payload_len(), h.byte_offset(2), h.cell_len(2)), (Some(6), 4, 2));
    }

    #[test]
    fn invalid_layouts() {
        assert!(BlockMeta::scalar(DataType::Unknown, 1, 1).is_err());
        assert!(BlockMeta::scalar(DataType::Fp32, 1, 0).is_err());
        assert!(BlockMeta::new(DataType::Fp32Vector, 1, 2, vec![], vec![1, 0]).is_err());
        assert!(BlockMeta::new(DataType::Fp32Vector, 1, 2, vec![], vec![1]).is_err());
        assert!(BlockMeta::new(DataType::String, 1, 1, vec![65_536], vec![]).is_err());
        assert!(BlockMeta::new(DataType::String, 1, 1, vec![], vec![]).is_err());
        assert!(BlockMeta::new(DataType::Fp32, 1, 1, vec![3], vec![]).is_err());
    }
}
