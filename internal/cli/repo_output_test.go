package cli

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/cairn-backup/cairn/internal/core"
)

// firstBlockDevice returns a block device node of this machine, or "".
func firstBlockDevice() string {
	entries, _ := os.ReadDir("/dev")
	for _, e := range entries {
		if e.Type()&os.ModeDevice != 0 && e.Type()&os.ModeCharDevice == 0 {
			return filepath.Join("/dev", e.Name())
		}
	}
	return ""
}

// An image restore's --to-file is checked before any work: only a regular
// file (or a new name) is written, through a symbolic link its target.
func TestImageOutput(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "old.raw")
	os.WriteFile(file, []byte("old"), 0o640)
	os.Symlink("old.raw", filepath.Join(dir, "link.raw"))
	os.Symlink("missing/x.raw", filepath.Join(dir, "dangling.raw"))
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	type outCase struct {
		out       string
		overwrite bool
		want      string // the path written, or "" for a refusal
		qcow2     bool
		kind      core.Kind
		msg       string
	}
	tests := []outCase{
		{out: filepath.Join(dir, "new.raw"), want: filepath.Join(dir, "new.raw")},
		{out: filepath.Join(dir, "new.img"), want: filepath.Join(dir, "new.img")},
		{out: filepath.Join(dir, "new.qcow2"), want: filepath.Join(dir, "new.qcow2"), qcow2: true},
		{out: filepath.Join(dir, "NEW.QCOW2"), want: filepath.Join(dir, "NEW.QCOW2"), qcow2: true},
		{out: file, kind: core.KindConflict, msg: "exists: remove it or use --overwrite"},
		{out: file, overwrite: true, want: file},
		{out: filepath.Join(dir, "link.raw"), overwrite: true, want: file},
		{out: filepath.Join(dir, "link.raw"), kind: core.KindConflict, msg: file + " exists"},
		{out: filepath.Join(dir, "disk.vmdk"), kind: core.KindInvalid, msg: "not VMDK: restore to " + filepath.Join(dir, "disk") + ".raw"},
		{out: filepath.Join(dir, "disk.VHDX"), kind: core.KindInvalid, msg: "not VHDX"},
		{out: dir, overwrite: true, kind: core.KindInvalid, msg: "is a directory: give the image file's name"},
		{out: filepath.Join(dir, "fifo"), overwrite: true, kind: core.KindInvalid, msg: "is a fifo, not a regular file"},
		{out: filepath.Join(dir, "dangling.raw"), overwrite: true, kind: core.KindInvalid, msg: "is a symbolic link to nothing"},
		{out: "/dev/null", overwrite: true, kind: core.KindInvalid, msg: "is a character device"},
	}
	if dev := firstBlockDevice(); dev != "" {
		tests = append(tests, outCase{out: dev, overwrite: true, kind: core.KindInvalid, msg: "is a block device: --to-file writes an image file"})
	}
	for _, tc := range tests {
		got, qcow2, err := imageOutput(tc.out, tc.overwrite)
		if tc.want != "" {
			if err != nil || got != tc.want || qcow2 != tc.qcow2 {
				t.Errorf("imageOutput(%s, %v) = %q, %v, %v; want %q, %v", tc.out, tc.overwrite, got, qcow2, err, tc.want, tc.qcow2)
			}
			continue
		}
		if err == nil || core.KindOf(err) != tc.kind || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("imageOutput(%s, %v): error %v (kind %v); want kind %v with %q", tc.out, tc.overwrite, err, core.KindOf(err), tc.kind, tc.msg)
		}
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "old" {
		t.Fatalf("the checks changed %s: %q, %v", file, b, err)
	}
}

// A restored image takes the mode and owner of the file it replaces; a new
// one is readable by its owner only.
func TestTakeOver(t *testing.T) {
	dir := t.TempDir()
	old := filepath.Join(dir, "old.raw")
	os.WriteFile(old, nil, 0o644)
	if err := os.Chmod(old, 0o640); err != nil {
		t.Fatal(err)
	}
	uid, gid := os.Getuid(), os.Getgid()
	if uid == 0 {
		uid, gid = 1234, 5678 // root can give a file away
		if err := os.Chown(old, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	restored := filepath.Join(dir, "restored")
	os.WriteFile(restored, []byte("new"), 0o600)
	if err := takeOver(restored, old); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(restored)
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Perm() != 0o640 || int(st.Uid) != uid || int(st.Gid) != gid {
		t.Errorf("restored over an image: mode %v owner %d:%d; want 0640 %d:%d", fi.Mode().Perm(), st.Uid, st.Gid, uid, gid)
	}
	fresh := filepath.Join(dir, "fresh")
	os.WriteFile(fresh, nil, 0o644)
	if err := os.Chmod(fresh, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := takeOver(fresh, filepath.Join(dir, "nothing-here.raw")); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(fresh); fi.Mode().Perm() != 0o600 {
		t.Errorf("a new image has mode %v, want 0600", fi.Mode().Perm())
	}
}
