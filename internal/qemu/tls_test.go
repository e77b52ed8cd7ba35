package qemu

import (
	"github.com/cairn-backup/cairn/internal/testenv"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/pki"
)

// tlsFixture is a CA with a server credentials directory and client
// credentials directories in QEMU's layouts.
type tlsFixture struct {
	server  string            // ca-cert.pem, server-cert.pem, server-key.pem
	clients map[string]string // common name -> dir with ca-cert.pem, client-cert.pem, client-key.pem
}

func newTLSFixture(t *testing.T, dir string, clients ...string) tlsFixture {
	t.Helper()
	ca, err := pki.LoadOrCreateCA(filepath.Join(dir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	write := func(sub, name string, data []byte) string {
		d := filepath.Join(dir, sub)
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
		return d
	}
	f := tlsFixture{clients: map[string]string{}}
	cert, key, err := ca.IssueServer([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	write("server", "ca-cert.pem", ca.CertPEM())
	write("server", "server-cert.pem", cert)
	f.server = write("server", "server-key.pem", key)
	for _, cn := range clients {
		cert, key, err := ca.IssueClient(cn, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		write("client-"+cn, "ca-cert.pem", ca.CertPEM())
		write("client-"+cn, "client-cert.pem", cert)
		f.clients[cn] = write("client-"+cn, "client-key.pem", key)
	}
	return f
}

// tlsIO runs qemu-io against a TLS export with the credentials in credDir
// ("" = no TLS at all) and returns its output and whether it succeeded. The
// client is read-only unless a command writes.
func tlsIO(port int, name, credDir string, cmds ...string) (string, bool) {
	return testenv.TLSQemuIO("127.0.0.1", port, name, credDir, cmds...)
}

// TestTLSExports pins the QEMU 7.2 command lines of TLS exports: the live
// daemon and the snapshot server admit the client identity they were given,
// and refuse another identity of the same CA and a client without TLS.
func TestTLSExports(t *testing.T) {
	requireQEMU(t)
	ctx := testCtx(t)
	dir := shortTempDir(t)
	img := newImage(t, ctx, dir, 8*mib)
	fx := newTLSFixture(t, dir, "cairn-project-a", "cairn-project-b")
	runDir := filepath.Join(dir, "run")
	allowed, other := fx.clients["cairn-project-a"], fx.clients["cairn-project-b"]

	sd := startDaemon(t, ctx, DaemonConfig{Image: img, RunDir: runDir, ID: "vol-1", ExportName: "live", Writable: true,
		TLS: &TLSServer{Dir: fx.server, Identity: "CN=cairn-project-a"}})
	if want := "nbds://127.0.0.1:" + strconv.Itoa(sd.Port()) + "/live"; sd.URI() != want {
		t.Fatalf("URI %s, want %s", sd.URI(), want)
	}
	if out, ok := tlsIO(sd.Port(), "live", allowed, "write -P 0x5a 0 64k", "read -P 0x5a 0 64k"); !ok {
		t.Fatalf("write with the admitted identity:\n%s", out)
	}
	if out, ok := tlsIO(sd.Port(), "live", other, "read 0 64k"); ok {
		t.Fatalf("another identity of the same CA was admitted:\n%s", out)
	}
	if out, ok := tlsIO(sd.Port(), "live", "", "read 0 64k"); ok || !strings.Contains(out, "TLS") {
		t.Fatalf("a client without TLS: ok=%v, want a TLS refusal:\n%s", ok, out)
	}
	// QMP still works beside TLS clients, and the export is still up after a resize.
	if err := sd.SnapshotCreate(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	if err := sd.Resize(ctx, 16*mib); err != nil {
		t.Fatal(err)
	}
	if out, ok := tlsIO(sd.Port(), "live", allowed, "write -P 0x77 0 64k"); !ok {
		t.Fatalf("write after the resize:\n%s", out)
	}

	ss, err := StartSnapshotServer(ctx, SnapshotServerConfig{Image: img, Tag: "s1", RunDir: runDir, ID: "exp-1", ExportName: "snap",
		TLS: &TLSServer{Dir: fx.server, Identity: "CN=cairn-project-a"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ss.Stop(ctx) })
	for i := 0; i < 2; i++ { // persistent: it serves one client after the other
		if out, ok := tlsIO(ss.Port(), "snap", allowed, "read -P 0x5a 0 64k"); !ok {
			t.Fatalf("snapshot read %d with the admitted identity:\n%s", i, out)
		}
	}
	if out, ok := tlsIO(ss.Port(), "snap", other, "read 0 64k"); ok {
		t.Fatalf("another identity read the snapshot:\n%s", out)
	}
	if out, ok := tlsIO(ss.Port(), "snap", "", "read 0 64k"); ok {
		t.Fatalf("a client without TLS read the snapshot:\n%s", out)
	}
	if !strings.HasPrefix(ss.URI(), "nbds://") {
		t.Fatalf("snapshot server URI %s, want nbds://", ss.URI())
	}
}

func TestTLSServerNeedsDirAndIdentity(t *testing.T) {
	requireQEMU(t)
	ctx := testCtx(t)
	dir := shortTempDir(t)
	img := newImage(t, ctx, dir, mib)
	_, err := StartStorageDaemon(ctx, DaemonConfig{Image: img, RunDir: filepath.Join(dir, "run"), ID: "v", ExportName: "x",
		TLS: &TLSServer{Dir: dir}})
	if err == nil || !strings.Contains(err.Error(), "client identity") {
		t.Fatalf("TLS without an identity: %v", err)
	}
}
