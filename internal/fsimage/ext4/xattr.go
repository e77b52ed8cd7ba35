package ext4

const (
	xattrMagic       = 0xEA020000
	xattrIndexSystem = 7
)

// inodeXattr returns the value of the extended attribute (index, name)
// stored in the inode's body after i_extra_isize, or nil when there is
// none. Values in other inodes (ea_inode) or in an attribute block are not
// looked at: the only attribute read, system.data, is always in the body.
func (in *inode) inodeXattr(index byte, name string) ([]byte, error) {
	start := oldInodeSize + in.extra
	end := len(in.raw)
	if len(in.raw) <= oldInodeSize || start+4 > end || le32(in.raw, start) != xattrMagic {
		return nil, nil
	}
	first := start + 4
	for off := first; off+4 <= end && le32(in.raw, off) != 0; {
		if off+16 > end {
			return nil, corrupt("inode %d: extended attribute entry at %d runs past the inode", in.ino, off)
		}
		nameLen := int(in.raw[off])
		if off+16+nameLen > end {
			return nil, corrupt("inode %d: extended attribute name at %d runs past the inode", in.ino, off)
		}
		if in.raw[off+1] == index && string(in.raw[off+16:off+16+nameLen]) == name {
			if le32(in.raw, off+4) != 0 {
				return nil, corrupt("inode %d: attribute %q stored in inode %d, which inline data never does", in.ino, name, le32(in.raw, off+4))
			}
			vOff := first + int(le16(in.raw, off+2))
			vLen := int64(le32(in.raw, off+8))
			if vLen > int64(end) || vOff+int(vLen) > end {
				return nil, corrupt("inode %d: attribute %q value (%d bytes at %d) runs past the inode", in.ino, name, vLen, vOff)
			}
			return in.raw[vOff : vOff+int(vLen)], nil
		}
		off += (16 + nameLen + 3) &^ 3
	}
	return nil, nil
}

// inlineData returns the bytes of an inline-data inode: the 60 bytes of
// i_block followed by the value of system.data.
func (in *inode) inlineData() (iblock, rest []byte, err error) {
	rest, err = in.inodeXattr(xattrIndexSystem, "data")
	if err != nil {
		return nil, nil, err
	}
	return in.block, rest, nil
}
