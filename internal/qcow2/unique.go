package qcow2

import (
	"encoding/binary"
	"fmt"
	"slices"
)

// UniqueBytes returns, for each internal snapshot, the bytes that deleting
// that snapshot alone would free: the host clusters every reference to which
// comes from the snapshot. Those are its L1 table, the L2 tables only its L1
// table points to, and the data clusters only those L2 tables point to:
// compressed clusters (every host cluster the compressed bytes touch), zero
// clusters that keep their host cluster, and the saved VM state, which QEMU
// maps through the snapshot's L1 table past the disk size. A snapshot that
// shares everything with other layers frees its L1 table only (usually one
// cluster). Deleting two snapshots may free more than the sum of theirs:
// the clusters only the two of them share.
//
// The map is keyed by snapshot name. When several snapshots share a name,
// the entry is the first one's in table order (the one qemu-img snapshot -d
// deletes); Snapshots lists them all.
//
// References are counted from the tables, as qemu-img check counts them;
// refcounts are never read. QEMU frees the same clusters when its refcounts
// agree with the tables, as qemu-img check verifies (QEMU repairs a dirty
// lazy-refcounts image when it opens it for the delete). Where check
// reports leaks QEMU frees less until qemu-img check -r leaks: QEMU 7.2
// leaks a reference when it applies a snapshot taken before a resize over
// VM state. Not counted: the snapshot table, which QEMU rewrites on each
// delete (a table that ends a cluster shorter frees that cluster too), and
// refcount blocks, which QEMU never frees. The active layer's tables are
// read from the file; in an image a running QEMU has open they may be stale.
//
// UniqueBytes reads every L1 table (past the disk size too) and each
// distinct L2 table once, no data. It keeps one owner (4 bytes) per host
// cluster of the file, or, when the file has far more clusters than the
// tables map (a sparse or damaged file), a map of the referenced clusters
// only.
func (im *Image) UniqueBytes() (map[string]int64, error) {
	clusters, err := im.uniqueClusters(false)
	if err != nil {
		return nil, err
	}
	out := make(map[string]int64, len(im.snapshots))
	for k, s := range im.snapshots {
		if _, ok := out[s.Name]; !ok {
			out[s.Name] = clusters[k] * im.clusterSize
		}
	}
	return out, nil
}

// An owner says which L1 tables reference a host cluster: noOwner none,
// sharedOwner several, k+1 only L1 table k (the snapshots by table index,
// then the active layer's).
const (
	noOwner     = int32(0)
	sharedOwner = int32(-1)
)

func joinOwner(a, b int32) int32 {
	if a == noOwner || a == b {
		return b
	}
	return sharedOwner
}

// clusterOwners maps host cluster numbers to owners: a dense slice over the
// file, or a map when that slice would be far larger than the tables.
type clusterOwners struct {
	dense  []int32
	sparse map[int64]int32
}

// newClusterOwners picks the slice when it takes at most twice the bytes
// of the mapped table entries (or 256 KiB), the map otherwise.
func newClusterOwners(fileClusters, mapped int64, forceMap bool) *clusterOwners {
	if forceMap || fileClusters > max(4*mapped, 1<<16) {
		return &clusterOwners{sparse: make(map[int64]int32, min(mapped, fileClusters))}
	}
	return &clusterOwners{dense: make([]int32, fileClusters)}
}

func (o *clusterOwners) add(c int64, owner int32) {
	if o.sparse != nil {
		o.sparse[c] = joinOwner(o.sparse[c], owner)
		return
	}
	if c >= int64(len(o.dense)) { // the file grew since the slice was made
		o.dense = append(o.dense, make([]int32, c+1-int64(len(o.dense)))...)
	}
	o.dense[c] = joinOwner(o.dense[c], owner)
}

// addRange adds every cluster [off, end) touches.
func (o *clusterOwners) addRange(bits uint, off, end int64, owner int32) {
	for c := off >> bits; c <= (end-1)>>bits; c++ {
		o.add(c, owner)
	}
}

// l2Use is one distinct L2 table: its owner, and the first L1 entry that
// points to it (for error messages).
type l2Use struct {
	owner int32
	l1i   int64
}

// uniqueClusters returns, per snapshot in table order, the number of host
// clusters only that snapshot references. forceMap selects the map even
// for a small file (for the tests).
func (im *Image) uniqueClusters(forceMap bool) ([]int64, error) {
	n := len(im.snapshots)
	tables := map[uint64]l2Use{}
	type l1Span struct {
		off, end int64
		owner    int32
	}
	var l1s []l1Span
	for k := 0; k <= n; k++ {
		owner := int32(k + 1)
		var off uint64
		var size uint32
		what := "active L1 table"
		if k < n {
			off, size = im.snapL1[k].offset, im.snapL1[k].size
			what = fmt.Sprintf("L1 table of snapshot %q", im.snapshots[k].ID)
		} else {
			var h [12]byte
			if err := im.readFull(h[:], 36, "header"); err != nil {
				return nil, err
			}
			size, off = binary.BigEndian.Uint32(h[0:4]), binary.BigEndian.Uint64(h[4:12])
		}
		l1, err := im.wholeL1(what, off, size)
		if err != nil {
			return nil, err
		}
		if size > 0 {
			l1s = append(l1s, l1Span{int64(off), int64(off) + int64(size)*8, owner})
		}
		for i, e := range l1 {
			t := e & l1OffsetMask
			if t == 0 {
				continue
			}
			u, seen := tables[t]
			if !seen {
				u.l1i = int64(i)
			}
			u.owner = joinOwner(u.owner, owner)
			tables[t] = u
		}
	}

	fileClusters := (im.fileSize.Load() + im.clusterSize - 1) >> im.clusterBits
	mapped := int64(len(tables)) * (im.l2Entries + 1)
	for _, s := range l1s {
		mapped += (s.end - s.off + im.clusterSize - 1) >> im.clusterBits
	}
	o := newClusterOwners(fileClusters, mapped, forceMap)
	for _, s := range l1s {
		o.addRange(im.clusterBits, s.off, s.end, s.owner)
	}

	// In file order, so that the reads go forward.
	offs := make([]uint64, 0, len(tables))
	for t := range tables {
		offs = append(offs, t)
	}
	slices.Sort(offs)
	for _, t := range offs {
		u := tables[t]
		tab, err := im.loadL2(t, u.l1i, false)
		if err != nil {
			return nil, err
		}
		o.add(int64(t>>im.clusterBits), u.owner)
		for j, e := range tab {
			c := u.l1i*im.l2Entries + int64(j) // guest cluster, for messages
			if e&l2Compressed != 0 {
				off, end := im.compressedSpan(e)
				if off > maxVirtualSize || !im.within(off, 1) {
					return nil, im.corrupt("compressed cluster for guest offset 0x%x at host offset 0x%x beyond end of file (size %d)", c*im.clusterSize, off, im.fileSize.Load())
				}
				// As when reading: the last sectors may be missing from the file.
				end = min(end, im.fileSize.Load())
				o.addRange(im.clusterBits, off, end, u.owner)
				continue
			}
			// Zero clusters too: QEMU frees the host cluster a zero
			// flagged entry keeps.
			host := int64(e & l2OffsetMask)
			if host == 0 {
				continue
			}
			if err := im.checkData(host, c); err != nil {
				return nil, err
			}
			o.add(host>>im.clusterBits, u.owner)
		}
	}

	counts := make([]int64, n)
	count := func(owner int32) {
		if owner > 0 && int(owner) <= n {
			counts[owner-1]++
		}
	}
	if o.sparse != nil {
		for _, owner := range o.sparse {
			count(owner)
		}
	} else {
		for _, owner := range o.dense {
			count(owner)
		}
	}
	return counts, nil
}

// wholeL1 reads all size entries of an L1 table, past the disk size too.
func (im *Image) wholeL1(what string, off uint64, size uint32) ([]uint64, error) {
	if size > maxL1Entries {
		return nil, im.corrupt("%s has %d entries, more than QEMU's limit of %d", what, size, maxL1Entries)
	}
	if size == 0 {
		return nil, nil
	}
	if err := im.checkTable(what, off, int64(size)*8); err != nil {
		return nil, err
	}
	return im.readL1(int64(off), int64(size), what)
}

// compressedSpan returns the host bytes [off, end) of a compressed cluster
// descriptor: the low x bits are the offset, the next cluster_bits-8 bits
// the number of 512-byte sectors after the first.
func (im *Image) compressedSpan(e uint64) (int64, int64) {
	x := 62 - (im.clusterBits - 8)
	off := int64(e & (uint64(1)<<x - 1))
	sectors := int64((e>>x)&(uint64(1)<<(im.clusterBits-8)-1)) + 1
	return off, off + sectors*sectorSize - off%sectorSize
}
