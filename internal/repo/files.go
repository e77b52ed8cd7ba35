package repo

import (
	"context"
	"path/filepath"
	"slices"
	"time"

	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/filebackup"
	"github.com/cairn-backup/cairn/internal/repo/format"
)

// FilesResult is a file backup's manifest and the walk's counts.
type FilesResult struct {
	Manifest *format.Manifest
	Stats    filebackup.Stats
}

// BackupFiles stores files and directories as a new backup. With a parent
// (info.Parent, a file backup), files unchanged since it are not read. The
// caller holds a shared lock.
func (r *Repository) BackupFiles(ctx context.Context, paths []string, info BackupInfo, opts filebackup.BackupOptions) (*FilesResult, error) {
	start := time.Now().UTC()
	if len(paths) == 0 {
		return nil, core.Invalid("nothing to back up: give one or more paths")
	}
	abs := make([]string, len(paths))
	for i, p := range paths {
		a, err := filepath.Abs(p)
		if err != nil {
			return nil, core.Invalid("path %q: %v", p, err)
		}
		abs[i] = a
	}
	if info.Parent != "" {
		pm, err := r.LoadManifest(ctx, info.Parent)
		if err != nil {
			return nil, err
		}
		if pm.Kind != format.KindFiles {
			return nil, core.Invalid("parent %s is an image backup", pm.ID)
		}
		opts.Parent = *pm.Tree
	}
	blobs0, bytes0 := r.WriteStats()
	root, st, err := filebackup.Backup(ctx, r, abs, opts)
	if err != nil {
		return nil, err
	}
	m := &format.Manifest{
		ID: core.NewID(), Kind: format.KindFiles, Time: info.Time, Host: info.Host,
		Paths: abs, Tags: info.Tags, Parent: info.Parent, Tree: &root,
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
	m.Summary = format.Summary{Start: start, End: time.Now().UTC(), Files: st.Files, Dirs: st.Dirs,
		Bytes: st.Bytes, BytesRead: st.BytesRead, BlobsNew: blobs1 - blobs0, BytesAdded: bytes1 - bytes0, Errors: st.Errors}
	if err := r.SaveManifest(ctx, m); err != nil {
		return nil, err
	}
	return &FilesResult{Manifest: m, Stats: st}, nil
}

// FindParent returns the newest backup of the same kind, host and paths,
// or nil.
func FindParent(backups []*format.Manifest, kind, host string, paths []string) *format.Manifest {
	want := slices.Clone(paths)
	slices.Sort(want)
	for i := len(backups) - 1; i >= 0; i-- {
		m := backups[i]
		got := slices.Clone(m.Paths)
		slices.Sort(got)
		if m.Kind == kind && m.Host == host && slices.Equal(got, want) {
			return m
		}
	}
	return nil
}

// RestoreFiles restores a file backup into target.
func (r *Repository) RestoreFiles(ctx context.Context, m *format.Manifest, target string, opts filebackup.RestoreOptions) (filebackup.Stats, error) {
	if m.Kind != format.KindFiles {
		return filebackup.Stats{}, core.Invalid("backup %s is an image backup: restore it with --to-file", m.ID)
	}
	return filebackup.Restore(ctx, r, *m.Tree, target, opts)
}
