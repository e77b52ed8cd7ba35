package repo

import (
	"container/list"
	"context"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/cairn-backup/cairn/internal/blob"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/repo/format"
)

// ImageReader reads an image backup at any offset straight from the
// repository, without restoring it: segments and chunks are loaded (and
// checked) when first needed and kept in small LRU caches, so memory stays
// bounded whatever the image's size. It serves NBD exports of backups and
// file-level restores. Safe for concurrent use.
type ImageReader struct {
	r   *Repository
	m   *format.Manifest
	ctx context.Context

	mu       sync.Mutex
	segments *lru // segment index -> []format.ID
	chunks   *lru // chunk index -> []byte (plaintext)
	packs    *lru // pack id string -> *packHandle, when the store is a blob.Opener
	closed   bool
}

// packHandle is an opened pack, shared by the reads that use it; it is
// closed when it has left the cache and its last read is done.
type packHandle struct {
	rd   blob.ObjectReader
	refs int
	gone bool
}

// Cache sizes: 256 segments (4 MiB of ids, 16 GiB of image at 128 KiB
// chunks), 64 chunks (8 MiB at 128 KiB) and 32 open packs.
const (
	readerSegments = 256
	readerChunks   = 64
	readerPacks    = 32
)

// NewImageReader returns a reader of image backup m. ctx bounds every read.
func (r *Repository) NewImageReader(ctx context.Context, m *format.Manifest) (*ImageReader, error) {
	if m.Image == nil {
		return nil, core.Invalid("backup %s is a %s backup, not a disk image", m.ID, m.Kind)
	}
	ir := &ImageReader{r: r, m: m, ctx: ctx, segments: newLRU(readerSegments), chunks: newLRU(readerChunks)}
	if _, ok := r.store.(blob.Opener); ok {
		ir.packs = newLRU(readerPacks)
		ir.packs.evicted = func(v any) { ir.dropHandle(v.(*packHandle)) }
	}
	return ir, nil
}

// Close closes the packs the reader keeps open. Reads after Close go to
// the store each time.
func (ir *ImageReader) Close() error {
	ir.mu.Lock()
	defer ir.mu.Unlock()
	ir.closed = true
	if ir.packs != nil {
		ir.packs.clear()
	}
	return nil
}

// dropHandle marks h as out of the cache; called with ir.mu held.
func (ir *ImageReader) dropHandle(h *packHandle) {
	h.gone = true
	if h.refs == 0 {
		_ = h.rd.Close()
	}
}

// readStored reads the stored bytes of the blob at loc into buf's
// storage: through an open pack when the store can open objects, else (or
// when that fails, for the store's own error) with a range load.
func (ir *ImageReader) readStored(loc Location, buf []byte) ([]byte, error) {
	name := format.PackName(loc.Pack)
	if h := ir.packHandle(name); h != nil {
		buf = slices.Grow(buf[:0], int(loc.Length))[:loc.Length]
		n, err := h.rd.ReadAt(buf, int64(loc.Offset))
		ir.mu.Lock()
		h.refs--
		if h.gone && h.refs == 0 {
			_ = h.rd.Close()
		}
		ir.mu.Unlock()
		if n == len(buf) {
			return buf, nil
		}
		_ = err // the range load below reports it in the store's words
	}
	return loadRangeInto(ir.ctx, ir.r.store, name, int64(loc.Offset), int64(loc.Length), buf)
}

// packHandle returns pack name opened, with a reference taken, or nil.
func (ir *ImageReader) packHandle(name string) *packHandle {
	if ir.packs == nil {
		return nil
	}
	key := lruKey(name)
	ir.mu.Lock()
	if v, ok := ir.packs.get(key); ok && !ir.closed {
		h := v.(*packHandle)
		h.refs++
		ir.mu.Unlock()
		return h
	}
	closed := ir.closed
	ir.mu.Unlock()
	if closed {
		return nil
	}
	rd, err := ir.r.store.(blob.Opener).Open(ir.ctx, name)
	if err != nil {
		return nil
	}
	h := &packHandle{rd: rd, refs: 1}
	ir.mu.Lock()
	defer ir.mu.Unlock()
	if v, ok := ir.packs.get(key); ok || ir.closed {
		// Opened meanwhile by another read, or the reader closed: this
		// handle serves this read only.
		h.gone = true
		if ok {
			_ = rd.Close()
			o := v.(*packHandle)
			o.refs++
			return o
		}
		return h
	}
	ir.packs.put(key, h)
	return h
}

// Size returns the image's size.
func (ir *ImageReader) Size() int64 { return ir.m.Image.Size }

// chunkID returns the id of chunk idx (the zero ID for an all-zero chunk).
func (ir *ImageReader) chunkID(idx int64) (format.ID, error) {
	im := ir.m.Image
	si := int(idx / int64(im.SegmentChunks))
	if im.Segments[si].IsZero() {
		return format.ID{}, nil
	}
	ir.mu.Lock()
	v, ok := ir.segments.get(int64(si))
	ir.mu.Unlock()
	if !ok {
		ids, err := ir.r.segmentIDs(ir.ctx, ir.m, si)
		if err != nil {
			return format.ID{}, err
		}
		ir.mu.Lock()
		ir.segments.put(int64(si), ids)
		ir.mu.Unlock()
		v = ids
	}
	return v.([]format.ID)[idx%int64(im.SegmentChunks)], nil
}

// chunk returns the plaintext of chunk idx, or nil for an all-zero chunk.
func (ir *ImageReader) chunk(idx int64) ([]byte, error) {
	ir.mu.Lock()
	v, ok := ir.chunks.get(idx)
	ir.mu.Unlock()
	if ok {
		return v.([]byte), nil
	}
	id, err := ir.chunkID(idx)
	if err != nil || id.IsZero() {
		return nil, err
	}
	b, err := ir.load(id)
	if err != nil {
		return nil, fmt.Errorf("backup %s: chunk at byte %d: %w", ir.m.ID, idx*int64(ir.m.Image.ChunkSize), err)
	}
	ir.mu.Lock()
	ir.chunks.put(idx, b)
	ir.mu.Unlock()
	return b, nil
}

// storedBuffers recycles the buffers stored blobs are read into.
var storedBuffers = sync.Pool{New: func() any { return new([]byte) }}

// load returns the plaintext of data blob id in a buffer of its own.
func (ir *ImageReader) load(id format.ID) ([]byte, error) {
	loc, err := ir.r.locate(format.DataBlob, id)
	if err != nil {
		return nil, err
	}
	buf := storedBuffers.Get().(*[]byte)
	defer storedBuffers.Put(buf)
	stored, err := ir.readStored(loc, *buf)
	if err != nil {
		return nil, fmt.Errorf("%s blob %s in pack %s: %w", loc.Type, id.Short(), loc.Pack.Short(), err)
	}
	*buf = stored[:0]
	return ir.r.openKept(loc, stored)
}

// ReadAt implements io.ReaderAt; all-zero chunks read as zeros without
// touching the repository.
func (ir *ImageReader) ReadAt(p []byte, off int64) (int, error) {
	size := ir.m.Image.Size
	if off < 0 {
		return 0, core.Invalid("negative offset %d", off)
	}
	if off >= size {
		return 0, io.EOF
	}
	cs := int64(ir.m.Image.ChunkSize)
	n := 0
	for n < len(p) && off < size {
		idx := off / cs
		b, err := ir.chunk(idx)
		if err != nil {
			return n, err
		}
		in := off - idx*cs
		want := min(int64(len(p)-n), chunkLen(ir.m.Image, idx)-in)
		if b == nil {
			clear(p[n : n+int(want)])
		} else {
			copy(p[n:n+int(want)], b[in:in+want])
		}
		n += int(want)
		off += want
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Extent is a run of an image backup: Zero when it reads as zeros (an
// all-zero chunk, never stored).
type Extent struct {
	Offset, Length int64
	Zero           bool
}

// Extents describes [off, off+length) in runs of stored and all-zero
// chunks, merged; it reads only segments, never data.
func (ir *ImageReader) Extents(off, length int64) ([]Extent, error) {
	size := ir.m.Image.Size
	end := min(off+length, size)
	cs := int64(ir.m.Image.ChunkSize)
	var out []Extent
	for off < end {
		idx := off / cs
		id, err := ir.chunkID(idx)
		if err != nil {
			return out, err
		}
		n := min(chunkLen(ir.m.Image, idx)-(off-idx*cs), end-off)
		zero := id.IsZero()
		if k := len(out); k > 0 && out[k-1].Zero == zero {
			out[k-1].Length += n
		} else {
			out = append(out, Extent{Offset: off, Length: n, Zero: zero})
		}
		off += n
	}
	return out, nil
}

// lru is a small least-recently-used cache.
type lru struct {
	max     int
	order   *list.List // front: most recent; values are *lruEntry
	items   map[any]*list.Element
	evicted func(v any) // called for each value that leaves the cache, if set
}

type lruEntry struct {
	key any
	val any
}

// lruKey is the key of an open pack in an lru.
type lruKey string

func newLRU(max int) *lru { return &lru{max: max, order: list.New(), items: map[any]*list.Element{}} }

// clear empties the cache.
func (c *lru) clear() {
	for e := c.order.Front(); e != nil; e = e.Next() {
		if c.evicted != nil {
			c.evicted(e.Value.(*lruEntry).val)
		}
	}
	c.order.Init()
	clear(c.items)
}

func (c *lru) get(k any) (any, bool) {
	e, ok := c.items[k]
	if !ok {
		return nil, false
	}
	c.order.MoveToFront(e)
	return e.Value.(*lruEntry).val, true
}

func (c *lru) put(k any, v any) {
	if e, ok := c.items[k]; ok {
		if old := e.Value.(*lruEntry).val; c.evicted != nil {
			c.evicted(old)
		}
		e.Value.(*lruEntry).val = v
		c.order.MoveToFront(e)
		return
	}
	c.items[k] = c.order.PushFront(&lruEntry{k, v})
	if c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.items, last.Value.(*lruEntry).key)
		if c.evicted != nil {
			c.evicted(last.Value.(*lruEntry).val)
		}
	}
}
