package ext4

import (
	"bytes"
	"path"
	"strings"

	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/fsimage"
)

var _ fsimage.FS = (*FS)(nil)
var _ fsimage.SparseFile = (*content)(nil)

// lookup finds the inode of p (absolute, slash separated; "/" is the root)
// without following symbolic links, and returns it with the cleaned path.
func (f *FS) lookup(p string) (*inode, string, error) {
	p = path.Clean("/" + p)
	in, err := f.readInode(rootIno)
	if err != nil {
		return nil, p, err
	}
	if !in.isDir() {
		return nil, p, corrupt("the root inode is not a directory (mode 0%o)", in.mode)
	}
	if p == "/" {
		return in, p, nil
	}
	done := ""
	for _, comp := range strings.Split(p[1:], "/") {
		if !in.isDir() {
			return nil, p, fsimage.NotDir("ext4", done, core.DescribeMode(in.fileMode()))
		}
		l, err := f.readDir(in)
		if err != nil {
			return nil, p, err
		}
		done += "/" + comp
		ino, ok := l.index[comp]
		if !ok {
			return nil, p, fsimage.NotExist("ext4", done)
		}
		if in, err = f.readInode(ino); err != nil {
			return nil, p, err
		}
	}
	return in, p, nil
}

// Lstat describes p without following a final symbolic link.
func (f *FS) Lstat(p string) (fsimage.FileInfo, error) {
	in, clean, err := f.lookup(p)
	if err != nil {
		return fsimage.FileInfo{}, err
	}
	name := path.Base(clean)
	if clean == "/" {
		name = ""
	}
	return in.info(name), nil
}

// ReadDir lists directory p, sorted by name, without "." and "..".
func (f *FS) ReadDir(p string) ([]fsimage.FileInfo, error) {
	in, clean, err := f.lookup(p)
	if err != nil {
		return nil, err
	}
	if !in.isDir() {
		return nil, fsimage.NotDir("ext4", clean, core.DescribeMode(in.fileMode()))
	}
	l, err := f.readDir(in)
	if err != nil {
		return nil, err
	}
	out := make([]fsimage.FileInfo, 0, len(l.entries))
	for _, e := range l.entries {
		child, err := f.readInode(e.ino)
		if err != nil {
			return nil, err
		}
		out = append(out, child.info(e.name))
	}
	return out, nil
}

// Readlink returns the target of symbolic link p.
func (f *FS) Readlink(p string) (string, error) {
	in, clean, err := f.lookup(p)
	if err != nil {
		return "", err
	}
	if !in.isSymlink() {
		return "", core.Invalid("ext4: %s is %s, not a symbolic link", clean, core.DescribeMode(in.fileMode()))
	}
	return f.readlink(in)
}

// maxSymlinkSize bounds a slow symbolic link's target: the kernel keeps it
// in one block, and PATH_MAX is 4096.
const maxSymlinkSize = 65536

func (f *FS) readlink(in *inode) (string, error) {
	if in.flags&flagEncrypt != 0 {
		return "", unsupported("symbolic link inode %d is encrypted (fscrypt)", in.ino)
	}
	if in.size == 0 || in.size >= uint64(f.blockSize) || in.size > maxSymlinkSize {
		return "", corrupt("symbolic link inode %d: target of %d bytes", in.ino, in.size)
	}
	var target []byte
	if in.flags&flagInlineData == 0 && in.size < iBlockLen {
		target = in.block[:in.size] // a fast symlink: the target is in i_block
	} else {
		c, err := f.openContent(in)
		if err != nil {
			return "", err
		}
		target = make([]byte, in.size)
		if _, err := c.ReadAt(target, 0); err != nil {
			return "", err
		}
	}
	if bytes.IndexByte(target, 0) >= 0 {
		return "", corrupt("symbolic link inode %d: target %q holds a NUL byte", in.ino, target)
	}
	return string(target), nil
}

// Open opens regular file p for reading. The File also implements
// fsimage.SparseFile.
func (f *FS) Open(p string) (fsimage.File, error) {
	in, clean, err := f.lookup(p)
	if err != nil {
		return nil, err
	}
	if !in.isRegular() {
		return nil, core.Invalid("ext4: %s is %s, not a regular file", clean, core.DescribeMode(in.fileMode()))
	}
	c, err := f.openContent(in)
	if err != nil {
		return nil, err
	}
	return c, nil
}
