package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/cairn-backup/cairn/internal/qcow2"
	"github.com/cairn-backup/cairn/internal/repo"
	"github.com/cairn-backup/cairn/internal/repo/format"
)

// findGoodCopies looks for the content of damaged data blobs in the volumes
// the damaged backups came from: in each backup's image, the chunks that
// use a damaged blob are read from every snapshot of the volume's qcow2
// file (system snapshots included) and from its live disk when no export
// holds it; bytes whose keyed hash is the blob's id are its content. It
// returns the copies found and, for each blob without one, why.
func (t *task) findGoodCopies(ctx context.Context, r *repo.Repository, res *repo.VerifyResult) (map[format.ID][]byte, map[format.ID]string, error) {
	need := map[format.ID]map[string]bool{} // blob -> backups that need it
	for _, p := range res.Problems {
		id, err := format.ParseID(p.Blob)
		if err != nil || p.Blob == "" {
			continue
		}
		if need[id] == nil {
			need[id] = map[string]bool{}
		}
		for _, b := range p.Backups {
			need[id][b] = true
		}
	}
	good := map[format.ID][]byte{}
	missing := map[format.ID]string{}
	byBackup := map[string]map[format.ID]bool{}
	for id, bs := range need {
		missing[id] = "no backup that needs it names a volume on this node"
		for b := range bs {
			if byBackup[b] == nil {
				byBackup[b] = map[format.ID]bool{}
			}
			byBackup[b][id] = true
		}
	}
	for bid, ids := range byBackup {
		m, err := r.LoadManifest(ctx, bid)
		if err != nil {
			return nil, nil, err
		}
		if m.Image == nil {
			for id := range ids {
				missing[id] = "it belongs to a file backup: only volume backups are repaired"
			}
			continue
		}
		vol := manifestTag(m, "volume_id")
		if vol == "" || checkID(vol) != nil {
			continue
		}
		offsets := map[format.ID][]int64{}
		cs := int64(m.Image.ChunkSize)
		err = r.ImageChunks(ctx, m, func(idx int64, id format.ID) error {
			if ids[id] {
				offsets[id] = append(offsets[id], idx*cs)
			}
			return nil
		})
		if err != nil {
			return nil, nil, err
		}
		if err := t.readFromVolume(r, vol, m, offsets, good, missing); err != nil {
			return nil, nil, err
		}
	}
	for id := range good {
		delete(missing, id)
	}
	return good, missing, nil
}

// readFromVolume reads the chunks at offsets from the layers of volume
// vol's qcow2 file and keeps those whose id matches, under the volume's lock.
func (t *task) readFromVolume(r *repo.Repository, vol string, m *format.Manifest, offsets map[format.ID][]int64, good map[format.ID][]byte, missing map[format.ID]string) error {
	unlock := t.w.locks.lock(vol)
	defer unlock()
	path := t.w.volumePath(vol)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		for id := range offsets {
			missing[id] = fmt.Sprintf("volume %s is not on this node any more", vol)
		}
		return nil
	}
	im, err := qcow2.Open(path)
	if err != nil {
		for id := range offsets {
			missing[id] = fmt.Sprintf("volume %s cannot be read: %v", vol, err)
		}
		return nil
	}
	defer im.Close()
	var layers []*qcow2.Layer
	for _, s := range im.Snapshots() {
		if l, err := im.Snapshot(s.ID); err == nil {
			layers = append(layers, l)
		}
	}
	// The live disk, unless a storage daemon holds it (its data on disk may
	// lag what the daemon has cached).
	if t.w.daemonFor(vol) == nil {
		if l, err := im.Active(); err == nil {
			layers = append(layers, l)
		}
	}
	cs := int64(m.Image.ChunkSize)
	for id, offs := range offsets {
		if good[id] != nil {
			continue
		}
		missing[id] = fmt.Sprintf("no snapshot of volume %s and not its live disk holds the same bytes", vol)
	search:
		for _, off := range offs {
			n := min(cs, m.Image.Size-off)
			for _, l := range layers {
				if l.Size() < off+n {
					continue
				}
				buf := make([]byte, n)
				if _, err := l.ReadAt(buf, off); err != nil {
					continue
				}
				if r.ChunkID(buf) == id {
					good[id] = buf
					break search
				}
			}
		}
	}
	return nil
}

// manifestTag returns the value of tag key=value of a manifest, or "".
func manifestTag(m *format.Manifest, key string) string {
	for _, tag := range m.Tags {
		if v, ok := strings.CutPrefix(tag, key+"="); ok {
			return v
		}
	}
	return ""
}

// repairBackups stores the good copies found for damaged blobs under the
// exclusive lock and verifies the same backups again. It reports what it
// repaired and, plainly, what it could not (result not_repaired).
func (t *task) repairBackups(ctx context.Context, first *repo.VerifyResult, good map[format.ID][]byte, missing map[format.ID]string, opts repo.VerifyOptions) (*repo.VerifyResult, []string, error) {
	var none []string
	for id, why := range missing {
		none = append(none, fmt.Sprintf("blob %s: %s", id.Short(), why))
	}
	sort.Strings(none)
	if len(none) > 0 {
		t.result("not_repaired", strings.Join(none, "; "))
	}
	t.result("repaired", fmt.Sprint(len(good)))
	if len(good) == 0 {
		return first, none, nil
	}
	r, done, err := t.lockedRepository(ctx, true, "repair", true)
	if err != nil {
		return nil, none, err
	}
	defer done()
	if err := r.RepairBlobs(ctx, good); err != nil {
		return nil, none, err
	}
	again := make([]*format.Manifest, 0, len(opts.Backups))
	for _, m := range opts.Backups {
		m2, err := r.LoadManifest(ctx, m.ID)
		if err != nil {
			return nil, none, err
		}
		again = append(again, m2)
	}
	opts.Backups = again
	res, err := r.Verify(ctx, opts)
	return res, none, err
}
