package client

import (
	"errors"
	"fmt"
	"strings"

	"github.com/online-feature-store/online-feature-store/clients/go/pb/retrievepb"
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
	cells        [][]byte
}

// Len is the number of rows.
func (c *Column) Len() int { return len(c.cells) }

// Cell is row's cell in the response encoding (little-endian values of the type's width, one byte 0/1
// per bool, raw UTF-8 for a string, [u16 LE length × n][bytes] for a string vector). It aliases the
// response: do not modify it.
func (c *Column) Cell(row int) []byte { return c.cells[row] }

// assemble joins the batches' answers into one Result, checking each against its request.
func assemble(req *RetrieveRequest, parts []*retrievepb.Result) (*Result, error) {
	res := &Result{Entity: req.Entity, Keys: make([][]string, 0, len(req.Keys)), Groups: make([]*Group, len(req.FeatureGroups))}
	var flat []*Column // every column, by its column index
	for i, p := range parts {
		if i == 0 {
			res.Entity = p.GetEntityLabel()
			res.KeysSchema = p.GetKeysSchema()
			var err error
			if flat, err = schema(req, p, res); err != nil {
				return nil, err
			}
		} else if err := sameSchema(res, p); err != nil {
			return nil, err
		}
		if err := appendRows(res, flat, p); err != nil {
			return nil, err
		}
	}
	if len(res.Keys) != len(req.Keys) {
		return nil, malformed("%d rows for %d keys", len(res.Keys), len(req.Keys))
	}
	return res, nil
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrMalformedResponse, MethodRetrieve, fmt.Sprintf(format, args...))
}

// schema builds the result's groups and columns from the first batch's feature schemas.
func schema(req *RetrieveRequest, p *retrievepb.Result, res *Result) ([]*Column, error) {
	schemas := p.GetFeatureSchemas()
	if len(schemas) != len(req.FeatureGroups) {
		return nil, malformed("%d feature groups for %d requested", len(schemas), len(req.FeatureGroups))
	}
	n := 0
	for _, s := range schemas {
		n += len(s.GetFeatures())
	}
	flat := make([]*Column, n)
	for g, s := range schemas {
		asked := req.FeatureGroups[g]
		if len(s.GetFeatures()) != len(asked.Features) {
			return nil, malformed("feature group %s: %d features for %d requested", s.GetFeatureGroupLabel(),
				len(s.GetFeatures()), len(asked.Features))
		}
		group := &Group{Label: asked.Label, Columns: make([]*Column, len(asked.Features)), Status: make([]RowStatus, 0, len(req.Keys))}
		for f, feat := range s.GetFeatures() {
			col, err := column(asked.Label, asked.Features[f], feat, n)
			if err != nil {
				return nil, err
			}
			if flat[feat.GetColumnIdx()] != nil {
				return nil, malformed("column %d is given to two features", feat.GetColumnIdx())
			}
			col.cells = make([][]byte, 0, len(req.Keys))
			flat[feat.GetColumnIdx()] = col
			group.Columns[f] = col
		}
		res.Groups[g] = group
	}
	return flat, nil
}

// column checks one retrieve.Feature and makes its Column.
func column(group, requested string, f *retrievepb.Feature, n int) (*Column, error) {
	named := func(format string, args ...any) error {
		return malformed("feature %s/%s: %s", group, requested, fmt.Sprintf(format, args...))
	}
	dt, vl := DataType(f.GetDataType()), f.GetVectorLength()
	switch {
	case f.GetDataType() == 0:
		return nil, named("the response has no data type (retrieve.Feature.data_type): the server predates it; use RetrieveDecoded")
	case f.GetDataType() >= uint32(numDataTypes):
		return nil, named("unknown data type id %d", f.GetDataType())
	case dt.IsVector() != (vl > 0):
		return nil, named("vector length %d for %s", vl, dt)
	case vl > 1<<16:
		return nil, named("vector length %d is over 65536", vl)
	case f.GetColumnIdx() < 0 || int(f.GetColumnIdx()) >= n:
		return nil, named("column %d of %d", f.GetColumnIdx(), n)
	}
	return &Column{Label: f.GetLabel(), Requested: requested, DataType: dt, VectorLength: int(vl), group: group}, nil
}

// sameSchema checks that a later batch announces the types of the first.
func sameSchema(res *Result, p *retrievepb.Result) error {
	schemas := p.GetFeatureSchemas()
	if len(schemas) != len(res.Groups) {
		return malformed("batches disagree: %d feature groups, then %d", len(res.Groups), len(schemas))
	}
	for g, s := range schemas {
		cols := res.Groups[g].Columns
		if len(s.GetFeatures()) != len(cols) {
			return malformed("batches disagree on the features of %s", res.Groups[g].Label)
		}
		for f, feat := range s.GetFeatures() {
			c := cols[f]
			if DataType(feat.GetDataType()) != c.DataType || int(feat.GetVectorLength()) != c.VectorLength {
				return malformed("batches disagree on the type of %s/%s (the registry changed during the call?)",
					c.group, c.Requested)
			}
		}
	}
	return nil
}

// appendRows checks every cell of a batch against its column's type and appends the rows.
func appendRows(res *Result, flat []*Column, p *retrievepb.Result) error {
	for _, row := range p.GetRows() {
		at := len(res.Keys)
		cells := row.GetColumns()
		if len(cells) != len(flat) {
			return malformed("row %d: %d cells for %d features", at, len(cells), len(flat))
		}
		status := row.GetFgStatus()
		if len(status) != len(res.Groups) {
			return malformed("row %d: %d statuses (Row.fg_status) for %d feature groups", at, len(status), len(res.Groups))
		}
		for g, s := range status {
			if s > uint32(Expired) {
				return malformed("row %d: status %d", at, s)
			}
			res.Groups[g].Status = append(res.Groups[g].Status, RowStatus(s))
		}
		for i, col := range flat {
			if err := checkCell(col.DataType, col.VectorLength, cells[i]); err != nil {
				return malformed("row %d, feature %s/%s: %v", at, col.group, col.Requested, err)
			}
			col.cells = append(col.cells, cells[i])
		}
		res.Keys = append(res.Keys, row.GetKeys())
	}
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

// Float32s reads an FP8E5M2, FP8E4M3, FP16 or FP32 feature, one value per row.
func (g *Group) Float32s(feature string) ([]float32, error) {
	return read(g, feature, (*Column).Float32s)
}

// Float32Matrix reads an FP8/FP16/FP32 vector feature: rows × vector length.
func (g *Group) Float32Matrix(feature string) ([][]float32, error) {
	return read(g, feature, (*Column).Float32Matrix)
}

// Float64s reads any float feature.
func (g *Group) Float64s(feature string) ([]float64, error) {
	return read(g, feature, (*Column).Float64s)
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
