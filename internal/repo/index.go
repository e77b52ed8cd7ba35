package repo

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/repo/format"
)

// Location is where a blob is stored.
type Location struct {
	Pack format.ID
	format.PackEntry
}

// Index maps blob ids to their place in packs. It holds one location per
// blob (the first one seen when a blob is in several packs). Not safe for
// concurrent writes; Repository guards it.
type Index struct {
	packs   []format.ID
	packIdx map[format.ID]uint32
	blobs   map[format.ID]indexEntry
	files   []string // index objects it was loaded from
}

type indexEntry struct {
	pack      uint32
	offset    uint32
	length    uint32
	rawLength uint32
	crc       uint32
	typ       format.BlobType
	flags     uint8
}

// NewIndex returns an empty index.
func NewIndex() *Index {
	return &Index{packIdx: map[format.ID]uint32{}, blobs: map[format.ID]indexEntry{}}
}

// Add records the blobs of a pack.
func (x *Index) Add(p format.IndexPack) {
	pi, ok := x.packIdx[p.ID]
	if !ok {
		pi = uint32(len(x.packs))
		x.packs = append(x.packs, p.ID)
		x.packIdx[p.ID] = pi
	}
	for _, e := range p.Entries {
		if _, dup := x.blobs[e.ID]; dup {
			continue
		}
		x.blobs[e.ID] = indexEntry{pack: pi, offset: e.Offset, length: e.Length, rawLength: e.RawLength, crc: e.CRC, typ: e.Type, flags: e.Flags}
	}
}

// Lookup returns where blob id is.
func (x *Index) Lookup(id format.ID) (Location, bool) {
	e, ok := x.blobs[id]
	if !ok {
		return Location{}, false
	}
	return Location{Pack: x.packs[e.pack], PackEntry: format.PackEntry{
		Type: e.typ, Flags: e.flags, ID: id, Offset: e.offset, Length: e.length, RawLength: e.rawLength, CRC: e.crc,
	}}, true
}

// Has reports whether blob id is indexed.
func (x *Index) Has(id format.ID) bool { _, ok := x.blobs[id]; return ok }

// Len returns the number of blobs.
func (x *Index) Len() int { return len(x.blobs) }

// Files returns the index objects the index was loaded from.
func (x *Index) Files() []string { return x.files }

// LoadIndex reads every index object into memory. Index objects that fail
// to load make it fail: a repository whose index cannot be read must be
// looked at (verify) before it is written to.
//
// With Options.Indexes set, only the index objects added since the cached
// index of this repository are read.
func (r *Repository) LoadIndex(ctx context.Context) error {
	var x *Index
	var err error
	if r.opts.Indexes != nil {
		x, err = r.loadIndexCached(ctx)
	} else {
		x, _, err = r.readIndexFiles(ctx, nil)
	}
	if err != nil {
		return err
	}
	r.idxMu.Lock()
	r.idx = x
	r.idxMu.Unlock()
	return nil
}

// readIndexFiles loads every index object; each decoded pack list is also
// passed to fn (if not nil) with the object's name, serially.
func (r *Repository) readIndexFiles(ctx context.Context, fn func(name string, packs []format.IndexPack) error) (*Index, []string, error) {
	names, err := listNames(ctx, r.store, format.IndexPrefix)
	if err != nil {
		return nil, nil, fmt.Errorf("listing index objects: %w", err)
	}
	x := NewIndex()
	if err := r.addIndexFiles(ctx, x, names, fn); err != nil {
		return nil, nil, err
	}
	x.files = names
	return x, names, nil
}

// addIndexFiles reads the index objects names, 8 at a time, into x; fn
// (if not nil) sees each one's packs, serially. x.files is left as it is.
func (r *Repository) addIndexFiles(ctx context.Context, x *Index, names []string, fn func(name string, packs []format.IndexPack) error) error {
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for _, name := range names {
		g.Go(func() error {
			packs, err := r.readIndexFile(gctx, name)
			if err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			for _, p := range packs {
				x.Add(p)
			}
			if fn != nil {
				return fn(name, packs)
			}
			return nil
		})
	}
	return g.Wait()
}

// maxIndexSize bounds the plaintext of one index object (about 1.3M blobs).
const maxIndexSize = 64 << 20

func (r *Repository) readIndexFile(ctx context.Context, name string) ([]format.IndexPack, error) {
	b, err := r.loadObject(ctx, name, format.IndexAD, maxIndexSize)
	if err != nil {
		return nil, fmt.Errorf("index %s: %w", strings.TrimPrefix(name, format.IndexPrefix), err)
	}
	packs, err := format.DecodeIndex(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return packs, nil
}

// writeIndex stores an index object listing packs and returns its name.
func (r *Repository) writeIndex(ctx context.Context, packs []format.IndexPack) (string, error) {
	name := format.IndexPrefix + randomHex(32)
	if err := r.saveObject(ctx, name, format.EncodeIndex(packs), format.IndexAD); err != nil {
		return "", fmt.Errorf("saving index: %w", err)
	}
	return name, nil
}

// lookup finds a blob in the loaded index.
func (r *Repository) lookup(id format.ID) (Location, bool) {
	r.idxMu.RLock()
	defer r.idxMu.RUnlock()
	if r.idx == nil {
		return Location{}, false
	}
	return r.idx.Lookup(id)
}

// Lookup finds a blob in the loaded index.
func (r *Repository) Lookup(id format.ID) (Location, bool) { return r.lookup(id) }

// IndexFile reads one index object (by its name under index/, or a unique
// prefix of it).
func (r *Repository) IndexFile(ctx context.Context, name string) ([]format.IndexPack, error) {
	names, err := listNames(ctx, r.store, format.IndexPrefix+name)
	if err != nil {
		return nil, err
	}
	switch len(names) {
	case 0:
		return nil, core.NotFound("no index object %q", name)
	case 1:
		return r.readIndexFile(ctx, names[0])
	}
	return nil, core.Invalid("index name prefix %q is ambiguous", name)
}

// PackHeader reads and decodes the header of pack id.
func (r *Repository) PackHeader(ctx context.Context, id format.ID) ([]format.PackEntry, error) {
	name := format.PackName(id)
	info, err := r.store.Stat(ctx, name)
	if err != nil {
		return nil, err
	}
	if info.Size < format.PackTrailerSize {
		return nil, core.Corrupt("%s: %d bytes, shorter than a trailer", name, info.Size)
	}
	t, err := loadRange(ctx, r.store, name, info.Size-format.PackTrailerSize, format.PackTrailerSize)
	if err != nil {
		return nil, err
	}
	hlen, _, err := format.DecodePackTrailer(t, info.Size)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	tail, err := loadRange(ctx, r.store, name, info.Size-format.PackTrailerSize-hlen, hlen+format.PackTrailerSize)
	if err != nil {
		return nil, err
	}
	entries, err := r.parsePackHeader(name, tail, info.Size)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return entries, nil
}

// IndexCache keeps the last index loaded from each repository, so that a
// process that opens one repository again and again (a node) reads only
// the index objects added since; the index objects a process writes are
// added to it as well. Index objects never change once written (their
// names are random; a prune or a repair writes new ones and removes the
// old), so a cached index whose objects are all still listed is current
// for them; when one of them is gone the index is read afresh. It keeps
// indexCacheRepos repositories, the most recently used. Safe for
// concurrent use.
type IndexCache struct {
	mu   sync.Mutex
	m    map[string]*Index // by repository id; handed out as copies
	used []string          // repository ids, least recently used first
}

const (
	indexCacheRepos    = 8
	indexCacheMaxBlobs = 4 << 20 // larger indexes are not kept (about 300 MiB)
)

// load returns a copy of the cached index of repository id, or nil when
// there is none or one of its index objects is no longer listed.
func (c *IndexCache) load(id string, listed map[string]bool) *Index {
	c.mu.Lock()
	defer c.mu.Unlock()
	x := c.m[id]
	if x == nil || slices.ContainsFunc(x.files, func(n string) bool { return !listed[n] }) {
		return nil
	}
	return x.clone()
}

// put stores x as repository id's index; the cache owns it from then on.
func (c *IndexCache) put(id string, x *Index) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]*Index{}
	}
	c.used = slices.DeleteFunc(c.used, func(s string) bool { return s == id })
	if x.Len() > indexCacheMaxBlobs {
		delete(c.m, id)
		return
	}
	c.m[id] = x
	c.used = append(c.used, id)
	for len(c.used) > indexCacheRepos {
		delete(c.m, c.used[0])
		c.used = c.used[1:]
	}
}

// add records a new index object of repository id in its cached index.
func (c *IndexCache) add(id, name string, packs []format.IndexPack) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	x := c.m[id]
	if x == nil || slices.Contains(x.files, name) {
		return
	}
	for _, p := range packs {
		x.Add(p)
	}
	x.files = append(x.files, name)
}

// clone returns a copy of x that can be changed without changing x.
func (x *Index) clone() *Index {
	return &Index{packs: slices.Clone(x.packs), packIdx: maps.Clone(x.packIdx), blobs: maps.Clone(x.blobs), files: slices.Clone(x.files)}
}

// loadIndexCached builds the index from the cached one and the index
// objects added since, and caches the result.
func (r *Repository) loadIndexCached(ctx context.Context) (*Index, error) {
	names, err := listNames(ctx, r.store, format.IndexPrefix)
	if err != nil {
		return nil, fmt.Errorf("listing index objects: %w", err)
	}
	listed := make(map[string]bool, len(names))
	for _, n := range names {
		listed[n] = true
	}
	x := r.opts.Indexes.load(r.cfg.ID, listed)
	if x == nil {
		x = NewIndex()
	}
	have := make(map[string]bool, len(x.files))
	for _, n := range x.files {
		have[n] = true
	}
	var added []string
	for _, n := range names {
		if !have[n] {
			added = append(added, n)
		}
	}
	if len(added) == 0 && x.files != nil {
		return x, nil
	}
	if err := r.addIndexFiles(ctx, x, added, nil); err != nil {
		return nil, err
	}
	x.files = append(x.files, added...)
	r.opts.Indexes.put(r.cfg.ID, x.clone())
	return x, nil
}
