package repo

import (
	"context"
	"fmt"
	"sync"

	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/repo/format"
)

// LoadBlob returns the plaintext of blob id of type t, checked: CRC32C of
// the stored bytes, authentication, decompression, and the id recomputed
// from the plaintext. A failed check is a core.KindCorrupt error naming the
// blob and its pack. It may reuse dst's storage. Safe for concurrent use.
func (r *Repository) LoadBlob(ctx context.Context, t format.BlobType, id format.ID, dst []byte) ([]byte, error) {
	loc, err := r.locate(t, id)
	if err != nil {
		return nil, err
	}
	stored, err := loadRange(ctx, r.store, format.PackName(loc.Pack), int64(loc.Offset), int64(loc.Length))
	if err != nil {
		return nil, fmt.Errorf("%s blob %s in pack %s: %w", t, id.Short(), loc.Pack.Short(), err)
	}
	return r.openBlob(loc, stored, &blobBuffers{plain: dst})
}

// locate finds blob id of type t in the index; a blob missing from it or
// of another type is a core.KindCorrupt error.
func (r *Repository) locate(t format.BlobType, id format.ID) (Location, error) {
	loc, ok := r.lookup(id)
	if !ok {
		return Location{}, core.Corrupt("%s blob %s is not in the index (missing from the repository)", t, id.Short())
	}
	if loc.Type != t {
		return Location{}, core.Corrupt("blob %s is a %s blob, wanted %s", id.Short(), loc.Type, t)
	}
	return loc, nil
}

// openKept returns the plaintext of the stored bytes of the data blob at
// loc in a buffer of its own (the caller keeps it; stored is left as it
// is). It checks the CRC32C (on failure), the authentication and the
// decompression, but does not recompute the plaintext's id: the
// authentication already binds the bytes to the id (it is in the
// associated data), so only a writer that sealed wrong bytes under an id
// would go unseen, which restore and verify, which recompute it, report.
func (r *Repository) openKept(loc Location, stored []byte) ([]byte, error) {
	// A compressed blob is decrypted into a pooled scratch buffer and
	// decompressed into a new one; a stored one is decrypted straight into
	// a new buffer, which is its plaintext.
	if loc.Flags&format.FlagZstd == 0 {
		return r.openBlobCheck(loc, stored, nil, false)
	}
	scratch := scratchBuffers.Get().(*[]byte)
	defer scratchBuffers.Put(scratch)
	bufs := blobBuffers{scratch: *scratch, plain: make([]byte, 0, int(loc.RawLength)+zstdSlack)}
	plain, err := r.openBlobCheck(loc, stored, &bufs, false)
	*scratch = bufs.scratch[:0]
	return plain, err
}

var scratchBuffers = sync.Pool{New: func() any { return new([]byte) }}

// blobBuffers are reusable buffers for openBlob: the decrypted payload goes
// to scratch, a decompressed plaintext to plain. The plaintext openBlob
// returns lives in one of them until the next call.
type blobBuffers struct {
	scratch, plain []byte
}

// zstdSlack is room past the plaintext that lets the zstd decoder use its
// fast copy loops (it over-writes by up to 16 bytes).
const zstdSlack = 64

// openBlob checks and decodes the stored bytes of a blob at loc, leaving
// stored as it is: authentication, decompression, and the plaintext against
// its id. bufs may be nil.
func (r *Repository) openBlob(loc Location, stored []byte, bufs *blobBuffers) ([]byte, error) {
	return r.openBlobCheck(loc, stored, bufs, true)
}

// openBlobCheck is openBlob, recomputing the plaintext's id only when
// checkID is set.
func (r *Repository) openBlobCheck(loc Location, stored []byte, bufs *blobBuffers, checkID bool) ([]byte, error) {
	if bufs == nil {
		bufs = &blobBuffers{}
	}
	where := func() string { return fmt.Sprintf("%s blob %s in pack %s", loc.Type, loc.ID.Short(), loc.Pack.Short()) }
	if cap(bufs.scratch) < len(stored) {
		bufs.scratch = make([]byte, 0, len(stored))
	}
	payload, err := r.key.OpenTo(bufs.scratch, stored, format.BlobAD(loc.Type, loc.ID))
	if err != nil {
		// Damaged bytes always fail authentication; the CRC, computed
		// only then, tells damage from a foreign or forged blob.
		if format.CRC32C(stored) != loc.CRC {
			return nil, core.Corrupt("%s: CRC32C mismatch (the stored bytes are damaged)", where())
		}
		return nil, core.Corrupt("%s: fails authentication", where())
	}
	zstd := loc.Flags&format.FlagZstd != 0
	if zstd && cap(bufs.plain) < int(loc.RawLength)+zstdSlack {
		bufs.plain = make([]byte, 0, int(loc.RawLength)+zstdSlack)
	}
	plain, err := decompress(payload, zstd, int(loc.RawLength), bufs.plain)
	if err != nil {
		return nil, core.Corrupt("%s: %v", where(), err)
	}
	if len(plain) != int(loc.RawLength) {
		return nil, core.Corrupt("%s: %d bytes, the index says %d", where(), len(plain), loc.RawLength)
	}
	if checkID && format.ID(r.key.ChunkID(plain)) != loc.ID {
		return nil, core.Corrupt("%s: content does not match its id", where())
	}
	return plain, nil
}
