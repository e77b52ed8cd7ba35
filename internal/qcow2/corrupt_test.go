package qcow2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/testenv"
)

var be = binary.BigEndian

// sampleImage makes a small real image: 64 KiB clusters, data at 0 and
// 1 MiB, one snapshot; it returns the file's bytes.
func sampleImage(t testing.TB, dir string, extra ...string) []byte {
	t.Helper()
	img := filepath.Join(dir, "sample.qcow2")
	qemuImg(t, dir, append([]string{"create", "-q", "-f", "qcow2"}, append(extra, img, "8M")...)...)
	qemuIO(t, img, "write -P 0x5a 0 64k", "write -P 0x5b 1M 64k")
	snapshotCreate(t, img, "s1")
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// want is what a damaged image must produce.
type want struct {
	kind        core.Kind
	unsupported bool
	msg         string // a substring of the message
}

func checkErr(t *testing.T, err error, w want) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want %q", w.msg)
	}
	if core.KindOf(err) != w.kind {
		t.Errorf("kind %d, want %d: %v", core.KindOf(err), w.kind, err)
	}
	if errors.Is(err, ErrUnsupported) != w.unsupported {
		t.Errorf("errors.Is(err, ErrUnsupported) = %v: %v", !w.unsupported, err)
	}
	if !strings.Contains(err.Error(), w.msg) || !strings.HasPrefix(err.Error(), "qcow2 ") {
		t.Errorf("message %q does not start with \"qcow2 \" or lacks %q", err, w.msg)
	}
}

func put32(b []byte, off int, v uint32) []byte { be.PutUint32(b[off:], v); return b }
func put64(b []byte, off int, v uint64) []byte { be.PutUint64(b[off:], v); return b }

// Damaged headers and tables fail Open with an error of the right kind that
// names the structure.
func TestOpenDamaged(t *testing.T) {
	testenv.RequireTool(t, "qemu-img", "qemu-io")
	t.Parallel()
	dir := t.TempDir()
	orig := sampleImage(t, dir)
	l1Off := be.Uint64(orig[40:])
	snapOff := be.Uint64(orig[64:])
	hdrLen := int(be.Uint32(orig[100:]))
	corrupt := func(msg string) want { return want{kind: core.KindCorrupt, msg: msg} }
	unsup := func(msg string) want { return want{kind: core.KindInvalid, unsupported: true, msg: msg} }
	cases := []struct {
		name   string
		mutate func(b []byte) []byte
		want   want
	}{
		{"empty", func(b []byte) []byte { return nil }, want{kind: core.KindInvalid, msg: "not a qcow2 image"}},
		{"bad magic", func(b []byte) []byte { b[3] = 0xfc; return b }, want{kind: core.KindInvalid, msg: "not a qcow2 image"}},
		{"raw data", func(b []byte) []byte { return bytes.Repeat([]byte{0xab}, 4096) }, want{kind: core.KindInvalid, msg: "not a qcow2 image"}},
		{"magic only", func(b []byte) []byte { return b[:4] }, corrupt("header truncated")},
		{"truncated header", func(b []byte) []byte { return b[:50] }, corrupt("header truncated")},
		{"truncated v3 header", func(b []byte) []byte { return b[:90] }, corrupt("header truncated")},
		{"truncated to one cluster", func(b []byte) []byte { return b[:65536] }, corrupt("active L1 table at 0x")},
		{"version 1", func(b []byte) []byte { return put32(b, 4, 1) }, unsup("version 1")},
		{"version 4", func(b []byte) []byte { return put32(b, 4, 4) }, unsup("version 4")},
		{"AES", func(b []byte) []byte { return put32(b, 32, 1) }, unsup("AES encryption")},
		{"LUKS", func(b []byte) []byte { return put32(b, 32, 2) }, unsup("LUKS encryption")},
		{"crypt 7", func(b []byte) []byte { return put32(b, 32, 7) }, unsup("encryption method 7")},
		{"external data file", func(b []byte) []byte { return put64(b, 72, 1<<2) }, unsup("external data file")},
		{"extended L2", func(b []byte) []byte { return put64(b, 72, 1<<4) }, unsup("extended L2")},
		{"unknown feature", func(b []byte) []byte { return put64(b, 72, 1<<9|1<<40) }, unsup("unknown incompatible feature bit 9")},
		{"cluster bits 8", func(b []byte) []byte { return put32(b, 20, 8) }, unsup("cluster_bits 8")},
		{"cluster bits 22", func(b []byte) []byte { return put32(b, 20, 22) }, unsup("cluster_bits 22")},
		{"cluster bits huge", func(b []byte) []byte { return put32(b, 20, 1<<31) }, unsup("cluster_bits")},
		{"header length short", func(b []byte) []byte { return put32(b, 100, 96) }, corrupt("header_length 96")},
		{"header length huge", func(b []byte) []byte { return put32(b, 100, 1<<20) }, corrupt("header_length")},
		{"zstd bit without type", func(b []byte) []byte { return put64(b, 72, 1<<3) }, corrupt("compression type feature bit")},
		{"zstd type without bit", func(b []byte) []byte { b[104] = 1; return b }, corrupt("compression_type 1")},
		{"compression type 2", func(b []byte) []byte { b[104] = 2; return put64(b, 72, 1<<3) }, unsup("compression type 2")},
		{"header extension too long", func(b []byte) []byte { return put32(b, hdrLen+4, 1<<20) }, corrupt("header extension")},
		{"L1 beyond EOF", func(b []byte) []byte { return put64(b, 40, 1<<40) }, corrupt("active L1 table at 0x10000000000 (8 bytes) beyond end of file")},
		{"L1 unaligned", func(b []byte) []byte { return put64(b, 40, l1Off+8) }, corrupt("not aligned")},
		{"L1 too small", func(b []byte) []byte { return put32(b, 36, 0) }, corrupt("active L1 table has 0 entries")},
		{"L1 too large", func(b []byte) []byte { return put32(b, 36, 1<<30) }, corrupt("more than QEMU's limit")},
		{"virtual size huge", func(b []byte) []byte { return put64(b, 24, 1<<62) }, corrupt("virtual size")},
		{"virtual size needs huge L1", func(b []byte) []byte { return put64(b, 24, 1<<60) }, corrupt("L1 entries")},
		{"snapshot count", func(b []byte) []byte { return put32(b, 60, 70000) }, corrupt("snapshot table has 70000 entries")},
		{"snapshot table beyond EOF", func(b []byte) []byte { return put64(b, 64, 1<<30) }, corrupt("snapshot table at 0x40000000")},
		{"snapshot table unaligned", func(b []byte) []byte { return put64(b, 64, snapOff+8) }, corrupt("snapshot table at")},
		{"snapshot table cut", func(b []byte) []byte { return b[:snapOff+20] }, corrupt("snapshot table")},
		{"snapshot entry cut", func(b []byte) []byte { return put32(b, int(snapOff)+36, 1000)[:snapOff+200] }, corrupt("snapshot table entry 0 at")},
		{"snapshot extra data", func(b []byte) []byte { return put32(b, int(snapOff)+36, 5000) }, corrupt("extra data")},
		{"backing name too long", func(b []byte) []byte { put64(b, 8, 0x200); return put32(b, 16, 5000) }, corrupt("backing file name of 5000 bytes")},
		{"backing name offset", func(b []byte) []byte { put64(b, 8, 1<<20); return put32(b, 16, 5) }, corrupt("backing file name offset")},
		{"backing missing", func(b []byte) []byte {
			copy(b[0x300:], "missing.qcow2")
			put64(b, 8, 0x300)
			return put32(b, 16, 13)
		}, want{kind: core.KindNotFound, msg: "missing.qcow2: no such file or directory"}},
		{"backing is a directory", func(b []byte) []byte {
			copy(b[0x300:], "/")
			put64(b, 8, 0x300)
			return put32(b, 16, 1)
		}, want{kind: core.KindInvalid, msg: "not a regular file"}},
		{"backing over a protocol", func(b []byte) []byte {
			copy(b[0x300:], "nbd://host/x")
			put64(b, 8, 0x300)
			return put32(b, 16, 12)
		}, unsup("not a local file")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := c.mutate(bytes.Clone(orig))
			p := filepath.Join(t.TempDir(), "damaged.qcow2")
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
			im, err := Open(p)
			if err == nil {
				im.Close()
			}
			checkErr(t, err, c.want)
		})
	}
}

// Real images with features this reader refuses.
func TestOpenUnsupportedFeatures(t *testing.T) {
	testenv.RequireTool(t, "qemu-img")
	t.Parallel()
	dir := t.TempDir()
	cases := []struct {
		name string
		args []string
		msg  string
	}{
		{"luks", []string{"--object", "secret,id=sec0,data=abc123", "-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10"}, "LUKS encryption"},
		{"aes", []string{"--object", "secret,id=sec0,data=abc123", "-o", "encrypt.format=aes,encrypt.key-secret=sec0"}, "AES encryption"},
		{"extended-l2", []string{"-o", "extended_l2=on"}, "extended L2"},
		{"data-file", []string{"-o", "data_file=" + filepath.Join(dir, "data.raw")}, "external data file"},
	}
	for _, c := range cases {
		p := filepath.Join(dir, c.name+".qcow2")
		args := append(append([]string{"create", "-q", "-f", "qcow2"}, c.args...), p, "1M")
		for try := 1; ; try++ {
			// QEMU 7.2's PBKDF benchmark fails now and then with "Unable to
			// get accurate CPU usage" when the thread's CPU time reads 0.
			cmd := exec.Command("qemu-img", args...)
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			if err == nil {
				break
			}
			if try == 3 || !strings.Contains(string(out), "accurate CPU usage") {
				t.Fatalf("qemu-img %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		}
		_, err := Open(p)
		t.Run(c.name, func(t *testing.T) {
			checkErr(t, err, want{kind: core.KindInvalid, unsupported: true, msg: c.msg})
		})
	}
}

// Damage in the middle of the disk shows when it is read: Open succeeds,
// ReadAt and Extents fail with a corrupt error naming the structure.
func TestReadDamaged(t *testing.T) {
	testenv.RequireTool(t, "qemu-img", "qemu-io")
	t.Parallel()
	dir := t.TempDir()
	orig := sampleImage(t, dir)
	l1Off := int(be.Uint64(orig[40:]))
	l2Off := int(be.Uint64(orig[l1Off:]) & l1OffsetMask)
	snapOff := int(be.Uint64(orig[64:]))
	if l2Off == 0 {
		t.Fatal("sample image has no L2 table")
	}
	cases := []struct {
		name   string
		mutate func(b []byte) []byte
		snap   string
		msg    string
	}{
		{"L2 beyond EOF", func(b []byte) []byte { return put64(b, l1Off, 1<<40|1<<63) }, "", "L2 table at 0x10000000000 (L1 entry 0) beyond end of file"},
		{"L2 unaligned", func(b []byte) []byte { return put64(b, l1Off, uint64(l2Off+512)) }, "", "L2 table at"},
		{"data beyond EOF", func(b []byte) []byte { return put64(b, l2Off, 1<<40) }, "", "data cluster for guest offset 0x0 at host offset 0x10000000000 beyond end of file"},
		{"data unaligned", func(b []byte) []byte { return put64(b, l2Off, be.Uint64(b[l2Off:])+512) }, "", "not aligned"},
		{"compressed beyond EOF", func(b []byte) []byte { return put64(b, l2Off, 1<<62|1<<40) }, "", "compressed cluster"},
		{"compressed garbage", func(b []byte) []byte { return put64(b, l2Off, 1<<62|uint64(l1Off)) }, "", "compressed cluster for guest offset 0x0"},
		{"snapshot L1 beyond EOF", func(b []byte) []byte { return put64(b, snapOff, 1<<40) }, "s1", "L1 table of snapshot \"1\" at 0x10000000000"},
		{"snapshot L1 unaligned", func(b []byte) []byte { return put64(b, snapOff, 1000) }, "s1", "not aligned"},
		{"snapshot L1 too large", func(b []byte) []byte { return put32(b, snapOff+8, 1<<30) }, "s1", "more than QEMU's limit"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := c.mutate(bytes.Clone(orig))
			p := filepath.Join(t.TempDir(), "damaged.qcow2")
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
			im := mustOpen(t, p)
			var l *Layer
			var err error
			if c.snap == "" {
				l, err = im.Active()
			} else {
				l, err = im.Snapshot(c.snap)
			}
			if err == nil {
				buf := make([]byte, 128<<10)
				_, err = l.ReadAt(buf, 0)
				if err == nil {
					t.Fatalf("ReadAt succeeded")
				}
				checkErr(t, err, want{kind: core.KindCorrupt, msg: c.msg})
				_, err = l.Extents()
				if strings.Contains(c.name, "compressed") {
					return // Extents reads no data
				}
			}
			checkErr(t, err, want{kind: core.KindCorrupt, msg: c.msg})
		})
	}
}

// A backing chain that loops (an image backed by itself) ends at the depth
// limit with an error.
func TestBackingLoop(t *testing.T) {
	testenv.RequireTool(t, "qemu-img", "qemu-io")
	t.Parallel()
	dir := t.TempDir()
	b := sampleImage(t, dir)
	copy(b[0x300:], "loop.qcow2")
	put64(b, 8, 0x300)
	put32(b, 16, 10)
	p := filepath.Join(dir, "loop.qcow2")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(p)
	checkErr(t, err, want{kind: core.KindCorrupt, msg: "backing chain is longer than 16 files"})

	// A chain of exactly 16 backing files opens.
	prev := "sample.qcow2"
	for i := range 16 {
		name := "chain" + string(rune('a'+i)) + ".qcow2"
		qemuImg(t, dir, "create", "-q", "-f", "qcow2", "-b", prev, "-F", "qcow2", filepath.Join(dir, name), "8M")
		prev = name
	}
	im, err := Open(filepath.Join(dir, prev))
	if err != nil {
		t.Fatalf("a chain of 16 backing files: %v", err)
	}
	defer im.Close()
	l := mustLayer(t, im, "")
	buf := make([]byte, 4)
	if _, err := l.ReadAt(buf, 1<<20); err != nil || !bytes.Equal(buf, []byte{0x5b, 0x5b, 0x5b, 0x5b}) {
		t.Fatalf("read through 16 backing files: %x, %v", buf, err)
	}
	qemuImg(t, dir, "create", "-q", "-f", "qcow2", "-b", prev, "-F", "qcow2", filepath.Join(dir, "one-too-many.qcow2"), "8M")
	_, err = Open(filepath.Join(dir, "one-too-many.qcow2"))
	checkErr(t, err, want{kind: core.KindCorrupt, msg: "backing chain is longer than 16 files"})
}
