package client

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/online-feature-store/online-feature-store/clients/go/pb/retrievepb"
)

func TestQueryBytesAreTheGeneratedMessage(t *testing.T) {
	req := RetrieveRequest{
		Entity:     "user",
		KeysSchema: []string{"b", "a"},
		Keys:       [][]string{{"k1", ""}, {"ü", "x"}, {"k3", "y"}},
		FeatureGroups: []FeatureGroup{
			{Label: "g", Features: []string{"f0", "f1@DataTypeFP16"}},
			{Label: "h", Features: []string{""}},
		},
	}
	for _, b := range [][2]int{{0, 3}, {1, 2}} {
		want := &retrievepb.Query{EntityLabel: req.Entity, KeysSchema: req.KeysSchema}
		for _, g := range req.FeatureGroups {
			want.FeatureGroups = append(want.FeatureGroups, &retrievepb.FeatureGroup{Label: g.Label, FeatureLabels: g.Features})
		}
		for _, k := range req.Keys[b[0]:b[1]] {
			want.Keys = append(want.Keys, &retrievepb.Keys{Cols: k})
		}
		wantBytes, err := proto.MarshalOptions{Deterministic: true}.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		if got := req.encode(b[0], b[1]); !bytes.Equal(got, wantBytes) {
			t.Errorf("keys %v:\n got %x\nwant %x", b, got, wantBytes)
		}
	}
}

// TestResultBytesInAnyLayout: unpacked statuses, unknown fields of every wire type, fields out of
// order and long cells (two-byte lengths) read as the usual layout does.
func TestResultBytesInAnyLayout(t *testing.T) {
	req := RetrieveRequest{Entity: "e", Keys: Keys("k0", "k1"), FeatureGroups: []FeatureGroup{
		{Label: "s", Features: []string{"x"}}, {Label: "v", Features: []string{"y"}},
	}}
	str := func(b []byte, num protowire.Number, v []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), v)
	}
	varint := func(b []byte, num protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), v)
	}
	feature := func(label string, col, dt, vl uint64) []byte {
		f := str(nil, 1, []byte(label))
		f = varint(f, 2, col)
		f = varint(f, 3, dt)
		f = protowire.AppendFixed32(protowire.AppendTag(f, 9, protowire.Fixed32Type), 7) // unknown
		return varint(f, 4, vl)
	}
	long := bytes.Repeat([]byte("é"), 100) // 200 bytes: a two-byte length
	var msg []byte
	for r, k := range []string{"k0", "k1"} {
		var row []byte
		row = str(row, 2, []byte("hi"))        // cell of column 0 (x, a string)
		row = varint(row, 3, uint64(r))        // status of group 0, unpacked
		row = str(row, 1, []byte(k))           // the key, after the cells
		vec := append([]byte{200, 0}, long...) // a string vector of 1: 200 bytes
		row = str(row, 2, vec)                 // column 1 (y)
		row = protowire.AppendFixed64(protowire.AppendTag(row, 15, protowire.Fixed64Type), 1)
		row = varint(row, 3, 2) // group 1: expired
		msg = str(msg, 4, row)
	}
	msg = str(msg, 3, str(str(nil, 1, []byte("s")), 2, feature("x", 0, uint64(String), 0)))
	msg = str(msg, 3, str(str(nil, 1, []byte("v")), 2, feature("y", 1, uint64(StringVector), 1)))
	msg = str(msg, 2, []byte("id"))
	msg = str(msg, 1, []byte("e"))
	res, err := assemble(&req, [][2]int{{0, 2}}, []rawMessage{msg})
	if err != nil {
		t.Fatal(err)
	}
	x, _ := res.Group("s").Strings("x")
	y, _ := res.Group("v").StringMatrix("y")
	got := fmt.Sprint(res.Keys, res.KeysSchema, x, res.Group("s").Status, res.Group("v").Status, len(y[1][0]))
	if got != "[[k0] [k1]] [id] [hi hi] [found missing] [expired expired] 200" {
		t.Errorf("got %s", got)
	}
	// A truncated message is refused, not read past its end.
	for cut := 1; cut < len(msg); cut += 7 {
		if _, err := assemble(&req, [][2]int{{0, 2}}, []rawMessage{msg[:cut]}); !errors.Is(err, ErrMalformedResponse) {
			t.Fatalf("cut at %d of %d: %v", cut, len(msg), err)
		}
	}
}
