package repo

import (
	"context"
	"fmt"
	"slices"

	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/repo/format"
)

// ChunkID returns the id a data blob with this content has in the
// repository (the keyed hash): a source that yields bytes with a damaged
// blob's id holds exactly its content.
func (r *Repository) ChunkID(buf []byte) format.ID { return format.ID(r.key.ChunkID(buf)) }

// RepairBlobs replaces damaged data blobs with good copies of their
// content, found elsewhere (good maps each blob id to its plaintext; a
// plaintext whose id differs is refused before anything changes). The
// caller holds the exclusive lock. The copies go into new packs; then the
// index objects are rewritten without the damaged copies, which stay in
// their packs, unlisted, until a prune repacks them. A repair killed
// midway leaves both copies listed and can be run again.
func (r *Repository) RepairBlobs(ctx context.Context, good map[format.ID][]byte) error {
	if len(good) == 0 {
		return nil
	}
	if err := r.LoadIndex(ctx); err != nil {
		return err
	}
	damaged := map[format.ID]format.ID{} // blob -> the pack of its damaged copy
	for id, buf := range good {
		if r.ChunkID(buf) != id {
			return core.Invalid("repair: the bytes offered for blob %s have another id", id.Short())
		}
		loc, ok := r.lookup(id)
		if !ok {
			return core.NotFound("repair: blob %s is in no index", id.Short())
		}
		if loc.Type != format.DataBlob {
			return core.Invalid("repair: blob %s is %s, not data", id.Short(), loc.Type)
		}
		damaged[id] = loc.Pack
	}
	for id, buf := range good {
		if err := r.sealAndAdd(ctx, format.DataBlob, id, buf); err != nil {
			return fmt.Errorf("repair: %w", err)
		}
	}
	if err := r.Flush(ctx); err != nil {
		return fmt.Errorf("repair: %w", err)
	}
	w := r.ws()
	w.mu.Lock()
	w.committed, w.indexes = nil, nil
	w.mu.Unlock()

	// Every index object, read again (the new packs' one included), is
	// rewritten without the damaged copies.
	byPack := map[format.ID][]format.PackEntry{}
	_, names, err := r.readIndexFiles(ctx, func(_ string, ps []format.IndexPack) error {
		for _, p := range ps {
			for _, e := range p.Entries {
				if pk, bad := damaged[e.ID]; bad && pk == p.ID {
					continue
				}
				byPack[p.ID] = append(byPack[p.ID], e)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("repair: %w", err)
	}
	list := make([]format.IndexPack, 0, len(byPack))
	for p, es := range byPack {
		slices.SortFunc(es, func(a, b format.PackEntry) int { return int(a.Offset) - int(b.Offset) })
		es = slices.CompactFunc(es, func(a, b format.PackEntry) bool { return a.Offset == b.Offset })
		list = append(list, format.IndexPack{ID: p, Entries: es})
	}
	if _, err := r.writeIndexes(ctx, list); err != nil {
		return fmt.Errorf("repair: %w", err)
	}
	if err := r.removeAll(ctx, names); err != nil {
		return fmt.Errorf("repair: %w", err)
	}
	return r.LoadIndex(ctx)
}
