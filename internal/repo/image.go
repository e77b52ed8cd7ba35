package repo

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/cairn-backup/cairn/internal/chunker"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/repo/format"
)

// Progress is what long operations report: bytes (or items) done of a
// total, and how many items. It is passed to a callback at most about ten
// times a second and once at the end, never concurrently.
type Progress struct {
	Done, Total int64 // bytes
	Items       int64 // chunks, files or packs done
	Final       bool
}

// progressReporter calls fn about ten times a second until stop.
type progressReporter struct {
	fn    func(Progress)
	total int64
	done  atomic.Int64
	items atomic.Int64
	stopc chan struct{}
	wg    sync.WaitGroup
}

func startProgress(fn func(Progress), total int64) *progressReporter {
	p := &progressReporter{fn: fn, total: total, stopc: make(chan struct{})}
	if fn == nil {
		return p
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.stopc:
				return
			case <-t.C:
				p.fn(Progress{Done: p.done.Load(), Total: p.total, Items: p.items.Load()})
			}
		}
	}()
	return p
}

func (p *progressReporter) stop() {
	close(p.stopc)
	p.wg.Wait()
	if p.fn != nil {
		p.fn(Progress{Done: p.done.Load(), Total: p.total, Items: p.items.Load(), Final: true})
	}
}

// ImageSource is a disk image to back up.
type ImageSource struct {
	R    io.ReaderAt
	Size int64
	// Extents are the ranges that may hold data; nil means the whole image.
	// Outside them nothing is read (holes, unallocated clusters).
	Extents []chunker.Extent
	Format  string // "raw" or "qcow2"
	Path    string // absolute path, recorded in the manifest
	// Base, when set, is an earlier backup of the same image and Changed
	// the ranges whose bytes may differ from it (qcow2.ChangedClusters gives
	// them): only the chunks Changed touches are read; every other chunk id
	// comes from Base, and a segment without a change is Base's segment as
	// it is (nothing rewritten). A Base of another size or chunking is
	// ignored: the image is read whole (Summary.BytesRead shows it).
	Base    *format.Manifest
	Changed []chunker.Extent
}

// incrementalFrom reports whether base can serve as the base of a backup
// with the layout im.
func incrementalFrom(base *format.Manifest, im *format.ImageManifest) bool {
	if base == nil || base.Image == nil {
		return false
	}
	b := base.Image
	return b.Size == im.Size && b.ChunkSize == im.ChunkSize && b.SegmentChunks == im.SegmentChunks &&
		len(b.Segments) == len(im.Segments)
}

// BackupInfo is what a backup records besides its content.
type BackupInfo struct {
	// ID is the new backup's id (a UUID chosen by the caller, e.g. the
	// server's backup id); empty makes a new one.
	ID     string
	Host   string
	Tags   []string
	Parent string // a backup id, or ""
	// Time is the point in time the backup shows (default: its start).
	Time time.Time
}

// BackupImage stores an image as a new backup: fixed-size chunks aligned to
// the image, all-zero chunks not stored, chunk ids listed in segments. The
// caller holds a shared lock. Hashing, compressing and sealing run on
// Options.Workers+1 goroutines.
func (r *Repository) BackupImage(ctx context.Context, src ImageSource, info BackupInfo, progress func(Progress)) (*format.Manifest, error) {
	start := time.Now().UTC()
	if src.Format != "raw" && src.Format != "qcow2" {
		return nil, core.Invalid("unknown image format %q", src.Format)
	}
	if info.ID != "" && !core.IsUUID(info.ID) {
		return nil, core.Invalid("backup id %q is not a UUID", info.ID)
	}
	fixed, err := chunker.NewFixed(r.cfg.ImageChunkSize)
	if err != nil {
		return nil, err
	}
	extents := src.Extents
	if extents == nil {
		extents = []chunker.Extent{{Offset: 0, Length: src.Size}}
	}
	im := &format.ImageManifest{Size: src.Size, ChunkSize: r.cfg.ImageChunkSize, SegmentChunks: r.cfg.SegmentChunks, SourceFormat: src.Format}
	nseg := int((im.Chunks() + int64(im.SegmentChunks) - 1) / int64(im.SegmentChunks))
	im.Segments = make([]format.ID, nseg)

	type segState struct {
		ids  []format.ID
		left int
	}
	var (
		segMu sync.Mutex
		segs  = map[int]*segState{}
		read  atomic.Int64
		scan  *chunker.FixedScanner
		total = src.Size
	)
	if incrementalFrom(src.Base, im) {
		// Only the changed chunks are read; each segment holding one starts
		// as a copy of the base's, the others are the base's.
		counts := changedChunks(src.Changed, im)
		total = 0
		for si := range nseg {
			n := counts[si]
			if n == 0 {
				im.Segments[si] = src.Base.Image.Segments[si]
				continue
			}
			ids, err := r.segmentIDs(ctx, src.Base, si)
			if err != nil {
				return nil, fmt.Errorf("reading the base backup: %w", err)
			}
			segs[si] = &segState{ids: slices.Clone(ids), left: n}
		}
		for _, c := range counts {
			total += int64(c) * int64(im.ChunkSize)
		}
		total = min(total, src.Size)
		if scan, err = fixed.ScanExtentsOnly(src.R, src.Size, extents, src.Changed); err != nil {
			return nil, err
		}
	} else if scan, err = fixed.ScanExtents(src.R, src.Size, extents); err != nil {
		return nil, err
	}
	blobs0, bytes0 := r.WriteStats()
	prog := startProgress(progress, total)
	defer prog.stop()
	// finishChunk records a chunk id and saves its segment when complete.
	finishChunk := func(ctx context.Context, idx int64, id format.ID) error {
		si := int(idx / int64(im.SegmentChunks))
		segMu.Lock()
		s := segs[si]
		if s == nil { // a full backup meets each segment here first
			n := im.SegmentLen(si)
			s = &segState{ids: make([]format.ID, n), left: n}
			segs[si] = s
		}
		s.ids[idx%int64(im.SegmentChunks)] = id
		s.left--
		complete := s.left == 0
		if complete {
			delete(segs, si)
		}
		segMu.Unlock()
		if !complete {
			return nil
		}
		if format.SegmentIsZero(s.ids) {
			return nil // the zero ID stands for it
		}
		sid, err := r.SaveBlob(ctx, format.SegmentBlob, format.EncodeSegment(s.ids))
		if err != nil {
			return err
		}
		// The walk for unique bytes after a backup reads it next.
		r.opts.Segments.put(sid, s.ids)
		im.Segments[si] = sid // each index written by one goroutine only
		return nil
	}

	g, gctx := errgroup.WithContext(ctx)
	spans := make(chan chunker.Span, 4*r.opts.Workers)
	g.Go(func() error {
		defer close(spans)
		for {
			sp, err := scan.NextSpan()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			select {
			case spans <- sp:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
	})
	// The savers read their chunks themselves, so that an image that is not
	// in the page cache is read by several at once while the others compute:
	// twice as many savers as Workers, and two more (a saver waiting for
	// the disk or for an upload slot would otherwise leave a core idle). On
	// 2 cores, a 2 GiB full backup of an image not in the page cache took
	// 3.8-4.1 s with 6 savers against 4.2-4.3 s with 3, and 4.6-5.5 s when
	// one goroutine read for all.
	for range 2*r.opts.Workers + 2 {
		g.Go(func() error {
			for sp := range spans {
				c, err := scan.ReadSpan(sp)
				if err != nil {
					return fmt.Errorf("reading %s at %d: %w", src.Path, sp.Offset, err)
				}
				if !c.Zero {
					read.Add(int64(c.Length))
				}
				var id format.ID
				if !c.Zero {
					var err error
					id, err = r.SaveBlob(gctx, format.DataBlob, c.Data)
					if err != nil {
						c.Release()
						return err
					}
				}
				idx := c.Offset / int64(im.ChunkSize)
				n := c.Length
				c.Release()
				if err := finishChunk(gctx, idx, id); err != nil {
					return err
				}
				prog.done.Add(int64(n))
				prog.items.Add(1)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if len(segs) != 0 {
		return nil, fmt.Errorf("internal error: %d image segments incomplete", len(segs))
	}
	id := info.ID
	if id == "" {
		id = core.NewID()
	}
	m := &format.Manifest{
		ID: id, Kind: format.KindImage, Time: info.Time, Host: info.Host,
		Paths: []string{src.Path}, Tags: info.Tags, Parent: info.Parent, Image: im,
	}
	if m.Parent == "" && incrementalFrom(src.Base, im) {
		m.Parent = src.Base.ID
	}
	if m.Time.IsZero() {
		m.Time = start
	}
	if m.Host == "" {
		m.Host = hostname()
	}
	if err := r.Flush(ctx); err != nil {
		return nil, err
	}
	blobs1, bytes1 := r.WriteStats()
	m.Summary = format.Summary{Start: start, End: time.Now().UTC(), Bytes: src.Size, BytesRead: read.Load(),
		BlobsNew: blobs1 - blobs0, BytesAdded: bytes1 - bytes0}
	if err := r.SaveManifest(ctx, m); err != nil {
		return nil, err
	}
	return m, nil
}

// changedChunks counts, per segment, the chunks that the ranges changed
// overlap.
func changedChunks(changed []chunker.Extent, im *format.ImageManifest) map[int]int {
	cs, nchunks := int64(im.ChunkSize), im.Chunks()
	sorted := slices.Clone(changed)
	slices.SortFunc(sorted, func(a, b chunker.Extent) int { return cmp.Compare(a.Offset, b.Offset) })
	counts := map[int]int{}
	next := int64(0) // chunks below next are counted
	for _, e := range sorted {
		if e.Length <= 0 || e.Offset < 0 || e.Offset >= im.Size {
			continue
		}
		end := min(e.Offset+min(e.Length, im.Size), im.Size)
		for c := max(e.Offset/cs, next); c < nchunks && c*cs < end; c++ {
			counts[int(c/int64(im.SegmentChunks))]++
			next = c + 1
		}
	}
	return counts
}

// segmentIDs returns the chunk ids of segment si of an image backup. The
// slice may be shared with the segment cache: the caller must not change
// it.
func (r *Repository) segmentIDs(ctx context.Context, m *format.Manifest, si int) ([]format.ID, error) {
	im := m.Image
	n := im.SegmentLen(si)
	sid := im.Segments[si]
	if sid.IsZero() {
		return make([]format.ID, n), nil
	}
	cache := r.opts.Segments
	if ctx.Value(noSegmentCache{}) != nil {
		cache = nil
	}
	if ids := cache.get(sid); len(ids) == n {
		return ids, nil
	}
	b, err := r.LoadBlob(ctx, format.SegmentBlob, sid, nil)
	if err != nil {
		return nil, fmt.Errorf("backup %s: segment %d: %w", m.ID, si, err)
	}
	ids, err := format.DecodeSegment(b, n)
	if err != nil {
		return nil, fmt.Errorf("backup %s: segment %d (%s): %w", m.ID, si, sid.Short(), err)
	}
	cache.put(sid, ids)
	return ids, nil
}

// noSegmentCache in a context makes segmentIDs read every segment from the
// repository (verify checks what is stored, not what a cache remembers).
type noSegmentCache struct{}

// SegmentCache keeps decoded image segments (chunk id lists) by segment
// id, so that a process that walks the same backups again and again (a
// node measuring each backup's unique bytes) reads each segment once.
// Segments never change: their id is their content's hash. Bounded to
// segmentCacheMax entries; safe for concurrent use.
type SegmentCache struct {
	mu    sync.Mutex
	m     map[format.ID][]format.ID
	order []format.ID // insertion order, for eviction
}

const segmentCacheMax = 2048 // about 64 MiB with 1,024 chunks a segment

// get returns the cached segment, shared: the caller must not change it.
func (c *SegmentCache) get(id format.ID) []format.ID {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[id]
}

func (c *SegmentCache) put(id format.ID, ids []format.ID) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[format.ID][]format.ID{}
	}
	if _, ok := c.m[id]; ok {
		return
	}
	if len(c.order) >= segmentCacheMax {
		delete(c.m, c.order[0])
		c.order = c.order[1:]
	}
	c.m[id] = slices.Clone(ids)
	c.order = append(c.order, id)
}

// ImageChunks returns the chunk ids of an image backup, in image order (the
// zero ID for an all-zero chunk).
func (r *Repository) ImageChunks(ctx context.Context, m *format.Manifest, fn func(idx int64, id format.ID) error) error {
	im := m.Image
	if im == nil {
		return core.Invalid("backup %s is a %s backup, not an image", m.ID, m.Kind)
	}
	for si := range im.Segments {
		ids, err := r.segmentIDs(ctx, m, si)
		if err != nil {
			return err
		}
		for i, id := range ids {
			if err := fn(int64(si)*int64(im.SegmentChunks)+int64(i), id); err != nil {
				return err
			}
		}
	}
	return nil
}

// RestoreImage writes the non-zero chunks of an image backup to w at their
// offsets; the caller makes w the image's size (zeros elsewhere, sparse).
// Reads of neighbouring blobs of a pack are merged; every blob is checked.
func (r *Repository) RestoreImage(ctx context.Context, m *format.Manifest, w io.WriterAt, progress func(Progress)) error {
	im := m.Image
	if im == nil {
		return core.Invalid("backup %s is a %s backup, not an image: restore it with --target", m.ID, m.Kind)
	}
	prog := startProgress(progress, im.Size)
	defer prog.stop()
	type ref struct {
		idx int64
		loc Location
	}
	const jobBytes = 32 << 20
	jobs := make(chan []ref, 4)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(jobs)
		var job []ref
		var size int64
		send := func() error {
			if len(job) == 0 {
				return nil
			}
			select {
			case jobs <- job:
			case <-gctx.Done():
				return gctx.Err()
			}
			job, size = nil, 0
			return nil
		}
		err := r.ImageChunks(gctx, m, func(idx int64, id format.ID) error {
			if id.IsZero() {
				prog.done.Add(int64(chunkLen(im, idx)))
				return nil
			}
			loc, ok := r.lookup(id)
			if !ok {
				return core.Corrupt("backup %s: data blob %s (at byte %d) is missing from the repository", m.ID, id.Short(), idx*int64(im.ChunkSize))
			}
			job = append(job, ref{idx, loc})
			size += int64(loc.Length)
			if size >= jobBytes {
				return send()
			}
			return nil
		})
		if err != nil {
			return err
		}
		return send()
	})
	for range 2 * r.opts.Workers {
		g.Go(func() error {
			packBuf := make([]byte, 0, maxRange+512<<10) // reused: one range at a time
			var bufs blobBuffers
			for job := range jobs {
				sort.Slice(job, func(i, j int) bool {
					a, b := job[i].loc, job[j].loc
					if a.Pack != b.Pack {
						return string(a.Pack[:]) < string(b.Pack[:])
					}
					return a.Offset < b.Offset
				})
				for i := 0; i < len(job); {
					// Merge a run of blobs of one pack that lie close together.
					j, end := i+1, int64(job[i].loc.Offset)+int64(job[i].loc.Length)
					for j < len(job) && job[j].loc.Pack == job[i].loc.Pack &&
						int64(job[j].loc.Offset) <= end+256<<10 && end-int64(job[i].loc.Offset) < maxRange {
						end = max(end, int64(job[j].loc.Offset)+int64(job[j].loc.Length))
						j++
					}
					base := int64(job[i].loc.Offset)
					buf, err := loadRangeInto(gctx, r.store, format.PackName(job[i].loc.Pack), base, end-base, packBuf)
					if err != nil {
						return fmt.Errorf("backup %s: pack %s: %w", m.ID, job[i].loc.Pack.Short(), err)
					}
					packBuf = buf
					var out []byte
					for k := i; k < j; k++ {
						loc := job[k].loc
						if k == i || job[k-1].loc.ID != loc.ID {
							stored := buf[int64(loc.Offset)-base : int64(loc.Offset)-base+int64(loc.Length)]
							if out, err = r.openBlob(loc, stored, &bufs); err != nil {
								return fmt.Errorf("backup %s: %w", m.ID, err)
							}
						}
						if _, err := w.WriteAt(out, job[k].idx*int64(im.ChunkSize)); err != nil {
							return fmt.Errorf("writing at byte %d: %w", job[k].idx*int64(im.ChunkSize), err)
						}
						prog.done.Add(int64(len(out)))
						prog.items.Add(1)
					}
					i = j
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// maxRange bounds a merged read of neighbouring blobs in RestoreImage.
const maxRange = 4 << 20

func chunkLen(im *format.ImageManifest, idx int64) int64 {
	return min(int64(im.ChunkSize), im.Size-idx*int64(im.ChunkSize))
}
