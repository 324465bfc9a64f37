//! The 31 feature data types, numbered exactly as the reference's binary header and registry names.
//!
//! A feature group (FG) is homogeneous: every feature in it has one `DataType`. The numbering is part of
//! the wire/storage contract (it lives in a 5-bit field of every PSDB header), so it never changes.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

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
}

impl Element {
    /// Stored width in bytes of one element; 0 for strings (variable) and bools (bit-packed).
    pub const fn size(self) -> usize {
        match self {
            Element::Fp8E5M2 | Element::Fp8E4M3 | Element::Int8 | Element::Uint8 => 1,
            Element::Fp16 | Element::Int16 | Element::Uint16 => 2,
            Element::Fp32 | Element::Int32 | Element::Uint32 => 4,
            Element::Fp64 | Element::Int64 | Element::Uint64 => 8,
            Element::String | Element::Bool => 0,
        }
    }

    /// True for the float kinds (including the low-precision ones).
    pub const fn is_float(self) -> bool {
        matches!(self, Element::Fp8E5M2 | Element::Fp8E4M3 | Element::Fp16 | Element::Fp32 | Element::Fp64)
    }

    /// Precision rank used by retrieval-time down-quantization (FP64 4 > FP32 3 > FP16 2 > FP8 1).
    pub const fn float_rank(self) -> Option<u8> {
        match self {
            Element::Fp64 => Some(4),
            Element::Fp32 => Some(3),
            Element::Fp16 => Some(2),
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
            pub const ALL: [DataType; 31] = [$( DataType::$variant, )*];

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
}

impl DataType {
    /// The type with this reference number, or an error for 31 and above.
    pub fn from_u8(n: u8) -> Result<DataType> {
        DataType::ALL.get(n as usize).copied().ok_or(Error::UnknownDataType(n.to_string()))
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
        self.element().ok_or(Error::UnknownDataType(self.name().to_owned()))
    }

    /// True for the fixed-length-per-feature vector types (16..=30).
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

    /// The type with the same element kind and the given shape.
    pub fn with_shape(element: Element, vector: bool) -> DataType {
        DataType::ALL[1..]
            .iter()
            .copied()
            .find(|t| t.parts() == Some((element, vector)))
            .expect("every element kind exists in scalar and vector form")
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DataType {
    type Err = Error;

    /// Parses the registry name (`"DataTypeFP32"`); the `DataType` prefix is optional and case is ignored
    /// (`"fp32"`, `"FP16Vector"`), so YAML files stay readable.
    fn from_str(s: &str) -> Result<DataType> {
        let wanted = s.trim();
        let bare = |n: &str| n.strip_prefix("DataType").unwrap_or(n).to_ascii_lowercase();
        let key = bare(wanted);
        DataType::ALL
            .iter()
            .copied()
            .find(|t| bare(t.name()) == key)
            .ok_or_else(|| Error::UnknownDataType(wanted.to_owned()))
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
        assert!(DataType::from_u8(31).is_err());
    }

    #[test]
    fn names_round_trip() {
        for t in DataType::ALL {
            assert_eq!(t.name().parse::<DataType>().unwrap(), t);
        }
        assert_eq!("fp16vector".parse::<DataType>().unwrap(), DataType::Fp16Vector);
        assert!("DataTypeFP128".parse::<DataType>().is_err());
    }

    #[test]
    fn shapes() {
        for t in &DataType::ALL[1..] {
            let e = t.element().unwrap();
            assert_eq!(DataType::with_shape(e, t.is_vector()), *t);
            assert_eq!(t.is_vector(), (*t as u8) >= 16);
        }
        assert_eq!(DataType::Fp64Vector.element_size(), 8);
        assert_eq!(DataType::Unknown.element(), None);
    }
}
