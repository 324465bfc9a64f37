package client

// The golden vectors of tests/vectors/ (shared with the Rust core and the Python package; their bytes
// come from an independent encoder): every served cell a block case lists (features_hex) must decode
// to the case's values, the FP8/FP16/BF16/Q8 codec cases to theirs, and every retrieval-time
// quantization's output bytes to the correctly rounded source value (Q8: the per-vector rule).

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// repoRoot is the repository's root: the first parent of the working directory holding proto/.
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "proto", "retrieve.proto")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no repository root (a parent with proto/retrieve.proto) above the working directory")
		}
		dir = parent
	}
}

type vectorCase map[string]json.RawMessage

func loadVectors(t *testing.T, file string) []vectorCase {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), "tests", "vectors", file))
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	var cases []vectorCase
	if err := dec.Decode(&cases); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return cases
}

func (c vectorCase) str(key string) string {
	var s string
	_ = json.Unmarshal(c[key], &s)
	return s
}

func (c vectorCase) kind() string {
	if k := c.str("kind"); k != "" {
		return k
	}
	return "block"
}

// values is a JSON list of numbers (kept exact), booleans, strings and the float words "nan", "-nan",
// "inf", "-inf".
func (c vectorCase) values(key string) []any {
	dec := json.NewDecoder(strings.NewReader(string(c[key])))
	dec.UseNumber()
	var out []any
	if err := dec.Decode(&out); err != nil {
		panic(fmt.Sprintf("%s: %v", key, err))
	}
	return out
}

func (c vectorCase) ints(key string) []int {
	if c[key] == nil {
		return nil
	}
	var out []int
	if err := json.Unmarshal(c[key], &out); err != nil {
		panic(err)
	}
	return out
}

func hexBytes(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatalf("hex %q: %v", s, err)
	}
	return b
}

// expectFloat reads an expected float: a number or one of the float words.
func expectFloat(v any) float64 {
	switch x := v.(type) {
	case json.Number:
		f, err := strconv.ParseFloat(string(x), 64)
		if err != nil {
			panic(err)
		}
		return f
	case string:
		switch x {
		case "nan":
			return math.NaN()
		case "-nan":
			return math.Copysign(math.NaN(), -1)
		case "inf":
			return math.Inf(1)
		case "-inf":
			return math.Inf(-1)
		}
	case bool:
		if x {
			return 1
		}
		return 0
	}
	panic(fmt.Sprintf("not a float: %#v", v))
}

// sameFloat is bit equality, except that any two NaNs of the same sign are equal.
func sameFloat(got, want float64) bool {
	if math.IsNaN(want) {
		return math.IsNaN(got) && math.Signbit(got) == math.Signbit(want)
	}
	return math.Float64bits(got) == math.Float64bits(want)
}

// same compares one decoded value with its expectation.
func same(got, want any) bool {
	switch g := got.(type) {
	case float32:
		return sameFloat(float64(g), float64(float32(expectFloat(want))))
	case float64:
		return sameFloat(g, expectFloat(want))
	case bool:
		if b, ok := want.(bool); ok {
			return g == b
		}
		return g == (expectFloat(want) != 0)
	case string:
		return g == want
	case uint64:
		return fmt.Sprint(g) == fmt.Sprint(want)
	default: // the narrower ints
		return fmt.Sprint(g) == fmt.Sprint(want)
	}
}

// flatten turns a Column.Values result (a slice or a slice of slices) into one list.
func flatten(v any) []any {
	var out []any
	var walk func(rv reflect.Value)
	walk = func(rv reflect.Value) {
		if rv.Kind() == reflect.Slice {
			for i := range rv.Len() {
				walk(rv.Index(i))
			}
			return
		}
		out = append(out, rv.Interface())
	}
	walk(reflect.ValueOf(v))
	return out
}

// cellColumn is a one-row Column holding cell, as Retrieve would build it.
func cellColumn(t *testing.T, dt DataType, vl int, cell []byte) *Column {
	t.Helper()
	if err := checkCell(dt, vl, cell); err != nil {
		t.Fatalf("%s cell %x (vector length %d) refused: %v", dt, cell, vl, err)
	}
	c := &Column{Label: "f", Requested: "f", DataType: dt, VectorLength: vl, group: "g"}
	c.reserve(1)
	if err := c.add(cell); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestGoldenBlockCells(t *testing.T) {
	covered := map[DataType]int{}
	for _, file := range []string{"psdb.json", "expiry.json", "fp8.json", "embeddings.json"} {
		for _, c := range loadVectors(t, file) {
			if c.kind() != "block" || c["error"] != nil {
				continue // stored-block and refusal cases are the server's, not the client's
			}
			name := file + ": " + c.str("name")
			dt, err := ParseDataType(c.str("data_type"))
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			want := c.values("values")
			if c["decoded"] != nil {
				want = c.values("decoded")
			}
			vls := c.ints("vector_lengths")
			var got []any
			for f, h := range c.values("features_hex") {
				vl := 0
				if dt.IsVector() {
					vl = vls[f]
				}
				col := cellColumn(t, dt, vl, hexBytes(t, h.(string)))
				got = append(got, flatten(col.Values())...)
			}
			if len(got) != len(want) {
				t.Errorf("%s: %d values decoded, want %d", name, len(got), len(want))
				continue
			}
			for i := range got {
				if !same(got[i], want[i]) {
					t.Errorf("%s: value %d = %v (%T), want %v", name, i, got[i], got[i], want[i])
				}
			}
			covered[dt]++
		}
	}
	for dt := FP8E5M2; dt < numDataTypes; dt++ {
		if covered[dt] == 0 {
			t.Errorf("no golden block case of %s", dt)
		}
	}
}

func TestGoldenCodecs(t *testing.T) {
	n := 0
	for _, c := range append(loadVectors(t, "fp8.json"), loadVectors(t, "embeddings.json")...) {
		if c.kind() != "codec" {
			continue
		}
		codes := hexBytes(t, c.str("hex"))
		var got []float32
		switch c.str("codec") {
		case "e4m3":
			for _, b := range codes {
				got = append(got, e4m3ToFloat32(b))
			}
		case "e5m2":
			for _, b := range codes {
				got = append(got, e5m2ToFloat32(b))
			}
		case "fp16":
			for i := 0; i < len(codes); i += 2 {
				got = append(got, fp16ToFloat32(uint16(codes[i])|uint16(codes[i+1])<<8))
			}
		case "bf16":
			for i := 0; i < len(codes); i += 2 {
				got = append(got, bf16ToFloat32(uint16(codes[i])|uint16(codes[i+1])<<8))
			}
		case "q8": // one vector: its cell
			col := cellColumn(t, Q8Vector, len(codes)-4, codes)
			m, err := col.Float32Matrix()
			if err != nil {
				t.Fatal(err)
			}
			got = m[0]
		default:
			t.Fatalf("%s: unknown codec %q", c.str("name"), c.str("codec"))
		}
		want := c.values("decoded")
		if len(got) != len(want) {
			t.Fatalf("%s: %d values for %d", c.str("name"), len(got), len(want))
		}
		for i := range got {
			if !same(got[i], want[i]) {
				t.Errorf("%s: code %d = %v, want %v", c.str("name"), i, got[i], want[i])
			}
		}
		n++
	}
	if n == 0 {
		t.Fatal("no codec cases")
	}
}

// quantizeTarget: how a float32 rounds to a target type (docs/formats.md): to nearest, ties to the
// even code; E4M3 has no Inf (anything beyond 464, the midpoint above its max 448, is NaN); E5M2 and
// FP16 round from their overflow midpoints (61440, 65520) to Inf.
type quantizeTarget struct {
	codes    int
	decode   func(code int) float32
	overflow float64
	overNaN  bool
}

var quantizeTargets = map[DataType]quantizeTarget{
	FP16: {1 << 16, func(c int) float32 { return fp16ToFloat32(uint16(c)) }, 65520, false},
	// BF16 rounds to Inf from the midpoint between its largest value (0x7F7F) and 2^128.
	BF16:    {1 << 16, func(c int) float32 { return bf16ToFloat32(uint16(c)) }, float64(math.Float32frombits(0x7F7F8000)), false},
	FP8E4M3: {1 << 8, func(c int) float32 { return e4m3ToFloat32(uint8(c)) }, 464, true},
	FP8E5M2: {1 << 8, func(c int) float32 { return e5m2ToFloat32(uint8(c)) }, 61440, false},
}

// rounded is what x becomes in target t, worked out from t's own code table.
func (q quantizeTarget) rounded(x float32) float64 {
	xf := float64(x)
	switch {
	case math.IsNaN(xf):
		return math.NaN()
	case math.Abs(xf) > q.overflow || (math.Abs(xf) == q.overflow && !q.overNaN) || math.IsInf(xf, 0):
		if q.overNaN {
			return math.NaN()
		}
		return math.Copysign(math.Inf(1), xf)
	}
	best, bestCode := math.Inf(1), -1
	for c := range q.codes {
		v := float64(q.decode(c))
		if math.IsNaN(v) || math.IsInf(v, 0) || math.Signbit(v) != math.Signbit(xf) {
			continue
		}
		d := math.Abs(v - xf)
		if d < best || (d == best && c%2 == 0 && bestCode%2 == 1) {
			best, bestCode = d, c
		}
	}
	return float64(q.decode(bestCode))
}

func TestGoldenQuantizedCells(t *testing.T) {
	n := 0
	for _, c := range append(loadVectors(t, "quantize.json"), loadVectors(t, "embeddings.json")...) {
		if c.kind() != "quantize" || c["error"] != nil {
			continue // refused pairs: the server's rule
		}
		name := c.str("name")
		from, err1 := ParseDataType(c.str("from"))
		to, err2 := ParseDataType(c.str("to"))
		if err1 != nil || err2 != nil {
			t.Fatalf("%s: %v %v", name, err1, err2)
		}
		src, out := hexBytes(t, c.str("src_hex")), hexBytes(t, c.str("hex"))
		count := (len(src) - from.cellPrefix()) / from.ElementSize()
		vl := 0
		if to.IsVector() {
			vl = count
		}
		if !to.IsVector() && count != 1 {
			// Scalar cases list one cell per value: split the bytes into cells.
			for i := range count {
				checkQuantized(t, name, from, to, src[i*from.ElementSize():(i+1)*from.ElementSize()],
					out[i*to.ElementSize():(i+1)*to.ElementSize()], 0)
			}
		} else {
			checkQuantized(t, name, from, to, src, out, vl)
		}
		n++
	}
	if n == 0 {
		t.Fatal("no quantize cases")
	}
}

func checkQuantized(t *testing.T, name string, from, to DataType, src, out []byte, vl int) {
	t.Helper()
	srcVL := 0
	if from.IsVector() {
		srcVL = vl
	}
	source := flatten(cellColumn(t, from, srcVL, src).Values())
	got := flatten(cellColumn(t, to, vl, out).Values())
	if len(got) != len(source) {
		t.Fatalf("%s: %d values from %d", name, len(got), len(source))
	}
	if to == Q8Vector {
		checkQ8(t, name, source, got)
		return
	}
	for i := range got {
		var s float32 // every conversion goes through float32 first
		switch v := source[i].(type) {
		case float64:
			s = float32(v)
		case float32:
			s = v
		}
		g := float64(got[i].(float32))
		want := float64(s)
		if q, ok := quantizeTargets[to.Scalar()]; ok {
			want = q.rounded(s)
		}
		if !(math.IsNaN(want) && math.IsNaN(g)) && math.Float64bits(g) != math.Float64bits(want) {
			t.Errorf("%s: value %d: %v became %v, want %v", name, i, s, g, want)
		}
	}
}

// checkQ8 checks a Q8 cell's values against the rule applied to the float32 source values: scale =
// max|x| / 127 over the finite values, code = x / scale rounded half to even (±Inf → ±127, NaN → NaN),
// value = code × scale; a scale of 0 gives zeros.
func checkQ8(t *testing.T, name string, source, got []any) {
	t.Helper()
	xs := make([]float32, len(source))
	var top float32
	for i, v := range source {
		switch x := v.(type) {
		case float64:
			xs[i] = float32(x)
		case float32:
			xs[i] = x
		}
		if a := float32(math.Abs(float64(xs[i]))); !math.IsInf(float64(a), 0) && !math.IsNaN(float64(a)) && a > top {
			top = a
		}
	}
	scale := top / 127
	for i, x := range xs {
		var code float64
		switch {
		case math.IsNaN(float64(x)):
			code = math.NaN()
		case scale == 0 && math.IsInf(float64(x), 0):
			code = math.Copysign(127, float64(x))
		case scale == 0:
			code = 0
		default:
			code = math.RoundToEven(math.Max(-127, math.Min(127, float64(x/scale))))
		}
		want := float32(math.NaN())
		if !math.IsNaN(code) {
			want = float32(code) * scale
		}
		g := got[i].(float32)
		if !(math.IsNaN(float64(want)) && math.IsNaN(float64(g))) && math.Float32bits(g) != math.Float32bits(want) {
			t.Errorf("%s: value %d: %v became %v, want %v (scale %v)", name, i, x, g, want, scale)
		}
	}
}

func TestQ8CodesAndExtensionTypes(t *testing.T) {
	cell := []byte{0x00, 0x00, 0x00, 0x40, 0x7f, 0x80, 0xc1} // scale 2; codes 127, -128 (NaN), -63
	col := cellColumn(t, Q8Vector, 3, cell)
	codes, scales, err := col.Q8Codes()
	if err != nil || fmt.Sprint(codes, scales) != "[[127 -128 -63]] [2]" {
		t.Fatalf("Q8Codes: %v %v %v", codes, scales, err)
	}
	m, err := col.Float32Matrix()
	if err != nil || m[0][0] != 254 || !math.IsNaN(float64(m[0][1])) || m[0][2] != -126 {
		t.Fatalf("Float32Matrix: %v %v", m, err)
	}
	if _, _, err := cellColumn(t, FP32Vector, 1, []byte{0, 0, 0, 0}).Q8Codes(); err == nil {
		t.Fatal("Q8Codes of an FP32Vector")
	}
	if err := checkCell(Q8Vector, 3, cell[:6]); err == nil {
		t.Fatal("a Q8 cell without its last code was accepted")
	}
	for _, c := range []struct {
		name string
		want DataType
	}{{"q8", Q8Vector}, {"DataTypeQ8Vector", Q8Vector}, {"bf16", BF16}, {"BF16Vector", BF16Vector}} {
		if got, err := ParseDataType(c.name); err != nil || got != c.want {
			t.Errorf("ParseDataType(%q) = %v, %v", c.name, got, err)
		}
	}
	if BF16 != 31 || BF16Vector != 32 || Q8Vector != 33 || !Q8Vector.IsVector() || BF16.IsVector() ||
		!BF16Vector.IsExtension() || BoolVector.IsExtension() || BF16Vector.Scalar() != BF16 || Q8Vector.CellSize(8) != 12 {
		t.Fatal("extension type numbers and shapes")
	}
}
