package qcow2

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/testenv"
)

var writeSeeds = flag.Bool("qcow2.write-seeds", false, "rewrite testdata/fuzz/FuzzOpen/seed-* from images made by qemu-img")

// seedImages makes small real images for the fuzzer to start from: small
// clusters keep them a few KiB; a larger one is cut after its first
// clusters, as a damaged copy would be.
func seedImages(t testing.TB) map[string][]byte {
	t.Helper()
	dir := t.TempDir()
	read := func(p string, cut int) []byte {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if cut > 0 && len(b) > cut {
			b = b[:cut]
		}
		return b
	}
	// build creates an image and runs each phase of writes, with a
	// snapshot (s1, s2, ...) between phases.
	build := func(name, opts, size string, backing []string, phases ...[]string) string {
		p := filepath.Join(dir, name+".qcow2")
		args := append(append([]string{"create", "-q", "-f", "qcow2", "-o", opts}, backing...), p, size)
		qemuImg(t, dir, args...)
		for i, cmds := range phases {
			if i > 0 {
				snapshotCreate(t, p, "s"+strconv.Itoa(i))
			}
			qemuIO(t, p, cmds...)
		}
		return p
	}
	writes := []string{"write -P 0xa1 0 1k", "write -z 4k 4k", "write -P 0xa2 9k 3k", "discard 0 512"}
	more := []string{"write -P 0xa3 512 1k", "write -z 9k 512"}
	out := map[string][]byte{
		"v3-512":           read(build("v3", "cluster_size=512", "64k", nil, writes), 0),
		"v3-512-snapshots": read(build("snaps", "cluster_size=512", "64k", nil, writes, more, []string{"discard 4k 8k"}), 0),
		"v2-512-snapshot":  read(build("v2", "cluster_size=512,compat=0.10", "64k", nil, writes, more), 0),
		"v3-4k-cut":        read(build("cut", "cluster_size=4096", "1M", nil, []string{"write -P 0xb1 0 8k", "write -P 0xb2 600k 4k"}), 6*4096),
	}
	src := build("src", "cluster_size=512", "64k", nil, []string{"write -P 0xc1 0 4k", "write -P 0xc2 12k 1k"})
	for _, ct := range []string{"zlib", "zstd"} {
		p := filepath.Join(dir, "comp-"+ct+".qcow2")
		qemuImg(t, dir, "convert", "-c", "-O", "qcow2", "-o", "cluster_size=512,compression_type="+ct, src, p)
		out["compressed-"+ct] = read(p, 0)
	}
	qemuImg(t, dir, "create", "-q", "-f", "raw", filepath.Join(dir, "base.raw"), "16k")
	out["backing-raw"] = read(build("over", "cluster_size=512", "64k", []string{"-b", "base.raw", "-F", "raw"}, []string{"write -P 0xd1 1k 1k"}), 0)
	return out
}

// FuzzOpen feeds arbitrary bytes to Open and, when it succeeds, to the
// layers' Size, Extents, ReadAt and ChangedClusters: nothing may panic,
// errors must be errors of this package, and every non-zero byte read must
// lie in Extents.
//
// The seeds are real qemu-img images committed under testdata/fuzz/FuzzOpen
// (see TestFuzzSeedCorpus), which go test runs as test cases too.
func FuzzOpen(f *testing.F) {
	// One file, rewritten for every input: a directory per input costs more
	// than the reading does. Inputs run one at a time in each process.
	p := filepath.Join(f.TempDir(), "fuzz.qcow2")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		im, err := Open(p)
		if err != nil {
			checkFuzzErr(t, err)
			return
		}
		defer im.Close()
		if im.Size() < 0 || im.ClusterSize() < 512 || im.ClusterSize() > 2<<20 {
			t.Fatalf("Size %d ClusterSize %d", im.Size(), im.ClusterSize())
		}
		layers := []*Layer{}
		if l, err := im.Active(); err == nil {
			layers = append(layers, l)
		}
		for i, s := range im.Snapshots() {
			if i == 3 {
				break
			}
			l, err := im.Snapshot(s.ID)
			if err != nil {
				checkFuzzErr(t, err)
				continue
			}
			layers = append(layers, l)
		}
		for _, l := range layers {
			exerciseLayer(t, l)
		}
		if len(layers) >= 3 && small(layers[1]) && small(layers[2]) {
			ch, err := ChangedClusters(layers[1], layers[2])
			if err != nil {
				checkFuzzErr(t, err)
			} else {
				checkExtentList(t, "ChangedClusters", ch, layers[2].Size())
			}
		}
	})
}

// small reports whether walking every cluster of the layer is cheap: a
// tiny file may describe a disk of petabytes, and Extents costs one step per
// cluster mapped by an L2 table.
func small(l *Layer) bool { return l.Size()/l.im.clusterSize <= 1<<20 }

func exerciseLayer(t *testing.T, l *Layer) {
	size := l.Size()
	var ext []Extent
	extOK := false
	if small(l) {
		e, err := l.Extents()
		if err != nil {
			checkFuzzErr(t, err)
		} else {
			checkExtentList(t, "Extents", e, size)
			ext, extOK = e, true
		}
	}
	offs := []int64{0, size / 2, size - 1000, size - 1, size}
	for i, e := range ext {
		if i == 4 {
			break
		}
		offs = append(offs, e.Offset)
	}
	buf := make([]byte, 70000)
	for _, off := range offs {
		if off < 0 {
			continue
		}
		n, err := l.ReadAt(buf, off)
		if n < 0 || n > len(buf) {
			t.Fatalf("ReadAt returned n = %d", n)
		}
		if err != nil && err != io.EOF {
			checkFuzzErr(t, err)
			continue
		}
		if err == io.EOF && off+int64(len(buf)) <= size {
			t.Fatalf("io.EOF inside the disk at %d (size %d)", off, size)
		}
		if err == nil && n != len(buf) {
			t.Fatalf("short read %d without an error", n)
		}
		if !extOK {
			continue
		}
		pos := off
		for _, e := range append(intersect(ext, []Extent{{off, int64(n)}}), Extent{off + int64(n), 0}) {
			if i := firstNonZero(buf[pos-off : e.Offset-off]); i >= 0 {
				t.Fatalf("non-zero byte at %d outside Extents %s", pos+int64(i), summary(ext))
			}
			pos = e.End()
		}
	}
}

// checkFuzzErr accepts the errors this package makes: a message that says
// qcow2, and a kind (a backing file may also fail to open for any reason).
func checkFuzzErr(t *testing.T, err error) {
	t.Helper()
	if !strings.HasPrefix(err.Error(), "qcow2") {
		t.Fatalf("error without the qcow2 prefix: %v", err)
	}
	switch core.KindOf(err) {
	case core.KindCorrupt, core.KindInvalid, core.KindNotFound:
	default:
		if !strings.Contains(err.Error(), "backing file") {
			t.Fatalf("error of kind %d: %v", core.KindOf(err), err)
		}
	}
	if errors.Is(err, ErrUnsupported) && core.KindOf(err) != core.KindInvalid {
		t.Fatalf("unsupported feature of kind %d: %v", core.KindOf(err), err)
	}
}

// The committed seed corpus exists and holds real images; with
// -qcow2.write-seeds it is rewritten from fresh qemu-img images.
func TestFuzzSeedCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzOpen")
	if *writeSeeds {
		testenv.RequireTool(t, "qemu-img", "qemu-io")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, b := range seedImages(t) {
			body := "go test fuzz v1\n[]byte(" + strconv.Quote(string(b)) + ")\n"
			if err := os.WriteFile(filepath.Join(dir, "seed-"+name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("the seed corpus is missing (go test -run TestFuzzSeedCorpus -qcow2.write-seeds makes it): %v", err)
	}
	seeds := 0
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(b), "go test fuzz v1\n[]byte(") {
			t.Fatalf("%s is not a fuzz corpus file", e.Name())
		}
		if strings.HasPrefix(e.Name(), "seed-") {
			if !strings.Contains(string(b), `QFI\xfb`) {
				t.Fatalf("%s does not hold a qcow2 image", e.Name())
			}
			seeds++
		}
	}
	if seeds < 4 {
		t.Fatalf("%d seed images in %s, want at least 4", seeds, dir)
	}
}
