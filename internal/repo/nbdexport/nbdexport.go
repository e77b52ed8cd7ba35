// Package nbdexport serves an image backup over NBD: the repository's image
// reader as an export of cairn's NBD server, read-only, reading only what
// clients ask.
package nbdexport

import (
	"github.com/cairn-backup/cairn/internal/nbd"
	"github.com/cairn-backup/cairn/internal/repo"
)

type export struct {
	ir   *repo.ImageReader
	desc string
}

// New returns ir as an NBD export described by desc.
func New(ir *repo.ImageReader, desc string) nbd.Export { return &export{ir: ir, desc: desc} }

func (e *export) Size() int64                             { return e.ir.Size() }
func (e *export) ReadAt(p []byte, off int64) (int, error) { return e.ir.ReadAt(p, off) }
func (e *export) Description() string                     { return e.desc }

// Extents reports all-zero chunks (never stored) as holes.
func (e *export) Extents(off, length int64) ([]nbd.Extent, error) {
	exts, err := e.ir.Extents(off, length)
	out := make([]nbd.Extent, len(exts))
	for i, x := range exts {
		out[i] = nbd.Extent{Length: x.Length, Hole: x.Zero, Zero: x.Zero}
	}
	return out, err
}
