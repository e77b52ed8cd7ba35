// Package filebackup backs up file trees into a backup repository and
// restores them: Backup walks paths into tree and data blobs, Restore writes
// a backup back to disk, Walk and WalkTrees list one (for `cairn repo ls`
// and for verification).
//
// The package needs only the small Repository interface (SaveBlob,
// LoadBlob) of the repository engine. Content is cut by the
// content-defined chunker (chunker.NewCDC with the default parameters) and
// each chunk is a format.DataBlob; each directory listing is a
// format.TreeBlob in the format below. Blob ids come from the repository
// (a keyed hash of the plaintext), so an unchanged file or directory gives
// the same ids again and is stored once.
//
// # Tree format, version 1
//
// A tree blob is one directory's listing: a JSON object in the canonical
// encoding described here, byte for byte. The encoding is canonical so that
// an unchanged directory gives identical bytes, hence the same id, and
// deduplicates; a decoder accepts nothing else (see Decoding).
//
//	{"version":1,"nodes":[NODE,NODE,...]}
//
// "version" comes first. A reader refuses a higher version with "tree format
// version N is newer than this cairn supports: upgrade cairn" (code
// "format_version"), whatever the rest holds. "nodes" is sorted by the bytes
// of the names, which are unique. An empty directory is
// {"version":1,"nodes":[]}. There is no whitespace anywhere.
//
// A NODE is an object with these keys, in this order; a key in brackets is
// present only where said:
//
//	"name"      the entry's name as a JSON string when it is valid UTF-8;
//	or "name_raw"  otherwise: the name's bytes in standard base64 (with padding)
//	"type"      "file", "dir", "symlink", "chardev", "blockdev" or "fifo"
//	"mode"      permission bits with setuid (04000), setgid (02000) and sticky
//	            (01000), as a decimal number (mask 07777; the type is in "type")
//	"uid"       owner's user id
//	"gid"       owner's group id
//	["user"]    owner's user name, when it was known and valid UTF-8
//	["group"]   owner's group name, likewise
//	["size"]    files only, always there: the content's length in bytes
//	"mtime"     modification time
//	"ctime"     status change time
//	"inode"     inode number
//	"device"    device number of the file system holding the entry (st_dev)
//	"links"     hard link count (st_nlink)
//	["xattrs"]  when the entry has extended attributes: a list sorted by the
//	            name bytes, names unique, of {"name":S,"value":B}, the name
//	            as "name"/"name_raw" above, the value B in base64
//	["target"]  symlinks only: the target when it is valid UTF-8;
//	or ["target_raw"]  the target's bytes in base64 otherwise
//	["rdev"]    character and block devices only: the device number (st_rdev)
//	["content"] files only, always there: the data blob ids of the content, in
//	            order, each as 64 lower-case hex digits ([] for an empty file)
//	["subtree"] directories only: the id of the directory's tree blob
//
// Numbers are unsigned decimal integers without leading zeros, sign or
// exponent. Times are RFC 3339 in UTC with exactly nine fractional digits
// ("2024-02-29T23:59:58.987654321Z"), years 0000 to 9999 (a time outside
// that range is stored clamped to it). JSON strings escape '"' and '\' with
// a backslash and bytes below 0x20 as \u00xx with lower-case hex digits;
// every other character is written as itself (UTF-8).
//
// Hard links are files: every name of an inode is a "file" node with its
// own full "content", and "links" > 1 with equal "device" and "inode" tells
// that they were one file. Sockets are not stored (Stats.Sockets counts
// them). Access times are not stored.
//
// # Decoding
//
// DecodeTree validates everything and refuses, as a core.KindCorrupt error,
// any tree where: a name is empty, "." or "..", or holds '/' or NUL (a name
// is always exactly one path component); names are unsorted or repeated; a
// type is unknown; "mode" has bits outside 07777; a field is present that
// the type does not have (content, size, subtree, target, rdev); a
// directory has no subtree; a file's content is empty while its size is not
// or the reverse; an id is zero; a symlink target is empty or holds NUL; an
// xattr name is empty, holds NUL, or the list is unsorted or repeated; and
// finally any input whose bytes differ from the canonical encoding of what
// was decoded (unknown keys, whitespace, other key order, other escapes,
// upper-case hex, other time zones, duplicate keys...). Hence a decoded
// tree re-encodes to the very same bytes. That a file's content is as long
// as its size is checked by Restore, which has the chunks.
//
// # Backup
//
// Backup(ctx, repo, paths, opts) stores each path as one entry of the root
// tree, named by the path's base name; two paths giving one name are refused
// (core.KindInvalid naming both). "/" contributes its entries instead (the
// root directory's own metadata is not kept). A path that is a file makes a
// root tree with one file entry. A missing path is a core.KindNotFound error
// naming it, before anything is stored. Where the paths were is for the
// caller to record.
//
// Entries are examined with lstat (symlinks are stored, never followed) and
// opened relative to their directory with O_NOFOLLOW; files are read with
// O_NOATIME when permitted. Excludes (filepath.Match on base names) skip an
// entry with everything below it; OneFileSystem stores a directory on
// another file system (a mount point) as an empty directory; SkipDirs (the
// repository, when it is local) are left out wherever the walk meets them,
// matched by device and inode.
//
// With opts.Parent (the root tree of an earlier backup of the same paths),
// a file whose size, mtime, ctime, inode and device equal those of the
// parent's node at the same path keeps the parent's content ids and is not
// read. Another name of an inode being read in this backup takes the
// content read for the first name, so every inode is read once.
//
// An entry that cannot be examined or read (it vanished, permission denied,
// I/O error) is left out of its directory and counted in Stats.Errors with
// its path (the first 20 in Stats.ErrorSamples); the backup goes on and
// succeeds. A file whose size changed while it was read is stored as read,
// with a warning (Stats.Warnings, WarningSamples). Errors of the repository
// and the end of ctx stop the backup with an error.
//
// Parallelism: one goroutine walks the directories in name order and hands
// regular files to opts.Workers file workers, which read and chunk them and
// hand each chunk to one of opts.Workers savers (or save it themselves when
// every saver is busy), so many small files and a single big one both keep
// every core busy. A directory's tree is encoded and saved as soon as its
// last entry is done, by whichever goroutine finishes it. Trees are sorted
// before encoding and hold nothing that depends on scheduling, so the root
// id does not depend on the number of workers or on timing.
//
// # Restore
//
// Restore(ctx, repo, root, target, opts) writes the backup's root entries
// into the directory target (created if missing; existing directories are
// merged into). opts.Include restricts it to some paths with everything below
// them and the directories above them (with their metadata); every include
// must name something in the backup (core.KindNotFound otherwise, before
// anything is written).
//
// Nothing is ever written outside target, whatever a backup holds. Names are
// validated when trees are decoded and again before use, so each is one
// path component. Every directory is created with mkdirat and opened with
// openat(O_DIRECTORY|O_NOFOLLOW) relative to its parent's descriptor, so a
// symlink restored earlier, or already present in the target, is never
// passed through: an existing symlink where a directory is to be restored
// is an error, or, with Overwrite, is removed and replaced by the
// directory. When a directory must be opened again by path (for hard links
// and for directories' metadata), openat2 with RESOLVE_BENEATH,
// RESOLVE_NO_SYMLINKS and RESOLVE_NO_MAGICLINKS is used, falling back to the
// openat walk where the kernel lacks openat2. Hard links are made only to
// files written by this restore, and only when both nodes share inode,
// device, size and content; otherwise each name gets its own copy.
//
// A file is written to a temporary name in its directory
// (".<name>.cairn-restore-<random>", created with O_EXCL|O_NOFOLLOW), its
// chunks loaded ahead in parallel and written in order; aligned 4 KiB blocks
// of zeros are skipped, leaving holes, and the file is truncated to its
// size. Only when the content is complete and its length equals the node's
// size, and the metadata is set, is it renamed into place (with
// RENAME_NOREPLACE unless Overwrite), so no partial file ever has its final
// name. On any error the temporary is removed.
//
// Metadata is set after content, in this order: extended attributes, owner
// (only with opts.Owners), mode, then mtime (atime is set to mtime).
// Without Owners the restoring user owns what is restored, so a file's
// setuid (setgid) bit is dropped, with a warning, unless the node's user
// (group) is the restoring one: a restore by root never makes somebody's
// setuid file setuid-root. Symlinks
// get owner and times without being followed; devices and fifos are made
// with mknodat (without the privilege to do so: a warning, and skipped).
// Directories' metadata is set at the end, deepest first, so that writing
// their content does not change their times and a read-only mode does not
// stop the restore.
//
// Without opts.Overwrite, an existing non-directory at the place of a file,
// symlink, device or fifo is an error naming the path (core.KindConflict)
// and stays untouched. An entry that cannot be restored (an existing entry,
// a damaged or missing chunk or tree) is counted in Stats.Errors, the rest
// is restored, and Restore returns an error of the first one's kind naming
// it. A full disk (the message names the file and says the disk is full),
// an exceeded quota, a read-only file system, a repository that cannot be
// read, or the end of ctx stop the restore at once. A missing privilege to
// set an owner or an extended attribute is a warning.
package filebackup
