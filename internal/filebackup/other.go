//go:build !linux

package filebackup

import (
	"context"

	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/repo/format"
)

// Backup needs Linux.
func Backup(ctx context.Context, repo Repository, paths []string, opts BackupOptions) (format.ID, Stats, error) {
	return format.ID{}, Stats{}, core.E(core.KindInvalid, "unsupported", "file backups need Linux")
}

// Restore needs Linux.
func Restore(ctx context.Context, repo Repository, root format.ID, target string, opts RestoreOptions) (Stats, error) {
	return Stats{}, core.E(core.KindInvalid, "unsupported", "file restores need Linux")
}
