package client

import (
	"context"
	"fmt"
	"math"

	"github.com/online-feature-store/online-feature-store/clients/go/pb/persistpb"
)

// PersistRequest writes rows of one or more feature groups of one entity.
type PersistRequest struct {
	Entity string
	// KeysSchema names the key columns, in the order each row's Key gives its values. Empty: the
	// entity's own key order.
	KeysSchema []string
	Groups     []PersistGroup
	Rows       []PersistRow
}

// PersistGroup names the features of one group a persist writes (any subset, in any order: the
// others keep their defaults) and the group's DataType, which decides the protobuf container the values
// travel in (the server does not publish its registry).
type PersistGroup struct {
	Label    string
	DataType DataType
	Features []string
}

// PersistRow is one entity key and its values, Values[i] for Groups[i].
type PersistRow struct {
	Key    []string
	Values []Values
}

type valueKind uint8

const (
	kindFloat valueKind = iota + 1
	kindInt
	kindUint
	kindString
	kindBool
)

var kindNames = map[valueKind]string{kindFloat: "floats", kindInt: "ints", kindUint: "uints", kindString: "strings", kindBool: "bools"}

// Values are one row's values of one feature group, one per feature (one slice per feature for
// vector types), made by FloatValues, IntVectors and the like. Integers are range-checked against the
// group's type before anything is sent (an Int8 feature given 300 is refused); floats go as float64 and
// the server checks them against the narrow types.
type Values struct {
	kind   valueKind
	vector bool
	lens   []int // vector types: values per feature
	f64    []float64
	f32    []float32
	i64    []int64
	u64    []uint64
	str    []string
	bools  []bool
}

// FloatValues are values of a float group (FP8, FP16, FP32, FP64).
func FloatValues(v ...float64) Values { return Values{kind: kindFloat, f64: v} }

// Float32Values are values of a float group, from float32.
func Float32Values(v ...float32) Values { return Values{kind: kindFloat, f32: v} }

// IntValues are values of an integer group (any width, signed or not; range-checked).
func IntValues(v ...int64) Values { return Values{kind: kindInt, i64: v} }

// UintValues are values of an integer group, from uint64 (range-checked).
func UintValues(v ...uint64) Values { return Values{kind: kindUint, u64: v} }

// StringValues are values of a String group.
func StringValues(v ...string) Values { return Values{kind: kindString, str: v} }

// BoolValues are values of a Bool group.
func BoolValues(v ...bool) Values { return Values{kind: kindBool, bools: v} }

func vectors[T any](kind valueKind, v [][]T) (Values, []T) {
	out := Values{kind: kind, vector: true, lens: make([]int, len(v))}
	n := 0
	for i, x := range v {
		out.lens[i] = len(x)
		n += len(x)
	}
	flat := make([]T, 0, n)
	for _, x := range v {
		flat = append(flat, x...)
	}
	return out, flat
}

// FloatVectors are values of a float vector group, one slice per feature.
func FloatVectors(v ...[]float64) Values {
	out, flat := vectors(kindFloat, v)
	out.f64 = flat
	return out
}

// Float32Vectors are values of a float vector group (an embedding), from float32.
func Float32Vectors(v ...[]float32) Values {
	out, flat := vectors(kindFloat, v)
	out.f32 = flat
	return out
}

// IntVectors are values of an integer vector group.
func IntVectors(v ...[]int64) Values {
	out, flat := vectors(kindInt, v)
	out.i64 = flat
	return out
}

// UintVectors are values of an integer vector group, from uint64.
func UintVectors(v ...[]uint64) Values {
	out, flat := vectors(kindUint, v)
	out.u64 = flat
	return out
}

// StringVectors are values of a StringVector group.
func StringVectors(v ...[]string) Values {
	out, flat := vectors(kindString, v)
	out.str = flat
	return out
}

// BoolVectors are values of a BoolVector group.
func BoolVectors(v ...[]bool) Values {
	out, flat := vectors(kindBool, v)
	out.bools = flat
	return out
}

// features is how many features v gives values for.
func (v *Values) features() int {
	if v.vector {
		return len(v.lens)
	}
	switch v.kind {
	case kindFloat:
		return max(len(v.f64), len(v.f32))
	case kindInt:
		return len(v.i64)
	case kindUint:
		return len(v.u64)
	case kindString:
		return len(v.str)
	default:
		return len(v.bools)
	}
}

// kindFor is the kind of Values a data type takes (ints and uints both suit integer types).
func kindFor(e element) valueKind {
	switch e {
	case elFP8E5M2, elFP8E4M3, elFP16, elBF16, elFP32, elFP64, elQ8:
		return kindFloat
	case elString:
		return kindString
	case elBool:
		return kindBool
	default:
		return kindInt
	}
}

// intBounds is the inclusive range of an integer element.
func intBounds(e element) (lo int64, hi uint64) {
	switch e {
	case elInt8:
		return math.MinInt8, math.MaxInt8
	case elInt16:
		return math.MinInt16, math.MaxInt16
	case elInt32:
		return math.MinInt32, math.MaxInt32
	case elInt64:
		return math.MinInt64, math.MaxInt64
	case elUint8:
		return 0, math.MaxUint8
	case elUint16:
		return 0, math.MaxUint16
	case elUint32:
		return 0, math.MaxUint32
	default:
		return 0, math.MaxUint64
	}
}

// encode converts v to the persist.Values of a group of type dt with n features. locate(f) names
// feature f in errors.
func (v *Values) encode(dt DataType, n int, locate func(f int) string) (*persistpb.Values, error) {
	e := dt.element()
	want := kindFor(e)
	given := v.kind
	if given == kindUint {
		given = kindInt
	}
	switch {
	case v.kind == 0:
		return nil, invalid("%s: no values (use FloatValues, IntVectors, ...)", locate(-1))
	case given != want:
		return nil, invalid("%s: %s given for %s", locate(-1), kindNames[v.kind], dt)
	case v.vector != dt.IsVector():
		shape := map[bool]string{true: "vectors", false: "scalars"}
		return nil, invalid("%s: %s given for %s, which takes %s", locate(-1), shape[v.vector], dt, shape[dt.IsVector()])
	case v.features() != n:
		return nil, invalid("%s: values for %d features, the group names %d", locate(-1), v.features(), n)
	}
	if !v.vector {
		return v.container(e, 0, n, locate)
	}
	out := &persistpb.Values{Vector: make([]*persistpb.Vector, n)}
	at := 0
	for f, l := range v.lens {
		c, err := v.container(e, at, at+l, func(int) string { return locate(f) })
		if err != nil {
			return nil, err
		}
		out.Vector[f] = &persistpb.Vector{Values: c}
		at += l
	}
	return out, nil
}

// container puts v's values [lo, hi) into the persist.Values field that element e travels in.
// locate(i) names value i (relative to lo) in errors.
func (v *Values) container(e element, lo, hi int, locate func(int) string) (*persistpb.Values, error) {
	switch v.kind {
	case kindFloat:
		var f []float64
		if v.f32 != nil {
			f = make([]float64, hi-lo)
			for i, x := range v.f32[lo:hi] {
				f[i] = float64(x)
			}
		} else {
			f = v.f64[lo:hi]
		}
		if e == elFP64 {
			return &persistpb.Values{Fp64Values: f}, nil
		}
		return &persistpb.Values{Fp32Values: f}, nil
	case kindString:
		return &persistpb.Values{StringValues: v.str[lo:hi]}, nil
	case kindBool:
		return &persistpb.Values{BoolValues: v.bools[lo:hi]}, nil
	}
	// Integers: every value checked against the element's range, then put in its container.
	least, most := intBounds(e)
	n := hi - lo
	get := func(i int) (int64, uint64, bool) { // value as int64 if it fits, else as uint64
		if v.kind == kindInt {
			return v.i64[lo+i], 0, true
		}
		u := v.u64[lo+i]
		return int64(u), u, u <= math.MaxInt64
	}
	for i := range n {
		s, u, signed := get(i)
		if (signed && (s < least || (s >= 0 && uint64(s) > most))) || (!signed && u > most) {
			val := fmt.Sprint(s)
			if !signed {
				val = fmt.Sprint(u)
			}
			return nil, invalid("%s: %s is out of range for %s (%d..%d)", locate(i), val, typeOf(e), least, most)
		}
	}
	out := &persistpb.Values{}
	switch e {
	case elInt8, elInt16, elInt32:
		out.Int32Values = make([]int32, n)
		for i := range n {
			s, _, _ := get(i)
			out.Int32Values[i] = int32(s)
		}
	case elInt64:
		out.Int64Values = make([]int64, n)
		for i := range n {
			s, _, _ := get(i)
			out.Int64Values[i] = s
		}
	case elUint8, elUint16, elUint32:
		out.Uint32Values = make([]uint32, n)
		for i := range n {
			s, _, _ := get(i)
			out.Uint32Values[i] = uint32(s)
		}
	default:
		out.Uint64Values = make([]uint64, n)
		for i := range n {
			s, u, signed := get(i)
			if signed {
				u = uint64(s)
			}
			out.Uint64Values[i] = u
		}
	}
	return out, nil
}

// typeOf names an element by its scalar data type.
func typeOf(e element) DataType { return DataType(e) }

// rows checks the request and encodes every row, before anything is sent: a bad value anywhere
// refuses the whole request.
func (r *PersistRequest) rows() ([]*persistpb.FeatureGroupSchema, []*persistpb.Data, error) {
	if r.Entity == "" {
		return nil, nil, invalid("persist: no entity")
	}
	if len(r.Groups) == 0 {
		return nil, nil, invalid("persist %s: no feature groups", r.Entity)
	}
	schema := make([]*persistpb.FeatureGroupSchema, len(r.Groups))
	for i, g := range r.Groups {
		switch {
		case g.Label == "":
			return nil, nil, invalid("persist %s: feature group %d has no label", r.Entity, i)
		case !g.DataType.Valid():
			return nil, nil, invalid("persist %s/%s: data type %s cannot hold values", r.Entity, g.Label, g.DataType)
		case len(g.Features) == 0:
			return nil, nil, invalid("persist %s/%s: no features", r.Entity, g.Label)
		}
		schema[i] = &persistpb.FeatureGroupSchema{Label: g.Label, FeatureLabels: g.Features}
	}
	keys := make([][]string, len(r.Rows))
	for i, row := range r.Rows {
		keys[i] = row.Key
	}
	if err := checkKeys("persist", r.Entity, r.KeysSchema, keys); err != nil {
		return nil, nil, err
	}
	data := make([]*persistpb.Data, len(r.Rows))
	for i, row := range r.Rows {
		if len(row.Values) != len(r.Groups) {
			return nil, nil, invalid("persist %s: row %d has values for %d feature groups, the request names %d",
				r.Entity, i, len(row.Values), len(r.Groups))
		}
		d := &persistpb.Data{KeyValues: row.Key, FeatureValues: make([]*persistpb.FeatureValues, len(r.Groups))}
		for g, grp := range r.Groups {
			locate := func(f int) string {
				where := fmt.Sprintf("persist %s: row %d (key %v), feature group %s", r.Entity, i, row.Key, grp.Label)
				if f >= 0 {
					where += ", feature " + grp.Features[f]
				}
				return where
			}
			vals, err := row.Values[g].encode(grp.DataType, len(grp.Features), locate)
			if err != nil {
				return nil, nil, err
			}
			d.FeatureValues[g] = &persistpb.FeatureValues{Values: vals}
		}
		data[i] = d
	}
	return schema, data, nil
}

// Persist writes req.Rows. The whole request is checked and encoded before anything is sent. Rows
// beyond the batch size go out as concurrent requests; each is written whole or not at all by the
// server, but a failed batch does not undo the others: the error then joins a *BatchError per failed
// batch, naming its rows, and every batch has been tried. Persisting the same rows again is safe.
func (c *Client) Persist(ctx context.Context, req PersistRequest) error {
	schema, data, err := req.rows()
	if err != nil {
		return err
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	return c.fanOut(ctx, len(data), false, func(ctx context.Context, _, start, end int) error {
		q := &persistpb.Query{EntityLabel: req.Entity, KeysSchema: req.KeysSchema, FeatureGroupSchema: schema, Data: data[start:end]}
		return c.call(ctx, MethodPersist, c.cfg.writer, func(ctx context.Context) error {
			_, err := c.persist.PersistFeatures(ctx, q)
			return err
		})
	})
}
