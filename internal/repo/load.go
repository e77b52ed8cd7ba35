package repo

import (
	"context"
	"fmt"

	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/repo/format"
)

// LoadBlob returns the plaintext of blob id of type t, checked: CRC32C of
// the stored bytes, authentication, decompression, and the id recomputed
// from the plaintext. A failed check is a core.KindCorrupt error naming the
// blob and its pack. It may reuse dst's storage. Safe for concurrent use.
func (r *Repository) LoadBlob(ctx context.Context, t format.BlobType, id format.ID, dst []byte) ([]byte, error) {
	loc, ok := r.lookup(id)
	if !ok {
		return nil, core.Corrupt("%s blob %s is not in the index (missing from the repository)", t, id.Short())
	}
	if loc.Type != t {
		return nil, core.Corrupt("blob %s is a %s blob, wanted %s", id.Short(), loc.Type, t)
	}
	stored, err := loadRange(ctx, r.store, format.PackName(loc.Pack), int64(loc.Offset), int64(loc.Length))
	if err != nil {
		return nil, fmt.Errorf("%s blob %s in pack %s: %w", t, id.Short(), loc.Pack.Short(), err)
	}
	return r.openBlob(loc, stored, dst)
}

// openBlob checks and decodes the stored bytes of a blob at loc.
func (r *Repository) openBlob(loc Location, stored, dst []byte) ([]byte, error) {
	where := func() string { return fmt.Sprintf("%s blob %s in pack %s", loc.Type, loc.ID.Short(), loc.Pack.Short()) }
	if format.CRC32C(stored) != loc.CRC {
		return nil, core.Corrupt("%s: CRC32C mismatch (the stored bytes are damaged)", where())
	}
	var buf []byte
	if loc.Flags&format.FlagZstd != 0 {
		buf = make([]byte, 0, len(stored))
	} else {
		buf = dst
		if cap(buf) < len(stored) {
			buf = make([]byte, 0, len(stored))
		}
	}
	payload, err := r.key.OpenTo(buf, stored, format.BlobAD(loc.Type, loc.ID))
	if err != nil {
		return nil, core.Corrupt("%s: fails authentication", where())
	}
	if dst == nil || cap(dst) < int(loc.RawLength) {
		dst = make([]byte, 0, loc.RawLength)
	}
	plain, err := decompress(payload, loc.Flags&format.FlagZstd != 0, int(loc.RawLength), dst)
	if err != nil {
		return nil, core.Corrupt("%s: %v", where(), err)
	}
	if len(plain) != int(loc.RawLength) {
		return nil, core.Corrupt("%s: %d bytes, the index says %d", where(), len(plain), loc.RawLength)
	}
	if format.ID(r.key.ChunkID(plain)) != loc.ID {
		return nil, core.Corrupt("%s: content does not match its id", where())
	}
	return plain, nil
}
