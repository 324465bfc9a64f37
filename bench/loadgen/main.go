// Command loadgen drives RetrieveFeatures of a feature server (retrieve.proto) with keys drawn afresh for
// every request, for bench/realistic_bench.py (issue #17). h2load repeats one request body per run, which
// with an in-process cache in the server measures cache hits however large the data is; here every
// request names its own keys, drawn uniformly or by Zipf popularity from -entities entities.
//
// Two loads:
//   - closed loop (-rate 0): -inflight requests always outstanding, spread over -conns connections (the
//     server's saturation);
//   - open loop (-rate R): requests are due every 1/R s whatever the answers do, and each latency runs
//     from when its request was due, so a server (or a generator) that falls behind shows it in the
//     percentiles instead of slowing the load down (no coordinated omission).
//
// The i-th key is the string "u%06d" of entity id perm(i) = (A*i + B) mod N: rank i of the Zipf law is
// the entity perm(i), so the hot entities are spread over the key space (and over Redis Cluster slots)
// rather than being the first rows written. The keys of one request are distinct. Every -check-every-th
// answer (and the first, made before the load starts) is decoded and checked: one row per key in
// order, every FG found (status 0), 64 cells per FG. -watch name=pid,... reports the cores each of
// those process trees used in the measured window (/proc), so the server's CPU covers exactly the
// requests measured.
//
// With -persist it drives PersistFeatures instead: each request writes the drawn keys, every feature of
// each FG (fp32 values derived from the entity id), and a check is that the answer is the reference's
// success message.
//
// It prints one JSON object. With -serve-null ADDR it is instead a server that answers every call with
// the bytes of -null-response at once (what bench/realistic_bench.py measures the generator's own
// ceiling against).
package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"math"
	"math/rand"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/online-feature-store/online-feature-store/clients/go/pb/retrievepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

const (
	retrieveMethod = "/retrieve.FeatureService/RetrieveFeatures"
	persistMethod  = "/persist.FeatureService/PersistFeatures"
)

// persistOK is the serialized persist.Result of a successful persist (field 2, the reference's message).
var persistOK = append([]byte{2<<3 | 2, 27}, "Data Persisted Successfully"...)

// rawCodec sends and receives serialized messages as they are: requests are encoded here by hand and
// answers are decoded only when checked, so the generator's cost per call stays small.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	p, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
	}
	return *p, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	p, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
	}
	*p = append((*p)[:0], data...)
	return nil
}

func (rawCodec) Name() string { return "proto" }

type config struct {
	addr        string
	entity      string
	fgs         int
	features    int
	keySchema   string
	keys        int
	entities    int
	dist        string
	zipfS       float64
	permA       int64
	permB       int64
	seed        int64
	conns       int
	inflight    int
	rate        float64
	maxInflight int
	seconds     float64
	warmup      float64
	checkEvery  int
	timeout     time.Duration
	watch       map[string]int
	// persist sends persist.Query of the drawn keys (every feature of each FG) instead of retrieves.
	persist bool
}

func (c config) method() string {
	if c.persist {
		return persistMethod
	}
	return retrieveMethod
}

// result is the one line of output; bench/realistic_bench.py reads these names.
type result struct {
	Mode          string         `json:"mode"`
	Requests      int            `json:"requests"`
	Errors        map[string]int `json:"errors"`
	Seconds       float64        `json:"seconds"`
	RPS           float64        `json:"rps"`
	TargetRate    float64        `json:"target_rate"`
	P50ms         float64        `json:"p50_ms"`
	P90ms         float64        `json:"p90_ms"`
	P99ms         float64        `json:"p99_ms"`
	P999ms        float64        `json:"p999_ms"`
	MaxMs         float64        `json:"max_ms"`
	Checked       int            `json:"checked"`
	CheckFailures int            `json:"check_failures"`
	CheckError    string         `json:"check_error"`
	LateSends     int            `json:"late_sends"`
	CPUSeconds    float64        `json:"cpu_seconds"`
	CPUusPerCall  float64        `json:"cpu_us_per_call"`
	RequestBytes  int            `json:"request_bytes"`
	// Cores each watched process tree (-watch) used in the measured window.
	WatchedCores map[string]float64 `json:"watched_cores"`
}

func main() {
	var c config
	flag.StringVar(&c.addr, "addr", "127.0.0.1:8089", "server address")
	flag.StringVar(&c.entity, "entity", "user", "entity label")
	flag.IntVar(&c.fgs, "fgs", 1, "feature groups fg0..fg<n-1> per request")
	flag.IntVar(&c.features, "features", 64, "features f0..f<n-1> of each feature group")
	flag.StringVar(&c.keySchema, "key-schema", "user_id", "the key column's label")
	flag.IntVar(&c.keys, "keys", 100, "distinct keys per request")
	flag.IntVar(&c.entities, "entities", 1000, "entities to draw keys from (ids 0..N-1)")
	flag.StringVar(&c.dist, "dist", "uniform", "key popularity: uniform or zipf")
	flag.Float64Var(&c.zipfS, "zipf-s", 1.1, "exponent of the Zipf law (> 1)")
	flag.Int64Var(&c.permA, "perm-a", 1, "entity id of rank i: (A*i + B) mod N; A coprime to N")
	flag.Int64Var(&c.permB, "perm-b", 0, "see -perm-a")
	flag.Int64Var(&c.seed, "seed", 17, "random seed")
	flag.IntVar(&c.conns, "conns", 8, "HTTP/2 connections")
	flag.IntVar(&c.inflight, "inflight", 16, "closed loop: requests outstanding at all times")
	flag.Float64Var(&c.rate, "rate", 0, "open loop: requests per second (0: closed loop)")
	flag.IntVar(&c.maxInflight, "max-inflight", 512, "open loop: senders (requests outstanding at most)")
	flag.Float64Var(&c.seconds, "seconds", 5, "measured seconds")
	flag.Float64Var(&c.warmup, "warmup", 1, "unmeasured seconds before")
	flag.IntVar(&c.checkEvery, "check-every", 64, "decode and check the first and every n-th answer (0: none)")
	flag.DurationVar(&c.timeout, "timeout", 30*time.Second, "deadline of one call")
	flag.BoolVar(&c.persist, "persist", false, "persist the drawn keys (fp32 values) instead of retrieving them")
	watch := flag.String("watch", "", "name=pid,...: report the cores of these process trees in the window")
	serveNull := flag.String("serve-null", "", "serve canned answers on this address instead")
	nullResponse := flag.String("null-response", "", "-serve-null: file holding the serialized answer")
	flag.Parse()
	if *serveNull != "" {
		if err := runNull(*serveNull, *nullResponse); err != nil {
			log.Fatal(err)
		}
		return
	}
	var err error
	if c.watch, err = parseWatch(*watch); err != nil {
		log.Fatal(err)
	}
	if err := c.validate(); err != nil {
		log.Fatal(err)
	}
	r, err := run(c)
	if err != nil {
		log.Fatal(err)
	}
	out, err := json.Marshal(r)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(out))
}

func (c *config) validate() error {
	switch {
	case c.entities < 1:
		return fmt.Errorf("-entities %d: at least 1", c.entities)
	case c.keys < 1 || c.keys > c.entities:
		return fmt.Errorf("-keys %d: between 1 and -entities (%d)", c.keys, c.entities)
	case c.entities > 10_000_000:
		return fmt.Errorf("-entities %d: keys are u%%06d strings of at most 10,000,000 ids", c.entities)
	case c.dist != "uniform" && c.dist != "zipf":
		return fmt.Errorf("-dist %q: uniform or zipf", c.dist)
	case c.dist == "zipf" && c.zipfS <= 1:
		return fmt.Errorf("-zipf-s %g: must be > 1", c.zipfS)
	case c.dist == "zipf" && c.keys > c.entities/2:
		return fmt.Errorf("-keys %d: at most half of -entities (%d) with zipf (distinct draws)", c.keys, c.entities)
	case gcd(c.permA, int64(c.entities)) != 1:
		return fmt.Errorf("-perm-a %d is not coprime to -entities %d", c.permA, c.entities)
	case c.conns < 1 || c.inflight < 1 || c.maxInflight < 1:
		return errors.New("-conns, -inflight and -max-inflight must be at least 1")
	case c.seconds <= 0 || c.warmup < 0 || c.rate < 0:
		return errors.New("-seconds must be positive, -warmup and -rate not negative")
	}
	return nil
}

func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	if a < 0 {
		return -a
	}
	return a
}

// -- requests ---------------------------------------------------------------------------------------

func appendVarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

func appendField(b []byte, number int, payload []byte) []byte {
	b = appendVarint(b, uint64(number)<<3|2)
	b = appendVarint(b, uint64(len(payload)))
	return append(b, payload...)
}

// queryPrefix is a serialized retrieve.Query without its keys (fields 1-3); keys (field 4) are appended
// per request. With -persist, a persist.Query without its rows (entity, keys_schema, the FG schemas).
func queryPrefix(c config) []byte {
	if c.persist {
		b := appendField(nil, 1, []byte(c.entity))
		b = appendField(b, 2, []byte(c.keySchema))
		for g := range c.fgs {
			fg := appendField(nil, 1, fmt.Appendf(nil, "fg%d", g))
			for f := range c.features {
				fg = appendField(fg, 2, fmt.Appendf(nil, "f%d", f))
			}
			b = appendField(b, 3, fg)
		}
		return b
	}
	b := appendField(nil, 1, []byte(c.entity))
	for g := range c.fgs {
		fg := appendField(nil, 1, fmt.Appendf(nil, "fg%d", g))
		for f := range c.features {
			fg = appendField(fg, 2, fmt.Appendf(nil, "f%d", f))
		}
		b = appendField(b, 2, fg)
	}
	return appendField(b, 3, []byte(c.keySchema))
}

// appendKey appends field 4 of Query (a Keys message of one column) holding "u%06d" of id.
func appendKey(b []byte, id int64) []byte {
	var tmp [24]byte
	n := len(tmp)
	for v := id; ; v /= 10 {
		n--
		tmp[n] = byte('0' + v%10)
		if v < 10 && len(tmp)-n >= 6 {
			break
		}
	}
	n--
	tmp[n] = 'u'
	key := tmp[n:] // at most 21 bytes: every length below fits one varint byte
	b = append(b, 4<<3|2, byte(2+len(key)), 1<<3|2, byte(len(key)))
	return append(b, key...)
}

// appendRow appends field 4 of persist.Query (a Data message): the key "u%06d" of id and, per FG, its
// features' fp32 values (persist.Values.fp32_values, packed doubles) derived from id.
func appendRow(b []byte, c config, id int64) []byte {
	key := fmt.Appendf(nil, "u%06d", id)
	values := make([]byte, 0, 8*c.features)
	for f := range c.features {
		values = binary.LittleEndian.AppendUint64(values, math.Float64bits(float64(id%1000)+float64(f)/64))
	}
	fv := appendField(nil, 1, appendField(nil, 1, values)) // FeatureValues{values: Values{fp32_values}}
	data := appendField(nil, 1, key)
	for range c.fgs {
		data = appendField(data, 2, fv)
	}
	return appendField(b, 4, data)
}

// drawer draws the distinct entity ids of one request.
type drawer struct {
	c    config
	rng  *rand.Rand
	zipf *rand.Zipf
	seen map[int64]struct{}
	ids  []int64
}

func newDrawer(c config, stream int64) *drawer {
	rng := rand.New(rand.NewSource(c.seed*1_000_003 + stream))
	d := &drawer{c: c, rng: rng, seen: make(map[int64]struct{}, c.keys), ids: make([]int64, 0, c.keys)}
	if c.dist == "zipf" {
		// P(rank k) ∝ (1 + k)^-s for k in [0, N-1]
		d.zipf = rand.NewZipf(rng, c.zipfS, 1, uint64(c.entities-1))
	}
	return d
}

func (d *drawer) draw() []int64 {
	clear(d.seen)
	d.ids = d.ids[:0]
	n := int64(d.c.entities)
	for len(d.ids) < d.c.keys {
		var rank int64
		if d.zipf != nil {
			rank = int64(d.zipf.Uint64())
		} else {
			rank = d.rng.Int63n(n)
		}
		id := (d.c.permA%n*rank + d.c.permB) % n
		if _, dup := d.seen[id]; dup {
			continue
		}
		d.seen[id] = struct{}{}
		d.ids = append(d.ids, id)
	}
	return d.ids
}

// sender owns one connection's worth of state: a drawer and a request buffer.
type sender struct {
	c       config
	persist bool
	conn    *grpc.ClientConn
	prefix  []byte
	draw    *drawer
	buf     []byte
	answer  []byte
}

func (s *sender) request() ([]byte, []int64) {
	ids := s.draw.draw()
	b := append(s.buf[:0], s.prefix...)
	for _, id := range ids {
		if s.persist {
			b = appendRow(b, s.c, id)
		} else {
			b = appendKey(b, id)
		}
	}
	s.buf = b
	return b, ids
}

// -- checks -----------------------------------------------------------------------------------------

type checker struct {
	c      config
	every  int64
	n      atomic.Int64
	failed atomic.Int64
	done   atomic.Int64
	mu     sync.Mutex
	first  string
}

func (k *checker) due() bool {
	return k.every > 0 && k.n.Add(1)%k.every == 1%k.every
}

func (k *checker) check(answer []byte, ids []int64) {
	k.done.Add(1)
	if err := verify(k.c, answer, ids); err != nil {
		k.failed.Add(1)
		k.mu.Lock()
		if k.first == "" {
			k.first = err.Error()
		}
		k.mu.Unlock()
	}
}

func verify(c config, answer []byte, ids []int64) error {
	if c.persist {
		if !bytes.Equal(answer, persistOK) {
			return fmt.Errorf("persist answered %q", answer)
		}
		return nil
	}
	var res retrievepb.Result
	if err := proto.Unmarshal(answer, &res); err != nil {
		return fmt.Errorf("undecodable answer: %w", err)
	}
	if len(res.Rows) != len(ids) {
		return fmt.Errorf("%d rows for %d keys", len(res.Rows), len(ids))
	}
	for i, row := range res.Rows {
		want := fmt.Sprintf("u%06d", ids[i])
		if len(row.Keys) != 1 || row.Keys[0] != want {
			return fmt.Errorf("row %d is key %v, asked %s", i, row.Keys, want)
		}
		if len(row.Columns) != c.fgs*c.features {
			return fmt.Errorf("key %s: %d cells, want %d", want, len(row.Columns), c.fgs*c.features)
		}
		if len(row.FgStatus) != c.fgs {
			return fmt.Errorf("key %s: %d FG statuses, want %d", want, len(row.FgStatus), c.fgs)
		}
		for g, st := range row.FgStatus {
			if st != 0 {
				return fmt.Errorf("key %s: FG fg%d status %d (0 = stored data; is the data loaded?)", want, g, st)
			}
		}
	}
	return nil
}

// -- the loads --------------------------------------------------------------------------------------

type recorder struct {
	mu      sync.Mutex
	lat     []time.Duration
	errs    map[string]int
	from    time.Time // measured window
	to      time.Time
	lateCnt int
}

func (r *recorder) add(due, end time.Time, err error) {
	if due.Before(r.from) || !due.Before(r.to) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		code := status.Code(err)
		if code == codes.Unknown {
			r.errs[err.Error()]++
		} else {
			r.errs[code.String()]++
		}
		return
	}
	r.lat = append(r.lat, end.Sub(due))
}

func dial(c config) ([]*grpc.ClientConn, error) {
	conns := make([]*grpc.ClientConn, c.conns)
	for i := range conns {
		conn, err := grpc.NewClient(c.addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{}),
				grpc.MaxCallRecvMsgSize(256<<20), grpc.MaxCallSendMsgSize(256<<20)),
		)
		if err != nil {
			return nil, err
		}
		conn.Connect()
		conns[i] = conn
	}
	return conns, nil
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func run(c config) (result, error) {
	conns, err := dial(c)
	if err != nil {
		return result{}, err
	}
	defer func() {
		for _, conn := range conns {
			_ = conn.Close()
		}
	}()
	prefix := queryPrefix(c)
	k := &checker{c: c, every: int64(c.checkEvery)}
	// One checked call first: a wrong setup fails here, not as a run of errors.
	first := &sender{c: c, persist: c.persist, conn: conns[0], prefix: prefix, draw: newDrawer(c, -1)}
	body, ids := first.request()
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	err = conns[0].Invoke(ctx, c.method(), &body, &first.answer)
	cancel()
	if err != nil {
		return result{}, fmt.Errorf("first call: %w", err)
	}
	if c.checkEvery > 0 {
		if err := verify(c, first.answer, ids); err != nil {
			return result{}, fmt.Errorf("first call: %w", err)
		}
	}
	requestBytes := len(body)

	start := time.Now()
	rec := &recorder{errs: map[string]int{}}
	rec.from = start.Add(time.Duration(c.warmup * float64(time.Second)))
	rec.to = rec.from.Add(time.Duration(c.seconds * float64(time.Second)))
	var cpu0, cpu1 time.Duration
	var watched0, watched1 map[string]float64
	var wall0, wall1 time.Time
	var cpuOnce, cpuEnd sync.Once
	markStart := func() {
		cpuOnce.Do(func() { cpu0, watched0, wall0 = cpuTime(), treeCPU(c.watch), time.Now() })
	}
	markEnd := func() {
		cpuEnd.Do(func() { cpu1, watched1, wall1 = cpuTime(), treeCPU(c.watch), time.Now() })
	}
	go func() { // the CPU clock covers the measured window only
		time.Sleep(time.Until(rec.from))
		markStart()
		time.Sleep(time.Until(rec.to))
		markEnd()
	}()

	call := func(s *sender, due time.Time) {
		body, ids := s.request()
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		err := s.conn.Invoke(ctx, c.method(), &body, &s.answer)
		cancel()
		end := time.Now()
		rec.add(due, end, err)
		if err == nil && k.due() {
			k.check(s.answer, ids)
		}
	}

	var wg sync.WaitGroup
	mode := "closed"
	if c.rate == 0 {
		for g := range c.inflight {
			s := &sender{c: c, persist: c.persist, conn: conns[g%len(conns)], prefix: prefix, draw: newDrawer(c, int64(g))}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					now := time.Now()
					if !now.Before(rec.to) {
						return
					}
					call(s, now)
				}
			}()
		}
	} else {
		mode = "open"
		period := time.Duration(float64(time.Second) / c.rate)
		total := int(math.Ceil((c.warmup + c.seconds) * c.rate))
		due := make(chan time.Time, total)
		for g := range c.maxInflight {
			s := &sender{c: c, persist: c.persist, conn: conns[g%len(conns)], prefix: prefix, draw: newDrawer(c, int64(g))}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for t := range due {
					call(s, t)
				}
			}()
		}
		late := 0
		for i := range total {
			t := start.Add(time.Duration(i) * period)
			if d := time.Until(t); d > 0 {
				time.Sleep(d)
			} else if -d > time.Millisecond && !t.Before(rec.from) {
				late++ // handed over more than 1 ms after it was due: the generator fell behind
			}
			due <- t
		}
		close(due)
		rec.lateCnt = late
	}
	wg.Wait()
	markStart()
	markEnd()

	lat := rec.lat
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return math.NaN()
		}
		return ms(lat[min(len(lat)-1, int(p*float64(len(lat))))])
	}
	window := rec.to.Sub(rec.from).Seconds()
	out := result{
		Mode: mode, Requests: len(lat), Errors: rec.errs, Seconds: window,
		RPS: float64(len(lat)) / window, TargetRate: c.rate,
		P50ms: pct(0.50), P90ms: pct(0.90), P99ms: pct(0.99), P999ms: pct(0.999),
		Checked: int(k.done.Load()), CheckFailures: int(k.failed.Load()), CheckError: k.first,
		LateSends: rec.lateCnt, CPUSeconds: (cpu1 - cpu0).Seconds(), RequestBytes: requestBytes,
	}
	out.WatchedCores = map[string]float64{}
	if span := wall1.Sub(wall0).Seconds(); span > 0 {
		for name := range c.watch {
			out.WatchedCores[name] = (watched1[name] - watched0[name]) / span
		}
	}
	if len(lat) > 0 {
		out.MaxMs = ms(lat[len(lat)-1])
		out.CPUusPerCall = (cpu1 - cpu0).Seconds() * 1e6 / float64(len(lat))
	} else {
		out.P50ms, out.P90ms, out.P99ms, out.P999ms, out.MaxMs = -1, -1, -1, -1, -1
	}
	return out, nil
}

// -- CPU of other processes ------------------------------------------------------------------------

func parseWatch(spec string) (map[string]int, error) {
	out := map[string]int{}
	if spec == "" {
		return out, nil
	}
	for _, item := range strings.Split(spec, ",") {
		name, pid, ok := strings.Cut(item, "=")
		n, err := strconv.Atoi(pid)
		if !ok || err != nil || n <= 0 {
			return nil, fmt.Errorf("-watch %q: name=pid,... expected", spec)
		}
		out[name] = n
	}
	return out, nil
}

// treeCPU is the user + system CPU seconds of each watched process and its live descendants (/proc).
func treeCPU(watch map[string]int) map[string]float64 {
	out := map[string]float64{}
	if len(watch) == 0 {
		return out
	}
	children := map[int][]int{}
	times := map[int]float64{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // it exited while we looked
		}
		i := strings.LastIndexByte(string(stat), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+2:]))
		if len(f) < 13 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		utime, _ := strconv.ParseFloat(f[11], 64)
		stime, _ := strconv.ParseFloat(f[12], 64)
		children[ppid] = append(children[ppid], pid)
		times[pid] = (utime + stime) / clockTicks
	}
	for name, root := range watch {
		total, todo := 0.0, []int{root}
		for len(todo) > 0 {
			p := todo[len(todo)-1]
			todo = todo[:len(todo)-1]
			total += times[p]
			todo = append(todo, children[p]...)
		}
		out[name] = total
	}
	return out
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's times: 100 on every Linux this runs on.
const clockTicks = 100.0

// -- the null server --------------------------------------------------------------------------------

func runNull(addr, responseFile string) error {
	answer, err := os.ReadFile(responseFile)
	if err != nil {
		return fmt.Errorf("-null-response: %w", err)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := grpc.NewServer(
		grpc.ForceServerCodec(rawCodec{}),
		grpc.MaxRecvMsgSize(256<<20), grpc.MaxSendMsgSize(256<<20),
		grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
			var req []byte
			if err := stream.RecvMsg(&req); err != nil {
				return err
			}
			return stream.SendMsg(&answer)
		}),
	)
	fmt.Printf("SERVING %s\n", lis.Addr())
	return srv.Serve(lis)
}
