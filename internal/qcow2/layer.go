package qcow2

import (
	"container/list"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/cairn-backup/cairn/internal/core"
)

// Layer is one disk of an image: the active layer or an internal snapshot.
// ReadAt and Extents are safe for concurrent use.
type Layer struct {
	im   *Image
	size int64
	l1   []uint64 // only the entries size needs; missing ones are unallocated
	snap int      // index into im.snapshots, -1 for the active layer
}

// Extent is a byte range of a virtual disk.
type Extent struct{ Offset, Length int64 }

// End returns the offset just past the extent.
func (e Extent) End() int64 { return e.Offset + e.Length }

// Size returns the virtual size of the layer in bytes.
func (l *Layer) Size() int64 { return l.size }

// Image returns the image the layer belongs to.
func (l *Layer) Image() *Image { return l.im }

// SnapshotInfo returns the snapshot the layer shows, and false for the
// active layer.
func (l *Layer) SnapshotInfo() (Snapshot, bool) {
	if l.snap < 0 {
		return Snapshot{}, false
	}
	return l.im.snapshots[l.snap], true
}

// cluster kinds, from an L2 entry
const (
	kindUnalloc    = iota // read from the backing file, or zeros
	kindZero              // zero flag: reads as zeros
	kindData              // a host cluster
	kindCompressed        // a compressed cluster
)

// classify returns an L2 entry's kind and, for data clusters, the host
// offset. QEMU's rules: the compressed bit wins; then the zero flag (with or
// without a preallocated offset); then offset 0 is unallocated.
func classify(e uint64) (int, int64) {
	e &^= l2Copied
	switch {
	case e&l2Compressed != 0:
		return kindCompressed, 0
	case e&l2ZeroFlag != 0:
		return kindZero, 0
	case e&l2OffsetMask == 0:
		return kindUnalloc, 0
	default:
		return kindData, int64(e & l2OffsetMask)
	}
}

// l2Table returns the L2 table of L1 entry i, nil when it is unallocated.
func (l *Layer) l2Table(i int64) ([]uint64, error) {
	if i >= int64(len(l.l1)) {
		return nil, nil
	}
	off := l.l1[i] & l1OffsetMask
	if off == 0 {
		return nil, nil
	}
	return l.im.loadL2(off, i, true)
}

// loadL2 returns the L2 table at host offset off (from L1 entry i), from
// the cache or the file. keep says whether a table read from the file goes
// into the cache.
func (im *Image) loadL2(off uint64, i int64, keep bool) ([]uint64, error) {
	if t := im.l2.get(off); t != nil {
		return t, nil
	}
	if off&uint64(im.clusterSize-1) != 0 {
		return nil, im.corrupt("L2 table at 0x%x (L1 entry %d) is not aligned to the cluster size %d", off, i, im.clusterSize)
	}
	if !im.within(int64(off), im.clusterSize) {
		return nil, im.corrupt("L2 table at 0x%x (L1 entry %d) beyond end of file (size %d)", off, i, im.fileSize.Load())
	}
	buf := make([]byte, im.clusterSize)
	if err := im.readFull(buf, int64(off), "L2 table"); err != nil {
		return nil, err
	}
	t := make([]uint64, im.l2Entries)
	for k := range t {
		t[k] = binary.BigEndian.Uint64(buf[k*8:])
	}
	if keep {
		im.l2.put(off, t)
	}
	return t, nil
}

// ReadAt implements io.ReaderAt over the layer's virtual disk: unallocated
// clusters read from the backing file (zeros past its end, or without one),
// zero clusters read as zeros, compressed clusters are decompressed. Reads
// past Size end with io.EOF.
func (l *Layer) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, core.Invalid("qcow2 %s: negative read offset %d", l.im.path, off)
	}
	if off >= l.size {
		if len(p) == 0 && off == l.size {
			return 0, nil
		}
		return 0, io.EOF
	}
	n := len(p)
	var tail error
	if int64(n) > l.size-off {
		n = int(l.size - off)
		tail = io.EOF
	}
	if err := l.read(p[:n], off); err != nil {
		return 0, err
	}
	return n, tail
}

// read fills p from off; [off, off+len(p)) lies within the layer.
func (l *Layer) read(p []byte, off int64) error {
	im := l.im
	cs := im.clusterSize
	for len(p) > 0 {
		l1i := off / im.l2Range()
		tab, err := l.l2Table(l1i)
		if err != nil {
			return err
		}
		rangeEnd := min((l1i+1)*im.l2Range(), off+int64(len(p)))
		first := (l1i * im.l2Range()) / cs // guest cluster number of tab[0]
		entry := func(c int64) uint64 {
			if tab == nil {
				return 0
			}
			return tab[c-first]
		}
		for off < rangeEnd {
			c := off / cs
			kind, host := classify(entry(c))
			n := min((c+1)*cs, rangeEnd) - off // bytes of this cluster to read
			switch kind {
			case kindData:
				if err := im.checkData(host, c); err != nil {
					return err
				}
				start := host + off%cs
				// Extend over following clusters that are contiguous in
				// the file, for one read.
				for next := c + 1; off+n < rangeEnd; next++ {
					k, h := classify(entry(next))
					if k != kindData || h != host+(next-c)*cs {
						break
					}
					if err := im.checkData(h, next); err != nil {
						return err
					}
					n = min((next+1)*cs, rangeEnd) - off
				}
				if err := im.readData(p[:n], start); err != nil {
					return err
				}
			case kindZero, kindUnalloc:
				for next := c + 1; off+n < rangeEnd; next++ {
					k, _ := classify(entry(next))
					if k != kind && (im.backing != nil || (k != kindZero && k != kindUnalloc)) {
						break
					}
					n = min((next+1)*cs, rangeEnd) - off
				}
				if kind == kindUnalloc && im.backing != nil {
					if err := readBacking(im.backing, p[:n], off); err != nil {
						return err
					}
				} else {
					clear(p[:n])
				}
			case kindCompressed:
				data, err := im.compressedCluster(entry(c), c)
				if err != nil {
					return err
				}
				copy(p[:n], data[off%cs:])
			}
			p = p[n:]
			off += n
		}
	}
	return nil
}

// checkData checks a data cluster's host offset.
func (im *Image) checkData(host, c int64) error {
	if host&(im.clusterSize-1) != 0 {
		return im.corrupt("data cluster for guest offset 0x%x at host offset 0x%x is not aligned to the cluster size", c*im.clusterSize, host)
	}
	if !im.within(host, 1) {
		return im.corrupt("data cluster for guest offset 0x%x at host offset 0x%x beyond end of file (size %d)", c*im.clusterSize, host, im.fileSize.Load())
	}
	return nil
}

// readData reads host bytes. A cluster may end past the end of the file
// (QEMU writes the last cluster of an odd-sized disk only in part); that
// tail reads as zeros, as QEMU reads it.
func (im *Image) readData(p []byte, off int64) error {
	n, err := im.data.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == io.EOF {
		clear(p[n:])
		return nil
	}
	return fmt.Errorf("qcow2 %s: reading data at host offset 0x%x: %w", im.path, off, err)
}

// readBacking reads p at off from a backing source; what lies past its end
// reads as zeros.
func readBacking(b source, p []byte, off int64) error {
	bs := b.Size()
	if off >= bs {
		clear(p)
		return nil
	}
	n := int64(len(p))
	if n > bs-off {
		clear(p[bs-off:])
		n = bs - off
	}
	return b.readAt(p[:n], off)
}

// Extents returns the ranges of the layer that may hold non-zero data,
// sorted, merged and within Size: data and compressed clusters, and, with a
// backing file, the backing file's extents where this layer is unallocated.
// Zero clusters and unallocated clusters without a backing file are left
// out, and so are the parts of data clusters that are holes in the image
// file itself (preallocated or partly written clusters), as qemu-img map
// leaves them out. Extents reads the L2 tables, not the data.
func (l *Layer) Extents() ([]Extent, error) {
	im := l.im
	cs := im.clusterSize
	hostData := im.hostExtents()
	var own, holes extentList
	nL1 := im.l1Needed(l.size)
	for i := int64(0); i < nL1; i++ {
		base := i * im.l2Range()
		end := min(base+im.l2Range(), l.size)
		tab, err := l.l2Table(i)
		if err != nil {
			return nil, err
		}
		if tab == nil {
			holes.add(base, end-base)
			continue
		}
		for j, e := range tab {
			off := base + int64(j)*cs
			if off >= end {
				break
			}
			n := min(cs, end-off)
			kind, host := classify(e)
			switch kind {
			case kindData:
				if err := im.checkData(host, off/cs); err != nil {
					return nil, err
				}
				// A hole in the image file inside the cluster reads
				// as zeros: keep only the host data, as qemu-img map does.
				hostData.overlapping(host, n, func(lo, hi int64) {
					own.add(off+lo-host, hi-lo)
				})
			case kindCompressed:
				own.add(off, n)
			case kindUnalloc:
				holes.add(off, n)
			}
		}
	}
	if im.backing == nil || len(holes) == 0 {
		return own, nil
	}
	bext, err := im.backing.extents()
	if err != nil {
		return nil, err
	}
	return union(own, intersect(bext, holes)), nil
}

// extentList is a sorted list of extents that merges touching ranges as
// they are added in order.
type extentList []Extent

func (e *extentList) add(off, n int64) {
	if n <= 0 {
		return
	}
	if k := len(*e); k > 0 && (*e)[k-1].End() >= off {
		last := &(*e)[k-1]
		last.Length = max(last.End(), off+n) - last.Offset
		return
	}
	*e = append(*e, Extent{Offset: off, Length: n})
}

// overlapping calls fn with each part of [off, off+n) that meets an extent
// of the sorted list, in order; a nil list stands for "everything is data".
func (e extentList) overlapping(off, n int64, fn func(lo, hi int64)) {
	if e == nil {
		fn(off, off+n)
		return
	}
	i, _ := slices.BinarySearchFunc(e, off, func(x Extent, off int64) int {
		if x.End() <= off {
			return -1
		}
		return 1
	})
	for ; i < len(e) && e[i].Offset < off+n; i++ {
		fn(max(e[i].Offset, off), min(e[i].End(), off+n))
	}
}

// intersect returns the intersection of two sorted, merged lists.
func intersect(a, b []Extent) extentList {
	var out extentList
	for i, j := 0, 0; i < len(a) && j < len(b); {
		lo := max(a[i].Offset, b[j].Offset)
		hi := min(a[i].End(), b[j].End())
		if lo < hi {
			out.add(lo, hi-lo)
		}
		if a[i].End() < b[j].End() {
			i++
		} else {
			j++
		}
	}
	return out
}

// union returns the union of two sorted lists, merged.
func union(a, b []Extent) extentList {
	all := make([]Extent, 0, len(a)+len(b))
	all = append(append(all, a...), b...)
	sortExtents(all)
	var out extentList
	for _, e := range all {
		out.add(e.Offset, e.Length)
	}
	return out
}

// clip cuts a sorted list at size.
func clip(e extentList, size int64) extentList {
	for len(e) > 0 && e[len(e)-1].Offset >= size {
		e = e[:len(e)-1]
	}
	if k := len(e); k > 0 && e[k-1].End() > size {
		e[k-1].Length = size - e[k-1].Offset
	}
	return e
}

// l2Cache is a small LRU of decoded L2 tables keyed by host offset, shared
// by the layers of an image.
type l2Cache struct {
	mu  sync.Mutex
	max int
	m   map[uint64]*list.Element
	lru list.List // front = most recent; values are *l2Item
}

type l2Item struct {
	off uint64
	tab []uint64
}

func newL2Cache(max int) *l2Cache {
	return &l2Cache{max: max, m: make(map[uint64]*list.Element)}
}

func (c *l2Cache) get(off uint64) []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[off]; ok {
		c.lru.MoveToFront(el)
		return el.Value.(*l2Item).tab
	}
	return nil
}

func (c *l2Cache) put(off uint64, tab []uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[off]; ok {
		c.lru.MoveToFront(el)
		return
	}
	c.m[off] = c.lru.PushFront(&l2Item{off: off, tab: tab})
	for c.lru.Len() > c.max {
		el := c.lru.Back()
		c.lru.Remove(el)
		delete(c.m, el.Value.(*l2Item).off)
	}
}
