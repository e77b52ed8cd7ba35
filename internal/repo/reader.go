package repo

import (
	"container/list"
	"context"
	"fmt"
	"io"
	"sync"

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
}

// Cache sizes: 256 segments (4 MiB of ids, 16 GiB of image at 128 KiB
// chunks) and 64 chunks (8 MiB at 128 KiB).
const (
	readerSegments = 256
	readerChunks   = 64
)

// NewImageReader returns a reader of image backup m. ctx bounds every read.
func (r *Repository) NewImageReader(ctx context.Context, m *format.Manifest) (*ImageReader, error) {
	if m.Image == nil {
		return nil, core.Invalid("backup %s is a %s backup, not a disk image", m.ID, m.Kind)
	}
	return &ImageReader{r: r, m: m, ctx: ctx, segments: newLRU(readerSegments), chunks: newLRU(readerChunks)}, nil
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
	b, err := ir.r.LoadBlob(ir.ctx, format.DataBlob, id, nil)
	if err != nil {
		return nil, fmt.Errorf("backup %s: chunk at byte %d: %w", ir.m.ID, idx*int64(ir.m.Image.ChunkSize), err)
	}
	ir.mu.Lock()
	ir.chunks.put(idx, b)
	ir.mu.Unlock()
	return b, nil
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

// lru is a small least-recently-used cache keyed by int64.
type lru struct {
	max   int
	order *list.List // front: most recent; values are *lruEntry
	items map[int64]*list.Element
}

type lruEntry struct {
	key int64
	val any
}

func newLRU(max int) *lru { return &lru{max: max, order: list.New(), items: map[int64]*list.Element{}} }

func (c *lru) get(k int64) (any, bool) {
	e, ok := c.items[k]
	if !ok {
		return nil, false
	}
	c.order.MoveToFront(e)
	return e.Value.(*lruEntry).val, true
}

func (c *lru) put(k int64, v any) {
	if e, ok := c.items[k]; ok {
		e.Value.(*lruEntry).val = v
		c.order.MoveToFront(e)
		return
	}
	c.items[k] = c.order.PushFront(&lruEntry{k, v})
	if c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.items, last.Value.(*lruEntry).key)
	}
}
