package blob

import (
	"context"
	"io"
	"strings"
	"sync"
	"time"
)

// DelayedList wraps a Store to act like an object store whose listings lag
// behind writes (eventual consistency): for Delay after a Save, List does not
// report the object; for Delay after a Remove, List still reports it (with
// its last size). Load and Stat stay read-after-write consistent, as S3 and
// the common S3-compatible stores are. Tests of the repository run against it
// to prove that correctness never depends on listing right after a write.
//
// Only changes made through this wrapper are delayed. Set the fields before
// the first call; the methods may then be called concurrently.
type DelayedList struct {
	Store Store
	Delay time.Duration
	Now   func() time.Time // nil means time.Now

	mu      sync.Mutex
	saved   map[string]time.Time
	removed map[string]ghost
}

type ghost struct {
	info Info
	at   time.Time
}

var _ Store = (*DelayedList)(nil)

func (d *DelayedList) now() time.Time {
	if d.Now != nil {
		return d.Now()
	}
	return time.Now()
}

// Save implements Store.
func (d *DelayedList) Save(ctx context.Context, name string, r io.Reader, size int64) error {
	if err := d.Store.Save(ctx, name, r, size); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.saved == nil {
		d.saved = map[string]time.Time{}
	}
	d.saved[name] = d.now()
	delete(d.removed, name)
	return nil
}

// Load implements Store.
func (d *DelayedList) Load(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	return d.Store.Load(ctx, name, offset, length)
}

// Stat implements Store.
func (d *DelayedList) Stat(ctx context.Context, name string) (Info, error) {
	return d.Store.Stat(ctx, name)
}

// Remove implements Store.
func (d *DelayedList) Remove(ctx context.Context, name string) error {
	info, statErr := d.Store.Stat(ctx, name)
	if err := d.Store.Remove(ctx, name); err != nil {
		return err
	}
	if statErr != nil {
		return nil // it was not there (or we cannot tell): nothing to show
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.removed == nil {
		d.removed = map[string]ghost{}
	}
	d.removed[name] = ghost{info: info, at: d.now()}
	delete(d.saved, name)
	return nil
}

// List implements Store: fresh objects are hidden, freshly removed ones
// still reported.
func (d *DelayedList) List(ctx context.Context, prefix string, fn func(Info) error) error {
	now := d.now()
	hidden := map[string]bool{}
	ghosts := map[string]Info{}
	d.mu.Lock()
	for name, at := range d.saved {
		if now.Sub(at) >= d.Delay {
			delete(d.saved, name)
		} else if strings.HasPrefix(name, prefix) {
			hidden[name] = true
		}
	}
	for name, g := range d.removed {
		if now.Sub(g.at) >= d.Delay {
			delete(d.removed, name)
		} else if strings.HasPrefix(name, prefix) {
			ghosts[name] = g.info
		}
	}
	d.mu.Unlock()

	err := d.Store.List(ctx, prefix, func(info Info) error {
		if hidden[info.Name] {
			return nil
		}
		delete(ghosts, info.Name) // saved again meanwhile: report it once
		return fn(info)
	})
	if err != nil {
		return err
	}
	for _, info := range ghosts {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(info); err != nil {
			return err
		}
	}
	return nil
}

// Close implements Store.
func (d *DelayedList) Close() error { return d.Store.Close() }
