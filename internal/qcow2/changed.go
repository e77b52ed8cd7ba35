package qcow2

import (
	"github.com/cairn-backup/cairn/internal/core"
)

// ChangedClusters returns the ranges whose bytes may differ between two
// snapshot layers of the same image, from the L1 and L2 tables alone (no
// data is read): cluster aligned, merged, sorted and clipped to to.Size().
//
// The rules, checked against QEMU 7.2:
//   - L1 entries are compared masked to their offset (bits 9-55): equal
//     entries (both 0 included) share one L2 table, so that range is the same.
//   - L2 entries are compared without bit 63 ("copied", stale in snapshot
//     copies). Bit 62 marks a compressed cluster, whose descriptor then owns
//     bit 0. An uncompressed entry reads as zero when bit 0 (the zero flag) is
//     set or its offset is 0; a zero-flagged entry may still carry an offset.
//     A cluster is unchanged when it reads as zero in both, or when both
//     entries are identical, uncompressed and not zero. With a backing file an
//     unallocated cluster reads the backing file, so it is unchanged only
//     against another unallocated one. Anything else counts as changed, so
//     writing zeros or rewriting identical bytes shows as a change.
//   - A snapshot taken before a resize has a shorter L1 table: missing
//     entries are 0. Everything past the smaller of the two sizes is changed.
//
// Only snapshot layers can be compared: the active layer's tables may be
// cached, unwritten, in a running QEMU. Comparing with the active layer, or
// layers of two Images, is a core.KindInvalid error.
func ChangedClusters(from, to *Layer) ([]Extent, error) {
	if from == nil || to == nil {
		return nil, core.Invalid("qcow2: ChangedClusters needs two layers")
	}
	if from.im != to.im {
		return nil, core.Invalid("qcow2: ChangedClusters compares snapshots of one image; got %s and %s", from.im.path, to.im.path)
	}
	im := to.im
	if from.snap < 0 || to.snap < 0 {
		return nil, core.Invalid("qcow2 %s: ChangedClusters compares two snapshots; the active layer is not stable while QEMU may run it", im.path)
	}
	cs := im.clusterSize
	common := min(from.size, to.size)
	withBacking := im.backing != nil
	var out extentList
	for i := int64(0); i < im.l1Needed(common); i++ {
		a, b := l1At(from.l1, i), l1At(to.l1, i)
		if a == b {
			continue
		}
		ta, err := im.tableForDiff(a, i)
		if err != nil {
			return nil, err
		}
		tb, err := im.tableForDiff(b, i)
		if err != nil {
			return nil, err
		}
		base := i * im.l2Range()
		for j := int64(0); j < im.l2Entries; j++ {
			off := base + j*cs
			if off >= common {
				break
			}
			if !sameCluster(l2At(ta, j), l2At(tb, j), withBacking) {
				out.add(off, cs)
			}
		}
	}
	if to.size > common {
		start := common &^ (cs - 1)
		out.add(start, to.size-start)
	}
	return clip(out, to.size), nil
}

func l1At(l1 []uint64, i int64) uint64 {
	if i >= int64(len(l1)) {
		return 0
	}
	return l1[i] & l1OffsetMask
}

func l2At(t []uint64, j int64) uint64 {
	if t == nil {
		return 0
	}
	return t[j]
}

// tableForDiff reads an L2 table without pushing the tables a read is
// using out of the cache.
func (im *Image) tableForDiff(off uint64, i int64) ([]uint64, error) {
	if off == 0 {
		return nil, nil
	}
	return im.loadL2(off, i, false)
}

// sameCluster applies the L2 rules of ChangedClusters.
func sameCluster(a, b uint64, withBacking bool) bool {
	a &^= l2Copied
	b &^= l2Copied
	za, zb := readsZero(a), readsZero(b)
	if za && zb {
		if !withBacking {
			return true
		}
		// unallocated reads the backing file, the zero flag reads zeros
		return (a&l2OffsetMask == 0 && a&l2ZeroFlag == 0) == (b&l2OffsetMask == 0 && b&l2ZeroFlag == 0)
	}
	return a == b && a&l2Compressed == 0 && !za
}

// readsZero: an uncompressed entry with the zero flag or without an offset.
func readsZero(e uint64) bool {
	return e&l2Compressed == 0 && (e&l2ZeroFlag != 0 || e&l2OffsetMask == 0)
}
