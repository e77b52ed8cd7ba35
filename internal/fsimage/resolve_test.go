package fsimage

import (
	"errors"
	"io/fs"
	"path"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/internal/core"
)

// memFS is a tree of directories and symbolic links for Resolve's tests:
// paths ending in "/" are directories, others map to link targets ("" for a
// regular file).
type memFS map[string]string

func (m memFS) Type() string { return "mem" }

func (m memFS) Lstat(p string) (FileInfo, error) {
	p = path.Clean(p)
	if p == "/" {
		return FileInfo{Mode: fs.ModeDir}, nil
	}
	// The parent must be a directory: FS methods follow no link.
	if dir := path.Dir(p); dir != "/" {
		fi, err := m.Lstat(dir)
		if err != nil {
			return FileInfo{}, err
		}
		if !fi.Mode.IsDir() {
			return FileInfo{}, NotDir("mem", dir, core.DescribeMode(fi.Mode))
		}
	}
	if _, ok := m[p+"/"]; ok {
		return FileInfo{Name: path.Base(p), Mode: fs.ModeDir}, nil
	}
	target, ok := m[p]
	if !ok {
		return FileInfo{}, NotExist("mem", p)
	}
	if target == "" {
		return FileInfo{Name: path.Base(p)}, nil
	}
	return FileInfo{Name: path.Base(p), Mode: fs.ModeSymlink}, nil
}

func (m memFS) Readlink(p string) (string, error) {
	if _, err := m.Lstat(p); err != nil {
		return "", err
	}
	return m[path.Clean(p)], nil
}

func (m memFS) ReadDir(string) ([]FileInfo, error) { return nil, errors.New("not used") }
func (m memFS) Open(string) (File, error)          { return nil, errors.New("not used") }

func TestResolve(t *testing.T) {
	m := memFS{
		"/etc/": "", "/etc/hosts": "", "/usr/": "", "/usr/bin/": "", "/usr/bin/sh": "",
		"/bin":       "usr/bin",
		"/abs":       "/usr/bin/sh",
		"/up":        "../../../../usr",
		"/loop1":     "loop2",
		"/loop2":     "/loop1",
		"/self":      "self",
		"/file-dir":  "etc/hosts",
		"/dangling":  "nowhere",
		"/usr/lib64": "../etc",
		"/chain0":    "chain1", "/chain1": "chain2", "/chain2": "/etc",
	}
	for _, c := range []struct {
		in         string
		followLast bool
		want       string // or the error's text
	}{
		{"/etc/hosts", false, "/etc/hosts"},
		{"etc/hosts", false, "/etc/hosts"},
		{"/bin/sh", false, "/usr/bin/sh"},
		{"/bin", false, "/bin"},
		{"/bin", true, "/usr/bin"},
		{"/abs", true, "/usr/bin/sh"},
		{"/up/bin/sh", false, "/usr/bin/sh"}, // ".." stops at the root
		{"/../../etc/./hosts", false, "/etc/hosts"},
		{"/usr/lib64/hosts", false, "/etc/hosts"},
		{"/chain0/hosts", false, "/etc/hosts"},
		{"/loop1/x", false, "more than 40 symbolic links"},
		{"/self", true, "more than 40 symbolic links"},
		{"/self", false, "/self"},
		{"/file-dir/x", false, "/etc/hosts is a regular file, not a directory"},
		{"/etc/hosts/x", false, "/etc/hosts is a regular file, not a directory"},
		{"/dangling/x", false, "/nowhere: no such file"},
		{"/nope", false, "/nope: no such file"},
		{"/", true, "/"},
	} {
		got, err := Resolve(m, c.in, c.followLast)
		if err != nil {
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("Resolve(%q, %v): %v, want %q", c.in, c.followLast, err, c.want)
			}
			continue
		}
		if got != c.want {
			t.Errorf("Resolve(%q, %v) = %q, want %q", c.in, c.followLast, got, c.want)
		}
	}
	_, err := Resolve(m, "/nope", false)
	if !errors.Is(err, fs.ErrNotExist) || !core.IsNotFound(err) {
		t.Errorf("missing path: %v is not a not-found error", err)
	}
	_, err = Resolve(m, "/etc/hosts/x", false)
	if !errors.Is(err, ErrNotDir) {
		t.Errorf("%v does not wrap ErrNotDir", err)
	}
}

func TestValidName(t *testing.T) {
	for name, want := range map[string]bool{
		"a": true, "with space": true, "ünï": true, "...": true, ".hidden": true, "new\nline": true,
		"": false, ".": false, "..": false, "a/b": false, "/": false, "nul\x00": false, "../x": false,
	} {
		if ValidName(name) != want {
			t.Errorf("ValidName(%q) = %v", name, !want)
		}
	}
}

func TestMkdev(t *testing.T) {
	for _, d := range [][2]uint32{{0, 0}, {1, 3}, {8, 17}, {259, 70000}, {4095, 1 << 20}, {1 << 20, 255}, {0xFFFFFFFF, 0xFFFFFFFF}} {
		dev := Mkdev(d[0], d[1])
		if Major(dev) != d[0] || Minor(dev) != d[1] {
			t.Errorf("Mkdev(%d, %d) = 0x%x: back to %d, %d", d[0], d[1], dev, Major(dev), Minor(dev))
		}
	}
	if Mkdev(8, 1) != 0x801 || Mkdev(259, 70000) != 0x11110370 {
		t.Errorf("Mkdev(8, 1) = 0x%x, Mkdev(259, 70000) = 0x%x", Mkdev(8, 1), Mkdev(259, 70000))
	}
}
