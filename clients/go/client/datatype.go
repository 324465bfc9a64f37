package client

import (
	"fmt"
	"strings"
)

// DataType is a feature data type, numbered as the storage header and the reference's registry number
// them (the numbering is part of the wire contract and never changes): the reference's 0..30, then this
// project's extensions from 31 (BF16, BF16Vector, Q8Vector; docs/embeddings.md), which reference
// clients do not know. A feature group is homogeneous: all its features share one DataType. Served
// cells may have a narrower type than the group when a feature is asked for as "label@DataTypeFP16",
// "emb@BF16" or "emb@Q8" (retrieval-time quantization).
type DataType uint8

// The data types, with the reference's numbers, then the extensions.
const (
	Unknown DataType = iota
	FP8E5M2
	FP8E4M3
	FP16
	FP32
	FP64
	Int8
	Int16
	Int32
	Int64
	Uint8
	Uint16
	Uint32
	Uint64
	String
	Bool
	FP8E5M2Vector
	FP8E4M3Vector
	FP16Vector
	FP32Vector
	FP64Vector
	Int8Vector
	Int16Vector
	Int32Vector
	Int64Vector
	Uint8Vector
	Uint16Vector
	Uint32Vector
	Uint64Vector
	StringVector
	BoolVector
	// BF16 is bfloat16: float32's sign and exponent with a 7-bit mantissa, 2 bytes (extension, 31).
	BF16
	// BF16Vector is a vector of bfloat16 (extension, 32).
	BF16Vector
	// Q8Vector is int8 codes with one float32 scale per vector: value = code × scale; a cell is the
	// scale (float32 LE) then the codes, 4 + n bytes (extension, 33; there is no scalar form).
	Q8Vector
	numDataTypes
)

// firstExtension is the first type number that is this project's, not the reference's.
const firstExtension = BF16

// element is what one value of a type is, independent of scalar or vector shape.
type element uint8

const (
	elNone element = iota
	elFP8E5M2
	elFP8E4M3
	elFP16
	elFP32
	elFP64
	elInt8
	elInt16
	elInt32
	elInt64
	elUint8
	elUint16
	elUint32
	elUint64
	elString
	elBool
	elBF16
	elQ8
)

// Scalar types 1..15 are their own element; vector types 16..30 are the scalar 15 below; the
// extensions are listed.
func (t DataType) element() element {
	switch {
	case t == Unknown || t >= numDataTypes:
		return elNone
	case t == BF16 || t == BF16Vector:
		return elBF16
	case t == Q8Vector:
		return elQ8
	case t.IsVector():
		return element(t - 15)
	default:
		return element(t)
	}
}

var dataTypeNames = [numDataTypes]string{
	"DataTypeUnknown", "DataTypeFP8E5M2", "DataTypeFP8E4M3", "DataTypeFP16", "DataTypeFP32", "DataTypeFP64",
	"DataTypeInt8", "DataTypeInt16", "DataTypeInt32", "DataTypeInt64",
	"DataTypeUint8", "DataTypeUint16", "DataTypeUint32", "DataTypeUint64",
	"DataTypeString", "DataTypeBool",
	"DataTypeFP8E5M2Vector", "DataTypeFP8E4M3Vector", "DataTypeFP16Vector", "DataTypeFP32Vector",
	"DataTypeFP64Vector", "DataTypeInt8Vector", "DataTypeInt16Vector", "DataTypeInt32Vector",
	"DataTypeInt64Vector", "DataTypeUint8Vector", "DataTypeUint16Vector", "DataTypeUint32Vector",
	"DataTypeUint64Vector", "DataTypeStringVector", "DataTypeBoolVector",
	"DataTypeBF16", "DataTypeBF16Vector", "DataTypeQ8Vector",
}

// String is the registry name, e.g. "DataTypeFP32"; the name a "label@Type" suffix uses.
func (t DataType) String() string {
	if t < numDataTypes {
		return dataTypeNames[t]
	}
	return fmt.Sprintf("DataType(%d)", uint8(t))
}

// Valid reports whether t is one of the 33 types that hold data (not Unknown, not out of range).
func (t DataType) Valid() bool { return t > Unknown && t < numDataTypes }

// IsExtension reports whether t is one of this project's types (31 and up), unknown to reference clients.
func (t DataType) IsExtension() bool { return t >= firstExtension && t < numDataTypes }

// IsVector reports whether t is one of the fixed-length vector types (16..30, BF16Vector, Q8Vector).
func (t DataType) IsVector() bool {
	return (t >= FP8E5M2Vector && t < firstExtension) || t == BF16Vector || t == Q8Vector
}

// Scalar is the element type of a vector type (FP16Vector → FP16, BF16Vector → BF16); a scalar type,
// and Q8Vector (one scale per vector has no scalar form), are returned as is.
func (t DataType) Scalar() DataType {
	switch {
	case t == BF16Vector:
		return BF16
	case t.IsVector() && t < firstExtension:
		return t - 15
	}
	return t
}

// cellPrefix is the bytes a vector cell of t carries before its values: Q8's float32 scale.
func (t DataType) cellPrefix() int {
	if t == Q8Vector {
		return 4
	}
	return 0
}

// CellSize is the size in bytes of one served cell of a fixed-width type with vectorLength values per
// vector (ignored for scalars): ElementSize × length, plus 4 for Q8Vector's scale. 0 for strings.
func (t DataType) CellSize(vectorLength int) int {
	if t.ElementSize() == 0 {
		return 0
	}
	if !t.IsVector() {
		return t.ElementSize()
	}
	return t.ElementSize()*vectorLength + t.cellPrefix()
}

// ElementSize is the width in bytes of one served value: 1, 2, 4 or 8 for numbers (1 for a Q8 code,
// whose cell also holds a 4-byte scale: see CellSize), 1 for bools (one byte 0/1 per value in a
// response), 0 for strings (variable).
func (t DataType) ElementSize() int {
	switch t.element() {
	case elFP8E5M2, elFP8E4M3, elInt8, elUint8, elBool, elQ8:
		return 1
	case elFP16, elBF16, elInt16, elUint16:
		return 2
	case elFP32, elInt32, elUint32:
		return 4
	case elFP64, elInt64, elUint64:
		return 8
	default:
		return 0
	}
}

// IsFloat reports whether t holds floats (FP8, FP16, BF16, FP32, FP64, scalar or vector, and Q8, whose
// codes stand for code × scale).
func (t DataType) IsFloat() bool {
	e := t.element()
	return (e >= elFP8E5M2 && e <= elFP64) || e == elBF16 || e == elQ8
}

// ParseDataType reads a registry name: "DataTypeFP16Vector", or the short form "fp16vector" (the
// "DataType" prefix is optional and case is ignored, as in the registry YAML); "q8" is Q8Vector, which
// has no scalar form.
func ParseDataType(s string) (DataType, error) {
	bare := func(n string) string { return strings.ToLower(strings.TrimPrefix(n, "DataType")) }
	want := bare(strings.TrimSpace(s))
	for t := FP8E5M2; t < numDataTypes; t++ {
		if bare(dataTypeNames[t]) == want {
			return t, nil
		}
	}
	if want == "q8" {
		return Q8Vector, nil
	}
	return Unknown, fmt.Errorf("%w: unknown data type %q (want a name such as DataTypeFP32 or fp16vector)",
		ErrInvalidArgument, s)
}
