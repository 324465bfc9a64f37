package client

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/online-feature-store/online-feature-store/clients/go/pb/retrievepb"
)

// FeatureGroup names features of one feature group. A feature label may end in "@<DataTypeName>"
// ("emb@DataTypeFP16Vector") to have the server down-quantize it for this call.
type FeatureGroup struct {
	Label    string
	Features []string
}

// RetrieveRequest asks for features of many keys of one entity.
type RetrieveRequest struct {
	Entity string
	// KeysSchema names the key columns, in the order each key gives its values. Empty: the values are
	// in the entity's own key order (our server's addition; a reference server needs the names).
	KeysSchema []string
	// Keys holds one composite key per row of the result; Keys("u1", "u2") builds single-column keys.
	// Duplicates are kept: each key gets its own row.
	Keys          [][]string
	FeatureGroups []FeatureGroup
}

// Keys is one single-column key per value: Keys("u1", "u2") is [][]string{{"u1"}, {"u2"}}.
func Keys(values ...string) [][]string {
	out := make([][]string, len(values))
	for i := range values {
		out[i] = values[i : i+1 : i+1]
	}
	return out
}

// check refuses a request the server would refuse, before anything is sent.
func (r *RetrieveRequest) check() error {
	if r.Entity == "" {
		return invalid("retrieve: no entity")
	}
	if len(r.FeatureGroups) == 0 {
		return invalid("retrieve %s: no feature groups", r.Entity)
	}
	for _, g := range r.FeatureGroups {
		if g.Label == "" || len(g.Features) == 0 {
			return invalid("retrieve %s: feature group %q needs a label and at least one feature", r.Entity, g.Label)
		}
	}
	return checkKeys("retrieve", r.Entity, r.KeysSchema, r.Keys)
}

// checkKeys: at least one key, every key as wide as keysSchema (or, without one, as the first key).
func checkKeys(what, entity string, keysSchema []string, keys [][]string) error {
	if len(keys) == 0 {
		return invalid("%s %s: no keys", what, entity)
	}
	width := len(keysSchema)
	if width == 0 {
		width = len(keys[0])
	}
	for i, k := range keys {
		if len(k) != width || width == 0 {
			return invalid("%s %s: key %d has %d values for keys_schema %v (%d)", what, entity, i, len(k), keysSchema, width)
		}
	}
	return nil
}

// encode is the retrieve.Query of keys [start, end), as bytes: the same bytes proto.Marshal makes of
// the generated message, without a message per key.
func (r *RetrieveRequest) encode(start, end int) rawMessage {
	str := func(num protowire.Number, s string) int { return protowire.SizeTag(num) + protowire.SizeBytes(len(s)) }
	put := func(b []byte, num protowire.Number, s string) []byte {
		return protowire.AppendString(protowire.AppendTag(b, num, protowire.BytesType), s)
	}
	group := func(g FeatureGroup) int {
		n := str(1, g.Label)
		for _, f := range g.Features {
			n += str(2, f)
		}
		return n
	}
	key := func(k []string) int {
		n := 0
		for _, v := range k {
			n += str(1, v)
		}
		return n
	}
	size := 0
	if r.Entity != "" {
		size += str(1, r.Entity)
	}
	for _, g := range r.FeatureGroups {
		size += protowire.SizeTag(2) + protowire.SizeBytes(group(g))
	}
	for _, k := range r.KeysSchema {
		size += str(3, k)
	}
	for _, k := range r.Keys[start:end] {
		size += protowire.SizeTag(4) + protowire.SizeBytes(key(k))
	}
	b := make([]byte, 0, size)
	if r.Entity != "" {
		b = put(b, 1, r.Entity)
	}
	for _, g := range r.FeatureGroups {
		b = protowire.AppendVarint(protowire.AppendTag(b, 2, protowire.BytesType), uint64(group(g)))
		b = put(b, 1, g.Label)
		for _, f := range g.Features {
			b = put(b, 2, f)
		}
	}
	for _, k := range r.KeysSchema {
		b = put(b, 3, k)
	}
	for _, k := range r.Keys[start:end] {
		b = protowire.AppendVarint(protowire.AppendTag(b, 4, protowire.BytesType), uint64(key(k)))
		for _, v := range k {
			b = put(b, 1, v)
		}
	}
	return b
}

// Retrieve returns the features of req.Keys: one row per key in request order (duplicates kept), one
// Group per requested feature group with one typed Column per requested feature, and each row's status
// (found, or defaults because nothing is stored or it expired). Key lists longer than the batch size
// go out as concurrent requests, reassembled in order; the first failure cancels the others.
//
// The cells are decoded with the data type and vector length the server announces for each feature
// (retrieve.Feature fields 3 and 4, an addition of this project's server); a server without them (the
// reference) answers RetrieveDecoded only.
func (c *Client) Retrieve(ctx context.Context, req RetrieveRequest) (*Result, error) {
	if err := req.check(); err != nil {
		return nil, err
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	bounds := batches(len(req.Keys), c.cfg.batchSize)
	parts := make([]rawMessage, len(bounds))
	err := c.fanOut(ctx, len(req.Keys), true, func(ctx context.Context, i, start, end int) error {
		q := req.encode(start, end)
		return c.call(ctx, MethodRetrieve, c.cfg.reader, func(ctx context.Context) error {
			// The answer stays bytes, read into columns by assemble (wire.go).
			return c.conn.Invoke(ctx, retrievepb.FeatureService_RetrieveFeatures_FullMethodName, &q, &parts[i], c.rawCall)
		})
	})
	if err != nil {
		return nil, err
	}
	return assemble(&req, bounds, parts)
}

// DecodedResult is RetrieveDecoded's answer: every value rendered as a string by the server (the
// reference's forms: "0.5", "true", vectors joined with ":").
type DecodedResult struct {
	KeysSchema []string
	// Keys is each row's key values, as the server echoes them.
	Keys   [][]string
	Groups []*DecodedGroup
}

// DecodedGroup is one feature group of a DecodedResult.
type DecodedGroup struct {
	Label string
	// Features are the labels as requested (with any "@Type" suffix).
	Features []string
	// Rows holds Rows[row][feature].
	Rows [][]string
}

// Group is the feature group with this label, or nil.
func (r *DecodedResult) Group(label string) *DecodedGroup {
	for _, g := range r.Groups {
		if g.Label == label {
			return g
		}
	}
	return nil
}

// Column is every row's value of one feature, named as requested.
func (g *DecodedGroup) Column(feature string) ([]string, error) {
	f := -1
	for i, l := range g.Features {
		if l == feature {
			f = i
			break
		}
	}
	if f < 0 {
		return nil, fmt.Errorf("%w: feature group %s has no feature %q (it has %s)", ErrNoSuchFeature, g.Label, feature,
			strings.Join(g.Features, ", "))
	}
	out := make([]string, len(g.Rows))
	for r, row := range g.Rows {
		out[r] = row[f]
	}
	return out, nil
}

// RetrieveDecoded is Retrieve with every value rendered as a string by the server
// (RetrieveDecodedResult). It works against any server of the protocol, the reference's included.
func (c *Client) RetrieveDecoded(ctx context.Context, req RetrieveRequest) (*DecodedResult, error) {
	if err := req.check(); err != nil {
		return nil, err
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	bounds := batches(len(req.Keys), c.cfg.batchSize)
	parts := make([]*retrievepb.DecodedResult, len(bounds))
	err := c.fanOut(ctx, len(req.Keys), true, func(ctx context.Context, i, start, end int) error {
		q := req.encode(start, end)
		return c.call(ctx, MethodRetrieveDecoded, c.cfg.reader, func(ctx context.Context) error {
			reply := &retrievepb.DecodedResult{}
			err := c.conn.Invoke(ctx, retrievepb.FeatureService_RetrieveDecodedResult_FullMethodName, &q, reply, c.rawCall)
			parts[i] = reply
			return err
		})
	})
	if err != nil {
		return nil, err
	}
	out := &DecodedResult{Keys: make([][]string, 0, len(req.Keys)), Groups: make([]*DecodedGroup, len(req.FeatureGroups))}
	for g, fg := range req.FeatureGroups {
		out.Groups[g] = &DecodedGroup{Label: fg.Label, Features: fg.Features, Rows: make([][]string, 0, len(req.Keys))}
	}
	for i, p := range parts {
		if err := appendDecoded(out, &req, p, bounds[i][1]-bounds[i][0]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// appendDecoded checks one batch's answer against its request and appends its rows.
func appendDecoded(out *DecodedResult, req *RetrieveRequest, p *retrievepb.DecodedResult, keys int) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrMalformedResponse, MethodRetrieveDecoded, fmt.Sprintf(format, args...))
	}
	out.KeysSchema = p.GetKeysSchema()
	schemas := p.GetFeatureSchemas()
	if len(schemas) != len(req.FeatureGroups) {
		return bad("%d feature groups for %d requested", len(schemas), len(req.FeatureGroups))
	}
	columns := make([][]int, len(schemas))
	n := 0
	for g, s := range schemas {
		if len(s.GetFeatures()) != len(req.FeatureGroups[g].Features) {
			return bad("feature group %s: %d features for %d requested", s.GetFeatureGroupLabel(), len(s.GetFeatures()),
				len(req.FeatureGroups[g].Features))
		}
		for _, f := range s.GetFeatures() {
			columns[g] = append(columns[g], int(f.GetColumnIdx()))
		}
		n += len(s.GetFeatures())
	}
	if len(p.GetRows()) != keys {
		return bad("%d rows for %d keys", len(p.GetRows()), keys)
	}
	for r, row := range p.GetRows() {
		cells := row.GetColumns()
		if len(cells) != n {
			return bad("row %d: %d cells for %d features", r, len(cells), n)
		}
		out.Keys = append(out.Keys, row.GetKeys())
		for g, cols := range columns {
			values := make([]string, len(cols))
			for f, col := range cols {
				if col < 0 || col >= n {
					return bad("column %d of %d", col, n)
				}
				values[f] = cells[col]
			}
			out.Groups[g].Rows = append(out.Groups[g].Rows, values)
		}
	}
	return nil
}
