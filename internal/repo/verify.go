package repo

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/cairn-backup/cairn/internal/blob"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/repo/format"
)

// VerifyOptions choose how deep verify goes.
type VerifyOptions struct {
	// ReadDataPercent re-reads that share (0-100) of the packs, chosen at
	// random, checking every blob in them; 0 checks structure only.
	ReadDataPercent float64
	// Backups limits the check to these backups and re-reads every blob
	// they reference; empty means the whole repository.
	Backups  []*format.Manifest
	Progress func(Progress)
}

// Problem is one thing verify found wrong.
type Problem struct {
	Object  string   `json:"object"`            // "data/ab/ab12...", "index/...", "backups/..."
	Blob    string   `json:"blob,omitempty"`    // the damaged or missing blob
	Message string   `json:"message"`           // what is wrong
	Backups []string `json:"backups,omitempty"` // every backup that needs the object
}

// VerifyResult is verify's report.
type VerifyResult struct {
	Backups      int       `json:"backups"`
	Packs        int       `json:"packs"`
	Blobs        int       `json:"blobs"`
	PacksRead    int       `json:"packs_read"`
	BytesRead    int64     `json:"bytes_read"`
	Problems     []Problem `json:"problems"`
	Warnings     []string  `json:"warnings"`
	Unreferenced int       `json:"unreferenced_packs"`
}

// OK reports whether verify found nothing wrong.
func (v *VerifyResult) OK() bool { return len(v.Problems) == 0 }

// Verify checks the repository: every index object and manifest reads and
// decodes, every tree and segment a backup references reads and decodes,
// every referenced blob is indexed, and every indexed pack exists with a
// size that holds its blobs. With ReadDataPercent it also re-reads packs
// and checks every blob in them (CRC32C, authentication, decompression,
// id), and reports each damaged blob with the backups that need it.
func (r *Repository) Verify(ctx context.Context, opts VerifyOptions) (*VerifyResult, error) {
	ctx = context.WithValue(ctx, noSegmentCache{}, true)
	res := &VerifyResult{Problems: []Problem{}, Warnings: []string{}}
	// Index objects: one that fails to decode is a problem; the rest load.
	x := NewIndex()
	names, err := listNames(ctx, r.store, format.IndexPrefix)
	if err != nil {
		return nil, fmt.Errorf("listing index objects: %w", err)
	}
	for _, name := range names {
		packs, err := r.readIndexFile(ctx, name)
		if err != nil {
			if core.KindOf(err) != core.KindCorrupt && !core.IsNotFound(err) {
				return nil, err
			}
			res.Problems = append(res.Problems, Problem{Object: name, Message: err.Error()})
			continue
		}
		for _, p := range packs {
			x.Add(p)
		}
	}
	r.idxMu.Lock()
	r.idx = x
	r.idxMu.Unlock()
	res.Blobs = x.Len()

	// Packs present, with their sizes.
	present := map[format.ID]int64{}
	err = r.store.List(ctx, format.DataPrefix, func(i blob.Info) error {
		s := i.Name[strings.LastIndexByte(i.Name, '/')+1:]
		if id, err := format.ParseID(s); err == nil {
			present[id] = i.Size
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing packs: %w", err)
	}
	need := map[format.ID]int64{} // pack -> end of its last blob
	for _, e := range x.blobs {
		end := int64(e.offset) + int64(e.length)
		if end > need[x.packs[e.pack]] {
			need[x.packs[e.pack]] = end
		}
	}
	res.Packs = len(need)
	badPack := map[format.ID]string{}
	for p, end := range need {
		size, ok := present[p]
		switch {
		case !ok:
			badPack[p] = "pack is missing"
		case size < end+format.PackTrailerSize+format.SealOverhead:
			badPack[p] = fmt.Sprintf("pack is %d bytes, too short for the blobs the index lists (truncated)", size)
		}
	}
	for p := range present {
		if _, ok := need[p]; !ok {
			res.Unreferenced++
		}
	}
	if res.Unreferenced > 0 {
		res.Warnings = append(res.Warnings, fmt.Sprintf("%d packs are in no index (left by an interrupted backup or prune; prune removes them)", res.Unreferenced))
	}

	// Backups.
	backups := opts.Backups
	whole := len(backups) == 0
	if whole {
		ids, err := r.BackupIDs(ctx)
		if err != nil {
			return nil, err
		}
		for _, id := range ids {
			m, err := r.LoadManifest(ctx, id)
			if err != nil {
				if core.KindOf(err) == core.KindCorrupt || core.KindOf(err) == core.KindInternal && core.CodeOf(err) == "format_version" {
					res.Problems = append(res.Problems, Problem{Object: format.BackupPrefix + id, Message: err.Error(), Backups: []string{id}})
					continue
				}
				return nil, err
			}
			backups = append(backups, m)
		}
	}
	res.Backups = len(backups)

	// Walk every backup; note for each blob problem which backups need it.
	blobProblem := map[format.ID]*Problem{}
	addProblem := func(id format.ID, object, msg, backup string) {
		p := blobProblem[id]
		if p == nil {
			p = &Problem{Object: object, Blob: id.String(), Message: msg}
			blobProblem[id] = p
		}
		if len(p.Backups) == 0 || p.Backups[len(p.Backups)-1] != backup {
			p.Backups = append(p.Backups, backup)
		}
	}
	wanted := map[format.ID]struct{}{} // blobs of the backups named (re-read all)
	for _, m := range backups {
		seen := map[format.ID]struct{}{}
		err := r.walkBackup(ctx, m, func(t format.BlobType, id format.ID) (bool, error) {
			if _, ok := seen[id]; ok {
				return false, nil
			}
			seen[id] = struct{}{}
			if p, bad := blobProblem[id]; bad {
				addProblem(id, p.Object, p.Message, m.ID)
				return false, nil
			}
			loc, ok := r.lookup(id)
			if !ok {
				addProblem(id, "", fmt.Sprintf("%s blob is missing (in no index)", t), m.ID)
				return false, nil
			}
			if msg, bad := badPack[loc.Pack]; bad {
				addProblem(id, format.PackName(loc.Pack), msg, m.ID)
				return false, nil
			}
			if !whole {
				wanted[id] = struct{}{}
			}
			if t != format.DataBlob {
				// Load it now so that a damaged tree or segment is
				// reported here rather than failing the walk.
				if _, err := r.LoadBlob(ctx, t, id, nil); err != nil {
					if core.KindOf(err) != core.KindCorrupt {
						return false, err
					}
					addProblem(id, format.PackName(loc.Pack), err.Error(), m.ID)
					return false, nil
				}
			}
			return true, nil
		})
		if err != nil {
			if core.KindOf(err) != core.KindCorrupt {
				return nil, err
			}
			res.Problems = append(res.Problems, Problem{Object: format.BackupPrefix + m.ID, Message: err.Error(), Backups: []string{m.ID}})
		}
	}

	// Re-read data.
	var packs []format.ID
	if whole && opts.ReadDataPercent > 0 {
		for p := range need {
			if _, bad := badPack[p]; !bad {
				packs = append(packs, p)
			}
		}
		sort.Slice(packs, func(i, j int) bool { return string(packs[i][:]) < string(packs[j][:]) })
		if opts.ReadDataPercent < 100 {
			rand.Shuffle(len(packs), func(i, j int) { packs[i], packs[j] = packs[j], packs[i] })
			n := int(float64(len(packs))*opts.ReadDataPercent/100 + 0.999)
			packs = packs[:min(n, len(packs))]
		}
	} else if !whole {
		set := map[format.ID]struct{}{}
		for id := range wanted {
			loc, _ := r.lookup(id)
			set[loc.Pack] = struct{}{}
		}
		for p := range set {
			packs = append(packs, p)
		}
	}
	var total int64
	for _, p := range packs {
		total += present[p]
	}
	prog := startProgress(opts.Progress, total)
	damaged := map[format.ID]string{} // blob -> problem
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(2, r.opts.Workers))
	for _, p := range packs {
		g.Go(func() error {
			bad, n, err := r.checkPack(gctx, p, present[p], x)
			prog.done.Add(present[p])
			prog.items.Add(1)
			mu.Lock()
			defer mu.Unlock()
			res.PacksRead++
			res.BytesRead += n
			if err != nil {
				if core.KindOf(err) != core.KindCorrupt {
					return err
				}
				res.Problems = append(res.Problems, Problem{Object: format.PackName(p), Message: err.Error()})
			}
			for id, msg := range bad {
				if loc, ok := x.Lookup(id); ok && loc.Pack != p {
					// A copy the index no longer uses (a repair stored a
					// good one elsewhere): harmless, a prune removes it.
					res.Warnings = append(res.Warnings, fmt.Sprintf("%s holds a damaged copy of blob %s that pack %s replaces; a prune removes it",
						format.PackName(p), id.Short(), loc.Pack.Short()))
					continue
				}
				damaged[id] = msg
			}
			return nil
		})
	}
	err = g.Wait()
	prog.stop()
	if err != nil {
		return nil, err
	}
	if len(damaged) > 0 {
		// Which backups need the damaged blobs?
		for _, m := range backups {
			seen := map[format.ID]struct{}{}
			_ = r.walkBackup(ctx, m, func(t format.BlobType, id format.ID) (bool, error) {
				if _, ok := seen[id]; ok {
					return false, nil
				}
				seen[id] = struct{}{}
				if msg, bad := damaged[id]; bad {
					loc, _ := r.lookup(id)
					addProblem(id, format.PackName(loc.Pack), msg, m.ID)
					return false, nil
				}
				_, indexed := r.lookup(id)
				return indexed, nil
			})
		}
		for id, msg := range damaged {
			if _, ok := blobProblem[id]; !ok {
				loc, _ := r.lookup(id)
				addProblem(id, format.PackName(loc.Pack), msg+" (no backup needs it)", "")
				blobProblem[id].Backups = nil
			}
		}
	}
	keys := make([]format.ID, 0, len(blobProblem))
	for id := range blobProblem {
		keys = append(keys, id)
	}
	sort.Slice(keys, func(i, j int) bool { return string(keys[i][:]) < string(keys[j][:]) })
	for _, id := range keys {
		res.Problems = append(res.Problems, *blobProblem[id])
	}
	return res, nil
}

// checkPack reads a whole pack and checks its trailer, header and every
// blob in it against the index. It returns the damaged blobs (id -> what is
// wrong) and the bytes read; a pack whose structure is broken is an error.
func (r *Repository) checkPack(ctx context.Context, p format.ID, size int64, x *Index) (map[format.ID]string, int64, error) {
	name := format.PackName(p)
	b, err := loadRange(ctx, r.store, name, 0, size)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", name, err)
	}
	bad := map[format.ID]string{}
	entries, herr := r.parsePackHeader(name, b, int64(len(b)))
	if herr != nil {
		// The header is damaged: check the blobs the index places here.
		entries = nil
		for id, e := range x.blobs {
			if x.packs[e.pack] == p {
				loc, _ := x.Lookup(id)
				entries = append(entries, loc.PackEntry)
			}
		}
	}
	var bufs blobBuffers
	for _, e := range entries {
		end := int64(e.Offset) + int64(e.Length)
		if end > int64(len(b)) {
			bad[e.ID] = "blob lies past the end of the pack (truncated)"
			continue
		}
		loc := Location{Pack: p, PackEntry: e}
		if _, err := r.openBlob(loc, b[e.Offset:end], &bufs); err != nil {
			bad[e.ID] = err.Error()
		}
	}
	if herr != nil {
		return bad, int64(len(b)), fmt.Errorf("%s: %w", name, herr)
	}
	return bad, int64(len(b)), nil
}

// parsePackHeader decodes the header of a pack of packSize bytes from tail,
// the pack's last bytes (at least its sealed header and trailer; the whole
// pack will do).
func (r *Repository) parsePackHeader(name string, tail []byte, packSize int64) ([]format.PackEntry, error) {
	if len(tail) < format.PackTrailerSize {
		return nil, core.Corrupt("%s: %d bytes, shorter than a trailer", name, len(tail))
	}
	hlen, crc, err := format.DecodePackTrailer(tail[len(tail)-format.PackTrailerSize:], packSize)
	if err != nil {
		return nil, err
	}
	if hlen+format.PackTrailerSize > int64(len(tail)) {
		return nil, fmt.Errorf("internal error: %d bytes of %s read, its header needs %d", len(tail), name, hlen+format.PackTrailerSize)
	}
	hstart := packSize - format.PackTrailerSize - hlen
	sealed := tail[int64(len(tail))-format.PackTrailerSize-hlen : int64(len(tail))-format.PackTrailerSize]
	if format.CRC32C(sealed) != crc {
		return nil, core.Corrupt("pack header CRC32C mismatch")
	}
	plain, err := r.key.Open(sealed, format.PackHeaderAD)
	if err != nil {
		return nil, core.Corrupt("pack header fails authentication")
	}
	return format.DecodePackHeader(plain, hstart)
}
