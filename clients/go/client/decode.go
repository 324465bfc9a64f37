package client

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Typed reads of a Column. Each accessor takes the data types whose values its Go type holds exactly
// (Int64s reads an int8 or a uint32 feature, not a uint64 one) and returns ErrWrongType otherwise. The
// scalar accessors return one value per row; the Matrix ones, for vector types, one slice of
// VectorLength values per row (all rows share one backing array). FP8, FP16 and BF16 are widened to
// float32, Q8 dequantized (code × scale); Q8Codes gives a Q8Vector's codes and scales as they are.

// checkCell verifies that cell is a well-formed cell of dt (vector types: of vl values), so the
// accessors cannot fail on data.
func checkCell(dt DataType, vl int, cell []byte) error {
	n := max(vl, 1)
	switch dt.element() {
	case elString:
		if dt.IsVector() {
			return checkStringVector(cell, vl)
		}
		return nil
	case elBool:
		if len(cell) != n {
			return fmt.Errorf("%d bytes in a %s cell of %d", len(cell), dt, n)
		}
		for _, b := range cell {
			if b > 1 {
				return fmt.Errorf("bool byte 0x%02x is not 0 or 1", b)
			}
		}
		return nil
	default:
		if want := dt.CellSize(vl); len(cell) != want {
			return fmt.Errorf("%d bytes in a %s cell of %d", len(cell), dt, want)
		}
		return nil
	}
}

// checkStringVector checks that a string-vector cell ([u16 LE length × n][bytes]) holds n strings.
func checkStringVector(cell []byte, n int) error {
	if 2*n > len(cell) {
		return fmt.Errorf("string vector cell of %d bytes is shorter than its %d lengths", len(cell), n)
	}
	total := 2 * n
	for i := range n {
		total += int(binary.LittleEndian.Uint16(cell[2*i:]))
	}
	if total != len(cell) {
		return fmt.Errorf("string vector cell of %d bytes: its %d lengths add up to %d", len(cell), n, total)
	}
	return nil
}

// stringVector splits a string-vector cell ([u16 LE length × n][bytes]) into its n strings.
func stringVector(cell []byte, n int) ([]string, error) {
	if 2*n > len(cell) {
		return nil, fmt.Errorf("string vector cell of %d bytes is shorter than its %d lengths", len(cell), n)
	}
	out := make([]string, n)
	at := 2 * n
	for i := range n {
		l := int(binary.LittleEndian.Uint16(cell[2*i:]))
		if at+l > len(cell) {
			return nil, fmt.Errorf("string vector cell truncated: string %d of %d bytes at %d of %d", i, l, at, len(cell))
		}
		out[i] = string(cell[at : at+l])
		at += l
	}
	if at != len(cell) {
		return nil, fmt.Errorf("string vector cell has %d bytes after its %d strings", len(cell)-at, n)
	}
	return out, nil
}

// Readers of one value of element e from its little-endian bytes (cells are checked first).

func readF32(e element, b []byte) float32 {
	switch e {
	case elFP8E5M2:
		return e5m2ToFloat32(b[0])
	case elFP8E4M3:
		return e4m3ToFloat32(b[0])
	case elFP16:
		return fp16ToFloat32(binary.LittleEndian.Uint16(b))
	case elBF16:
		return bf16ToFloat32(binary.LittleEndian.Uint16(b))
	default:
		return math.Float32frombits(binary.LittleEndian.Uint32(b))
	}
}

func readF64(e element, b []byte) float64 {
	if e == elFP64 {
		return math.Float64frombits(binary.LittleEndian.Uint64(b))
	}
	return float64(readF32(e, b))
}

func readI64(e element, b []byte) int64 {
	switch e {
	case elInt8:
		return int64(int8(b[0]))
	case elInt16:
		return int64(int16(binary.LittleEndian.Uint16(b)))
	case elInt32:
		return int64(int32(binary.LittleEndian.Uint32(b)))
	case elInt64:
		return int64(binary.LittleEndian.Uint64(b))
	default:
		return int64(readU64(e, b))
	}
}

func readU64(e element, b []byte) uint64 {
	switch e {
	case elUint8:
		return uint64(b[0])
	case elUint16:
		return uint64(binary.LittleEndian.Uint16(b))
	case elUint32:
		return uint64(binary.LittleEndian.Uint32(b))
	default:
		return binary.LittleEndian.Uint64(b)
	}
}

func readBool(_ element, b []byte) bool { return b[0] != 0 }

// accepts is the set of elements an accessor reads, and how to say it.
type accepts struct {
	name     string // the accessor's scalar name, e.g. "Float32s"
	matrix   string // its vector name, e.g. "Float32Matrix"
	what     string // the types it reads
	elements []element
}

func (a *accepts) has(e element) bool {
	for _, x := range a.elements {
		if x == e {
			return true
		}
	}
	return false
}

var (
	asFloat32 = &accepts{"Float32s", "Float32Matrix", "FP8E5M2, FP8E4M3, FP16, BF16, FP32 and Q8",
		[]element{elFP8E5M2, elFP8E4M3, elFP16, elBF16, elFP32, elQ8}}
	asFloat64 = &accepts{"Float64s", "Float64Matrix", "float", []element{elFP8E5M2, elFP8E4M3, elFP16, elBF16, elFP32, elFP64, elQ8}}
	asInt32   = &accepts{"Int32s", "Int32Matrix", "Int8, Int16, Int32, Uint8 and Uint16", []element{elInt8, elInt16, elInt32, elUint8, elUint16}}
	asInt64   = &accepts{"Int64s", "Int64Matrix", "integer types other than Uint64",
		[]element{elInt8, elInt16, elInt32, elInt64, elUint8, elUint16, elUint32}}
	asUint32 = &accepts{"Uint32s", "Uint32Matrix", "Uint8, Uint16 and Uint32", []element{elUint8, elUint16, elUint32}}
	asUint64 = &accepts{"Uint64s", "Uint64Matrix", "unsigned integer", []element{elUint8, elUint16, elUint32, elUint64}}
	asBool   = &accepts{"Bools", "BoolMatrix", "Bool", []element{elBool}}
	asString = &accepts{"Strings", "StringMatrix", "String", []element{elString}}
)

// check refuses an accessor that does not suit c's type (vector: a Matrix accessor).
func (c *Column) check(a *accepts, vector bool) error {
	call := a.name
	if vector {
		call = a.matrix
	}
	if !a.has(c.DataType.element()) {
		return fmt.Errorf("%w: %s reads %s features; %s/%s is %s", ErrWrongType, call, a.what, c.group, c.Requested, c.DataType)
	}
	if c.DataType.IsVector() != vector {
		other := a.matrix
		if vector {
			other = a.name
		}
		return fmt.Errorf("%w: %s/%s is %s: use %s, not %s", ErrWrongType, c.group, c.Requested, c.DataType, other, call)
	}
	return nil
}

func scalars[T any](c *Column, a *accepts, read func(element, []byte) T) ([]T, error) {
	if err := c.check(a, false); err != nil {
		return nil, err
	}
	return decodeScalars(c, read), nil
}

func matrix[T any](c *Column, a *accepts, read func(element, []byte) T) ([][]T, error) {
	if err := c.check(a, true); err != nil {
		return nil, err
	}
	return decodeMatrix(c, read), nil
}

func decodeScalars[T any](c *Column, read func(element, []byte) T) []T {
	e := c.DataType.element()
	out := make([]T, c.rows)
	for r := range out {
		out[r] = read(e, c.Cell(r))
	}
	return out
}

func decodeMatrix[T any](c *Column, read func(element, []byte) T) [][]T {
	e, w, n := c.DataType.element(), c.DataType.ElementSize(), c.VectorLength
	backing := make([]T, c.rows*n)
	out := make([][]T, c.rows)
	var q8 [4]byte // a Q8 value, dequantized, as the float32 bytes read takes
	for r := range out {
		cell := c.Cell(r)
		row := backing[r*n : (r+1)*n : (r+1)*n]
		if e == elQ8 {
			scale := math.Float32frombits(binary.LittleEndian.Uint32(cell))
			for j := range row {
				binary.LittleEndian.PutUint32(q8[:], math.Float32bits(q8Value(int8(cell[4+j]), scale)))
				row[j] = read(elFP32, q8[:])
			}
		} else {
			for j := range row {
				row[j] = read(e, cell[j*w:(j+1)*w])
			}
		}
		out[r] = row
	}
	return out
}

// natural decodes c with read: one value per row, or one slice per row for vector types.
func natural[T any](c *Column, read func(element, []byte) T) any {
	if c.DataType.IsVector() {
		return decodeMatrix(c, read)
	}
	return decodeScalars(c, read)
}

// Float32s reads an FP8E5M2, FP8E4M3, FP16, BF16 or FP32 feature.
func (c *Column) Float32s() ([]float32, error) {
	if c.DataType == FP32 { // the common case, without a call per value
		return fp32s(c.data, c.rows), nil
	}
	return scalars(c, asFloat32, readF32)
}

// Float32Matrix reads an FP8E5M2, FP8E4M3, FP16, BF16, FP32 or Q8 (dequantized) vector feature:
// rows × VectorLength.
func (c *Column) Float32Matrix() ([][]float32, error) {
	if c.DataType == FP32Vector {
		n := c.VectorLength
		backing := fp32s(c.data, c.rows*n)
		out := make([][]float32, c.rows)
		for r := range out {
			out[r] = backing[r*n : (r+1)*n : (r+1)*n]
		}
		return out, nil
	}
	return matrix(c, asFloat32, readF32)
}

// fp32s decodes n little-endian float32 values.
func fp32s(b []byte, n int) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}

// Q8Codes reads a Q8Vector feature as stored, for int8 arithmetic: codes (rows × VectorLength, one
// backing array) and one scale per row; value = code × scale, code -128 is NaN. The dot product of two
// rows is int32(Σ a·b) × scale_a × scale_b.
func (c *Column) Q8Codes() ([][]int8, []float32, error) {
	if c.DataType != Q8Vector {
		return nil, nil, fmt.Errorf("%w: Q8Codes reads Q8Vector features; %s/%s is %s", ErrWrongType, c.group, c.Requested, c.DataType)
	}
	n := c.VectorLength
	backing := make([]int8, c.rows*n)
	codes := make([][]int8, c.rows)
	scales := make([]float32, c.rows)
	for r := range codes {
		cell := c.Cell(r)
		scales[r] = math.Float32frombits(binary.LittleEndian.Uint32(cell))
		row := backing[r*n : (r+1)*n : (r+1)*n]
		for j := range row {
			row[j] = int8(cell[4+j])
		}
		codes[r] = row
	}
	return codes, scales, nil
}

// Float64s reads any float feature.
func (c *Column) Float64s() ([]float64, error) { return scalars(c, asFloat64, readF64) }

// Float64Matrix reads any float vector feature.
func (c *Column) Float64Matrix() ([][]float64, error) { return matrix(c, asFloat64, readF64) }

// Int32s reads an Int8, Int16, Int32, Uint8 or Uint16 feature.
func (c *Column) Int32s() ([]int32, error) {
	return scalars(c, asInt32, func(e element, b []byte) int32 { return int32(readI64(e, b)) })
}

// Int32Matrix reads an Int8, Int16, Int32, Uint8 or Uint16 vector feature.
func (c *Column) Int32Matrix() ([][]int32, error) {
	return matrix(c, asInt32, func(e element, b []byte) int32 { return int32(readI64(e, b)) })
}

// Int64s reads any integer feature but Uint64.
func (c *Column) Int64s() ([]int64, error) { return scalars(c, asInt64, readI64) }

// Int64Matrix reads any integer vector feature but Uint64Vector.
func (c *Column) Int64Matrix() ([][]int64, error) { return matrix(c, asInt64, readI64) }

// Uint32s reads a Uint8, Uint16 or Uint32 feature.
func (c *Column) Uint32s() ([]uint32, error) {
	return scalars(c, asUint32, func(e element, b []byte) uint32 { return uint32(readU64(e, b)) })
}

// Uint32Matrix reads a Uint8, Uint16 or Uint32 vector feature.
func (c *Column) Uint32Matrix() ([][]uint32, error) {
	return matrix(c, asUint32, func(e element, b []byte) uint32 { return uint32(readU64(e, b)) })
}

// Uint64s reads any unsigned integer feature.
func (c *Column) Uint64s() ([]uint64, error) { return scalars(c, asUint64, readU64) }

// Uint64Matrix reads any unsigned integer vector feature.
func (c *Column) Uint64Matrix() ([][]uint64, error) { return matrix(c, asUint64, readU64) }

// Bools reads a Bool feature.
func (c *Column) Bools() ([]bool, error) { return scalars(c, asBool, readBool) }

// BoolMatrix reads a BoolVector feature.
func (c *Column) BoolMatrix() ([][]bool, error) { return matrix(c, asBool, readBool) }

// Strings reads a String feature.
func (c *Column) Strings() ([]string, error) {
	return scalars(c, asString, func(_ element, b []byte) string { return string(b) })
}

// StringMatrix reads a StringVector feature.
func (c *Column) StringMatrix() ([][]string, error) {
	if err := c.check(asString, true); err != nil {
		return nil, err
	}
	out := make([][]string, c.rows)
	for r := range out {
		s, err := stringVector(c.Cell(r), c.VectorLength)
		if err != nil { // not reached: every cell was checked when the response was read
			return nil, fmt.Errorf("%w: row %d of %s/%s: %v", ErrMalformedResponse, r, c.group, c.Requested, err)
		}
		out[r] = s
	}
	return out, nil
}

// Values is the column in its natural Go type: per row a float32 (FP8, FP16, BF16, FP32, Q8
// dequantized), float64, int8,
// int16, int32, int64, uint8, uint16, uint32, uint64, bool or string, so []float32, []int8, ...; for
// vector types one slice per row ([][]float32, ...).
func (c *Column) Values() any {
	switch c.DataType.element() {
	case elFP8E5M2, elFP8E4M3, elFP16, elBF16, elFP32, elQ8:
		return natural(c, readF32)
	case elFP64:
		return natural(c, readF64)
	case elInt8:
		return natural(c, func(_ element, b []byte) int8 { return int8(b[0]) })
	case elInt16:
		return natural(c, func(_ element, b []byte) int16 { return int16(binary.LittleEndian.Uint16(b)) })
	case elInt32:
		return natural(c, func(_ element, b []byte) int32 { return int32(binary.LittleEndian.Uint32(b)) })
	case elInt64:
		return natural(c, readI64)
	case elUint8:
		return natural(c, func(_ element, b []byte) uint8 { return b[0] })
	case elUint16:
		return natural(c, func(_ element, b []byte) uint16 { return binary.LittleEndian.Uint16(b) })
	case elUint32:
		return natural(c, func(_ element, b []byte) uint32 { return binary.LittleEndian.Uint32(b) })
	case elUint64:
		return natural(c, readU64)
	case elBool:
		return natural(c, readBool)
	case elString:
		if c.DataType.IsVector() {
			m, _ := c.StringMatrix()
			return m
		}
		return natural(c, func(_ element, b []byte) string { return string(b) })
	}
	return nil // a Column's type is always valid (checked when the response was read)
}
