package client

// The test harness: a real `ofs serve --auth` over a registry with one feature group per data type,
// started once for the package by TestMain (and again by tests that need a server of their own).
// `ofs` is $OFS_BIN, else the repository's .venv/bin/ofs. Without it the server tests are skipped,
// except in CI (CI=true), where that is a failure.

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// vlen is the vector length of every vector feature of the test registry.
const vlen = 3

// Callers of the test registry.
const (
	readerID = "ranker"
	writerID = "ingest"
)

var (
	// shared is the server of the package's tests (nil when skipped).
	shared *server
	// skipReason says why there is no server.
	skipReason string
	// Tokens of the callers: long random secrets, as the registry's token rules ask.
	readerToken = randomToken()
	writerToken = randomToken()
)

func randomToken() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b) // 43 characters
}

// fgLabel is the test registry's feature group of type t: "t_fp16vector".
func fgLabel(t DataType) string {
	return "t_" + strings.ToLower(strings.TrimPrefix(t.String(), "DataType"))
}

// registry is the registry document (JSON, which the YAML loader reads): entity "user" with a feature
// group per data type (features f0, f1), a 1-second-TTL group, and entity "pair" with a two-column key.
func registry() []byte {
	var fgs []map[string]any
	for t := FP8E5M2; t < numDataTypes; t++ {
		extra := map[string]any{}
		var def any = 0
		switch t.Scalar() {
		case String:
			def = ""
			extra["string_length"] = 16
		case Bool:
			def = false
		}
		if t.IsVector() {
			extra["vector_length"] = vlen
			def = []any{def, def, def}
		}
		var features []map[string]any
		for i := range 2 {
			f := map[string]any{"label": fmt.Sprintf("f%d", i), "default": def}
			for k, v := range extra {
				f[k] = v
			}
			features = append(features, f)
		}
		fgs = append(fgs, map[string]any{"label": fgLabel(t), "data_type": t.String(), "store": "main", "features": features})
	}
	fgs = append(fgs, map[string]any{
		"label": "short_lived", "data_type": "fp32", "ttl_seconds": 1, "store": "main",
		"features": []map[string]any{{"label": "x", "default": -1.0}},
	})
	doc := map[string]any{
		"stores": []map[string]any{{"id": "main", "kind": "sqlite", "settings": map[string]any{"path": "store.db"}}},
		"callers": []map[string]any{
			{"id": readerID, "role": "reader", "token_env": "GO_TEST_READER_TOKEN"},
			{"id": writerID, "role": "writer", "token_env": "GO_TEST_WRITER_TOKEN"},
		},
		"entities": []map[string]any{
			{"label": "user", "keys": []map[string]any{{"label": "user_id", "column": "uid"}}, "feature_groups": fgs},
			{
				"label": "pair",
				"keys":  []map[string]any{{"label": "a", "column": "ka"}, {"label": "b", "column": "kb"}},
				"feature_groups": []map[string]any{{
					"label": "g", "data_type": "fp32", "store": "main",
					"features": []map[string]any{{"label": "x", "default": -1.0}},
				}},
			},
		},
	}
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		panic(err)
	}
	return out
}

// ofsBinary finds the `ofs` command: $OFS_BIN, else <repo>/.venv/bin/ofs.
func ofsBinary() (string, error) {
	if bin := os.Getenv("OFS_BIN"); bin != "" {
		return bin, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		bin := filepath.Join(dir, ".venv", "bin", "ofs")
		if _, err := os.Stat(filepath.Join(dir, "proto", "retrieve.proto")); err == nil {
			if _, err := os.Stat(bin); err != nil {
				return "", fmt.Errorf("no %s (run scripts/bootstrap, or set OFS_BIN)", bin)
			}
			return bin, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no repository root above the working directory; set OFS_BIN")
		}
		dir = parent
	}
}

// server is one `ofs serve` process.
type server struct {
	bin, dataDir, addr string
	port               int
	cmd                *exec.Cmd
	exited             chan struct{} // closed when cmd has exited
	log                string
	env                []string    // more environment of `ofs serve`
	tls                *tls.Config // the client side of a server started with TLS
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// newServer applies the test registry to a fresh data directory under dir and starts a server on it.
func newServer(bin, dir string) (*server, error) {
	spec := filepath.Join(dir, "features.yaml")
	if err := os.WriteFile(spec, registry(), 0o600); err != nil {
		return nil, err
	}
	return newServerOf(bin, dir, spec, "GO_TEST_READER_TOKEN="+readerToken, "GO_TEST_WRITER_TOKEN="+writerToken)
}

// newServerOf applies the registry file spec (env: its token variables) to a fresh data directory
// under dir and starts a server on it.
func newServerOf(bin, dir, spec string, env ...string) (*server, error) {
	s, err := prepareServer(bin, dir, spec, env...)
	if err != nil {
		return nil, err
	}
	return s, s.start()
}

// prepareServer applies the registry file spec (env: its token variables) to a fresh data directory
// under dir and picks a port: the server, not started.
func prepareServer(bin, dir, spec string, env ...string) (*server, error) {
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, err
	}
	apply := exec.Command(bin, "registry", "apply", "-f", spec, "--yes")
	apply.Env = append(append(os.Environ(), "OFS_DATA_DIR="+data), env...)
	if out, err := apply.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ofs registry apply: %v\n%s", err, out)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	return &server{bin: bin, dataDir: data, port: port, addr: fmt.Sprintf("127.0.0.1:%d", port),
		log: filepath.Join(dir, "serve.log")}, nil
}

// start runs `ofs serve` and waits until its health service answers SERVING.
func (s *server) start() error {
	logf, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(s.bin, "serve", "--port", strconv.Itoa(s.port), "--data-dir", s.dataDir, "--auth")
	// Metrics off: their default port would collide between servers.
	cmd.Env = append(append(os.Environ(), "OFS_DATA_DIR="+s.dataDir, "OFS_METRICS_PORT=0"), s.env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its own group: worker processes end with it
	if err := cmd.Start(); err != nil {
		return err
	}
	s.cmd = cmd
	exited := make(chan struct{})
	s.exited = exited
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	transport := insecure.NewCredentials()
	if s.tls != nil {
		transport = credentials.NewTLS(s.tls)
	}
	conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(transport))
	if err != nil {
		return err
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("ofs serve exited:\n%s", s.output())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		reply, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && reply.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.kill()
	return fmt.Errorf("ofs serve did not become healthy in 90 s:\n%s", s.output())
}

func (s *server) output() string {
	b, _ := os.ReadFile(s.log)
	return string(b)
}

// kill ends the server's process group at once (a crash, as far as clients can tell) and waits for it.
func (s *server) kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	if s.exited != nil {
		<-s.exited
	}
	s.cmd = nil
}

// needServer skips (or, in CI, fails) a test when there is no server.
func needServer(t *testing.T) *server {
	t.Helper()
	if shared == nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no ofs server in CI: %s", skipReason)
		}
		t.Skipf("no ofs server: %s", skipReason)
	}
	return shared
}

// dial makes a client of s with the given options (short retries unless the test says otherwise).
func dial(t *testing.T, s *server, opts ...Option) *Client {
	t.Helper()
	opts = append([]Option{WithReader(readerID, readerToken), WithWriter(writerID, writerToken), WithTimeout(30 * time.Second)}, opts...)
	c, err := New(context.Background(), s.addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	bin, err := ofsBinary()
	if err != nil {
		skipReason = err.Error()
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "ofs-go-client-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	s, err := newServer(bin, dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting ofs serve:", err)
		return 1
	}
	defer s.kill()
	shared = s
	return m.Run()
}
