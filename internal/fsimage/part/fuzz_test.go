package part

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/fsimage/fsimagetest"
)

var writeSeeds = flag.Bool("part.write-seeds", false, "rewrite testdata/fuzz/FuzzPartitions/seed-* from disks made by sfdisk")

// fuzzDiskSize is the size of the disks FuzzPartitions reads.
const fuzzDiskSize = 64 << 10

// seedDisks are small real partition tables, on 64 KiB disks.
func seedDisks(t testing.TB) map[string][]byte {
	gpt := make([]byte, fuzzDiskSize)
	writeGPT(gpt, 512, 4, []gptEntry{{40, 49, "a"}, {60, 79, "b"}}, nil)
	return map[string][]byte{
		"mbr-logical": sfdiskDisk(t, fuzzDiskSize, "label: dos\nstart=2, size=10, type=83\nstart=20, size=80, type=5\n"+
			"start=110, size=10, type=82\nstart=22, size=10, type=83\nstart=40, size=10, type=7\n"),
		"gpt-sfdisk":    sfdiskDisk(t, fuzzDiskSize, "label: gpt\nfirst-lba: 34\nstart=40, size=10, type=linux, name=\"a\"\nstart=60, size=20, type=swap\n"),
		"gpt-4-entries": gpt,
	}
}

// FuzzPartitions reads arbitrary 64 KiB disks (in fsimagetest's sparse
// form): Read must not panic, fail only with corrupt errors, and return
// partitions inside the disk with distinct numbers.
func FuzzPartitions(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		disk := fsimagetest.DecodeSparse(data, fuzzDiskSize)
		parts, err := Read(bytes.NewReader(disk), fuzzDiskSize)
		if err != nil {
			if core.KindOf(err) != core.KindCorrupt {
				t.Fatalf("error of kind %v: %v", core.KindOf(err), err)
			}
			return
		}
		seen := map[int]bool{}
		for _, p := range parts {
			if p.Start < 0 || p.Size <= 0 || p.Start+p.Size > fuzzDiskSize || p.Index < 1 || seen[p.Index] {
				t.Fatalf("bad partition %+v in %+v", p, parts)
			}
			seen[p.Index] = true
		}
	})
}

// The committed seeds hold real tables that Read decodes; with
// -part.write-seeds they are rewritten from fresh sfdisk disks.
func TestFuzzSeedCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzPartitions")
	if *writeSeeds {
		for name, disk := range seedDisks(t) {
			if err := fsimagetest.WriteCorpusFile(dir, "seed-"+name, fsimagetest.EncodeSparse(disk)); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := map[string]int{"seed-mbr-logical": 4, "seed-gpt-sfdisk": 2, "seed-gpt-4-entries": 2}
	for name, n := range want {
		data, err := fsimagetest.ReadCorpusFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("%v (go test -run TestFuzzSeedCorpus -part.write-seeds makes the seeds)", err)
		}
		disk := fsimagetest.DecodeSparse(data, fuzzDiskSize)
		parts, err := Read(bytes.NewReader(disk), fuzzDiskSize)
		if err != nil || len(parts) != n {
			t.Errorf("%s: Read = %+v, %v; want %d partitions", name, parts, err, n)
		}
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatal(err)
	}
}
