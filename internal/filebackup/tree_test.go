//go:build linux

package filebackup

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/repo/format"
)

func testID(b byte) format.ID {
	var id format.ID
	for i := range id {
		id[i] = b + byte(i)
	}
	return id
}

// sampleTree holds every node type and every optional field.
func sampleTree() *Tree {
	tm := time.Date(2024, 2, 29, 23, 59, 58, 987654321, time.UTC)
	base := func(name string, typ NodeType) *Node {
		return &Node{Name: name, Type: typ, Mode: 0o644, UID: 1000, GID: 100, User: "alice", Group: "users",
			ModTime: tm, ChangeTime: tm.Add(time.Second), Inode: 42, Device: 2049, Links: 1}
	}
	file := base("file.txt", TypeFile)
	file.Size, file.Content = 3<<20, []format.ID{testID(1), testID(2)}
	file.Xattrs = []Xattr{{Name: "user.a", Value: []byte{0, 1, 2}}, {Name: "user.b\xff", Value: []byte{}}}
	empty := base("empty", TypeFile)
	empty.Content = []format.ID{}
	dir := base("dir", TypeDir)
	dir.Mode, dir.Subtree = 0o1777, testID(3)
	link := base("link\xfe", TypeSymlink)
	link.LinkTarget, link.User, link.Group = "../target\xff", "", ""
	dev := base("null", TypeCharDev)
	dev.Rdev = 0x103
	blk := base("sda", TypeBlockDev)
	blk.Rdev = 0x800
	fifo := base("quote\"back\\slash\n\x01é", TypeFIFO)
	fifo.Mode = 0o4755
	t := &Tree{Nodes: []*Node{file, empty, dir, link, dev, blk, fifo}}
	t.Sort()
	return t
}

// TestTreeRoundTrip: EncodeTree then DecodeTree gives the same tree, and
// encoding is canonical (the same bytes again).
func TestTreeRoundTrip(t *testing.T) {
	tr := sampleTree()
	b, err := EncodeTree(tr)
	must(t, err)
	got, err := DecodeTree(b)
	must(t, err)
	if !reflect.DeepEqual(got, tr) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got.Nodes, tr.Nodes)
	}
	b2, err := EncodeTree(got)
	must(t, err)
	if !bytes.Equal(b, b2) {
		t.Errorf("re-encoding differs")
	}
	for _, want := range []string{`"version":1`, `"name_raw":"bGlua/4="`, `"target_raw":`, `"mtime":"2024-02-29T23:59:58.987654321Z"`,
		`"name":"quote\"back\\slash\u000a\u0001é"`, `"xattrs":[{"name":"user.a","value":"AAEC"},{"name_raw":"dXNlci5i/w==","value":""}]`} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("encoding lacks %s:\n%s", want, b)
		}
	}
	empty, err := EncodeTree(&Tree{})
	must(t, err)
	if string(empty) != `{"version":1,"nodes":[]}` {
		t.Errorf("empty tree: %s", empty)
	}
}

// TestDecodeTreeRejects: bad names, duplicates, disorder, unknown types,
// inconsistent fields and any non-canonical encoding are Corrupt errors; a
// newer version asks for an upgrade.
func TestDecodeTreeRejects(t *testing.T) {
	valid, err := EncodeTree(sampleTree())
	must(t, err)
	file := func(name string) *Node {
		return &Node{Name: name, Type: TypeFile, Mode: 0o644, ModTime: testTime, ChangeTime: testTime, Content: []format.ID{}}
	}
	withNodes := func(nodes ...*Node) string { return string(encodeUnchecked(nodes...)) }
	replace := func(old, new string) string {
		if !bytes.Contains(valid, []byte(old)) {
			t.Fatalf("%s not in the sample", old)
		}
		return strings.Replace(string(valid), old, new, 1)
	}
	dirNoSub := &Node{Name: "d", Type: TypeDir, ModTime: testTime, ChangeTime: testTime}
	sizeNoContent := file("f")
	sizeNoContent.Size = 10
	emptyLink := &Node{Name: "l", Type: TypeSymlink, ModTime: testTime, ChangeTime: testTime}
	badMode := file("f")
	badMode.Mode = 0o100644
	zeroID := file("f")
	zeroID.Size, zeroID.Content = 1, []format.ID{{}}
	cases := map[string]string{
		"dotdot":            withNodes(file("..")),
		"dot":               withNodes(file(".")),
		"empty name":        withNodes(file("")),
		"slash":             withNodes(file("a/b")),
		"NUL":               withNodes(file("a\x00b")),
		"duplicate":         withNodes(file("a"), file("a")),
		"unsorted":          withNodes(file("b"), file("a")),
		"unknown type":      replace(`"type":"fifo"`, `"type":"socket"`),
		"hardlink type":     replace(`"type":"fifo"`, `"type":"hardlink"`),
		"dir no subtree":    withNodes(dirNoSub),
		"file with subtree": strings.Replace(withNodes(file("f")), `"content":[]`, `"content":[],"subtree":"`+testID(9).String()+`"`, 1),
		"size no content":   withNodes(sizeNoContent),
		"empty target":      withNodes(emptyLink),
		"mode bits":         withNodes(badMode),
		"zero id":           withNodes(zeroID),
		"not json":          "nodes",
		"no version":        `{"nodes":[]}`,
		"version 0":         `{"version":0,"nodes":[]}`,
		"null node":         `{"version":1,"nodes":[null]}`,
		"whitespace":        replace(`"version":1,`, `"version": 1,`),
		"trailing":          string(valid) + "\n",
		"unknown field":     replace(`"inode":42,`, `"inode":42,"color":"red",`),
		"upper-case id":     replace(testID(1).String(), strings.ToUpper(testID(1).String())),
		"raw utf-8 name":    replace(`"name":"dir"`, `"name_raw":"ZGly"`),
		"short escape":      replace(`\u000a`, `\n`),
		"time zone":         replace(`"mtime":"2024-02-29T23:59:58.987654321Z"`, `"mtime":"2024-03-01T00:59:58.987654321+01:00"`),
		"short fraction":    replace(`"mtime":"2024-02-29T23:59:58.987654321Z"`, `"mtime":"2024-02-29T23:59:58.98765432Z"`),
		"both names":        replace(`"name":"dir"`, `"name":"dir","name_raw":"ZGly"`),
		"negative":          replace(`"uid":1000`, `"uid":-1`),
		"dup key":           replace(`"uid":1000`, `"uid":1000,"uid":1000`),
		"empty xattrs":      replace(`"links":1,"subtree"`, `"links":1,"xattrs":[],"subtree"`),
	}
	for name, in := range cases {
		_, err := DecodeTree([]byte(in))
		if !isKind(err, core.KindCorrupt) {
			t.Errorf("%s: %v", name, err)
		}
	}
	_, err = DecodeTree([]byte(replace(`"version":1,`, `"version":2,"future":{},`)))
	if err == nil || !strings.Contains(err.Error(), "tree format version 2 is newer than this cairn supports: upgrade cairn") || core.CodeOf(err) != "format_version" {
		t.Errorf("newer version: %v", err)
	}
	if _, err := EncodeTree(&Tree{Nodes: []*Node{file("b"), file("a")}}); err == nil {
		t.Errorf("EncodeTree accepted unsorted nodes")
	}
}

// FuzzDecodeTree: DecodeTree never panics, and whatever it accepts
// re-encodes to the very same bytes.
func FuzzDecodeTree(f *testing.F) {
	b, err := EncodeTree(sampleTree())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(`{"version":1,"nodes":[]}`))
	f.Add([]byte(`{"version":2}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		tr, err := DecodeTree(data)
		if err != nil {
			return
		}
		again, err := EncodeTree(tr)
		if err != nil {
			t.Fatalf("decoded tree does not encode: %v", err)
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("re-encoding differs:\n in %q\nout %q", data, again)
		}
		for _, n := range tr.Nodes {
			if CheckName(n.Name) != nil {
				t.Fatalf("invalid name %q accepted", n.Name)
			}
		}
	})
}
