package cli

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/apitypes"
)

func TestMain(m *testing.M) {
	time.Local = time.UTC // DrawTree and tables show local times
	os.Exit(m.Run())
}

var t0 = time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)

// snap makes a snapshot named name with id "<name>-id..." created i minutes
// after t0, with parent "" meaning none.
func snap(name string, minute int, parent string) apitypes.Snapshot {
	s := apitypes.Snapshot{
		ID:        fmt.Sprintf("%-8s-0000-4000-8000-000000000000", name)[:8] + "-0000-4000-8000-000000000000",
		Name:      name,
		State:     apitypes.SnapshotReady,
		CreatedAt: t0.Add(time.Duration(minute) * time.Minute),
	}
	s.ID = strings.ReplaceAll(s.ID, " ", "x")
	if parent != "" {
		p := idOf(parent)
		s.ParentID = &p
	}
	return s
}

func idOf(name string) string {
	return strings.ReplaceAll(fmt.Sprintf("%-8s", name)[:8], " ", "x") + "-0000-4000-8000-000000000000"
}

func ptr(s string) *string { return &s }

func TestDrawTree(t *testing.T) {
	tests := []struct {
		name  string
		snaps []apitypes.Snapshot
		head  *string
		want  string
	}{
		{
			name: "no snapshots",
			want: "● now (head)\n",
		},
		{
			name:  "one snapshot, head on it",
			snaps: []apitypes.Snapshot{snap("base", 0, "")},
			head:  ptr(idOf("base")),
			want: "" +
				"base  basexxxx  2025-03-01 10:00:00\n" +
				"└── ● now (head)\n",
		},
		{
			name: "branches in creation order, head last child of a middle snapshot",
			snaps: []apitypes.Snapshot{
				snap("base", 0, ""),
				snap("a", 1, "base"),
				snap("a1", 2, "a"),
				snap("b", 3, "base"),
				snap("a2", 4, "a"),
			},
			head: ptr(idOf("a")),
			want: "" +
				"base  basexxxx  2025-03-01 10:00:00\n" +
				"├── a  axxxxxxx  2025-03-01 10:01:00\n" +
				"│   ├── a1  a1xxxxxx  2025-03-01 10:02:00\n" +
				"│   ├── a2  a2xxxxxx  2025-03-01 10:04:00\n" +
				"│   └── ● now (head)\n" +
				"└── b  bxxxxxxx  2025-03-01 10:03:00\n",
		},
		{
			name: "input out of order is drawn in creation order",
			snaps: []apitypes.Snapshot{
				snap("b", 3, "base"),
				snap("a", 1, "base"),
				snap("base", 0, ""),
			},
			head: ptr(idOf("b")),
			want: "" +
				"base  basexxxx  2025-03-01 10:00:00\n" +
				"├── a  axxxxxxx  2025-03-01 10:01:00\n" +
				"└── b  bxxxxxxx  2025-03-01 10:03:00\n" +
				"    └── ● now (head)\n",
		},
		{
			name: "deep tree",
			snaps: []apitypes.Snapshot{
				snap("s1", 0, ""),
				snap("s2", 1, "s1"),
				snap("s3", 2, "s2"),
				snap("x", 3, "s1"),
				snap("s4", 4, "s3"),
				snap("s5", 5, "s4"),
				snap("y", 6, "s3"),
			},
			head: ptr(idOf("s5")),
			want: "" +
				"s1  s1xxxxxx  2025-03-01 10:00:00\n" +
				"├── s2  s2xxxxxx  2025-03-01 10:01:00\n" +
				"│   └── s3  s3xxxxxx  2025-03-01 10:02:00\n" +
				"│       ├── s4  s4xxxxxx  2025-03-01 10:04:00\n" +
				"│       │   └── s5  s5xxxxxx  2025-03-01 10:05:00\n" +
				"│       │       └── ● now (head)\n" +
				"│       └── y  yxxxxxxx  2025-03-01 10:06:00\n" +
				"└── x  xxxxxxxx  2025-03-01 10:03:00\n",
		},
		{
			name: "several roots, head at the top level",
			snaps: []apitypes.Snapshot{
				snap("r1", 0, ""),
				snap("c1", 1, "r1"),
				snap("r2", 2, ""),
				snap("c2", 3, "r2"),
			},
			want: "" +
				"r1  r1xxxxxx  2025-03-01 10:00:00\n" +
				"└── c1  c1xxxxxx  2025-03-01 10:01:00\n" +
				"r2  r2xxxxxx  2025-03-01 10:02:00\n" +
				"└── c2  c2xxxxxx  2025-03-01 10:03:00\n" +
				"● now (head)\n",
		},
		{
			name: "orphans: no parent, or a parent not in the list, are roots; states shown",
			snaps: func() []apitypes.Snapshot {
				o := snap("orphan", 2, "")
				o.State = apitypes.SnapshotOrphan
				d := snap("dangling", 3, "gone")
				m := snap("m", 4, "base")
				m.State = apitypes.SnapshotMissing
				return []apitypes.Snapshot{snap("base", 0, ""), o, d, m}
			}(),
			head: ptr(idOf("m")),
			want: "" +
				"base  basexxxx  2025-03-01 10:00:00\n" +
				"└── m  mxxxxxxx  2025-03-01 10:04:00  missing\n" +
				"    └── ● now (head)\n" +
				"orphan  orphanxx  2025-03-01 10:02:00  orphan\n" +
				"dangling  dangling  2025-03-01 10:03:00\n",
		},
		{
			name:  "head parent unknown goes to the top level",
			snaps: []apitypes.Snapshot{snap("base", 0, "")},
			head:  ptr(idOf("nothere")),
			want: "" +
				"base  basexxxx  2025-03-01 10:00:00\n" +
				"● now (head)\n",
		},
		{
			name: "a parent cycle is drawn once",
			snaps: []apitypes.Snapshot{
				snap("p", 0, "q"),
				snap("q", 1, "p"),
			},
			want: "" +
				"p  pxxxxxxx  2025-03-01 10:00:00\n" +
				"└── q  qxxxxxxx  2025-03-01 10:01:00\n" +
				"    └── (cycle) p\n" +
				"● now (head)\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := DrawTree(tt.snaps, tt.head)
			if got != tt.want {
				t.Errorf("DrawTree:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

// chain makes n snapshots each the child of the one before.
func chain(n int) []apitypes.Snapshot {
	s := make([]apitypes.Snapshot, n)
	for i := range s {
		s[i] = apitypes.Snapshot{ID: fmt.Sprintf("%08d-0000-4000-8000-000000000000", i), Name: fmt.Sprintf("s%d", i),
			State: apitypes.SnapshotReady, CreatedAt: t0.Add(time.Duration(i) * time.Second)}
		if i > 0 {
			s[i].ParentID = &s[i-1].ID
		}
	}
	return s
}

// bushy makes n snapshots in a tree where snapshot i's parent is i/3 (a
// balanced ternary tree), the shape of a volume with many branches.
func bushy(n int) []apitypes.Snapshot {
	s := make([]apitypes.Snapshot, n)
	for i := range s {
		s[i] = apitypes.Snapshot{ID: fmt.Sprintf("%08d-0000-4000-8000-000000000000", i), Name: fmt.Sprintf("s%d", i),
			State: apitypes.SnapshotReady, CreatedAt: t0.Add(time.Duration(i) * time.Second)}
		if i > 0 {
			s[i].ParentID = &s[(i-1)/3].ID
		}
	}
	return s
}

func TestDrawTreeThousand(t *testing.T) {
	for _, tc := range []struct {
		name  string
		snaps []apitypes.Snapshot
	}{
		{"chain", chain(1000)},
		{"bushy", bushy(1000)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			head := tc.snaps[len(tc.snaps)-1].ID
			out := DrawTree(tc.snaps, &head) // its speed: BenchmarkDrawTree
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if len(lines) != 1001 {
				t.Fatalf("got %d lines, want 1001 (1000 snapshots and the head)", len(lines))
			}
			seen := make(map[string]bool, len(lines))
			headAt := -1
			for i, l := range lines {
				l = strings.TrimLeft(l, "│├└─ ")
				name, _, _ := strings.Cut(l, "  ")
				seen[name] = true
				if l == HeadLine {
					headAt = i
				}
			}
			for _, s := range tc.snaps {
				if !seen[s.Name] {
					t.Fatalf("snapshot %s missing from the drawing", s.Name)
				}
			}
			if headAt < 1 || !strings.Contains(lines[headAt-1], tc.snaps[len(tc.snaps)-1].Name+"  ") ||
				!strings.HasSuffix(lines[headAt], "└── "+HeadLine) {
				t.Errorf("the head is not the last child of the last snapshot")
			}
		})
	}
	// In the chain, depth d is indented by 4*d columns.
	out := DrawTree(chain(1000), nil)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	want := strings.Repeat("    ", 998) + "└── s999  00000999  "
	if !strings.HasPrefix(lines[999], want) {
		t.Errorf("deepest line starts %q, want %q", lines[999][:min(len(lines[999]), 80)], "(998 indents)└── s999 ...")
	}
	if lines[1000] != HeadLine {
		t.Errorf("head line %q, want %q at the top level", lines[1000], HeadLine)
	}
}

func BenchmarkDrawTree(b *testing.B) {
	for _, tc := range []struct {
		name  string
		snaps []apitypes.Snapshot
	}{
		{"chain1000", chain(1000)},
		{"bushy1000", bushy(1000)},
	} {
		head := tc.snaps[len(tc.snaps)/2].ID
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				_ = DrawTree(tc.snaps, &head)
			}
		})
	}
}
