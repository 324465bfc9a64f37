package client

import (
	"errors"
	"fmt"
	"strings"
)

// Errors of reading a result (no call failed).
var (
	// ErrMalformedResponse: the server's answer does not match the request or its own schema (a cell of
	// the wrong size, a missing data type). Retrieve returns it rather than guess.
	ErrMalformedResponse = errors.New("malformed response")
	// ErrNoSuchFeature: a result has no feature (or group) of the label asked for.
	ErrNoSuchFeature = errors.New("no such feature")
	// ErrWrongType: a typed accessor does not suit the feature's data type (Float32s of a string feature).
	ErrWrongType = errors.New("wrong type for this feature")
)

// RowStatus says what a row's cells of one feature group hold.
type RowStatus uint8

const (
	// Found: stored data.
	Found RowStatus = 0
	// Missing: nothing is stored for the key; the cells are the features' defaults.
	Missing RowStatus = 1
	// Expired: the stored data outlived the group's TTL; the cells are the defaults.
	Expired RowStatus = 2
)

func (s RowStatus) String() string {
	switch s {
	case Found:
		return "found"
	case Missing:
		return "missing"
	case Expired:
		return "expired"
	}
	return fmt.Sprintf("RowStatus(%d)", uint8(s))
}

// Result is Retrieve's answer: one row per requested key, in request order.
type Result struct {
	Entity     string
	KeysSchema []string
	// Keys is each row's key values, as the server echoes them (in KeysSchema order).
	Keys [][]string
	// Groups are the requested feature groups, in request order.
	Groups []*Group
}

// Len is the number of rows (= requested keys).
func (r *Result) Len() int { return len(r.Keys) }

// Group is the feature group with this label, or nil.
func (r *Result) Group(label string) *Group {
	for _, g := range r.Groups {
		if g.Label == label {
			return g
		}
	}
	return nil
}

// Group is one feature group of a Result.
type Group struct {
	Label string
	// Columns are the requested features, in request order.
	Columns []*Column
	// Status is per row: Found, or Missing / Expired (the row holds the defaults).
	Status []RowStatus
}

// Column is the feature requested as feature: its exact requested label ("emb@DataTypeFP16Vector"),
// else its label as served ("emb") when only one column has it.
func (g *Group) Column(feature string) (*Column, error) {
	var byLabel *Column
	matches := 0
	for _, c := range g.Columns {
		if c.Requested == feature {
			return c, nil
		}
		if c.Label == feature {
			byLabel = c
			matches++
		}
	}
	if matches == 1 {
		return byLabel, nil
	}
	labels := make([]string, len(g.Columns))
	for i, c := range g.Columns {
		labels[i] = c.Requested
	}
	if matches > 1 {
		return nil, fmt.Errorf("%w: %q is requested %d times in feature group %s: name it as requested (%s)",
			ErrNoSuchFeature, feature, matches, g.Label, strings.Join(labels, ", "))
	}
	return nil, fmt.Errorf("%w: feature group %s has no feature %q (it has %s)", ErrNoSuchFeature, g.Label, feature,
		strings.Join(labels, ", "))
}

// Column is every row's value of one requested feature.
type Column struct {
	// Label is the feature's label as served (without any "@Type" suffix).
	Label string
	// Requested is the label as requested (with the suffix, if any).
	Requested string
	// DataType is the type of the served cells: the group's type, or the "@Type" target.
	DataType DataType
	// VectorLength is the number of values per cell of a vector type (0 for scalar types).
	VectorLength int
	group        string
	rows         int
	// Fixed-width types: every row's cell back to back (width bytes each), copied out of the
	// response. String types: each row's cell, a slice of the response.
	width    int
	data     []byte
	cells    [][]byte
	fast     int // the cell size of add's quick path (numbers), -1 (none) for bools and strings
	capacity int // rows reserved
}

// Len is the number of rows.
func (c *Column) Len() int { return c.rows }

// Cell is row's cell in the response encoding (little-endian values of the type's width, one byte 0/1
// per bool, raw UTF-8 for a string, [u16 LE length × n][bytes] for a string vector). Do not modify it.
func (c *Column) Cell(row int) []byte {
	if c.width > 0 {
		return c.data[row*c.width : (row+1)*c.width : (row+1)*c.width]
	}
	return c.cells[row]
}

// reserve sizes the column for rows cells. Cells are then stored in place (no append, which writes the
// slice's pointer per cell and, while the GC runs, pays a write barrier for it).
func (c *Column) reserve(rows int) {
	c.capacity = rows
	c.width = c.DataType.CellSize(c.VectorLength)
	c.fast = c.width
	switch c.DataType.element() {
	case elString:
		c.width, c.fast = 0, -1
		c.cells = make([][]byte, rows)
	case elBool:
		c.fast = -1 // every byte must be 0 or 1
		c.data = make([]byte, rows*c.width)
	default:
		c.data = make([]byte, rows*c.width)
	}
}

// add checks one row's cell against the column's type and stores it. (appendRows stores a number cell
// of the right size itself, the common case, without the call.)
func (c *Column) add(cell []byte) error {
	if c.rows >= c.capacity {
		return fmt.Errorf("more rows than the %d keys requested", c.capacity)
	}
	if c.width > 0 {
		if err := checkCell(c.DataType, c.VectorLength, cell); err != nil {
			return err
		}
		copy(c.data[c.rows*c.width:], cell)
	} else {
		if c.DataType.IsVector() {
			if err := checkStringVector(cell, c.VectorLength); err != nil {
				return err
			}
		}
		c.cells[c.rows] = cell
	}
	c.rows++
	return nil
}

// Typed reads of one feature of a group, by its requested label: g.Float32s("ctr") is
// g.Column("ctr") then Column.Float32s.

func read[T any](g *Group, feature string, f func(*Column) (T, error)) (T, error) {
	c, err := g.Column(feature)
	if err != nil {
		var zero T
		return zero, err
	}
	return f(c)
}

// Float32s reads an FP8E5M2, FP8E4M3, FP16, BF16 or FP32 feature, one value per row.
func (g *Group) Float32s(feature string) ([]float32, error) {
	return read(g, feature, (*Column).Float32s)
}

// Float32Matrix reads an FP8/FP16/BF16/FP32 vector feature, or a Q8 one dequantized: rows × vector
// length.
func (g *Group) Float32Matrix(feature string) ([][]float32, error) {
	return read(g, feature, (*Column).Float32Matrix)
}

// Float64s reads any float feature.
func (g *Group) Float64s(feature string) ([]float64, error) {
	return read(g, feature, (*Column).Float64s)
}

// Q8Codes reads a Q8Vector feature as stored: codes (rows × vector length) and one scale per row.
func (g *Group) Q8Codes(feature string) ([][]int8, []float32, error) {
	c, err := g.Column(feature)
	if err != nil {
		return nil, nil, err
	}
	return c.Q8Codes()
}

// Float64Matrix reads any float vector feature.
func (g *Group) Float64Matrix(feature string) ([][]float64, error) {
	return read(g, feature, (*Column).Float64Matrix)
}

// Int32s reads an Int8, Int16, Int32, Uint8 or Uint16 feature.
func (g *Group) Int32s(feature string) ([]int32, error) { return read(g, feature, (*Column).Int32s) }

// Int32Matrix reads an Int8, Int16, Int32, Uint8 or Uint16 vector feature.
func (g *Group) Int32Matrix(feature string) ([][]int32, error) {
	return read(g, feature, (*Column).Int32Matrix)
}

// Int64s reads any integer feature but Uint64.
func (g *Group) Int64s(feature string) ([]int64, error) { return read(g, feature, (*Column).Int64s) }

// Int64Matrix reads any integer vector feature but Uint64Vector.
func (g *Group) Int64Matrix(feature string) ([][]int64, error) {
	return read(g, feature, (*Column).Int64Matrix)
}

// Uint32s reads a Uint8, Uint16 or Uint32 feature.
func (g *Group) Uint32s(feature string) ([]uint32, error) { return read(g, feature, (*Column).Uint32s) }

// Uint32Matrix reads a Uint8, Uint16 or Uint32 vector feature.
func (g *Group) Uint32Matrix(feature string) ([][]uint32, error) {
	return read(g, feature, (*Column).Uint32Matrix)
}

// Uint64s reads any unsigned integer feature.
func (g *Group) Uint64s(feature string) ([]uint64, error) { return read(g, feature, (*Column).Uint64s) }

// Uint64Matrix reads any unsigned integer vector feature.
func (g *Group) Uint64Matrix(feature string) ([][]uint64, error) {
	return read(g, feature, (*Column).Uint64Matrix)
}

// Bools reads a Bool feature.
func (g *Group) Bools(feature string) ([]bool, error) { return read(g, feature, (*Column).Bools) }

// BoolMatrix reads a BoolVector feature.
func (g *Group) BoolMatrix(feature string) ([][]bool, error) {
	return read(g, feature, (*Column).BoolMatrix)
}

// Strings reads a String feature.
func (g *Group) Strings(feature string) ([]string, error) { return read(g, feature, (*Column).Strings) }

// StringMatrix reads a StringVector feature.
func (g *Group) StringMatrix(feature string) ([][]string, error) {
	return read(g, feature, (*Column).StringMatrix)
}
