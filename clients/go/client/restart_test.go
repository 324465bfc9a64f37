package client

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestServerRestartMidStream kills `ofs serve` (SIGKILL, as a crash) while a loop of retrieves runs,
// starts it again on the same port, and checks that every retrieve of the loop succeeded with the
// right values: the calls made while the server was down were answered UNAVAILABLE, retried with
// backoff, and completed once it was back.
func TestServerRestartMidStream(t *testing.T) {
	shared := needServer(t) // skips (or fails in CI) without an ofs binary
	s, err := newServer(shared.bin, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.kill()

	var unavailable atomic.Int64 // attempts answered UNAVAILABLE, seen below the client's retries
	count := grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn,
		invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if status.Code(err) == codes.Unavailable {
			unavailable.Add(1)
		}
		return err
	})
	c := dial(t, s, WithRetries(1000, 20*time.Millisecond, 250*time.Millisecond), WithTimeout(60*time.Second),
		WithDialOptions(count))
	ctx := context.Background()
	keys := Keys("restart-0", "restart-1", "restart-2")
	var rows []PersistRow
	for i, k := range keys {
		rows = append(rows, PersistRow{Key: k, Values: []Values{FloatValues(float64(i)+0.5, float64(-i))}})
	}
	groups := []PersistGroup{{Label: fgLabel(FP32), DataType: FP32, Features: []string{"f0", "f1"}}}
	if err := c.Persist(ctx, PersistRequest{Entity: "user", Groups: groups, Rows: rows}); err != nil {
		t.Fatal(err)
	}
	req := RetrieveRequest{Entity: "user", Keys: keys, FeatureGroups: []FeatureGroup{{Label: fgLabel(FP32), Features: []string{"f0"}}}}

	var (
		done      atomic.Int64 // successful retrieves
		stop      = make(chan struct{})
		wg        sync.WaitGroup
		mu        sync.Mutex
		failures  []string
		afterBack atomic.Int64 // successes since the restart
		restarted atomic.Bool
	)
	for w := range 2 { // two loops, so calls are in flight at the moment of the kill
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100_000; i++ { // bounded; the test stops it much sooner
				select {
				case <-stop:
					return
				default:
				}
				res, err := c.Retrieve(ctx, req)
				if err == nil {
					var x []float32
					if x, err = res.Group(fgLabel(FP32)).Float32s("f0"); err == nil && fmt.Sprint(x) != "[0.5 1.5 2.5]" {
						err = fmt.Errorf("values %v", x)
					}
				}
				if err != nil {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("loop %d, call %d: %v", w, i, err))
					mu.Unlock()
					return
				}
				done.Add(1)
				if restarted.Load() {
					afterBack.Add(1)
				}
			}
		}()
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for start := time.Now(); !cond(); time.Sleep(10 * time.Millisecond) {
			if time.Since(start) > 120*time.Second {
				close(stop)
				wg.Wait()
				t.Fatalf("timed out waiting for %s; failures: %v", what, failures)
			}
		}
	}
	waitFor("20 retrieves before the kill", func() bool { return done.Load() >= 20 })
	s.kill()
	waitFor("a call to find the server down", func() bool { return unavailable.Load() > 0 })
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
	restarted.Store(true)
	waitFor("20 retrieves after the restart", func() bool { return afterBack.Load() >= 20 })
	close(stop)
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("retrieves failed across the restart:\n%v\nserver log:\n%s", failures, s.output())
	}
	t.Logf("%d retrieves, %d attempts answered UNAVAILABLE and retried", done.Load(), unavailable.Load())
}
