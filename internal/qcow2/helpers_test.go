package qcow2

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cairn-backup/cairn/internal/testenv"
)

// tool runs a QEMU tool in dir and fails the test when it fails.
func tool(t testing.TB, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// qemuImg runs qemu-img in dir.
func qemuImg(t testing.TB, dir string, args ...string) string {
	t.Helper()
	return tool(t, dir, "qemu-img", args...)
}

// qemuIO runs qemu-io commands on a qcow2 image (the path is taken from
// the test's directory when relative).
func qemuIO(t testing.TB, path string, cmds ...string) {
	t.Helper()
	qemuIOFmt(t, "qcow2", path, cmds...)
}

func qemuIOFmt(t testing.TB, format, path string, cmds ...string) {
	t.Helper()
	qemuIOCache(t, format, "unsafe", path, cmds...) // no flushes: the tests need no durability
}

// qemuIOCache runs qemu-io commands with a cache mode (-t): unsafe, or
// writeback, which flushes metadata as a running guest's disk would.
func qemuIOCache(t testing.TB, format, cache, path string, cmds ...string) {
	t.Helper()
	if len(cmds) == 0 {
		return
	}
	args := []string{"-f", format, "-t", cache}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	testenv.QemuIO(t, append(args, path)...)
}

// toRaw converts an image (or one of its snapshots, when snap is not "")
// to a raw file with qemu-img and returns its path.
func toRaw(t testing.TB, path, snap string) string {
	t.Helper()
	out := path + ".raw"
	args := []string{"convert", "-t", "unsafe", "-O", "raw"}
	if snap != "" {
		out = path + "." + snap + ".raw"
		args = append(args, "-l", "snapshot.name="+snap)
	}
	qemuImg(t, filepath.Dir(path), append(args, path, out)...)
	return out
}

type mapEntry struct {
	Start  int64 `json:"start"`
	Length int64 `json:"length"`
	Zero   bool  `json:"zero"`
	Data   bool  `json:"data"`
}

// zeroRanges returns what qemu-img map reports as zero or without data.
func zeroRanges(t testing.TB, path string) []Extent {
	t.Helper()
	out := qemuImg(t, filepath.Dir(path), "map", "--output=json", path)
	var m []mapEntry
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("qemu-img map: %v\n%s", err, out)
	}
	var zs []Extent
	for _, e := range m {
		if e.Zero || !e.Data {
			zs = append(zs, Extent{e.Start, e.Length})
		}
	}
	return zs
}

// mustOpen opens an image and closes it when the test ends.
func mustOpen(t testing.TB, path string) *Image {
	t.Helper()
	im, err := Open(path)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { im.Close() })
	return im
}

func mustLayer(t testing.TB, im *Image, snap string) *Layer {
	t.Helper()
	var l *Layer
	var err error
	if snap == "" {
		l, err = im.Active()
	} else {
		l, err = im.Snapshot(snap)
	}
	if err != nil {
		t.Fatalf("layer %q of %s: %v", snap, im.path, err)
	}
	return l
}

// checkExtentList checks the shape Extents promises: sorted, merged (no two
// extents touch), non-empty and within size.
func checkExtentList(t testing.TB, what string, ext []Extent, size int64) {
	t.Helper()
	for i, e := range ext {
		if e.Length <= 0 || e.Offset < 0 || e.End() > size {
			t.Fatalf("%s: extent %d %+v is empty or outside the size %d", what, i, e, size)
		}
		if i > 0 && ext[i-1].End() >= e.Offset {
			t.Fatalf("%s: extents %d %+v and %d %+v are not sorted and merged", what, i-1, ext[i-1], i, e)
		}
	}
}

// compareWithRaw checks that the layer reads exactly what qemu-img
// converted to raw, over the whole disk, with four goroutines and mixed read
// sizes, and that every non-zero byte lies in Extents. It returns the
// extents.
func compareWithRaw(t testing.TB, l *Layer, rawPath string) []Extent {
	t.Helper()
	rf, err := os.Open(rawPath)
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()
	fi, err := rf.Stat()
	if err != nil {
		t.Fatal(err)
	}
	_, isSnap := l.SnapshotInfo()
	switch {
	case fi.Size() == l.Size():
	case fi.Size() > l.Size() && isSnap:
		// qemu-img convert -l reads a snapshot taken before a resize at
		// the image's current size: past the snapshot's own size it has
		// zeros only.
		tail, err := dataExtents(rf, fi.Size())
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1<<20)
		for _, e := range intersect(tail, []Extent{{l.Size(), fi.Size() - l.Size()}}) {
			for off := e.Offset; off < e.End(); off += int64(len(buf)) {
				b := buf[:min(int64(len(buf)), e.End()-off)]
				if _, err := rf.ReadAt(b, off); err != nil {
					t.Fatal(err)
				}
				if i := firstNonZero(b); i >= 0 {
					t.Fatalf("%s: qemu-img's raw has data at %d, past the snapshot's size %d", rawPath, off+int64(i), l.Size())
				}
			}
		}
	default:
		t.Fatalf("%s: layer size %d, qemu-img's raw has %d bytes", rawPath, l.Size(), fi.Size())
	}
	ext, err := l.Extents()
	if err != nil {
		t.Fatalf("Extents: %v", err)
	}
	checkExtentList(t, rawPath, ext, l.Size())
	// Holes of the raw file are zeros; only its data is read (a sparse 8 GiB
	// disk stays cheap). The layer is read everywhere.
	rawData, err := dataExtents(rf, l.Size())
	if err != nil {
		t.Fatal(err)
	}
	if rawData == nil {
		rawData = extentList{{0, l.Size()}}
	}
	const chunk = 4 << 20
	poison := bytes.Repeat([]byte{0x5a}, chunk)
	nChunks := (l.Size() + chunk - 1) / chunk
	var mu sync.Mutex
	var fails []string
	fail := func(format string, args ...any) {
		mu.Lock()
		fails = append(fails, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	var wg sync.WaitGroup
	next := make(chan int64)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got := make([]byte, chunk)
			want := make([]byte, chunk)
			for k := range next {
				off := k * chunk
				n := min(int64(chunk), l.Size()-off)
				g, wnt := got[:n], want[:n]
				clear(wnt)
				for _, e := range intersect(rawData, []Extent{{off, n}}) {
					if _, err := rf.ReadAt(wnt[e.Offset-off:e.End()-off], e.Offset); err != nil {
						fail("reading raw at %d: %v", e.Offset, err)
						return
					}
				}
				copy(g, poison) // ReadAt must overwrite everything
				if err := readPieces(l, g, off, k); err != nil {
					fail("ReadAt at %d: %v", off, err)
					return
				}
				if !bytes.Equal(g, wnt) {
					i := firstDiff(g, wnt)
					fail("byte at %d (0x%x): reader has 0x%02x, qemu-img 0x%02x", off+int64(i), off+int64(i), g[i], wnt[i])
					return
				}
				// Outside the extents every byte must be zero.
				pos := off
				for _, e := range append(intersect(ext, []Extent{{off, n}}), Extent{off + n, 0}) {
					if i := firstNonZero(wnt[pos-off : e.Offset-off]); i >= 0 {
						fail("non-zero byte at %d outside Extents", pos+int64(i))
						return
					}
					pos = e.End()
				}
			}
		}()
	}
	for k := int64(0); k < nChunks; k++ {
		next <- k
	}
	close(next)
	wg.Wait()
	if len(fails) > 0 {
		t.Fatalf("%s: %s", rawPath, strings.Join(fails, "; "))
	}
	checkEOF(t, l)
	return ext
}

// readPieces reads p at off in one call, or (for some chunks) in pieces
// of odd sizes that start and end inside clusters.
func readPieces(l *Layer, p []byte, off, k int64) error {
	if k%3 != 1 {
		_, err := l.ReadAt(p, off)
		return err
	}
	sizes := []int{4096 + 512 + 7, 1, 65536 + 3, 700000, 511}
	for i := 0; len(p) > 0; i++ {
		n := min(sizes[i%len(sizes)], len(p))
		if _, err := l.ReadAt(p[:n], off); err != nil {
			return err
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

// checkEOF checks the io.ReaderAt rules at the end of the layer.
func checkEOF(t testing.TB, l *Layer) {
	t.Helper()
	size := l.Size()
	buf := make([]byte, 1000)
	if size >= 10 {
		n, err := l.ReadAt(buf, size-10)
		if n != 10 || err != io.EOF {
			t.Fatalf("ReadAt across the end: %d, %v; want 10, EOF", n, err)
		}
	}
	if n, err := l.ReadAt(buf, size); n != 0 || err != io.EOF {
		t.Fatalf("ReadAt at the end: %d, %v; want 0, EOF", n, err)
	}
	if n, err := l.ReadAt(buf, size+12345); n != 0 || err != io.EOF {
		t.Fatalf("ReadAt past the end: %d, %v; want 0, EOF", n, err)
	}
	if _, err := l.ReadAt(buf, -1); err == nil {
		t.Fatalf("ReadAt at -1 succeeded")
	}
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

var zeros = make([]byte, 1<<20)

func firstNonZero(p []byte) int {
	for base := 0; base < len(p); base += len(zeros) {
		q := p[base:min(base+len(zeros), len(p))]
		if bytes.Equal(q, zeros[:len(q)]) {
			continue
		}
		for i, c := range q {
			if c != 0 {
				return base + i
			}
		}
	}
	return -1
}

// checkAgainstMap checks that no extent overlaps what qemu-img map reports
// as zero or unallocated (for an image without a backing file).
func checkAgainstMap(t testing.TB, path string, ext []Extent) {
	t.Helper()
	zs := zeroRanges(t, path)
	if bad := intersect(ext, zs); len(bad) > 0 {
		t.Fatalf("%s: Extents %v overlap ranges qemu-img map reports as zero: %v", path, summary(ext), summary(bad))
	}
}

func summary(e []Extent) string {
	var b strings.Builder
	for i, x := range e {
		if i == 8 {
			fmt.Fprintf(&b, " ... (%d in all)", len(e))
			break
		}
		fmt.Fprintf(&b, " [0x%x+0x%x)", x.Offset, x.Length)
	}
	return b.String()
}

// verify checks the active layer and the named snapshots of an image
// against qemu-img, and, without a backing file, Extents of the active layer
// against qemu-img map.
func verify(t *testing.T, path string, snaps ...string) *Image {
	t.Helper()
	im := mustOpen(t, path)
	for _, s := range append([]string{""}, snaps...) {
		l := mustLayer(t, im, s)
		raw := toRaw(t, path, s)
		ext := compareWithRaw(t, l, raw)
		os.Remove(raw) // now: its pages need never reach the disk
		t.Logf("%s@%s: %+v", filepath.Base(path), s, statsOf(t, l))
		if s == "" && im.backing == nil {
			checkAgainstMap(t, path, ext)
		}
	}
	return im
}

// clusterStats counts the clusters of a layer by kind, to show what a test
// exercised.
type clusterStats struct{ Unalloc, Zero, ZeroAlloc, Data, Compressed int }

func statsOf(t testing.TB, l *Layer) clusterStats {
	t.Helper()
	var s clusterStats
	cs := l.im.clusterSize
	for c := int64(0); c*cs < l.size; c++ {
		tab, err := l.l2Table(c / l.im.l2Entries)
		if err != nil {
			t.Fatal(err)
		}
		var e uint64
		if tab != nil {
			e = tab[c%l.im.l2Entries]
		}
		switch kind, _ := classify(e); kind {
		case kindUnalloc:
			s.Unalloc++
		case kindZero:
			if e&l2OffsetMask != 0 {
				s.ZeroAlloc++
			} else {
				s.Zero++
			}
		case kindData:
			s.Data++
		case kindCompressed:
			s.Compressed++
		}
	}
	return s
}

// imageOpts names a qcow2 image for --image-opts with flushes turned off:
// the tests need no durability, and every fsync on a busy file system waits
// for the other tests' data.
func imageOpts(path string) string {
	return "driver=qcow2,file.filename=" + strings.ReplaceAll(path, ",", ",,") + ",cache.no-flush=on"
}

// snapshotCreate takes an internal snapshot with qemu-img.
func snapshotCreate(t testing.TB, path, name string) {
	t.Helper()
	qemuImg(t, filepath.Dir(path), "snapshot", "-c", name, "--image-opts", imageOpts(path))
}

// resize changes an image's virtual size with qemu-img.
func resize(t testing.TB, path, size string) {
	t.Helper()
	qemuImg(t, filepath.Dir(path), "resize", "-q", "--image-opts", imageOpts(path), size)
}
