package qemu

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/testenv"
)

// requireQEMU fails the test when QEMU's tools are missing (never skips).
func requireQEMU(t *testing.T) {
	t.Helper()
	testenv.RequireTool(t, "qemu-img", "qemu-io", "qemu-nbd", "qemu-storage-daemon", "nbdinfo")
}

// shortTempDir is a temporary directory with a short path: unix socket paths
// must fit in 107 bytes, and t.TempDir paths carry the whole test name.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "cq")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func qemuIO(t *testing.T, args ...string) string { return testenv.QemuIO(t, args...) }

func patternMatches(t *testing.T, args ...string) bool { return testenv.PatternMatches(t, args...) }

// writeFile writes pattern p at off..off+n of a qcow2 image no one holds.
func writeFile(t *testing.T, path, p, off, n string) {
	t.Helper()
	qemuIO(t, "-f", "qcow2", "-c", "write -P "+p+" "+off+" "+n, path)
}

// readFile checks pattern p at off..off+n of an image (read-only, shared).
func readFile(t *testing.T, path, format, p, off, n string) bool {
	t.Helper()
	return patternMatches(t, "-r", "-U", "-f", format, "-c", "read -P "+p+" "+off+" "+n, path)
}

// writeNBD writes through an NBD export.
func writeNBD(t *testing.T, uri, p, off, n string) {
	t.Helper()
	qemuIO(t, "-f", "raw", "-c", "write -P "+p+" "+off+" "+n, uri)
}

// readNBD checks a pattern through an NBD export (read-only client).
func readNBD(t *testing.T, uri, p, off, n string) bool {
	t.Helper()
	return patternMatches(t, "-r", "-f", "raw", "-c", "read -P "+p+" "+off+" "+n, uri)
}

func snapshotList(t *testing.T, path string) string {
	t.Helper()
	out, err := exec.Command("qemu-img", "snapshot", "-l", "-U", path).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img snapshot -l: %v\n%s", err, out)
	}
	return string(out)
}

// processGone reports whether pid has exited (or is a zombie).
func processGone(pid int) bool {
	return waitGone(pid, 0) == nil
}
