package repo

import (
	"context"
	"fmt"

	"github.com/cairn-backup/cairn/internal/filebackup"
	"github.com/cairn-backup/cairn/internal/repo/format"
)

// walkTree visits the tree blobs and file chunks of a file backup, depth
// first; a tree is loaded only when visit descends into it.
func (r *Repository) walkTree(ctx context.Context, m *format.Manifest, root format.ID, visit blobVisitor) error {
	stack := []format.ID{root}
	for len(stack) > 0 {
		id := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		descend, err := visit(format.TreeBlob, id)
		if err != nil {
			return err
		}
		if !descend {
			continue
		}
		b, err := r.LoadBlob(ctx, format.TreeBlob, id, nil)
		if err != nil {
			return fmt.Errorf("backup %s: %w", m.ID, err)
		}
		t, err := filebackup.DecodeTree(b)
		if err != nil {
			return fmt.Errorf("backup %s: tree %s: %w", m.ID, id.Short(), err)
		}
		for _, n := range t.Nodes {
			for _, c := range n.Content {
				if _, err := visit(format.DataBlob, c); err != nil {
					return err
				}
			}
			if n.Type == filebackup.TypeDir {
				stack = append(stack, n.Subtree)
			}
		}
	}
	return nil
}
