// Command goformat writes tests/vectors/decoded_format.json: the strings the reference's
// RetrieveDecodedResult makes of cells of every data type, computed with Go's own fmt and strconv
// as the reference calls them (bharatmlstack-onfs-facts.md §8.5), float digits as its go1.22.8
// toolchain picks them (exact.go explains why and checks them against the installed Go):
//
//   - a scalar becomes fmt.Sprintf("%v", v) of the decoded Go value: float64 for FP64, float32 for
//     FP32, FP16 and both FP8 formats, the sized Go integer for the integer types, bool, string;
//   - a vector's elements are joined with ":": floats as strconv.FormatFloat(x, 'f', -1, 32) (64 for
//     FP64), integers in decimal, bools as "1"/"0", strings as they are.
//
// With -sweep it also writes tests/vectors/decoded_format_sweep.txt: FNV-1a 64 hashes of the 'g'
// (%v) and shortest 'f' strings of every float32 bit pattern (256 chunks, by the top byte) and of
// every binary16 code, so a test can compare a formatter with Go over all of them without 2^32 strings
// on disk. The low-precision codes are decoded here from the formats' definitions (facts file §6).
//
//	cd tests/vectors/go_format && go run . [-sweep]
package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"hash/fnv"
	"math"
	"math/big"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// Case is one cell: its response bytes (`hex`, as RetrieveFeatures returns them) and the string
// RetrieveDecodedResult returns for it (`text`). Schema: tests/vectors/README.md, kind "render".
type Case struct {
	Kind          string `json:"kind"`
	Name          string `json:"name"`
	DataType      string `json:"data_type"`
	VectorLengths []int  `json:"vector_lengths,omitempty"`
	Hex           string `json:"hex"`
	Text          string `json:"text"`
}

var cases []Case

func add(name, dataType string, vectorLen int, cell []byte, text string) {
	c := Case{Kind: "render", Name: name, DataType: dataType, Hex: hex.EncodeToString(cell), Text: text}
	if vectorLen > 0 {
		c.VectorLengths = []int{vectorLen}
	}
	cases = append(cases, c)
}

// ---- cells ----

func f32Cell(xs ...float32) []byte {
	out := make([]byte, 0, 4*len(xs))
	for _, x := range xs {
		out = binary.LittleEndian.AppendUint32(out, math.Float32bits(x))
	}
	return out
}

func f64Cell(xs ...float64) []byte {
	out := make([]byte, 0, 8*len(xs))
	for _, x := range xs {
		out = binary.LittleEndian.AppendUint64(out, math.Float64bits(x))
	}
	return out
}

// ---- low-precision decoders (facts file §6.2, §6.3; binary16 is IEEE 754) ----

func f16Value(h uint16) float32 {
	sign := float64(1)
	if h&0x8000 != 0 {
		sign = -1
	}
	e, m := int(h>>10)&0x1F, float64(h&0x3FF)
	switch {
	case e == 31 && m == 0:
		return float32(math.Inf(int(sign)))
	case e == 31:
		return float32(math.NaN())
	case e == 0:
		return float32(sign * math.Ldexp(m, -24))
	default:
		return float32(sign * math.Ldexp(1024+m, e-25))
	}
}

func e4m3Value(b byte) float32 {
	sign := float64(1)
	if b&0x80 != 0 {
		sign = -1
	}
	if b&0x7F == 0x7F {
		return float32(math.NaN())
	}
	e, m := int(b>>3)&0xF, float64(b&7)
	if e == 0 {
		return float32(sign * math.Ldexp(m, -9))
	}
	return float32(sign * math.Ldexp(8+m, e-10))
}

func e5m2Value(b byte) float32 {
	sign := float64(1)
	if b&0x80 != 0 {
		sign = -1
	}
	e, m := int(b>>2)&0x1F, float64(b&3)
	switch {
	case e == 31 && m == 0:
		return float32(math.Inf(int(sign)))
	case e == 31:
		return float32(math.NaN())
	case e == 0:
		return float32(sign * math.Ldexp(m, -16))
	default:
		return float32(sign * math.Ldexp(4+m, e-17))
	}
}

// ---- the reference's renderings ----

// scalar is the reference's fmt.Sprintf("%v", v); for a float that is FormatFloat(v, 'g', -1, bits),
// which goFloat gives as go1.22.8 does (exact.go).
func scalar(v any) string {
	switch x := v.(type) {
	case float32:
		return goFloat(float64(x), 'g', 32)
	case float64:
		return goFloat(x, 'g', 64)
	}
	return fmt.Sprintf("%v", v)
}

func fvec32(xs []float32) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = goFloat(float64(x), 'f', 32)
	}
	return strings.Join(parts, ":")
}

func fvec64(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = goFloat(x, 'f', 64)
	}
	return strings.Join(parts, ":")
}

// ---- float tables ----

// isTie reports whether x's exact value lies halfway between two decimals of as many digits as its
// shortest form, so that picking the shortest digits needs a tie rule (Go: to even).
func isTie(x float64, bits int) bool {
	if x == 0 || math.IsInf(x, 0) || math.IsNaN(x) {
		return false
	}
	short := strconv.FormatFloat(x, 'e', -1, bits)
	exact := new(big.Float).SetPrec(2000).SetFloat64(x).Text('e', 1200)
	sm, se, _ := strings.Cut(strings.TrimPrefix(short, "-"), "e")
	em, ee, _ := strings.Cut(strings.TrimPrefix(exact, "-"), "e")
	if se != ee {
		return false
	}
	sd := strings.Replace(sm, ".", "", 1)
	ed := strings.TrimRight(strings.Replace(em, ".", "", 1), "0")
	return len(ed) == len(sd)+1 && ed[len(sd)] == '5'
}

// ties finds n values (float32 when bits is 32) with a tie in their shortest digits: odd multiples
// of 2^q for q <= -2 end in a 5 one digit past the shortest form often enough.
func ties(r *rand.Rand, bits, n int) []float64 {
	var out []float64
	mant := 52
	if bits == 32 {
		mant = 23
	}
	for tries := 0; len(out) < n && tries < 10_000_000; tries++ {
		q := -2 - r.IntN(10)
		m := uint64(1)<<mant | r.Uint64N(uint64(1)<<mant) | 1
		x := math.Ldexp(float64(m), q)
		if len(out)%2 == 1 {
			x = -x
		}
		if isTie(x, bits) {
			out = append(out, x)
		}
	}
	return out
}

func float32Table(r *rand.Rand) []float32 {
	xs := []float32{
		0, float32(math.Copysign(0, -1)), float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)),
		math.MaxFloat32, -math.MaxFloat32, math.SmallestNonzeroFloat32, -math.SmallestNonzeroFloat32,
		math.Float32frombits(0x00800000), math.Float32frombits(0x007FFFFF), math.Float32frombits(0x00000002),
		1, -1, 0.1, 0.2, 0.3, 1.5, -2.5, 3.1415927, 100, 123456, 999999, 1e6, 1234567, 9999999, 1938266000,
		99999.99, 0.0001, 0.00012345, 0.00001, 0.000099999, 16777216, 16777217, 33554430,
		2720517.25, -2.42578125,
	}
	// Powers of ten and their neighbours: the %e / %f switch sits at decimal exponents -4 and 6.
	for k := -45; k <= 38; k++ {
		p, _ := strconv.ParseFloat("1e"+strconv.Itoa(k), 32)
		f := float32(p)
		xs = append(xs, f, math.Nextafter32(f, 0), math.Nextafter32(f, float32(math.Inf(1))), -f)
		n, _ := strconv.ParseFloat("9.5e"+strconv.Itoa(k), 32)
		xs = append(xs, float32(n))
	}
	// Every power of two (the shortest-digit search treats them specially), subnormals included.
	for e := -149; e <= 127; e++ {
		xs = append(xs, float32(math.Ldexp(1, e)))
	}
	for _, t := range ties(r, 32, 60) {
		xs = append(xs, float32(t))
	}
	for i := 0; i < 1000; i++ {
		xs = append(xs, math.Float32frombits(r.Uint32()))
	}
	for i := 0; i < 300; i++ { // values of everyday magnitudes and few decimals
		scale := math.Pow(10, float64(r.IntN(17)-8))
		xs = append(xs, float32(math.Round(r.NormFloat64()*1e4)/1e4*scale))
	}
	return xs
}

func float64Table(r *rand.Rand) []float64 {
	xs := []float64{
		0, math.Copysign(0, -1), math.NaN(), math.Inf(1), math.Inf(-1),
		math.MaxFloat64, -math.MaxFloat64, math.SmallestNonzeroFloat64, -math.SmallestNonzeroFloat64,
		math.Float64frombits(0x0010000000000000), math.Float64frombits(0x000FFFFFFFFFFFFF),
		1, -1, 0.1, 0.2, 0.3, 0.1 + 0.2, 1.5, -2.5, math.Pi, -1e300, 1e300, 5e-324, 100, 123456, 999999,
		1e6, 1234567, 1938266000, 99999.99, 0.0001, 0.00001, 1 << 53, 1<<53 + 2, 2720517.25, -2.42578125,
		float64(float32(0.1)), float64(float32(3.1415927)),
	}
	for k := -324; k <= 308; k++ {
		p, _ := strconv.ParseFloat("1e"+strconv.Itoa(k), 64)
		xs = append(xs, p, math.Nextafter(p, 0), math.Nextafter(p, math.Inf(1)))
	}
	for e := -1074; e <= 1023; e++ {
		xs = append(xs, math.Ldexp(1, e))
	}
	xs = append(xs, ties(r, 64, 60)...)
	for i := 0; i < 1000; i++ {
		xs = append(xs, math.Float64frombits(r.Uint64()))
	}
	for i := 0; i < 300; i++ {
		scale := math.Pow(10, float64(r.IntN(17)-8))
		xs = append(xs, math.Round(r.NormFloat64()*1e4)/1e4*scale)
	}
	return xs
}

func floatCases(r *rand.Rand) {
	f32s := float32Table(r)
	for i, x := range f32s {
		add(fmt.Sprintf("fp32 #%d", i), "DataTypeFP32", 0, f32Cell(x), scalar(x))
	}
	f64s := float64Table(r)
	for i, x := range f64s {
		add(fmt.Sprintf("fp64 #%d", i), "DataTypeFP64", 0, f64Cell(x), scalar(x))
	}
	// Vectors: shortest 'f' (no exponent ever), 8 elements a cell, of every 3rd value of the float32
	// table (whose 'f' form is in the sweep for every pattern too) and every 6th of the float64 one.
	var v32 []float32
	for i := 0; i < len(f32s); i += 3 {
		if v32 = append(v32, f32s[i]); len(v32) == 8 {
			add(fmt.Sprintf("fp32 vector #%d", i), "DataTypeFP32Vector", 8, f32Cell(v32...), fvec32(v32))
			v32 = v32[:0]
		}
	}
	var v64 []float64
	for i := 0; i < len(f64s); i += 6 {
		if v64 = append(v64, f64s[i]); len(v64) == 8 {
			add(fmt.Sprintf("fp64 vector #%d", i), "DataTypeFP64Vector", 8, f64Cell(v64...), fvec64(v64))
			v64 = v64[:0]
		}
	}
	ex32 := []float32{2720517.25, -2.42578125, 1938266000, 1e6, 1e-5, float32(math.Ldexp(1, -12))}
	add("fp32 vector: issue examples", "DataTypeFP32Vector", len(ex32), f32Cell(ex32...), fvec32(ex32))
	ex64 := []float64{math.Pi, -1e300, 5e-324, 2720517.25}
	add("fp64 vector: issue examples", "DataTypeFP64Vector", len(ex64), f64Cell(ex64...), fvec64(ex64))
	add("fp32 vector of one", "DataTypeFP32Vector", 1, f32Cell(1e21), fvec32([]float32{1e21}))
	add("fp64 vector of one", "DataTypeFP64Vector", 1, f64Cell(1e21), fvec64([]float64{1e21}))

	// FP16: every 61st code (a prime stride crosses every exponent) and the edges, each as a scalar
	// (the float32 it decodes to, %v) and in 16-element vectors.
	var f16 []uint16
	for c := 0; c < 1<<16; c += 61 {
		f16 = append(f16, uint16(c))
	}
	f16 = append(f16, 0x0000, 0x8000, 0x0001, 0x03FF, 0x0400, 0x7BFF, 0x7C00, 0xFC00, 0x7E00, 0x3C00,
		0x2E66, 0x3555, 0xC000, 0x5640, 0x7BFE, 0x1400, 0x0200)
	var vec []uint16
	for i, c := range f16 {
		cell := binary.LittleEndian.AppendUint16(nil, c)
		add(fmt.Sprintf("fp16 code %04x", c), "DataTypeFP16", 0, cell, scalar(f16Value(c)))
		if vec = append(vec, c); len(vec) == 16 || i == len(f16)-1 {
			var cells []byte
			var vals []float32
			for _, v := range vec {
				cells = binary.LittleEndian.AppendUint16(cells, v)
				vals = append(vals, f16Value(v))
			}
			add(fmt.Sprintf("fp16 vector from code %04x", vec[0]), "DataTypeFP16Vector", len(vec), cells, fvec32(vals))
			vec = vec[:0]
		}
	}
	// FP8: every code of both formats, as scalars and in 16-element vectors.
	for _, f := range []struct {
		name, scalarType, vectorType string
		value                        func(byte) float32
	}{
		{"e4m3", "DataTypeFP8E4M3", "DataTypeFP8E4M3Vector", e4m3Value},
		{"e5m2", "DataTypeFP8E5M2", "DataTypeFP8E5M2Vector", e5m2Value},
	} {
		for c := 0; c < 256; c++ {
			add(fmt.Sprintf("%s code %02x", f.name, c), f.scalarType, 0, []byte{byte(c)}, scalar(f.value(byte(c))))
		}
		for c := 0; c < 256; c += 16 {
			cells := make([]byte, 16)
			vals := make([]float32, 16)
			for i := range cells {
				cells[i] = byte(c + i)
				vals[i] = f.value(cells[i])
			}
			add(fmt.Sprintf("%s vector from code %02x", f.name, c), f.vectorType, 16, cells, fvec32(vals))
		}
	}
}

// ---- integers, bools, strings ----

func intCases(r *rand.Rand) {
	type intType struct {
		name   string
		size   int
		signed bool
	}
	for _, t := range []intType{
		{"Int8", 1, true}, {"Int16", 2, true}, {"Int32", 4, true}, {"Int64", 8, true},
		{"Uint8", 1, false}, {"Uint16", 2, false}, {"Uint32", 4, false}, {"Uint64", 8, false},
	} {
		bits := uint(8 * t.size)
		mask := uint64(math.MaxUint64) >> (64 - bits)
		raws := []uint64{0, 1, mask, mask >> 1, mask>>1 + 1, 2, 10, 100, 1_000_000 & mask}
		for i := 0; i < 12; i++ {
			raws = append(raws, r.Uint64()&mask)
		}
		cell := func(raw uint64) []byte {
			b := binary.LittleEndian.AppendUint64(nil, raw)
			return b[:t.size]
		}
		text := func(raw uint64) string {
			if !t.signed {
				return strconv.FormatUint(raw, 10)
			}
			v := int64(raw<<(64-bits)) >> (64 - bits)
			return strconv.FormatInt(v, 10)
		}
		for _, raw := range raws {
			var v any // the sized Go value the reference's %v sees
			switch t.name {
			case "Int8":
				v = int8(raw)
			case "Int16":
				v = int16(raw)
			case "Int32":
				v = int32(raw)
			case "Int64":
				v = int64(raw)
			case "Uint8":
				v = uint8(raw)
			case "Uint16":
				v = uint16(raw)
			case "Uint32":
				v = uint32(raw)
			default:
				v = raw
			}
			add(fmt.Sprintf("%s %s", strings.ToLower(t.name), text(raw)), "DataType"+t.name, 0, cell(raw), scalar(v))
		}
		var cells []byte
		var parts []string
		for _, raw := range raws {
			cells = append(cells, cell(raw)...)
			parts = append(parts, text(raw))
		}
		add(strings.ToLower(t.name)+" vector", "DataType"+t.name+"Vector", len(raws), cells, strings.Join(parts, ":"))
		add(strings.ToLower(t.name)+" vector of one", "DataType"+t.name+"Vector", 1, cell(mask), text(mask))
	}
}

func boolCases() {
	add("bool true", "DataTypeBool", 0, []byte{1}, scalar(true))
	add("bool false", "DataTypeBool", 0, []byte{0}, scalar(false))
	for _, v := range [][]byte{{1}, {0}, {1, 0}, {0, 1, 1, 0, 1, 0, 0, 1, 1}, bytes.Repeat([]byte{1}, 17)} {
		parts := make([]string, len(v))
		for i, b := range v {
			parts[i] = "0"
			if b == 1 {
				parts[i] = "1"
			}
		}
		add(fmt.Sprintf("bool vector %x", v), "DataTypeBoolVector", len(v), v, strings.Join(parts, ":"))
	}
}

func stringCases() {
	for _, s := range []string{"", "a", "hello world", "héllo ✓", "a:b", "1e+06", "true", " spaced "} {
		add(fmt.Sprintf("string %q", s), "DataTypeString", 0, []byte(s), scalar(s))
	}
	for _, v := range [][]string{{"a", "bc"}, {"", ""}, {"x:y", "z"}, {"héllo", "", "✓✓"}, {"only"}} {
		var cell []byte
		for _, s := range v {
			cell = binary.LittleEndian.AppendUint16(cell, uint16(len(s)))
		}
		for _, s := range v {
			cell = append(cell, s...)
		}
		add(fmt.Sprintf("string vector %q", v), "DataTypeStringVector", len(v), cell, strings.Join(v, ":"))
	}
}

// ---- output ----

func writeCases(path string) error {
	var buf bytes.Buffer
	buf.WriteString("[\n")
	for i, c := range cases {
		var line bytes.Buffer
		enc := json.NewEncoder(&line)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(c); err != nil {
			return err
		}
		buf.Write(bytes.TrimRight(line.Bytes(), "\n"))
		if i < len(cases)-1 {
			buf.WriteString(",")
		}
		buf.WriteString("\n")
	}
	buf.WriteString("]\n")
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// sweepChunk hashes the %v ('g') and shortest 'f' strings of the 2^24 float32 patterns whose top
// byte is hi, each string followed by a newline.
func sweepChunk(hi uint32) (g, f uint64) {
	hg, hf := fnv.New64a(), fnv.New64a()
	wg, wf := bufio.NewWriterSize(hg, 1<<16), bufio.NewWriterSize(hf, 1<<16)
	buf := make([]byte, 0, 64)
	for lo := uint32(0); lo < 1<<24; lo++ {
		x := float64(math.Float32frombits(hi<<24 | lo))
		if knownNewerGoDifference(x, 32) {
			fmt.Fprintf(wg, "%s\n", goFloat(x, 'g', 32))
			fmt.Fprintf(wf, "%s\n", goFloat(x, 'f', 32))
			continue
		}
		buf = append(strconv.AppendFloat(buf[:0], x, 'g', -1, 32), '\n')
		wg.Write(buf)
		buf = append(strconv.AppendFloat(buf[:0], x, 'f', -1, 32), '\n')
		wf.Write(buf)
	}
	wg.Flush()
	wf.Flush()
	return hg.Sum64(), hf.Sum64()
}

func writeSweep(path string) error {
	var g, f [256]uint64
	var wg sync.WaitGroup
	next := make(chan uint32, 256)
	for hi := uint32(0); hi < 256; hi++ {
		next <- hi
	}
	close(next)
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for hi := range next {
				g[hi], f[hi] = sweepChunk(hi)
			}
		}()
	}
	wg.Wait()
	h16g, h16f := fnv.New64a(), fnv.New64a()
	for c := 0; c < 1<<16; c++ {
		x := float64(f16Value(uint16(c)))
		fmt.Fprintf(h16g, "%s\n", goFloat(x, 'g', 32))
		fmt.Fprintf(h16f, "%s\n", goFloat(x, 'f', 32))
	}
	var out strings.Builder
	out.WriteString("# FNV-1a 64 of Go's FormatFloat(x, form, -1, 32) + \"\\n\" over every value, in bit-pattern order.\n")
	out.WriteString("# Made by tests/vectors/go_format (go run . -sweep). Columns: set, form, hash.\n")
	for hi := 0; hi < 256; hi++ {
		fmt.Fprintf(&out, "f32:%02x\tg\t%016x\n", hi, g[hi])
		fmt.Fprintf(&out, "f32:%02x\tf\t%016x\n", hi, f[hi])
	}
	fmt.Fprintf(&out, "f16\tg\t%016x\n", h16g.Sum64())
	fmt.Fprintf(&out, "f16\tf\t%016x\n", h16f.Sum64())
	return os.WriteFile(path, []byte(out.String()), 0o644)
}

// extensionCases: this project's BF16 and Q8 types (docs/embeddings.md). The reference has neither, so
// their strings are what it prints for the float32 values they decode to: %v for a BF16 scalar, shortest
// 'f' joined with ":" for vectors. BF16 decodes to its bits << 16; a Q8 cell is its float32 scale (LE)
// then int8 codes, each value float32(code) * scale (one float32 multiply), code -128 being NaN.
func extensionCases() {
	bf := []uint16{0x0000, 0x8000, 0x0001, 0x807F, 0x0080, 0x7F7F, 0x7F80, 0xFF80, 0x7FC0, 0x3F80, 0x3FC0,
		0x3DCD, 0xC2F7, 0x4B80, 0x4B81}
	for c := 0; c < 1<<16; c += 257 { // a prime stride crosses every exponent
		bf = append(bf, uint16(c))
	}
	var vec []uint16
	for i, c := range bf {
		add(fmt.Sprintf("bf16 code %04x", c), "DataTypeBF16", 0, binary.LittleEndian.AppendUint16(nil, c),
			scalar(bf16Value(c)))
		if vec = append(vec, c); len(vec) == 16 || i == len(bf)-1 {
			var cells []byte
			var vals []float32
			for _, v := range vec {
				cells = binary.LittleEndian.AppendUint16(cells, v)
				vals = append(vals, bf16Value(v))
			}
			add(fmt.Sprintf("bf16 vector from code %04x", vec[0]), "DataTypeBF16Vector", len(vec), cells, fvec32(vals))
			vec = vec[:0]
		}
	}
	scales := []float32{1, 2.0 / 127, 0.0078125, 1e-3, 3e38 / 127, 0, math.Float32frombits(0x00000123), 0.1}
	for _, scale := range scales {
		for c := 0; c < 256; c += 16 { // every code at every scale, 16 to a vector
			cell := binary.LittleEndian.AppendUint32(nil, math.Float32bits(scale))
			vals := make([]float32, 16)
			for j := range vals {
				code := int8(uint8(c + j))
				cell = append(cell, byte(code))
				vals[j] = q8Value(code, scale)
			}
			add(fmt.Sprintf("q8 vector, scale %08x, codes from %d", math.Float32bits(scale), int8(uint8(c))),
				"DataTypeQ8Vector", 16, cell, fvec32(vals))
		}
	}
}

// bf16Value is the float32 of bfloat16 bits: the top half of its bits.
func bf16Value(b uint16) float32 { return math.Float32frombits(uint32(b) << 16) }

// q8Value is a Q8 code's value at a vector's scale.
func q8Value(code int8, scale float32) float32 {
	if code == -128 {
		return float32(math.NaN())
	}
	return float32(code) * scale
}

func main() {
	sweep := flag.Bool("sweep", false, "also write decoded_format_sweep.txt (all 2^32 float32 patterns; minutes)")
	out := flag.String("out", "..", "directory to write into (tests/vectors)")
	flag.Parse()
	r := rand.New(rand.NewPCG(15, 2024))
	floatCases(r)
	intCases(r)
	boolCases()
	stringCases()
	extensionCases()
	if err := writeCases(filepath.Join(*out, "decoded_format.json")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if *sweep {
		if err := writeSweep(filepath.Join(*out, "decoded_format_sweep.txt")); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}
