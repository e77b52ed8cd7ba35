package service

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/internal/meta"
)

// render draws a tree as "name<-parent" pairs plus the head, for comparisons.
func render(t *Tree) string {
	names := map[string]string{}
	for _, s := range t.Snapshots() {
		names[s.ID] = s.Name
	}
	var pairs []string
	for _, s := range t.Snapshots() {
		p := ""
		if s.ParentID != nil {
			p = names[*s.ParentID]
		}
		pairs = append(pairs, s.Name+"<-"+p)
	}
	sort.Strings(pairs)
	head := ""
	if t.HeadParent != nil {
		head = names[*t.HeadParent]
	}
	return strings.TrimSpace(strings.Join(pairs, " ") + " | head=" + head)
}

func TestTreeRules(t *testing.T) {
	// Each case is a script of operations; after every line the tree must render
	// as the text after "=>".
	cases := []struct {
		name   string
		script []string
	}{
		{"create chains under the head", []string{
			"create a => a<- | head=a",
			"create b => a<- b<-a | head=b",
		}},
		{"apply moves the head, create branches", []string{
			"create a => a<- | head=a",
			"create b => a<- b<-a | head=b",
			"apply a => a<- b<-a | head=a",
			"create c => a<- b<-a c<-a | head=c",
		}},
		{"delete one re-parents children to its parent", []string{
			"create a => a<- | head=a",
			"create b => a<- b<-a | head=b",
			"apply a => a<- b<-a | head=a",
			"create c => a<- b<-a c<-a | head=c",
			"delete a => b<- c<- | head=c",
		}},
		{"delete the head's parent moves the head to its parent", []string{
			"create a => a<- | head=a",
			"create b => a<- b<-a | head=b",
			"delete b => a<- | head=a",
			"delete a => | head=",
		}},
		{"delete subtree containing the head", []string{
			"create a => a<- | head=a",
			"create b => a<- b<-a | head=b",
			"create c => a<- b<-a c<-b | head=c",
			"apply a => a<- b<-a c<-b | head=a",
			"create d => a<- b<-a c<-b d<-a | head=d",
			"apply c => a<- b<-a c<-b d<-a | head=c",
			"subtree b => a<- d<-a | head=a",
			"subtree a => | head=",
		}},
		{"delete subtree not containing the head keeps it", []string{
			"create a => a<- | head=a",
			"create b => a<- b<-a | head=b",
			"apply a => a<- b<-a | head=a",
			"create c => a<- b<-a c<-a | head=c",
			"subtree b => a<- c<-a | head=c",
		}},
		{"delete a root with children makes them roots", []string{
			"create a => a<- | head=a",
			"create b => a<- b<-a | head=b",
			"apply a => a<- b<-a | head=a",
			"create c => a<- b<-a c<-a | head=c",
			"apply a => a<- b<-a c<-a | head=a",
			"delete a => b<- c<- | head=",
			"create d => b<- c<- d<- | head=d",
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tr := NewTree(nil, nil)
			ids := map[string]string{}
			for i, line := range tc.script {
				op, want, _ := strings.Cut(line, " => ")
				f := strings.Fields(op)
				switch f[0] {
				case "create":
					ids[f[1]] = fmt.Sprintf("id-%s", f[1])
					tr.Create(meta.Snapshot{ID: ids[f[1]], Name: f[1]})
				case "apply":
					tr.Apply(ids[f[1]])
				case "delete":
					tr.DeleteOne(ids[f[1]])
				case "subtree":
					tr.DeleteSubtree(ids[f[1]])
				}
				if got := render(tr); got != strings.TrimSpace(want) {
					t.Fatalf("step %d %q:\n got %q\nwant %q", i, op, got, strings.TrimSpace(want))
				}
			}
		})
	}
}

func TestSubtreeOrderChildrenFirst(t *testing.T) {
	tr := NewTree(nil, nil)
	for _, n := range []string{"a", "b", "c"} {
		tr.Create(meta.Snapshot{ID: n, Name: n})
	}
	tr.Apply("a")
	tr.Create(meta.Snapshot{ID: "d", Name: "d"})
	got := strings.Join(tr.Subtree("a"), ",")
	if got != "c,b,d,a" {
		t.Fatalf("subtree order %q, want descendants before ancestors c,b,d,a", got)
	}
}
