package ext4

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/internal/fsimage/fsimagetest"
	"github.com/cairn-backup/cairn/internal/testenv"
)

// debugfs runs debugfs -w on img with the commands on its standard input.
func debugfs(t *testing.T, img string, cmds ...string) {
	t.Helper()
	testenv.RequireTool(t, "debugfs")
	cmd := exec.Command("debugfs", "-w", "-f", "-", img)
	cmd.Stdin = strings.NewReader(strings.Join(cmds, "\n") + "\n")
	out, err := cmd.CombinedOutput()
	if err != nil || bytes.Contains(out, []byte("rror")) {
		t.Fatalf("debugfs %q: %v\n%s", cmds, err, out)
	}
}

// TestJournalReplay: an image whose journal holds committed transactions
// (written by debugfs, which sets needs_recovery) reads as the file system
// those transactions make, as e2fsck's replay does; an uncommitted
// transaction and revoked blocks are not replayed.
func TestJournalReplay(t *testing.T) {
	for _, v := range []struct {
		name string
		open string // debugfs journal_open options
		mkfs []string
	}{
		{"plain", "jo", []string{"-b", "4096"}},
		{"csum-v3", "jo -c -v 3", []string{"-b", "4096"}},
		{"csum-v2-1k", "jo -c -v 2", []string{"-b", "1024", "-O", "^64bit"}},
	} {
		t.Run(v.name, func(t *testing.T) {
			dir := t.TempDir()
			src := filepath.Join(dir, "src")
			os.MkdirAll(filepath.Join(src, "dir"), 0o755)
			os.WriteFile(filepath.Join(src, "old"), []byte("old content\n"), 0o644)
			for i := range 30 {
				os.WriteFile(filepath.Join(src, "dir", fmt.Sprintf("f%02d", i)), []byte{byte(i)}, 0o644)
			}
			os.WriteFile(filepath.Join(dir, "new.txt"), bytes.Repeat([]byte("new content\n"), 500), 0o644)
			before := mkfs(t, "ext4", src, "16M", v.mkfs...)
			a, _ := os.ReadFile(before)
			after := filepath.Join(dir, "after.raw")
			os.WriteFile(after, a, 0o644)
			debugfs(t, after, "write "+filepath.Join(dir, "new.txt")+" new", "rm old", "mkdir made", "rm dir/f07", "symlink made/link ../new")
			b, _ := os.ReadFile(after)
			bs := int(openBytes(t, a).blockSize)

			// The blocks that changed, and two more to test revocation and
			// uncommitted transactions with: free blocks near the end.
			var changed []string
			var payload []byte
			for i := 0; i < len(a); i += bs {
				if !bytes.Equal(a[i:i+bs], b[i:i+bs]) {
					changed = append(changed, strconv.Itoa(i/bs))
					payload = append(payload, b[i:i+bs]...)
				}
			}
			if len(changed) < 4 {
				t.Fatalf("only blocks %v changed", changed)
			}
			revoked, uncommitted, escaped := len(a)/bs-3, len(a)/bs-2, len(a)/bs-4
			garbage := filepath.Join(dir, "garbage")
			os.WriteFile(garbage, bytes.Repeat([]byte{0xC0, 0x3B, 0x39, 0x98}, bs/4), 0o644) // starts with the JBD2 magic: escaped
			half := len(changed) / 2
			journalled := filepath.Join(dir, "journalled.raw")
			os.WriteFile(journalled, a, 0o644)
			p1, p2 := filepath.Join(dir, "p1"), filepath.Join(dir, "p2")
			os.WriteFile(p1, append(bytes.Clone(payload[:half*bs]), bytes.Repeat([]byte{0xC0, 0x3B, 0x39, 0x98}, bs/4)...), 0o644)
			magicBlock := bytes.Repeat([]byte{0xC0, 0x3B, 0x39, 0x98}, bs/4)
			os.WriteFile(p2, append(bytes.Clone(payload[half*bs:]), magicBlock...), 0o644)
			debugfs(t, journalled, v.open,
				fmt.Sprintf("jw -b %s,%d %s", strings.Join(changed[:half], ","), revoked, p1),
				// debugfs 1.47.0 loses the commit block of a transaction
				// with both blocks and revocations: revoke on its own.
				fmt.Sprintf("jw -r %d", revoked),
				fmt.Sprintf("jw -b %s,%d %s", strings.Join(changed[half:], ","), escaped, p2),
				fmt.Sprintf("jw -b %d -c %s", uncommitted, garbage),
				"jc")
			j, _ := os.ReadFile(journalled)
			if le32(j, 1024+0x60)&incompatRecover == 0 {
				t.Fatal("the journalled image does not need recovery")
			}
			got := openBytes(t, j)
			if _, ok := got.dev.(*journalOverlay); !ok {
				t.Fatal("nothing was replayed")
			}
			fsimagetest.CompareFS(t, openBytes(t, b), got)
			for _, blk := range []int{revoked, uncommitted} {
				buf := make([]byte, bs)
				if err := got.readAt(buf, int64(blk*bs)); err != nil || !bytes.Equal(buf, a[blk*bs:(blk+1)*bs]) {
					t.Errorf("block %d was replayed (%v)", blk, err)
				}
			}
			buf := make([]byte, bs)
			if err := got.readAt(buf, int64(escaped*bs)); err != nil || !bytes.Equal(buf, magicBlock) {
				t.Errorf("block %d, which starts with the journal magic, was not replayed as it was (%v)", escaped, err)
			}
			if v.open != "jo" {
				// A damaged copy in the journal is an error, not a silent
				// partial replay.
				o := got.dev.(*journalOverlay)
				d := bytes.Clone(j)
				d[int64(o.blocks[uint64(escaped)].phys)*int64(bs)+100] ^= 1
				if _, err := Open(bytes.NewReader(d), int64(len(d))); err == nil || !strings.Contains(err.Error(), "fails its checksum") {
					t.Errorf("Open with a damaged journal block: %v", err)
				}
			}
			// e2fsck replays the same.
			fixed := filepath.Join(dir, "fixed.raw")
			os.WriteFile(fixed, j, 0o644)
			fsimagetest.RunTool(t, []int{1}, "e2fsck", "-fy", fixed)
			e, _ := os.ReadFile(fixed)
			fsimagetest.CompareFS(t, openBytes(t, e), got)
		})
	}
}

func openBytes(t testing.TB, img []byte) *FS {
	t.Helper()
	f, err := Open(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return f
}
