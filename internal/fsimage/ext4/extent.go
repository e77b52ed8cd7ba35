package ext4

import (
	"sort"
	"strconv"
	"sync"
)

const (
	extentMagic    = 0xF30A
	extentMaxDepth = 5 // EXT4_MAX_EXTENT_DEPTH
	maxLogical     = 1 << 32
	uninitLen      = 32768 // ee_len above this marks an unwritten extent
)

// run is a stretch of a file's logical blocks that map the same way: to
// count physical blocks from phys, or to zeros (a hole, an unwritten
// extent).
type run struct {
	phys  uint64
	count uint64 // >= 1
	zero  bool
}

// blockMapper maps a file's logical blocks to runs.
type blockMapper interface {
	mapBlock(lb uint64) (run, error)
}

type extent struct {
	start  uint64 // first logical block
	count  uint64
	phys   uint64
	uninit bool
}

// leaf is a parsed extent tree leaf with the logical range [lo, hi) its
// parents give it.
type leaf struct {
	lo, hi  uint64
	extents []extent
}

// extentMapper maps through an extent tree. It remembers the last leaf it
// used, so that sequential reads descend the tree once per leaf.
type extentMapper struct {
	f  *FS
	in *inode

	mu    sync.Mutex
	last  *leaf
	empty map[uint64]bool // index and leaf blocks known to hold no extent
}

type extentHeader struct {
	entries, max, depth int
}

// parseExtentHeader checks the 12-byte header of a tree node that has room
// for capacity entries.
func (m *extentMapper) parseExtentHeader(node []byte, capacity int, where string) (extentHeader, error) {
	if le16(node, 0) != extentMagic {
		return extentHeader{}, corrupt("inode %d: extent tree %s: bad magic 0x%04x", m.in.ino, where, le16(node, 0))
	}
	h := extentHeader{entries: int(le16(node, 2)), max: int(le16(node, 4)), depth: int(le16(node, 6))}
	if h.max > capacity || h.entries > h.max {
		return extentHeader{}, corrupt("inode %d: extent tree %s: %d entries, room for %d (at most %d fit)",
			m.in.ino, where, h.entries, h.max, capacity)
	}
	return h, nil
}

func (m *extentMapper) mapBlock(lb uint64) (run, error) {
	if lb >= maxLogical {
		return run{zero: true, count: 1 << 40}, nil
	}
	m.mu.Lock()
	l := m.last
	m.mu.Unlock()
	if l == nil || lb < l.lo || lb >= l.hi {
		var err error
		if l, err = m.findLeaf(lb); err != nil {
			return run{}, err
		}
		m.mu.Lock()
		m.last = l
		m.mu.Unlock()
	}
	i := sort.Search(len(l.extents), func(i int) bool { return l.extents[i].start > lb }) - 1
	next := l.hi
	if i+1 < len(l.extents) {
		next = l.extents[i+1].start
	}
	if i >= 0 {
		e := l.extents[i]
		if lb < e.start+e.count {
			off := lb - e.start
			return run{phys: e.phys + off, count: e.count - off, zero: e.uninit}, nil
		}
	}
	return run{zero: true, count: next - lb}, nil
}

// findLeaf descends from the root in i_block to the leaf whose range holds
// lb. Depths must go down by one at every level (so no walk loops) and every
// node must lie inside the file system, with its entries sorted and inside
// the range its parent gives it.
func (m *extentMapper) findLeaf(lb uint64) (*leaf, error) {
	f := m.f
	node := m.in.block
	capacity := (iBlockLen - 12) / 12
	where := "root"
	lo, hi := uint64(0), uint64(maxLogical)
	depth := -1
	for level := 0; ; level++ {
		h, err := m.parseExtentHeader(node, capacity, where)
		if err != nil {
			return nil, err
		}
		if level == 0 {
			if h.depth > extentMaxDepth {
				return nil, corrupt("inode %d: extent tree depth %d (at most %d)", m.in.ino, h.depth, extentMaxDepth)
			}
			depth = h.depth
		} else if h.depth != depth-level {
			return nil, corrupt("inode %d: extent tree %s: depth %d, want %d", m.in.ino, where, h.depth, depth-level)
		}
		if h.depth == 0 {
			return m.parseLeaf(node, h, lo, hi, where)
		}
		// An index node: the last entry whose key is <= lb, or the first.
		keys := make([]uint64, h.entries)
		for i := range keys {
			keys[i] = uint64(le32(node, 12+12*i))
			if (i > 0 && keys[i] <= keys[i-1]) || keys[i] < lo || keys[i] >= hi {
				return nil, corrupt("inode %d: extent tree %s: index entry %d (block %d) out of order or outside [%d, %d)",
					m.in.ino, where, i, keys[i], lo, hi)
			}
		}
		if h.entries == 0 {
			return &leaf{lo: lo, hi: hi}, nil
		}
		i := max(0, sort.Search(len(keys), func(i int) bool { return keys[i] > lb })-1)
		if i > 0 {
			lo = keys[i]
		}
		if i+1 < len(keys) {
			hi = keys[i+1]
		}
		e := node[12+12*i:]
		child := uint64(le32(e, 4)) | uint64(le16(e, 8))<<32
		if !f.checkBlocks(child, 1) {
			return nil, corrupt("inode %d: extent tree %s: child block %d is outside the file system", m.in.ino, where, child)
		}
		// A subtree without a single extent is one hole: skipping it at once
		// keeps a crafted tree of shared empty nodes from costing a descent
		// per empty leaf.
		if empty, err := m.emptyNode(child, h.depth-1); err != nil {
			return nil, err
		} else if empty {
			return &leaf{lo: lo, hi: hi}, nil
		}
		where = "block " + strconv.FormatUint(child, 10)
		if node, err = m.readNode(child); err != nil {
			return nil, err
		}
		capacity = int(f.blockSize-12) / 12
	}
}

// readNode reads extent tree block b and checks its checksum.
func (m *extentMapper) readNode(b uint64) ([]byte, error) {
	blk, err := m.f.readBlock(b)
	if err != nil {
		return nil, err
	}
	if m.f.metadataCsum && m.f.verify {
		if err := m.verifyNode(blk, "block "+strconv.FormatUint(b, 10)); err != nil {
			return nil, err
		}
	}
	return blk, nil
}

// maxIndexBlocks bounds the index blocks of one extent tree whose
// emptiness is remembered (a tree with more would map hundreds of millions
// of extents); past it, subtrees are walked as if not empty.
const maxIndexBlocks = 1 << 20

// emptyNode reports whether the subtree at block b, of depth depth, holds
// no extent. The answers for index blocks are remembered, so each is
// examined once however often the tree shares it; depths go down at every
// level, so the recursion ends.
func (m *extentMapper) emptyNode(b uint64, depth int) (bool, error) {
	m.mu.Lock()
	e, known := m.empty[b]
	full := len(m.empty) >= maxIndexBlocks
	m.mu.Unlock()
	if known {
		return e, nil
	}
	if full && depth > 0 {
		return false, nil // unknown: descend as for any subtree
	}
	node, err := m.readNode(b)
	if err != nil {
		return false, err
	}
	where := "block " + strconv.FormatUint(b, 10)
	h, err := m.parseExtentHeader(node, int(m.f.blockSize-12)/12, where)
	if err != nil {
		return false, err
	}
	if h.depth != depth {
		return false, corrupt("inode %d: extent tree %s: depth %d, want %d", m.in.ino, where, h.depth, depth)
	}
	empty := true
	if h.entries > 0 && depth == 0 {
		empty = false
	}
	for i := 0; empty && depth > 0 && i < h.entries; i++ {
		e := node[12+12*i:]
		child := uint64(le32(e, 4)) | uint64(le16(e, 8))<<32
		if !m.f.checkBlocks(child, 1) {
			return false, corrupt("inode %d: extent tree %s: child block %d is outside the file system", m.in.ino, where, child)
		}
		if empty, err = m.emptyNode(child, depth-1); err != nil {
			return false, err
		}
	}
	if depth > 0 {
		m.mu.Lock()
		if m.empty == nil {
			m.empty = map[uint64]bool{}
		}
		m.empty[b] = empty
		m.mu.Unlock()
	}
	return empty, nil
}

// verifyNode checks the crc32c in the tail after the eh_max entries of an
// extent tree block.
func (m *extentMapper) verifyNode(blk []byte, where string) error {
	tail := 12 + 12*int(le16(blk, 4))
	if tail+4 > len(blk) {
		return corrupt("inode %d: extent tree %s: no room for the checksum", m.in.ino, where)
	}
	if want, got := le32(blk, tail), crc32c(m.in.csumSeed, blk[:tail]); want != got {
		return corrupt("inode %d: extent tree %s: checksum 0x%08x does not match its contents (0x%08x)", m.in.ino, where, want, got)
	}
	return nil
}

func (m *extentMapper) parseLeaf(node []byte, h extentHeader, lo, hi uint64, where string) (*leaf, error) {
	l := &leaf{lo: lo, hi: hi, extents: make([]extent, h.entries)}
	prevEnd := lo
	for i := range l.extents {
		e := node[12+12*i:]
		x := extent{start: uint64(le32(e, 0)), count: uint64(le16(e, 4)),
			phys: uint64(le32(e, 8)) | uint64(le16(e, 6))<<32}
		if x.count > uninitLen {
			x.count -= uninitLen
			x.uninit = true
		}
		if x.count == 0 || x.start < prevEnd || x.start+x.count > hi {
			return nil, corrupt("inode %d: extent tree %s: extent %d (blocks %d+%d) is empty, overlaps or leaves [%d, %d)",
				m.in.ino, where, i, x.start, x.count, lo, hi)
		}
		if !m.f.checkBlocks(x.phys, x.count) {
			return nil, corrupt("inode %d: extent tree %s: extent %d maps to blocks %d+%d, outside the file system (%d blocks)",
				m.in.ino, where, i, x.phys, x.count, m.f.blocks)
		}
		prevEnd = x.start + x.count
		l.extents[i] = x
	}
	return l, nil
}
