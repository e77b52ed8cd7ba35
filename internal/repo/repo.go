package repo

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cairn-backup/cairn/internal/blob"
	"github.com/cairn-backup/cairn/internal/chunker"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/repo/crypto"
	"github.com/cairn-backup/cairn/internal/repo/format"
)

// Defaults for a new repository. ImageChunkSize was chosen by
// BenchmarkImageChunkSize (see docs/FORMAT.md, "Choosing the image chunk size").
const (
	DefaultImageChunkSize = 128 << 10
	DefaultSegmentChunks  = 512
	// PackSize is the size at which a pack is closed and uploaded.
	PackSize = 16 << 20
	// metaPackSize closes packs of tree and segment blobs sooner.
	metaPackSize = 8 << 20
)

// Options tune an open repository.
type Options struct {
	// Uploads bounds concurrent pack uploads (default 2).
	Uploads int
	// Workers bounds the goroutines that hash, compress and seal (default
	// GOMAXPROCS).
	Workers int
	// LockWait is how long to wait for a conflicting lock (default 0: fail
	// at once).
	LockWait time.Duration
	// KDF overrides the key derivation cost of new key files (tests).
	KDF *crypto.KDFParams
	// Keys, when set, keeps the keys Open unlocks, so that a process that
	// opens one repository again and again (a node) derives each key from
	// its password once.
	Keys *KeyCache
	// Segments, when set, keeps decoded image segments across operations
	// (verify never uses it).
	Segments *SegmentCache
	// Indexes, when set, keeps each repository's index across
	// operations, so that LoadIndex reads only new index objects.
	Indexes *IndexCache
}

// KeyCache holds unlocked master keys by repository, key file and
// password. A key file removed from the repository is no longer used,
// whatever the cache holds. Safe for concurrent use.
type KeyCache struct {
	mu sync.Mutex
	m  map[string]*crypto.MasterKey
}

func keyCacheID(cfg *format.Config, name string, password []byte) string {
	h := sha256.Sum256(password)
	return cfg.ID + "/" + name + "/" + hex.EncodeToString(h[:])
}

func (c *KeyCache) get(id string) *crypto.MasterKey {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[id]
}

func (c *KeyCache) put(id string, k *crypto.MasterKey) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]*crypto.MasterKey{}
	}
	c.m[id] = k
}

// Repository is an open, unlocked repository. Its methods may be called
// from many goroutines.
type Repository struct {
	store blob.Store
	cfg   *format.Config
	key   *crypto.MasterKey
	keyID string // the key file that unlocked it
	opts  Options

	idxMu sync.RWMutex
	idx   *Index

	packers [2]*packer // data, metadata
	wsOnce  sync.Once
	w       *writeState
}

// InitOptions are the choices made when a repository is created.
type InitOptions struct {
	ImageChunkSize int // 0: DefaultImageChunkSize
	SegmentChunks  int // 0: DefaultSegmentChunks
}

// Init creates a repository in an empty store with one key for password.
func Init(ctx context.Context, store blob.Store, password []byte, io InitOptions, opts Options) (*Repository, error) {
	if len(password) == 0 {
		return nil, core.Invalid("the password is empty")
	}
	if _, err := store.Stat(ctx, format.ConfigName); err == nil {
		return nil, core.Conflict("exists", "a repository already exists there")
	} else if !blob.IsNotExist(err) {
		return nil, fmt.Errorf("checking for an existing repository: %w", err)
	}
	nonEmpty := false
	err := store.List(ctx, "", func(blob.Info) error { nonEmpty = true; return errStop })
	if err != nil && !errors.Is(err, errStop) {
		return nil, fmt.Errorf("listing the location: %w", err)
	}
	if nonEmpty {
		return nil, core.Conflict("not_empty", "the location is not empty and holds no repository config: refusing to create a repository there")
	}
	if io.ImageChunkSize == 0 {
		io.ImageChunkSize = DefaultImageChunkSize
	}
	if io.SegmentChunks == 0 {
		io.SegmentChunks = DefaultSegmentChunks
	}
	cdc := chunker.DefaultCDCParams()
	key := crypto.NewMasterKey()
	cfg := &format.Config{
		Format: format.FormatName, Version: format.Version, ID: core.NewID(), Created: time.Now().UTC(),
		ChunkID: "blake3", Cipher: "aes-256-gcm", Compression: "zstd",
		ImageChunkSize: io.ImageChunkSize, SegmentChunks: io.SegmentChunks,
		CDC: format.CDCConfig{Min: cdc.Min, Avg: cdc.Avg, Max: cdc.Max},
	}
	cfg.KeyCheck = key.Seal([]byte(cfg.ID), format.ConfigAD)
	b, err := marshalConfig(cfg)
	if err != nil {
		return nil, err
	}
	if _, err := format.DecodeConfig(b); err != nil {
		return nil, core.Invalid("repository settings: %v", err)
	}
	r := newRepository(store, cfg, key, opts)
	// The key first: a config without a key would be a repository nobody can open.
	keyID, err := r.AddKey(ctx, password)
	if err != nil {
		return nil, err
	}
	r.keyID = keyID
	if err := blob.SaveBytes(ctx, store, format.ConfigName, b); err != nil {
		return nil, fmt.Errorf("saving the repository config: %w", err)
	}
	r.idx = NewIndex()
	return r, nil
}

var errStop = errors.New("stop")

func newRepository(store blob.Store, cfg *format.Config, key *crypto.MasterKey, opts Options) *Repository {
	if opts.Uploads <= 0 {
		opts.Uploads = 2
	}
	if opts.Workers <= 0 {
		opts.Workers = defaultWorkers()
	}
	r := &Repository{store: store, cfg: cfg, key: key, opts: opts}
	r.packers[0] = newPacker(r, PackSize)
	r.packers[1] = newPacker(r, metaPackSize)
	return r
}

// ReadConfig reads and checks the config object. It needs no password.
func ReadConfig(ctx context.Context, store blob.Store) (*format.Config, error) {
	b, err := loadAll(ctx, store, format.ConfigName, 1<<20)
	if blob.IsNotExist(err) {
		return nil, core.NotFound("no repository there (no config object): create one with `cairn repo init`")
	}
	if err != nil {
		return nil, fmt.Errorf("reading the repository config: %w", err)
	}
	return format.DecodeConfig(b)
}

// Open reads the config and unlocks a key with password; it tries every key
// file. A password no key accepts is a core.KindUnauthorized error. Open
// does not load the index (LoadIndex does).
func Open(ctx context.Context, store blob.Store, password []byte, opts Options) (*Repository, error) {
	cfg, err := ReadConfig(ctx, store)
	if err != nil {
		return nil, err
	}
	keys, err := listNames(ctx, store, format.KeysPrefix)
	if err != nil {
		return nil, fmt.Errorf("listing keys: %w", err)
	}
	if len(keys) == 0 {
		return nil, core.Corrupt("the repository has no key files (keys/ is empty)")
	}
	var lastErr error
	for _, name := range keys {
		cacheID := keyCacheID(cfg, name, password)
		if key := opts.Keys.get(cacheID); key != nil {
			if plain, err := key.Open(cfg.KeyCheck, format.ConfigAD); err == nil && string(plain) == cfg.ID {
				r := newRepository(store, cfg, key, opts)
				r.keyID = strings.TrimPrefix(name, format.KeysPrefix)
				return r, nil
			}
		}
		kf, err := readKeyFile(ctx, store, name)
		if err != nil {
			lastErr = err
			continue
		}
		key, err := kf.Unlock(password)
		if err != nil {
			if lastErr == nil || core.KindOf(lastErr) == core.KindUnauthorized {
				lastErr = err
			}
			continue
		}
		if plain, err := key.Open(cfg.KeyCheck, format.ConfigAD); err != nil || string(plain) != cfg.ID {
			lastErr = core.Corrupt("key %s unlocks but does not match the repository config (wrong config object?)", strings.TrimPrefix(name, format.KeysPrefix))
			continue
		}
		opts.Keys.put(cacheID, key)
		r := newRepository(store, cfg, key, opts)
		r.keyID = strings.TrimPrefix(name, format.KeysPrefix)
		return r, nil
	}
	if core.CodeOf(lastErr) == core.CodeWrongPassword {
		return nil, core.WrongPassword("wrong password: no key of this repository accepts it")
	}
	return nil, lastErr
}

// Config returns the repository's config.
func (r *Repository) Config() *format.Config { return r.cfg }

// Store returns the blob store the repository lives in.
func (r *Repository) Store() blob.Store { return r.store }

// KeyID returns the id of the key file that unlocked the repository.
func (r *Repository) KeyID() string { return r.keyID }

// Close releases the store. Unflushed blobs are lost (they were never
// referenced by a manifest, so nothing committed is).
func (r *Repository) Close() error { return r.store.Close() }

func marshalConfig(cfg *format.Config) ([]byte, error) {
	var buf bytes.Buffer
	enc := jsonIndent(&buf)
	if err := enc.Encode(cfg); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// KeyInfo describes a key file.
type KeyInfo struct {
	ID       string    `json:"id"`
	Current  bool      `json:"current"`
	Created  time.Time `json:"created"`
	Host     string    `json:"host"`
	Username string    `json:"username"`
}

// AddKey wraps the master key under a new password and stores the key file.
func (r *Repository) AddKey(ctx context.Context, password []byte) (string, error) {
	if len(password) == 0 {
		return "", core.Invalid("the new password is empty")
	}
	params := crypto.DefaultKDFParams()
	if r.opts.KDF != nil {
		params = *r.opts.KDF
	}
	kf, err := crypto.NewKeyFile(r.key, password, params)
	if err != nil {
		return "", err
	}
	b, err := kf.Marshal()
	if err != nil {
		return "", err
	}
	id := randomHex(8)
	if err := blob.SaveBytes(ctx, r.store, format.KeysPrefix+id, b); err != nil {
		return "", fmt.Errorf("saving key %s: %w", id, err)
	}
	return id, nil
}

// Keys lists the key files.
func (r *Repository) Keys(ctx context.Context) ([]KeyInfo, error) {
	names, err := listNames(ctx, r.store, format.KeysPrefix)
	if err != nil {
		return nil, fmt.Errorf("listing keys: %w", err)
	}
	var out []KeyInfo
	for _, name := range names {
		kf, err := readKeyFile(ctx, r.store, name)
		if err != nil {
			return nil, err
		}
		id := strings.TrimPrefix(name, format.KeysPrefix)
		out = append(out, KeyInfo{ID: id, Current: id == r.keyID, Created: kf.Created, Host: kf.Host, Username: kf.Username})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// RemoveKey removes a key file. The key in use and the last key cannot be
// removed.
func (r *Repository) RemoveKey(ctx context.Context, id string) error {
	keys, err := r.Keys(ctx)
	if err != nil {
		return err
	}
	found := false
	for _, k := range keys {
		found = found || k.ID == id
	}
	switch {
	case !found:
		return core.NotFound("no key %q in this repository", id)
	case id == r.keyID:
		return core.Conflict("key_in_use", "key %s is the one this command unlocked with: use another password to remove it", id)
	case len(keys) == 1:
		return core.Conflict("last_key", "key %s is the repository's only key", id)
	}
	return r.store.Remove(ctx, format.KeysPrefix+id)
}

func readKeyFile(ctx context.Context, store blob.Store, name string) (*crypto.KeyFile, error) {
	b, err := loadAll(ctx, store, name, 1<<20)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	kf, err := crypto.ParseKeyFile(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return kf, nil
}

// loadAll reads a whole object of at most limit bytes.
func loadAll(ctx context.Context, store blob.Store, name string, limit int64) ([]byte, error) {
	info, err := store.Stat(ctx, name)
	if err != nil {
		return nil, err
	}
	if info.Size > limit {
		return nil, core.Corrupt("%s: %d bytes, more than the %d such an object may have", name, info.Size, limit)
	}
	return loadRange(ctx, store, name, 0, info.Size)
}

// loadRange reads exactly length bytes at offset (length 0: nothing); an
// object too short for the range is reported as truncated.
func loadRange(ctx context.Context, store blob.Store, name string, offset, length int64) ([]byte, error) {
	return loadRangeInto(ctx, store, name, offset, length, nil)
}

// loadRangeInto is loadRange reading into buf's storage when it has room.
func loadRangeInto(ctx context.Context, store blob.Store, name string, offset, length int64, buf []byte) ([]byte, error) {
	if length == 0 {
		return []byte{}, nil
	}
	b, err := blob.LoadRangeInto(ctx, store, name, offset, length, buf)
	switch {
	case errors.Is(err, blob.ErrRange) || errors.Is(err, io.ErrUnexpectedEOF):
		return nil, core.Corrupt("%s: truncated (wanted %d bytes at %d)", name, length, offset)
	case err != nil && !core.IsNotFound(err):
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	return b, err
}

// listNames lists the object names under prefix, sorted.
func listNames(ctx context.Context, store blob.Store, prefix string) ([]string, error) {
	var names []string
	err := store.List(ctx, prefix, func(i blob.Info) error {
		names = append(names, i.Name)
		return nil
	})
	sort.Strings(names)
	return names, err
}

func randomHex(n int) string { return hex.EncodeToString(randomBytes(n)) }

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}
