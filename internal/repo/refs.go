package repo

import (
	"context"
	"fmt"

	"github.com/cairn-backup/cairn/internal/repo/format"
)

// blobVisitor is called for each blob a backup references; returning false
// for a tree or segment skips what it references (already visited).
type blobVisitor func(t format.BlobType, id format.ID) (descend bool, err error)

// walkBackup calls visit for every blob backup m references: segments and
// their data chunks for an image, trees and file chunks for a file tree.
// Trees and segments are loaded (and so checked) when visit descends.
func (r *Repository) walkBackup(ctx context.Context, m *format.Manifest, visit blobVisitor) error {
	switch m.Kind {
	case format.KindImage:
		for si, sid := range m.Image.Segments {
			if sid.IsZero() {
				continue
			}
			descend, err := visit(format.SegmentBlob, sid)
			if err != nil {
				return err
			}
			if !descend {
				continue
			}
			ids, err := r.segmentIDs(ctx, m, si)
			if err != nil {
				return err
			}
			for _, id := range ids {
				if id.IsZero() {
					continue
				}
				if _, err := visit(format.DataBlob, id); err != nil {
					return err
				}
			}
		}
		return nil
	case format.KindFiles:
		return r.walkTree(ctx, m, *m.Tree, visit)
	}
	return fmt.Errorf("backup %s: unknown kind %q", m.ID, m.Kind)
}

// usedBlobs returns every blob the backups reference, checking on the way
// that each is in the index.
func (r *Repository) usedBlobs(ctx context.Context, backups []*format.Manifest, missing func(m *format.Manifest, t format.BlobType, id format.ID) error) (map[format.ID]struct{}, error) {
	used := map[format.ID]struct{}{}
	for _, m := range backups {
		err := r.walkBackup(ctx, m, func(t format.BlobType, id format.ID) (bool, error) {
			if _, seen := used[id]; seen {
				return false, nil
			}
			used[id] = struct{}{}
			if _, ok := r.lookup(id); !ok {
				if missing != nil {
					return false, missing(m, t, id)
				}
				return false, nil
			}
			return true, nil
		})
		if err != nil {
			return nil, err
		}
	}
	return used, nil
}
