// Package qcow2 reads qcow2 disk images directly, without QEMU: the backup
// path uses it to read a disk (or one of its internal snapshots) without
// reading its holes, and to find the clusters that changed between two
// internal snapshots from the image's tables alone. It never writes.
//
// # What it reads
//
// Open parses the header of version 2 and 3 images (QEMU's
// docs/interop/qcow2.txt), the header extensions (backing format, feature
// names), the active L1 table and the snapshot table. Image.Active and
// Image.Snapshot return a Layer: an io.ReaderAt over one virtual disk, with
// Extents (the ranges that may hold non-zero data) and ChangedClusters (the
// ranges that may differ between two snapshot layers). Image.UniqueBytes
// gives, per snapshot, the bytes deleting it would free, counted from the
// tables' references.
//
// Supported: cluster sizes from 512 B to 2 MiB; zero clusters, with or
// without a preallocated offset; compressed clusters, deflate (zlib) and
// zstd (compression_type 1); internal snapshots, including those taken
// before a resize (their own disk size and a shorter L1 table); dirty images
// (lazy refcounts; refcounts are never read) and images QEMU marked corrupt
// (read as QEMU reads them read only; see Image.MarkedCorrupt); backing files
// in qcow2 or raw format, named relative to the image's directory, with the
// format from the header extension or probed by the qcow2 magic, up to 16
// deep. Unallocated clusters read from the backing file (zeros past its end)
// in the active layer and in snapshot layers alike, or as zeros without one.
//
// Not supported, with an error that wraps ErrUnsupported and names the
// feature (kind core.KindInvalid): encryption (AES or LUKS), external data
// files, extended L2 entries (subclusters), unknown incompatible feature
// bits, versions other than 2 and 3, cluster_bits outside 9..21, backing
// files in other formats or behind a protocol (json:, nbd://, ...).
//
// # Damaged and hostile files
//
// Every offset and size taken from the file is checked before it is used:
// tables must be cluster aligned and inside the file, the L1 table must cover
// the virtual size and stay within QEMU's 32 MiB limit, the snapshot table
// within 65536 entries and 64 MiB, and no buffer is larger than the file (or
// one cluster) justifies. A structure that fails a check is a core.KindCorrupt
// error that names it, for example
// "qcow2 /path: L2 table at 0x50000 (L1 entry 0) beyond end of file (size 327680)".
// A file that is not qcow2 at all is core.KindInvalid. Nothing panics.
// Structures in the middle of the disk (L2 tables, data clusters) are only
// checked when they are read, so Open succeeding does not prove the whole
// image sound.
//
// # Concurrency and consistency
//
// Image and Layer methods are safe for concurrent use by several goroutines
// (backups read with a few); Close must not race with them. L2 tables are
// read on demand into a small cache bounded in bytes (64 tables of 64 KiB),
// and the last few decompressed clusters are kept.
//
// Data clusters (and a raw backing file's data) are read without filling the
// page cache (package uncached): a backup reads each once, and should not push
// out what the host caches for its virtual machines. Tables are read as usual.
//
// The reader takes no lock and sees the file as it is on disk. The active
// layer of an image that a running QEMU has open is NOT consistent: QEMU
// caches L2 tables and refcounts in memory and writes them back later, and
// Open read the active L1 table once. Read an internal snapshot instead: its
// tables are written in full before the snapshot command returns and never
// change afterwards (until the snapshot is deleted). For the same reason
// ChangedClusters accepts snapshot layers only.
package qcow2
