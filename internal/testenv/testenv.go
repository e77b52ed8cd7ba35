// Package testenv holds small helpers shared by tests that run real
// components (QEMU's tools, PostgreSQL, an S3 server).
//
// Project rule: a test that needs a real component FAILS when the component is
// missing; it never skips. `make test` installs everything the tests need, so a
// missing tool means a broken environment, and a skip would hide it.
package testenv

import (
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// RequireTool fails the test at once when any of the named executables is not
// found in PATH.
func RequireTool(t testing.TB, names ...string) {
	t.Helper()
	for _, name := range names {
		if _, err := exec.LookPath(name); err != nil {
			t.Fatalf("%s not found in PATH: run `make test`, which installs QEMU's tools and the other test dependencies (%v)", name, err)
		}
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago: it
// listens on port 0, notes the port the kernel chose and closes the listener.
// Another process may take the port before the caller binds it; callers that
// cannot tolerate that must retry.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		t.Fatalf("closing the port probe: %v", err)
	}
	return port
}

// QemuIO runs qemu-io with args and returns its output. It fails the test
// when qemu-io fails or reports a failed pattern check: some qemu-io versions
// exit 0 after "Pattern verification failed", so the text is what counts.
func QemuIO(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command("qemu-io", args...).CombinedOutput()
	if err != nil || strings.Contains(string(out), "Pattern verification failed") || strings.Contains(string(out), "failed:") {
		t.Fatalf("qemu-io %q: %v\n%s", args, err, out)
	}
	return string(out)
}

// PatternMatches reports whether qemu-io's read -P found its pattern; any
// other failure of qemu-io fails the test.
func PatternMatches(t testing.TB, args ...string) bool {
	t.Helper()
	out, err := exec.Command("qemu-io", args...).CombinedOutput()
	if strings.Contains(string(out), "Pattern verification failed") {
		return false
	}
	if err != nil {
		t.Fatalf("qemu-io %q: %v\n%s", args, err, out)
	}
	return true
}

// NBDSize asks nbdinfo for the size of an NBD export.
func NBDSize(t testing.TB, uri string) int64 {
	t.Helper()
	out, err := exec.Command("nbdinfo", "--size", uri).CombinedOutput()
	if err != nil {
		t.Fatalf("nbdinfo --size %s: %v\n%s", uri, err, out)
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		t.Fatalf("nbdinfo --size %s: %q is not a size", uri, out)
	}
	return v
}

// TLSQemuIO runs qemu-io against an NBD export that requires TLS, with the
// client credentials in credDir (QEMU's layout: ca-cert.pem, client-cert.pem,
// client-key.pem; "" = a client without TLS), and reports whether every
// command succeeded, with the output. The client is read-only unless a
// command writes.
func TLSQemuIO(host string, port int, name, credDir string, cmds ...string) (string, bool) {
	opts := "driver=nbd,host=" + host + ",port=" + strconv.Itoa(port) + ",export=" + name
	args := []string{"-r"}
	for _, c := range cmds {
		if strings.HasPrefix(c, "write") {
			args = nil
		}
	}
	if credDir != "" {
		args = append(args, "--object", "tls-creds-x509,id=tls0,endpoint=client,dir="+credDir)
		opts += ",tls-creds=tls0"
	}
	args = append(args, "--image-opts", opts)
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out, err := exec.Command("qemu-io", args...).CombinedOutput()
	ok := err == nil && !strings.Contains(string(out), "failed") && !strings.Contains(string(out), "can't open")
	return string(out), ok
}
