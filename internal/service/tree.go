package service

import "github.com/cairn-backup/cairn/internal/meta"

// Tree is one volume's snapshot tree and its live head, held in memory so the
// rules of DESIGN F2 can be applied exactly and the result written back:
//
//   - create S: S.parent = head_parent; head_parent = S.
//   - apply S: head_parent = S (the disk becomes S's content).
//   - delete one S: S's children move to S's parent; head_parent = S.parent if it was S.
//   - delete subtree S: S and its descendants go; head_parent = S.parent if it was among them.
//
// System snapshots (taken for backups) are not part of the tree: callers load
// user snapshots only.
type Tree struct {
	HeadParent *string
	byID       map[string]*meta.Snapshot
	order      []string // creation order
}

// NewTree builds a tree from a volume's head and its user snapshots.
func NewTree(head *string, snaps []meta.Snapshot) *Tree {
	t := &Tree{HeadParent: copyPtr(head), byID: map[string]*meta.Snapshot{}}
	for i := range snaps {
		s := snaps[i]
		s.ParentID = copyPtr(s.ParentID)
		t.byID[s.ID] = &s
		t.order = append(t.order, s.ID)
	}
	return t
}

func copyPtr(p *string) *string {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

// Get returns the snapshot with id, or nil.
func (t *Tree) Get(id string) *meta.Snapshot { return t.byID[id] }

// Snapshots returns the snapshots in creation order.
func (t *Tree) Snapshots() []meta.Snapshot {
	out := make([]meta.Snapshot, 0, len(t.order))
	for _, id := range t.order {
		if s, ok := t.byID[id]; ok {
			out = append(out, *s)
		}
	}
	return out
}

// Create adds s under the head and makes it the head's parent.
func (t *Tree) Create(s meta.Snapshot) {
	s.ParentID = copyPtr(t.HeadParent)
	if _, ok := t.byID[s.ID]; !ok {
		t.order = append(t.order, s.ID)
	}
	t.byID[s.ID] = &s
	id := s.ID
	t.HeadParent = &id
}

// Apply makes id the head's parent.
func (t *Tree) Apply(id string) {
	v := id
	t.HeadParent = &v
}

// Children returns the direct children of id in creation order.
func (t *Tree) Children(id string) []string {
	var out []string
	for _, c := range t.order {
		s, ok := t.byID[c]
		if ok && s.ParentID != nil && *s.ParentID == id {
			out = append(out, c)
		}
	}
	return out
}

// Subtree returns id and all its descendants, descendants before their
// ancestors (the order in which to delete them).
func (t *Tree) Subtree(id string) []string {
	var out []string
	var walk func(string)
	walk = func(n string) {
		for _, c := range t.Children(n) {
			walk(c)
		}
		out = append(out, n)
	}
	if _, ok := t.byID[id]; ok {
		walk(id)
	}
	return out
}

// DeleteOne removes id; its children move to its parent.
func (t *Tree) DeleteOne(id string) {
	s, ok := t.byID[id]
	if !ok {
		return
	}
	for _, c := range t.Children(id) {
		t.byID[c].ParentID = copyPtr(s.ParentID)
	}
	if t.HeadParent != nil && *t.HeadParent == id {
		t.HeadParent = copyPtr(s.ParentID)
	}
	delete(t.byID, id)
}

// DeleteSubtree removes id and its descendants and returns what it removed,
// descendants first.
func (t *Tree) DeleteSubtree(id string) []string {
	s, ok := t.byID[id]
	if !ok {
		return nil
	}
	gone := t.Subtree(id)
	parent := copyPtr(s.ParentID)
	for _, g := range gone {
		if t.HeadParent != nil && *t.HeadParent == g {
			t.HeadParent = parent
		}
	}
	for _, g := range gone {
		delete(t.byID, g)
	}
	return gone
}

// Len is the number of snapshots in the tree.
func (t *Tree) Len() int { return len(t.byID) }
