package service

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/meta/sqlite"
	"github.com/cairn-backup/cairn/internal/pki"
)

// tlsWorld is a service over a real metadata store with a CA, an admin
// acting in the default project and the local node.
type tlsWorld struct {
	t     *testing.T
	ctx   context.Context
	svc   *Service
	ca    *pki.CA
	admin Caller
	node  Caller
}

func newTLSWorld(t *testing.T, cfg Config) *tlsWorld {
	t.Helper()
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "cairn.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ca, err := pki.LoadOrCreateCA(filepath.Join(t.TempDir(), "pki"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.CA = ca
	w := &tlsWorld{t: t, ctx: ctx, svc: New(db, cfg), ca: ca}
	secret, err := w.svc.Bootstrap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, nodeSecret, err := w.svc.EnsureLocalNode(ctx, "local")
	if err != nil {
		t.Fatal(err)
	}
	w.admin = w.caller(secret, "")
	w.node = w.caller(nodeSecret, "")
	if _, err := w.svc.RegisterNode(ctx, w.node, apitypes.NodeRegister{Address: "127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *tlsWorld) caller(secret, project string) Caller {
	w.t.Helper()
	c, err := w.svc.Authenticate(w.ctx, secret, project)
	if err != nil {
		w.t.Fatal(err)
	}
	return c
}

// token makes a token of role in project and returns its caller.
func (w *tlsWorld) token(project, role string) Caller {
	w.t.Helper()
	k, err := w.svc.CreateToken(w.ctx, w.admin, apitypes.TokenCreate{Name: role + "-" + project, Project: project, Role: role})
	if err != nil {
		w.t.Fatal(err)
	}
	return w.caller(k.Secret, "")
}

// run plays the node for the next task: it claims it, checks it is task's,
// and completes it with res. It returns the plan.
func (w *tlsWorld) run(task apitypes.Task, err error, res apitypes.NodeComplete) apitypes.Plan {
	w.t.Helper()
	if err != nil {
		w.t.Fatal(err)
	}
	nt, err := w.svc.Claim(w.ctx, w.node, 0)
	if err != nil || nt == nil || nt.Task.ID != task.ID {
		w.t.Fatalf("claim: %+v %v, want task %s", nt, err, task.ID)
	}
	if err := w.svc.Complete(w.ctx, w.node, task.ID, res); err != nil {
		w.t.Fatal(err)
	}
	return nt.Plan
}

func parseCertPEM(t *testing.T, s string) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode([]byte(s))
	if block == nil {
		t.Fatalf("not PEM: %q", s)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestTLSExportLifecycle(t *testing.T) {
	w := newTLSWorld(t, Config{ExportTLS: true})
	ctx := w.ctx
	vt, err := w.svc.CreateVolume(ctx, w.admin, apitypes.VolumeCreate{Name: "v", Size: 1 << 20})
	w.run(vt, err, apitypes.NodeComplete{Size: 1 << 20})

	et, err := w.svc.CreateExport(ctx, w.admin, "v", apitypes.ExportCreate{Writable: true})
	plan := w.run(et, err, apitypes.NodeComplete{Port: 10809})
	identity := "CN=cairn-project-" + w.admin.ProjectID
	tls := plan.Export.TLS
	if tls == nil || tls.ClientIdentity != identity || tls.CACert != string(w.ca.CertPEM()) || tls.ServerKey == "" {
		t.Fatalf("plan's TLS: %+v, want the CA, a server pair and identity %s", tls, identity)
	}
	roots := x509.NewCertPool()
	roots.AddCert(w.ca.Certificate())
	if _, err := parseCertPEM(t, tls.ServerCert).Verify(x509.VerifyOptions{Roots: roots, DNSName: "127.0.0.1"}); err != nil {
		t.Fatalf("server certificate: %v", err)
	}

	e, err := w.svc.GetExport(ctx, w.admin, "v", et.ResourceID)
	if err != nil || !e.TLS || !strings.HasPrefix(e.URI, "nbds://127.0.0.1:10809/") {
		t.Fatalf("export: %+v %v, want tls and an nbds:// URI", e, err)
	}

	// Credentials: the project's operators and admins get a client
	// certificate with the identity the export admits.
	for _, c := range []Caller{w.admin, w.token(apitypes.DefaultProject, apitypes.RoleOperator)} {
		cr, err := w.svc.ExportCredentials(ctx, c, "v", e.ID)
		if err != nil {
			t.Fatal(err)
		}
		cert := parseCertPEM(t, cr.ClientCert)
		if cr.Identity != identity || cert.Subject.String() != identity || cr.CACert != string(w.ca.CertPEM()) {
			t.Fatalf("credentials: identity %q, subject %q", cr.Identity, cert.Subject)
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Fatal(err)
		}
		if left := time.Until(cert.NotAfter); left < 300*24*time.Hour || left > 366*24*time.Hour {
			t.Fatalf("client certificate valid for %v, want about a year", left)
		}
	}
	viewer := w.token(apitypes.DefaultProject, apitypes.RoleViewer)
	if _, err := w.svc.ExportCredentials(ctx, viewer, "v", e.ID); core.KindOf(err) != core.KindForbidden {
		t.Fatalf("viewer: %v, want forbidden", err)
	}
	if _, err := w.svc.CreateProject(ctx, w.admin, apitypes.ProjectCreate{Name: "other"}); err != nil {
		t.Fatal(err)
	}
	other := w.token("other", apitypes.RoleOperator)
	if _, err := w.svc.ExportCredentials(ctx, other, e.VolumeID, e.ID); core.KindOf(err) != core.KindNotFound {
		t.Fatalf("another project: %v, want not found", err)
	}
	if _, err := w.svc.ExportCredentials(ctx, w.admin, "v", core.NewID()); core.KindOf(err) != core.KindNotFound {
		t.Fatalf("unknown export: %v, want not found", err)
	}

	// A restarted node gets the export back with the same certificate.
	inv := apitypes.NodeInventory{Volumes: []apitypes.InventoryVolume{{ID: e.VolumeID, Present: true, Size: 1 << 20}}}
	back, err := w.svc.Inventory(ctx, w.node, inv)
	if err != nil || len(back.Volumes) != 1 || len(back.Volumes[0].Exports) != 1 {
		t.Fatalf("inventory: %+v %v", back, err)
	}
	if got := back.Volumes[0].Exports[0].TLS; got == nil || *got != *tls {
		t.Fatalf("restored export's TLS differs from the plan's:\n got %+v\nwant %+v", got, tls)
	}

	// Near its end the certificate is renewed when the export comes back.
	w.svc.now = func() time.Time { return time.Now().UTC().Add(exportCertValidity - 10*24*time.Hour) }
	back, err = w.svc.Inventory(ctx, w.node, inv)
	if err != nil || back.Volumes[0].Exports[0].TLS.ServerCert == tls.ServerCert {
		t.Fatalf("inventory near expiry: %v; the certificate was not renewed", err)
	}
	w.svc.now = func() time.Time { return time.Now().UTC() }

	// A new CA (the operator moved DATA/pki away): the export comes back
	// with a certificate of the new CA.
	newCA, err := pki.LoadOrCreateCA(filepath.Join(t.TempDir(), "pki"))
	if err != nil {
		t.Fatal(err)
	}
	w.svc.cfg.CA = newCA
	back, err = w.svc.Inventory(ctx, w.node, inv)
	if err != nil {
		t.Fatal(err)
	}
	got := back.Volumes[0].Exports[0].TLS
	newRoots := x509.NewCertPool()
	newRoots.AddCert(newCA.Certificate())
	if _, err := parseCertPEM(t, got.ServerCert).Verify(x509.VerifyOptions{Roots: newRoots, DNSName: "127.0.0.1"}); err != nil || got.CACert != string(newCA.CertPEM()) {
		t.Fatalf("after a CA change the export's certificate does not chain to the new CA: %v", err)
	}
}

func TestPlainExportOnLoopback(t *testing.T) {
	w := newTLSWorld(t, Config{})
	ctx := w.ctx
	vt, err := w.svc.CreateVolume(ctx, w.admin, apitypes.VolumeCreate{Name: "v", Size: 1 << 20})
	w.run(vt, err, apitypes.NodeComplete{Size: 1 << 20})
	et, err := w.svc.CreateExport(ctx, w.admin, "v", apitypes.ExportCreate{})
	plan := w.run(et, err, apitypes.NodeComplete{Port: 10810})
	if plan.Export.TLS != nil {
		t.Fatalf("a loopback export without --export-tls got TLS: %+v", plan.Export.TLS)
	}
	e, err := w.svc.GetExport(ctx, w.admin, "v", et.ResourceID)
	if err != nil || e.TLS || !strings.HasPrefix(e.URI, "nbd://127.0.0.1:10810/") {
		t.Fatalf("export: %+v %v", e, err)
	}
	if _, err := w.svc.ExportCredentials(ctx, w.admin, "v", e.ID); core.CodeOf(err) != "no_tls" {
		t.Fatalf("credentials of a plain export: %v, want 409 no_tls", err)
	}
}

// TestTLSBeyondLoopback: an export address, or a node address, beyond
// loopback turns TLS on without --export-tls.
func TestTLSBeyondLoopback(t *testing.T) {
	for _, tc := range []struct {
		name            string
		server, node    string
		wantTLS         bool
		wantHostsPrefix string
	}{
		{"loopback", "127.0.0.1", "127.0.0.1", false, ""},
		{"ipv6 loopback", "::1", "", false, ""},
		{"server beyond loopback", "192.0.2.10", "192.0.2.10", true, "192.0.2.10"},
		{"wildcard", "0.0.0.0", "", true, "0.0.0.0"},
		{"node beyond loopback", "127.0.0.1", "192.0.2.11", true, "127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newTLSWorld(t, Config{ExportAddress: tc.server})
			if _, err := w.svc.RegisterNode(w.ctx, w.node, apitypes.NodeRegister{Address: tc.node}); err != nil {
				t.Fatal(err)
			}
			vt, err := w.svc.CreateVolume(w.ctx, w.admin, apitypes.VolumeCreate{Name: "v", Size: 1 << 20})
			w.run(vt, err, apitypes.NodeComplete{Size: 1 << 20})
			et, err := w.svc.CreateExport(w.ctx, w.admin, "v", apitypes.ExportCreate{})
			plan := w.run(et, err, apitypes.NodeComplete{Port: 10811})
			if got := plan.Export.TLS != nil; got != tc.wantTLS {
				t.Fatalf("TLS %v, want %v", got, tc.wantTLS)
			}
			if !tc.wantTLS {
				return
			}
			c := parseCertPEM(t, plan.Export.TLS.ServerCert)
			var hosts []string
			for _, ip := range c.IPAddresses {
				hosts = append(hosts, ip.String())
			}
			if hosts[0] != tc.wantHostsPrefix || (tc.node != "" && !strings.Contains(strings.Join(hosts, " "), tc.node)) {
				t.Fatalf("server certificate names %v; want %s first and the node's %q", hosts, tc.wantHostsPrefix, tc.node)
			}
		})
	}
}
