package client

// The client's own logic against a fake server in this process (no `ofs serve` needed): batching
// order and concurrency with out-of-order replies, retries on UNAVAILABLE only, credentials per method,
// status mapping, malformed responses, and deadlines against a server that never answers.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/online-feature-store/online-feature-store/clients/go/pb/persistpb"
	"github.com/online-feature-store/online-feature-store/clients/go/pb/retrievepb"
)

// fake answers RetrieveFeatures with one FP32 feature whose value is the key parsed as a number,
// after a random delay, unless fail says otherwise; it records what it saw.
type fake struct {
	retrievepb.UnimplementedFeatureServiceServer
	fail     func(n int) error // n-th call (from 1); nil error: answer normally
	mangle   func(*retrievepb.Result)
	calls    atomic.Int64
	inFlight atomic.Int64
	peak     atomic.Int64
	mu       sync.Mutex
	batches  [][]string // keys of each request
	creds    []string   // caller id of each call
}

func (f *fake) enter(ctx context.Context) (int, func(), error) {
	n := int(f.calls.Add(1))
	now := f.inFlight.Add(1)
	for {
		p := f.peak.Load()
		if now <= p || f.peak.CompareAndSwap(p, now) {
			break
		}
	}
	md, _ := metadata.FromIncomingContext(ctx)
	f.mu.Lock()
	f.creds = append(f.creds, strings.Join(md.Get(CallerHeader), ",")+"/"+strings.Join(md.Get(TokenHeader), ","))
	f.mu.Unlock()
	done := func() { f.inFlight.Add(-1) }
	if f.fail != nil {
		if err := f.fail(n); err != nil {
			done()
			return n, nil, err
		}
	}
	return n, done, nil
}

func (f *fake) RetrieveFeatures(ctx context.Context, q *retrievepb.Query) (*retrievepb.Result, error) {
	_, done, err := f.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	var keys []string
	for _, k := range q.GetKeys() {
		keys = append(keys, k.GetCols()[0])
	}
	f.mu.Lock()
	f.batches = append(f.batches, keys)
	f.mu.Unlock()
	time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond) // replies arrive out of order
	res := &retrievepb.Result{
		EntityLabel: q.GetEntityLabel(),
		KeysSchema:  []string{"id"},
		FeatureSchemas: []*retrievepb.FeatureSchema{{FeatureGroupLabel: "g", Features: []*retrievepb.Feature{
			{Label: "x", ColumnIdx: 0, DataType: uint32(FP32)},
		}}},
	}
	for _, k := range keys {
		var v float32
		_, _ = fmt.Sscan(k, &v)
		cell := binary.LittleEndian.AppendUint32(nil, math.Float32bits(v))
		res.Rows = append(res.Rows, &retrievepb.Row{Keys: []string{k}, Columns: [][]byte{cell}, FgStatus: []uint32{0}})
	}
	if f.mangle != nil {
		f.mangle(res)
	}
	return res, nil
}

// fakePersist serves persist.FeatureService for a fake.
type fakePersist struct {
	persistpb.UnimplementedFeatureServiceServer
	f *fake
}

func (p fakePersist) PersistFeatures(ctx context.Context, q *persistpb.Query) (*persistpb.Result, error) {
	return p.f.persist(ctx, q)
}

func (f *fake) persist(ctx context.Context, q *persistpb.Query) (*persistpb.Result, error) {
	_, done, err := f.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	var keys []string
	for _, d := range q.GetData() {
		keys = append(keys, d.GetKeyValues()[0])
	}
	f.mu.Lock()
	f.batches = append(f.batches, keys)
	f.mu.Unlock()
	return &persistpb.Result{Message: "Data Persisted Successfully"}, nil
}

// serveFake starts f on a loopback port for the test and returns a client of it.
func serveFake(t *testing.T, f *fake, opts ...Option) *Client {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	retrievepb.RegisterFeatureServiceServer(srv, f)
	persistpb.RegisterFeatureServiceServer(srv, fakePersist{f: f})
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	c, err := New(context.Background(), l.Addr().String(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func numberedKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprint(i)
	}
	return keys
}

var gx = []FeatureGroup{{Label: "g", Features: []string{"x"}}}

func TestFanOutKeepsOrderAndBoundsConcurrency(t *testing.T) {
	f := &fake{}
	c := serveFake(t, f, WithBatchSize(10), WithConcurrency(3))
	keys := numberedKeys(237)
	res, err := c.Retrieve(context.Background(), RetrieveRequest{Entity: "e", Keys: Keys(keys...), FeatureGroups: gx})
	if err != nil {
		t.Fatal(err)
	}
	x, err := res.Group("g").Float32s("x")
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range x {
		if v != float32(i) || res.Keys[i][0] != keys[i] {
			t.Fatalf("row %d: key %v value %v", i, res.Keys[i], v)
		}
	}
	if len(f.batches) != 24 || f.peak.Load() > 3 {
		t.Errorf("%d requests (want 24 of at most 10 keys), %d at once (max 3)", len(f.batches), f.peak.Load())
	}
	for _, b := range f.batches {
		if len(b) > 10 {
			t.Errorf("a batch of %d keys", len(b))
		}
	}
}

func TestPersistIsBatchedAndEveryBatchTried(t *testing.T) {
	f := &fake{fail: func(n int) error {
		if n == 2 {
			return status.Error(codes.InvalidArgument, "row 0: bad")
		}
		return nil
	}}
	c := serveFake(t, f, WithBatchSize(4), WithConcurrency(1))
	var rows []PersistRow
	for i := range 10 {
		rows = append(rows, PersistRow{Key: []string{fmt.Sprint(i)}, Values: []Values{FloatValues(float64(i))}})
	}
	err := c.Persist(context.Background(), PersistRequest{Entity: "e", Groups: []PersistGroup{{Label: "g", DataType: FP32, Features: []string{"x"}}}, Rows: rows})
	var be *BatchError
	if !errors.Is(err, ErrInvalidArgument) || !errors.As(err, &be) || be.Start != 4 || be.End != 8 {
		t.Fatalf("err %v", err)
	}
	if f.calls.Load() != 3 {
		t.Errorf("%d calls, want all 3 batches tried", f.calls.Load())
	}
}

func TestRetriesOnUnavailableOnly(t *testing.T) {
	for _, tc := range []struct {
		code     codes.Code
		failures int
		want     error
		calls    int64
	}{
		{codes.Unavailable, 2, nil, 3},
		{codes.Unavailable, 10, ErrUnavailable, 4}, // 1 + 3 retries
		{codes.Internal, 1, ErrInternal, 1},
		{codes.ResourceExhausted, 1, ErrResourceExhausted, 1},
		{codes.DeadlineExceeded, 1, ErrDeadlineExceeded, 1},
		{codes.Unknown, 1, ErrUnknown, 1},
	} {
		f := &fake{fail: func(n int) error {
			if n <= tc.failures {
				return status.Error(tc.code, "try later")
			}
			return nil
		}}
		c := serveFake(t, f, WithRetries(3, time.Millisecond, 5*time.Millisecond))
		_, err := c.Retrieve(context.Background(), RetrieveRequest{Entity: "e", Keys: Keys("1"), FeatureGroups: gx})
		if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) || f.calls.Load() != tc.calls {
			t.Errorf("%s ×%d: err %v after %d calls, want %v after %d", tc.code, tc.failures, err, f.calls.Load(), tc.want, tc.calls)
		}
		var e *Error
		if tc.want != nil && (!errors.As(err, &e) || e.Attempts != int(tc.calls) || e.Method != MethodRetrieve ||
			status.Code(err) != tc.code || !strings.Contains(err.Error(), "try later")) {
			t.Errorf("%s: %#v", tc.code, e)
		}
	}
}

func TestCredentialsPerMethod(t *testing.T) {
	f := &fake{}
	c := serveFake(t, f, WithReader("r", "rt"), WithWriter("w", "wt"))
	ctx := context.Background()
	if _, err := c.Retrieve(ctx, RetrieveRequest{Entity: "e", Keys: Keys("1"), FeatureGroups: gx}); err != nil {
		t.Fatal(err)
	}
	err := c.Persist(ctx, PersistRequest{Entity: "e", Groups: []PersistGroup{{Label: "g", DataType: FP32, Features: []string{"x"}}},
		Rows: []PersistRow{{Key: []string{"1"}, Values: []Values{FloatValues(1)}}}})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(f.creds) != "[r/rt w/wt]" {
		t.Errorf("credentials sent: %v", f.creds)
	}
	f2 := &fake{}
	c2 := serveFake(t, f2, WithCredentials("both", "bt"))
	_, _ = c2.Retrieve(ctx, RetrieveRequest{Entity: "e", Keys: Keys("1"), FeatureGroups: gx})
	if fmt.Sprint(f2.creds) != "[both/bt]" {
		t.Errorf("credentials sent: %v", f2.creds)
	}
}

func TestMalformedResponsesAreRefused(t *testing.T) {
	for name, mangle := range map[string]func(*retrievepb.Result){
		"no data type (a reference server)": func(r *retrievepb.Result) { r.FeatureSchemas[0].Features[0].DataType = 0 },
		"short cell":                        func(r *retrievepb.Result) { r.Rows[0].Columns[0] = []byte{1, 2} },
		"no status":                         func(r *retrievepb.Result) { r.Rows[0].FgStatus = nil },
		"status 7":                          func(r *retrievepb.Result) { r.Rows[0].FgStatus = []uint32{7} },
		"a row too few":                     func(r *retrievepb.Result) { r.Rows = r.Rows[1:] },
		"column out of range":               func(r *retrievepb.Result) { r.FeatureSchemas[0].Features[0].ColumnIdx = 3 },
		"vector length on a scalar":         func(r *retrievepb.Result) { r.FeatureSchemas[0].Features[0].VectorLength = 2 },
		"unknown type":                      func(r *retrievepb.Result) { r.FeatureSchemas[0].Features[0].DataType = 31 },
		"bool byte 2": func(r *retrievepb.Result) {
			r.FeatureSchemas[0].Features[0].DataType = uint32(Bool)
			r.Rows[0].Columns[0] = []byte{2}
		},
		"string vector lengths past the end": func(r *retrievepb.Result) {
			r.FeatureSchemas[0].Features[0].DataType = uint32(StringVector)
			r.FeatureSchemas[0].Features[0].VectorLength = 2
			r.Rows[0].Columns[0] = []byte{1, 0, 5, 0, 'a', 'b'}
		},
	} {
		c := serveFake(t, &fake{mangle: mangle})
		_, err := c.Retrieve(context.Background(), RetrieveRequest{Entity: "e", Keys: Keys("1", "2"), FeatureGroups: gx})
		if !errors.Is(err, ErrMalformedResponse) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestInputRefusedBeforeSending(t *testing.T) {
	f := &fake{}
	c := serveFake(t, f)
	ctx := context.Background()
	fp32 := []PersistGroup{{Label: "g", DataType: FP32, Features: []string{"x", "y"}}}
	row := func(v ...Values) []PersistRow { return []PersistRow{{Key: []string{"k"}, Values: v}} }
	for name, req := range map[string]PersistRequest{
		"no entity":           {Groups: fp32, Rows: row(FloatValues(1, 2))},
		"no rows":             {Entity: "e", Groups: fp32},
		"unknown type":        {Entity: "e", Groups: []PersistGroup{{Label: "g", Features: []string{"x"}}}, Rows: row(FloatValues(1))},
		"too few values":      {Entity: "e", Groups: fp32, Rows: row(FloatValues(1))},
		"strings for floats":  {Entity: "e", Groups: fp32, Rows: row(StringValues("a", "b"))},
		"vectors for scalars": {Entity: "e", Groups: fp32, Rows: row(FloatVectors([]float64{1}, []float64{2}))},
		"no values for a group": {Entity: "e", Groups: append(fp32, PersistGroup{Label: "h", DataType: Bool, Features: []string{"b"}}),
			Rows: row(FloatValues(1, 2))},
		"uint8 -1":        {Entity: "e", Groups: []PersistGroup{{Label: "g", DataType: Uint8, Features: []string{"x"}}}, Rows: row(IntValues(-1))},
		"int64 2^63":      {Entity: "e", Groups: []PersistGroup{{Label: "g", DataType: Int64, Features: []string{"x"}}}, Rows: row(UintValues(1 << 63))},
		"uint16 vector":   {Entity: "e", Groups: []PersistGroup{{Label: "g", DataType: Uint16Vector, Features: []string{"x"}}}, Rows: row(UintVectors([]uint64{1, 65536}))},
		"empty key":       {Entity: "e", Groups: fp32, Rows: []PersistRow{{Values: []Values{FloatValues(1, 2)}}}},
		"no feature list": {Entity: "e", Groups: []PersistGroup{{Label: "g", DataType: FP32}}, Rows: row(FloatValues())},
	} {
		if err := c.Persist(ctx, req); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: %v", name, err)
		}
	}
	for name, req := range map[string]RetrieveRequest{
		"no keys":          {Entity: "e", FeatureGroups: gx},
		"no groups":        {Entity: "e", Keys: Keys("k")},
		"no features":      {Entity: "e", Keys: Keys("k"), FeatureGroups: []FeatureGroup{{Label: "g"}}},
		"ragged keys":      {Entity: "e", Keys: [][]string{{"a"}, {"a", "b"}}, FeatureGroups: gx},
		"keys_schema of 2": {Entity: "e", KeysSchema: []string{"a", "b"}, Keys: Keys("k"), FeatureGroups: gx},
	} {
		if _, err := c.Retrieve(ctx, req); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if f.calls.Load() != 0 {
		t.Errorf("%d calls were sent", f.calls.Load())
	}
	// Extremes that fit are accepted.
	err := c.Persist(ctx, PersistRequest{Entity: "e", Groups: []PersistGroup{
		{Label: "a", DataType: Int8, Features: []string{"x", "y"}},
		{Label: "b", DataType: Uint64, Features: []string{"x"}},
		{Label: "c", DataType: Int64Vector, Features: []string{"x"}},
	}, Rows: row(IntValues(-128, 127), UintValues(math.MaxUint64), IntVectors([]int64{math.MinInt64, math.MaxInt64}))})
	if err != nil {
		t.Error(err)
	}
}

func TestBadOptions(t *testing.T) {
	for name, opt := range map[string]Option{
		"batch size 0":      WithBatchSize(0),
		"concurrency 0":     WithConcurrency(0),
		"negative retries":  WithRetries(-1, 0, 0),
		"backoff > max":     WithRetries(1, time.Second, time.Millisecond),
		"negative timeout":  WithTimeout(-time.Second),
		"half a credential": WithReader("r", ""),
	} {
		if _, err := New(context.Background(), "127.0.0.1:1", opt); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// blackHole accepts connections and never answers: calls wait until their deadline.
func blackHole(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return l.Addr().String()
}

// closedPort is an address nothing listens on: connections are refused (UNAVAILABLE).
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

func TestDeadlinesAndCancellation(t *testing.T) {
	req := RetrieveRequest{Entity: "e", Keys: Keys("1"), FeatureGroups: gx}
	hole := blackHole(t)

	c, err := New(context.Background(), hole)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = c.Retrieve(ctx, req)
	if !errors.Is(err, ErrDeadlineExceeded) || !errors.Is(err, context.DeadlineExceeded) || status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("context deadline: %v", err)
	}

	ctx, cancel = context.WithCancel(context.Background())
	go func() { time.Sleep(100 * time.Millisecond); cancel() }()
	_, err = c.RetrieveDecoded(ctx, req)
	if !errors.Is(err, ErrCanceled) || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}

	// The client's own timeout when the context has none.
	short, err := New(context.Background(), hole, WithTimeout(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer short.Close()
	if _, err := short.Retrieve(context.Background(), req); !errors.Is(err, ErrDeadlineExceeded) {
		t.Errorf("client timeout: %v", err)
	}

	// WithWaitForReady gives up with its context.
	ctx, cancel = context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := New(ctx, hole, WithWaitForReady()); !errors.Is(err, ErrDeadlineExceeded) {
		t.Errorf("waiting for a connection: %v", err)
	}
}

func TestUnavailableServer(t *testing.T) {
	req := RetrieveRequest{Entity: "e", Keys: Keys("1"), FeatureGroups: gx}
	closed := closedPort(t)

	c, err := New(context.Background(), closed, WithRetries(2, time.Millisecond, 2*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Retrieve(context.Background(), req)
	var e *Error
	if !errors.Is(err, ErrUnavailable) || !errors.As(err, &e) || e.Attempts != 3 {
		t.Errorf("refused connection: %v", err)
	}

	// Retries left but no time: a deadline error that still says what the server was.
	slow, err := New(context.Background(), closed, WithRetries(100, 400*time.Millisecond, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = slow.Retrieve(ctx, req)
	if !errors.Is(err, ErrDeadlineExceeded) || !errors.Is(err, context.DeadlineExceeded) || status.Code(errors.Unwrap(err)) != codes.Unavailable {
		t.Errorf("deadline while unavailable: %v", err)
	}
}
