package qcow2

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/uncached"
)

// ErrUnsupported is wrapped by every error about a valid qcow2 feature this
// reader does not implement (encryption, external data files, extended L2
// entries, unknown incompatible features, versions other than 2 and 3,
// cluster sizes outside 512 B..2 MiB, other backing formats). Test with
// errors.Is; the error's message names the feature, and its kind is
// core.KindInvalid.
var ErrUnsupported = errors.New("not supported by cairn's qcow2 reader")

// Limits. The table limits are QEMU's own, so that every image QEMU opens
// opens here too, and no allocation is larger than the file justifies.
const (
	headerMagic        = "QFI\xfb"
	v2HeaderLen        = 72
	v3HeaderLen        = 104
	minClusterBits     = 9
	maxClusterBits     = 21
	maxL1Bytes         = 32 << 20 // QEMU's QCOW_MAX_L1_SIZE: 4 Mi entries
	maxL1Entries       = maxL1Bytes / 8
	maxSnapshots       = 65536    // QEMU's QCOW_MAX_SNAPSHOTS
	maxSnapshotExtra   = 1024     // QEMU's QCOW_MAX_SNAPSHOT_EXTRA_DATA
	maxSnapshotTable   = 64 << 20 // QEMU's QCOW_MAX_SNAPSHOTS_SIZE
	maxBackingName     = 1023
	maxVirtualSize     = 1 << 61 // far beyond any L1 table QEMU accepts
	maxBackingDepth    = 16
	sectorSize         = 512
	l1OffsetMask       = 0x00fffffffffffe00
	l2OffsetMask       = 0x00fffffffffffe00
	l2Copied           = uint64(1) << 63
	l2Compressed       = uint64(1) << 62
	l2ZeroFlag         = uint64(1)
	incompatDirty      = uint64(1) << 0
	incompatCorrupt    = uint64(1) << 1
	incompatDataFile   = uint64(1) << 2
	incompatCompress   = uint64(1) << 3
	incompatExtendedL2 = uint64(1) << 4
	extEnd             = 0x00000000
	extBackingFormat   = 0xe2792aca
	extFeatureTable    = 0x6803f857
	compressionZlib    = 0
	compressionZstd    = 1
)

// Image is an opened qcow2 file, read only. Its methods and those of its
// layers are safe for concurrent use; Close must not race with them.
type Image struct {
	path        string
	f           *os.File
	data        *uncached.File // f, for data clusters
	fileSize    atomic.Int64   // refreshed when a structure seems to lie beyond it
	regular     bool
	version     int
	clusterBits uint
	clusterSize int64
	l2Entries   int64 // entries per L2 table
	size        int64
	compression int
	incompat    uint64
	l1          []uint64 // the active L1 table, only the entries the size needs
	snapshots   []Snapshot
	snapL1      []snapL1Ref // parallel to snapshots

	backingName   string
	backingFormat string
	backing       source // nil without a backing file

	l2      *l2Cache
	zc      *clusterCache // decompressed clusters
	seekMu  sync.Mutex    // serialises SEEK_DATA / SEEK_HOLE walks of f
	zstdMu  sync.Mutex
	zstdDec []*zstdDecoder // idle zstd decoders
}

type snapL1Ref struct {
	offset uint64
	size   uint32
}

// Snapshot describes one internal snapshot from the snapshot table.
type Snapshot struct {
	ID          string        // QEMU's unique id, usually a number
	Name        string        // the tag given at creation
	VMStateSize int64         // bytes of saved VM state; 0 for a disk-only snapshot
	DiskSize    int64         // virtual disk size when taken (the header size for entries that do not record it)
	Date        time.Time     // when it was taken
	VMClock     time.Duration // guest run time when taken
	L1Offset    int64         // where its L1 table is in the file
	L1Size      int           // entries in its L1 table
}

// Open opens a qcow2 image read only: it parses the header (versions 2 and
// 3), the header extensions, the active L1 table and the snapshot table, and
// opens the backing chain. Errors are core.KindCorrupt for a damaged file,
// core.KindInvalid for a file that is not qcow2, and wrap ErrUnsupported for
// features this reader does not implement.
func Open(path string) (*Image, error) {
	return openImage(path, 0)
}

func openImage(path string, depth int) (*Image, error) {
	f, size, regular, err := openFile(path)
	if err != nil {
		return nil, err
	}
	im := &Image{path: path, f: f, data: uncached.New(f), regular: regular}
	im.fileSize.Store(size)
	if err := im.parse(); err != nil {
		f.Close()
		return nil, err
	}
	// Caches bounded in bytes: 64 L2 tables of 64 KiB clusters, 16 of 2 MiB.
	im.l2 = newL2Cache(int(min(max((32<<20)/im.clusterSize, 4), 64)))
	im.zc = newClusterCache(int(min(max((8<<20)/im.clusterSize, 2), 16)))
	if err := im.openBacking(depth); err != nil {
		f.Close()
		return nil, err
	}
	return im, nil
}

// openFile opens a regular file or a block device for reading and returns
// its size. Anything else (a FIFO, a character device, a directory) is
// refused before it is opened, so a hostile backing name cannot block Open.
func openFile(path string) (*os.File, int64, bool, error) {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, 0, false, &core.Error{Kind: core.KindNotFound, Code: "not_found", Message: "qcow2", Err: err}
		}
		return nil, 0, false, fmt.Errorf("qcow2: %w", err)
	}
	mode := fi.Mode()
	block := mode&fs.ModeDevice != 0 && mode&fs.ModeCharDevice == 0
	if !mode.IsRegular() && !block {
		return nil, 0, false, core.Invalid("qcow2: %s is not a regular file or a block device (%s)", path, mode.Type())
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, false, fmt.Errorf("qcow2: %w", err)
	}
	size := fi.Size()
	if block {
		if size, err = f.Seek(0, io.SeekEnd); err != nil {
			f.Close()
			return nil, 0, false, fmt.Errorf("qcow2: size of %s: %w", path, err)
		}
	}
	return f, size, !block, nil
}

// Close closes the file and its backing chain.
func (im *Image) Close() error {
	err := im.f.Close()
	if im.backing != nil {
		if berr := im.backing.close(); err == nil {
			err = berr
		}
	}
	im.zstdMu.Lock()
	for _, d := range im.zstdDec {
		d.close()
	}
	im.zstdDec = nil
	im.zstdMu.Unlock()
	return err
}

// Path returns the path the image was opened with.
func (im *Image) Path() string { return im.path }

// Version returns the qcow2 version, 2 or 3.
func (im *Image) Version() int { return im.version }

// Size returns the virtual size of the active layer in bytes.
func (im *Image) Size() int64 { return im.size }

// ClusterSize returns the cluster size in bytes.
func (im *Image) ClusterSize() int { return int(im.clusterSize) }

// BackingFile returns the backing file name as the header stores it, and the
// backing format ("qcow2" or "raw", probed when the header does not say); ""
// for an image without a backing file.
func (im *Image) BackingFile() (name, format string) { return im.backingName, im.backingFormat }

// MarkedCorrupt reports whether QEMU flagged the image corrupt (incompatible
// feature bit 1). QEMU still opens such an image read only, and so does this
// reader; its data may be wrong.
func (im *Image) MarkedCorrupt() bool { return im.incompat&incompatCorrupt != 0 }

// Snapshots returns the snapshot table in file order.
func (im *Image) Snapshots() []Snapshot {
	out := make([]Snapshot, len(im.snapshots))
	copy(out, im.snapshots)
	return out
}

func (im *Image) corrupt(format string, args ...any) *core.Error {
	return core.Corrupt("qcow2 %s: %s", im.path, fmt.Sprintf(format, args...))
}

func unsupported(path, format string, args ...any) *core.Error {
	return &core.Error{Kind: core.KindInvalid, Code: "unsupported",
		Message: fmt.Sprintf("qcow2 %s: %s", path, fmt.Sprintf(format, args...)), Err: ErrUnsupported}
}

// within reports whether [off, off+n) lies inside the file. A running QEMU
// grows the file, so a miss re-reads the size once before failing.
func (im *Image) within(off, n int64) bool {
	if off < 0 || n < 0 || off > maxVirtualSize || n > maxVirtualSize {
		return false
	}
	if off+n <= im.fileSize.Load() {
		return true
	}
	if im.regular {
		if fi, err := im.f.Stat(); err == nil {
			im.fileSize.Store(fi.Size())
		}
	}
	return off+n <= im.fileSize.Load()
}

// readFull reads exactly len(p) bytes at off, which the caller has checked
// to lie inside the file; a file that shrank since reads as corrupt.
func (im *Image) readFull(p []byte, off int64, what string) error {
	n, err := im.f.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return im.corrupt("%s at 0x%x: file ends after %d of %d bytes", what, off, n, len(p))
	}
	return fmt.Errorf("qcow2 %s: reading %s at 0x%x: %w", im.path, what, off, err)
}

func (im *Image) parse() error {
	fileSize := im.fileSize.Load()
	var fixed [v3HeaderLen]byte
	n, err := im.f.ReadAt(fixed[:], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("qcow2 %s: reading the header: %w", im.path, err)
	}
	if n < 4 || string(fixed[:4]) != headerMagic {
		return core.Invalid("qcow2 %s: not a qcow2 image (no QFI\\xfb magic)", im.path)
	}
	if n < 8 {
		return im.corrupt("header truncated: the file has %d bytes", n)
	}
	be := binary.BigEndian
	version := be.Uint32(fixed[4:8])
	if version != 2 && version != 3 {
		return unsupported(im.path, "version %d (only 2 and 3 exist)", version)
	}
	im.version = int(version)
	hdrLen := uint32(v2HeaderLen)
	if version == 3 {
		hdrLen = v3HeaderLen
	}
	if n < int(hdrLen) {
		return im.corrupt("header truncated: version %d needs %d bytes, the file has %d", version, hdrLen, n)
	}
	backingOff := be.Uint64(fixed[8:16])
	backingLen := be.Uint32(fixed[16:20])
	clusterBits := be.Uint32(fixed[20:24])
	virtualSize := be.Uint64(fixed[24:32])
	crypt := be.Uint32(fixed[32:36])
	l1Size := be.Uint32(fixed[36:40])
	l1Off := be.Uint64(fixed[40:48])
	nbSnap := be.Uint32(fixed[60:64])
	snapOff := be.Uint64(fixed[64:72])

	if clusterBits < minClusterBits || clusterBits > maxClusterBits {
		return unsupported(im.path, "cluster_bits %d (cluster sizes from 512 B to 2 MiB are supported)", clusterBits)
	}
	im.clusterBits = uint(clusterBits)
	im.clusterSize = int64(1) << clusterBits
	im.l2Entries = im.clusterSize / 8

	var incompat uint64
	if version == 3 {
		incompat = be.Uint64(fixed[72:80])
		hdrLen = be.Uint32(fixed[100:104])
		if hdrLen < v3HeaderLen {
			return im.corrupt("header_length %d is below the %d bytes of a version 3 header", hdrLen, v3HeaderLen)
		}
		if int64(hdrLen) > im.clusterSize {
			return im.corrupt("header_length %d exceeds the cluster size %d", hdrLen, im.clusterSize)
		}
	}
	im.incompat = incompat

	// The header, its extensions and the backing file name live in the
	// first cluster.
	first := make([]byte, min(im.clusterSize, fileSize))
	if n, err := im.f.ReadAt(first, 0); n < len(first) {
		return fmt.Errorf("qcow2 %s: reading the first cluster: %w", im.path, err)
	}
	if int64(len(first)) < int64(hdrLen) {
		return im.corrupt("header truncated: header_length %d, the file has %d bytes", hdrLen, len(first))
	}
	if version == 3 && hdrLen > v3HeaderLen {
		im.compression = int(first[104])
	}

	if backingOff != 0 && backingOff > uint64(im.clusterSize) {
		return im.corrupt("backing file name offset 0x%x is outside the first cluster", backingOff)
	}
	extStart := int64(hdrLen)
	extLimit := im.clusterSize
	if backingOff != 0 {
		extLimit = int64(backingOff)
	}
	extLimit = min(extLimit, int64(len(first)))
	features, err := im.parseExtensions(first, extStart, extLimit)
	if err != nil {
		return err
	}

	// Incompatible features: refuse what this reader cannot read.
	if incompat&incompatDataFile != 0 {
		return unsupported(im.path, "external data file (incompatible feature bit 2)")
	}
	if incompat&incompatExtendedL2 != 0 {
		return unsupported(im.path, "extended L2 entries / subclusters (incompatible feature bit 4)")
	}
	known := incompatDirty | incompatCorrupt | incompatDataFile | incompatCompress | incompatExtendedL2
	if unknown := incompat &^ known; unknown != 0 {
		var names []string
		for bit := uint(0); bit < 64; bit++ {
			if unknown&(1<<bit) == 0 {
				continue
			}
			name := features[[2]byte{0, byte(bit)}]
			if name == "" {
				names = append(names, fmt.Sprintf("bit %d", bit))
			} else {
				names = append(names, fmt.Sprintf("bit %d (%s)", bit, name))
			}
		}
		return unsupported(im.path, "unknown incompatible feature %s", strings.Join(names, ", "))
	}
	switch {
	case incompat&incompatCompress != 0 && im.compression == compressionZlib:
		return im.corrupt("the compression type feature bit is set but compression_type is zlib")
	case incompat&incompatCompress == 0 && im.compression != compressionZlib:
		return im.corrupt("compression_type %d without the compression type feature bit", im.compression)
	case im.compression != compressionZlib && im.compression != compressionZstd:
		return unsupported(im.path, "compression type %d (zlib and zstd are supported)", im.compression)
	}
	switch crypt {
	case 0:
	case 1:
		return unsupported(im.path, "AES encryption")
	case 2:
		return unsupported(im.path, "LUKS encryption")
	default:
		return unsupported(im.path, "encryption method %d", crypt)
	}

	if backingOff != 0 {
		if backingLen > maxBackingName {
			return im.corrupt("backing file name of %d bytes (at most %d)", backingLen, maxBackingName)
		}
		end := backingOff + uint64(backingLen)
		if end > uint64(im.clusterSize) {
			return im.corrupt("backing file name at 0x%x+%d runs past the first cluster", backingOff, backingLen)
		}
		if end > uint64(len(first)) {
			return im.corrupt("backing file name at 0x%x+%d beyond end of file (size %d)", backingOff, backingLen, fileSize)
		}
		im.backingName = string(first[backingOff:end])
	}

	// Virtual size and the active L1 table.
	if virtualSize > maxVirtualSize {
		return im.corrupt("virtual size %d is too large", virtualSize)
	}
	im.size = int64(virtualSize)
	need := im.l1Needed(im.size)
	if need > maxL1Entries {
		return im.corrupt("virtual size %d needs %d L1 entries, more than QEMU's limit of %d", im.size, need, maxL1Entries)
	}
	if int64(l1Size) < need {
		return im.corrupt("active L1 table has %d entries, the virtual size %d needs %d", l1Size, im.size, need)
	}
	if l1Size > maxL1Entries {
		return im.corrupt("active L1 table has %d entries, more than QEMU's limit of %d", l1Size, maxL1Entries)
	}
	if l1Size > 0 {
		if err := im.checkTable("active L1 table", l1Off, int64(l1Size)*8); err != nil {
			return err
		}
	}
	if im.l1, err = im.readL1(int64(l1Off), need, "active L1 table"); err != nil {
		return err
	}

	return im.parseSnapshots(nbSnap, snapOff)
}

// parseExtensions walks the header extensions in first[start:limit]. It
// records the backing format and returns the feature name table.
func (im *Image) parseExtensions(first []byte, start, limit int64) (map[[2]byte]string, error) {
	be := binary.BigEndian
	features := map[[2]byte]string{}
	seenFormat := false
	for off := start; off+8 <= limit; {
		typ := be.Uint32(first[off : off+4])
		length := int64(be.Uint32(first[off+4 : off+8]))
		if typ == extEnd {
			break
		}
		data := off + 8
		if length > limit-data {
			return nil, im.corrupt("header extension 0x%08x at offset %d: its %d bytes run past the header area (%d bytes)", typ, off, length, limit)
		}
		payload := first[data : data+length]
		switch typ {
		case extBackingFormat:
			if seenFormat {
				return nil, im.corrupt("two backing format header extensions")
			}
			seenFormat = true
			im.backingFormat = string(payload)
		case extFeatureTable:
			for i := 0; i+48 <= len(payload); i += 48 {
				name := string(payload[i+2 : i+48])
				if z := strings.IndexByte(name, 0); z >= 0 {
					name = name[:z]
				}
				features[[2]byte{payload[i], payload[i+1]}] = name
			}
		}
		off = data + (length+7)&^7
	}
	return features, nil
}

// checkTable checks that a table of n bytes at off is cluster aligned and
// inside the file.
func (im *Image) checkTable(what string, off uint64, n int64) error {
	if off&uint64(im.clusterSize-1) != 0 {
		return im.corrupt("%s at 0x%x is not aligned to the cluster size %d", what, off, im.clusterSize)
	}
	if off > maxVirtualSize || !im.within(int64(off), n) {
		return im.corrupt("%s at 0x%x (%d bytes) beyond end of file (size %d)", what, off, n, im.fileSize.Load())
	}
	return nil
}

// l2Range is the number of guest bytes one L1 entry maps.
func (im *Image) l2Range() int64 { return im.clusterSize * im.l2Entries }

// l1Needed is the number of L1 entries a disk of size bytes needs.
func (im *Image) l1Needed(size int64) int64 {
	r := im.l2Range()
	return (size + r - 1) / r
}

// readL1 reads n entries of an L1 table already checked to lie in the file.
func (im *Image) readL1(off, n int64, what string) ([]uint64, error) {
	if n == 0 {
		return nil, nil
	}
	buf := make([]byte, n*8)
	if err := im.readFull(buf, off, what); err != nil {
		return nil, err
	}
	l1 := make([]uint64, n)
	for i := range l1 {
		l1[i] = binary.BigEndian.Uint64(buf[i*8:])
	}
	return l1, nil
}

func (im *Image) parseSnapshots(count uint32, off uint64) error {
	if count == 0 {
		return nil
	}
	if count > maxSnapshots {
		return im.corrupt("snapshot table has %d entries, more than QEMU's limit of %d", count, maxSnapshots)
	}
	// Each entry has at least 40 bytes; the table must hold them all.
	if err := im.checkTable("snapshot table", off, int64(count)*40); err != nil {
		return err
	}
	fileSize := im.fileSize.Load()
	r := bufio.NewReaderSize(io.NewSectionReader(im.f, int64(off), fileSize-int64(off)), 64<<10)
	be := binary.BigEndian
	pos := int64(0) // bytes of the table consumed
	snaps := make([]Snapshot, 0, count)
	refs := make([]snapL1Ref, 0, count)
	for i := uint32(0); i < count; i++ {
		var e [40]byte
		if _, err := io.ReadFull(r, e[:]); err != nil {
			return im.snapTableErr(i, off, pos, err)
		}
		idLen := int64(be.Uint16(e[12:14]))
		nameLen := int64(be.Uint16(e[14:16]))
		extraLen := int64(be.Uint32(e[36:40]))
		if extraLen > maxSnapshotExtra {
			return im.corrupt("snapshot table entry %d at 0x%x: %d bytes of extra data (at most %d)", i, int64(off)+pos, extraLen, maxSnapshotExtra)
		}
		rest := make([]byte, extraLen+idLen+nameLen)
		if _, err := io.ReadFull(r, rest); err != nil {
			return im.snapTableErr(i, off, pos, err)
		}
		entryLen := 40 + int64(len(rest))
		pos += entryLen
		if pad := (8 - entryLen%8) % 8; pad > 0 && i+1 < count {
			if _, err := r.Discard(int(pad)); err != nil {
				return im.snapTableErr(i, off, pos, err)
			}
			pos += pad
		}
		if pos > maxSnapshotTable {
			return im.corrupt("snapshot table at 0x%x is larger than QEMU's limit of %d bytes", off, maxSnapshotTable)
		}
		s := Snapshot{
			ID:          string(rest[extraLen : extraLen+idLen]),
			Name:        string(rest[extraLen+idLen:]),
			VMStateSize: int64(be.Uint32(e[32:36])),
			DiskSize:    im.size,
			Date:        time.Unix(int64(be.Uint32(e[16:20])), int64(be.Uint32(e[20:24]))),
			VMClock:     time.Duration(be.Uint64(e[24:32])),
			L1Offset:    int64(be.Uint64(e[0:8]) & (1<<63 - 1)),
			L1Size:      int(be.Uint32(e[8:12])),
		}
		if extraLen >= 8 {
			v := be.Uint64(rest[0:8])
			if v > maxVirtualSize {
				return im.corrupt("snapshot %q: VM state size %d is too large", s.ID, v)
			}
			s.VMStateSize = int64(v)
		}
		if extraLen >= 16 {
			v := be.Uint64(rest[8:16])
			if v > maxVirtualSize {
				return im.corrupt("snapshot %q: disk size %d is too large", s.ID, v)
			}
			s.DiskSize = int64(v)
		}
		snaps = append(snaps, s)
		refs = append(refs, snapL1Ref{offset: be.Uint64(e[0:8]), size: be.Uint32(e[8:12])})
	}
	im.snapshots, im.snapL1 = snaps, refs
	return nil
}

func (im *Image) snapTableErr(i uint32, off uint64, pos int64, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return im.corrupt("snapshot table entry %d at 0x%x beyond end of file (size %d)", i, int64(off)+pos, im.fileSize.Load())
	}
	return fmt.Errorf("qcow2 %s: reading snapshot table entry %d: %w", im.path, i, err)
}

// Active returns the active layer: the disk as the guest sees it now. Its L1
// table is the one read by Open; a running QEMU may have changed the image
// since (see the package documentation).
func (im *Image) Active() (*Layer, error) {
	return &Layer{im: im, size: im.size, l1: im.l1, snap: -1}, nil
}

// Snapshot returns a read-only view of an internal snapshot's disk, found by
// id first and then by name (QEMU's rule). An unknown snapshot is a
// core.KindNotFound error.
func (im *Image) Snapshot(idOrName string) (*Layer, error) {
	idx := -1
	for i := range im.snapshots {
		if im.snapshots[i].ID == idOrName {
			idx = i
			break
		}
	}
	if idx < 0 {
		for i := range im.snapshots {
			if im.snapshots[i].Name == idOrName {
				idx = i
				break
			}
		}
	}
	if idx < 0 {
		return nil, core.NotFound("qcow2 %s: no snapshot with id or name %q", im.path, idOrName)
	}
	s := im.snapshots[idx]
	ref := im.snapL1[idx]
	what := fmt.Sprintf("L1 table of snapshot %q", s.ID)
	if ref.size > maxL1Entries {
		return nil, im.corrupt("%s has %d entries, more than QEMU's limit of %d", what, ref.size, maxL1Entries)
	}
	if ref.size > 0 {
		if err := im.checkTable(what, ref.offset, int64(ref.size)*8); err != nil {
			return nil, err
		}
	}
	// A snapshot taken before the disk grew has a shorter L1 table than
	// its size would need only if the file is damaged; missing entries
	// read as unallocated either way.
	n := min(int64(ref.size), im.l1Needed(s.DiskSize))
	l1, err := im.readL1(int64(ref.offset), n, what)
	if err != nil {
		return nil, err
	}
	return &Layer{im: im, size: s.DiskSize, l1: l1, snap: idx}, nil
}

// openBacking opens the backing file named in the header, if any.
func (im *Image) openBacking(depth int) error {
	if im.backingName == "" {
		im.backingFormat = ""
		return nil
	}
	name := im.backingName
	if strings.HasPrefix(name, "json:") || strings.Contains(name, "://") {
		return unsupported(im.path, "backing file %q is not a local file", name)
	}
	name = strings.TrimPrefix(name, "file:")
	if !filepath.IsAbs(name) {
		name = filepath.Join(filepath.Dir(im.path), name)
	}
	if depth+1 > maxBackingDepth {
		return im.corrupt("backing chain is longer than %d files (a loop?) at %s", maxBackingDepth, name)
	}
	format := im.backingFormat
	if format == "" {
		var err error
		if format, err = probeFormat(name); err != nil {
			return fmt.Errorf("qcow2 %s: backing file: %w", im.path, err)
		}
	}
	switch format {
	case "qcow2":
		b, err := openImage(name, depth+1)
		if err != nil {
			return fmt.Errorf("qcow2 %s: backing file: %w", im.path, err)
		}
		l, _ := b.Active()
		im.backing = &qcow2Source{im: b, l: l}
	case "raw":
		f, size, regular, err := openFile(name)
		if err != nil {
			return fmt.Errorf("qcow2 %s: backing file: %w", im.path, err)
		}
		im.backing = &rawSource{path: name, f: f, data: uncached.New(f), size: size, regular: regular}
	default:
		return unsupported(im.path, "backing file format %q (qcow2 and raw are supported)", format)
	}
	im.backingFormat = format
	return nil
}

// probeFormat tells qcow2 from raw by the magic, as QEMU does.
func probeFormat(path string) (string, error) {
	f, _, _, err := openFile(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var m [4]byte
	if n, _ := f.ReadAt(m[:], 0); n == 4 && string(m[:]) == headerMagic {
		return "qcow2", nil
	}
	return "raw", nil
}

// sortExtents sorts in place by offset.
func sortExtents(e []Extent) {
	sort.Slice(e, func(i, j int) bool { return e[i].Offset < e[j].Offset })
}
