package repo

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/repo/format"
)

// maxManifestSize bounds a manifest's plaintext (a 1 PiB image's segment
// list is 1.1 MiB of JSON per 16K segments... 64 MiB is generous).
const maxManifestSize = 64 << 20

// SaveManifest flushes every blob saved so far and then stores m: the
// manifest is written only when all it references is committed.
func (r *Repository) SaveManifest(ctx context.Context, m *format.Manifest) error {
	if err := r.Flush(ctx); err != nil {
		return err
	}
	m.Version = format.Version
	if err := m.Validate(); err != nil {
		return fmt.Errorf("refusing to save a bad manifest: %w", err)
	}
	b, err := format.EncodeManifest(m)
	if err != nil {
		return err
	}
	if err := r.saveObject(ctx, format.BackupPrefix+m.ID, b, format.ManifestAD(m.ID)); err != nil {
		return fmt.Errorf("saving manifest %s: %w", m.ID, err)
	}
	return nil
}

// LoadManifest reads backup id's manifest.
func (r *Repository) LoadManifest(ctx context.Context, id string) (*format.Manifest, error) {
	if !core.IsUUID(id) {
		return nil, core.Invalid("%q is not a backup id", id)
	}
	b, err := r.loadObject(ctx, format.BackupPrefix+id, format.ManifestAD(id), maxManifestSize)
	if core.IsNotFound(err) {
		return nil, core.NotFound("no backup %s in this repository", id)
	}
	if err != nil {
		return nil, fmt.Errorf("backup %s: %w", id, err)
	}
	m, err := format.DecodeManifest(b)
	if err != nil {
		return nil, fmt.Errorf("backup %s: %w", id, err)
	}
	if m.ID != id {
		return nil, core.Corrupt("backup %s: the manifest names itself %s", id, m.ID)
	}
	return m, nil
}

// BackupIDs lists the ids of every backup.
func (r *Repository) BackupIDs(ctx context.Context) ([]string, error) {
	names, err := listNames(ctx, r.store, format.BackupPrefix)
	if err != nil {
		return nil, fmt.Errorf("listing backups: %w", err)
	}
	ids := make([]string, 0, len(names))
	for _, n := range names {
		ids = append(ids, strings.TrimPrefix(n, format.BackupPrefix))
	}
	return ids, nil
}

// Backups loads every manifest, oldest first. A manifest that cannot be
// read makes it fail, naming the backup.
func (r *Repository) Backups(ctx context.Context) ([]*format.Manifest, error) {
	ids, err := r.BackupIDs(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]*format.Manifest, len(ids))
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, id := range ids {
		g.Go(func() error {
			m, err := r.LoadManifest(gctx, id)
			if core.IsNotFound(err) {
				return nil // forgotten meanwhile
			}
			if err != nil {
				return err
			}
			mu.Lock()
			out[i] = m
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	out = slices.DeleteFunc(out, func(m *format.Manifest) bool { return m == nil })
	sortBackups(out)
	return out, nil
}

func sortBackups(ms []*format.Manifest) {
	sort.SliceStable(ms, func(i, j int) bool {
		if !ms[i].Time.Equal(ms[j].Time) {
			return ms[i].Time.Before(ms[j].Time)
		}
		return ms[i].ID < ms[j].ID
	})
}

// Filter selects backups.
type Filter struct {
	Tags   []string // every tag must be present
	Host   string
	Source string // one of the paths
	Kind   string
}

// Match reports whether m passes the filter.
func (f Filter) Match(m *format.Manifest) bool {
	if f.Host != "" && m.Host != f.Host {
		return false
	}
	if f.Kind != "" && m.Kind != f.Kind {
		return false
	}
	if f.Source != "" && !slices.Contains(m.Paths, f.Source) {
		return false
	}
	for _, t := range f.Tags {
		if !slices.Contains(m.Tags, t) {
			return false
		}
	}
	return true
}

// Resolve finds one backup from an id, a unique id prefix, or "latest" (the
// newest backup that passes f).
func Resolve(backups []*format.Manifest, spec string, f Filter) (*format.Manifest, error) {
	if spec == "" {
		return nil, core.Invalid("no backup given: give an id, a unique id prefix, or latest")
	}
	if spec == "latest" {
		for i := len(backups) - 1; i >= 0; i-- {
			if f.Match(backups[i]) {
				return backups[i], nil
			}
		}
		return nil, core.NotFound("no backup matches (latest)")
	}
	var found []*format.Manifest
	for _, m := range backups {
		if m.ID == spec {
			return m, nil
		}
		if strings.HasPrefix(m.ID, spec) {
			found = append(found, m)
		}
	}
	switch len(found) {
	case 0:
		return nil, core.NotFound("no backup %q in this repository", spec)
	case 1:
		return found[0], nil
	}
	return nil, core.Invalid("backup id prefix %q is ambiguous: %d backups match", spec, len(found))
}

// Forget removes the manifests of the given backups. Their data stays until
// prune.
func (r *Repository) Forget(ctx context.Context, ids []string) error {
	names := make([]string, len(ids))
	for i, id := range ids {
		names[i] = format.BackupPrefix + id
	}
	if err := r.removeAll(ctx, names); err != nil {
		return fmt.Errorf("forgetting backups: %w", err)
	}
	return nil
}
