//go:build linux

package fsimagetest

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/cairn-backup/cairn/internal/testenv"
)

// RunTool runs a command and fails the test with its output when it fails;
// okCodes lists exit codes that count as success besides 0. A missing
// program fails the test through testenv.RequireTool.
func RunTool(t testing.TB, okCodes []int, name string, args ...string) {
	t.Helper()
	testenv.RequireTool(t, name)
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			for _, c := range okCodes {
				if ee.ExitCode() == c {
					return
				}
			}
		}
		t.Fatalf("%s %q: %v\n%s", name, args, err, out)
	}
}

// Mkfs makes a file system image of size ("64M") at a new path under
// t.TempDir() with mkfs.<kind> (ext2, ext3, ext4) and extra options, filled
// from src when src is not empty, then has e2fsck -fyD index its
// directories (htree). It returns the image's path.
func Mkfs(t testing.TB, kind, src, size string, opts ...string) string {
	t.Helper()
	testenv.RequireTool(t, "mkfs."+kind, "e2fsck")
	img := filepath.Join(t.TempDir(), "img.raw")
	args := append([]string{"-q", "-F"}, opts...)
	if src != "" {
		args = append(args, "-d", src)
	}
	args = append(args, img, size)
	RunTool(t, nil, "mkfs."+kind, args...)
	RunTool(t, []int{1}, "e2fsck", "-fyD", img)
	return img
}

// MakeWritable gives the owner write and search permission on every
// directory under dir, so that a tree with read-only directories can be
// removed without root.
func MakeWritable(dir string) {
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			if fi, err := d.Info(); err == nil {
				os.Chmod(p, fi.Mode().Perm()|0o700)
			}
		}
		return nil
	})
}

// TempDir is t.TempDir, made writable again before it is removed.
func TempDir(t testing.TB) string {
	t.Helper()
	d := t.TempDir()
	t.Cleanup(func() { MakeWritable(d) })
	return d
}
