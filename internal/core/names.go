package core

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// CheckName validates a resource name: [a-z0-9][a-z0-9._-]{0,62}, and not a UUID
// (ids are accepted wherever a name is, so a name must never look like one).
func CheckName(what, name string) error {
	if !nameRE.MatchString(name) {
		return Invalid("invalid %s name %q: use 1-63 characters a-z, 0-9, '.', '_', '-', starting with a letter or digit", what, name)
	}
	if IsUUID(name) {
		return Invalid("invalid %s name %q: a name must not look like an id", what, name)
	}
	return nil
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// IsUUID reports whether s is a lower-case canonical UUID.
func IsUUID(s string) bool { return uuidRE.MatchString(s) }

// NewID returns a random (version 4) UUID.
func NewID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	b[6] = (b[6] & 0x0f) | 0x40
	b[8] = (b[8] & 0x3f) | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// RandomToken returns n random bytes as lower-case hex.
func RandomToken(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// ParseSize parses a size such as "10G", "512M", "1.5T", "65536" or "64KiB".
// Units are binary (K = 1024). The result must be positive and a multiple of 512.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, Invalid("invalid size %q: give a number with an optional unit K, M, G or T", s)
	}
	u := strings.ToUpper(t)
	u = strings.TrimSuffix(u, "IB")
	u = strings.TrimSuffix(u, "B")
	mult := int64(1)
	if n := len(u); n > 0 {
		switch u[n-1] {
		case 'K':
			mult, u = 1<<10, u[:n-1]
		case 'M':
			mult, u = 1<<20, u[:n-1]
		case 'G':
			mult, u = 1<<30, u[:n-1]
		case 'T':
			mult, u = 1<<40, u[:n-1]
		case 'P':
			mult, u = 1<<50, u[:n-1]
		}
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(u), 64)
	if err != nil || f <= 0 || f != f {
		return 0, Invalid("invalid size %q: give a positive number with an optional unit K, M, G or T", s)
	}
	v := f * float64(mult)
	if v > float64(MaxVolumeSize) {
		return 0, Invalid("invalid size %q: the largest volume is %s", s, FormatSize(MaxVolumeSize))
	}
	n := int64(v)
	if float64(n) != v || n%512 != 0 {
		return 0, Invalid("invalid size %q: the size must be a whole multiple of 512 bytes", s)
	}
	return n, nil
}

// MaxVolumeSize is the largest virtual size cairn creates (64 TiB).
const MaxVolumeSize int64 = 64 << 40

// FormatSize renders n bytes for people: "10 GiB", "1.5 MiB", "512 B".
func FormatSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	v := float64(n) / float64(div)
	s := strconv.FormatFloat(v, 'f', 1, 64)
	s = strings.TrimSuffix(s, ".0")
	return s + " " + string("KMGTP"[exp]) + "iB"
}
