package client

// Against the real `ofs serve` of TestMain: persist then retrieve every data type (typed and decoded),
// quantized features, statuses, composite keys, batching order, auth roles and server errors.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var exactFloats = []float64{-6, -3, -1.5, -0.5, 0, 0.25, 0.75, 1, 1.25, 2, 3.5, 4, 7} // exact in every float type

// sample is the value of row r, feature f, element e of a feature of type t: a float64, int64,
// uint64, string or bool that t holds exactly (the extremes of every integer type included).
func sample(t DataType, r, f, e int) any {
	i := r*7 + f*3 + e
	switch el := t.element(); {
	case el == elQ8:
		// Whole numbers with each vector's first element ±127: scale 1, stored exactly.
		if e == 0 {
			return []float64{127, -127}[(r+f)%2]
		}
		return []float64{-64, 0, 1, 5, -100}[i%5]
	case t.IsFloat():
		return exactFloats[i%len(exactFloats)]
	case el == elString:
		return []string{"", "a", "bc", "ünï", "zz"}[i%5]
	case el == elBool:
		return i%3 == 0
	case el >= elUint8 && el <= elUint64:
		_, hi := intBounds(el)
		return []uint64{0, hi, 1, 42}[i%4]
	default:
		lo, hi := intBounds(el)
		return []int64{lo, int64(hi), -1, 0, 42}[i%5]
	}
}

// persistValues is row r's Values for a group of type t with two features.
func persistValues(t DataType, r int) Values {
	n := 1
	if t.IsVector() {
		n = vlen
	}
	cell := func(f int) []any {
		out := make([]any, n)
		for e := range n {
			out[e] = sample(t, r, f, e)
		}
		return out
	}
	switch el := t.element(); {
	case t.IsFloat():
		return build(t, cell, FloatValues, FloatVectors)
	case el == elString:
		return build(t, cell, StringValues, StringVectors)
	case el == elBool:
		return build(t, cell, BoolValues, BoolVectors)
	case el >= elUint8 && el <= elUint64:
		return build(t, cell, UintValues, UintVectors)
	default:
		return build(t, cell, IntValues, IntVectors)
	}
}

func build[T any](t DataType, cell func(f int) []any, scalars func(...T) Values, vectors func(...[]T) Values) Values {
	var flat []T
	var vecs [][]T
	for f := range 2 {
		var v []T
		for _, x := range cell(f) {
			v = append(v, x.(T))
		}
		flat = append(flat, v...)
		vecs = append(vecs, v)
	}
	if t.IsVector() {
		return vectors(vecs...)
	}
	return scalars(flat...)
}

func TestPersistThenRetrieveEveryType(t *testing.T) {
	s := needServer(t)
	c := dial(t, s)
	ctx := context.Background()
	var groups []PersistGroup
	var fgs []FeatureGroup
	for dt := FP8E5M2; dt < numDataTypes; dt++ {
		groups = append(groups, PersistGroup{Label: fgLabel(dt), DataType: dt, Features: []string{"f0", "f1"}})
		fgs = append(fgs, FeatureGroup{Label: fgLabel(dt), Features: []string{"f1", "f0"}}) // any order
	}
	keys := []string{"every-type-0", "every-type-1"}
	var rows []PersistRow
	for r, k := range keys {
		row := PersistRow{Key: []string{k}}
		for _, g := range groups {
			row.Values = append(row.Values, persistValues(g.DataType, r))
		}
		rows = append(rows, row)
	}
	if err := c.Persist(ctx, PersistRequest{Entity: "user", Groups: groups, Rows: rows}); err != nil {
		t.Fatal(err)
	}

	res, err := c.Retrieve(ctx, RetrieveRequest{Entity: "user", Keys: Keys(keys[0], "every-type-nobody", keys[1]), FeatureGroups: fgs})
	if err != nil {
		t.Fatal(err)
	}
	if res.Len() != 3 || res.Entity != "user" || res.Keys[1][0] != "every-type-nobody" {
		t.Fatalf("rows %d, entity %q, keys %v", res.Len(), res.Entity, res.Keys)
	}
	for g, dt := 0, FP8E5M2; dt < numDataTypes; g, dt = g+1, dt+1 {
		grp := res.Groups[g]
		if grp != res.Group(fgLabel(dt)) {
			t.Fatalf("Group(%q) is not group %d", fgLabel(dt), g)
		}
		if want := []RowStatus{Found, Missing, Found}; fmt.Sprint(grp.Status) != fmt.Sprint(want) {
			t.Errorf("%s: status %v, want %v", dt, grp.Status, want)
		}
		for _, feature := range []string{"f0", "f1"} {
			col, err := grp.Column(feature)
			if err != nil {
				t.Fatal(err)
			}
			wantVL := 0
			if dt.IsVector() {
				wantVL = vlen
			}
			if col.DataType != dt || col.VectorLength != wantVL || col.Label != feature {
				t.Fatalf("%s/%s: served as %s × %d (%q)", dt, feature, col.DataType, col.VectorLength, col.Label)
			}
			f := int(feature[1] - '0')
			got := flatten(col.Values())
			var want []any
			for _, r := range []int{0, -1, 1} {
				for e := range max(wantVL, 1) {
					if r < 0 {
						want = append(want, defaultOf(dt))
					} else {
						want = append(want, sample(dt, r, f, e))
					}
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%s/%s: got %v, want %v", dt, feature, got, want)
			}
			checkTypedAccessor(t, grp, feature, dt, got)
		}
	}
}

// defaultOf is the default of every feature of the test registry's group of type t.
func defaultOf(t DataType) any {
	switch t.element() {
	case elString:
		return ""
	case elBool:
		return false
	}
	return 0
}

// checkTypedAccessor reads the feature with the accessor of its family and compares it with got
// (the flattened natural values), and checks that a wrong accessor is refused.
func checkTypedAccessor(t *testing.T, g *Group, feature string, dt DataType, got []any) {
	t.Helper()
	var typed any
	var err error
	vector := dt.IsVector()
	pick := func(s, m func(string) (any, error)) {
		if vector {
			typed, err = m(feature)
		} else {
			typed, err = s(feature)
		}
	}
	el := dt.element()
	switch {
	case el == elFP64:
		pick(func(f string) (any, error) { return g.Float64s(f) }, func(f string) (any, error) { return g.Float64Matrix(f) })
	case dt.IsFloat():
		pick(func(f string) (any, error) { return g.Float32s(f) }, func(f string) (any, error) { return g.Float32Matrix(f) })
	case el == elString:
		pick(func(f string) (any, error) { return g.Strings(f) }, func(f string) (any, error) { return g.StringMatrix(f) })
	case el == elBool:
		pick(func(f string) (any, error) { return g.Bools(f) }, func(f string) (any, error) { return g.BoolMatrix(f) })
	case el == elUint64 || el == elUint32:
		pick(func(f string) (any, error) { return g.Uint64s(f) }, func(f string) (any, error) { return g.Uint64Matrix(f) })
	case el == elInt32 || el == elInt16 || el == elInt8 || el == elUint8 || el == elUint16:
		pick(func(f string) (any, error) { return g.Int32s(f) }, func(f string) (any, error) { return g.Int32Matrix(f) })
	default:
		pick(func(f string) (any, error) { return g.Int64s(f) }, func(f string) (any, error) { return g.Int64Matrix(f) })
	}
	if err != nil {
		t.Fatalf("%s/%s: %v", dt, feature, err)
	}
	if fmt.Sprint(flatten(typed)) != fmt.Sprint(got) {
		t.Errorf("%s/%s: typed accessor gave %v, want %v", dt, feature, typed, got)
	}
	// The other shape, and a type of another family, are refused.
	if vector {
		_, err = g.Column(feature)
		if err == nil {
			col, _ := g.Column(feature)
			if _, err := col.Float64s(); !errors.Is(err, ErrWrongType) {
				t.Errorf("%s: Float64s of a vector feature: %v", dt, err)
			}
		}
	}
	if el == elString {
		if _, err := g.Float32s(feature); !errors.Is(err, ErrWrongType) {
			t.Errorf("%s: Float32s of a string feature: %v", dt, err)
		}
	} else if _, err := g.Strings(feature); !errors.Is(err, ErrWrongType) {
		t.Errorf("%s: Strings of a %s feature: %v", dt, dt, err)
	}
}

func TestRetrieveDecoded(t *testing.T) {
	s := needServer(t)
	c := dial(t, s)
	ctx := context.Background()
	err := c.Persist(ctx, PersistRequest{
		Entity: "user",
		Groups: []PersistGroup{
			{Label: fgLabel(FP32), DataType: FP32, Features: []string{"f0", "f1"}},
			{Label: fgLabel(BoolVector), DataType: BoolVector, Features: []string{"f0"}},
			{Label: fgLabel(String), DataType: String, Features: []string{"f1"}},
		},
		Rows: []PersistRow{{Key: []string{"decoded-1"}, Values: []Values{
			Float32Values(0.5, -2), BoolVectors([]bool{true, false, true}), StringValues("héllo"),
		}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.RetrieveDecoded(ctx, RetrieveRequest{
		Entity: "user", KeysSchema: []string{"user_id"}, Keys: Keys("decoded-1", "decoded-nobody"),
		FeatureGroups: []FeatureGroup{
			{Label: fgLabel(FP32), Features: []string{"f1", "f0@DataTypeFP16"}},
			{Label: fgLabel(BoolVector), Features: []string{"f0"}},
			{Label: fgLabel(String), Features: []string{"f1"}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(res.Keys, res.KeysSchema); got != "[[decoded-1] [decoded-nobody]] [user_id]" {
		t.Errorf("keys %s", got)
	}
	want := map[string]string{
		fgLabel(FP32) + "/f1":              "[-2 0]",
		fgLabel(FP32) + "/f0@DataTypeFP16": "[0.5 0]",
		fgLabel(BoolVector) + "/f0":        "[1:0:1 0:0:0]", // the server's rendering (the reference's)
		fgLabel(String) + "/f1":            "[héllo ]",
	}
	for key, w := range want {
		fg, feature, _ := strings.Cut(key, "/")
		col, err := res.Group(fg).Column(feature)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(col) != w {
			t.Errorf("%s: %q, want %q", key, col, w)
		}
	}
	if _, err := res.Group(fgLabel(FP32)).Column("nope"); !errors.Is(err, ErrNoSuchFeature) {
		t.Errorf("unknown feature: %v", err)
	}
}

func TestQuantizedRetrieval(t *testing.T) {
	s := needServer(t)
	c := dial(t, s)
	ctx := context.Background()
	err := c.Persist(ctx, PersistRequest{
		Entity: "user",
		Groups: []PersistGroup{
			{Label: fgLabel(FP32), DataType: FP32, Features: []string{"f0", "f1"}},
			{Label: fgLabel(FP64Vector), DataType: FP64Vector, Features: []string{"f0"}},
		},
		Rows: []PersistRow{{Key: []string{"quant-1"}, Values: []Values{
			FloatValues(0.1, 300), FloatVectors([]float64{1.5, -0.1, 70000}),
		}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Retrieve(ctx, RetrieveRequest{
		Entity: "user", Keys: Keys("quant-1"),
		FeatureGroups: []FeatureGroup{
			{Label: fgLabel(FP32), Features: []string{"f0", "f0@DataTypeFP16", "f0@DataTypeFP8E4M3", "f1@DataTypeFP8E5M2"}},
			{Label: fgLabel(FP64Vector), Features: []string{"f0@DataTypeFP16Vector", "f0@DataTypeFP32Vector"}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	g := res.Group(fgLabel(FP32))
	wants := []struct {
		feature string
		dt      DataType
		value   float32
	}{
		{"f0@DataTypeFP16", FP16, fp16ToFloat32(0x2e66)},     // 0.0999755859375
		{"f0@DataTypeFP8E4M3", FP8E4M3, e4m3ToFloat32(0x1d)}, // 0.1015625
		{"f1@DataTypeFP8E5M2", FP8E5M2, 320},                 // 256, 320, 384: steps of 64 there
	}
	if v, err := g.Float32s("f0"); err != nil || v[0] != float32(0.1) {
		t.Errorf("f0: %v %v", v, err)
	}
	for _, w := range wants {
		col, err := g.Column(w.feature)
		if err != nil {
			t.Fatal(err)
		}
		v, err := col.Float32s()
		if col.DataType != w.dt || col.Label != strings.Split(w.feature, "@")[0] || err != nil || v[0] != w.value {
			t.Errorf("%s: %s %q %v %v, want %s %v", w.feature, col.DataType, col.Label, v, err, w.dt, w.value)
		}
	}
	// "f0" alone is ambiguous in the vector group: both columns are served as "f0".
	vg := res.Group(fgLabel(FP64Vector))
	if _, err := vg.Column("f0"); !errors.Is(err, ErrNoSuchFeature) {
		t.Errorf("ambiguous label: %v", err)
	}
	m16, err := vg.Float32Matrix("f0@DataTypeFP16Vector")
	if err != nil || fmt.Sprint(m16) != fmt.Sprint([][]float32{{1.5, fp16ToFloat32(0xae66), float32(math.Inf(1))}}) {
		t.Errorf("fp16 vector: %v %v", m16, err)
	}
	m32, err := vg.Float32Matrix("f0@DataTypeFP32Vector")
	if err != nil || fmt.Sprint(m32) != fmt.Sprint([][]float32{{1.5, -0.1, 70000}}) {
		t.Errorf("fp32 vector: %v %v", m32, err)
	}
}

func TestCompositeKeysInAnyOrder(t *testing.T) {
	s := needServer(t)
	c := dial(t, s)
	ctx := context.Background()
	g := []PersistGroup{{Label: "g", DataType: FP32, Features: []string{"x"}}}
	err := c.Persist(ctx, PersistRequest{Entity: "pair", KeysSchema: []string{"b", "a"}, Groups: g,
		Rows: []PersistRow{{Key: []string{"B1", "A1"}, Values: []Values{FloatValues(2.5)}}}})
	if err != nil {
		t.Fatal(err)
	}
	fgs := []FeatureGroup{{Label: "g", Features: []string{"x"}}}
	for _, req := range []RetrieveRequest{
		{Entity: "pair", KeysSchema: []string{"a", "b"}, Keys: [][]string{{"A1", "B1"}, {"B1", "A1"}}, FeatureGroups: fgs},
		{Entity: "pair", Keys: [][]string{{"A1", "B1"}, {"B1", "A1"}}, FeatureGroups: fgs}, // the entity's own order
	} {
		res, err := c.Retrieve(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		x, _ := res.Group("g").Float32s("x")
		if fmt.Sprint(x, res.Group("g").Status) != "[2.5 -1] [found missing]" {
			t.Errorf("keys_schema %v: %v %v", req.KeysSchema, x, res.Group("g").Status)
		}
	}
	_, err = c.Retrieve(ctx, RetrieveRequest{Entity: "pair", KeysSchema: []string{"a", "b"}, Keys: Keys("A1"), FeatureGroups: fgs})
	if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "key 0 has 1 values") {
		t.Errorf("narrow key: %v", err)
	}
}

func TestExpiredRowsReadAsDefaults(t *testing.T) {
	s := needServer(t)
	c := dial(t, s)
	ctx := context.Background()
	err := c.Persist(ctx, PersistRequest{Entity: "user",
		Groups: []PersistGroup{{Label: "short_lived", DataType: FP32, Features: []string{"x"}}},
		Rows:   []PersistRow{{Key: []string{"ttl-1"}, Values: []Values{FloatValues(9)}}}})
	if err != nil {
		t.Fatal(err)
	}
	req := RetrieveRequest{Entity: "user", Keys: Keys("ttl-1"), FeatureGroups: []FeatureGroup{{Label: "short_lived", Features: []string{"x"}}}}
	// The group's TTL is 1 s: poll until the row has expired (bounded), then look at it. The SQLite
	// store hides expired rows (Missing); a cache holding the expired block would say Expired.
	for start := time.Now(); ; {
		res, err := c.Retrieve(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		g := res.Group("short_lived")
		if g.Status[0] != Found {
			if x, _ := g.Float32s("x"); x[0] != -1 || (g.Status[0] != Missing && g.Status[0] != Expired) {
				t.Errorf("an expired row: %s %v, want the default -1", g.Status[0], x)
			}
			return
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("row still %s after 30 s", g.Status[0])
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestBatchesComeBackInRequestOrder(t *testing.T) {
	s := needServer(t)
	c := dial(t, s, WithBatchSize(7), WithConcurrency(3))
	ctx := context.Background()
	const n = 60
	rows := make([]PersistRow, n)
	for i := range rows {
		rows[i] = PersistRow{Key: []string{fmt.Sprintf("order-%d", i)}, Values: []Values{IntValues(int64(i), int64(-i))}}
	}
	// Persist is batched too: 60 rows in 9 requests.
	err := c.Persist(ctx, PersistRequest{Entity: "user", KeysSchema: []string{"user_id"},
		Groups: []PersistGroup{{Label: fgLabel(Int64), DataType: Int64, Features: []string{"f0", "f1"}}}, Rows: rows})
	if err != nil {
		t.Fatal(err)
	}
	// 150 keys: each persisted key twice (duplicates keep their rows) and a missing key every 5th.
	var keys []string
	var want []int64
	for i := range 150 {
		switch {
		case i%5 == 4:
			keys, want = append(keys, fmt.Sprintf("order-missing-%d", i)), append(want, 0)
		default:
			k := (i * 37) % n
			keys, want = append(keys, fmt.Sprintf("order-%d", k)), append(want, int64(k))
		}
	}
	res, err := c.Retrieve(ctx, RetrieveRequest{Entity: "user", Keys: Keys(keys...),
		FeatureGroups: []FeatureGroup{{Label: fgLabel(Int64), Features: []string{"f0"}}}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := res.Group(fgLabel(Int64)).Int64s("f0")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("values out of request order:\n got %v\nwant %v", got, want)
	}
	for i, k := range res.Keys {
		if k[0] != keys[i] {
			t.Fatalf("row %d is key %s, want %s", i, k[0], keys[i])
		}
		if st := res.Group(fgLabel(Int64)).Status[i]; (st == Missing) != (i%5 == 4) {
			t.Fatalf("row %d (%s): %s", i, keys[i], st)
		}
	}
	decoded, err := c.RetrieveDecoded(ctx, RetrieveRequest{Entity: "user", Keys: Keys(keys...),
		FeatureGroups: []FeatureGroup{{Label: fgLabel(Int64), Features: []string{"f0"}}}})
	if err != nil {
		t.Fatal(err)
	}
	col, _ := decoded.Group(fgLabel(Int64)).Column("f0")
	if fmt.Sprint(col) != fmt.Sprint(want) {
		t.Errorf("decoded values out of request order:\n got %v\nwant %v", col, want)
	}
}

func TestAuthRoles(t *testing.T) {
	s := needServer(t)
	ctx := context.Background()
	retrieve := RetrieveRequest{Entity: "user", Keys: Keys("auth-1"), FeatureGroups: []FeatureGroup{{Label: fgLabel(FP32), Features: []string{"f0"}}}}
	persist := PersistRequest{Entity: "user", Groups: []PersistGroup{{Label: fgLabel(FP32), DataType: FP32, Features: []string{"f0"}}},
		Rows: []PersistRow{{Key: []string{"auth-1"}, Values: []Values{FloatValues(1)}}}}

	both := dial(t, s) // a reader for retrieves and a writer for persists
	if err := both.Persist(ctx, persist); err != nil {
		t.Fatal(err)
	}
	if _, err := both.Retrieve(ctx, retrieve); err != nil {
		t.Fatal(err)
	}

	reader := dial(t, s, WithCredentials(readerID, readerToken))
	err := reader.Persist(ctx, persist)
	if !errors.Is(err, ErrPermissionDenied) || status.Code(err) != codes.PermissionDenied {
		t.Errorf("a reader persisting: %v", err)
	}
	writer := dial(t, s, WithCredentials(writerID, writerToken))
	if _, err := writer.Retrieve(ctx, retrieve); !errors.Is(err, ErrPermissionDenied) {
		t.Errorf("a writer retrieving: %v", err)
	}
	for name, opt := range map[string]Option{
		"bad token":      WithCredentials(readerID, randomToken()),
		"unknown caller": WithCredentials("stranger", readerToken),
		"writer's token": WithCredentials(readerID, writerToken),
	} {
		c := dial(t, s, opt)
		_, err := c.Retrieve(ctx, retrieve)
		var e *Error
		if !errors.Is(err, ErrUnauthenticated) || !errors.As(err, &e) || e.Code != codes.Unauthenticated || e.Attempts != 1 {
			t.Errorf("%s: %v", name, err)
		}
	}
	anonymous, err := New(ctx, s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer anonymous.Close()
	if _, err := anonymous.Retrieve(ctx, retrieve); !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), CallerHeader) {
		t.Errorf("no credentials: %v", err)
	}
}

func TestServerErrorsAreSentinels(t *testing.T) {
	s := needServer(t)
	c := dial(t, s)
	ctx := context.Background()
	fgs := []FeatureGroup{{Label: fgLabel(FP32), Features: []string{"f0"}}}
	cases := []struct {
		name string
		req  RetrieveRequest
		want error
		text string
	}{
		{"unknown entity", RetrieveRequest{Entity: "nope", Keys: Keys("k"), FeatureGroups: fgs}, ErrNotFound, "nope"},
		{"unknown group", RetrieveRequest{Entity: "user", Keys: Keys("k"), FeatureGroups: []FeatureGroup{{Label: "nope", Features: []string{"f0"}}}}, ErrNotFound, "nope"},
		{"unknown feature", RetrieveRequest{Entity: "user", Keys: Keys("k"), FeatureGroups: []FeatureGroup{{Label: fgLabel(FP32), Features: []string{"zz"}}}}, ErrNotFound, "zz"},
		{"quantizing upwards", RetrieveRequest{Entity: "user", Keys: Keys("k"), FeatureGroups: []FeatureGroup{{Label: fgLabel(FP16), Features: []string{"f0@DataTypeFP32"}}}}, ErrInvalidArgument, "FP32"},
	}
	for _, tc := range cases {
		_, err := c.Retrieve(ctx, tc.req)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("%s: %v, want %v naming %q", tc.name, err, tc.want, tc.text)
		}
	}
	// A value the server refuses (FP16 overflow), and one the client refuses before sending.
	fp16 := []PersistGroup{{Label: fgLabel(FP16), DataType: FP16, Features: []string{"f0"}}}
	err := c.Persist(ctx, PersistRequest{Entity: "user", Groups: fp16, Rows: []PersistRow{{Key: []string{"k"}, Values: []Values{FloatValues(1e6)}}}})
	if !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("fp16 overflow: %v", err)
	}
	int8g := []PersistGroup{{Label: fgLabel(Int8), DataType: Int8, Features: []string{"f0", "f1"}}}
	err = c.Persist(ctx, PersistRequest{Entity: "user", Groups: int8g, Rows: []PersistRow{{Key: []string{"k"}, Values: []Values{IntValues(1, 300)}}}})
	var e *Error
	if !errors.Is(err, ErrInvalidArgument) || errors.As(err, &e) || !strings.Contains(err.Error(), "feature f1: 300 is out of range for DataTypeInt8") {
		t.Errorf("int8 300: %v", err)
	}
}

func TestDeadlineOnTheRealServer(t *testing.T) {
	s := needServer(t)
	c := dial(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	_, err := c.Retrieve(ctx, RetrieveRequest{Entity: "user", Keys: Keys("k"), FeatureGroups: []FeatureGroup{{Label: fgLabel(FP32), Features: []string{"f0"}}}})
	if !errors.Is(err, ErrDeadlineExceeded) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("expired context: %v", err)
	}
}
