package client

import (
	"fmt"
	"strings"
)

// DataType is a feature data type, numbered as the storage header and the reference's registry number
// them (the numbering is part of the wire contract and never changes). A feature group is homogeneous:
// all its features share one DataType. Served cells may have a narrower type than the group when a
// feature is asked for as "label@DataTypeFP16" (retrieval-time quantization).
type DataType uint8

// The data types, with the reference's numbers.
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
	numDataTypes
)

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
)

// Scalar types 1..15 are their own element; vector types 16..30 are the scalar 15 below.
func (t DataType) element() element {
	switch {
	case t == Unknown || t >= numDataTypes:
		return elNone
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
}

// String is the registry name, e.g. "DataTypeFP32"; the name a "label@Type" suffix uses.
func (t DataType) String() string {
	if t < numDataTypes {
		return dataTypeNames[t]
	}
	return fmt.Sprintf("DataType(%d)", uint8(t))
}

// Valid reports whether t is one of the 30 types that hold data (not Unknown, not out of range).
func (t DataType) Valid() bool { return t > Unknown && t < numDataTypes }

// IsVector reports whether t is one of the fixed-length vector types (16..30).
func (t DataType) IsVector() bool { return t >= FP8E5M2Vector && t < numDataTypes }

// Scalar is the element type of a vector type (FP16Vector → FP16); a scalar type is returned as is.
func (t DataType) Scalar() DataType {
	if t.IsVector() {
		return t - 15
	}
	return t
}

// ElementSize is the width in bytes of one served value: 1, 2, 4 or 8 for numbers, 1 for bools (one
// byte 0/1 per value in a response), 0 for strings (variable).
func (t DataType) ElementSize() int {
	switch t.element() {
	case elFP8E5M2, elFP8E4M3, elInt8, elUint8, elBool:
		return 1
	case elFP16, elInt16, elUint16:
		return 2
	case elFP32, elInt32, elUint32:
		return 4
	case elFP64, elInt64, elUint64:
		return 8
	default:
		return 0
	}
}

// IsFloat reports whether t holds floats (FP8, FP16, FP32, FP64, scalar or vector).
func (t DataType) IsFloat() bool {
	e := t.element()
	return e >= elFP8E5M2 && e <= elFP64
}

// ParseDataType reads a registry name: "DataTypeFP16Vector", or the short form "fp16vector" (the
// "DataType" prefix is optional and case is ignored, as in the registry YAML).
func ParseDataType(s string) (DataType, error) {
	bare := func(n string) string { return strings.ToLower(strings.TrimPrefix(n, "DataType")) }
	want := bare(strings.TrimSpace(s))
	for t := FP8E5M2; t < numDataTypes; t++ {
		if bare(dataTypeNames[t]) == want {
			return t, nil
		}
	}
	return Unknown, fmt.Errorf("%w: unknown data type %q (want a name such as DataTypeFP32 or fp16vector)",
		ErrInvalidArgument, s)
}
