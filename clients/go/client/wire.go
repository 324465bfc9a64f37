package client

// RetrieveFeatures on the wire, without the generated types. A 500-key × 64-feature answer holds 32,000
// cells: unmarshalled into retrievepb.Result that is 32,000 small allocations, and the client spent
// several times the CPU of the Python client, whose native core reads the bytes (bench/RESULTS.md, "Go
// client"). So the answer is kept as bytes (rawCodec) and walked once with protowire: fixed-width cells
// are copied into one buffer per column, string cells stay slices of the response. The query is built
// as bytes too (RetrieveRequest.encode; a test checks it equals the generated message's encoding).
// RetrieveDecodedResult and PersistFeatures use the generated types.

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	// Registers the "proto" codec that rawCodec defers to.
	_ "google.golang.org/grpc/encoding/proto"
)

// rawMessage is a response kept as its wire bytes.
type rawMessage []byte

// rawCodec is gRPC's proto codec, except that a *rawMessage is sent as it is, or receives the
// response's bytes.
type rawCodec struct{ proto encoding.CodecV2 }

func newRawCodec() rawCodec { return rawCodec{proto: encoding.GetCodecV2("proto")} }

func (c rawCodec) Name() string { return c.proto.Name() }

func (c rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	if raw, ok := v.(*rawMessage); ok {
		return mem.BufferSlice{mem.SliceBuffer(*raw)}, nil
	}
	return c.proto.Marshal(v)
}

func (c rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if raw, ok := v.(*rawMessage); ok {
		*raw = data.Materialize() // a copy: gRPC frees data when this returns
		return nil
	}
	return c.proto.Unmarshal(data, v)
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrMalformedResponse, MethodRetrieve, fmt.Sprintf(format, args...))
}

// field is one field of a message: its number, and its varint value or its bytes.
type field struct {
	num     protowire.Number
	varint  uint64
	bytes   []byte
	isBytes bool
}

// nextField reads the field at the start of b; it returns the rest of b. Fixed-width and group fields
// (no retrieve message has them) are skipped and reported with num 0.
func nextField(b []byte, what string) (field, []byte, error) {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 {
		return field{}, nil, malformed("%s: %v", what, protowire.ParseError(n))
	}
	b = b[n:]
	switch typ {
	case protowire.VarintType:
		v, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return field{}, nil, malformed("%s field %d: %v", what, num, protowire.ParseError(n))
		}
		return field{num: num, varint: v}, b[n:], nil
	case protowire.BytesType:
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return field{}, nil, malformed("%s field %d: %v", what, num, protowire.ParseError(n))
		}
		return field{num: num, bytes: v, isBytes: true}, b[n:], nil
	default:
		n := protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return field{}, nil, malformed("%s field %d: %v", what, num, protowire.ParseError(n))
		}
		return field{}, b[n:], nil
	}
}

// featureInfo is one retrieve.Feature.
type featureInfo struct {
	label        string
	column       int64
	dataType     uint64
	vectorLength uint64
}

// resultParts are the fields of one retrieve.Result, not yet interpreted.
type resultParts struct {
	entity     string
	keysSchema []string
	groups     [][]featureInfo
	rows       [][]byte
}

func splitResult(b []byte) (*resultParts, error) {
	p := &resultParts{}
	for len(b) > 0 {
		f, rest, err := nextField(b, "retrieve.Result")
		if err != nil {
			return nil, err
		}
		b = rest
		if !f.isBytes {
			continue
		}
		switch f.num {
		case 1:
			p.entity = string(f.bytes)
		case 2:
			p.keysSchema = append(p.keysSchema, string(f.bytes))
		case 3:
			g, err := featureSchema(f.bytes)
			if err != nil {
				return nil, err
			}
			p.groups = append(p.groups, g)
		case 4:
			p.rows = append(p.rows, f.bytes)
		}
	}
	return p, nil
}

func featureSchema(b []byte) ([]featureInfo, error) {
	var out []featureInfo
	for len(b) > 0 {
		f, rest, err := nextField(b, "retrieve.FeatureSchema")
		if err != nil {
			return nil, err
		}
		b = rest
		if f.num != 2 || !f.isBytes {
			continue
		}
		var fi featureInfo
		for body := f.bytes; len(body) > 0; {
			g, rest, err := nextField(body, "retrieve.Feature")
			if err != nil {
				return nil, err
			}
			body = rest
			switch {
			case g.num == 1 && g.isBytes:
				fi.label = string(g.bytes)
			case g.num == 2 && !g.isBytes:
				fi.column = int64(int32(g.varint)) // int32 on the wire; negative = sign-extended
			case g.num == 3 && !g.isBytes:
				fi.dataType = g.varint
			case g.num == 4 && !g.isBytes:
				fi.vectorLength = g.varint
			}
		}
		out = append(out, fi)
	}
	return out, nil
}

// assemble joins the batches' answers into one Result, checking each against its request.
func assemble(req *RetrieveRequest, bounds [][2]int, parts []rawMessage) (*Result, error) {
	res := &Result{Entity: req.Entity, Keys: make([][]string, 0, len(req.Keys)), Groups: make([]*Group, len(req.FeatureGroups))}
	var flat []*Column // every column, by its column index
	for i, raw := range parts {
		p, err := splitResult(raw)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			res.Entity, res.KeysSchema = p.entity, p.keysSchema
			if flat, err = schema(req, p.groups, res); err != nil {
				return nil, err
			}
		} else if err := sameSchema(res, flat, p.groups); err != nil {
			return nil, err
		}
		if err := appendRows(res, flat, p.rows, req.Keys[bounds[i][0]:bounds[i][1]]); err != nil {
			return nil, err
		}
	}
	if len(res.Keys) != len(req.Keys) {
		return nil, malformed("%d rows for %d keys", len(res.Keys), len(req.Keys))
	}
	return res, nil
}

// schema builds the result's groups and columns from the first batch's feature schemas.
func schema(req *RetrieveRequest, groups [][]featureInfo, res *Result) ([]*Column, error) {
	if len(groups) != len(req.FeatureGroups) {
		return nil, malformed("%d feature groups for %d requested", len(groups), len(req.FeatureGroups))
	}
	n := 0
	for _, g := range groups {
		n += len(g)
	}
	flat := make([]*Column, n)
	for g, features := range groups {
		asked := req.FeatureGroups[g]
		if len(features) != len(asked.Features) {
			return nil, malformed("feature group %s: %d features for %d requested", asked.Label, len(features), len(asked.Features))
		}
		group := &Group{Label: asked.Label, Columns: make([]*Column, len(features)), Status: make([]RowStatus, 0, len(req.Keys))}
		for f, fi := range features {
			col, err := column(asked.Label, asked.Features[f], fi, n)
			if err != nil {
				return nil, err
			}
			if flat[fi.column] != nil {
				return nil, malformed("column %d is given to two features", fi.column)
			}
			col.reserve(len(req.Keys))
			flat[fi.column] = col
			group.Columns[f] = col
		}
		res.Groups[g] = group
	}
	return flat, nil
}

// column checks one retrieve.Feature and makes its Column.
func column(group, requested string, f featureInfo, n int) (*Column, error) {
	named := func(format string, args ...any) error {
		return malformed("feature %s/%s: %s", group, requested, fmt.Sprintf(format, args...))
	}
	dt := DataType(f.dataType)
	switch {
	case f.dataType == 0:
		return nil, named("the response has no data type (retrieve.Feature.data_type): the server predates it; use RetrieveDecoded")
	case f.dataType >= uint64(numDataTypes):
		return nil, named("unknown data type id %d", f.dataType)
	case dt.IsVector() != (f.vectorLength > 0):
		return nil, named("vector length %d for %s", f.vectorLength, dt)
	case f.vectorLength > 1<<16:
		return nil, named("vector length %d is over 65536", f.vectorLength)
	case f.column < 0 || f.column >= int64(n):
		return nil, named("column %d of %d", f.column, n)
	}
	return &Column{Label: f.label, Requested: requested, DataType: dt, VectorLength: int(f.vectorLength), group: group}, nil
}

// sameSchema checks that a later batch announces the columns of the first.
func sameSchema(res *Result, flat []*Column, groups [][]featureInfo) error {
	if len(groups) != len(res.Groups) {
		return malformed("batches disagree: %d feature groups, then %d", len(res.Groups), len(groups))
	}
	for g, features := range groups {
		cols := res.Groups[g].Columns
		if len(features) != len(cols) {
			return malformed("batches disagree on the features of %s", res.Groups[g].Label)
		}
		for f, fi := range features {
			c := cols[f]
			if DataType(fi.dataType) != c.DataType || int(fi.vectorLength) != c.VectorLength ||
				fi.column < 0 || fi.column >= int64(len(flat)) || flat[fi.column] != c {
				return malformed("batches disagree on %s/%s (the registry changed during the call?)", c.group, c.Requested)
			}
		}
	}
	return nil
}

// appendRows checks every cell of a batch's rows against its column's type and appends the rows.
// asked are the batch's requested keys: a key value the server echoes as asked reuses the asked string.
func appendRows(res *Result, flat []*Column, rows [][]byte, asked [][]string) error {
	width := len(res.KeysSchema)
	store := make([]string, len(rows)*width) // every row's key values: one allocation per batch
	for r, b := range rows {
		at := len(res.Keys)
		if at >= cap(res.Keys) { // columns hold as many rows as keys were requested
			return malformed("more rows than the %d keys requested", cap(res.Keys))
		}
		keys := store[r*width : r*width : (r+1)*width]
		cell, status := 0, 0
		for len(b) > 0 {
			// The hot path: a cell (field 2, length-delimited: tag 0x12) of under 128 bytes.
			if b[0] == 0x12 && len(b) > 1 && b[1] < 0x80 {
				end := 2 + int(b[1])
				if end > len(b) {
					return malformed("row %d: a cell runs past the end of the row", at)
				}
				if cell >= len(flat) {
					return malformed("row %d: more than %d cells", at, len(flat))
				}
				if col := flat[cell]; end-2 == col.fast { // a number cell of the right size: stored as is
					at := col.rows * col.fast
					switch col.fast { // 4 and 8 bytes without a call to memmove
					case 4:
						*(*[4]byte)(col.data[at : at+4]) = [4]byte(b[2:end])
					case 8:
						*(*[8]byte)(col.data[at : at+8]) = [8]byte(b[2:end])
					default:
						copy(col.data[at:], b[2:end])
					}
					col.rows++
				} else if err := col.add(b[2:end]); err != nil {
					return malformed("row %d, feature %s/%s: %v", at, col.group, col.Requested, err)
				}
				b = b[end:]
				cell++
				continue
			}
			f, rest, err := nextField(b, "retrieve.Row")
			if err != nil {
				return err
			}
			b = rest
			switch {
			case f.num == 1 && f.isBytes:
				if len(keys) == width {
					return malformed("row %d: more key values than keys_schema %v", at, res.KeysSchema)
				}
				if k := len(keys); r < len(asked) && k < len(asked[r]) && string(f.bytes) == asked[r][k] {
					keys = append(keys, asked[r][k]) // no copy
				} else {
					keys = append(keys, string(f.bytes))
				}
			case f.num == 2 && f.isBytes:
				if cell >= len(flat) {
					return malformed("row %d: more than %d cells", at, len(flat))
				}
				if err := flat[cell].add(f.bytes); err != nil {
					return malformed("row %d, feature %s/%s: %v", at, flat[cell].group, flat[cell].Requested, err)
				}
				cell++
			case f.num == 3 && !f.isBytes:
				if err := addStatus(res, at, status, f.varint); err != nil {
					return err
				}
				status++
			case f.num == 3: // packed
				for p := f.bytes; len(p) > 0; {
					v, n := protowire.ConsumeVarint(p)
					if n < 0 {
						return malformed("row %d: fg_status: %v", at, protowire.ParseError(n))
					}
					p = p[n:]
					if err := addStatus(res, at, status, v); err != nil {
						return err
					}
					status++
				}
			}
		}
		if cell != len(flat) {
			return malformed("row %d: %d cells for %d features", at, cell, len(flat))
		}
		if status != len(res.Groups) {
			return malformed("row %d: %d statuses (Row.fg_status) for %d feature groups", at, status, len(res.Groups))
		}
		if len(keys) != width {
			return malformed("row %d: %d key values for keys_schema %v", at, len(keys), res.KeysSchema)
		}
		res.Keys = append(res.Keys, keys)
	}
	return nil
}

func addStatus(res *Result, row, group int, s uint64) error {
	if group >= len(res.Groups) {
		return malformed("row %d: more statuses than the %d feature groups", row, len(res.Groups))
	}
	if s > uint64(Expired) {
		return malformed("row %d: status %d", row, s)
	}
	res.Groups[group].Status = append(res.Groups[group].Status, RowStatus(s))
	return nil
}
