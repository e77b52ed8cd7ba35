package repo

import (
	"context"
	"io"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cairn-backup/cairn/internal/blob"
	"github.com/cairn-backup/cairn/internal/repo/format"
)

// indexLoads counts the index objects read through it.
type indexLoads struct {
	blob.Store
	n atomic.Int64
}

func (s *indexLoads) Load(ctx context.Context, name string, off, n int64) (io.ReadCloser, error) {
	if strings.HasPrefix(name, format.IndexPrefix) {
		s.n.Add(1)
	}
	return s.Store.Load(ctx, name, off, n)
}

// sameIndex fails unless a and b locate every blob alike.
func sameIndex(t *testing.T, a, b *Index) {
	t.Helper()
	if a.Len() != b.Len() {
		t.Fatalf("%d blobs against %d", a.Len(), b.Len())
	}
	for id := range a.blobs {
		la, _ := a.Lookup(id)
		lb, ok := b.Lookup(id)
		if !ok || la != lb {
			t.Fatalf("blob %s: %+v against %+v (%v)", id.Short(), la, lb, ok)
		}
	}
}

// TestIndexCache: a repository opened again with the cache reads only the
// index objects added since, builds the same index as a fresh load, is not
// changed by the backups of those who got it, and starts afresh after a
// prune removed index objects.
func TestIndexCache(t *testing.T) {
	ctx := context.Background()
	_, plain := newTestRepo(t)
	store := &indexLoads{Store: plain}
	dir := t.TempDir()
	img := filepath.Join(dir, "a.raw")
	writeImage(t, img, 4<<20, 1)
	opts := testOptions()
	opts.Indexes = &IndexCache{}
	open := func() *Repository {
		t.Helper()
		r, err := Open(ctx, store, testPassword, opts)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.LoadIndex(ctx); err != nil {
			t.Fatal(err)
		}
		return r
	}
	loads := func(want int64) {
		t.Helper()
		if got := store.n.Swap(0); got != want {
			t.Fatalf("%d index objects read, want %d", got, want)
		}
	}

	r := open()
	m1 := backupImageFile(t, r, img)
	store.n.Store(0)
	r = open()
	loads(0) // the backup's index object was cached as it was written
	sameIndex(t, r.idx, reopen(t, plain).idx)

	// A backup by another process (no cache) is read from its index object.
	writeImage(t, img, 4<<20, 2)
	m2 := backupImageFile(t, reopen(t, plain), img)
	store.n.Store(0)
	r = open()
	loads(1)
	sameIndex(t, r.idx, reopen(t, plain).idx)

	// What a process does to the index it got does not reach the cache.
	r.idx.Add(format.IndexPack{ID: format.ID{7}, Entries: []format.PackEntry{{ID: format.ID{8}, Length: 1}}})
	r = open()
	loads(0)
	if r.idx.Has(format.ID{8}) {
		t.Fatal("a change to a loaded index reached the cache")
	}
	sameIndex(t, r.idx, reopen(t, plain).idx)

	// Another process (no cache) prunes.
	other := reopen(t, plain)
	if err := other.Forget(ctx, []string{m1.ID}); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Prune(ctx, PruneOptions{}); err != nil {
		t.Fatal(err)
	}
	store.n.Store(0)
	r = open()
	names, err := listNames(ctx, plain, format.IndexPrefix)
	if err != nil {
		t.Fatal(err)
	}
	loads(int64(len(names))) // every object, as the old ones are gone
	sameIndex(t, r.idx, reopen(t, plain).idx)
	if got, err := restoreBytes(t, r, m2); err != nil || len(got) != 4<<20 {
		t.Fatalf("restore after prune with a cached index: %v", err)
	}
}

// TestIndexCacheBound: the cache keeps indexCacheRepos repositories, the
// most recently used.
func TestIndexCacheBound(t *testing.T) {
	var c IndexCache
	for i := range indexCacheRepos + 3 {
		c.put(string(rune('a'+i)), NewIndex())
	}
	c.put("a", NewIndex()) // gone already: stored again, evicting "d"
	if len(c.m) != indexCacheRepos || c.m["a"] == nil || c.m["d"] != nil || c.m["e"] == nil {
		t.Fatalf("cache holds %d: %v", len(c.m), c.used)
	}
}
