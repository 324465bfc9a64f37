package client

import (
	"crypto/tls"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
)

// Option configures a Client (see New).
type Option func(*config)

// credential is one caller id and token, sent as call metadata.
type credential struct {
	callerID, token string
}

type config struct {
	reader, writer *credential
	transport      credentials.TransportCredentials
	keepalive      *keepalive.ClientParameters
	timeout        time.Duration
	batchSize      int
	concurrency    int
	retries        int
	backoff        time.Duration
	maxBackoff     time.Duration
	maxMessage     int
	waitReady      bool
	dialOptions    []grpc.DialOption
}

// Defaults of the options (the Python Client's, so both SDKs behave alike).
const (
	DefaultTimeout        = 5 * time.Second
	DefaultBatchSize      = 500
	DefaultConcurrency    = 4
	DefaultRetries        = 4
	DefaultBackoff        = 50 * time.Millisecond
	DefaultMaxBackoff     = 2 * time.Second
	DefaultMaxMessageSize = 64 << 20
)

// DefaultKeepalive pings an idle connection every 30 s and drops it when a ping is not answered in
// 10 s, so a dead peer (a crashed host, a dropped NAT entry) is noticed before a call hangs on it.
// `ofs serve` accepts pings every 10 s or more, with or without calls in flight.
var DefaultKeepalive = keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}

func defaultConfig() config {
	ka := DefaultKeepalive
	return config{
		keepalive:   &ka,
		timeout:     DefaultTimeout,
		batchSize:   DefaultBatchSize,
		concurrency: DefaultConcurrency,
		retries:     DefaultRetries,
		backoff:     DefaultBackoff,
		maxBackoff:  DefaultMaxBackoff,
		maxMessage:  DefaultMaxMessageSize,
	}
}

// WithCredentials sends callerID and token (the online-feature-store-caller-id and
// online-feature-store-auth-token metadata) with every call. `ofs serve --auth` gives a caller a role:
// a reader may only retrieve, a writer only persist, and a readwriter both. A client that does both
// takes WithCredentials with a readwriter caller, or (recommended) WithReader and WithWriter with two.
func WithCredentials(callerID, token string) Option {
	return func(c *config) {
		c.reader = &credential{callerID, token}
		c.writer = c.reader
	}
}

// WithReader sets the credential sent with Retrieve and RetrieveDecoded.
func WithReader(callerID, token string) Option {
	return func(c *config) { c.reader = &credential{callerID, token} }
}

// WithWriter sets the credential sent with Persist.
func WithWriter(callerID, token string) Option {
	return func(c *config) { c.writer = &credential{callerID, token} }
}

// WithTLS makes a TLS connection with cfg (nil: the system's root certificates, the server name from
// the address). Without WithTLS or WithTransportCredentials the connection is plaintext.
func WithTLS(cfg *tls.Config) Option {
	return func(c *config) {
		if cfg == nil {
			cfg = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		c.transport = credentials.NewTLS(cfg)
	}
}

// WithTransportCredentials sets the connection's transport security (mTLS, ALTS, ...).
func WithTransportCredentials(creds credentials.TransportCredentials) Option {
	return func(c *config) { c.transport = creds }
}

// WithKeepalive replaces DefaultKeepalive. A server closes connections that ping more often than it
// allows (`ofs serve`: every 10 s).
func WithKeepalive(p keepalive.ClientParameters) Option {
	return func(c *config) { c.keepalive = &p }
}

// WithoutKeepalive sends no keepalive pings.
func WithoutKeepalive() Option {
	return func(c *config) { c.keepalive = nil }
}

// WithTimeout is the deadline of a call whose context has none (default 5 s), retries and batches
// included. 0 leaves such calls without a deadline. A context's own deadline always wins.
func WithTimeout(d time.Duration) Option {
	return func(c *config) { c.timeout = d }
}

// WithBatchSize splits key lists (and persist rows) longer than n into requests of at most n (default
// 500; keep it at or under the server's max_keys_per_request).
func WithBatchSize(n int) Option {
	return func(c *config) { c.batchSize = n }
}

// WithConcurrency is how many batches of one call are in flight at once (default 4).
func WithConcurrency(n int) Option {
	return func(c *config) { c.concurrency = n }
}

// WithRetries sets how many times a request answered UNAVAILABLE is sent again (default 4; 0: never),
// waiting a random time up to min(maxBackoff, backoff·2^attempt) before each (exponential backoff with
// full jitter), within the call's deadline. No other status is retried.
func WithRetries(n int, backoff, maxBackoff time.Duration) Option {
	return func(c *config) {
		c.retries = n
		c.backoff = backoff
		c.maxBackoff = maxBackoff
	}
}

// WithMaxMessageSize caps the size of a response (and request) in bytes (default 64 MiB).
func WithMaxMessageSize(n int) Option {
	return func(c *config) { c.maxMessage = n }
}

// WithWaitForReady makes New wait until the connection is up (or its context ends) instead of
// returning at once and connecting in the background.
func WithWaitForReady() Option {
	return func(c *config) { c.waitReady = true }
}

// WithDialOptions adds gRPC dial options (interceptors, a custom dialer, stats handlers, ...), applied
// after the client's own.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(c *config) { c.dialOptions = append(c.dialOptions, opts...) }
}

func (c *config) validate() error {
	switch {
	case c.batchSize < 1:
		return invalid("batch size %d: must be at least 1", c.batchSize)
	case c.concurrency < 1:
		return invalid("concurrency %d: must be at least 1", c.concurrency)
	case c.retries < 0:
		return invalid("retries %d: must be 0 or more", c.retries)
	case c.backoff < 0 || c.maxBackoff < c.backoff:
		return invalid("backoff %v, max backoff %v: need 0 <= backoff <= max backoff", c.backoff, c.maxBackoff)
	case c.timeout < 0:
		return invalid("timeout %v: must be 0 (none) or more", c.timeout)
	case c.maxMessage < 1:
		return invalid("max message size %d: must be at least 1", c.maxMessage)
	}
	for _, cr := range []*credential{c.reader, c.writer} {
		if cr != nil && (cr.callerID == "" || cr.token == "") {
			return invalid("a credential needs both a caller id and a token")
		}
	}
	return nil
}
