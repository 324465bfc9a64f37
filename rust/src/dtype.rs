//! The feature data types: the reference's 31 (0..=30), numbered exactly as its binary header and
//! registry names, and this project's extensions from 31 on (bfloat16 and int8 with a per-vector
//! scale, for embeddings).
//!
//! A feature group (FG) is homogeneous: every feature in it has one `DataType`. The numbering is part of
//! the wire/storage contract (it lives in a 5-bit field of every PSDB header), so it never changes. The
//! header field holds 0..=31 and the reference leaves 31 unused; an extension type is written as 31
//! there, with its offset from 31 in the low nibble of byte 8 (the bool last-index, which no
//! extension type uses), see [`DataType::header_code`]. A reference reader meets 31 and refuses the
//! block as an unknown type instead of misreading it.

use std::fmt;
use std::str::FromStr;

/// A data type number or name that is none of the known types (as given). The core's
/// [`crate::Error`] carries it as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown data type {0:?}")]
pub struct UnknownDataType(pub String);

type Result<T> = std::result::Result<T, UnknownDataType>;

/// The element kind a type stores, independent of scalar/vector shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Element {
    Fp8E5M2,
    Fp8E4M3,
    Fp16,
    Fp32,
    Fp64,
    Int8,
    Int16,
    Int32,
    Int64,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    String,
    Bool,
    /// bfloat16: float32's sign and 8-bit exponent with a 7-bit mantissa (extension).
    Bf16,
    /// Symmetric int8 with one float32 scale per vector: value = code × scale (extension, vectors only).
    Q8,
}

impl Element {
    /// Stored width in bytes of one element; 0 for strings (variable) and bools (bit-packed).
    pub const fn size(self) -> usize {
        match self {
            Element::Fp8E5M2 | Element::Fp8E4M3 | Element::Int8 | Element::Uint8 | Element::Q8 => 1,
            Element::Fp16 | Element::Bf16 | Element::Int16 | Element::Uint16 => 2,
            Element::Fp32 | Element::Int32 | Element::Uint32 => 4,
            Element::Fp64 | Element::Int64 | Element::Uint64 => 8,
            Element::String | Element::Bool => 0,
        }
    }

    /// Bytes every vector cell of this element carries before its elements: Q8's float32 scale.
    pub const fn vector_prefix(self) -> usize {
        match self {
            Element::Q8 => 4,
            _ => 0,
        }
    }

    /// True for the kinds whose values are real numbers written from float containers: the float
    /// kinds (including the low-precision ones) and Q8, whose codes stand for `code × scale`.
    pub const fn is_float(self) -> bool {
        matches!(
            self,
            Element::Fp8E5M2
                | Element::Fp8E4M3
                | Element::Fp16
                | Element::Bf16
                | Element::Fp32
                | Element::Fp64
                | Element::Q8
        )
    }

    /// Precision rank used by retrieval-time down-quantization, by significand bits: FP64 (52) >
    /// FP32 (23) > FP16 (10) > BF16 (7) > Q8 (7 bits plus sign, relative to the vector's largest
    /// magnitude) > FP8 (3 or 2). The reference's four keep their relative order.
    pub const fn float_rank(self) -> Option<u8> {
        match self {
            Element::Fp64 => Some(6),
            Element::Fp32 => Some(5),
            Element::Fp16 => Some(4),
            Element::Bf16 => Some(3),
            Element::Q8 => Some(2),
            Element::Fp8E4M3 | Element::Fp8E5M2 => Some(1),
            _ => None,
        }
    }
}

macro_rules! data_types {
    ($( $variant:ident = $num:literal, $name:literal, $elem:ident, $vector:literal; )*) => {
        /// A feature data type. The discriminant is the reference's numbering.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum DataType {
            $( $variant = $num, )*
        }

        impl DataType {
            /// Every type, in numeric order (index == discriminant).
            pub const ALL: [DataType; 34] = [$( DataType::$variant, )*];

            /// The registry/string name, e.g. `"DataTypeFP32"`.
            pub const fn name(self) -> &'static str {
                match self { $( DataType::$variant => $name, )* }
            }

            const fn parts(self) -> Option<(Element, bool)> {
                match self {
                    $( DataType::$variant => data_types!(@parts $elem, $vector), )*
                }
            }
        }
    };
    (@parts None, $vector:literal) => { None };
    (@parts $elem:ident, $vector:literal) => { Some((Element::$elem, $vector)) };
}

data_types! {
    Unknown = 0, "DataTypeUnknown", None, false;
    Fp8E5M2 = 1, "DataTypeFP8E5M2", Fp8E5M2, false;
    Fp8E4M3 = 2, "DataTypeFP8E4M3", Fp8E4M3, false;
    Fp16 = 3, "DataTypeFP16", Fp16, false;
    Fp32 = 4, "DataTypeFP32", Fp32, false;
    Fp64 = 5, "DataTypeFP64", Fp64, false;
    Int8 = 6, "DataTypeInt8", Int8, false;
    Int16 = 7, "DataTypeInt16", Int16, false;
    Int32 = 8, "DataTypeInt32", Int32, false;
    Int64 = 9, "DataTypeInt64", Int64, false;
    Uint8 = 10, "DataTypeUint8", Uint8, false;
    Uint16 = 11, "DataTypeUint16", Uint16, false;
    Uint32 = 12, "DataTypeUint32", Uint32, false;
    Uint64 = 13, "DataTypeUint64", Uint64, false;
    String = 14, "DataTypeString", String, false;
    Bool = 15, "DataTypeBool", Bool, false;
    Fp8E5M2Vector = 16, "DataTypeFP8E5M2Vector", Fp8E5M2, true;
    Fp8E4M3Vector = 17, "DataTypeFP8E4M3Vector", Fp8E4M3, true;
    Fp16Vector = 18, "DataTypeFP16Vector", Fp16, true;
    Fp32Vector = 19, "DataTypeFP32Vector", Fp32, true;
    Fp64Vector = 20, "DataTypeFP64Vector", Fp64, true;
    Int8Vector = 21, "DataTypeInt8Vector", Int8, true;
    Int16Vector = 22, "DataTypeInt16Vector", Int16, true;
    Int32Vector = 23, "DataTypeInt32Vector", Int32, true;
    Int64Vector = 24, "DataTypeInt64Vector", Int64, true;
    Uint8Vector = 25, "DataTypeUint8Vector", Uint8, true;
    Uint16Vector = 26, "DataTypeUint16Vector", Uint16, true;
    Uint32Vector = 27, "DataTypeUint32Vector", Uint32, true;
    Uint64Vector = 28, "DataTypeUint64Vector", Uint64, true;
    StringVector = 29, "DataTypeStringVector", String, true;
    BoolVector = 30, "DataTypeBoolVector", Bool, true;
    // Extensions of this project (not in the reference).
    Bf16 = 31, "DataTypeBF16", Bf16, false;
    Bf16Vector = 32, "DataTypeBF16Vector", Bf16, true;
    Q8Vector = 33, "DataTypeQ8Vector", Q8, true;
}

/// The first type number that is this project's extension rather than the reference's.
pub const FIRST_EXTENSION: u8 = 31;

impl DataType {
    /// The type with this number (the reference's 0..=30, the extensions from 31), or an error.
    pub fn from_u8(n: u8) -> Result<DataType> {
        DataType::ALL.get(n as usize).copied().ok_or_else(|| UnknownDataType(n.to_string()))
    }

    /// True for this project's extension types (numbers from 31): reference clients do not know them.
    pub const fn is_extension(self) -> bool {
        self as u8 >= FIRST_EXTENSION
    }

    /// The type as the PSDB header stores it: `(5-bit type field, low nibble of byte 8)`. Reference
    /// types are their number and a zero nibble (bool types put their last-index there instead);
    /// extensions are 31 and their offset from 31.
    pub const fn header_code(self) -> (u8, u8) {
        let n = self as u8;
        if n < FIRST_EXTENSION {
            (n, 0)
        } else {
            (FIRST_EXTENSION, n - FIRST_EXTENSION)
        }
    }

    /// The inverse of [`DataType::header_code`]: the type of a header's 5-bit field and byte-8 nibble.
    pub fn from_header_code(field: u8, nibble: u8) -> Result<DataType> {
        if field < FIRST_EXTENSION {
            return DataType::from_u8(field);
        }
        DataType::from_u8(FIRST_EXTENSION + nibble)
            .map_err(|_| UnknownDataType(format!("extension type {} (31 + {nibble})", FIRST_EXTENSION + nibble)))
    }

    /// Element kind; `None` only for `Unknown`.
    pub const fn element(self) -> Option<Element> {
        match self.parts() {
            Some((e, _)) => Some(e),
            None => None,
        }
    }

    /// Element kind, or an error for `Unknown` (which can never hold data).
    pub fn known_element(self) -> Result<Element> {
        self.element().ok_or_else(|| UnknownDataType(self.name().to_owned()))
    }

    /// True for the string types (`DataTypeString`, `DataTypeStringVector`): values are UTF-8 text of a
    /// booked length, written from `str`, never from numbers.
    pub const fn is_string(self) -> bool {
        matches!(self.element(), Some(Element::String))
    }

    /// True for the fixed-length-per-feature vector types (16..=30, and the vector extensions).
    pub const fn is_vector(self) -> bool {
        match self.parts() {
            Some((_, v)) => v,
            None => false,
        }
    }

    /// Stored width of one element in bytes (0 for strings, bools and `Unknown`).
    pub const fn element_size(self) -> usize {
        match self.element() {
            Some(e) => e.size(),
            None => 0,
        }
    }

    /// The type with the same element kind and the given shape, if there is one (Q8 exists only as
    /// a vector: one scale per value would be no quantization at all).
    pub fn with_shape(element: Element, vector: bool) -> Option<DataType> {
        DataType::ALL[1..].iter().copied().find(|t| t.parts() == Some((element, vector)))
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DataType {
    type Err = UnknownDataType;

    /// Parses the registry name (`"DataTypeFP32"`); the `DataType` prefix is optional and case is ignored
    /// (`"fp32"`, `"FP16Vector"`), so YAML files stay readable. A kind that exists only as a vector
    /// may be named without the suffix: `"q8"` is `DataTypeQ8Vector`.
    fn from_str(s: &str) -> Result<DataType> {
        let wanted = s.trim();
        let bare = |n: &str| n.strip_prefix("DataType").unwrap_or(n).to_ascii_lowercase();
        let key = bare(wanted);
        let find = |key: &str| DataType::ALL.iter().copied().find(|t| bare(t.name()) == key);
        find(&key)
            .or_else(|| {
                find(&format!("{key}vector"))
                    .filter(|t| t.element().is_some_and(|e| DataType::with_shape(e, false).is_none()))
            })
            .ok_or_else(|| UnknownDataType(wanted.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbering_matches_reference() {
        assert_eq!(DataType::Fp32 as u8, 4);
        assert_eq!(DataType::String as u8, 14);
        assert_eq!(DataType::Bool as u8, 15);
        assert_eq!(DataType::Fp8E5M2Vector as u8, 16);
        assert_eq!(DataType::BoolVector as u8, 30);
        for (i, t) in DataType::ALL.iter().enumerate() {
            assert_eq!(*t as usize, i);
            assert_eq!(DataType::from_u8(i as u8).unwrap(), *t);
        }
        assert_eq!(DataType::from_u8(31).unwrap(), DataType::Bf16);
        assert_eq!(DataType::from_u8(33).unwrap(), DataType::Q8Vector);
        assert!(DataType::from_u8(34).is_err());
    }

    #[test]
    fn extensions_in_the_header_field() {
        for t in DataType::ALL {
            let (field, nibble) = t.header_code();
            assert!(field < 32 && nibble < 16, "{t}");
            assert_eq!(DataType::from_header_code(field, nibble).unwrap(), t);
            assert_eq!(t.is_extension(), field == 31, "{t}");
        }
        assert_eq!(DataType::Bf16.header_code(), (31, 0));
        assert_eq!(DataType::Q8Vector.header_code(), (31, 2));
        assert_eq!(DataType::Fp32.header_code(), (4, 0));
        let e = DataType::from_header_code(31, 5).unwrap_err();
        assert_eq!(e.to_string(), "unknown data type \"extension type 36 (31 + 5)\"");
    }

    #[test]
    fn names_round_trip() {
        for t in DataType::ALL {
            assert_eq!(t.name().parse::<DataType>().unwrap(), t);
        }
        assert_eq!("fp16vector".parse::<DataType>().unwrap(), DataType::Fp16Vector);
        assert!("DataTypeFP128".parse::<DataType>().is_err());
        assert_eq!("bf16".parse::<DataType>().unwrap(), DataType::Bf16);
        assert_eq!("BF16Vector".parse::<DataType>().unwrap(), DataType::Bf16Vector);
        // Q8 exists only as a vector, so its short name needs no suffix; fp16 does.
        assert_eq!("q8".parse::<DataType>().unwrap(), DataType::Q8Vector);
        assert_eq!("DataTypeQ8".parse::<DataType>().unwrap(), DataType::Q8Vector);
        assert!("fp16".parse::<DataType>().is_ok_and(|t| t == DataType::Fp16));
    }

    #[test]
    fn shapes() {
        for t in &DataType::ALL[1..] {
            let e = t.element().unwrap();
            assert_eq!(DataType::with_shape(e, t.is_vector()), Some(*t));
            if !t.is_extension() {
                assert_eq!(t.is_vector(), (*t as u8) >= 16);
            }
        }
        assert_eq!(DataType::with_shape(Element::Q8, false), None);
        assert_eq!(DataType::Q8Vector.element_size(), 1);
        assert_eq!(Element::Q8.vector_prefix(), 4);
        assert_eq!(DataType::Bf16Vector.element_size(), 2);
        assert_eq!(DataType::Fp64Vector.element_size(), 8);
        assert_eq!(DataType::Unknown.element(), None);
        let strings: Vec<DataType> = DataType::ALL.into_iter().filter(|t| t.is_string()).collect();
        assert_eq!(strings, [DataType::String, DataType::StringVector]);
    }
}
