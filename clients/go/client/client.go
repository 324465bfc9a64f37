package client

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/online-feature-store/online-feature-store/clients/go/pb/persistpb"
)

// Metadata names of the caller's credential; the server's auth reads these.
const (
	CallerHeader = "online-feature-store-caller-id"
	TokenHeader  = "online-feature-store-auth-token"
)

// Method names, as errors report them.
const (
	MethodRetrieve        = "RetrieveFeatures"
	MethodRetrieveDecoded = "RetrieveDecodedResult"
	MethodPersist         = "PersistFeatures"
)

// Client is a connection to an `ofs serve` gRPC server (or any server of the same protocol). It is safe
// for concurrent use; make one per process and Close it when done.
type Client struct {
	conn    *grpc.ClientConn
	persist persistpb.FeatureServiceClient
	rawCall grpc.CallOption // keeps a RetrieveFeatures answer as bytes (wire.go)
	cfg     config
}

// New makes a client of the server at addr ("host:port", or any gRPC target such as "dns:///host:port").
// It connects in the background and returns at once, unless WithWaitForReady is given: then it waits,
// within ctx, until the connection is up. Options that are out of range return an error matching
// ErrInvalidArgument.
func New(ctx context.Context, addr string, opts ...Option) (*Client, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if addr == "" {
		return nil, invalid("no server address")
	}
	transport := cfg.transport
	if transport == nil {
		transport = insecure.NewCredentials()
	}
	dial := []grpc.DialOption{
		grpc.WithTransportCredentials(transport),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(cfg.maxMessage), grpc.MaxCallSendMsgSize(cfg.maxMessage)),
		// Reconnect soon after a server restart, so the retries of a call are not answered by a
		// connection still backing off from the last failed attempt (gRPC's default waits up to 2 min).
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: 5 * time.Second,
		}),
	}
	if cfg.keepalive != nil {
		dial = append(dial, grpc.WithKeepaliveParams(*cfg.keepalive))
	}
	dial = append(dial, cfg.dialOptions...)
	conn, err := grpc.NewClient(addr, dial...)
	if err != nil {
		return nil, invalid("server address %q: %v", addr, err)
	}
	c := &Client{
		conn:    conn,
		persist: persistpb.NewFeatureServiceClient(conn),
		rawCall: grpc.ForceCodecV2(newRawCodec()),
		cfg:     cfg,
	}
	if cfg.waitReady {
		if err := c.waitReady(ctx); err != nil {
			_ = conn.Close()
			return nil, err
		}
	}
	return c, nil
}

func (c *Client) waitReady(ctx context.Context) error {
	c.conn.Connect()
	for {
		s := c.conn.GetState()
		if s == connectivity.Ready {
			return nil
		}
		if !c.conn.WaitForStateChange(ctx, s) {
			return contextError("connect", ctx, 0, nil)
		}
	}
}

// Close closes the connection; calls in flight fail with ErrCanceled.
func (c *Client) Close() error {
	return c.conn.Close()
}

// withTimeout gives ctx the client's default deadline when it has none.
func (c *Client) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok || c.cfg.timeout == 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, c.cfg.timeout)
}

// call sends one request with send, retrying on UNAVAILABLE with exponential backoff and full jitter
// while the retries and ctx's deadline allow. Every error it returns is an *Error.
func (c *Client) call(ctx context.Context, method string, cred *credential, send func(context.Context) error) error {
	if cred != nil {
		ctx = metadata.AppendToOutgoingContext(ctx, CallerHeader, cred.callerID, TokenHeader, cred.token)
	}
	for attempt := 1; ; attempt++ {
		err := send(ctx)
		if err == nil {
			return nil
		}
		if status.Code(err) != codes.Unavailable || attempt > c.cfg.retries {
			return callError(method, err, attempt)
		}
		delay := c.backoffDelay(attempt - 1)
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) <= delay {
			// Retries left but no time for them: the deadline is what ran out.
			st, _ := status.FromError(err)
			return &Error{Code: codes.DeadlineExceeded, Method: method, Attempts: attempt, cause: err,
				Message: "deadline exceeded while the server was unavailable (" + st.Message() + ")"}
		}
		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return contextError(method, ctx, attempt, err)
		case <-timer.C:
		}
	}
}

// backoffDelay is a random wait in [0, min(maxBackoff, backoff·2^attempt)]: full jitter spreads the
// retries of many clients after a server restart.
func (c *Client) backoffDelay(attempt int) time.Duration {
	ceiling := c.cfg.maxBackoff
	if attempt < 32 {
		if d := c.cfg.backoff << attempt; d > 0 && d < ceiling {
			ceiling = d
		}
	}
	if ceiling <= 0 {
		return 0
	}
	return rand.N(ceiling + 1)
}

// contextError is the *Error of a call whose context ended outside gRPC (between retries, while
// connecting). last is the call's last gRPC error, if any.
func contextError(method string, ctx context.Context, attempts int, last error) *Error {
	code := codes.Canceled
	if ctx.Err() == context.DeadlineExceeded {
		code = codes.DeadlineExceeded
	}
	return &Error{Code: code, Method: method, Message: ctx.Err().Error(), Attempts: attempts, cause: last}
}

// batches splits n items into half-open ranges of at most size.
func batches(n, size int) [][2]int {
	out := make([][2]int, 0, (n+size-1)/size)
	for start := 0; start < n; start += size {
		out = append(out, [2]int{start, min(start+size, n)})
	}
	return out
}

// fanOut runs run(i, start, end) for every batch of n items, at most concurrency at a time. With
// stopOnError the first failure cancels the batches still running or waiting, and is the error
// returned; without, every batch runs and the failures are joined, in batch order. Each failure is a
// *BatchError naming its range, unless there is a single batch.
func (c *Client) fanOut(ctx context.Context, n int, stopOnError bool, run func(ctx context.Context, i, start, end int) error) error {
	bounds := batches(n, c.cfg.batchSize)
	if len(bounds) == 1 {
		return run(ctx, 0, 0, n)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		errs  = make([]error, len(bounds))
		sem   = make(chan struct{}, c.cfg.concurrency)
	)
	for i, b := range bounds {
		if stopOnError {
			mu.Lock()
			stop := first != nil
			mu.Unlock()
			if stop {
				break
			}
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			err := run(ctx, i, b[0], b[1])
			if err == nil {
				return
			}
			err = &BatchError{Start: b[0], End: b[1], Err: err}
			errs[i] = err
			mu.Lock()
			if first == nil {
				first = err
				if stopOnError {
					cancel()
				}
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if stopOnError {
		return first
	}
	return joinErrors(errs)
}

// joinErrors is errors.Join of the non-nil errors, or the one error itself when there is one.
func joinErrors(errs []error) error {
	var failed []error
	for _, e := range errs {
		if e != nil {
			failed = append(failed, e)
		}
	}
	switch len(failed) {
	case 0:
		return nil
	case 1:
		return failed[0]
	default:
		return errors.Join(failed...)
	}
}
