package ext4

import (
	"encoding/binary"
	"io"
)

// The journal (JBD2) of a file system that needs recovery holds committed
// transactions whose blocks may not have reached their place yet. Open
// replays it in memory, as the kernel would at mount: the blocks of every
// committed transaction, minus revoked ones, are laid over the image
// (journalOverlay). Nothing is written.

const (
	jbdMagic = 0xC03B3998

	jbdDescriptor = 1
	jbdCommit     = 2
	jbdSuperV1    = 3
	jbdSuperV2    = 4
	jbdRevoke     = 5

	jbdIncompatRevoke      = 0x1
	jbdIncompat64Bit       = 0x2
	jbdIncompatAsyncCommit = 0x4
	jbdIncompatCsumV2      = 0x8
	jbdIncompatCsumV3      = 0x10
	jbdIncompatFastCommit  = 0x20
	jbdIncompatKnown       = jbdIncompatRevoke | jbdIncompat64Bit | jbdIncompatAsyncCommit | jbdIncompatCsumV2 | jbdIncompatCsumV3

	jbdFlagEscape   = 0x1
	jbdFlagSameUUID = 0x2
	jbdFlagLastTag  = 0x8
)

// journalBlock is a block to replay: where it goes in the file system, and
// where its copy is in the image.
type journalBlock struct {
	phys    uint64 // image block holding the copy
	escaped bool   // its first 4 bytes were the JBD2 magic, stored as zeros
}

type transaction struct {
	seq     uint32
	blocks  []uint64 // targets, in log order
	copies  []journalBlock
	revokes []uint64
}

// journal is what the scan of a journal needs.
type journal struct {
	f        *FS
	c        *content // the journal inode
	bs       int64
	first    uint64
	maxLen   uint64
	incompat uint32
	seed     uint32 // crc32c of the journal UUID, for v2/v3 checksums
}

func (j *journal) csum() bool { return j.incompat&(jbdIncompatCsumV2|jbdIncompatCsumV3) != 0 }

// replayJournal scans the journal in inode ino and, when it holds committed
// transactions, sets f.dev to the image with their blocks laid over it.
func (f *FS) replayJournal(ino uint64) error {
	in, err := f.readInode(ino)
	if err != nil {
		return err
	}
	if !in.isRegular() {
		return corrupt("journal inode %d is not a regular file (mode 0%o)", ino, in.mode)
	}
	c, err := f.openContent(in)
	if err != nil {
		return err
	}
	if c.mapper == nil || c.size < 2*f.blockSize {
		return corrupt("journal inode %d: %d bytes", ino, c.size)
	}
	j := &journal{f: f, c: c, bs: f.blockSize}
	sb, _, err := j.read(0)
	if err != nil {
		return err
	}
	if be32(sb, 0) != jbdMagic || (be32(sb, 4) != jbdSuperV1 && be32(sb, 4) != jbdSuperV2) {
		return corrupt("journal superblock: bad magic or type")
	}
	if bs := be32(sb, 0xC); int64(bs) != f.blockSize {
		return corrupt("journal block size %d differs from the file system's %d", bs, f.blockSize)
	}
	j.maxLen = uint64(be32(sb, 0x10))
	j.first = uint64(be32(sb, 0x14))
	seq := be32(sb, 0x18)
	start := uint64(be32(sb, 0x1C))
	if j.maxLen > uint64(c.size/f.blockSize) || j.first == 0 || j.first >= j.maxLen {
		return corrupt("journal superblock: %d blocks from %d, in an inode of %d blocks", j.maxLen, j.first, c.size/f.blockSize)
	}
	if be32(sb, 4) == jbdSuperV2 {
		j.incompat = be32(sb, 0x28)
		if unknown := j.incompat &^ jbdIncompatKnown; unknown != 0 {
			if unknown&jbdIncompatFastCommit != 0 {
				return unsupported("the journal needs recovery and has fast commits, which this reader cannot replay")
			}
			return unsupported("journal incompatible features 0x%x", unknown)
		}
		if j.csum() {
			j.seed = crc32c(^uint32(0), sb[0x30:0x40])
			if f.verify {
				want := be32(sb, 0xFC)
				s := append([]byte{}, sb[:1024]...)
				clear(s[0xFC:0x100])
				if got := crc32c(^uint32(0), s); got != want {
					return corrupt("journal superblock checksum 0x%08x does not match its contents (0x%08x)", want, got)
				}
			}
		}
	}
	if start == 0 {
		return nil // clean: nothing to replay
	}
	if start < j.first || start >= j.maxLen {
		return corrupt("journal start %d outside [%d, %d)", start, j.first, j.maxLen)
	}
	txs, err := j.scan(start, seq)
	if err != nil {
		return err
	}
	overlay, err := j.replay(txs)
	if err != nil {
		return err
	}
	if len(overlay.blocks) > 0 {
		f.dev = overlay
	}
	return nil
}

// read returns journal block jb and the image block holding it.
func (j *journal) read(jb uint64) ([]byte, uint64, error) {
	r, err := j.c.mapper.mapBlock(jb)
	if err != nil {
		return nil, 0, err
	}
	if r.zero {
		return nil, 0, corrupt("journal block %d is a hole", jb)
	}
	buf := make([]byte, j.bs)
	if err := readFull(j.f.dev, buf, int64(r.phys)*j.bs); err != nil {
		return nil, 0, err
	}
	return buf, r.phys, nil
}

// blockTailOK checks the crc32c in the last 4 bytes of a descriptor or
// revoke block (big endian, computed with them as zeros).
func (j *journal) blockTailOK(b []byte) bool {
	n := len(b) - 4
	c := crc32c(j.seed, b[:n])
	return crc32c(c, []byte{0, 0, 0, 0}) == be32(b, n)
}

// commitOK checks the crc32c of a commit block (in h_chksum[0], at 16).
func (j *journal) commitOK(b []byte) bool {
	c := crc32c(j.seed, b[:16])
	c = crc32c(c, []byte{0, 0, 0, 0})
	return crc32c(c, b[20:]) == be32(b, 16)
}

func (j *journal) tagBytes() int {
	if j.incompat&jbdIncompatCsumV3 != 0 {
		return 16
	}
	n := 12
	if j.incompat&jbdIncompatCsumV2 != 0 {
		n += 2
	}
	if j.incompat&jbdIncompat64Bit == 0 {
		n -= 4
	}
	return n
}

// scan reads the log from block start, expecting transaction seq, and
// returns the committed transactions. The log ends at the first block that
// is not the next one expected (wrong magic or sequence, a checksum that
// fails, an unknown type); a transaction without its commit block is
// dropped. At most maxLen blocks are read.
func (j *journal) scan(start uint64, seq uint32) ([]transaction, error) {
	next := func(b uint64) uint64 {
		if b+1 >= j.maxLen {
			return j.first
		}
		return b + 1
	}
	var txs []transaction
	cur := transaction{seq: seq}
	blk := start
	for steps := uint64(0); steps < j.maxLen; {
		buf, _, err := j.read(blk)
		if err != nil {
			return nil, err
		}
		steps++
		if be32(buf, 0) != jbdMagic || be32(buf, 8) != cur.seq {
			break
		}
		switch be32(buf, 4) {
		case jbdDescriptor:
			if j.csum() && !j.blockTailOK(buf) {
				return txs, nil
			}
			end := len(buf)
			if j.csum() {
				end -= 4
			}
			tb := j.tagBytes()
			for off := 12; off+tb <= end; {
				tag := buf[off:]
				var flags uint32
				var target uint64
				if j.incompat&jbdIncompatCsumV3 != 0 {
					flags = be32(tag, 4)
					target = uint64(be32(tag, 0)) | uint64(be32(tag, 8))<<32
				} else {
					flags = uint32(binary.BigEndian.Uint16(tag[6:]))
					target = uint64(be32(tag, 0))
					if j.incompat&jbdIncompat64Bit != 0 {
						target |= uint64(be32(tag, 8)) << 32
					}
				}
				if j.incompat&jbdIncompat64Bit == 0 {
					target &= 0xFFFFFFFF
				}
				off += tb
				if flags&jbdFlagSameUUID == 0 {
					off += 16
				}
				blk = next(blk)
				steps++
				if steps > j.maxLen {
					return nil, corrupt("journal: transaction %d has more blocks than the journal", cur.seq)
				}
				data, phys, err := j.read(blk)
				if err != nil {
					return nil, err
				}
				if j.csum() && j.f.verify && !j.dataOK(tag, cur.seq, data) {
					return nil, corrupt("journal: copy of block %d in transaction %d fails its checksum", target, cur.seq)
				}
				if target >= j.f.blocks {
					return nil, corrupt("journal: transaction %d writes block %d, beyond the file system (%d blocks)", cur.seq, target, j.f.blocks)
				}
				cur.blocks = append(cur.blocks, target)
				cur.copies = append(cur.copies, journalBlock{phys: phys, escaped: flags&jbdFlagEscape != 0})
				if flags&jbdFlagLastTag != 0 {
					break
				}
			}
		case jbdRevoke:
			if j.csum() && !j.blockTailOK(buf) {
				return txs, nil
			}
			n := int(be32(buf, 12))
			if n < 16 || n > len(buf) {
				return nil, corrupt("journal: revoke block of transaction %d claims %d bytes", cur.seq, n)
			}
			rec := 4
			if j.incompat&jbdIncompat64Bit != 0 {
				rec = 8
			}
			for off := 16; off+rec <= n; off += rec {
				b := uint64(be32(buf, off))
				if rec == 8 {
					b = binary.BigEndian.Uint64(buf[off:])
				}
				cur.revokes = append(cur.revokes, b)
			}
		case jbdCommit:
			if j.csum() && !j.commitOK(buf) {
				return txs, nil
			}
			txs = append(txs, cur)
			cur = transaction{seq: cur.seq + 1}
		default:
			return txs, nil
		}
		blk = next(blk)
	}
	return txs, nil
}

// dataOK checks a journalled block against its tag: crc32c of the
// sequence number (big endian) and the block, all 32 bits with csum v3,
// the low 16 with v2.
func (j *journal) dataOK(tag []byte, seq uint32, data []byte) bool {
	var s [4]byte
	binary.BigEndian.PutUint32(s[:], seq)
	c := crc32c(crc32c(j.seed, s[:]), data)
	if j.incompat&jbdIncompatCsumV3 != 0 {
		return c == be32(tag, 12)
	}
	return uint16(c) == binary.BigEndian.Uint16(tag[4:])
}

// replay applies the revocations and returns the overlay of the blocks to
// replay: the last committed copy of each, unless a revoke record of the
// same or a later transaction cancels it.
func (j *journal) replay(txs []transaction) (*journalOverlay, error) {
	revoked := map[uint64]uint32{}
	for _, tx := range txs {
		for _, b := range tx.revokes {
			if s, ok := revoked[b]; !ok || int32(tx.seq-s) > 0 {
				revoked[b] = tx.seq
			}
		}
	}
	o := &journalOverlay{base: j.f.dev, bs: j.bs, blocks: map[uint64]journalBlock{}}
	for _, tx := range txs {
		for i, b := range tx.blocks {
			if s, ok := revoked[b]; ok && int32(tx.seq-s) <= 0 {
				continue
			}
			o.blocks[b] = tx.copies[i]
		}
	}
	return o, nil
}

// journalOverlay reads the image with replayed blocks in place.
type journalOverlay struct {
	base   io.ReaderAt
	bs     int64
	blocks map[uint64]journalBlock
}

func (o *journalOverlay) ReadAt(p []byte, off int64) (int, error) {
	done := 0
	for done < len(p) {
		pos := off + int64(done)
		b := uint64(pos / o.bs)
		within := pos % o.bs
		n := int(min(int64(len(p)-done), o.bs-within))
		dst := p[done : done+n]
		jb, ok := o.blocks[b]
		if !ok {
			// Read up to the next replayed block in one go.
			for n < len(p)-done {
				if _, ok := o.blocks[b+uint64((within+int64(n))/o.bs)]; ok {
					break
				}
				n = min(len(p)-done, n+int(o.bs))
			}
			dst = p[done : done+n]
			m, err := o.base.ReadAt(dst, pos)
			done += m
			if err != nil && m < n {
				return done, err
			}
			continue
		}
		if err := readFull(o.base, dst, int64(jb.phys)*o.bs+within); err != nil {
			return done, err
		}
		if jb.escaped && within < 4 {
			var magic [4]byte
			binary.BigEndian.PutUint32(magic[:], jbdMagic)
			copy(dst, magic[within:])
		}
		done += n
	}
	return done, nil
}
