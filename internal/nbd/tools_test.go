package nbd

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/internal/testenv"
)

// Interoperability: the real clients (libnbd's nbdinfo and nbdcopy, QEMU's
// qemu-img and qemu-io) against the server on a loopback port.

// toolServer serves the test exports plus "odd" (a size that is no
// multiple of 512, random bytes) on TCP.
func toolServer(t *testing.T, readOnly bool) (*testExports, *memExport, string) {
	t.Helper()
	x := newTestExports()
	odd := newMemExport(3*MiB + 1234)
	rand.New(rand.NewSource(3)).Read(odd.data)
	odd.setState(0, odd.Size(), blockData)
	srv := x.server(t)
	srv.ReadOnly = readOnly
	srv.Lookup = func(name string) (Export, bool) {
		if name == "odd" {
			return readOnlyExport{odd}, true
		}
		return x.lookup(name)
	}
	port := startTCP(t, srv)
	return x, odd, "nbd://127.0.0.1:" + strconv.Itoa(port)
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestNbdinfo(t *testing.T) {
	testenv.RequireTool(t, "nbdinfo")
	x, _, uri := toolServer(t, false)

	type info struct {
		Exports []struct {
			Name         string   `json:"export-name"`
			Description  string   `json:"description"`
			Size         int64    `json:"export-size"`
			Contexts     []string `json:"contexts"`
			ReadOnly     bool     `json:"is_read_only"`
			CanCache     bool     `json:"can_cache"`
			CanDF        bool     `json:"can_df"`
			CanFlush     bool     `json:"can_flush"`
			CanFUA       bool     `json:"can_fua"`
			CanMultiConn bool     `json:"can_multi_conn"`
			CanTrim      bool     `json:"can_trim"`
			CanZero      bool     `json:"can_zero"`
			BlockMin     int64    `json:"block_size_minimum"`
			BlockPref    int64    `json:"block_size_preferred"`
			BlockMax     int64    `json:"block_size_maximum"`
		} `json:"exports"`
		Protocol   string `json:"protocol"`
		Structured bool   `json:"structured"`
	}
	for _, tt := range []struct {
		export   string
		writable bool
		trim     bool
		desc     string
	}{
		{"disk", false, false, ""},
		{"rw", true, true, "cairn test disk"},
		{"wo", true, false, ""},
	} {
		var got info
		out := run(t, "nbdinfo", "--json", uri+"/"+tt.export)
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("nbdinfo --json: %v\n%s", err, out)
		}
		if len(got.Exports) != 1 {
			t.Fatalf("nbdinfo --json: %d exports\n%s", len(got.Exports), out)
		}
		e := got.Exports[0]
		if got.Protocol != "newstyle-fixed" || !got.Structured {
			t.Errorf("%s: protocol %q, structured %v", tt.export, got.Protocol, got.Structured)
		}
		if e.Name != tt.export || e.Size != testDiskSize || e.Description != tt.desc {
			t.Errorf("%s: name %q, size %d, description %q", tt.export, e.Name, e.Size, e.Description)
		}
		if len(e.Contexts) != 1 || e.Contexts[0] != contextAllocation {
			t.Errorf("%s: contexts %v", tt.export, e.Contexts)
		}
		if e.ReadOnly == tt.writable || e.CanMultiConn == tt.writable || e.CanFlush != tt.writable ||
			e.CanFUA != tt.writable || e.CanZero != tt.writable || e.CanTrim != tt.trim || !e.CanCache || !e.CanDF {
			t.Errorf("%s: flags %+v", tt.export, e)
		}
		if e.BlockMin != 1 || e.BlockPref != 4096 || e.BlockMax != 32<<20 {
			t.Errorf("%s: block sizes %d %d %d", tt.export, e.BlockMin, e.BlockPref, e.BlockMax)
		}
	}

	// The map is the export's extents, exactly.
	var want strings.Builder
	for _, e := range testDiskMap {
		desc := map[blockState]string{blockData: "0 data", blockHole: "3 hole,zero", blockZero: "2 zero"}[e.state]
		fmt.Fprintf(&want, "%d %d %s\n", e.off, e.length, desc)
	}
	var got strings.Builder
	for _, line := range strings.Split(strings.TrimSpace(run(t, "nbdinfo", "--map", uri+"/disk")), "\n") {
		got.WriteString(strings.Join(strings.Fields(line), " ") + "\n")
	}
	if got.String() != want.String() {
		t.Errorf("nbdinfo --map:\n%s\nwant:\n%s", got.String(), want.String())
	}
	// Without extents: all data.
	if out := strings.Fields(run(t, "nbdinfo", "--map", uri+"/plain")); strings.Join(out, " ") != "0 8388608 0 data" {
		t.Errorf("nbdinfo --map of an export without extents: %q", out)
	}

	out := run(t, "nbdinfo", "--list", uri)
	for _, name := range []string{"disk", "plain", "rw", "wo", "faulty"} {
		if !strings.Contains(out, `export="`+name+`"`) {
			t.Errorf("nbdinfo --list does not show %q:\n%s", name, out)
		}
	}
	if size := testenv.NBDSize(t, uri); size != testDiskSize {
		t.Errorf("default export: size %d", size)
	}
	if size := testenv.NBDSize(t, uri+"/odd"); size != 3*MiB+1234 {
		t.Errorf("odd export: size %d", size)
	}
	if out, err := exec.Command("nbdinfo", uri+"/nope").CombinedOutput(); err == nil {
		t.Errorf("nbdinfo of an unknown export succeeded:\n%s", out)
	}
	_ = x
}

func TestNbdcopy(t *testing.T) {
	testenv.RequireTool(t, "nbdcopy")
	x, odd, uri := toolServer(t, false)
	dir := t.TempDir()
	for _, tt := range []struct {
		export string
		want   []byte
		args   []string
	}{
		{"disk", x.disk.snapshot(), nil},
		{"plain", x.disk.snapshot(), []string{"--connections=1", "--request-size=65536"}},
		{"odd", odd.snapshot(), nil},
	} {
		out := filepath.Join(dir, tt.export+".raw")
		if err := os.WriteFile(out, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		run(t, "nbdcopy", append(tt.args, uri+"/"+tt.export, out)...)
		got, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, tt.want) {
			t.Errorf("nbdcopy of %s: %d bytes differ from the export's %d", tt.export, len(got), len(tt.want))
		}
	}
}

func TestQemuImg(t *testing.T) {
	testenv.RequireTool(t, "qemu-img")
	x, _, uri := toolServer(t, false)
	dir := t.TempDir()
	ref := filepath.Join(dir, "ref.raw")
	if err := os.WriteFile(ref, x.disk.snapshot(), 0o600); err != nil {
		t.Fatal(err)
	}

	var info struct {
		VirtualSize int64 `json:"virtual-size"`
	}
	out := run(t, "qemu-img", "info", "--output=json", uri+"/disk")
	if err := json.Unmarshal([]byte(out), &info); err != nil || info.VirtualSize != testDiskSize {
		t.Errorf("qemu-img info: virtual size %d (%v)\n%s", info.VirtualSize, err, out)
	}

	run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", uri+"/disk", ref)
	run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", uri+"/plain", ref)
	// compare must see a difference, or it proves nothing.
	changed := x.disk.snapshot()
	changed[6*MiB+77] ^= 1
	other := filepath.Join(dir, "other.raw")
	if err := os.WriteFile(other, changed, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "raw", uri+"/disk", other).CombinedOutput(); err == nil {
		t.Errorf("qemu-img compare found no difference:\n%s", out)
	}

	conv := filepath.Join(dir, "conv.raw")
	run(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", uri+"/disk", conv)
	if got, _ := os.ReadFile(conv); !bytes.Equal(got, x.disk.snapshot()) {
		t.Errorf("qemu-img convert: bytes differ")
	}

	var entries []struct {
		Start, Length int64
		Zero, Data    bool
	}
	out = run(t, "qemu-img", "map", "--output=json", "-f", "raw", uri+"/disk")
	if err := json.Unmarshal([]byte(out), &entries); err != nil {
		t.Fatalf("qemu-img map: %v\n%s", err, out)
	}
	if len(entries) != len(testDiskMap) {
		t.Fatalf("qemu-img map: %d ranges, want %d\n%s", len(entries), len(testDiskMap), out)
	}
	for i, e := range testDiskMap {
		g := entries[i]
		wantZero, wantData := e.state != blockData, e.state != blockHole
		if g.Start != e.off || g.Length != e.length || g.Zero != wantZero || g.Data != wantData {
			t.Errorf("qemu-img map range %d: %+v, want start %d length %d zero %v data %v", i, g, e.off, e.length, wantZero, wantData)
		}
	}

	// Writing through QEMU: a file with data, zeros and random bytes
	// converted into the writable export.
	src := make([]byte, testDiskSize)
	rnd := rand.New(rand.NewSource(9))
	rnd.Read(src[:3*MiB])
	rnd.Read(src[5*MiB : 5*MiB+12345])
	srcFile := filepath.Join(dir, "src.raw")
	if err := os.WriteFile(srcFile, src, 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", srcFile, uri+"/rw")
	if !bytes.Equal(x.rw.snapshot(), src) {
		t.Errorf("qemu-img convert into the export: bytes differ")
	}
	if x.rw.flushes.Load() == 0 {
		t.Errorf("qemu-img convert into the export never flushed")
	}
}

func TestQemuIO(t *testing.T) {
	testenv.RequireTool(t, "qemu-io")
	x, _, uri := toolServer(t, false)
	for _, c := range []string{
		"read -P 0x11 0 1M", "read -P 0 1M 1M", "read -P 0x22 2M 1M", "read -P 0 3M 2M",
		"read -P 0x33 5M 64k", "read -P 0 5184k 960k", "read -P 0x11 1048575 1", "read -P 0 8388607 1",
	} {
		testenv.QemuIO(t, "-r", "-f", "raw", "-c", c, uri+"/disk")
	}
	if testenv.PatternMatches(t, "-r", "-f", "raw", "-c", "read -P 0x22 0 4k", uri+"/disk") {
		t.Errorf("qemu-io found pattern 0x22 where the export holds 0x11: the check proves nothing")
	}

	t.Run("writable", func(t *testing.T) {
		testenv.QemuIO(t, "-f", "raw", "-c", "write -P 0x5a 1M 64k", uri+"/rw")
		snap := x.rw.snapshot()
		if !bytes.Equal(snap[1*MiB:1*MiB+64<<10], bytes.Repeat([]byte{0x5a}, 64<<10)) {
			t.Fatalf("write -P 0x5a 1M 64k did not reach the export")
		}
		if !bytes.Equal(snap[1*MiB+64<<10:2*MiB], make([]byte, 1*MiB-64<<10)) || snap[1*MiB-1] != 0x11 {
			t.Fatalf("write -P 0x5a 1M 64k changed bytes around it")
		}
		// Zeroes that may unmap, zeroes that must stay allocated, discard.
		testenv.QemuIO(t, "-f", "raw", "-c", "write -z -u 0 256k", "-c", "write -z 256k 256k", "-c", "discard 2M 512k", "-c", "flush", uri+"/rw")
		snap = x.rw.snapshot()
		if !bytes.Equal(snap[:512<<10], make([]byte, 512<<10)) || !bytes.Equal(snap[2*MiB:2*MiB+512<<10], make([]byte, 512<<10)) {
			t.Fatalf("zeroed or discarded ranges hold data")
		}
		for _, c := range []struct {
			off  int64
			want blockState
		}{{0, blockHole}, {256 << 10, blockZero}, {2 * MiB, blockHole}, {2*MiB + 512<<10, blockData}} {
			if s := x.rw.state[c.off/memBlock]; s != c.want {
				t.Errorf("block at %d: state %d, want %d", c.off, s, c.want)
			}
		}
		if x.rw.flushes.Load() == 0 {
			t.Errorf("qemu-io flush did not flush the export")
		}
		testenv.QemuIO(t, "-r", "-f", "raw", "-c", "read -P 0x5a 1M 64k", "-c", "read -P 0 0 512k", "-c", "read -P 0x22 2560k 512k", uri+"/rw")
		// Without WriteZeroes and Trim: zeroes are written as data.
		testenv.QemuIO(t, "-f", "raw", "-c", "write -z 0 1M", uri+"/wo")
		if !bytes.Equal(x.wo.snapshot()[:1*MiB], make([]byte, 1*MiB)) {
			t.Fatalf("write -z on an export without WriteZeroes left data")
		}
	})

	t.Run("read-only", func(t *testing.T) {
		for _, export := range []string{"disk", "plain"} {
			before := x.disk.snapshot()
			out, err := exec.Command("qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 64k", uri+"/"+export).CombinedOutput()
			if err == nil && !strings.Contains(string(out), "failed") {
				t.Fatalf("qemu-io wrote to read-only export %s:\n%s", export, out)
			}
			if s := string(out); !strings.Contains(s, "Permission denied") && !strings.Contains(s, "read-only") &&
				!strings.Contains(s, "not permitted") {
				t.Errorf("qemu-io write to %s: not a permission error:\n%s", export, out)
			}
			if !bytes.Equal(before, x.disk.snapshot()) {
				t.Fatalf("read-only export %s changed", export)
			}
		}
	})
}

// TestQemuIOServerReadOnly: an export that implements Writer, behind a
// read-only server, refuses QEMU's writes and keeps its data.
func TestQemuIOServerReadOnly(t *testing.T) {
	testenv.RequireTool(t, "qemu-io")
	x, _, uri := toolServer(t, true)
	before := x.rw.snapshot()
	out, err := exec.Command("qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 64k", uri+"/rw").CombinedOutput()
	if err == nil && !strings.Contains(string(out), "failed") {
		t.Fatalf("qemu-io wrote through a read-only server:\n%s", out)
	}
	if !strings.Contains(string(out), "Permission denied") {
		t.Errorf("not a permission error:\n%s", out)
	}
	if !bytes.Equal(before, x.rw.snapshot()) {
		t.Fatalf("export changed behind a read-only server")
	}
	testenv.QemuIO(t, "-r", "-f", "raw", "-c", "read -P 0x11 0 1M", uri+"/rw")
}
