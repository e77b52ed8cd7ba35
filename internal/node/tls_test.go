package node

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/pki"
)

// tlsCreds issues an export's server material and a client credentials
// directory (QEMU's client layout) for the identity CN=cn.
func tlsCreds(t *testing.T, ca *pki.CA, cn string) (*apitypes.NodeExportTLS, string) {
	t.Helper()
	cert, key, err := ca.IssueServer([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ccert, ckey, err := ca.IssueClient(cn, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, data := range map[string][]byte{"ca-cert.pem": ca.CertPEM(), "client-cert.pem": ccert, "client-key.pem": ckey} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return &apitypes.NodeExportTLS{CACert: string(ca.CertPEM()), ServerCert: string(cert), ServerKey: string(key),
		ClientIdentity: "CN=" + cn}, dir
}

// tlsRead reports whether a TLS client with the credentials in dir reads
// pattern p at the start of the export.
func tlsRead(port int, name, dir, p string) bool {
	out, err := exec.Command("qemu-io", "-r", "--object", "tls-creds-x509,id=tls0,endpoint=client,dir="+dir,
		"--image-opts", "driver=nbd,host=127.0.0.1,port="+strconv.Itoa(port)+",export="+name+",tls-creds=tls0",
		"-c", "read -P "+p+" 0 64k").CombinedOutput()
	return err == nil && !strings.Contains(string(out), "failed") && !strings.Contains(string(out), "can't open")
}

func TestTLSExportsWriteCredentialsAndRemoveThem(t *testing.T) {
	requireQEMU(t)
	data := shortTempDir(t)
	ca, err := pki.LoadOrCreateCA(filepath.Join(data, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	n := startNode(t, newFakeServer(), data)
	vol, tag := newID(), newID()
	n.mustDo(apitypes.Plan{Op: apitypes.OpVolumeCreate, VolumeID: vol, Size: 8 * mib})
	qemuIO(t, "-f", "qcow2", "-c", "write -P 0xAB 0 1M", n.volume(vol))
	n.mustDo(apitypes.Plan{Op: apitypes.OpSnapshotCreate, VolumeID: vol, Tag: tag})

	liveTLS, client := tlsCreds(t, ca, "cairn-project-p")
	_, stranger := tlsCreds(t, ca, "cairn-project-q")
	live := apitypes.NodeExport{ID: newID(), VolumeID: vol, Writable: true, Name: "live-" + newID(), TLS: liveTLS}
	live.Port = n.mustDo(apitypes.Plan{Op: apitypes.OpExportCreate, VolumeID: vol, Export: &live}).Port
	snapTLS, _ := tlsCreds(t, ca, "cairn-project-p")
	snapExp := apitypes.NodeExport{ID: newID(), VolumeID: vol, Tag: tag, Name: "snap-" + newID(), TLS: snapTLS}
	snapExp.Port = n.mustDo(apitypes.Plan{Op: apitypes.OpExportCreate, VolumeID: vol, Export: &snapExp}).Port

	for _, e := range []apitypes.NodeExport{live, snapExp} {
		dir := filepath.Join(data, "run", "tls", e.ID)
		for name, mode := range map[string]os.FileMode{"ca-cert.pem": 0o644, "server-cert.pem": 0o644, "server-key.pem": 0o600} {
			st, err := os.Stat(filepath.Join(dir, name))
			if err != nil || st.Mode().Perm() != mode {
				t.Fatalf("%s of export %s: %v, want mode %04o", name, e.ID, err, mode)
			}
		}
		if !tlsRead(e.Port, e.Name, client, "0xAB") {
			t.Fatalf("export %s refuses the admitted client", e.ID)
		}
		if tlsRead(e.Port, e.Name, stranger, "0xAB") {
			t.Fatalf("export %s admits another identity", e.ID)
		}
		if err := exec.Command("nbdinfo", nbdURI(e.Port, e.Name)).Run(); err == nil {
			t.Fatalf("export %s serves a client without TLS", e.ID)
		}
	}

	// Apply restarts the live export with its TLS.
	n.mustDo(apitypes.Plan{Op: apitypes.OpSnapshotApply, VolumeID: vol, Tag: tag, Exports: []apitypes.NodeExport{live}})
	if !tlsRead(live.Port, live.Name, client, "0xAB") {
		t.Fatal("the live export did not come back with TLS after apply")
	}

	n.mustDo(apitypes.Plan{Op: apitypes.OpExportDelete, VolumeID: vol, Export: &snapExp})
	if _, err := os.Stat(filepath.Join(data, "run", "tls", snapExp.ID)); !os.IsNotExist(err) {
		t.Fatalf("the stopped snapshot export's credentials remain: %v", err)
	}
	n.stop()
	if _, err := os.Stat(filepath.Join(data, "run", "tls", live.ID)); !os.IsNotExist(err) {
		t.Fatalf("the live export's credentials remain after the node stopped: %v", err)
	}

	// A crash leaves credentials behind; the next start clears them and
	// brings the export back with what the server hands it.
	stale := filepath.Join(data, "run", "tls", newID())
	if err := os.MkdirAll(stale, 0o700); err != nil {
		t.Fatal(err)
	}
	srv := newFakeServer()
	srv.volumes = apitypes.NodeVolumes{Volumes: []apitypes.NodeVolume{{ID: vol, State: "ready", Sidecar: *sidecarFor(vol, "v", tag),
		Exports: []apitypes.NodeExport{live}}}}
	n = startNode(t, srv, data)
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Fatalf("stale credentials survived the start: %v", err)
	}
	if !tlsRead(live.Port, live.Name, client, "0xAB") {
		t.Fatal("the live export did not come back with TLS after a restart")
	}

	// A plan without the material is refused, not served in the clear.
	bad := apitypes.NodeExport{ID: newID(), VolumeID: vol, Tag: tag, Name: "bad", TLS: &apitypes.NodeExportTLS{ClientIdentity: "CN=x"}}
	if res := n.do(apitypes.Plan{Op: apitypes.OpExportCreate, VolumeID: vol, Export: &bad}); res.Error == "" || res.ErrorCode != "invalid" {
		t.Fatalf("export with incomplete TLS: %+v, want invalid", res)
	}
}
