package client

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// selfSigned writes a certificate for 127.0.0.1 and its key as PEM files into dir; the pool trusting it.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "ofs test server"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestTLS: `ofs serve` with a certificate; a client trusting it retrieves, plaintext and untrusting
// clients cannot connect.
func TestTLS(t *testing.T) {
	shared := needServer(t)
	dir := t.TempDir()
	spec := filepath.Join(dir, "features.yaml")
	if err := os.WriteFile(spec, registry(), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := prepareServer(shared.bin, dir, spec, "GO_TEST_READER_TOKEN="+readerToken, "GO_TEST_WRITER_TOKEN="+writerToken)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, pool := selfSigned(t, dir)
	s.env = []string{"OFS_TLS_CERT_FILE=" + certFile, "OFS_TLS_KEY_FILE=" + keyFile}
	s.tls = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
	defer s.kill()

	req := RetrieveRequest{Entity: "user", Keys: Keys("tls-1"), FeatureGroups: []FeatureGroup{{Label: fgLabel(FP32), Features: []string{"f0"}}}}
	ctx := context.Background()
	c := dial(t, s, WithTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}))
	res, err := c.Retrieve(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if res.Group(fgLabel(FP32)).Status[0] != Missing {
		t.Errorf("status %v", res.Group(fgLabel(FP32)).Status)
	}
	for name, opts := range map[string][]Option{
		"plaintext":         nil,
		"system roots only": {WithTLS(nil)},
	} {
		other := dial(t, s, append(opts, WithRetries(0, 0, 0))...)
		if _, err := other.Retrieve(ctx, req); !errors.Is(err, ErrUnavailable) {
			t.Errorf("%s client of a TLS server: %v", name, err)
		}
	}
}
