package e2e

import (
	"github.com/cairn-backup/cairn/internal/testenv"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/client"
	"github.com/cairn-backup/cairn/internal/core"
)

// nbdsTarget splits an nbds://HOST:PORT/NAME URI.
func nbdsTarget(t *testing.T, uri string) (host string, port int, name string) {
	t.Helper()
	rest, ok := strings.CutPrefix(strings.TrimSpace(uri), "nbds://")
	hostport, name, ok2 := strings.Cut(rest, "/")
	h, p, ok3 := strings.Cut(hostport, ":")
	n, err := strconv.Atoi(p)
	if !ok || !ok2 || !ok3 || err != nil || name == "" {
		t.Fatalf("export URI %q: want nbds://HOST:PORT/NAME", uri)
	}
	return h, n, name
}

// tlsQemuIO runs qemu-io commands against a TLS export as a client with the
// credentials in credDir ("" = a client without TLS) and reports whether they
// all succeeded, with the output. Read-only unless a command writes.
func tlsQemuIO(t *testing.T, uri, credDir string, cmds ...string) (string, bool) {
	t.Helper()
	host, port, name := nbdsTarget(t, uri)
	return testenv.TLSQemuIO(host, port, name, credDir, cmds...)
}

// writeCreds writes API credentials in QEMU's client layout.
func writeCreds(t *testing.T, cr apitypes.ExportCredentials) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range map[string]string{"ca-cert.pem": cr.CACert, "client-cert.pem": cr.ClientCert, "client-key.pem": cr.ClientKey} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestExportTLS runs exports over TLS on loopback (--export-tls) with QEMU's
// own client: only the project's certificate gets in, through restarts.
func TestExportTLS(t *testing.T) {
	data := t.TempDir()
	tlsArgs := []string{"--export-tls"}
	srv := startServer(t, serverOpts{data: data, extraArgs: tlsArgs})
	ctx := testCtx(t)
	admin := srv.Client(t)

	// The CA was made at the first start.
	if st, err := os.Stat(filepath.Join(data, "pki", "ca.key")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("DATA/pki/ca.key: %v %v, want mode 0600", st, err)
	}
	caPEM, err := os.ReadFile(filepath.Join(data, "pki", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}

	waitOK(t, admin)(admin.CreateVolume(ctx, apitypes.VolumeCreate{Name: "vol", Size: 4 << 20}))
	creds := filepath.Join(t.TempDir(), "creds")
	liveURI := strings.TrimSpace(cliOK(t, srv, "volume", "export", "vol", "--writable", "--tls-dir", creds))
	nbdsTarget(t, liveURI)
	for name, mode := range map[string]os.FileMode{"ca-cert.pem": 0o644, "client-cert.pem": 0o644, "client-key.pem": 0o600} {
		if st, err := os.Stat(filepath.Join(creds, name)); err != nil || st.Mode().Perm() != mode {
			t.Fatalf("%s from --tls-dir: %v %v, want mode %04o", name, st, err, mode)
		}
	}
	if got, _ := os.ReadFile(filepath.Join(creds, "ca-cert.pem")); string(got) != string(caPEM) {
		t.Fatal("the CLI wrote another CA certificate than DATA/pki/ca.crt")
	}

	if out, ok := tlsQemuIO(t, liveURI, creds, "write -P 0x5a 0 64k", "read -P 0x5a 0 64k"); !ok {
		t.Fatalf("write and read back over TLS:\n%s", out)
	}
	if out, ok := tlsQemuIO(t, liveURI, "", "read 0 64k"); ok {
		t.Fatalf("a client without TLS credentials read the export:\n%s", out)
	}
	host, port, name := nbdsTarget(t, liveURI)
	if out, err := exec.Command("qemu-io", "-r", "-f", "raw", "-c", "read 0 64k", "nbd://"+host+":"+strconv.Itoa(port)+"/"+name).CombinedOutput(); err == nil {
		t.Fatalf("a plain nbd:// client read the export:\n%s", out)
	}

	// A snapshot through QMP while the TLS export is live, then exported
	// read-only over TLS.
	waitOK(t, admin)(admin.CreateSnapshot(ctx, "vol", apitypes.SnapshotCreate{Name: "s1"}))
	if out, ok := tlsQemuIO(t, liveURI, creds, "write -P 0x77 0 64k"); !ok {
		t.Fatalf("write after the snapshot:\n%s", out)
	}
	snapCreds := t.TempDir()
	snapURI := strings.TrimSpace(cliOK(t, srv, "volume", "export", "vol@s1", "--tls-dir", snapCreds))
	if out, ok := tlsQemuIO(t, snapURI, snapCreds, "read -P 0x5a 0 64k"); !ok {
		t.Fatalf("snapshot read over TLS:\n%s", out)
	}
	if out, ok := tlsQemuIO(t, snapURI, snapCreds, "write -P 0x01 0 64k"); ok {
		t.Fatalf("a write to the read-only snapshot export succeeded:\n%s", out)
	}
	// Without --tls-dir the URI is still alone on stdout; stderr says what to do.
	vol2 := waitOK(t, admin)(admin.CreateVolume(ctx, apitypes.VolumeCreate{Name: "vol2", Size: 1 << 20}))
	out, errs, code := cli(t, srv, "volume", "export", "vol2")
	if code != 0 || !strings.HasPrefix(out, "nbds://") || strings.Count(out, "\n") != 1 || !strings.Contains(errs, "--tls-dir") {
		t.Fatalf("export without --tls-dir: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	es, err := admin.AllExports(ctx, vol2.ResourceID)
	if err != nil || len(es) != 1 || !es[0].TLS {
		t.Fatalf("exports of vol2: %+v %v, want one with tls", es, err)
	}
	// export-credentials writes the same layout for an existing export.
	laterCreds := t.TempDir()
	cliOK(t, srv, "volume", "export-credentials", "vol2", es[0].ID, "--tls-dir", laterCreds)
	if out, ok := tlsQemuIO(t, es[0].URI, laterCreds, "read 0 64k"); !ok {
		t.Fatalf("read with export-credentials' files:\n%s", out)
	}

	// Who gets credentials: the project's operators, not its viewers, and
	// nobody of another project.
	token := func(project, role string) *client.Client {
		k, err := admin.CreateToken(ctx, apitypes.TokenCreate{Name: role + "-" + project, Project: project, Role: role})
		if err != nil {
			t.Fatal(err)
		}
		return client.New(srv.URL, k.Secret, client.WithHTTPClient(validatingHTTP(t)))
	}
	if _, err := admin.CreateProject(ctx, apitypes.ProjectCreate{Name: "other"}); err != nil {
		t.Fatal(err)
	}
	live, err := admin.GetExport(ctx, "vol", exportID(t, admin, "vol", liveURI))
	if err != nil || !live.TLS || live.URI != liveURI {
		t.Fatalf("live export: %+v %v", live, err)
	}
	defaultProject, err := admin.GetProject(ctx, apitypes.DefaultProject)
	if err != nil {
		t.Fatal(err)
	}
	cr, err := token(apitypes.DefaultProject, apitypes.RoleOperator).ExportCredentials(ctx, "vol", live.ID)
	if err != nil || cr.Identity != "CN=cairn-project-"+defaultProject.ID {
		t.Fatalf("operator's credentials: %+v %v", cr.Identity, err)
	}
	if _, err := token(apitypes.DefaultProject, apitypes.RoleViewer).ExportCredentials(ctx, "vol", live.ID); core.KindOf(err) != core.KindForbidden {
		t.Fatalf("viewer's credentials: %v, want 403", err)
	}
	other := token("other", apitypes.RoleOperator)
	if _, err := other.ExportCredentials(ctx, live.VolumeID, live.ID); core.KindOf(err) != core.KindNotFound {
		t.Fatalf("another project's credentials for this export: %v, want 404", err)
	}

	// A certificate of another project, from the same CA, works on that
	// project's export and is refused by this one's.
	ot := waitOK(t, other)(other.CreateVolume(ctx, apitypes.VolumeCreate{Name: "theirs", Size: 1 << 20}))
	oe := waitOK(t, other)(other.CreateExport(ctx, ot.ResourceID, apitypes.ExportCreate{}))
	theirExport, err := other.GetExport(ctx, ot.ResourceID, oe.ResourceID)
	if err != nil {
		t.Fatal(err)
	}
	ocr, err := other.ExportCredentials(ctx, ot.ResourceID, theirExport.ID)
	if err != nil {
		t.Fatal(err)
	}
	otherCreds := writeCreds(t, ocr)
	if out, ok := tlsQemuIO(t, theirExport.URI, otherCreds, "read 0 64k"); !ok {
		t.Fatalf("the other project on its own export:\n%s", out)
	}
	if out, ok := tlsQemuIO(t, liveURI, otherCreds, "read 0 64k"); ok {
		t.Fatalf("the other project's certificate was admitted to this project's export:\n%s", out)
	}
	if out, ok := tlsQemuIO(t, snapURI, otherCreds, "read 0 64k"); ok {
		t.Fatalf("the other project's certificate was admitted to this project's snapshot export:\n%s", out)
	}

	// A restart brings the TLS exports back on their URIs, with the same CA:
	// the credentials written before still work.
	srv.Stop()
	srv = startServer(t, serverOpts{data: data, listen: srv.Listen, extraArgs: tlsArgs})
	admin = srv.Client(t)
	back, err := admin.GetExport(ctx, "vol", live.ID)
	if err != nil || back.URI != liveURI || !back.TLS {
		t.Fatalf("live export after restart: %+v %v, want %s with tls", back, err, liveURI)
	}
	if out, ok := tlsQemuIO(t, liveURI, creds, "read -P 0x77 0 64k", "write -P 0x33 64k 64k"); !ok {
		t.Fatalf("live export after restart:\n%s", out)
	}
	if out, ok := tlsQemuIO(t, snapURI, snapCreds, "read -P 0x5a 0 64k"); !ok {
		t.Fatalf("snapshot export after restart:\n%s", out)
	}
	if out, ok := tlsQemuIO(t, liveURI, otherCreds, "read 0 64k"); ok {
		t.Fatalf("after restart, the other project's certificate was admitted:\n%s", out)
	}
	waitOK(t, admin)(admin.CreateSnapshot(ctx, "vol", apitypes.SnapshotCreate{Name: "s2"}))

	// Unexport removes the export's credentials from the node.
	cliOK(t, srv, "volume", "unexport", "vol")
	if _, err := os.Stat(filepath.Join(data, "run", "tls", live.ID)); !os.IsNotExist(err) {
		t.Fatalf("credentials of the stopped export remain: %v", err)
	}
	if _, err := os.Stat(filepath.Join(data, "run", "tls", exportID(t, admin, "vol", snapURI))); err != nil {
		t.Fatalf("credentials of the running snapshot export: %v", err)
	}
}

// exportID finds the export of volume serving uri.
func exportID(t *testing.T, c *client.Client, volume, uri string) string {
	t.Helper()
	es, err := c.AllExports(testCtx(t), volume)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if e.URI == uri {
			return e.ID
		}
	}
	t.Fatalf("no export of %s at %s in %+v", volume, uri, es)
	return ""
}
