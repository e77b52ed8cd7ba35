package filebackup

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/repo/format"
)

// TreeVersion is the tree format version this package writes and the newest
// one it reads.
const TreeVersion = 1

// NodeType is the kind of a file system entry.
type NodeType string

// The node types of tree format version 1. Sockets are never stored; hard
// links are files (see Node.Links).
const (
	TypeFile     NodeType = "file"
	TypeDir      NodeType = "dir"
	TypeSymlink  NodeType = "symlink"
	TypeCharDev  NodeType = "chardev"
	TypeBlockDev NodeType = "blockdev"
	TypeFIFO     NodeType = "fifo"
)

// Valid reports whether t is a known node type.
func (t NodeType) Valid() bool {
	switch t {
	case TypeFile, TypeDir, TypeSymlink, TypeCharDev, TypeBlockDev, TypeFIFO:
		return true
	}
	return false
}

// Xattr is one extended attribute of a node.
type Xattr struct {
	Name  string // arbitrary bytes but NUL, non-empty
	Value []byte
}

// Node is one entry of a directory. Strings hold raw bytes: Name and
// LinkTarget need not be valid UTF-8.
type Node struct {
	Name       string
	Type       NodeType
	Mode       uint32 // permission bits with setuid, setgid and sticky (mask 07777)
	UID, GID   uint32
	User       string // owner's name when known (valid UTF-8), else ""
	Group      string // group's name when known (valid UTF-8), else ""
	Size       uint64 // files only: the content's length
	ModTime    time.Time
	ChangeTime time.Time
	Inode      uint64
	Device     uint64
	Links      uint64
	Xattrs     []Xattr     // sorted by name
	LinkTarget string      // symlinks only
	Rdev       uint64      // character and block devices only
	Content    []format.ID // files only: the data blobs, in order
	Subtree    format.ID   // directories only: the tree blob of the directory
}

// Tree is one directory listing: the content of a tree blob.
type Tree struct {
	Nodes []*Node // sorted by name bytes, names unique
}

// Sort orders the nodes by name bytes, as EncodeTree requires.
func (t *Tree) Sort() {
	slices.SortFunc(t.Nodes, func(a, b *Node) int { return strings.Compare(a.Name, b.Name) })
}

// Find returns the node named name, or nil. The tree must be sorted.
func (t *Tree) Find(name string) *Node {
	lo, hi := 0, len(t.Nodes)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if t.Nodes[m].Name < name {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < len(t.Nodes) && t.Nodes[lo].Name == name {
		return t.Nodes[lo]
	}
	return nil
}

// timeLayout is RFC 3339 in UTC with exactly nine fractional digits.
const timeLayout = "2006-01-02T15:04:05.000000000Z"

var (
	minTime = time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC)
	maxTime = time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)
)

// clampTime brings t into the years 0000 to 9999 that the tree format can
// hold.
func clampTime(t time.Time) time.Time {
	switch {
	case t.Before(minTime):
		return minTime
	case t.After(maxTime):
		return maxTime
	}
	return t.UTC()
}

// CheckName reports whether name may be the name of a node: not empty, not
// "." nor "..", and without '/' or NUL. It is what keeps a restore inside its
// target: a name is always exactly one path component.
func CheckName(name string) error {
	switch {
	case name == "":
		return core.Corrupt("tree: empty name")
	case name == "." || name == "..":
		return core.Corrupt("tree: invalid name %q", name)
	case strings.IndexByte(name, '/') >= 0:
		return core.Corrupt("tree: name %q contains '/'", name)
	case strings.IndexByte(name, 0) >= 0:
		return core.Corrupt("tree: name %q contains a NUL byte", name)
	}
	return nil
}

// validateNode checks one node on its own.
func validateNode(n *Node) error {
	if n == nil {
		return core.Corrupt("tree: null node")
	}
	if err := CheckName(n.Name); err != nil {
		return err
	}
	bad := func(format string, args ...any) error {
		return core.Corrupt("tree: node %q: %s", n.Name, fmt.Sprintf(format, args...))
	}
	if !n.Type.Valid() {
		return bad("unknown type %q", string(n.Type))
	}
	if n.Mode&^07777 != 0 {
		return bad("mode %#o has bits outside 07777", n.Mode)
	}
	if !utf8.ValidString(n.User) || !utf8.ValidString(n.Group) {
		return bad("user or group name is not valid UTF-8")
	}
	for _, t := range []time.Time{n.ModTime, n.ChangeTime} {
		if t.Before(minTime) || t.After(maxTime) {
			return bad("time %v outside the years 0000 to 9999", t)
		}
	}
	for i, x := range n.Xattrs {
		if x.Name == "" || strings.IndexByte(x.Name, 0) >= 0 {
			return bad("invalid extended attribute name %q", x.Name)
		}
		if i > 0 && n.Xattrs[i-1].Name >= x.Name {
			return bad("extended attributes not sorted or duplicated at %q", x.Name)
		}
	}
	if n.Type != TypeFile && (n.Size != 0 || n.Content != nil) {
		return bad("a %s has no size or content", n.Type)
	}
	if n.Type != TypeDir && !n.Subtree.IsZero() {
		return bad("a %s has no subtree", n.Type)
	}
	if n.Type != TypeSymlink && n.LinkTarget != "" {
		return bad("a %s has no link target", n.Type)
	}
	if n.Type != TypeCharDev && n.Type != TypeBlockDev && n.Rdev != 0 {
		return bad("a %s has no device number", n.Type)
	}
	switch n.Type {
	case TypeFile:
		if n.Size > math.MaxInt64 {
			return bad("size %d too large", n.Size)
		}
		if (n.Size == 0) != (len(n.Content) == 0) || n.Size < uint64(len(n.Content)) {
			return bad("size %d does not fit %d content chunks", n.Size, len(n.Content))
		}
		for _, id := range n.Content {
			if id.IsZero() {
				return bad("zero content id")
			}
		}
	case TypeDir:
		if n.Subtree.IsZero() {
			return bad("directory without subtree")
		}
	case TypeSymlink:
		if n.LinkTarget == "" || strings.IndexByte(n.LinkTarget, 0) >= 0 {
			return bad("invalid symlink target %q", n.LinkTarget)
		}
	}
	return nil
}

// validate checks every node and the order of the names.
func (t *Tree) validate() error {
	for i, n := range t.Nodes {
		if err := validateNode(n); err != nil {
			return err
		}
		if i > 0 {
			prev := t.Nodes[i-1].Name
			switch {
			case prev == n.Name:
				return core.Corrupt("tree: duplicate name %q", n.Name)
			case prev > n.Name:
				return core.Corrupt("tree: names not sorted: %q before %q", prev, n.Name)
			}
		}
	}
	return nil
}

// EncodeTree returns the canonical encoding of t (see the package
// documentation). The nodes must be valid and sorted by name (Tree.Sort);
// otherwise it returns a core.KindCorrupt error naming the problem.
func EncodeTree(t *Tree) ([]byte, error) {
	if err := t.validate(); err != nil {
		return nil, err
	}
	b := make([]byte, 0, 32+300*len(t.Nodes))
	b = append(b, `{"version":`...)
	b = strconv.AppendInt(b, TreeVersion, 10)
	b = append(b, `,"nodes":[`...)
	for i, n := range t.Nodes {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendNode(b, n)
	}
	b = append(b, "]}"...)
	return b, nil
}

func appendNode(b []byte, n *Node) []byte {
	b = append(b, '{')
	b = appendBytesField(b, "name", n.Name)
	b = appendKey(b, "type")
	b = appendString(b, string(n.Type))
	b = appendUintField(b, "mode", uint64(n.Mode))
	b = appendUintField(b, "uid", uint64(n.UID))
	b = appendUintField(b, "gid", uint64(n.GID))
	if n.User != "" {
		b = appendKey(b, "user")
		b = appendString(b, n.User)
	}
	if n.Group != "" {
		b = appendKey(b, "group")
		b = appendString(b, n.Group)
	}
	if n.Type == TypeFile {
		b = appendUintField(b, "size", n.Size)
	}
	b = appendKey(b, "mtime")
	b = appendTime(b, n.ModTime)
	b = appendKey(b, "ctime")
	b = appendTime(b, n.ChangeTime)
	b = appendUintField(b, "inode", n.Inode)
	b = appendUintField(b, "device", n.Device)
	b = appendUintField(b, "links", n.Links)
	if len(n.Xattrs) > 0 {
		b = appendKey(b, "xattrs")
		b = append(b, '[')
		for i, x := range n.Xattrs {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, '{')
			b = appendBytesField(b, "name", x.Name)
			b = appendKey(b, "value")
			b = appendBase64(b, x.Value)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	if n.Type == TypeSymlink {
		b = append(b, ',')
		b = appendBytesField(b, "target", n.LinkTarget)
	}
	if n.Type == TypeCharDev || n.Type == TypeBlockDev {
		b = appendUintField(b, "rdev", n.Rdev)
	}
	if n.Type == TypeFile {
		b = appendKey(b, "content")
		b = append(b, '[')
		for i, id := range n.Content {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendID(b, id)
		}
		b = append(b, ']')
	}
	if n.Type == TypeDir {
		b = appendKey(b, "subtree")
		b = appendID(b, n.Subtree)
	}
	return append(b, '}')
}

// appendKey appends ,"key": (every key but a node's first).
func appendKey(b []byte, key string) []byte {
	b = append(b, ',', '"')
	b = append(b, key...)
	return append(b, '"', ':')
}

func appendUintField(b []byte, key string, v uint64) []byte {
	return strconv.AppendUint(appendKey(b, key), v, 10)
}

// appendBytesField appends "key":"s" when s is valid UTF-8, else
// "key_raw":"<base64 of s>", without a leading comma.
func appendBytesField(b []byte, key, s string) []byte {
	b = append(b, '"')
	b = append(b, key...)
	if utf8.ValidString(s) {
		b = append(b, '"', ':')
		return appendString(b, s)
	}
	b = append(b, `_raw":`...)
	return appendBase64(b, []byte(s))
}

// appendString appends s (valid UTF-8) as a JSON string: '"' and '\' are
// escaped with a backslash, bytes below 0x20 as \u00xx (lower-case hex),
// everything else is copied.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

func appendBase64(b []byte, v []byte) []byte {
	b = append(b, '"')
	b = base64.StdEncoding.AppendEncode(b, v)
	return append(b, '"')
}

func appendTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, timeLayout)
	return append(b, '"')
}

func appendID(b []byte, id format.ID) []byte {
	t, _ := id.MarshalText()
	b = append(b, '"')
	b = append(b, t...)
	return append(b, '"')
}

// The decoding side: encoding/json fills these, then the result is checked
// and re-encoded; only the canonical encoding is accepted.
type jsonTree struct {
	Version int         `json:"version"`
	Nodes   []*jsonNode `json:"nodes"`
}

type jsonXattr struct {
	Name    *string `json:"name"`
	NameRaw *[]byte `json:"name_raw"`
	Value   []byte  `json:"value"`
}

type jsonNode struct {
	Name      *string     `json:"name"`
	NameRaw   *[]byte     `json:"name_raw"`
	Type      string      `json:"type"`
	Mode      uint32      `json:"mode"`
	UID       uint32      `json:"uid"`
	GID       uint32      `json:"gid"`
	User      string      `json:"user"`
	Group     string      `json:"group"`
	Size      uint64      `json:"size"`
	MTime     string      `json:"mtime"`
	CTime     string      `json:"ctime"`
	Inode     uint64      `json:"inode"`
	Device    uint64      `json:"device"`
	Links     uint64      `json:"links"`
	Xattrs    []jsonXattr `json:"xattrs"`
	Target    *string     `json:"target"`
	TargetRaw *[]byte     `json:"target_raw"`
	Rdev      uint64      `json:"rdev"`
	Content   []format.ID `json:"content"`
	Subtree   *format.ID  `json:"subtree"`
}

// pickBytes returns the value of a "key"/"key_raw" pair: exactly one must be
// present.
func pickBytes(what string, s *string, raw *[]byte) (string, error) {
	switch {
	case s != nil && raw != nil:
		return "", core.Corrupt("tree: both %s and %s_raw", what, what)
	case s != nil:
		return *s, nil
	case raw != nil:
		return string(*raw), nil
	}
	return "", core.Corrupt("tree: %s missing", what)
}

func parseTime(what, s string) (time.Time, error) {
	t, err := time.Parse(timeLayout, s)
	if err != nil {
		return time.Time{}, core.Corrupt("tree: invalid %s %q: want RFC 3339 UTC with 9 fractional digits", what, s)
	}
	return t, nil
}

// newerTreeVersion is the error for a tree written by a newer cairn.
func newerTreeVersion(v int64) error {
	return core.E(core.KindInternal, "format_version",
		"tree format version %d is newer than this cairn supports: upgrade cairn", v)
}

// DecodeTree parses and validates a tree blob. Anything but the canonical
// encoding of a valid tree is a core.KindCorrupt error; a newer format
// version is refused with a message telling to upgrade cairn (code
// "format_version"). It never panics, whatever the input.
func DecodeTree(b []byte) (*Tree, error) {
	// The version first, alone, so that a newer format whose other fields
	// changed shape still gets the "upgrade cairn" message.
	var head struct {
		Version *int64 `json:"version"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return nil, core.Corrupt("tree: not a JSON object: %v", err)
	}
	switch {
	case head.Version == nil:
		return nil, core.Corrupt("tree: no format version")
	case *head.Version > TreeVersion:
		return nil, newerTreeVersion(*head.Version)
	case *head.Version < 1:
		return nil, core.Corrupt("tree: invalid format version %d", *head.Version)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var jt jsonTree
	if err := dec.Decode(&jt); err != nil {
		return nil, core.Corrupt("tree: %v", err)
	}
	t := &Tree{Nodes: make([]*Node, 0, len(jt.Nodes))}
	for i, jn := range jt.Nodes {
		if jn == nil {
			return nil, core.Corrupt("tree: node %d is null", i)
		}
		n, err := jn.node()
		if err != nil {
			return nil, err
		}
		t.Nodes = append(t.Nodes, n)
	}
	canon, err := EncodeTree(t)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(canon, b) {
		return nil, core.Corrupt("tree: not in canonical encoding")
	}
	return t, nil
}

func (jn *jsonNode) node() (*Node, error) {
	name, err := pickBytes("name", jn.Name, jn.NameRaw)
	if err != nil {
		return nil, err
	}
	if err := CheckName(name); err != nil {
		return nil, err
	}
	n := &Node{
		Name: name, Type: NodeType(jn.Type), Mode: jn.Mode, UID: jn.UID, GID: jn.GID,
		User: jn.User, Group: jn.Group, Size: jn.Size,
		Inode: jn.Inode, Device: jn.Device, Links: jn.Links, Rdev: jn.Rdev, Content: jn.Content,
	}
	if n.ModTime, err = parseTime("mtime", jn.MTime); err != nil {
		return nil, err
	}
	if n.ChangeTime, err = parseTime("ctime", jn.CTime); err != nil {
		return nil, err
	}
	if n.Type == TypeFile && n.Content == nil {
		n.Content = []format.ID{}
	}
	if jn.Target != nil || jn.TargetRaw != nil {
		if n.LinkTarget, err = pickBytes("target", jn.Target, jn.TargetRaw); err != nil {
			return nil, err
		}
	}
	if jn.Subtree != nil {
		n.Subtree = *jn.Subtree
	}
	for _, jx := range jn.Xattrs {
		xn, err := pickBytes("xattr name", jx.Name, jx.NameRaw)
		if err != nil {
			return nil, err
		}
		n.Xattrs = append(n.Xattrs, Xattr{Name: xn, Value: jx.Value})
	}
	if err := validateNode(n); err != nil {
		return nil, err
	}
	return n, nil
}
