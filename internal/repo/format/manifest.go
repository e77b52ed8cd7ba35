package format

import (
	"encoding/json"
	"time"

	"github.com/cairn-backup/cairn/internal/core"
)

// Backup kinds.
const (
	KindImage = "image" // a disk image: fixed-size chunks listed by segments
	KindFiles = "files" // a file tree: tree blobs and CDC chunks
)

// Manifest describes one backup. It is stored sealed (additional data
// ManifestAD(id)) as JSON under backups/<id>, written only after every blob
// it references is in a pack listed by an index file, and never changed.
type Manifest struct {
	Version  int       `json:"version"`
	ID       string    `json:"id"` // a random UUID, also the object's name
	Kind     string    `json:"kind"`
	Time     time.Time `json:"time"` // the point in time the backup shows
	Host     string    `json:"host"`
	Username string    `json:"username,omitempty"`
	// Paths are the absolute source paths: the image file, or the backed-up
	// files and directories.
	Paths []string `json:"paths"`
	// Tags are free-form labels, "volume=web-root" or "nightly".
	Tags []string `json:"tags,omitempty"`
	// Parent is the backup this one was made incrementally from.
	Parent string         `json:"parent,omitempty"`
	Image  *ImageManifest `json:"image,omitempty"`
	// Tree is the root tree blob of a file backup.
	Tree    *ID     `json:"tree,omitempty"`
	Summary Summary `json:"summary"`
}

// ImageManifest is the content of an image backup.
type ImageManifest struct {
	Size          int64  `json:"size"`
	ChunkSize     int    `json:"chunk_size"`
	SegmentChunks int    `json:"segment_chunks"`
	SourceFormat  string `json:"source_format"` // "raw" or "qcow2"
	// Segments are the segment blobs in image order; the zero ID stands for
	// a segment whose chunks are all zero.
	Segments []ID `json:"segments"`
}

// Chunks returns the number of chunks of the image.
func (m *ImageManifest) Chunks() int64 {
	return (m.Size + int64(m.ChunkSize) - 1) / int64(m.ChunkSize)
}

// SegmentLen returns the number of chunk ids segment i holds.
func (m *ImageManifest) SegmentLen(i int) int {
	left := m.Chunks() - int64(i)*int64(m.SegmentChunks)
	return int(min(left, int64(m.SegmentChunks)))
}

// Summary holds the figures of a backup run.
type Summary struct {
	Start      time.Time `json:"start"`
	End        time.Time `json:"end"`
	Files      int64     `json:"files,omitempty"`
	Dirs       int64     `json:"dirs,omitempty"`
	Bytes      int64     `json:"bytes"`      // logical size of what was backed up
	BytesRead  int64     `json:"bytes_read"` // bytes actually read from the source
	BlobsNew   int64     `json:"blobs_new"`
	BytesAdded int64     `json:"bytes_added"` // stored (compressed, sealed) bytes this backup added
	Errors     int64     `json:"errors,omitempty"`
}

// ManifestAD returns the additional data a manifest is sealed with.
func ManifestAD(id string) []byte { return []byte("cairn manifest v1\x00" + id) }

// MaxTagLen bounds a tag.
const MaxTagLen = 256

// EncodeManifest returns the JSON of m.
func EncodeManifest(m *Manifest) ([]byte, error) { return json.Marshal(m) }

// DecodeManifest parses and validates a manifest's JSON.
func DecodeManifest(b []byte) (*Manifest, error) {
	if err := probeVersion("manifest", b); err != nil {
		return nil, err
	}
	var m Manifest
	if err := strictJSON("manifest", b, &m); err != nil {
		return nil, err
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Validate checks a manifest's fields.
func (m *Manifest) Validate() error {
	if !core.IsUUID(m.ID) {
		return core.Corrupt("manifest: id %q is not a UUID", m.ID)
	}
	if m.Parent != "" && !core.IsUUID(m.Parent) {
		return core.Corrupt("manifest %s: parent %q is not a UUID", m.ID, m.Parent)
	}
	for _, t := range m.Tags {
		if t == "" || len(t) > MaxTagLen {
			return core.Corrupt("manifest %s: bad tag %.40q", m.ID, t)
		}
	}
	switch m.Kind {
	case KindImage:
		im := m.Image
		if im == nil || m.Tree != nil {
			return core.Corrupt("manifest %s: an image backup needs an image and no tree", m.ID)
		}
		if im.Size < 0 || im.Size > 1<<50 || im.ChunkSize < 4096 || im.ChunkSize > 8<<20 ||
			im.SegmentChunks < 1 || im.SegmentChunks > 1<<16 {
			return core.Corrupt("manifest %s: image size %d, chunk size %d or segment size %d out of range",
				m.ID, im.Size, im.ChunkSize, im.SegmentChunks)
		}
		want := (im.Chunks() + int64(im.SegmentChunks) - 1) / int64(im.SegmentChunks)
		if int64(len(im.Segments)) != want {
			return core.Corrupt("manifest %s: %d segments for an image of %d bytes, want %d", m.ID, len(im.Segments), im.Size, want)
		}
		if im.SourceFormat != "raw" && im.SourceFormat != "qcow2" {
			return core.Corrupt("manifest %s: unknown source format %q", m.ID, im.SourceFormat)
		}
	case KindFiles:
		if m.Tree == nil || m.Tree.IsZero() || m.Image != nil {
			return core.Corrupt("manifest %s: a file backup needs a tree and no image", m.ID)
		}
	default:
		return core.Corrupt("manifest %s: unknown kind %q", m.ID, m.Kind)
	}
	return nil
}

// Lock is a lock object, stored sealed (additional data LockAD) under
// locks/<random hex>. Writers (backup, forget) hold shared locks; prune holds
// the only exclusive one. A lock whose Refreshed time is older than
// StaleLockAge, or whose process on the same host is gone, is stale.
type Lock struct {
	Version   int       `json:"version"`
	Exclusive bool      `json:"exclusive"`
	Host      string    `json:"host"`
	PID       int       `json:"pid"`
	Command   string    `json:"command"`
	Time      time.Time `json:"time"`
	Refreshed time.Time `json:"refreshed"`
}

// StaleLockAge is how long a lock lives without a refresh; holders refresh
// every StaleLockAge/6.
const StaleLockAge = 30 * time.Minute

// LockAD is the additional data of a sealed lock.
var LockAD = []byte("cairn lock v1")

// DecodeLock parses a lock's JSON.
func DecodeLock(b []byte) (*Lock, error) {
	if err := probeVersion("lock", b); err != nil {
		return nil, err
	}
	var l Lock
	if err := strictJSON("lock", b, &l); err != nil {
		return nil, err
	}
	return &l, nil
}
