// Package xfs reads an XFS file system inside a disk image, read only and in
// pure Go, for fsimage: Lstat, ReadDir, Readlink and Open over an
// io.ReaderAt, with no mount, no kernel and no xfsprogs. It never writes.
//
// # What it reads
//
// The on-disk format is the one described in the kernel's "XFS Algorithms &
// Data Structures" and fs/xfs/libxfs/xfs_format.h and xfs_da_format.h.
//
//   - Superblocks of version 5 (CRC-enabled, what mkfs.xfs makes today) and
//     version 4 (V2 directories), block sizes 512 B..64 KiB, sector sizes
//     512 B..32 KiB, inode sizes 256 B..2 KiB, any AG geometry.
//   - Incompatible features understood: ftype (file types in directory
//     entries), sparse inode chunks, meta_uuid, bigtime (timestamps to 2486,
//     decoded per inode by its bigtime flag), nrext64 (64-bit extent
//     counters), exchange-range and parent pointers (neither changes how
//     files are read). Read-only-compatible features (finobt, rmapbt,
//     reflink, inobtcount and unknown ones) need no support from a reader:
//     shared (reflinked) extents are plain extents here.
//   - Inodes v1, v2 (version 4 file systems) and v3 (version 5), with
//     legacy or bigtime timestamps (nanoseconds kept).
//   - Data forks in all three formats: local (in the inode), an extent list,
//     and a B+tree of extents (root in the inode, "BMA3"/"BMAP" blocks).
//     Holes and unwritten extents read as zeros; reads past the end of file
//     return io.EOF.
//   - Directories in every form: shortform (in the inode, 4- and 8-byte
//     inode numbers), block ("XDB3"/"XD2B"), leaf and node (data blocks
//     "XDD3"/"XD2D" below the 32 GiB leaf offset; the hash index is not
//     needed and not read), with and without ftype, and directory blocks
//     larger than file system blocks.
//   - Symbolic links, local and remote ("XSLM" headers on version 5), device
//     numbers of character and block devices (returned in the Linux
//     encoding of stat(2)'s st_rdev), FIFOs and sockets. Hard links share an
//     inode number.
//
// Not supported, with an error that wraps ErrUnsupported and names the
// feature (kind core.KindInvalid): superblock versions other than 4 and 5,
// version 4 without V2 directories, the metadata directory tree (metadir),
// zoned realtime devices, unknown incompatible feature bits, a file system
// that mkfs did not finish or that is flagged needs-repair, and files whose
// data live on the realtime device (their metadata still reads: Lstat and
// ReadDir work, Open refuses).
//
// # Damaged and hostile images
//
// Every number taken from the image is checked before it is used: inode
// numbers and block numbers must fall inside an allocation group and the
// image, forks inside the inode, records inside their block, B+trees at
// most 16 levels deep with levels that go down by one at every step and no
// block visited twice, directory entries inside their block with lengths
// that move forward. On version 5 file systems the CRC32C of the
// superblock, of every inode and of every B+tree, directory and remote
// symlink block is verified, together with its block number, owner and
// file system UUID. A structure that fails a check is a core.KindCorrupt
// error that names it, for example "xfs: inode 131: data fork B+tree block
// 25: level 1, want 0". No allocation is larger than what was read from the
// image justifies, and nothing panics.
//
// # Consistency
//
// The log is not replayed. An image of a file system that was cleanly
// unmounted, frozen, or snapshotted after a sync reads exactly; an image
// taken while the file system was busy reads as the metadata on disk were at
// that moment, which may miss changes that were still only in the log.
//
// FS methods and open files are safe for concurrent use. The FS keeps a
// small cache: the last 8 directories listed (up to 131072 entries each)
// and the last 64 blocks of inodes read. Symbolic links are never followed,
// and the FS does not look for directory cycles (a damaged image can make a
// directory its own descendant): a caller that walks the tree bounds its
// depth or remembers the inode numbers it has seen.
package xfs
