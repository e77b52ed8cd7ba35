package fsimage

import (
	"io/fs"
	"path"
	"strings"

	"github.com/cairn-backup/cairn/internal/core"
)

// SparseFile is implemented by a File that knows where its data lie. Copies
// use it to leave holes as holes without reading them.
type SparseFile interface {
	File
	// NextData returns the first range [start, end) at or after off that may
	// hold non-zero bytes: everything in [off, start) reads as zeros. With
	// nothing after off it returns start == end == Size(). Unwritten
	// (preallocated) ranges count as holes.
	NextData(off int64) (start, end int64, err error)
}

// MaxSymlinks is how many symbolic links Resolve follows in one path before
// it gives up, as Linux's path lookup does (40).
const MaxSymlinks = 40

// ValidName reports whether name can be one directory entry: not empty, not
// "." or "..", no '/' and no NUL byte. Readers refuse directories with other
// names (as corrupt), so that a caller can join names into paths safely.
func ValidName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\x00")
}

// Resolve returns the path in fsys that p names once the symbolic links in
// it are followed inside the image: absolute link targets start again at the
// image's root and ".." never climbs above it; nothing on the host is ever
// looked at. The last component is followed too when followLast is set. p
// is absolute or taken as relative to the root. It fails on a missing
// component, a component that is not a directory where one is needed, and
// after MaxSymlinks links (a loop).
func Resolve(fsys FS, p string, followLast bool) (string, error) {
	todo := splitPath(p)
	resolved := "/"
	links := 0
	for len(todo) > 0 {
		comp := todo[0]
		todo = todo[1:]
		switch comp {
		case ".":
			continue
		case "..":
			resolved = path.Dir(resolved)
			continue
		}
		next := path.Join(resolved, comp)
		fi, err := fsys.Lstat(next)
		if err != nil {
			return "", err
		}
		last := len(todo) == 0
		switch {
		case fi.Mode.Type() == fs.ModeSymlink && (!last || followLast):
			links++
			if links > MaxSymlinks {
				return "", core.Invalid("%s: %s: more than %d symbolic links (a loop?)", fsys.Type(), p, MaxSymlinks)
			}
			target, err := fsys.Readlink(next)
			if err != nil {
				return "", err
			}
			if strings.HasPrefix(target, "/") {
				resolved = "/"
			}
			todo = append(splitPath(target), todo...)
		case !last && !fi.Mode.IsDir():
			return "", NotDir(fsys.Type(), next, core.DescribeMode(fi.Mode))
		default:
			resolved = next
		}
	}
	return resolved, nil
}

// splitPath splits p into its non-empty components.
func splitPath(p string) []string {
	var out []string
	for _, c := range strings.Split(p, "/") {
		if c != "" {
			out = append(out, c)
		}
	}
	return out
}
