package qcow2

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/cairn-backup/cairn/internal/testenv"
)

// randomFile writes n bytes of seeded random data, for qemu-io write -s.
func randomFile(t testing.TB, dir string, n int, seed uint64) string {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	p := filepath.Join(dir, "random-"+strconv.FormatUint(seed, 10)+".bin")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// mixedWrites is a write pattern for a disk of at least 64 MiB with
// clusters of at most 2 MiB: data, unaligned data, zero writes on data and on
// holes (with and without unmapping), discards, random data.
func mixedWrites(rnd string) []string {
	return []string{
		"write -P 0xab 0 64k",
		"write -P 0xcd 100k 300k",
		"write -z 1M 128k",
		"write -P 0x11 2M 3M",
		"write -z 3M 64k",
		"write -z -u 3584k 128k",
		"discard 4M 256k",
		"write -s " + rnd + " 6M 1M",
		"write -s " + rnd + " 9000k 17k",
		"write -P 0x22 40M 4M",
		"discard 41M 1M",
		"write -z 42M 512k",
		"write -P 0x23 63M 512k",
	}
}

func TestRoundTripClusterSizes(t *testing.T) {
	testenv.RequireTool(t, "qemu-img", "qemu-io")
	t.Parallel()
	for _, cs := range []string{"512", "4096", "65536", "2M"} {
		t.Run(cs, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			rnd := randomFile(t, dir, 1<<20, 1)
			img := filepath.Join(dir, "disk.qcow2")
			// An odd size: the last cluster is partial.
			qemuImg(t, dir, "create", "-q", "-f", "qcow2", "-o", "cluster_size="+cs, img, strconv.Itoa(64<<20+1536))
			qemuIO(t, img, append(mixedWrites(rnd), "write -P 0x33 64M 1536")...)
			im := verify(t, img)
			if want, _ := parseSize(cs); im.ClusterSize() != want {
				t.Fatalf("ClusterSize %d, want %d", im.ClusterSize(), want)
			}
			if im.Size() != 64<<20+1536 || im.Version() != 3 {
				t.Fatalf("Size %d version %d", im.Size(), im.Version())
			}
			if st := statsOf(t, mustLayer(t, im, "")); cs == "65536" && (st.Zero == 0 || st.ZeroAlloc == 0 || st.Data == 0) {
				t.Fatalf("the writes made no zero, preallocated-zero or data clusters: %+v", st)
			}
		})
	}
}

func parseSize(s string) (int, error) {
	if s == "2M" {
		return 2 << 20, nil
	}
	return strconv.Atoi(s)
}

// A sparse 8 GiB disk with data past 4 GiB and across the 4 GiB boundary.
func TestRoundTripSparse8G(t *testing.T) {
	testenv.RequireTool(t, "qemu-img", "qemu-io")
	t.Parallel()
	dir := t.TempDir()
	img := filepath.Join(dir, "big.qcow2")
	qemuImg(t, dir, "create", "-q", "-f", "qcow2", img, "8G")
	qemuIO(t, img,
		"write -P 0x41 0 4k",
		"write -P 0x42 4194272k 64k", // 4 GiB - 32 KiB, across 4 GiB
		"write -P 0x43 4097M 1M",
		"write -z 5G 1M",
		"write -P 0x44 6G 100k",
		"discard 6G 64k",
		"write -P 0x45 8388544k 64k", // the last 64 KiB
	)
	im := verify(t, img)
	l := mustLayer(t, im, "")
	ext, _ := l.Extents()
	var total int64
	for _, e := range ext {
		total += e.Length
	}
	if total > 4<<20 {
		t.Fatalf("Extents of a sparse disk cover %d bytes: %s", total, summary(ext))
	}
}

// Compressed images: zlib (deflate) and zstd, converted with qemu-img -c,
// then partly rewritten, so that compressed, plain and zero clusters mix.
func TestRoundTripCompressed(t *testing.T) {
	testenv.RequireTool(t, "qemu-img", "qemu-io")
	t.Parallel()
	for _, ct := range []string{"zlib", "zstd"} {
		t.Run(ct, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			rnd := randomFile(t, dir, 1<<20, 2)
			src := filepath.Join(dir, "src.qcow2")
			img := filepath.Join(dir, "comp.qcow2")
			qemuImg(t, dir, "create", "-q", "-f", "qcow2", src, "64M")
			qemuIO(t, src, mixedWrites(rnd)...)
			qemuImg(t, dir, "convert", "-t", "unsafe", "-c", "-O", "qcow2", "-o", "compression_type="+ct, src, img)
			qemuIO(t, img,
				"write -P 0x77 2100k 10k", // inside a compressed cluster: rewritten plain
				"write -c -P 0x78 50M 64k",
				"write -c -s "+rnd+" 51M 128k", // random data does not compress: stored plain
				"write -z 40M 64k",
			)
			im := verify(t, img)
			if im.compression != map[string]int{"zlib": 0, "zstd": 1}[ct] {
				t.Fatalf("compression type %d", im.compression)
			}
			l := mustLayer(t, im, "")
			if st := statsOf(t, l); st.Compressed == 0 || st.Data == 0 {
				t.Fatalf("no compressed and plain clusters mixed: %+v", st)
			}
			// Small reads inside one compressed cluster decompress it once.
			a := make([]byte, 100)
			b := make([]byte, 100)
			if _, err := l.ReadAt(a, 40<<20+1000); err != nil {
				t.Fatal(err)
			}
			if _, err := l.ReadAt(b, 40<<20+1000); err != nil || !bytes.Equal(a, b) {
				t.Fatalf("second read differs: %v", err)
			}
		})
	}
}

// A version 2 image (compat=0.10): no zero flag, no header extensions area
// after 104 bytes, snapshots with or without extra data.
func TestRoundTripV2(t *testing.T) {
	testenv.RequireTool(t, "qemu-img", "qemu-io")
	t.Parallel()
	dir := t.TempDir()
	rnd := randomFile(t, dir, 1<<20, 3)
	img := filepath.Join(dir, "v2.qcow2")
	qemuImg(t, dir, "create", "-q", "-f", "qcow2", "-o", "compat=0.10", img, "64M")
	qemuIO(t, img, mixedWrites(rnd)...)
	snapshotCreate(t, img, "s1")
	qemuIO(t, img, "write -P 0x99 0 1M", "write -z 2M 1M")
	im := verify(t, img, "s1")
	if im.Version() != 2 {
		t.Fatalf("version %d", im.Version())
	}
}

// Backing chains: qcow2 on qcow2 on qcow2 with relative names and growing
// sizes, zero writes and discards hiding backing data; an overlay on a raw
// base; snapshots of an overlay read through the backing file.
func TestRoundTripBackingQcow2(t *testing.T) {
	testenv.RequireTool(t, "qemu-img", "qemu-io")
	t.Parallel()
	dir := t.TempDir()
	rnd := randomFile(t, dir, 1<<20, 4)
	base := filepath.Join(dir, "base.qcow2")
	qemuImg(t, dir, "create", "-q", "-f", "qcow2", base, "32M")
	qemuIO(t, base, "write -P 0x10 0 8M", "write -s "+rnd+" 16M 2M", "write -P 0x11 31M 1M")
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	mid := filepath.Join(dir, "sub", "mid.qcow2")
	qemuImg(t, dir, "create", "-q", "-f", "qcow2", "-b", "../base.qcow2", "-F", "qcow2", mid, "48M")
	qemuIO(t, mid,
		"write -P 0x20 1M 64k",
		"write -z 2M 1M", // zero flag over base data
		"discard 3M 1M",  // with a backing file, a discard also reads as zeros
		"write -P 0x21 40M 1M",
	)
	top := filepath.Join(dir, "sub", "top.qcow2")
	qemuImg(t, dir, "create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", top, "64M")
	qemuIO(t, top, "write -P 0x30 5M 100k", "write -z 17M 64k")
	snapshotCreate(t, top, "s1")
	qemuIO(t, top, "write -P 0x31 0 16M", "write -P 0x32 60M 1M")
	im := verify(t, top, "s1")
	if name, format := im.BackingFile(); name != "mid.qcow2" || format != "qcow2" {
		t.Fatalf("BackingFile() = %q, %q", name, format)
	}
	verify(t, mid)
}

func TestRoundTripBackingRaw(t *testing.T) {
	testenv.RequireTool(t, "qemu-img", "qemu-io")
	t.Parallel()
	dir := t.TempDir()
	base := filepath.Join(dir, "base.raw")
	qemuImg(t, dir, "create", "-q", "-f", "raw", base, "20M")
	qemuIOFmt(t, "raw", base, "write -P 0x50 0 1M", "write -P 0x51 10M 3M", "write -P 0x52 19M 1M")
	img := filepath.Join(dir, "over.qcow2")
	qemuImg(t, dir, "create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", img, "32M")
	qemuIO(t, img, "write -P 0x60 512k 1M", "write -z 11M 64k", "write -P 0x61 30M 64k")
	im := verify(t, img)
	l := mustLayer(t, im, "")
	ext, _ := l.Extents()
	// The raw base's holes stay out of the extents.
	if bad := intersect(ext, []Extent{{2 << 20, 8 << 20}, {14 << 20, 4 << 20}}); len(bad) > 0 {
		t.Fatalf("Extents include holes of the raw base: %s", summary(bad))
	}
}

// Without the backing format extension the format is probed by its magic.
func TestRoundTripBackingProbed(t *testing.T) {
	testenv.RequireTool(t, "qemu-img", "qemu-io")
	t.Parallel()
	for _, format := range []string{"qcow2", "raw"} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			base := filepath.Join(dir, "base."+format)
			qemuImg(t, dir, "create", "-q", "-f", format, base, "8M")
			qemuIOFmt(t, format, base, "write -P 0x70 0 2M", "write -P 0x71 6M 1M")
			img := filepath.Join(dir, "over.qcow2")
			qemuImg(t, dir, "create", "-q", "-f", "qcow2", "-b", "base."+format, "-F", format, img, "8M")
			qemuIO(t, img, "write -P 0x72 1M 64k")
			want := toRaw(t, img, "")
			removeBackingFormat(t, img)
			im := mustOpen(t, img)
			if _, f := im.BackingFile(); f != format {
				t.Fatalf("probed format %q, want %q", f, format)
			}
			compareWithRaw(t, mustLayer(t, im, ""), want)
		})
	}
}

// removeBackingFormat turns the backing format header extension into an
// unknown one, which readers ignore.
func removeBackingFormat(t testing.TB, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(b[:4096], []byte{0xe2, 0x79, 0x2a, 0xca})
	if i < 0 {
		t.Fatalf("%s has no backing format extension", path)
	}
	binary.BigEndian.PutUint32(b[i:], 0x12345678)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

type snapInfoJSON struct {
	Snapshots []struct {
		ID          string `json:"id"`
		Name        string `json:"name"`
		VMStateSize int64  `json:"vm-state-size"`
		DateSec     int64  `json:"date-sec"`
		DateNsec    int64  `json:"date-nsec"`
	} `json:"snapshots"`
}

// Snapshots across a resize: each snapshot keeps its own size and L1
// table; the table agrees with qemu-img info.
func TestRoundTripSnapshotsResize(t *testing.T) {
	testenv.RequireTool(t, "qemu-img", "qemu-io")
	t.Parallel()
	dir := t.TempDir()
	rnd := randomFile(t, dir, 1<<20, 5)
	img := filepath.Join(dir, "snap.qcow2")
	qemuImg(t, dir, "create", "-q", "-f", "qcow2", img, "32M")
	qemuIO(t, img, "write -P 0x01 0 4M", "write -s "+rnd+" 8M 1M", "write -P 0x02 31M 1M")
	snapshotCreate(t, img, "s1")
	qemuIO(t, img, "write -P 0x03 1M 1M", "write -z 8M 64k", "discard 31M 512k")
	snapshotCreate(t, img, "s2")
	resize(t, img, "600M") // past one L2 table's 512 MiB
	qemuIO(t, img, "write -P 0x04 40M 1M", "write -P 0x05 599M 1M", "write -P 0x06 0 64k")
	snapshotCreate(t, img, "s3")
	qemuIO(t, img, "write -P 0x07 2M 1M")
	im := verify(t, img, "s1", "s2", "s3")

	snaps := im.Snapshots()
	var info snapInfoJSON
	if err := json.Unmarshal([]byte(qemuImg(t, dir, "info", "--output=json", img)), &info); err != nil {
		t.Fatal(err)
	}
	if len(snaps) != 3 || len(info.Snapshots) != 3 {
		t.Fatalf("%d snapshots, qemu-img lists %d", len(snaps), len(info.Snapshots))
	}
	wantSize := []int64{32 << 20, 32 << 20, 600 << 20}
	for i, s := range snaps {
		q := info.Snapshots[i]
		if s.ID != q.ID || s.Name != q.Name || s.VMStateSize != q.VMStateSize || s.Date.Unix() != q.DateSec || int64(s.Date.Nanosecond()) != q.DateNsec {
			t.Fatalf("snapshot %d: %+v, qemu-img says %+v", i, s, q)
		}
		if s.DiskSize != wantSize[i] {
			t.Fatalf("snapshot %s: disk size %d, want %d", s.Name, s.DiskSize, wantSize[i])
		}
	}
	// By id as well as by name.
	l, err := im.Snapshot(snaps[1].ID)
	if err != nil || l.Size() != 32<<20 {
		t.Fatalf("Snapshot(%q): %v", snaps[1].ID, err)
	}
	if info, ok := l.SnapshotInfo(); !ok || info.Name != "s2" {
		t.Fatalf("SnapshotInfo: %+v %v", info, ok)
	}
	if _, err := im.Snapshot("nope"); err == nil {
		t.Fatal("unknown snapshot opened")
	}

	// s2 has one L1 entry, s3 two: the missing entry counts as 0, and
	// everything past s2's size is changed.
	s2, s3 := mustLayer(t, im, "s2"), mustLayer(t, im, "s3")
	ch, err := ChangedClusters(s2, s3)
	if err != nil {
		t.Fatal(err)
	}
	if miss := uncovered([]Extent{{0, 64 << 10}, {32 << 20, 568 << 20}}, ch); len(miss) > 0 {
		t.Fatalf("ChangedClusters(s2, s3) = %s misses %s", summary(ch), summary(miss))
	}
	if len(ch) != 2 {
		t.Fatalf("ChangedClusters(s2, s3) = %s, want the first cluster and [32M, 600M)", summary(ch))
	}
}
