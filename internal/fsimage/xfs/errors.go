package xfs

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/cairn-backup/cairn/internal/core"
)

// ErrUnsupported is wrapped by every error about a valid XFS feature this
// reader does not implement (see the package documentation). Test with
// errors.Is; the message names the feature and the kind is core.KindInvalid.
var ErrUnsupported = errors.New("not supported by cairn's XFS reader")

// Errors are built without a prefix deep down, gain context with
// withContext on the way up ("inode 131: bmap B+tree block 25: ...") and
// the "xfs" prefix, with the path, at the API.

func corruptf(format string, args ...any) *core.Error {
	return core.Corrupt(format, args...)
}

func invalidf(format string, args ...any) *core.Error {
	return core.Invalid(format, args...)
}

func unsupportedf(format string, args ...any) *core.Error {
	return &core.Error{Kind: core.KindInvalid, Code: "unsupported",
		Message: fmt.Sprintf(format, args...), Err: ErrUnsupported}
}

// withContext prepends context to err's message and keeps its kind, code
// and cause. An error that is not a *core.Error (an I/O error of the
// ReaderAt) becomes the cause of a KindCorrupt one.
func withContext(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	ctx := fmt.Sprintf(format, args...)
	var ce *core.Error
	if errors.As(err, &ce) && ce == err {
		msg := ctx
		if ce.Message != "" {
			msg += ": " + ce.Message
		}
		return &core.Error{Kind: ce.Kind, Code: ce.Code, Message: msg, Err: ce.Err}
	}
	return &core.Error{Kind: core.KindCorrupt, Code: "corrupt", Message: ctx, Err: err}
}

func inodeErr(ino uint64, err error) error { return withContext(err, "inode %d", ino) }

// notFound wraps fs.ErrNotExist so that callers may test either way.
func notFound(path string) *core.Error {
	return &core.Error{Kind: core.KindNotFound, Code: "not_found",
		Message: "xfs " + path, Err: fs.ErrNotExist}
}

// wrongType reports a path of the wrong file type for the call (a file
// given to ReadDir, a directory given to Open ...).
func wrongType(path, want string, mode fs.FileMode) *core.Error {
	return &core.Error{Kind: core.KindInvalid, Code: "wrong_type",
		Message: fmt.Sprintf("xfs %s: not %s (%s)", path, want, core.DescribeMode(mode)), Err: fs.ErrInvalid}
}
