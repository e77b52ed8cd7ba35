//go:build !linux

package mount

import (
	"time"

	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/fsimage"
)

// mknod needs Linux.
func (c *copier) mknod(tmp string, fi fsimage.FileInfo) error {
	return fsimage.Unsupported("copy out", "creating %s needs Linux", core.DescribeMode(fi.Mode))
}

// symlinkTime needs Linux; links keep the time they were made.
func (c *copier) symlinkTime(tmp string, t time.Time) error { return nil }
