package qcow2

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/testenv"
)

// The oracle is QEMU itself: qemu-img deletes the snapshot from a copy of
// the image, and the clusters its refcounts show in use before and free
// after are what the delete freed. qemu-img check's allocated-clusters cannot
// serve: it counts the active layer's guest clusters only, and a delete
// leaves it unchanged.

// checkReport is what the tests read from qemu-img check --output=json.
type checkReport struct {
	CheckErrors    int   `json:"check-errors"`
	Corruptions    int   `json:"corruptions"`
	Leaks          int   `json:"leaks"`
	ImageEndOffset int64 `json:"image-end-offset"`
}

// qemuCheck runs qemu-img check and fails the test on corruptions or
// errors. Leaks (exit status 3, refcounts above the references) pass: see
// TestUniqueBytesLeaked.
func qemuCheck(t testing.TB, path string) checkReport {
	t.Helper()
	cmd := exec.Command("qemu-img", "check", "--output=json", path)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var r checkReport
	if jerr := json.Unmarshal(stdout.Bytes(), &r); jerr != nil || (err != nil && cmd.ProcessState.ExitCode() != 3) {
		t.Fatalf("qemu-img check %s: %v\n%s%s", path, err, stdout.Bytes(), stderr.Bytes())
	}
	if r.CheckErrors != 0 || r.Corruptions != 0 {
		t.Fatalf("qemu-img check %s: %s%s", path, stdout.Bytes(), stderr.Bytes())
	}
	return r
}

// refcounted reads the refcount table QEMU wrote and returns the host
// clusters with a non-zero refcount, the cluster size, and where the last
// of them ends (qemu-img check's image end offset).
func refcounted(t testing.TB, path string) (map[int64]bool, int64, int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	read := func(p []byte, off int64) {
		if _, err := f.ReadAt(p, off); err != nil {
			t.Fatalf("%s: reading %d bytes at 0x%x: %v", path, len(p), off, err)
		}
	}
	h := make([]byte, v3HeaderLen)
	read(h, 0)
	cs := int64(1) << be.Uint32(h[20:])
	order := uint32(4) // version 2: 16-bit refcounts
	if be.Uint32(h[4:]) == 3 {
		order = be.Uint32(h[96:])
	}
	if order < 3 || order > 6 {
		t.Fatalf("%s: refcount_order %d: the test reads whole-byte refcounts only", path, order)
	}
	width := int64(1) << order / 8
	table := make([]byte, int64(be.Uint32(h[56:]))*cs)
	read(table, int64(be.Uint64(h[48:])))
	perBlock := cs / width
	block := make([]byte, cs)
	used := map[int64]bool{}
	last := int64(-1)
	for i := int64(0); i < int64(len(table))/8; i++ {
		off := be.Uint64(table[i*8:]) &^ 0x1ff
		if off == 0 {
			continue
		}
		read(block, int64(off))
		for j := int64(0); j < perBlock; j++ {
			var v uint64
			switch e := block[j*width : (j+1)*width]; width {
			case 1:
				v = uint64(e[0])
			case 2:
				v = uint64(be.Uint16(e))
			case 4:
				v = uint64(be.Uint32(e))
			default:
				v = be.Uint64(e)
			}
			if v != 0 {
				used[i*perBlock+j] = true
				last = i*perBlock + j
			}
		}
	}
	return used, cs, (last + 1) * cs
}

// snapshotTableSpan returns where the snapshot table is and its length.
func snapshotTableSpan(t testing.TB, path string) (int64, int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var h [72]byte
	if _, err := f.ReadAt(h[:], 0); err != nil {
		t.Fatal(err)
	}
	count, off := be.Uint32(h[60:]), int64(be.Uint64(h[64:]))
	pos := off
	for i := uint32(0); i < count; i++ {
		pos = (pos + 7) &^ 7
		var e [40]byte
		if _, err := f.ReadAt(e[:], pos); err != nil {
			t.Fatal(err)
		}
		pos += 40 + int64(be.Uint32(e[36:])) + int64(be.Uint16(e[12:])) + int64(be.Uint16(e[14:]))
	}
	return off, pos - off
}

// copySparse copies a file's data, leaving its holes holes.
func copySparse(t testing.TB, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		t.Fatal(err)
	}
	data, err := dataExtents(in, fi.Size())
	if err != nil {
		t.Fatal(err)
	}
	if data == nil {
		data = extentList{{0, fi.Size()}}
	}
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	for _, e := range data {
		if _, err := io.Copy(io.NewOffsetWriter(out, e.Offset), io.NewSectionReader(in, e.Offset, e.Length)); err != nil {
			t.Fatal(err)
		}
	}
	if err := out.Truncate(fi.Size()); err != nil {
		t.Fatal(err)
	}
}

// freedByDelete deletes the first snapshot with the given name (qemu-img
// finds snapshots to delete by name only) from a copy of the image and
// returns the bytes of the clusters in use before and free after, the old
// snapshot table left out (QEMU writes the new table elsewhere first). With
// repair, qemu-img check -r leaks first sets the refcounts to the references.
func freedByDelete(t testing.TB, img, name string, repair bool) int64 {
	t.Helper()
	dir := filepath.Dir(img)
	cp := filepath.Join(dir, "oracle.qcow2")
	copySparse(t, img, cp)
	defer os.Remove(cp)
	if repair {
		qemuImg(t, dir, "check", "-q", "-r", "leaks", cp)
	}
	before, cs, _ := refcounted(t, cp)
	tabOff, tabLen := snapshotTableSpan(t, cp)
	qemuImg(t, dir, "snapshot", "-d", name, "--image-opts", imageOpts(cp))
	after, _, end := refcounted(t, cp)
	// QEMU left the image sound, and the test read its refcounts right.
	if rep := qemuCheck(t, cp); rep.ImageEndOffset != end {
		t.Fatalf("%s: the last cluster in use ends at 0x%x, qemu-img check says the image ends at 0x%x", cp, end, rep.ImageEndOffset)
	}
	var freed int64
	for c := range before {
		if after[c] || (tabLen > 0 && c >= tabOff/cs && c <= (tabOff+tabLen-1)/cs) {
			continue
		}
		freed++
	}
	return freed * cs
}

// checkUnique checks UniqueBytes of every snapshot of an image against
// what qemu-img frees, and the map against the dense owner table. It
// returns UniqueBytes. UniqueBytes counts references: on an image with
// leaks the oracle repairs them before the delete.
func checkUnique(t *testing.T, img string) map[string]int64 {
	t.Helper()
	leaks := qemuCheck(t, img).Leaks
	if leaks > 0 {
		t.Logf("%s: %d leaked clusters, repaired in the copies", filepath.Base(img), leaks)
	}
	im := mustOpen(t, img)
	got, err := im.UniqueBytes()
	if err != nil {
		t.Fatalf("UniqueBytes: %v", err)
	}
	dense, err := im.uniqueClusters(false)
	if err != nil {
		t.Fatal(err)
	}
	sparse, err := im.uniqueClusters(true)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(dense) != fmt.Sprint(sparse) {
		t.Fatalf("dense owners count %v, the map %v", dense, sparse)
	}
	names := map[string]bool{}
	for k, s := range im.Snapshots() {
		if names[s.Name] {
			continue // qemu-img deletes by name: the first one
		}
		names[s.Name] = true
		want := freedByDelete(t, img, s.Name, leaks > 0)
		if have := dense[k] * im.clusterSize; have != want {
			t.Errorf("snapshot %s (id %s): %d unique bytes (%d clusters), deleting it with qemu-img frees %d (%d clusters)",
				s.Name, s.ID, have, dense[k], want, want/im.clusterSize)
		}
		if got[s.Name] != dense[k]*im.clusterSize {
			t.Errorf("UniqueBytes()[%q] = %d, want the first such snapshot's %d", s.Name, got[s.Name], dense[k]*im.clusterSize)
		}
	}
	if len(got) != len(names) {
		t.Errorf("UniqueBytes has %d entries for %d names: %v", len(got), len(names), got)
	}
	t.Logf("%s: %v", filepath.Base(img), got)
	return got
}

// newImage creates a qcow2 image with qemu-img.
func newImage(t testing.TB, dir, name, size string, opts ...string) string {
	t.Helper()
	img := filepath.Join(dir, name)
	args := []string{"create", "-q", "-f", "qcow2"}
	if len(opts) > 0 {
		args = append(args, "-o", strings.Join(opts, ","))
	}
	qemuImg(t, dir, append(args, img, size)...)
	return img
}

func expectUnique(t *testing.T, got map[string]int64, want map[string]int64) {
	t.Helper()
	for name, w := range want {
		if got[name] != w {
			t.Errorf("UniqueBytes()[%q] = %d (%d clusters of 64 KiB), want %d (%d)", name, got[name], got[name]>>16, w, w>>16)
		}
	}
}

const c64k = 64 << 10

// A snapshot with no writes after it shares every L2 table and data
// cluster with the active layer: deleting it frees its L1 table only.
func TestUniqueBytesFresh(t *testing.T) {
	testenv.RequireTool(t, "qemu-img", "qemu-io")
	t.Parallel()
	dir := t.TempDir()
	img := newImage(t, dir, "disk.qcow2", "64M")
	snapshotCreate(t, img, "empty")
	qemuIO(t, img, "write -P 1 0 8M", "write -P 2 40M 1M")
	snapshotCreate(t, img, "s1")
	snapshotCreate(t, img, "s2") // nothing between: s1 and s2 share everything
	got := checkUnique(t, img)
	expectUnique(t, got, map[string]int64{"empty": c64k, "s1": c64k, "s2": c64k})
}

// Writes after a snapshot copy its clusters on write: the old data clusters
// and the old L2 table become the snapshot's alone.
func TestUniqueBytesAfterWrites(t *testing.T) {
	testenv.RequireTool(t, "qemu-img", "qemu-io")
	t.Parallel()
	dir := t.TempDir()
	img := newImage(t, dir, "disk.qcow2", "64M")
	qemuIO(t, img, "write -P 1 0 8M")
	snapshotCreate(t, img, "s1")
	// 16 clusters rewritten, one in part; a new cluster the snapshot never had
	qemuIO(t, img, "write -P 2 0 960k", "write -P 3 990k 4k", "write -P 4 32M 64k")
	got := checkUnique(t, img)
	expectUnique(t, got, map[string]int64{"s1": (1 + 1 + 16) * c64k})
}

// Two snapshots that share the clusters the active layer left: each alone
// frees its L1 table; once one is gone the other owns them.
func TestUniqueBytesShared(t *testing.T) {
	testenv.RequireTool(t, "qemu-img", "qemu-io")
	t.Parallel()
	dir := t.TempDir()
	img := newImage(t, dir, "disk.qcow2", "64M")
	qemuIO(t, img, "write -P 1 0 8M")
	snapshotCreate(t, img, "s1")
	snapshotCreate(t, img, "s2")
	qemuIO(t, img, "write -P 2 0 1M")
	got := checkUnique(t, img)
	expectUnique(t, got, map[string]int64{"s1": c64k, "s2": c64k})

	qemuImg(t, dir, "snapshot", "-d", "s1", "--image-opts", imageOpts(img))
	got = checkUnique(t, img)
	expectUnique(t, got, map[string]int64{"s2": (1 + 1 + 16) * c64k})
}

// A chain with writes between the snapshots, 64 KiB and 4 KiB clusters.
func TestUniqueBytesChain(t *testing.T) {
	testenv.RequireTool(t, "qemu-img", "qemu-io")
	t.Parallel()
	for _, cs := range []int{65536, 4096} {
		t.Run(strconv.Itoa(cs), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			img := newImage(t, dir, "disk.qcow2", "64M", fmt.Sprintf("cluster_size=%d", cs))
			qemuIO(t, img, "write -P 1 0 4M", "write -P 2 20M 2M")
			snapshotCreate(t, img, "s1")
			qemuIO(t, img, "write -P 3 1M 1M", "write -P 4 30M 512k", "discard 20M 256k")
			snapshotCreate(t, img, "s2")
			qemuIO(t, img, "write -P 5 1536k 1M", "write -P 6 60M 64k", "write -z 21M 64k")
			snapshotCreate(t, img, "s3")
			qemuIO(t, img, "write -P 7 0 128k", "write -P 8 30M 64k")
			got := checkUnique(t, img)
			for _, s := range []string{"s1", "s2", "s3"} {
				if got[s] <= int64(cs) {
					t.Errorf("%s: %d unique bytes, want more than its L1 table", s, got[s])
				}
			}
		})
	}
}

// thirdRandomFile writes n bytes of clusters that are one third random and
// two thirds zeros: compressed, they take about a third of a cluster, so
// compressed clusters often straddle host clusters.
func thirdRandomFile(t testing.TB, dir string, n, cs int) string {
	t.Helper()
	r := rand.New(rand.NewPCG(11, 13))
	b := make([]byte, n)
	for off := 0; off < n; off += cs {
		for i := off; i < off+cs/3 && i < n; i++ {
			b[i] = byte(r.Uint32())
		}
	}
	p := filepath.Join(dir, "third-random.bin")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Compressed clusters: several share a host cluster, and some straddle
// two; a host cluster is freed only when every compressed cluster in it
// goes.
func TestUniqueBytesCompressed(t *testing.T) {
	testenv.RequireTool(t, "qemu-img", "qemu-io")
	t.Parallel()
	for _, ct := range []string{"zlib", "zstd"} {
		t.Run(ct, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			third := thirdRandomFile(t, dir, 1<<20, c64k)
			src := newImage(t, dir, "src.qcow2", "32M")
			qemuIO(t, src, "write -P 1 0 4M", "write -s "+third+" 4M 1M", "write -s "+third+" 6M 1M",
				"write -P 2 10M 2M", "write -s "+third+" 20M 1M")
			img := filepath.Join(dir, "disk.qcow2")
			qemuImg(t, dir, "convert", "-t", "unsafe", "-c", "-O", "qcow2", "-o", "compression_type="+ct, src, img)
			snapshotCreate(t, img, "s1")
			// all of a run of tiny compressed clusters, part of another, and
			// straddling ones
			qemuIO(t, img, "write -P 3 0 4M", "write -P 4 10M 64k", "write -P 5 4M 512k", "write -P 6 6M 1M")
			snapshotCreate(t, img, "s2")
			qemuIO(t, img, "write -P 7 20M 256k", "write -P 8 11M 1M")
			im := mustOpen(t, img)
			l := mustLayer(t, im, "s1")
			straddle, compressed := 0, 0
			for i := int64(0); i < int64(len(l.l1)); i++ {
				tab, err := l.l2Table(i)
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range tab {
					if e&l2Compressed == 0 {
						continue
					}
					compressed++
					if off, end := im.compressedSpan(e); off/c64k != (end-1)/c64k {
						straddle++
					}
				}
			}
			if compressed == 0 || straddle == 0 {
				t.Fatalf("s1 has %d compressed clusters, %d straddling two host clusters; the test needs both", compressed, straddle)
			}
			t.Logf("%d compressed clusters, %d straddle", compressed, straddle)
			checkUnique(t, img)
		})
	}
}

// Zero writes: without -u QEMU keeps the host cluster in the entry (a zero
// flag with an offset), even one a snapshot shares, and a snapshot taken
// then references it; with -u it drops it.
func TestUniqueBytesZeroClusters(t *testing.T) {
	testenv.RequireTool(t, "qemu-img", "qemu-io")
	t.Parallel()
	dir := t.TempDir()
	img := newImage(t, dir, "disk.qcow2", "64M")
	qemuIO(t, img, "write -P 1 0 4M")
	snapshotCreate(t, img, "s1")
	qemuIO(t, img, "write -z 0 256k", "write -z -u 2M 128k", "write -P 2 8M 512k", "write -z 8M 128k", "write -z 16M 1M", "write -z -u 8320k 64k")
	snapshotCreate(t, img, "s2")
	qemuIO(t, img, "write -P 3 8M 64k", "write -z -u 8256k 64k", "write -z 1M 64k")
	snapshotCreate(t, img, "s3")
	qemuIO(t, img, "write -z -u 0 16M")
	im := mustOpen(t, img)
	if st := statsOf(t, mustLayer(t, im, "s2")); st.ZeroAlloc == 0 || st.Zero == 0 {
		t.Fatalf("s2 has %+v: the test needs zero clusters with and without a host cluster", st)
	}
	// s1: its L1 and L2 tables, and the two clusters write -z -u dropped
	expectUnique(t, checkUnique(t, img), map[string]int64{"s1": (1 + 1 + 2) * c64k})
}

// saveVM takes a snapshot with VM state: QEMU with no machine, savevm on
// its monitor. The state is stored in clusters the snapshot's L1 table maps
// past the disk size.
func saveVM(t testing.TB, img, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", "-M", "none", "-nodefaults", "-no-user-config",
		"-display", "none", "-monitor", "stdio",
		"-drive", "if=none,id=d0,format=qcow2,cache=unsafe,file="+strings.ReplaceAll(img, ",", ",,"))
	cmd.Stdin = strings.NewReader("savevm " + name + "\nquit\n")
	out, err := cmd.CombinedOutput()
	if err != nil || bytes.Contains(out, []byte("Error")) {
		t.Fatalf("savevm %s: %v\n%s", name, err, out)
	}
}

func TestUniqueBytesVMState(t *testing.T) {
	testenv.RequireTool(t, "qemu-img", "qemu-io", "qemu-system-x86_64")
	t.Parallel()
	dir := t.TempDir()
	img := newImage(t, dir, "disk.qcow2", "64M")
	qemuIO(t, img, "write -P 1 0 8M")
	saveVM(t, img, "vm1")
	qemuIO(t, img, "write -P 2 0 1M")
	saveVM(t, img, "vm2")
	qemuIO(t, img, "write -P 3 0 64k")
	im := mustOpen(t, img)
	for _, s := range im.Snapshots() {
		if s.VMStateSize == 0 || s.VMStateSize > c64k || s.L1Size < 2 {
			t.Fatalf("snapshot %s: %d bytes of VM state in an L1 table of %d entries; the test expects one cluster past the disk", s.Name, s.VMStateSize, s.L1Size)
		}
	}
	got := checkUnique(t, img)
	// L1 table, L2 table and data of the disk, L2 table and data of the state
	expectUnique(t, got, map[string]int64{"vm1": (1 + 1 + 16 + 1 + 1) * c64k, "vm2": (1 + 1 + 1 + 1 + 1) * c64k})
}

// Two snapshots with one name: the name's entry is the first one's.
func TestUniqueBytesDuplicateNames(t *testing.T) {
	testenv.RequireTool(t, "qemu-img", "qemu-io")
	t.Parallel()
	dir := t.TempDir()
	img := newImage(t, dir, "disk.qcow2", "64M")
	qemuIO(t, img, "write -P 1 0 2M")
	snapshotCreate(t, img, "same")
	qemuIO(t, img, "write -P 2 0 1M")
	snapshotCreate(t, img, "same")
	qemuIO(t, img, "write -P 3 0 1M")
	im := mustOpen(t, img)
	first, err := im.uniqueClusters(false)
	if err != nil {
		t.Fatal(err)
	}
	got := checkUnique(t, img)
	if len(got) != 1 || got["same"] != first[0]*c64k {
		t.Fatalf("UniqueBytes = %v, want the first snapshot's %d bytes", got, first[0]*c64k)
	}
	// qemu-img deletes the first; then the second is checked.
	qemuImg(t, dir, "snapshot", "-d", "same", "--image-opts", imageOpts(img))
	expectUnique(t, checkUnique(t, img), map[string]int64{"same": (1 + 1 + 16) * c64k})
}

// QEMU 7.2 leaks a reference when it applies a snapshot with a shorter L1
// table over VM state past it: the refcount stays above the references, and
// deleting the snapshot that shares the state does not free it until
// qemu-img check -r leaks. UniqueBytes counts it.
func TestUniqueBytesLeaked(t *testing.T) {
	testenv.RequireTool(t, "qemu-img", "qemu-io")
	t.Parallel()
	dir := t.TempDir()
	img := newImage(t, dir, "disk.qcow2", "32M")
	qemuIO(t, img, "write -P 1 0 1M")
	snapshotCreate(t, img, "s0")
	resize(t, img, "48M")
	qemuIO(t, img, "write -b -P 3 0 64k")
	snapshotCreate(t, img, "s1")
	qemuImg(t, dir, "snapshot", "-a", "s0", "--image-opts", imageOpts(img))
	if qemuCheck(t, img).Leaks == 0 {
		t.Fatal("no leak: the test needs one")
	}
	// s1: its L1 table, the L2 table and data cluster of the state
	got := checkUnique(t, img)
	expectUnique(t, got, map[string]int64{"s1": 3 * c64k})
	if freed := freedByDelete(t, img, "s1", false); freed >= got["s1"] {
		t.Fatalf("without the repair qemu-img frees %d bytes, UniqueBytes %d: the leak no longer shows", freed, got["s1"])
	}
}

// The property: for seeded histories of writes (through the writeback and
// unsafe caches), VM state writes, snapshot creates, applies and deletes,
// and a resize, each snapshot's UniqueBytes is what deleting it frees.
func TestUniqueBytesProperty(t *testing.T) {
	testenv.RequireTool(t, "qemu-img", "qemu-io")
	t.Parallel()
	for seed := range 10 {
		t.Run(strconv.Itoa(seed), func(t *testing.T) {
			t.Parallel()
			uniqueIteration(t, uint64(seed))
		})
	}
}

func uniqueIteration(t *testing.T, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 0x0b1e))
	dir := t.TempDir()
	rnd := randomFile(t, dir, 1<<20, seed+200)
	cs := int64(65536)
	if seed == 3 {
		cs = 4096
	}
	size := int64(32+r.IntN(33)) << 20
	opts := fmt.Sprintf("cluster_size=%d,refcount_bits=%d", cs, []int{16, 16, 8, 64}[r.IntN(4)])
	if seed == 5 {
		opts = fmt.Sprintf("cluster_size=%d,compat=0.10", cs)
	}
	g := &writeGen{r: r, cs: cs, rnd: rnd, touched: map[int64]bool{}, maxLen: 1 << 20}
	img := filepath.Join(dir, "disk.qcow2")
	log := []string{opts}
	defer func() { t.Logf("seed %d: %s", seed, strings.Join(log, ", ")) }() // also when a step fails
	if seed%4 == 2 {
		src := newImage(t, dir, "src.qcow2", fmt.Sprint(size), opts)
		qemuIO(t, src, g.writes(20, size)...)
		qemuImg(t, dir, "convert", "-t", "unsafe", "-c", "-O", "qcow2", "-o", opts, src, img)
		log = append(log, "compressed")
	} else {
		newImage(t, dir, "disk.qcow2", fmt.Sprint(size), opts)
	}
	var snaps []string
	sizes := map[string]int64{} // applying a snapshot restores its disk size
	next, resized := 0, false
	for step := range 13 {
		op := r.IntN(20)
		if step == 12 {
			op = 0 // end with writes: the last snapshot has clusters to own
		}
		switch {
		case op < 8:
			cache := []string{"unsafe", "writeback"}[r.IntN(2)]
			qemuIOCache(t, "qcow2", cache, img, g.writes(3+r.IntN(10), size)...)
			log = append(log, "write "+cache)
		case op < 13 || len(snaps) == 0:
			name := fmt.Sprintf("s%d", next)
			next++
			snapshotCreate(t, img, name)
			snaps = append(snaps, name)
			sizes[name] = size
			log = append(log, "create "+name)
		case op < 15:
			// VM state, through the active L1 table past the disk size
			qemuIO(t, img, fmt.Sprintf("write -b -P 0x%02x %d %d", 1+r.IntN(255), 512*r.IntN(2048), 512*(1+r.IntN(1024))))
			log = append(log, "vmstate")
		case op < 17 && len(snaps) > 1:
			i := r.IntN(len(snaps))
			qemuImg(t, dir, "snapshot", "-d", snaps[i], "--image-opts", imageOpts(img))
			log = append(log, "delete "+snaps[i])
			snaps = append(snaps[:i], snaps[i+1:]...)
		case op < 19 || resized:
			name := snaps[r.IntN(len(snaps))]
			qemuImg(t, dir, "snapshot", "-a", name, "--image-opts", imageOpts(img))
			size = sizes[name]
			log = append(log, "apply "+name)
		default:
			size += int64(1+r.IntN(16)) << 20
			resize(t, img, fmt.Sprint(size))
			resized = true
			log = append(log, "resize")
		}
	}
	checkUnique(t, img)
}

// Damaged tables fail with a corrupt error that names the structure.
func TestUniqueBytesDamaged(t *testing.T) {
	testenv.RequireTool(t, "qemu-img", "qemu-io")
	t.Parallel()
	dir := t.TempDir()
	orig := sampleImage(t, dir)
	snapOff := int(be.Uint64(orig[64:]))
	snapL1 := int(be.Uint64(orig[snapOff:]))
	l2Off := int(be.Uint64(orig[snapL1:]) & l1OffsetMask)
	cases := []struct {
		name   string
		mutate func(b []byte) []byte
		msg    string
	}{
		{"snapshot L1 beyond EOF", func(b []byte) []byte { return put64(b, snapOff, 1<<40) }, "L1 table of snapshot \"1\" at 0x10000000000"},
		{"snapshot L1 too large", func(b []byte) []byte { return put32(b, snapOff+8, 1<<30) }, "more than QEMU's limit"},
		{"L2 beyond EOF", func(b []byte) []byte { return put64(b, snapL1, 1<<40) }, "L2 table at 0x10000000000 (L1 entry 0) beyond end of file"},
		{"data beyond EOF", func(b []byte) []byte { return put64(b, l2Off+8, 1<<40) }, "data cluster for guest offset 0x10000 at host offset 0x10000000000 beyond end of file"},
		{"data unaligned", func(b []byte) []byte { return put64(b, l2Off, be.Uint64(b[l2Off:])+512) }, "not aligned"},
		{"compressed beyond EOF", func(b []byte) []byte { return put64(b, l2Off, 1<<62|1<<40) }, "compressed cluster for guest offset 0x0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "damaged.qcow2")
			if err := os.WriteFile(p, c.mutate(bytes.Clone(orig)), 0o600); err != nil {
				t.Fatal(err)
			}
			im := mustOpen(t, p)
			_, err := im.UniqueBytes()
			checkErr(t, err, want{kind: core.KindCorrupt, msg: c.msg})
		})
	}
}

// FuzzUniqueBytes starts from FuzzOpen's corpus (real images and what the
// fuzzer found): nothing may panic, and errors are this package's.
func FuzzUniqueBytes(f *testing.F) {
	dir := filepath.Join("testdata", "fuzz", "FuzzOpen")
	entries, err := os.ReadDir(dir)
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			f.Fatal(err)
		}
		body := strings.TrimSuffix(strings.TrimPrefix(string(b), "go test fuzz v1\n[]byte("), ")\n")
		data, err := strconv.Unquote(body)
		if err != nil {
			f.Fatalf("%s: %v", e.Name(), err)
		}
		f.Add([]byte(data))
	}
	p := filepath.Join(f.TempDir(), "fuzz.qcow2")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		im, err := Open(p)
		if err != nil {
			return
		}
		defer im.Close()
		u, err := im.UniqueBytes()
		if err != nil {
			checkFuzzErr(t, err)
			return
		}
		for name, n := range u {
			if n < 0 || n%int64(im.ClusterSize()) != 0 {
				t.Fatalf("UniqueBytes()[%q] = %d", name, n)
			}
		}
	})
}

// A file far larger than its tables (sparse, or damaged) is counted in a
// map, not a slice over the whole file; the numbers do not change.
func TestUniqueBytesSparseFile(t *testing.T) {
	testenv.RequireTool(t, "qemu-img", "qemu-io")
	t.Parallel()
	dir := t.TempDir()
	img := newImage(t, dir, "disk.qcow2", "64M")
	qemuIO(t, img, "write -P 1 0 2M")
	snapshotCreate(t, img, "s1")
	qemuIO(t, img, "write -P 2 0 1M")
	want := checkUnique(t, img)
	if err := os.Truncate(img, 1<<40); err != nil {
		t.Fatal(err)
	}
	im := mustOpen(t, img)
	got, err := im.UniqueBytes()
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("in a 1 TiB file: %v, want %v", got, want)
	}
	if o := newClusterOwners(1<<40>>16, 1000, false); o.sparse == nil {
		t.Fatalf("a 1 TiB file with 1000 mapped clusters is counted in a slice of %d", len(o.dense))
	}
	if o := newClusterOwners(1<<20, 1<<18, false); o.dense == nil {
		t.Fatalf("a file with as many clusters as its tables map is counted in a map")
	}
}
