package crypto

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/user"
	"runtime"
	"time"

	"github.com/cairn-backup/cairn/internal/core"
	"golang.org/x/crypto/argon2"
)

const (
	// KeyFileVersion is the key file format version this package writes and the
	// newest it reads.
	KeyFileVersion = 1
	// KDFArgon2id is the only key derivation function of key file version 1.
	KDFArgon2id = "argon2id"

	// keyFileAD is the additional data that binds a wrapped master key to its purpose.
	keyFileAD = "cairn key file v1"

	saltSize       = 32
	minSaltSize    = 16
	maxSaltSize    = 64
	maxMemoryKiB   = 4 << 20 // 4 GiB
	maxKDFTime     = 1000
	wrappedSize    = NonceSize + 2*KeySize + TagSize
	wrongPassword  = "wrong password (or not a key of this repository)"
	newerVersionFm = "key file is of format version %d, newer than this cairn supports (%d): upgrade cairn to use this repository"
)

// KDFParams are the argon2id cost parameters of a key file.
type KDFParams struct {
	Time      uint32 // passes over memory
	MemoryKiB uint32 // memory in KiB
	Threads   uint8  // lanes
}

// DefaultKDFParams are the parameters for new key files: argon2id with 3
// passes over 64 MiB in 4 lanes (RFC 9106's second recommended option),
// about 0.23 s to unlock in a fresh process on the reference machine (see
// the package documentation for the measurements).
func DefaultKDFParams() KDFParams {
	return KDFParams{Time: 3, MemoryKiB: 64 << 10, Threads: 4}
}

// TestKDFParams are tiny parameters for tests only: they give no protection.
func TestKDFParams() KDFParams {
	return KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}
}

// Validate reports parameters that are out of range, naming the field.
func (p KDFParams) Validate() error {
	_, err := checkKDF(int64(p.Time), int64(p.MemoryKiB), int64(p.Threads))
	return err
}

// checkKDF validates raw values (as they come from JSON) and converts them.
func checkKDF(t, mem, threads int64) (KDFParams, error) {
	switch {
	case t < 1:
		return KDFParams{}, core.Invalid("key file: kdf time is %d, must be at least 1", t)
	case t > maxKDFTime:
		return KDFParams{}, core.Invalid("key file: kdf time is %d, above the limit of %d", t, maxKDFTime)
	case threads < 1:
		return KDFParams{}, core.Invalid("key file: kdf threads is %d, must be at least 1", threads)
	case threads > 255:
		return KDFParams{}, core.Invalid("key file: kdf threads is %d, above the limit of 255", threads)
	case mem > maxMemoryKiB:
		return KDFParams{}, core.Invalid("key file: kdf memory_kib is %d, above the limit of %d (4 GiB)", mem, maxMemoryKiB)
	case mem < 8*threads:
		return KDFParams{}, core.Invalid("key file: kdf memory_kib is %d, must be at least 8 per thread (%d)", mem, 8*threads)
	}
	return KDFParams{Time: uint32(t), MemoryKiB: uint32(mem), Threads: uint8(threads)}, nil
}

// KeyFile is one password's way into a repository: the master key sealed
// (AES-256-GCM, additional data "cairn key file v1") with a key derived from the
// password by argon2id. A repository holds one key file per password; all wrap
// the same master key. Its JSON form is the format (docs/FORMAT.md):
//
//	{"version":1,"kdf":"argon2id","time":3,"memory_kib":65536,"threads":2,
//	 "salt":"<base64>","wrapped":"<base64>","created":"<RFC 3339>",
//	 "host":"...","username":"..."}
type KeyFile struct {
	Version  int
	KDF      string
	Params   KDFParams
	Salt     []byte
	Wrapped  []byte // nonce ‖ AES-256-GCM(Encrypt ‖ ID) ‖ tag
	Created  time.Time
	Host     string
	Username string
}

// keyFileJSON is the wire form. Numbers are int64 so that out-of-range values
// get our messages rather than encoding/json's.
type keyFileJSON struct {
	Version   int64  `json:"version"`
	KDF       string `json:"kdf"`
	Time      int64  `json:"time"`
	MemoryKiB int64  `json:"memory_kib"`
	Threads   int64  `json:"threads"`
	Salt      string `json:"salt"`
	Wrapped   string `json:"wrapped"`
	Created   string `json:"created"`
	Host      string `json:"host"`
	Username  string `json:"username"`
}

// NewKeyFile wraps master under password with fresh salt and the given
// argon2id parameters. It records the creation time, host and user name.
func NewKeyFile(master *MasterKey, password []byte, params KDFParams) (*KeyFile, error) {
	if master == nil {
		return nil, core.Invalid("key file: no master key")
	}
	if err := params.Validate(); err != nil {
		return nil, err
	}
	kf := &KeyFile{
		Version: KeyFileVersion,
		KDF:     KDFArgon2id,
		Params:  params,
		Salt:    make([]byte, saltSize),
		Created: time.Now().UTC(),
	}
	_, _ = rand.Read(kf.Salt)
	kf.Host, _ = os.Hostname()
	if u, err := user.Current(); err == nil {
		kf.Username = u.Username
	} else {
		kf.Username = os.Getenv("USER")
	}
	plain := make([]byte, 0, 2*KeySize)
	plain = append(plain, master.Encrypt[:]...)
	plain = append(plain, master.ID[:]...)
	kek := kf.kek(password)
	kf.Wrapped = kek.Seal(plain, []byte(keyFileAD))
	clear(plain)
	clear(kek.Encrypt[:])
	return kf, nil
}

// kek derives the key-encryption key from password.
func (kf *KeyFile) kek(password []byte) *MasterKey {
	p := kf.Params
	k := &MasterKey{}
	prepareKDFMemory(int(p.MemoryKiB) << 10)
	copy(k.Encrypt[:], argon2.IDKey(password, kf.Salt, p.Time, p.MemoryKiB, p.Threads, KeySize))
	// The KDF's memory (64 MiB by default) is garbage now. Collect it at
	// once, so that what the caller allocates next (a backup's buffers)
	// reuses those pages instead of growing the heap into fresh ones, each
	// a page fault, and on a virtual machine a costly one.
	runtime.GC()
	return k
}

// Unlock derives the key from password and unwraps the master key. A wrong
// password gives an error of core.KindUnauthorized.
func (kf *KeyFile) Unlock(password []byte) (*MasterKey, error) {
	if err := kf.validate(); err != nil {
		return nil, err
	}
	kek := kf.kek(password)
	plain, err := kek.Open(kf.Wrapped, []byte(keyFileAD))
	clear(kek.Encrypt[:])
	if err != nil {
		return nil, core.WrongPassword(wrongPassword)
	}
	if len(plain) != 2*KeySize { // authentic, so only a writer bug could cause this
		return nil, core.Corrupt("key file: wrapped master key is %d bytes, want %d", len(plain), 2*KeySize)
	}
	m := &MasterKey{}
	copy(m.Encrypt[:], plain[:KeySize])
	copy(m.ID[:], plain[KeySize:])
	clear(plain)
	return m, nil
}

// Equal reports whether two master keys hold the same secrets (in constant time).
func (k *MasterKey) Equal(o *MasterKey) bool {
	return subtle.ConstantTimeCompare(k.Encrypt[:], o.Encrypt[:])&subtle.ConstantTimeCompare(k.ID[:], o.ID[:]) == 1
}

// validate checks a KeyFile built in memory or parsed.
func (kf *KeyFile) validate() error {
	if kf.Version > KeyFileVersion {
		return core.E(core.KindInvalid, "newer_format_version", newerVersionFm, kf.Version, KeyFileVersion)
	}
	if kf.Version < 1 {
		return core.Corrupt("key file: version is %d, must be 1", kf.Version)
	}
	if kf.KDF != KDFArgon2id {
		return core.Invalid("key file: unknown kdf %q (version 1 knows only %q)", kf.KDF, KDFArgon2id)
	}
	if err := kf.Params.Validate(); err != nil {
		return err
	}
	if n := len(kf.Salt); n < minSaltSize || n > maxSaltSize {
		return core.Corrupt("key file: salt is %d bytes, must be %d to %d", n, minSaltSize, maxSaltSize)
	}
	if n := len(kf.Wrapped); n != wrappedSize {
		return core.Corrupt("key file: wrapped is %d bytes, must be %d", n, wrappedSize)
	}
	return nil
}

// MarshalJSON writes the version 1 wire form.
func (kf *KeyFile) MarshalJSON() ([]byte, error) {
	return json.Marshal(keyFileJSON{
		Version:   int64(kf.Version),
		KDF:       kf.KDF,
		Time:      int64(kf.Params.Time),
		MemoryKiB: int64(kf.Params.MemoryKiB),
		Threads:   int64(kf.Params.Threads),
		Salt:      base64.StdEncoding.EncodeToString(kf.Salt),
		Wrapped:   base64.StdEncoding.EncodeToString(kf.Wrapped),
		Created:   kf.Created.Format(time.RFC3339Nano),
		Host:      kf.Host,
		Username:  kf.Username,
	})
}

// Marshal returns the key file as indented JSON with a final newline, as stored.
func (kf *KeyFile) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(kf, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// UnmarshalJSON is ParseKeyFile for encoding/json users.
func (kf *KeyFile) UnmarshalJSON(data []byte) error {
	p, err := ParseKeyFile(data)
	if err != nil {
		return err
	}
	*kf = *p
	return nil
}

// ParseKeyFile decodes and validates a key file. A newer format version is
// refused with a message telling to upgrade cairn (core.KindInvalid, code
// "newer_format_version"); malformed or out-of-range fields give core.KindInvalid
// or core.KindCorrupt errors that name the field.
func ParseKeyFile(data []byte) (*KeyFile, error) {
	// The version is read first, alone, so that a newer format whose other
	// fields changed shape still gets the "upgrade cairn" message.
	var head struct {
		Version json.RawMessage `json:"version"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, core.Corrupt("key file: not valid JSON: %v", err)
	}
	if len(head.Version) == 0 {
		return nil, core.Corrupt("key file: field version is missing")
	}
	var v int64
	if err := json.Unmarshal(head.Version, &v); err != nil {
		return nil, core.Corrupt("key file: field version is %s, not an integer", truncate(head.Version))
	}
	if v > KeyFileVersion {
		return nil, core.E(core.KindInvalid, "newer_format_version", newerVersionFm, v, KeyFileVersion)
	}
	var w keyFileJSON
	if err := json.Unmarshal(data, &w); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, core.Corrupt("key file: field %s has a %s, want %s", te.Field, te.Value, te.Type)
		}
		return nil, core.Corrupt("key file: %v", err)
	}
	params, err := checkKDF(w.Time, w.MemoryKiB, w.Threads)
	if err != nil {
		return nil, err
	}
	salt, err := base64.StdEncoding.DecodeString(w.Salt)
	if err != nil {
		return nil, core.Corrupt("key file: field salt is not valid base64: %v", err)
	}
	wrapped, err := base64.StdEncoding.DecodeString(w.Wrapped)
	if err != nil {
		return nil, core.Corrupt("key file: field wrapped is not valid base64: %v", err)
	}
	var created time.Time
	if w.Created != "" {
		if created, err = time.Parse(time.RFC3339Nano, w.Created); err != nil {
			return nil, core.Corrupt("key file: field created is %s, not an RFC 3339 time", truncate([]byte(w.Created)))
		}
	}
	kf := &KeyFile{
		Version:  int(w.Version),
		KDF:      w.KDF,
		Params:   params,
		Salt:     salt,
		Wrapped:  wrapped,
		Created:  created,
		Host:     w.Host,
		Username: w.Username,
	}
	if err := kf.validate(); err != nil {
		return nil, err
	}
	return kf, nil
}

func truncate(b []byte) string {
	const max = 40
	if len(b) > max {
		return fmt.Sprintf("%q...", b[:max])
	}
	return fmt.Sprintf("%q", b)
}
