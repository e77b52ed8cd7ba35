package repo

import (
	"context"
	"strings"

	"github.com/cairn-backup/cairn/internal/blob"
	"github.com/cairn-backup/cairn/internal/repo/format"
)

// Stats are a repository's sizes.
type Stats struct {
	Backups int `json:"backups"`
	// LogicalBytes is the sum of the backups' sizes (what restoring every
	// backup would write).
	LogicalBytes int64 `json:"logical_bytes"`
	// StoredBytes is the size of every pack, index and manifest.
	StoredBytes int64 `json:"stored_bytes"`
	// UniqueBytes is the plaintext size of the distinct blobs backups use,
	// and UsedStoredBytes their stored (compressed, sealed) size.
	UniqueBytes     int64 `json:"unique_bytes"`
	UsedStoredBytes int64 `json:"used_stored_bytes"`
	Blobs           int   `json:"blobs"`
	Packs           int   `json:"packs"`
	// DedupRatio is LogicalBytes / UsedStoredBytes.
	DedupRatio float64       `json:"dedup_ratio"`
	PerBackup  []BackupStats `json:"per_backup"`
}

// BackupStats gives one backup's cost.
type BackupStats struct {
	ID           string `json:"id"`
	LogicalBytes int64  `json:"logical_bytes"`
	// OnlyBytes is the stored size of the blobs no other backup uses: what
	// forgetting it (and pruning) would free.
	OnlyBytes int64 `json:"only_bytes"`
}

// Stats computes the repository's sizes; it reads every manifest, tree
// and segment.
func (r *Repository) Stats(ctx context.Context) (*Stats, error) {
	if err := r.LoadIndex(ctx); err != nil {
		return nil, err
	}
	backups, err := r.Backups(ctx)
	if err != nil {
		return nil, err
	}
	st := &Stats{Backups: len(backups), PerBackup: []BackupStats{}}
	err = r.store.List(ctx, "", func(i blob.Info) error {
		if strings.HasPrefix(i.Name, format.DataPrefix) {
			st.Packs++
		}
		if !strings.HasPrefix(i.Name, format.LockPrefix) {
			st.StoredBytes += i.Size
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// users[id].owner is the only backup using a blob, or -1 when several
	// do; .last is the latest backup that did (walks go in backup order),
	// so a blob met again in the same backup is not walked twice.
	type users struct{ owner, last int }
	r.idxMu.RLock()
	nblobs := 0
	if r.idx != nil {
		nblobs = r.idx.Len()
	}
	r.idxMu.RUnlock()
	use := make(map[format.ID]users, nblobs)
	for bi, m := range backups {
		st.LogicalBytes += logicalSize(m)
		err := r.walkBackup(ctx, m, func(t format.BlobType, id format.ID) (bool, error) {
			u, known := use[id]
			switch {
			case !known:
				u.owner = bi
			case u.last == bi:
				return false, nil
			default:
				u.owner = -1
			}
			u.last = bi
			use[id] = u
			_, indexed := r.lookup(id)
			return indexed, nil
		})
		if err != nil {
			return nil, err
		}
	}
	only := make([]int64, len(backups))
	for id, u := range use {
		loc, ok := r.lookup(id)
		if !ok {
			continue
		}
		st.Blobs++
		st.UniqueBytes += int64(loc.RawLength)
		st.UsedStoredBytes += int64(loc.Length)
		if u.owner >= 0 {
			only[u.owner] += int64(loc.Length)
		}
	}
	for bi, m := range backups {
		st.PerBackup = append(st.PerBackup, BackupStats{ID: m.ID, LogicalBytes: logicalSize(m), OnlyBytes: only[bi]})
	}
	if st.UsedStoredBytes > 0 {
		st.DedupRatio = float64(st.LogicalBytes) / float64(st.UsedStoredBytes)
	}
	return st, nil
}

func logicalSize(m *format.Manifest) int64 {
	if m.Image != nil {
		return m.Image.Size
	}
	return m.Summary.Bytes
}

// ExclusiveBytes returns the stored bytes of the blobs that the backups in
// remove use and no other of backups does: what forgetting them and then
// pruning frees (give every backup of the repository in backups). The
// caller has loaded the index.
func (r *Repository) ExclusiveBytes(ctx context.Context, backups []*format.Manifest, remove map[string]bool) (int64, error) {
	var keep, gone []*format.Manifest
	for _, m := range backups {
		if remove[m.ID] {
			gone = append(gone, m)
		} else {
			keep = append(keep, m)
		}
	}
	kept, err := r.usedBlobs(ctx, keep, nil)
	if err != nil {
		return 0, err
	}
	var n int64
	seen := map[format.ID]struct{}{}
	for _, m := range gone {
		err := r.walkBackup(ctx, m, func(t format.BlobType, id format.ID) (bool, error) {
			if _, ok := seen[id]; ok {
				return false, nil
			}
			seen[id] = struct{}{}
			loc, indexed := r.lookup(id)
			if !indexed {
				return false, nil
			}
			if _, ok := kept[id]; !ok {
				n += int64(loc.Length)
			}
			return true, nil
		})
		if err != nil {
			return 0, err
		}
	}
	return n, nil
}
