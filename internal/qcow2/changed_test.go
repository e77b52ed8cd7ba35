package qcow2

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/testenv"
)

// writeGen makes random qemu-io commands: pattern writes (some of zero
// bytes, some unaligned), random data, zero writes with and without
// unmapping, discards, and compressed writes of whole clusters. QEMU writes
// compressed clusters only where no host cluster was ever mapped, so it
// remembers the clusters it touched.
type writeGen struct {
	r       *rand.Rand
	cs      int64
	rnd     string // random data file for write -s
	touched map[int64]bool
	maxLen  int64 // longest write
}

func (g *writeGen) touch(off, length int64) {
	for c := off / g.cs; c*g.cs < off+length; c++ {
		g.touched[c] = true
	}
}

func (g *writeGen) writes(n int, size int64) []string {
	r := g.r
	var cmds []string
	for range n {
		length := int64(512 * (1 + r.IntN(int(g.maxLen/512))))
		if r.IntN(3) == 0 {
			length = int64(512 * (1 + r.IntN(16)))
		}
		off := int64(512 * r.IntN(int(size/512)))
		length = min(length, size-off)
		switch k := r.IntN(20); {
		case k < 8:
			pat := 1 + r.IntN(255)
			if k == 0 {
				pat = 0 // data that happens to be zeros
			}
			if k == 1 && off+length+3 <= size {
				off, length = off+int64(r.IntN(511)), length+int64(r.IntN(3)) // unaligned
			}
			cmds = append(cmds, fmt.Sprintf("write -P 0x%02x %d %d", pat, off, length))
		case k < 10:
			length = min(length, 1<<20)
			cmds = append(cmds, fmt.Sprintf("write -s %s %d %d", g.rnd, off, length))
		case k < 13:
			cmds = append(cmds, fmt.Sprintf("write -z %d %d", off, length))
		case k < 14:
			cmds = append(cmds, fmt.Sprintf("write -z -u %d %d", off, length))
		case k < 17:
			cmds = append(cmds, fmt.Sprintf("discard %d %d", off, length))
		default:
			if g.cs > 64<<10 {
				continue
			}
			off = off / g.cs * g.cs
			length = min(g.cs*int64(1+r.IntN(4)), (size-off)/g.cs*g.cs)
			for c := off / g.cs; c*g.cs < off+length; c++ {
				if g.touched[c] {
					length = c*g.cs - off
					break
				}
			}
			if length <= 0 {
				continue
			}
			cmds = append(cmds, fmt.Sprintf("write -c -P 0x%02x %d %d", 1+r.IntN(255), off, length))
		}
		g.touch(off, length)
	}
	return cmds
}

// differingClusters returns the clusters whose bytes differ between two
// raw files of equal size. Only their data is read: where both have holes,
// both are zeros.
func differingClusters(t testing.TB, a, b string, cs int64) []Extent {
	t.Helper()
	fa, err := os.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	ia, _ := fa.Stat()
	ib, _ := fb.Stat()
	if ia.Size() != ib.Size() {
		t.Fatalf("%s has %d bytes, %s %d", a, ia.Size(), b, ib.Size())
	}
	size := ia.Size()
	var data []Extent
	for _, f := range []*os.File{fa, fb} {
		e, err := dataExtents(f, size)
		if err != nil {
			t.Fatal(err)
		}
		if e == nil {
			e = extentList{{0, size}}
		}
		data = append(data, e...)
	}
	step := max(cs, 1<<20)
	ba, bb := make([]byte, step), make([]byte, step)
	var out extentList
	for _, e := range union(data, nil) {
		for off := e.Offset / cs * cs; off < e.End(); off += step {
			n := min(step, size-off)
			for _, x := range []struct {
				f *os.File
				b []byte
			}{{fa, ba[:n]}, {fb, bb[:n]}} {
				if _, err := x.f.ReadAt(x.b, off); err != nil {
					t.Fatal(err)
				}
			}
			for c := int64(0); c < n; c += cs {
				end := min(c+cs, n)
				if !bytes.Equal(ba[c:end], bb[c:end]) {
					out.add(off+c, end-c)
				}
			}
		}
	}
	return out
}

// uncovered returns the parts of need that ext does not cover.
func uncovered(need, ext []Extent) []Extent {
	var out []Extent
	for _, n := range need {
		pos := n.Offset
		for _, e := range intersect(ext, []Extent{n}) {
			if e.Offset > pos {
				out = append(out, Extent{pos, e.Offset - pos})
			}
			pos = e.End()
		}
		if pos < n.End() {
			out = append(out, Extent{pos, n.End() - pos})
		}
	}
	return out
}

func checkChangedShape(t testing.TB, ch []Extent, to *Layer) {
	t.Helper()
	checkExtentList(t, "ChangedClusters", ch, to.Size())
	cs := int64(to.im.ClusterSize())
	for _, e := range ch {
		if e.Offset%cs != 0 || (e.End()%cs != 0 && e.End() != to.Size()) {
			t.Fatalf("ChangedClusters extent %+v is not cluster aligned", e)
		}
	}
}

// The property: every cluster whose bytes differ between two snapshots, as
// qemu-img converts them, lies in ChangedClusters; seeded random writes,
// cluster sizes, resizes and compressed images.
func TestChangedClustersProperty(t *testing.T) {
	testenv.RequireTool(t, "qemu-img", "qemu-io")
	t.Parallel()
	for it := range 20 {
		t.Run(fmt.Sprint(it), func(t *testing.T) {
			t.Parallel()
			changedIteration(t, uint64(it))
		})
	}
}

func changedIteration(t *testing.T, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 0xc4a1))
	dir := t.TempDir()
	rnd := randomFile(t, dir, 1<<20, seed+100)
	size := int64(16+r.IntN(49)) << 20
	cs := []int64{512, 4096, 65536, 65536, 65536, 2 << 20}[r.IntN(6)]
	g := &writeGen{r: r, cs: cs, rnd: rnd, touched: map[int64]bool{}, maxLen: 2 << 20}
	if cs == 512 {
		// QEMU writes 512-byte clusters slowly: keep those disks small.
		size, g.maxLen = 16<<20, 256<<10
	}
	img := filepath.Join(dir, "disk.qcow2")
	opts := fmt.Sprintf("cluster_size=%d", cs)
	var desc []string
	if seed%4 == 3 {
		src := filepath.Join(dir, "src.qcow2")
		qemuImg(t, dir, "create", "-q", "-f", "qcow2", "-o", opts, src, fmt.Sprint(size))
		qemuIO(t, src, g.writes(20, size)...)
		ct := []string{"zlib", "zstd"}[seed/4%2]
		qemuImg(t, dir, "convert", "-t", "unsafe", "-c", "-O", "qcow2", "-o", opts+",compression_type="+ct, src, img)
		desc = append(desc, "compressed "+ct)
	} else {
		qemuImg(t, dir, "create", "-q", "-f", "qcow2", "-o", opts, img, fmt.Sprint(size))
		qemuIO(t, img, g.writes(10+r.IntN(20), size)...)
	}
	snapshotCreate(t, img, "s1")
	size2 := size
	if r.IntN(5) == 0 {
		size2 = size + int64(1+r.IntN(16))<<20 + int64(512*r.IntN(64))
		resize(t, img, fmt.Sprint(size2))
		desc = append(desc, fmt.Sprintf("resized %d -> %d", size, size2))
	}
	quiet := r.IntN(6) == 0 && size2 == size // no writes between the snapshots
	if !quiet {
		qemuIO(t, img, g.writes(1+r.IntN(25), size2)...)
	}
	snapshotCreate(t, img, "s2")
	if seed%2 == 0 {
		qemuIO(t, img, g.writes(5, size2)...) // active only: invisible to the snapshots
	}
	t.Logf("seed %d: %d MiB, %d-byte clusters %s", seed, size>>20, cs, strings.Join(desc, ", "))

	im := mustOpen(t, img)
	s1, s2 := mustLayer(t, im, "s1"), mustLayer(t, im, "s2")
	raw1, raw2 := toRaw(t, img, "s1"), toRaw(t, img, "s2")
	compareWithRaw(t, s1, raw1)
	compareWithRaw(t, s2, raw2)

	ch, err := ChangedClusters(s1, s2)
	if err != nil {
		t.Fatalf("ChangedClusters: %v", err)
	}
	checkChangedShape(t, ch, s2)
	diff := differingClusters(t, raw1, raw2, cs)
	os.Remove(raw1)
	os.Remove(raw2)
	if miss := uncovered(diff, ch); len(miss) > 0 {
		t.Fatalf("bytes differ in %s, not in ChangedClusters %s", summary(miss), summary(ch))
	}
	if quiet && len(ch) > 0 {
		t.Fatalf("no writes between the snapshots, yet ChangedClusters = %s", summary(ch))
	}
	// Backwards: clipped to s1's size.
	back, err := ChangedClusters(s2, s1)
	if err != nil {
		t.Fatalf("ChangedClusters backwards: %v", err)
	}
	checkChangedShape(t, back, s1)
	if miss := uncovered(intersect(diff, []Extent{{0, s1.Size()}}), back); len(miss) > 0 {
		t.Fatalf("backwards: bytes differ in %s, not in ChangedClusters %s", summary(miss), summary(back))
	}
	if same, err := ChangedClusters(s2, s2); err != nil || len(same) > 0 {
		t.Fatalf("ChangedClusters(s2, s2) = %s, %v", summary(same), err)
	}
}

// Precise cases: nothing changed, one cluster changed, a resize, zero
// writes and identical rewrites (reported, harmlessly).
func TestChangedClustersExact(t *testing.T) {
	testenv.RequireTool(t, "qemu-img", "qemu-io")
	t.Parallel()
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.qcow2")
	qemuImg(t, dir, "create", "-q", "-f", "qcow2", img, "32M")
	qemuIO(t, img, "write -P 1 0 8M", "write -P 2 20M 1M")
	snapshotCreate(t, img, "s1")
	snapshotCreate(t, img, "s2")       // nothing between
	qemuIO(t, img, "write -P 3 1M 4k") // one cluster, in a shared L2 table
	snapshotCreate(t, img, "s3")
	qemuIO(t, img, "write -z 20M 64k", "write -P 2 20544k 64k", "write -z 30M 64k")
	snapshotCreate(t, img, "s4")
	resize(t, img, "40M")
	snapshotCreate(t, img, "s5")

	im := mustOpen(t, img)
	get := func(name string) *Layer { return mustLayer(t, im, name) }
	cases := []struct {
		from, to string
		want     []Extent
	}{
		{"s1", "s2", nil},
		{"s2", "s3", []Extent{{1 << 20, 64 << 10}}},
		{"s1", "s3", []Extent{{1 << 20, 64 << 10}}},
		// a zero write on data and an identical rewrite show as changed;
		// a zero write on a hole (zero flag where nothing was) does not
		{"s3", "s4", []Extent{{20 << 20, 128 << 10}}},
		{"s4", "s5", []Extent{{32 << 20, 8 << 20}}},
		{"s5", "s4", nil},
	}
	for _, c := range cases {
		got, err := ChangedClusters(get(c.from), get(c.to))
		if err != nil {
			t.Fatalf("%s..%s: %v", c.from, c.to, err)
		}
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%s..%s: ChangedClusters = %v, want %v", c.from, c.to, got, c.want)
		}
	}
}

// With a backing file, an unallocated cluster reads the backing file while
// a zero-flagged one reads zeros: the change between them is reported.
func TestChangedClustersBacking(t *testing.T) {
	testenv.RequireTool(t, "qemu-img", "qemu-io")
	t.Parallel()
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	qemuImg(t, dir, "create", "-q", "-f", "qcow2", base, "16M")
	qemuIO(t, base, "write -P 0x10 0 16M")
	img := filepath.Join(dir, "over.qcow2")
	qemuImg(t, dir, "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", img, "16M")
	qemuIO(t, img, "write -P 0x20 0 1M")
	snapshotCreate(t, img, "s1")
	qemuIO(t, img, "write -z 4M 64k", "discard 8M 64k", "write -z 0 64k")
	snapshotCreate(t, img, "s2")
	im := mustOpen(t, img)
	s1, s2 := mustLayer(t, im, "s1"), mustLayer(t, im, "s2")
	raw1, raw2 := toRaw(t, img, "s1"), toRaw(t, img, "s2")
	compareWithRaw(t, s1, raw1)
	compareWithRaw(t, s2, raw2)
	ch, err := ChangedClusters(s1, s2)
	if err != nil {
		t.Fatal(err)
	}
	diff := differingClusters(t, raw1, raw2, 65536)
	if len(diff) != 3 {
		t.Fatalf("expected 3 differing clusters, qemu-img shows %s", summary(diff))
	}
	if miss := uncovered(diff, ch); len(miss) > 0 {
		t.Fatalf("bytes differ in %s, not in ChangedClusters %s", summary(miss), summary(ch))
	}
}

func TestChangedClustersRejects(t *testing.T) {
	testenv.RequireTool(t, "qemu-img", "qemu-io")
	t.Parallel()
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.qcow2")
	qemuImg(t, dir, "create", "-q", "-f", "qcow2", img, "4M")
	snapshotCreate(t, img, "s1")
	a, b := mustOpen(t, img), mustOpen(t, img)
	act := mustLayer(t, a, "")
	s1 := mustLayer(t, a, "s1")
	other := mustLayer(t, b, "s1")
	for name, pair := range map[string][2]*Layer{
		"active to": {s1, act}, "active from": {act, s1}, "two images": {s1, other}, "nil": {nil, s1},
	} {
		_, err := ChangedClusters(pair[0], pair[1])
		if err == nil || core.KindOf(err) != core.KindInvalid {
			t.Errorf("%s: err = %v, want a core.KindInvalid error", name, err)
		}
		if errors.Is(err, ErrUnsupported) {
			t.Errorf("%s: %v wraps ErrUnsupported", name, err)
		}
	}
}

// The property again, over a history: random writes, snapshot creates,
// applies and deletes in random order, and after each step every changed
// byte between two of the snapshots still there lies in ChangedClusters.
func TestChangedClustersSequence(t *testing.T) {
	testenv.RequireTool(t, "qemu-img", "qemu-io")
	t.Parallel()
	for seed := range 3 {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Parallel()
			changedSequence(t, uint64(seed))
		})
	}
}

func changedSequence(t *testing.T, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 0x5e9))
	dir := t.TempDir()
	rnd := randomFile(t, dir, 1<<20, seed+7)
	const size = 16 << 20
	const cs = 65536
	g := &writeGen{r: r, cs: cs, rnd: rnd, touched: map[int64]bool{}, maxLen: 1 << 20}
	img := filepath.Join(dir, "disk.qcow2")
	qemuImg(t, dir, "create", "-q", "-f", "qcow2", img, fmt.Sprint(size))
	var snaps, log []string
	next := 0
	for step := range 16 {
		op := r.IntN(10)
		switch {
		case op < 4:
			cache := []string{"unsafe", "writeback"}[r.IntN(2)]
			qemuIOCache(t, "qcow2", cache, img, g.writes(1+r.IntN(10), size)...)
			log = append(log, "write "+cache)
		case op < 7 || len(snaps) < 2:
			name := fmt.Sprintf("s%d", next)
			next++
			snapshotCreate(t, img, name)
			snaps = append(snaps, name)
			log = append(log, "create "+name)
		case op < 9:
			name := snaps[r.IntN(len(snaps))]
			qemuImg(t, dir, "snapshot", "-a", name, img)
			log = append(log, "apply "+name)
		default:
			i := r.IntN(len(snaps))
			qemuImg(t, dir, "snapshot", "-d", snaps[i], img)
			log = append(log, "delete "+snaps[i])
			snaps = append(snaps[:i], snaps[i+1:]...)
		}
		if len(snaps) < 2 {
			continue
		}
		a, b := snaps[r.IntN(len(snaps))], snaps[r.IntN(len(snaps))]
		im := mustOpen(t, img)
		la, lb := mustLayer(t, im, a), mustLayer(t, im, b)
		ch, err := ChangedClusters(la, lb)
		if err != nil {
			t.Fatalf("step %d (%v): ChangedClusters(%s, %s): %v", step, log, a, b, err)
		}
		rawA, rawB := toRaw(t, img, a), toRaw(t, img, b)
		if miss := uncovered(differingClusters(t, rawA, rawB, cs), ch); len(miss) > 0 {
			t.Fatalf("step %d (%v): %s and %s differ in %s, not in ChangedClusters %s", step, log, a, b, summary(miss), summary(ch))
		}
		os.Remove(rawA)
		os.Remove(rawB)
	}
}
