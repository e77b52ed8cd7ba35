// Package ext4 reads an ext2, ext3 or ext4 file system inside a disk image,
// read only and in pure Go, for fsimage: Lstat, ReadDir, Readlink and Open
// over an io.ReaderAt, with no mount, no kernel and no e2fsprogs. It never
// writes.
//
// # What it reads
//
// The format is the one of the kernel's Documentation/filesystems/ext4 and
// fs/ext4/ext4.h.
//
//   - Superblocks of revision 0 and 1; block sizes 1 KiB to 64 KiB; 32- and
//     64-byte group descriptors (64bit); flex_bg; meta_bg (descriptor blocks
//     in their meta group, after a superblock copy); sparse_super and
//     sparse_super2; bigalloc (extents stay in blocks); inodes of 128 bytes
//     and more, with nanosecond times when the inode has room for them.
//   - File data through extent trees of any depth (unwritten extents read as
//     zeros) and through the block maps of ext2/ext3 (direct, single, double
//     and triple indirect); holes read as zeros; inline data (i_block and
//     the system.data attribute) for files, directories and symbolic links.
//   - Directories read block by block: linear ones, and the leaves of htree
//     directories (whose index blocks hold no live entries); the hash index
//     is never needed. Entries "." and ".." are left out.
//   - Fast symbolic links (in i_block), slow ones (in a block), inline ones;
//     device numbers in the old and the new encoding (FileInfo.Rdev is the
//     Linux st_rdev encoding); hard links share an inode number.
//   - A journal that needs recovery (needs_recovery, as in every image of a
//     file system taken while mounted) is replayed in memory at Open, as the
//     kernel would at mount: the committed transactions, without revoked
//     blocks and without a last transaction that lacks its commit block;
//     journal checksums v2 and v3 are checked. The superblock is read again
//     after the replay. Nothing is written to the image.
//
// metadata_csum checksums are verified: superblock, group descriptors (also
// the crc16 of gdt_csum file systems), inodes, extent tree blocks, directory
// leaf blocks with a checksum tail, journal blocks. A mismatch is a
// core.KindCorrupt error naming the structure. (Extended attribute blocks
// and htree index blocks are never read, so not checked.)
//
// Not supported, with an error that wraps fsimage.ErrUnsupported and names
// the feature (kind core.KindInvalid): at Open, the incompatible features
// compression, journal_dev (an external journal device, not a file
// system), dirdata and unknown bits; superblock revisions above 1; a
// checksum type other than crc32c; recovery from an external journal; a
// journal with fast commits or unknown features that needs recovery. When
// a file is read: encrypted (fscrypt) files, directories and symbolic links
// ("inode 12 is encrypted (fscrypt)"; Lstat still works). Casefolded
// directories (casefold) are read, but names are looked up exactly as
// stored, not case-insensitively. Read-only compatible features need no
// support from a reader that never writes.
//
// # Damaged and hostile images
//
// Every number taken from the image is checked before it is used: block
// numbers inside the file system, inode numbers inside the inode count,
// inode tables inside the file system, the file system inside the image
// (a truncated image is refused at Open), extent trees at most 5 deep with
// depths that go down by one at every level (so a loop is an error),
// entries sorted and inside the range their parent gives them, directory
// records inside their block with lengths of at least 12 bytes, names that
// are single path components and not repeated, directory sizes within the
// image, symbolic link targets shorter than a block and without NUL. A
// structure that fails a check is a core.KindCorrupt error that names it,
// for example "ext4: inode 15: extent tree block 1089: depth 1, want 0".
// No allocation is larger than what the image's size justifies, no walk is
// unbounded, nothing panics. What the checks cannot see is data: a file
// whose extents all point at the same blocks reads as that data repeated,
// up to its (checked) size.
//
// # Concurrency and cost
//
// FS and the files it opens are safe for concurrent use. An FS keeps up to
// 4 MiB of metadata blocks and the entries of recently read directories
// (up to 2^18 names), so that walking a tree reads each directory once.
// File data is read straight from the image, in runs as long as the
// extents allow.
package ext4
