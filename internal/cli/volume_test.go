package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/internal/apitypes"
)

func TestTLSExportCredentials(t *testing.T) {
	export := apitypes.Export{ID: "eeeeeeee-2222-4222-8222-222222222222", VolumeID: vol1.ID, URI: "nbds://127.0.0.1:10809/k3y", Writable: true,
		TLS: true, State: "ready", CreatedAt: t0}
	plain := export
	plain.ID, plain.URI, plain.TLS = "eeeeeeee-3333-4333-8333-333333333333", "nbd://127.0.0.1:10810/p1a", false
	creds := apitypes.ExportCredentials{CACert: "CA PEM\n", ClientCert: "CERT PEM\n", ClientKey: "KEY PEM\n", Identity: "CN=cairn-project-x"}
	setup := func(f *fakeAPI, e apitypes.Export) {
		action(f, "POST /v1/volumes/web/exports", queued("t1", apitypes.OpExportCreate, "export", e.ID, vol1.ID))
		f.on("GET /v1/volumes/"+vol1.ID+"/exports/"+e.ID, 200, e)
		f.on("GET /v1/volumes/{volume}/exports/"+export.ID+"/credentials", 200, creds)
		f.on("GET /v1/volumes/{volume}/exports/"+plain.ID+"/credentials", 409, apiError("no_tls", "served without TLS"))
	}
	checkFiles := func(t *testing.T, dir string) {
		t.Helper()
		for name, want := range map[string]struct {
			data string
			mode os.FileMode
		}{
			"ca-cert.pem":     {creds.CACert, 0o644},
			"client-cert.pem": {creds.ClientCert, 0o644},
			"client-key.pem":  {creds.ClientKey, 0o600},
		} {
			path := filepath.Join(dir, name)
			data, err := os.ReadFile(path)
			st, serr := os.Stat(path)
			if err != nil || serr != nil || string(data) != want.data || st.Mode().Perm() != want.mode {
				t.Errorf("%s: %q %v, mode %v; want %q mode %04o", name, data, err, st.Mode(), want.data, want.mode)
			}
		}
	}

	t.Run("export with --tls-dir writes the credentials", func(t *testing.T) {
		f := newFakeAPI(t)
		setup(f, export)
		dir := filepath.Join(t.TempDir(), "creds")
		out, stderr, code := cairnAt(t, f, "volume", "export", "web", "--writable", "--tls-dir", dir)
		if code != 0 || out != export.URI+"\n" || stderr != "" {
			t.Fatalf("exit %d, stdout %q, stderr %q; want the URI alone", code, out, stderr)
		}
		checkFiles(t, dir)
	})
	t.Run("export without --tls-dir says how to get them", func(t *testing.T) {
		f := newFakeAPI(t)
		setup(f, export)
		out, stderr, code := cairnAt(t, f, "volume", "export", "web", "--writable")
		if code != 0 || out != export.URI+"\n" {
			t.Fatalf("exit %d, stdout %q", code, out)
		}
		if strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "--tls-dir") || !strings.Contains(stderr, export.ID) {
			t.Fatalf("stderr %q, want one line pointing to --tls-dir", stderr)
		}
	})
	t.Run("plain export ignores --tls-dir", func(t *testing.T) {
		f := newFakeAPI(t)
		setup(f, plain)
		dir := filepath.Join(t.TempDir(), "creds")
		out, stderr, code := cairnAt(t, f, "volume", "export", "web", "--tls-dir", dir)
		if code != 0 || out != plain.URI+"\n" || !strings.Contains(stderr, "without TLS") {
			t.Fatalf("exit %d, stdout %q, stderr %q", code, out, stderr)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Fatalf("credentials directory made for a plain export: %v", err)
		}
	})
	t.Run("export-credentials replaces a loose key file", func(t *testing.T) {
		f := newFakeAPI(t)
		setup(f, export)
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "client-key.pem"), []byte("old"), 0o644); err != nil {
			t.Fatal(err)
		}
		out, stderr, code := cairnAt(t, f, "volume", "export-credentials", "web", export.ID, "--tls-dir", dir)
		if code != 0 || !strings.Contains(out, creds.Identity) {
			t.Fatalf("exit %d, stdout %q, stderr %q", code, out, stderr)
		}
		checkFiles(t, dir)
	})
	t.Run("export-credentials of a plain export", func(t *testing.T) {
		f := newFakeAPI(t)
		setup(f, plain)
		_, stderr, code := cairnAt(t, f, "volume", "export-credentials", "web", plain.ID, "--tls-dir", t.TempDir())
		if code != 4 || !strings.Contains(stderr, "without TLS") {
			t.Fatalf("exit %d, stderr %q; want 4", code, stderr)
		}
	})
	t.Run("--tls-dir needs the wait", func(t *testing.T) {
		f := newFakeAPI(t)
		setup(f, export)
		if _, _, code := cairnAt(t, f, "volume", "export", "web", "--tls-dir", t.TempDir(), "--no-wait"); code != 2 {
			t.Fatalf("exit %d, want 2", code)
		}
		if _, _, code := cairnAt(t, f, "volume", "export-credentials", "web", export.ID); code != 2 {
			t.Fatalf("export-credentials without --tls-dir: exit %d, want 2", code)
		}
	})
}
