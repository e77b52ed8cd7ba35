package mount

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/fsimage"
	"github.com/cairn-backup/cairn/internal/fsimage/fsimagetest"
	"github.com/cairn-backup/cairn/internal/testenv"
)

var (
	srcOnce sync.Once
	srcDir  string
)

// sourceTree is fsimagetest's standard tree, made once per test binary.
func sourceTree(t testing.TB) string {
	t.Helper()
	srcOnce.Do(func() {
		dir, err := os.MkdirTemp("", "cairn-mount-src-")
		if err != nil {
			t.Fatal(err)
		}
		srcDir = filepath.Join(dir, "src")
		if err := os.Mkdir(srcDir, 0o755); err != nil {
			t.Fatal(err)
		}
		fsimagetest.MakeTree(t, srcDir)
	})
	if srcDir == "" {
		t.Fatal("no source tree")
	}
	return srcDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if srcDir != "" {
		fsimagetest.MakeWritable(filepath.Dir(srcDir))
		os.RemoveAll(filepath.Dir(srcDir))
	}
	os.Exit(code)
}

var (
	imagesMu sync.Mutex
	images   = map[string][]byte{}
)

// treeImage returns an ext4 image of the source tree made with mkfs
// options opts, made once per test binary and shared: read only.
func treeImage(t testing.TB, opts ...string) []byte {
	t.Helper()
	imagesMu.Lock()
	defer imagesMu.Unlock()
	key := strings.Join(opts, " ")
	if img, ok := images[key]; ok {
		return img
	}
	img := readImage(t, fsimagetest.Mkfs(t, "ext4", sourceTree(t), "64M", opts...))
	images[key] = img
	return img
}

func readImage(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func openBytes(t testing.TB, img []byte) []Volume {
	t.Helper()
	vols, err := Open(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return vols
}

// partitionedDisk returns a disk of size bytes partitioned by sfdisk.
func partitionedDisk(t testing.TB, size int64, script string) string {
	t.Helper()
	testenv.RequireTool(t, "sfdisk")
	p := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sfdisk", "-q", "--no-reread", "--no-tell-kernel", p)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	return p
}

func TestOpenWholeDisk(t *testing.T) {
	src := sourceTree(t)
	vols := openBytes(t, treeImage(t))
	if len(vols) != 1 || vols[0].Partition != nil || vols[0].Err != nil || vols[0].FS.Type() != "ext4" || vols[0].Name() != "whole disk" {
		t.Fatalf("volumes %+v", vols)
	}
	fsimagetest.CompareTree(t, vols[0].FS, src, fsimagetest.CompareOptions{IgnoreRoot: []string{"lost+found"}})
}

// TestOpenGPT: an ext4 made in place with -E offset, swap, a partition of
// zeros, and one holding an unknown format that a registered reader takes.
func TestOpenGPT(t *testing.T) {
	disk := partitionedDisk(t, 40<<20, "label: gpt\nstart=2048, size=16M, type=linux, name=\"root\"\nsize=4M, type=swap\nsize=4M\nsize=4M\n")
	fsimagetest.RunTool(t, nil, "mkfs.ext4", "-q", "-F", "-E", "offset=1048576", disk, "16M")
	b := readImage(t, disk)
	swap := int64(17 << 20)
	copy(b[swap+4086:], "SWAPSPACE2")
	custom := int64(25 << 20)
	copy(b[custom+100:], "CAIRN-TEST-FS")

	vols := openBytes(t, b)
	if len(vols) != 4 {
		t.Fatalf("%d volumes, want 4: %+v", len(vols), vols)
	}
	if v := vols[0]; v.Err != nil || v.Format != "ext4" || v.Partition.Name != "root" || v.Partition.Start != 1<<20 {
		t.Errorf("volume 1: %+v", v)
	} else if fi, err := v.FS.Lstat("/lost+found"); err != nil || !fi.Mode.IsDir() {
		t.Errorf("volume 1: Lstat(/lost+found) = %+v, %v", fi, err)
	}
	if v := vols[1]; !errors.Is(v.Err, fsimage.ErrUnsupported) || !strings.Contains(v.Err.Error(), "partition 2: swap space") {
		t.Errorf("volume 2: %v", v.Err)
	}
	for _, v := range vols[2:] {
		if !errors.Is(v.Err, ErrUnknownFS) || core.KindOf(v.Err) != core.KindInvalid {
			t.Errorf("%s: %v", v.Name(), v.Err)
		}
	}

	// A registered reader takes the volume its magic names.
	Register(Format{Name: "cairn-test", Offset: 100, Magic: []byte("CAIRN-TEST-FS"),
		Open: func(r io.ReaderAt, size int64) (fsimage.FS, error) {
			return nil, core.Invalid("cairn-test: %d bytes", size)
		}})
	builtin := len(Formats()) - 1
	defer func() {
		mu.Lock()
		formats = formats[:builtin]
		mu.Unlock()
	}()
	vols = openBytes(t, b)
	if v := vols[3]; v.Format != "cairn-test" || v.Err == nil || !strings.Contains(v.Err.Error(), "partition 4: cairn-test: 4194304 bytes") {
		t.Errorf("volume 4: %+v", v)
	}
	if v := vols[2]; !errors.Is(v.Err, ErrUnknownFS) || !strings.Contains(v.Err.Error(), "ext4 and xfs and cairn-test") {
		t.Errorf("volume 3: %v", v.Err)
	}
}

// TestOpenMBRLogical: a file system made apart and written with dd into a
// logical partition.
func TestOpenMBRLogical(t *testing.T) {
	testenv.RequireTool(t, "dd")
	src := filepath.Join(t.TempDir(), "src")
	for name, data := range map[string]string{"a": "in a logical partition\n", "dir/b": "b\n"} {
		os.MkdirAll(filepath.Dir(filepath.Join(src, name)), 0o755)
		if err := os.WriteFile(filepath.Join(src, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	disk := partitionedDisk(t, 40<<20, "label: dos\nsize=4M, type=83\nsize=30M, type=5\nsize=1M, type=83\nsize=1M, type=83\nsize=10M, type=83\nsize=10M, type=83\n")
	img := fsimagetest.Mkfs(t, "ext4", src, "8M")
	// Logical partition 5 starts 1 MiB into the extended one (at 5 MiB),
	// logical partition 6 1 MiB after the end of 5.
	fsimagetest.RunTool(t, nil, "dd", "if="+img, "of="+disk, "bs=1M", "seek=6", "conv=notrunc,sparse", "status=none")
	vols := openBytes(t, readImage(t, disk))
	if len(vols) != 5 {
		t.Fatalf("%d volumes: %+v", len(vols), vols)
	}
	for _, v := range vols {
		if v.Partition.Index == 5 {
			if v.Err != nil || v.Partition.Start != 6<<20 || v.Partition.Size != 10<<20 {
				t.Fatalf("partition 5: %+v", v)
			}
			fsimagetest.CompareTree(t, v.FS, src, fsimagetest.CompareOptions{IgnoreRoot: []string{"lost+found"}})
		} else if !errors.Is(v.Err, ErrUnknownFS) {
			t.Errorf("%s: %v", v.Name(), v.Err)
		}
	}
}

func TestOpenDamagedTable(t *testing.T) {
	disk := partitionedDisk(t, 8<<20, "label: dos\nsize=4M, type=83\n")
	b := readImage(t, disk)
	_, err := Open(bytes.NewReader(b[:2<<20]), 2<<20) // partition past the end
	if core.KindOf(err) != core.KindCorrupt {
		t.Fatalf("Open of a truncated disk: %v", err)
	}
}
