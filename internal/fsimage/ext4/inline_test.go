package ext4

import (
	"encoding/binary"
	"fmt"
	"testing"
)

// dirent appends a directory entry of record length recLen to b.
func appendDirent(b []byte, ino uint32, name string, recLen int) []byte {
	e := make([]byte, recLen)
	binary.LittleEndian.PutUint32(e, ino)
	binary.LittleEndian.PutUint16(e[4:], uint16(recLen))
	e[6] = byte(len(name))
	e[7] = 1
	copy(e[8:], name)
	return append(b, e...)
}

// TestInlineDirInAttribute reads an inline directory whose entries go on in
// system.data, which libext2fs (so mkfs -d) never makes: the kernel does.
func TestInlineDirInAttribute(t *testing.T) {
	f := &FS{blockSize: 4096, blocks: 256, inodes: 100, inodeSize: 256, size: 1 << 20,
		incompat: incompatInlineData | incompatFiletype, cache: newBlockCache(4096), dirs: newDirCache()}
	raw := make([]byte, 256)
	le := binary.LittleEndian
	le.PutUint16(raw[0x0:], modeDir|0o755)
	le.PutUint16(raw[0x1A:], 2)
	le.PutUint32(raw[0x20:], flagInlineData)
	le.PutUint32(raw[0x4:], 100)
	le.PutUint16(raw[0x80:], 32)
	var iblock []byte
	iblock = binary.LittleEndian.AppendUint32(iblock, 2) // parent
	iblock = appendDirent(iblock, 11, "a", 12)
	iblock = appendDirent(iblock, 12, "bb", 44)
	copy(raw[0x28:], iblock)
	var value []byte
	value = appendDirent(value, 13, "ccc", 16)
	value = appendDirent(value, 14, "dddd", 24)
	// In-inode attributes after the 32 extra bytes: magic, one entry, end.
	le.PutUint32(raw[160:], xattrMagic)
	entry := raw[164:]
	entry[0] = 4 // name length
	entry[1] = xattrIndexSystem
	le.PutUint16(entry[2:], uint16(256-164-len(value)))
	le.PutUint32(entry[8:], uint32(len(value)))
	copy(entry[16:], "data")
	copy(raw[256-len(value):], value)

	in, err := f.parseInode(20, raw)
	if err != nil {
		t.Fatal(err)
	}
	l, err := f.readDir(in)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(l.entries); got != "[{a 11} {bb 12} {ccc 13} {dddd 14}]" {
		t.Errorf("entries %s", got)
	}

	// An attribute value that runs past the inode is refused.
	le.PutUint32(entry[8:], 200)
	f.dirs = newDirCache()
	in, _ = f.parseInode(20, raw)
	if _, err := f.readDir(in); err == nil {
		t.Error("no error for a system.data value past the inode")
	}
}
