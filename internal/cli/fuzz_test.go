package cli

import (
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/internal/apitypes"
)

// FuzzSnapshotAddress: any string parses to VOL@SNAP with both parts
// non-empty and the snapshot after the last '@', or is refused as usage.
func FuzzSnapshotAddress(f *testing.F) {
	for _, s := range []string{"db@snap", "db", "@x", "x@", "a@b@c", "", "@"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := parseSnapshotAddress(s)
		if err != nil {
			if ExitCode(err) != ExitUsage {
				t.Fatalf("%q: exit code %d for a bad address, want usage", s, ExitCode(err))
			}
			return
		}
		if a.volume == "" || a.snapshot == "" || a.volume+"@"+a.snapshot != s || strings.Contains(a.snapshot, "@") {
			t.Fatalf("%q parsed as %+v", s, a)
		}
	})
}

// FuzzDrawTree draws arbitrary parent links (cycles, unknown parents,
// duplicates): it never panics and prints every snapshot exactly once.
func FuzzDrawTree(f *testing.F) {
	f.Add([]byte{0, 1, 1, 2, 255}, uint8(1))
	f.Add([]byte{1, 0}, uint8(0))
	f.Add([]byte{}, uint8(7))
	f.Fuzz(func(t *testing.T, parents []byte, head uint8) {
		if len(parents) > 300 {
			parents = parents[:300]
		}
		ids := make([]string, len(parents))
		for i := range parents {
			ids[i] = "id" + string(rune('a'+i%26)) + strings.Repeat("x", i/26)
		}
		var snaps []apitypes.Snapshot
		for i, p := range parents {
			s := apitypes.Snapshot{ID: ids[i], Name: "n-" + ids[i], State: apitypes.SnapshotReady}
			if int(p) < len(ids) {
				pid := ids[p]
				s.ParentID = &pid
			}
			snaps = append(snaps, s)
		}
		var hp *string
		if int(head) < len(ids) {
			hp = &ids[head]
		}
		out := DrawTree(snaps, hp)
		for _, s := range snaps {
			if n := strings.Count(out, s.Name+" "); n != 1 {
				t.Fatalf("%s drawn %d times:\n%s", s.Name, n, out)
			}
		}
		if !strings.Contains(out, HeadLine) {
			t.Fatalf("no head line:\n%s", out)
		}
	})
}
