// Package blob is the storage seam under the backup repository: a flat
// namespace of named, immutable-while-read byte objects ("blobs") on a local
// directory, an S3-compatible object store or in memory.
//
// # Contract (every Store implementation, checked by blob/blobtest)
//
//   - Names are slash-separated relative paths such as "data/ab/abcdef01":
//     see ValidName. A malformed name is refused with an error of kind
//     core.KindInvalid before any I/O. A name is never both an object and the
//     parent "directory" of another object (as in a file system).
//   - Save is create-or-replace and atomic: a concurrent or later Load, Stat or
//     List sees either the previous object (or none) or the complete new one,
//     never a partial object; a Save that fails or is cancelled leaves the
//     previous state (a backend may leave hidden temporary data that List
//     ignores and a cleanup removes). Save reads exactly size bytes from r: a
//     reader that ends early or has more bytes is an error and nothing is
//     stored. When Save returns nil the object is durable as far as the
//     backend can promise (local: fsynced file and directory; S3: the PUT
//     completed).
//   - Load returns the bytes [offset, offset+length) of the object; length 0
//     means "to the end". The range must lie inside the object (offset equal
//     to the size with length 0 gives an empty reader); otherwise Load fails
//     with an error for which errors.Is(err, ErrRange) holds. A reader that
//     cannot deliver all the promised bytes returns an error (never a silent
//     short read). The caller must Close the reader: an S3 store holds one of
//     its bounded connections until then.
//   - A missing object makes Load and Stat fail with an error for which
//     IsNotExist is true; Remove of a missing object succeeds (so retrying a
//     Remove is always safe).
//   - List calls fn for every object whose name starts with prefix (a plain
//     string prefix, "" for all), in no particular order, each once. Objects
//     saved or removed while List runs may or may not be reported. An error
//     from fn stops the listing and List returns it unchanged. Backends that
//     list eventually (some S3 stores) may not yet show a fresh object: callers
//     never rely on List right after Save or Remove (DelayedList simulates it).
//   - Every method honours ctx: a cancelled context makes it return an error
//     for which errors.Is(err, ctx.Err()) holds, and a cancelled Save stores
//     nothing.
//   - Every method may be called concurrently from many goroutines, on
//     different or equal names; concurrent Saves of one name leave one of the
//     versions whole.
//   - Backends never retry. They mark errors worth retrying (network errors,
//     HTTP 5xx, 429 / SlowDown) with Transient; the Retry wrapper retries those
//     and nothing else. Fault injection (Faulty) and eventual-consistency
//     simulation (DelayedList) are wrappers too.
//
// Stores are opened by blob/local, blob/s3 and blob/mem, or from a location
// string ("/path", "file:///path", "s3:https://host/bucket/prefix", "mem:")
// by blob/location, which knows every backend. That package is separate so
// that the backends can import this one.
package blob

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/cairn-backup/cairn/internal/core"
)

// ConsistentLister is implemented by stores whose List shows every object
// whose Save has returned and none whose Remove has returned (a local
// directory, memory), whatever the package contract allows in general.
type ConsistentLister interface {
	ListsConsistently() bool
}

// ListsConsistently reports whether s promises consistent listings (see
// ConsistentLister). Wrappers do not pass the promise on.
func ListsConsistently(s Store) bool {
	c, ok := s.(ConsistentLister)
	return ok && c.ListsConsistently()
}

// Opener is implemented by stores that can open an object once for many
// range reads (a local directory: an open file). The reader sees the
// object as it was when opened, even if it is replaced or removed later;
// callers that need the contract's view of a removed object use Load.
type Opener interface {
	Open(ctx context.Context, name string) (ObjectReader, error)
}

// ObjectReader reads one opened object; ReadAt returns an error for a
// range past its end (io.EOF with a short read). Close it when done.
type ObjectReader interface {
	io.ReaderAt
	io.Closer
	Size() int64
}

// Info describes one stored object.
type Info struct {
	Name string // as given to Save
	Size int64  // in bytes
}

// Store is a blob backend. See the package documentation for the contract
// that every implementation keeps.
type Store interface {
	// Save stores exactly size bytes read from r under name, atomically
	// creating or replacing the object. It does not close r.
	Save(ctx context.Context, name string, r io.Reader, size int64) error
	// Load opens the bytes [offset, offset+length) of name; length 0 reads to
	// the end. The caller closes the reader.
	Load(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error)
	// Stat reports name's size.
	Stat(ctx context.Context, name string) (Info, error)
	// Remove deletes name; a missing object is not an error.
	Remove(ctx context.Context, name string) error
	// List calls fn for each object whose name starts with prefix.
	List(ctx context.Context, prefix string, fn func(Info) error) error
	// Close releases the store's resources. No other call may follow it.
	Close() error
}

// ErrNotExist is in the chain of every error a Store returns for a missing
// object. Use IsNotExist.
var ErrNotExist = errors.New("does not exist")

// ErrRange is in the chain of the error Load returns for a range that does
// not lie inside the object.
var ErrRange = errors.New("range outside the object")

// IsNotExist reports whether err says that an object does not exist.
func IsNotExist(err error) bool { return errors.Is(err, ErrNotExist) }

// NotExist returns the error backends use for a missing object: kind
// core.KindNotFound, with ErrNotExist in its chain.
func NotExist(name string) error {
	return &core.Error{Kind: core.KindNotFound, Code: "not_found", Message: "blob " + name, Err: ErrNotExist}
}

// RangeError returns the error backends use for a Load range that does not
// lie inside the object; size < 0 means the size is unknown.
func RangeError(name string, offset, length, size int64) error {
	what := fmt.Sprintf("blob %s: bytes %d+%d", name, offset, length)
	if length == 0 {
		what = fmt.Sprintf("blob %s: bytes from %d to the end", name, offset)
	}
	if size >= 0 {
		what += fmt.Sprintf(" of %d", size)
	}
	return &core.Error{Kind: core.KindInvalid, Code: "invalid", Message: what, Err: ErrRange}
}

// CheckRange validates a Load range against a known object size: it returns
// nil or a RangeError.
func CheckRange(name string, offset, length, size int64) error {
	if offset < 0 || length < 0 || offset > size || (length > 0 && offset+length > size) {
		return RangeError(name, offset, length, size)
	}
	return nil
}

// transientError marks an error as worth retrying.
type transientError struct{ err error }

func (e *transientError) Error() string { return e.err.Error() }
func (e *transientError) Unwrap() error { return e.err }

// Transient marks err as transient: the same call may succeed if tried again
// (a network error, an HTTP 5xx, a rate limit). Backends use it; Retry honours
// it. Transient(nil) is nil.
func Transient(err error) error {
	if err == nil || IsTransient(err) {
		return err
	}
	return &transientError{err: err}
}

// IsTransient reports whether err, or an error in its chain, was marked by
// Transient. Cancellation (context.Canceled, context.DeadlineExceeded) is
// never transient.
func IsTransient(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var t *transientError
	return errors.As(err, &t)
}
