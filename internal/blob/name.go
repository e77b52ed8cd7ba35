package blob

import (
	"strings"

	"github.com/cairn-backup/cairn/internal/core"
)

// Limits on names. S3 keys have at most 1,024 bytes and an S3 store puts its
// own prefix in front of every name, so names stop at 900; 255 is the usual
// file-name limit of local file systems.
const (
	MaxNameLen    = 900
	MaxSegmentLen = 255
)

// ValidName checks a blob name: one or more segments joined by "/", each
// segment 1 to 255 bytes of ASCII letters, digits, '_', '-' and '.', not
// starting with '.' (so "." and ".." are impossible, and backends may keep
// hidden temporary files beside the objects), at most MaxNameLen bytes in all.
// The error has kind core.KindInvalid and says what is wrong.
func ValidName(name string) error {
	if name == "" {
		return core.Invalid("invalid blob name: empty")
	}
	return checkSegments(name, name, false)
}

// ValidPrefix checks a List prefix: "" (everything), a valid name, a valid
// name followed by "/", or a valid name whose last segment is cut short
// ("data/a" matches "data/ab/..." and "data/a1").
func ValidPrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	return checkSegments(prefix, strings.TrimSuffix(prefix, "/"), true)
}

func checkSegments(whole, name string, prefix bool) error {
	what := "blob name"
	if prefix {
		what = "blob prefix"
	}
	if len(whole) > MaxNameLen {
		return core.Invalid("invalid %s %.40q...: longer than %d bytes", what, whole, MaxNameLen)
	}
	if name == "" {
		return core.Invalid("invalid %s %q: empty segment", what, whole)
	}
	for seg := range strings.SplitSeq(name, "/") {
		switch {
		case seg == "":
			return core.Invalid("invalid %s %q: empty segment (leading, trailing or doubled '/')", what, whole)
		case seg[0] == '.':
			return core.Invalid("invalid %s %q: segment %q starts with '.'", what, whole, seg)
		case len(seg) > MaxSegmentLen:
			return core.Invalid("invalid %s %q: segment longer than %d bytes", what, whole, MaxSegmentLen)
		}
		for i := 0; i < len(seg); i++ {
			if !nameByte(seg[i]) {
				return core.Invalid("invalid %s %q: byte %q not allowed (letters, digits, '_', '-', '.' only)", what, whole, seg[i])
			}
		}
	}
	return nil
}

func nameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.'
}
