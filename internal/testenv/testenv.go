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
