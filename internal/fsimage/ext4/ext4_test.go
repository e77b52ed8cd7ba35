package ext4

import (
	"sync"
	"testing"

	"github.com/cairn-backup/cairn/internal/fsimage/fsimagetest"
)

// variants are the file system layouts every test of the source tree runs
// on: mkfs program, options and size.
var variants = []struct {
	name, kind, size string
	opts             []string
	skip             []string // paths mkfs gets wrong (see below)
}{
	{"ext4", "ext4", "64M", nil, nil},
	{"ext4-1k", "ext4", "64M", []string{"-b", "1024"}, nil},
	{"ext4-no64bit", "ext4", "64M", []string{"-O", "^64bit"}, nil},
	// mke2fs 1.47.0 -d with inline_data records a file that ends with a
	// hole with the size of its last data block (debugfs agrees).
	{"ext4-inline", "ext4", "64M", []string{"-O", "inline_data"}, []string{fsimagetest.SparseTailPath, fsimagetest.SparseFarPath}},
	{"ext4-inode128", "ext4", "64M", []string{"-I", "128"}, nil},
	{"ext4-nocsum", "ext4", "64M", []string{"-O", "^metadata_csum"}, nil},
	{"ext4-64k", "ext4", "64M", []string{"-b", "65536"}, nil},
	{"ext4-metabg", "ext4", "64M", []string{"-O", "meta_bg,^resize_inode", "-b", "1024"}, nil},
	{"ext4-bigalloc", "ext4", "64M", []string{"-O", "bigalloc", "-C", "16384"}, nil},
	{"ext4-noextent", "ext4", "64M", []string{"-O", "^extent,^64bit"}, nil},
	{"ext3", "ext3", "64M", nil, nil},
	{"ext2-1k", "ext2", "64M", []string{"-b", "1024"}, nil},
}

func TestSourceTree(t *testing.T) {
	src := sourceTree(t)
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			img := mkfs(t, v.kind, src, v.size, v.opts...)
			f := openImage(t, img)
			checkLayout(t, f, v.name)
			fsimagetest.CompareTree(t, f, src, fsimagetest.CompareOptions{IgnoreRoot: []string{"lost+found"}, Skip: v.skip})
		})
	}
}

// checkLayout makes sure the images hold the structures the tree is meant
// to exercise, so that a change in mkfs cannot make the tests vacuous.
func checkLayout(t *testing.T, f *FS, variant string) {
	t.Helper()
	get := func(p string) *inode {
		t.Helper()
		in, _, err := f.lookup(p)
		if err != nil {
			t.Fatalf("lookup(%s): %v", p, err)
		}
		return in
	}
	if f.blockSize == 65536 {
		return // one block holds all of bigdir, and 16 runs of frag
	}
	if in := get(fsimagetest.BigDirPath); in.flags&flagIndex == 0 {
		t.Errorf("%s is not an htree directory (flags 0x%x)", fsimagetest.BigDirPath, in.flags)
	}
	frag := get(fsimagetest.FragmentedPath)
	if f.incompat&incompatExtents != 0 && frag.flags&flagExtents != 0 {
		depth := le16(frag.block, 6)
		want := uint16(1)
		if f.blockSize == 1024 {
			want = 2
		}
		if depth < want {
			t.Errorf("%s: extent tree depth %d, want >= %d", fsimagetest.FragmentedPath, depth, want)
		}
	} else {
		far := get(fsimagetest.SparseFarPath)
		if f.blockSize == 1024 && le32(far.block, 4*14) == 0 {
			t.Errorf("%s uses no triple indirect block", fsimagetest.SparseFarPath)
		}
		if le32(get(fsimagetest.SparsePath).block, 4*13) == 0 {
			t.Errorf("%s uses no double indirect block", fsimagetest.SparsePath)
		}
	}
	if variant == "ext4-inline" {
		// libext2fs (hence mkfs -d) moves a directory to a block when
		// i_block is full: "several" is not inline, and no directory has
		// entries in system.data (TestInlineDirInAttribute crafts one).
		for _, p := range []string{"/hundred", "/few", "/tiny", "/slowlink", "/small"} {
			if get(p).flags&flagInlineData == 0 {
				t.Errorf("%s: no inline data", p)
			}
		}
		for _, p := range []string{"/hundred", "/slowlink"} {
			if _, rest, err := get(p).inlineData(); err != nil || len(rest) == 0 {
				t.Errorf("%s: nothing in system.data (%v)", p, err)
			}
		}
	}
	if f.inodeSize == 128 && variant != "ext4-inode128" && variant != "ext2-1k" {
		t.Errorf("inode size 128")
	}
}

// TestConcurrent reads the tree from several goroutines at once through one
// FS (run with -race).
func TestConcurrent(t *testing.T) {
	src := sourceTree(t)
	f := openImage(t, mkfs(t, "ext4", src, "64M", "-b", "1024"))
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			fsimagetest.CompareTree(t, f, src, fsimagetest.CompareOptions{IgnoreRoot: []string{"lost+found"}})
		})
	}
	wg.Wait()
}
