package format

import (
	"bytes"
	"encoding/json"
	"time"

	"github.com/cairn-backup/cairn/internal/core"
)

// Version is the repository format version this code writes and reads. A
// reader refuses a repository, manifest or tree of a higher version.
const Version = 1

// Object names in a repository (blob.Store names).
const (
	ConfigName   = "config"
	KeysPrefix   = "keys/"
	DataPrefix   = "data/"
	IndexPrefix  = "index/"
	BackupPrefix = "backups/"
	LockPrefix   = "locks/"
)

// PackName returns the object name of pack id: data/<2 hex>/<64 hex>.
func PackName(id ID) string {
	s := id.String()
	return DataPrefix + s[:2] + "/" + s
}

// Config is the repository's "config" object, plain JSON readable without a
// password so that a reader can refuse a newer version before asking for one.
type Config struct {
	Format  string    `json:"format"` // always "cairn repository"
	Version int       `json:"version"`
	ID      string    `json:"id"` // a UUID
	Created time.Time `json:"created"`
	// ChunkID names the keyed hash of chunk ids ("blake3").
	ChunkID string `json:"chunk_id"`
	// Cipher names the AEAD ("aes-256-gcm"); Compression the codec ("zstd").
	Cipher      string `json:"cipher"`
	Compression string `json:"compression"`
	// ImageChunkSize is the fixed chunk size of disk image backups and
	// SegmentChunks the number of chunk ids per image segment.
	ImageChunkSize int `json:"image_chunk_size"`
	SegmentChunks  int `json:"segment_chunks"`
	// CDC holds the content-defined chunking sizes of file backups.
	CDC CDCConfig `json:"cdc"`
	// KeyCheck is Seal(ID) under the master key with additional data
	// "cairn config v1": unlocking checks that a key belongs to this config.
	KeyCheck []byte `json:"key_check"`
}

// CDCConfig gives FastCDC's minimum, average and maximum chunk sizes.
type CDCConfig struct {
	Min int `json:"min"`
	Avg int `json:"avg"`
	Max int `json:"max"`
}

// ConfigAD is the additional data of Config.KeyCheck.
var ConfigAD = []byte("cairn config v1")

// FormatName is Config.Format.
const FormatName = "cairn repository"

// DecodeConfig parses and validates a config object.
func DecodeConfig(b []byte) (*Config, error) {
	var probe struct {
		Format  string `json:"format"`
		Version int    `json:"version"`
	}
	if err := json.Unmarshal(b, &probe); err != nil || probe.Format != FormatName {
		return nil, core.Corrupt("config: not a cairn repository config")
	}
	if probe.Version > Version {
		return nil, newerVersion("repository", probe.Version)
	}
	var c Config
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&c); err != nil {
		return nil, core.Corrupt("config: %v", err)
	}
	switch {
	case c.Version != Version:
		return nil, core.Corrupt("config: version %d", c.Version)
	case !core.IsUUID(c.ID):
		return nil, core.Corrupt("config: id %q is not a UUID", c.ID)
	case c.ChunkID != "blake3" || c.Cipher != "aes-256-gcm" || c.Compression != "zstd":
		return nil, core.Corrupt("config: unknown algorithms %q/%q/%q", c.ChunkID, c.Cipher, c.Compression)
	case c.ImageChunkSize < 4096 || c.ImageChunkSize > 8<<20 || c.ImageChunkSize&(c.ImageChunkSize-1) != 0:
		return nil, core.Corrupt("config: image chunk size %d is not a power of two between 4 KiB and 8 MiB", c.ImageChunkSize)
	case c.SegmentChunks < 1 || c.SegmentChunks > 1<<16:
		return nil, core.Corrupt("config: segment_chunks %d out of range", c.SegmentChunks)
	case c.CDC.Min < 64 || c.CDC.Min > c.CDC.Avg || c.CDC.Avg > c.CDC.Max || c.CDC.Max > 16<<20:
		return nil, core.Corrupt("config: chunk sizes %d/%d/%d out of range", c.CDC.Min, c.CDC.Avg, c.CDC.Max)
	case len(c.KeyCheck) < SealOverhead:
		return nil, core.Corrupt("config: key check missing")
	}
	return &c, nil
}

// newerVersion is the error for an object written by a newer cairn.
func newerVersion(what string, v int) error {
	return core.E(core.KindInternal, "format_version",
		"%s format version %d is newer than this cairn supports (%d): upgrade cairn", what, v, Version)
}

// probeVersion reads the "version" field of a JSON object and refuses a
// newer one.
func probeVersion(what string, b []byte) error {
	var probe struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(b, &probe); err != nil {
		return core.Corrupt("%s: %v", what, err)
	}
	if probe.Version > Version {
		return newerVersion(what, probe.Version)
	}
	if probe.Version != Version {
		return core.Corrupt("%s: version %d", what, probe.Version)
	}
	return nil
}

// strictJSON decodes b into v, refusing trailing data.
func strictJSON(what string, b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		return core.Corrupt("%s: %v", what, err)
	}
	if dec.More() {
		return core.Corrupt("%s: data after the object", what)
	}
	return nil
}
