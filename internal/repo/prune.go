package repo

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/cairn-backup/cairn/internal/blob"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/repo/format"
)

// PruneOptions tune prune.
type PruneOptions struct {
	// MaxUnusedPercent: a pack with more unused bytes than this share is
	// repacked (its used blobs copied to new packs); default 10.
	MaxUnusedPercent float64
	DryRun           bool
	Progress         func(Progress)
}

// PruneResult reports what prune did (or, with DryRun, would do).
type PruneResult struct {
	Packs          int   `json:"packs"`
	PacksDeleted   int   `json:"packs_deleted"`
	PacksRepacked  int   `json:"packs_repacked"`
	PacksLeftover  int   `json:"packs_leftover"` // in no index, removed
	BlobsUsed      int   `json:"blobs_used"`
	BlobsRemoved   int   `json:"blobs_removed"`
	BytesFreed     int64 `json:"bytes_freed"`
	BytesRepacked  int64 `json:"bytes_repacked"`
	IndexesWritten int   `json:"indexes_written"`
	IndexesRemoved int   `json:"indexes_removed"`
}

// Prune removes the blobs no backup references. The caller holds the
// exclusive lock. The steps are ordered so that a prune killed at any point
// leaves a repository that verify passes:
//
//  1. read every index object and manifest, and mark the blobs backups use;
//     a used blob that is in no index stops prune before it changes anything;
//  2. copy the used blobs of packs worth repacking into new packs;
//  3. write new index objects covering every pack that stays;
//  4. remove the old index objects;
//  5. remove the packs that are no longer indexed (unused, repacked, or
//     left over by an interrupted backup or prune).
func (r *Repository) Prune(ctx context.Context, opts PruneOptions) (*PruneResult, error) {
	if opts.MaxUnusedPercent <= 0 {
		opts.MaxUnusedPercent = 10
	}
	res := &PruneResult{}
	type packInfo struct {
		entries []format.PackEntry
		size    int64
	}
	packs := map[format.ID]*packInfo{}
	x, indexNames, err := r.readIndexFiles(ctx, func(name string, ps []format.IndexPack) error {
		for _, p := range ps {
			pi := packs[p.ID]
			if pi == nil {
				pi = &packInfo{}
				packs[p.ID] = pi
			}
			pi.entries = append(pi.entries, p.Entries...)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("prune: %w (nothing was changed)", err)
	}
	r.idxMu.Lock()
	r.idx = x
	r.idxMu.Unlock()
	present := map[format.ID]int64{}
	err = r.store.List(ctx, format.DataPrefix, func(i blob.Info) error {
		if id, err := format.ParseID(i.Name[strings.LastIndexByte(i.Name, '/')+1:]); err == nil {
			present[id] = i.Size
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("prune: listing packs: %w", err)
	}
	backups, err := r.Backups(ctx)
	if err != nil {
		return nil, fmt.Errorf("prune: %w (nothing was changed)", err)
	}
	used, err := r.usedBlobs(ctx, backups, func(m *format.Manifest, t format.BlobType, id format.ID) error {
		return core.Corrupt("backup %s needs %s blob %s, which is in no index: prune stopped and changed nothing (run `cairn repo verify`)", m.ID, t, id.Short())
	})
	if err != nil {
		return nil, fmt.Errorf("prune: %w", err)
	}
	res.BlobsUsed = len(used)
	for id, pi := range packs {
		if _, ok := present[id]; !ok {
			// An indexed pack that is gone: fine only if nothing uses it.
			for _, e := range pi.entries {
				if _, u := used[e.ID]; u {
					if loc, _ := x.Lookup(e.ID); loc.Pack == id {
						return nil, core.Corrupt("prune: pack %s holds used blob %s but is missing: prune stopped and changed nothing (run `cairn repo verify`)", id.Short(), e.ID.Short())
					}
				}
			}
		}
		pi.size = present[id]
	}

	// Decide per pack. A blob is kept in the pack the index points to; its
	// copies elsewhere are unused.
	var keep, repack, drop []format.ID
	for id, pi := range packs {
		if _, ok := present[id]; !ok {
			drop = append(drop, id)
			continue
		}
		var usedBytes, allBytes int64
		for _, e := range pi.entries {
			allBytes += int64(e.Length)
			if _, u := used[e.ID]; u {
				if loc, _ := x.Lookup(e.ID); loc.Pack == id {
					usedBytes += int64(e.Length)
				}
			}
		}
		switch {
		case usedBytes == 0:
			drop = append(drop, id)
			res.BytesFreed += pi.size
		case float64(allBytes-usedBytes) > float64(allBytes)*opts.MaxUnusedPercent/100:
			repack = append(repack, id)
			res.BytesRepacked += usedBytes
			res.BytesFreed += pi.size - usedBytes
		default:
			keep = append(keep, id)
		}
	}
	var leftover []format.ID
	for id, size := range present {
		if _, ok := packs[id]; !ok {
			leftover = append(leftover, id)
			res.BytesFreed += size
		}
	}
	res.Packs = len(packs)
	res.PacksDeleted = len(drop)
	res.PacksRepacked = len(repack)
	res.PacksLeftover = len(leftover)
	for _, id := range append(append([]format.ID{}, drop...), repack...) {
		for _, e := range packs[id].entries {
			if _, u := used[e.ID]; !u {
				res.BlobsRemoved++
			}
		}
	}
	if opts.DryRun {
		return res, nil
	}
	r.ws().mu.Lock()
	r.w.committed, r.w.indexes = nil, nil
	r.w.mu.Unlock()
	if len(drop)+len(repack)+len(leftover) == 0 && len(indexNames) <= 1 {
		return res, nil
	}

	// 2. Repack: copy used blobs, checked, into new packs.
	var total int64
	for _, id := range repack {
		total += packs[id].size
	}
	prog := startProgress(opts.Progress, total)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(2, r.opts.Workers))
	for _, id := range repack {
		g.Go(func() error {
			pi := packs[id]
			var bufs blobBuffers
			b, err := loadRange(gctx, r.store, format.PackName(id), 0, pi.size)
			if err != nil {
				return fmt.Errorf("prune: reading pack %s: %w", id.Short(), err)
			}
			for _, e := range pi.entries {
				if _, u := used[e.ID]; !u {
					continue
				}
				if loc, _ := x.Lookup(e.ID); loc.Pack != id {
					continue
				}
				end := int64(e.Offset) + int64(e.Length)
				if end > int64(len(b)) {
					return core.Corrupt("prune: pack %s is truncated (blob %s): prune stopped before removing anything", id.Short(), e.ID.Short())
				}
				stored := b[e.Offset:end]
				if _, err := r.openBlob(Location{Pack: id, PackEntry: e}, stored, &bufs); err != nil {
					return fmt.Errorf("prune: %w: prune stopped before removing anything", err)
				}
				p := r.packers[0]
				if e.Type != format.DataBlob {
					p = r.packers[1]
				}
				if err := p.add(gctx, e, stored); err != nil {
					return err
				}
			}
			prog.done.Add(pi.size)
			prog.items.Add(1)
			return nil
		})
	}
	err = g.Wait()
	prog.stop()
	if err != nil {
		return nil, err
	}
	// Flush the new packs; their index object is written by Flush and is
	// read back below with the rest.
	if err := r.Flush(ctx); err != nil {
		return nil, err
	}

	// 3. New index objects for every pack that stays: the new packs and the
	// kept ones, whole (an unused blob in a kept pack stays listed: its bytes
	// are still there, and a later prune repacks the pack once enough is
	// unused).
	w := r.ws()
	w.mu.Lock()
	newPacks, flushIndexes := w.committed, w.indexes
	w.committed, w.indexes = nil, nil
	w.mu.Unlock()
	byPack := map[format.ID][]format.PackEntry{}
	for _, p := range newPacks {
		byPack[p.ID] = append(byPack[p.ID], p.Entries...)
	}
	for _, id := range keep {
		byPack[id] = append(byPack[id], packs[id].entries...)
	}
	var list []format.IndexPack
	for p, es := range byPack {
		sort.Slice(es, func(i, j int) bool { return es[i].Offset < es[j].Offset })
		// A pack listed by several index objects appears more than once.
		es = slices.CompactFunc(es, func(a, b format.PackEntry) bool { return a.Offset == b.Offset })
		list = append(list, format.IndexPack{ID: p, Entries: es})
	}
	if res.IndexesWritten, err = r.writeIndexes(ctx, list); err != nil {
		return nil, fmt.Errorf("prune: %w", err)
	}

	// 4. Remove the old index objects: those read at the start, and those
	// Flush wrote for the repacked packs, now covered by the new ones.
	oldIndexes := append(indexNames, flushIndexes...)
	if err := r.removeAll(ctx, oldIndexes); err != nil {
		return nil, fmt.Errorf("prune: %w", err)
	}
	res.IndexesRemoved = len(oldIndexes)

	// 5. Remove packs no index lists any more.
	var gone []string
	for _, id := range append(append(drop, repack...), leftover...) {
		gone = append(gone, format.PackName(id))
	}
	if err := r.removeAll(ctx, gone); err != nil {
		return nil, fmt.Errorf("prune: %w", err)
	}
	return res, r.LoadIndex(ctx)
}

// writeIndexes writes index objects listing packs (at most about 500,000
// blobs each) and returns how many it wrote.
func (r *Repository) writeIndexes(ctx context.Context, list []format.IndexPack) (int, error) {
	sort.Slice(list, func(i, j int) bool { return string(list[i].ID[:]) < string(list[j].ID[:]) })
	written := 0
	for start := 0; start < len(list); {
		end, n := start, 0
		for end < len(list) && (n == 0 || n+len(list[end].Entries) <= 500_000) {
			n += len(list[end].Entries)
			end++
		}
		if _, err := r.writeIndex(ctx, list[start:end]); err != nil {
			return written, err
		}
		written++
		start = end
	}
	return written, nil
}

// removeAll removes the objects names, several at a time (each is a request
// on an object store).
func (r *Repository) removeAll(ctx context.Context, names []string) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(removeConcurrency)
	for _, n := range names {
		g.Go(func() error {
			if err := r.store.Remove(gctx, n); err != nil {
				return fmt.Errorf("removing %s: %w", n, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// removeConcurrency bounds the removals in flight.
const removeConcurrency = 8
