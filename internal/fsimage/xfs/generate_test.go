//go:build xfsfixtures

// The generators of the committed test data, built only when asked for:
//
//	go test -tags xfsfixtures -run TestGenerate ./internal/fsimage/xfs/

package xfs

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
)

// TestGenerateFixtures rewrites testdata/*.xfsz from fresh mkfs.xfs images.
// It runs only when asked: the committed files are what the other tests
// use, so that they do not change from run to run. Regenerate the fuzz
// seeds with them (their patches name blocks of the images):
//
//	go test -tags xfsfixtures -run TestGenerate ./internal/fsimage/xfs/
func TestGenerateFixtures(t *testing.T) {
	names := make([]string, 0, len(fixtureConfigs))
	for name := range fixtureConfigs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		cfg := fixtureConfigs[name]
		b := buildImage(t, cfg)
		checkForms(t, b)
		s := sparseFromFile(t, b.img, cfg.blockSize)
		data, err := encodeFixture(s)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("testdata", name), data, 0o644); err != nil {
			t.Fatal(err)
		}
		fixtureCache.Delete(name) // TestGenerateFuzzSeeds must see the new one
		t.Logf("%s: %d non-zero blocks, %d bytes compressed", name, len(s.index), len(data))
	}
}

// TestGenerateFuzzSeeds writes the committed seed corpora: for FuzzXFS one
// small patch on each kind of structure of both images, for
// FuzzXFSDecoders the real structures of the images.
func TestGenerateFuzzSeeds(t *testing.T) {
	write := func(target, name string, data []byte) {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		body := "go test fuzz v1\n[]byte(" + strconv.Quote(string(data)) + ")\n"
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for imgNo, fixture := range fuzzImages {
		img := loadFixture(t, fixture)
		fsys, err := openSparse(img, true)
		if err != nil {
			t.Fatal(err)
		}
		sb := fsys.sb
		sel := byte(0)
		if !sb.v5 {
			sel = 0x80
		}
		tag := fixture[:2]
		st := locateStructures(t, fsys)
		for _, s := range st {
			// FuzzXFS: a byte of the structure set to 0xff, CRCs off; and the
			// same with CRCs on for the superblock only.
			for _, at := range []int{4, 9, 40} {
				if at >= len(s.bytes) {
					continue
				}
				data := append([]byte{byte(imgNo)}, patch(img, s.off+int64(at), []byte{0xff})...)
				write("FuzzXFS", fmt.Sprintf("%s-%s-%d", tag, s.name, at), data)
			}
			// FuzzXFSDecoders: the structure itself.
			if s.decoder >= 0 {
				d := sel | byte(s.decoder)
				if sb.ftype {
					d |= 0x40
				}
				in := s.bytes
				if s.decoder == 3 { // the first byte tells the block size
					size := byte(0)
					if len(in) == 1024 {
						size = 1
					}
					in = append([]byte{size}, in...)
				}
				write("FuzzXFSDecoders", fmt.Sprintf("%s-%s", tag, s.name), append([]byte{d}, in...))
			}
		}
		write("FuzzXFS", tag+"-crc-on", []byte{byte(imgNo) | 2})
	}
}
