package client

import (
	"context"
	"fmt"
	"strings"

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

func (r *RetrieveRequest) query(start, end int) *retrievepb.Query {
	q := &retrievepb.Query{
		EntityLabel:   r.Entity,
		KeysSchema:    r.KeysSchema,
		FeatureGroups: make([]*retrievepb.FeatureGroup, len(r.FeatureGroups)),
		Keys:          make([]*retrievepb.Keys, end-start),
	}
	for i, g := range r.FeatureGroups {
		q.FeatureGroups[i] = &retrievepb.FeatureGroup{Label: g.Label, FeatureLabels: g.Features}
	}
	for i, k := range r.Keys[start:end] {
		q.Keys[i] = &retrievepb.Keys{Cols: k}
	}
	return q
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
	parts := make([]*retrievepb.Result, len(batches(len(req.Keys), c.cfg.batchSize)))
	err := c.fanOut(ctx, len(req.Keys), true, func(ctx context.Context, i, start, end int) error {
		q := req.query(start, end)
		return c.call(ctx, MethodRetrieve, c.cfg.reader, func(ctx context.Context) error {
			reply, err := c.retrieve.RetrieveFeatures(ctx, q)
			parts[i] = reply
			return err
		})
	})
	if err != nil {
		return nil, err
	}
	return assemble(&req, parts)
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
		q := req.query(start, end)
		return c.call(ctx, MethodRetrieveDecoded, c.cfg.reader, func(ctx context.Context) error {
			reply, err := c.retrieve.RetrieveDecodedResult(ctx, q)
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
