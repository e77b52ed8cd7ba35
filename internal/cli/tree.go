package cli

import (
	"sort"
	"strings"

	"github.com/cairn-backup/cairn/internal/apitypes"
)

// HeadLine is how DrawTree shows the volume's live head.
const HeadLine = "● now (head)"

// DrawTree draws a volume's snapshot tree for a terminal:
//
//	base  1a2b3c4d  2025-01-02 10:00:00
//	├── a  5e6f7a8b  2025-01-02 11:00:00
//	│   └── ● now (head)
//	└── b  9c0d1e2f  2025-01-02 12:00:00  deleting
//
// Roots (snapshots without a parent, or whose parent is not in snaps) start at
// the left margin in creation order; children follow their parent in creation
// order. Each line holds the name, the first 8 characters of the id, the
// creation time (local) and the state when it is not ready. The live head is
// the last child of headParentID, or the last top-level line when
// headParentID is nil or unknown. Snapshots caught in a parent cycle (bad
// metadata) are drawn once, as roots. DrawTree is linear in the output size.
func DrawTree(snaps []apitypes.Snapshot, headParentID *string) string {
	order := make([]int, len(snaps))
	index := make(map[string]int, len(snaps))
	for i := range snaps {
		order[i] = i
		index[snaps[i].ID] = i
	}
	sort.SliceStable(order, func(x, y int) bool {
		return snaps[order[x]].CreatedAt.Before(snaps[order[y]].CreatedAt)
	})

	children := make([][]int, len(snaps))
	var roots []int
	for _, i := range order {
		s := &snaps[i]
		if s.ParentID != nil {
			if pi, ok := index[*s.ParentID]; ok && pi != i {
				children[pi] = append(children[pi], i)
				continue
			}
		}
		roots = append(roots, i)
	}
	head := -1 // the head's parent, -1 for the top level
	if headParentID != nil {
		if hi, ok := index[*headParentID]; ok {
			head = hi
		}
	}

	d := drawing{snaps: snaps, children: children, head: head, seen: make([]bool, len(snaps))}
	d.b.Grow(estimateSize(snaps, children, roots))
	for _, r := range roots {
		d.root(r)
	}
	for _, i := range order { // cycles: nothing in them is a root
		if !d.seen[i] {
			d.root(i)
		}
	}
	if head < 0 {
		d.b.WriteString(HeadLine)
		d.b.WriteByte('\n')
	}
	return d.b.String()
}

type drawing struct {
	snaps    []apitypes.Snapshot
	children [][]int
	head     int
	seen     []bool
	b        strings.Builder
	prefix   []byte // the connectors of the ancestors of the line being drawn
}

const (
	branchMid  = "├── "
	branchLast = "└── "
	pipe       = "│   "
	blank      = "    "
)

func (d *drawing) root(i int) {
	d.seen[i] = true
	d.label(i)
	d.prefix = d.prefix[:0]
	d.drawChildren(i)
}

// drawChildren draws the children of i (and the head, when i is its parent)
// under the current prefix.
func (d *drawing) drawChildren(i int) {
	kids := d.children[i]
	n := len(kids)
	withHead := i == d.head
	if withHead {
		n++
	}
	for k := 0; k < n; k++ {
		last := k == n-1
		d.b.Write(d.prefix)
		if last {
			d.b.WriteString(branchLast)
		} else {
			d.b.WriteString(branchMid)
		}
		if k == len(kids) { // the head comes after the children
			d.b.WriteString(HeadLine)
			d.b.WriteByte('\n')
			continue
		}
		c := kids[k]
		if d.seen[c] {
			d.b.WriteString("(cycle) " + d.snaps[c].Name + "\n")
			continue
		}
		d.seen[c] = true
		d.label(c)
		mark := len(d.prefix)
		if last {
			d.prefix = append(d.prefix, blank...)
		} else {
			d.prefix = append(d.prefix, pipe...)
		}
		d.drawChildren(c)
		d.prefix = d.prefix[:mark]
	}
}

func (d *drawing) label(i int) {
	s := &d.snaps[i]
	name := s.Name
	if name == "" {
		name = "(unnamed)"
	}
	d.b.WriteString(name)
	d.b.WriteString("  ")
	d.b.WriteString(shortID(s.ID))
	d.b.WriteString("  ")
	d.b.WriteString(showTime(s.CreatedAt))
	if s.State != "" && s.State != apitypes.SnapshotReady {
		d.b.WriteString("  ")
		d.b.WriteString(s.State)
	}
	d.b.WriteByte('\n')
}

// estimateSize is about the length of the drawing: each line is its label
// (name, id, time, state: the name plus about 40 bytes) after four columns of
// connectors per level of depth (up to 3 bytes each: "│" is 3 bytes in UTF-8).
// Growing the builder once keeps a deep drawing from being copied repeatedly.
func estimateSize(snaps []apitypes.Snapshot, children [][]int, roots []int) int {
	size := len(HeadLine) + 16
	level := roots
	for depth := 0; len(level) > 0; depth++ {
		var next []int
		for _, i := range level {
			size += depth*6 + len(snaps[i].Name) + 48
			next = append(next, children[i]...)
		}
		level = next
	}
	return size
}
