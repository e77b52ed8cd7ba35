package repo

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/cairn-backup/cairn/internal/blob"
	"github.com/cairn-backup/cairn/internal/repo/format"
)

// A packer fills one pack at a time with sealed blobs and hands full packs
// to the uploads. Data chunks and metadata (trees, segments) go to separate
// packers, so that reading every tree or segment touches small packs only.
type packer struct {
	r     *Repository
	limit int

	mu      sync.Mutex
	buf     []byte
	entries []format.PackEntry
}

func newPacker(r *Repository, limit int) *packer { return &packer{r: r, limit: limit} }

// writeState tracks the blobs saved by this process that are not yet in an
// index object, and the uploads in flight.
type writeState struct {
	mu         sync.Mutex
	pending    map[format.ID]struct{} // saved or being saved, not yet indexed
	unindexed  []format.IndexPack     // uploaded packs not yet in an index object
	committed  []format.IndexPack     // every pack this process indexed (prune reads it)
	indexes    []string               // the index objects that list them
	uploadErr  error
	uploads    sync.WaitGroup
	sem        chan struct{}
	blobsNew   atomic.Int64
	bytesAdded atomic.Int64
}

func (r *Repository) ws() *writeState {
	r.wsOnce.Do(func() {
		r.w = &writeState{pending: map[format.ID]struct{}{}, sem: make(chan struct{}, r.opts.Uploads)}
	})
	return r.w
}

// sealPool recycles the buffers blobs are compressed and sealed into.
var sealPool = sync.Pool{New: func() any { b := make([]byte, 0, 1<<20); return &b }}

// SaveBlob stores plaintext as a blob of type t unless the repository (or
// this process, since the last Flush) already holds it, and returns its id.
// It does not keep buf. Safe for concurrent use; it blocks while uploads
// catch up. The blob is committed only by a later Flush.
func (r *Repository) SaveBlob(ctx context.Context, t format.BlobType, buf []byte) (format.ID, error) {
	id, _, err := r.saveBlob(ctx, t, buf)
	return id, err
}

func (r *Repository) saveBlob(ctx context.Context, t format.BlobType, buf []byte) (format.ID, bool, error) {
	if len(buf) > format.MaxBlobSize-format.SealOverhead {
		return format.ID{}, false, fmt.Errorf("blob of %d bytes is larger than the format allows", len(buf))
	}
	id := format.ID(r.key.ChunkID(buf))
	if _, ok := r.lookup(id); ok {
		return id, false, nil
	}
	w := r.ws()
	w.mu.Lock()
	if _, ok := w.pending[id]; ok {
		w.mu.Unlock()
		return id, false, nil
	}
	w.pending[id] = struct{}{}
	w.mu.Unlock()
	if err := r.sealAndAdd(ctx, t, id, buf); err != nil {
		return id, false, err
	}
	return id, true, nil
}

// sealAndAdd compresses and seals blob buf (whose id is id) and adds it to
// the open pack of its type.
func (r *Repository) sealAndAdd(ctx context.Context, t format.BlobType, id format.ID, buf []byte) error {
	w := r.ws()
	cbuf := sealPool.Get().(*[]byte)
	defer sealPool.Put(cbuf)
	payload, zstdOK := compress(buf, (*cbuf)[:0])
	if zstdOK {
		*cbuf = payload[:0]
	}
	sb := sealPool.Get().(*[]byte)
	defer sealPool.Put(sb)
	sealed := r.key.SealAppend((*sb)[:0], payload, format.BlobAD(t, id))
	*sb = sealed[:0]
	e := format.PackEntry{Type: t, ID: id, Length: uint32(len(sealed)), RawLength: uint32(len(buf)), CRC: format.CRC32C(sealed)}
	if zstdOK {
		e.Flags |= format.FlagZstd
	}
	p := r.packers[0]
	if t != format.DataBlob {
		p = r.packers[1]
	}
	if err := p.add(ctx, e, sealed); err != nil {
		return err
	}
	w.blobsNew.Add(1)
	w.bytesAdded.Add(int64(len(sealed)))
	return nil
}

// add appends a sealed blob; a full pack is uploaded (which may block).
func (p *packer) add(ctx context.Context, e format.PackEntry, sealed []byte) error {
	p.mu.Lock()
	if p.buf == nil {
		p.buf = packBuffers.get(p.limit + p.limit/8)
	}
	e.Offset = uint32(len(p.buf))
	p.buf = append(p.buf, sealed...)
	p.entries = append(p.entries, e)
	var full []byte
	var entries []format.PackEntry
	if len(p.buf) >= p.limit {
		full, entries = p.buf, p.entries
		p.buf, p.entries = nil, nil
	}
	p.mu.Unlock()
	if full != nil {
		return p.r.upload(ctx, full, entries)
	}
	return nil
}

// packBuffers keeps the buffers of uploaded packs for the next packs of
// this process (a node runs backup after backup): a fresh buffer of tens
// of MiB costs its page faults, in the time of the backup.
var packBuffers = bufferPool{keep: 4}

// bufferPool is a small free list of large byte buffers.
type bufferPool struct {
	mu   sync.Mutex
	keep int
	free [][]byte
}

// get returns an empty buffer with a capacity of at least n (and not
// far above it).
func (p *bufferPool) get(n int) []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, b := range p.free {
		if c := cap(b); c >= n && c <= 2*n {
			p.free = slices.Delete(p.free, i, i+1)
			return b[:0]
		}
	}
	return make([]byte, 0, n)
}

// put gives b back; its contents are not kept.
func (p *bufferPool) put(b []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.free) < p.keep {
		p.free = append(p.free, b[:0])
	}
}

// flush uploads the pack being filled, if any.
func (p *packer) flush(ctx context.Context) error {
	p.mu.Lock()
	full, entries := p.buf, p.entries
	p.buf, p.entries = nil, nil
	p.mu.Unlock()
	if len(entries) == 0 {
		return nil
	}
	return p.r.upload(ctx, full, entries)
}

// indexEvery is the number of uploaded packs after which an index object is
// written without waiting for Flush, so that a long backup's data is
// reusable by others early.
const indexEvery = 64

// upload seals the header, appends the trailer and saves the pack in the
// background, at most Options.Uploads at a time.
func (r *Repository) upload(ctx context.Context, blobs []byte, entries []format.PackEntry) error {
	w := r.ws()
	header := r.key.Seal(format.EncodePackHeader(entries), format.PackHeaderAD)
	pack := append(blobs, header...)
	pack = append(pack, format.EncodePackTrailer(header)...)
	var id format.ID
	copy(id[:], randomBytes(32))
	select {
	case w.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	w.mu.Lock()
	err := w.uploadErr
	w.mu.Unlock()
	if err != nil {
		<-w.sem
		return err
	}
	w.uploads.Add(1)
	go func() {
		defer w.uploads.Done()
		defer func() { <-w.sem }()
		// Not the caller's context: an errgroup cancels it as soon as its
		// goroutines are done, and Flush waits for this upload.
		uctx := context.WithoutCancel(ctx)
		err := blob.SaveBytes(uctx, r.store, format.PackName(id), pack)
		packBuffers.put(pack)
		w.mu.Lock()
		defer w.mu.Unlock()
		if err != nil {
			if w.uploadErr == nil {
				w.uploadErr = fmt.Errorf("saving pack %s: %w", id.Short(), err)
			}
			return
		}
		w.unindexed = append(w.unindexed, format.IndexPack{ID: id, Entries: entries})
		if len(w.unindexed) >= indexEvery {
			packs := w.unindexed
			w.unindexed = nil
			if err := r.commitIndex(uctx, packs); err != nil && w.uploadErr == nil {
				w.uploadErr = err
			}
		}
	}()
	return nil
}

// commitIndex writes an index object for packs and adds them to the loaded
// index. Called with w.mu held.
func (r *Repository) commitIndex(ctx context.Context, packs []format.IndexPack) error {
	name, err := r.writeIndex(ctx, packs)
	if err != nil {
		return err
	}
	r.idxMu.Lock()
	if r.idx == nil {
		r.idx = NewIndex()
	}
	for _, p := range packs {
		r.idx.Add(p)
	}
	r.idxMu.Unlock()
	r.opts.Indexes.add(r.cfg.ID, name, packs)
	for _, p := range packs {
		for _, e := range p.Entries {
			delete(r.w.pending, e.ID)
		}
	}
	r.w.committed = append(r.w.committed, packs...)
	r.w.indexes = append(r.w.indexes, name)
	return nil
}

// Flush uploads the packs being filled, waits for every upload and writes
// the index object that lists them. After Flush returns nil every blob saved
// before it is committed: a manifest may reference it.
func (r *Repository) Flush(ctx context.Context) error {
	w := r.ws()
	for _, p := range r.packers {
		if err := p.flush(ctx); err != nil {
			return err
		}
	}
	w.uploads.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.uploadErr != nil {
		return w.uploadErr
	}
	if len(w.unindexed) > 0 {
		packs := w.unindexed
		w.unindexed = nil
		if err := r.commitIndex(ctx, packs); err != nil {
			w.uploadErr = err
			return err
		}
	}
	return nil
}

// WriteStats returns the blobs and stored bytes this process added.
func (r *Repository) WriteStats() (blobs, bytes int64) {
	w := r.ws()
	return w.blobsNew.Load(), w.bytesAdded.Load()
}
