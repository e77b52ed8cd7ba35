package ext4

import "sync"

// indirectMapper maps through the block map of ext2/ext3 files (and ext4
// files without the extents flag): 12 direct pointers in i_block, then one
// single, one double and one triple indirect block. A zero pointer is a
// hole as large as all it would cover.
type indirectMapper struct {
	f  *FS
	in *inode

	mu    sync.Mutex
	empty map[emptyKey]bool // indirect blocks known to map nothing
}

type emptyKey struct {
	block uint64
	level int
}

// maxEmptyMemo bounds the indirect blocks whose emptiness is remembered;
// past it, subtrees are walked as if not empty.
const maxEmptyMemo = 1 << 20

const directBlocks = 12

func (m *indirectMapper) mapBlock(lb uint64) (run, error) {
	f := m.f
	if lb < directBlocks {
		return m.runIn(m.in.block, lb, directBlocks)
	}
	ptrs := uint64(f.blockSize / 4)
	rel := lb - directBlocks
	span := ptrs // blocks one pointer of i_block covers at this level
	for level := 1; level <= 3; level++ {
		if rel < span {
			return m.walk(le32(m.in.block, 4*(directBlocks+level-1)), level, span, rel)
		}
		rel -= span
		span *= ptrs
	}
	// Beyond what a triple indirect block maps: nothing can be there.
	return run{zero: true, count: 1 << 40}, nil
}

// walk follows ptr, which covers span blocks through level levels of
// indirect blocks, to the block rel blocks into its range.
func (m *indirectMapper) walk(ptr uint32, level int, span, rel uint64) (run, error) {
	f := m.f
	ptrs := uint64(f.blockSize / 4)
	for ; level > 0; level-- {
		if ptr == 0 {
			return run{zero: true, count: span - rel}, nil
		}
		// A subtree that maps nothing is one hole: skipping it at once keeps
		// indirect blocks shared by a crafted file from costing a walk per
		// block of the hole.
		if level > 1 {
			if empty, err := m.emptyBlock(ptr, level); err != nil {
				return run{}, err
			} else if empty {
				return run{zero: true, count: span - rel}, nil
			}
		}
		blk, err := m.indirect(ptr)
		if err != nil {
			return run{}, err
		}
		span /= ptrs
		idx := rel / span
		rel %= span
		if level == 1 {
			return m.runIn(blk, idx, ptrs)
		}
		ptr = le32(blk, int(4*idx))
	}
	return run{}, corrupt("inode %d: block map walk ended without a data block", m.in.ino)
}

// indirect reads indirect block ptr.
func (m *indirectMapper) indirect(ptr uint32) ([]byte, error) {
	if !m.f.checkBlocks(uint64(ptr), 1) {
		return nil, corrupt("inode %d: indirect block %d is outside the file system (%d blocks)", m.in.ino, ptr, m.f.blocks)
	}
	return m.f.readBlock(uint64(ptr))
}

// emptyBlock reports whether indirect block ptr, level levels above the
// data, maps no block. Answers are remembered (up to maxEmptyMemo), so
// each block is examined once however often the file shares it.
// Recursive calls for a full memo return "not empty" at once, so the work
// stays bounded by the memo's size times a block's pointers.
func (m *indirectMapper) emptyBlock(ptr uint32, level int) (bool, error) {
	if ptr == 0 {
		return true, nil
	}
	key := emptyKey{uint64(ptr), level}
	m.mu.Lock()
	e, known := m.empty[key]
	full := len(m.empty) >= maxEmptyMemo
	m.mu.Unlock()
	if known {
		return e, nil
	}
	if full {
		return false, nil // unknown: walked as any subtree, block by block
	}
	blk, err := m.indirect(ptr)
	if err != nil {
		return false, err
	}
	empty := true
	for i := 0; empty && i+4 <= len(blk); i += 4 {
		p := le32(blk, i)
		if level == 1 {
			empty = p == 0
		} else if empty, err = m.emptyBlock(p, level-1); err != nil {
			return false, err
		}
	}
	m.mu.Lock()
	if m.empty == nil {
		m.empty = map[emptyKey]bool{}
	}
	m.empty[key] = empty
	m.mu.Unlock()
	return empty, nil
}

// runIn returns the run starting at pointer idx of a table of n block
// pointers: consecutive physical blocks, or consecutive zero pointers.
func (m *indirectMapper) runIn(table []byte, idx, n uint64) (run, error) {
	first := uint64(le32(table, int(4*idx)))
	count := uint64(1)
	for j := idx + 1; j < n; j++ {
		p := uint64(le32(table, int(4*j)))
		if (first == 0 && p != 0) || (first != 0 && p != first+count) {
			break
		}
		count++
	}
	if first == 0 {
		return run{zero: true, count: count}, nil
	}
	if !m.f.checkBlocks(first, count) {
		return run{}, corrupt("inode %d: data block %d (+%d) is outside the file system (%d blocks)", m.in.ino, first, count, m.f.blocks)
	}
	return run{phys: first, count: count}, nil
}
