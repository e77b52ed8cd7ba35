// Package mem is an in-memory blob.Store for tests and for wrapping in fault
// injectors: a map guarded by a mutex. Data is copied in on Save and out on
// Load, so callers may reuse their buffers. Every method may be called
// concurrently; Save is atomic because the object enters the map only after
// all its bytes were read. Nothing is retried (nothing can fail transiently).
package mem

import (
	"bytes"
	"context"
	"io"
	"sort"
	"strings"
	"sync"

	"github.com/cairn-backup/cairn/internal/blob"
	"github.com/cairn-backup/cairn/internal/core"
)

// Store keeps objects in memory. The zero value is not usable: call New.
type Store struct {
	mu      sync.RWMutex
	objects map[string][]byte
}

var _ blob.Store = (*Store)(nil)

// New returns an empty store.
func New() *Store { return &Store{objects: map[string][]byte{}} }

// Save implements blob.Store.
func (s *Store) Save(ctx context.Context, name string, r io.Reader, size int64) error {
	if err := blob.ValidName(name); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if size < 0 {
		return core.Invalid("saving blob %s: negative size %d", name, size)
	}
	var buf bytes.Buffer
	buf.Grow(int(min(size, 64<<20)))
	if _, err := buf.ReadFrom(blob.SizedReader(blob.ContextReader(ctx, r), size, name)); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	s.objects[name] = buf.Bytes() // buf is ours alone: no copy needed
	s.mu.Unlock()
	return nil
}

// Load implements blob.Store.
func (s *Store) Load(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	data, err := s.object(ctx, name)
	if err != nil {
		return nil, err
	}
	size := int64(len(data))
	if err := blob.CheckRange(name, offset, length, size); err != nil {
		return nil, err
	}
	end := size
	if length > 0 {
		end = offset + length
	}
	// Stored slices are never modified (Save replaces them), so reading from
	// a sub-slice is a copy-out as far as callers can tell.
	return io.NopCloser(blob.ContextReader(ctx, bytes.NewReader(data[offset:end]))), nil
}

// Stat implements blob.Store.
func (s *Store) Stat(ctx context.Context, name string) (blob.Info, error) {
	if err := blob.ValidName(name); err != nil {
		return blob.Info{}, err
	}
	if err := ctx.Err(); err != nil {
		return blob.Info{}, err
	}
	s.mu.RLock()
	data, ok := s.objects[name]
	s.mu.RUnlock()
	if !ok {
		return blob.Info{}, blob.NotExist(name)
	}
	return blob.Info{Name: name, Size: int64(len(data))}, nil
}

// Remove implements blob.Store.
func (s *Store) Remove(ctx context.Context, name string) error {
	if err := blob.ValidName(name); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.objects, name)
	s.mu.Unlock()
	return nil
}

// List implements blob.Store. It takes a sorted snapshot of the matching
// names first and calls fn without holding the lock, so fn may use the store.
func (s *Store) List(ctx context.Context, prefix string, fn func(blob.Info) error) error {
	if err := blob.ValidPrefix(prefix); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	var infos []blob.Info
	s.mu.RLock()
	for name, data := range s.objects {
		if strings.HasPrefix(name, prefix) {
			infos = append(infos, blob.Info{Name: name, Size: int64(len(data))})
		}
	}
	s.mu.RUnlock()
	sort.Slice(infos, func(i, j int) bool { return infos[i].Name < infos[j].Name })
	for _, info := range infos {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(info); err != nil {
			return err
		}
	}
	return nil
}

// Close implements blob.Store; it keeps the objects.
func (s *Store) Close() error { return nil }

// ListsConsistently reports true: the map is the truth.
func (s *Store) ListsConsistently() bool { return true }

var _ blob.Opener = (*Store)(nil)

// Open implements blob.Opener.
func (s *Store) Open(ctx context.Context, name string) (blob.ObjectReader, error) {
	data, err := s.object(ctx, name)
	if err != nil {
		return nil, err
	}
	return openObject{bytes.NewReader(data)}, nil
}

// object returns the stored bytes of name (never changed in place).
func (s *Store) object(ctx context.Context, name string) ([]byte, error) {
	if err := blob.ValidName(name); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	data, ok := s.objects[name]
	s.mu.RUnlock()
	if !ok {
		return nil, blob.NotExist(name)
	}
	return data, nil
}

type openObject struct{ *bytes.Reader }

func (openObject) Close() error { return nil }
