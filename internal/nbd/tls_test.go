package nbd

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/testenv"
)

// testPKI is a certificate authority and a server certificate for
// 127.0.0.1 signed by it, made for one test.
type testPKI struct {
	server *tls.Config // the server's side
	client *tls.Config // a client that trusts the CA
	caPEM  []byte
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "cairn nbd test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &testPKI{
		server: &tls.Config{
			Certificates: []tls.Certificate{{Certificate: [][]byte{der, caDER}, PrivateKey: key}},
			MinVersion:   tls.VersionTLS12,
		},
		client: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12},
		caPEM:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
	}
}

func TestStartTLS(t *testing.T) {
	pki := newTestPKI(t)
	x := newTestExports()
	srv := x.server(t)
	srv.TLSConfig = pki.server

	t.Run("required", func(t *testing.T) {
		tc, done := dial(t, srv, false)
		for _, o := range []struct {
			opt  uint32
			data []byte
		}{
			{optList, nil},
			{optInfo, goData("disk")},
			{optGo, goData("disk")},
			{optStructuredReply, nil},
			{optSetMetaContext, metaData("disk", contextAllocation)},
			{999, nil},
		} {
			tc.wantOptError(o.opt, o.data, repErrTLSReqd)
		}
		tc.wantOptError(optStartTLS, []byte{1}, repErrInvalid)
		tc.startTLS(pki.client)
		tc.wantOptError(optStartTLS, nil, repErrInvalid) // already running
		tc.mustAck(optStructuredReply, nil)
		tc.structured = true
		tc.goExport("disk")
		rep := tc.do(request{typ: cmdRead, handle: 1, offset: 2*MiB - 4096, length: 1 * MiB}, nil)
		if rep.errno != 0 || !bytes.Equal(rep.data, x.disk.snapshot()[2*MiB-4096:3*MiB-4096]) {
			t.Fatalf("read over TLS: errno %d or wrong bytes", rep.errno)
		}
		tc.disconnect(done)
	})
	t.Run("state before STARTTLS is forgotten", func(t *testing.T) {
		plain := x.server(t)
		plain.TLSConfig = pki.server
		tc, done := dial(t, plain, false)
		tc.startTLS(pki.client)
		tc.goExport("disk") // no structured replies negotiated after TLS
		rep := tc.do(request{typ: cmdRead, handle: 1, offset: 0, length: 4096}, nil)
		if rep.errno != 0 || len(rep.chunks) != 0 {
			t.Fatalf("read: errno %d, %d chunks, want a simple reply", rep.errno, len(rep.chunks))
		}
		tc.disconnect(done)
	})
	t.Run("export name before TLS closes", func(t *testing.T) {
		tc, done := dial(t, srv, false)
		tc.sendOption(optExportName, []byte("disk"))
		tc.wantClosed(done)
	})
	t.Run("option too long before TLS", func(t *testing.T) {
		tc, done := dial(t, srv, false)
		b := be.AppendUint64(nil, magicOption)
		b = be.AppendUint32(b, optList)
		tc.write(be.AppendUint32(b, 1<<20))
		if r := tc.readOptReply(); r.typ != repErrTLSReqd {
			t.Fatalf("%v, want NBD_REP_ERR_TLS_REQD", r)
		}
		tc.wantClosed(done)
	})
	t.Run("abort before TLS", func(t *testing.T) {
		tc, done := dial(t, srv, false)
		tc.mustAck(optAbort, nil)
		waitServe(t, done, false)
	})
	t.Run("client without fixed newstyle", func(t *testing.T) {
		tc, done := newClient(t, srv)
		tc.clientFlags(0)
		tc.wantClosed(done)
	})
	t.Run("failed TLS handshake", func(t *testing.T) {
		tc, done := dial(t, srv, false)
		tc.mustAck(optStartTLS, nil)
		tc.write([]byte("this is not a TLS client hello, not at all....."))
		tc.wantClosed(done)
	})
	t.Run("hello sent with STARTTLS", func(t *testing.T) {
		// A client that does not wait for the ACK: its TLS hello comes in
		// the same write as the option, so the server has it buffered
		// already when it starts TLS.
		client, done := pipeServer(t, srv)
		tc := greet(t, client)
		tc.clientFlags(clientFixedNewstyle)
		opt := be.AppendUint64(nil, magicOption)
		opt = be.AppendUint32(opt, optStartTLS)
		opt = be.AppendUint32(opt, 0)
		eager := &eagerConn{Conn: client, prefix: opt, r: tc.r, t: t}
		tlsc := tls.Client(eager, pki.client)
		if err := tlsc.Handshake(); err != nil {
			t.Fatalf("TLS handshake: %v", err)
		}
		if !eager.acked {
			t.Fatalf("no ACK to STARTTLS")
		}
		tc.c = tlsc
		tc.r = bufio.NewReader(tlsc)
		tc.goExport("disk")
		tc.disconnect(done)
	})
}

// eagerConn sends prefix with the first write, and reads an option reply
// ACK before the first read.
type eagerConn struct {
	net.Conn
	prefix []byte
	r      *bufio.Reader
	acked  bool
	t      testing.TB
}

func (c *eagerConn) Write(p []byte) (int, error) {
	if c.prefix != nil {
		b := append(c.prefix, p...)
		c.prefix = nil
		if _, err := c.Conn.Write(b); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func (c *eagerConn) Read(p []byte) (int, error) {
	if !c.acked {
		var h [20]byte
		if _, err := io.ReadFull(c.r, h[:]); err != nil {
			return 0, err
		}
		if be.Uint64(h[:]) != magicOptReply || be.Uint32(h[8:]) != optStartTLS || be.Uint32(h[12:]) != repAck || be.Uint32(h[16:]) != 0 {
			return 0, fmt.Errorf("reply to STARTTLS: %x, want an empty ACK", h)
		}
		c.acked = true
	}
	return c.r.Read(p)
}

// TestTLSQemuIO checks STARTTLS with QEMU's TLS client (GnuTLS) over TCP.
func TestTLSQemuIO(t *testing.T) {
	testenv.RequireTool(t, "qemu-io")
	pki := newTestPKI(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ca-cert.pem"), pki.caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	x := newTestExports()
	srv := x.server(t)
	srv.TLSConfig = pki.server
	port := startTCP(t, srv)
	if out, ok := testenv.TLSQemuIO("127.0.0.1", port, "disk", dir, "read -P 0x22 2M 1M", "read -P 0 1M 1M"); !ok {
		t.Fatalf("qemu-io over TLS failed:\n%s", out)
	}
	if out, ok := testenv.TLSQemuIO("127.0.0.1", port, "disk", "", "read 0 4k"); ok {
		t.Fatalf("qemu-io without TLS succeeded against a server that requires it:\n%s", out)
	} else if !strings.Contains(out, "TLS") {
		t.Errorf("qemu-io without TLS: the error does not mention TLS:\n%s", out)
	}
}
