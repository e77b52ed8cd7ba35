package pki

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func mustCA(t *testing.T, dir string) *CA {
	t.Helper()
	ca, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func parseCert(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("not a PEM certificate: %q", certPEM)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCreatedOnceThenReused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	ca := mustCA(t, dir)
	st, err := os.Stat(dir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("directory: %v %v, want mode 0700", st.Mode(), err)
	}
	st, err = os.Stat(filepath.Join(dir, KeyFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v, want mode 0600", st.Mode(), err)
	}
	c := ca.Certificate()
	if !c.IsCA || c.PublicKeyAlgorithm != x509.ECDSA || c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Fatalf("CA certificate: IsCA %v, algorithm %v, key usage %b", c.IsCA, c.PublicKeyAlgorithm, c.KeyUsage)
	}
	if years := c.NotAfter.Sub(c.NotBefore).Hours() / 24 / 365; years < 9.9 || years > 10.1 {
		t.Fatalf("CA valid for %.1f years, want 10", years)
	}
	again := mustCA(t, dir)
	if !bytes.Equal(ca.CertPEM(), again.CertPEM()) {
		t.Fatal("the second load made a new CA instead of reusing the first")
	}
	// A certificate the first load issued verifies against the second.
	cert, _, err := ca.IssueClient("x", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(again.Certificate())
	if _, err := parseCert(t, cert).Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatal(err)
	}
}

func TestServerCertificate(t *testing.T) {
	ca := mustCA(t, t.TempDir())
	certPEM, keyPEM, err := ca.IssueServer([]string{"192.0.2.7", "::1", "nbd.example"}, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := parseCert(t, certPEM)
	var ips []string
	for _, ip := range c.IPAddresses {
		ips = append(ips, ip.String())
	}
	if !slices.Equal(ips, []string{"192.0.2.7", "::1"}) || !slices.Equal(c.DNSNames, []string{"nbd.example"}) {
		t.Fatalf("SANs: IPs %v, DNS %v", ips, c.DNSNames)
	}
	if c.IsCA || c.KeyUsage != x509.KeyUsageDigitalSignature|x509.KeyUsageKeyEncipherment {
		t.Fatalf("leaf: IsCA %v, key usage %b (QEMU wants digitalSignature and keyEncipherment)", c.IsCA, c.KeyUsage)
	}
	if d := c.NotAfter.Sub(time.Now()); d < 23*time.Hour || d > 25*time.Hour {
		t.Fatalf("valid until %v, want about a day from now", c.NotAfter)
	}
	if !c.NotBefore.Before(time.Now().Add(-30 * time.Minute)) {
		t.Fatalf("valid from %v: want some slack for slow clocks", c.NotBefore)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM())
	for _, host := range []string{"192.0.2.7", "::1", "nbd.example"} {
		if _, err := c.Verify(x509.VerifyOptions{Roots: roots, DNSName: host}); err != nil {
			t.Errorf("verify for %s: %v", host, err)
		}
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: roots, DNSName: "192.0.2.8"}); err == nil {
		t.Error("the certificate verifies for a host it does not name")
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Fatalf("certificate and key do not pair: %v", err)
	}
	if _, _, err := ca.IssueServer(nil, time.Hour); err == nil {
		t.Error("a server certificate without hosts was issued")
	}
}

func TestClientCertificate(t *testing.T) {
	ca := mustCA(t, t.TempDir())
	certPEM, _, err := ca.IssueClient("cairn-project-x", 20*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := parseCert(t, certPEM)
	if c.Subject.String() != "CN=cairn-project-x" || len(c.DNSNames)+len(c.IPAddresses) != 0 {
		t.Fatalf("subject %q, SANs %v %v", c.Subject, c.DNSNames, c.IPAddresses)
	}
	if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
		t.Fatalf("extended key usage %v, want client auth only", c.ExtKeyUsage)
	}
	if !c.NotAfter.Equal(ca.Certificate().NotAfter) {
		t.Fatalf("valid until %v, beyond or short of the CA's %v", c.NotAfter, ca.Certificate().NotAfter)
	}
	if _, _, err := ca.IssueClient("", time.Hour); err == nil {
		t.Error("a client certificate without a name was issued")
	}
}

// TestGoTLSHandshake runs crypto/tls on both ends with the issued
// certificates: mutual authentication, and the server sees the client's name.
func TestGoTLSHandshake(t *testing.T) {
	ca := mustCA(t, t.TempDir())
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM())
	pair := func(cert, key []byte, err error) tls.Certificate {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		p, err := tls.X509KeyPair(cert, key)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	serverCert := pair(ca.IssueServer([]string{"127.0.0.1"}, time.Hour))
	clientCert := pair(ca.IssueClient("cairn-project-x", time.Hour))
	a, b := net.Pipe()
	srv := tls.Server(a, &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientCAs: roots, ClientAuth: tls.RequireAndVerifyClientCert})
	cli := tls.Client(b, &tls.Config{Certificates: []tls.Certificate{clientCert}, RootCAs: roots, ServerName: "127.0.0.1"})
	errc := make(chan error, 1)
	go func() { errc <- cli.Handshake() }()
	if err := srv.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if got := srv.ConnectionState().PeerCertificates[0].Subject.String(); got != "CN=cairn-project-x" {
		t.Fatalf("server sees client %q", got)
	}
	// Close the pipe, not the TLS connections: a close_notify on a
	// synchronous pipe that no one reads would wait for its deadline.
	a.Close()
	b.Close()
}

func TestBadFiles(t *testing.T) {
	other := mustCA(t, t.TempDir())
	cases := []struct {
		name  string
		spoil func(dir string) error
		want  string
	}{
		{"key readable by others", func(dir string) error { return os.Chmod(filepath.Join(dir, KeyFile), 0o644) }, "chmod 600"},
		{"garbage key", func(dir string) error { return os.WriteFile(filepath.Join(dir, KeyFile), []byte("garbage"), 0o600) }, "ca.key: not a PEM private key"},
		{"garbage certificate", func(dir string) error { return os.WriteFile(filepath.Join(dir, CertFile), []byte("garbage"), 0o644) }, "ca.crt is not a PEM certificate"},
		{"key of another CA", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, CertFile), other.CertPEM(), 0o644)
		}, "ca.key does not hold the key of ca.crt"},
		{"key missing", func(dir string) error { return os.Remove(filepath.Join(dir, KeyFile)) }, "is missing"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			mustCA(t, dir)
			if err := tc.spoil(dir); err != nil {
				t.Fatal(err)
			}
			_, err := LoadOrCreateCA(dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestKeyWithoutCertificate: a start killed between writing the key and the
// certificate leaves a key alone, which the next start replaces.
func TestKeyWithoutCertificate(t *testing.T) {
	dir := t.TempDir()
	first := mustCA(t, dir)
	if err := os.Remove(filepath.Join(dir, CertFile)); err != nil {
		t.Fatal(err)
	}
	second := mustCA(t, dir)
	if bytes.Equal(first.CertPEM(), second.CertPEM()) {
		t.Fatal("no new CA was made")
	}
}

func TestExpiredCA(t *testing.T) {
	dir := t.TempDir()
	mustCA(t, dir)
	later := func() time.Time { return time.Now().Add(CAValidity + time.Hour) }
	if _, err := loadOrCreate(dir, later); err == nil || !strings.Contains(err.Error(), "expired") || !strings.Contains(err.Error(), "move") {
		t.Fatalf("loading an expired CA: %v, want an error saying it expired and what to do", err)
	}
}
