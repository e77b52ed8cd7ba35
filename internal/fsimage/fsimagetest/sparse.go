package fsimagetest

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Fuzz inputs of the image readers are images in a compact form: a list of
// records "offset (4 bytes, little endian), length (2 bytes), bytes" laid
// over zeros. Real images are mostly zeros; in this form the committed seeds
// stay small and the fuzzer's mutations land on the bytes that matter
// (and on the offsets, which moves structures around).

// EncodeSparse returns the records that rebuild img: its runs of non-zero
// bytes, joined across gaps of fewer than 16 zeros.
func EncodeSparse(img []byte) []byte {
	var out []byte
	for i := 0; i < len(img); {
		if img[i] == 0 {
			i++
			continue
		}
		start, zeros := i, 0
		for i < len(img) && i-start < 0xFFFF && zeros < 16 {
			if img[i] == 0 {
				zeros++
			} else {
				zeros = 0
			}
			i++
		}
		end := i - zeros
		out = binary.LittleEndian.AppendUint32(out, uint32(start))
		out = binary.LittleEndian.AppendUint16(out, uint16(end-start))
		out = append(out, img[start:end]...)
	}
	return out
}

// DecodeSparse lays the records of data over size zero bytes. Records that
// reach past size are cut; a truncated last record is applied as far as
// it goes.
func DecodeSparse(data []byte, size int) []byte {
	img := make([]byte, size)
	for len(data) >= 6 {
		off := int(binary.LittleEndian.Uint32(data))
		n := int(binary.LittleEndian.Uint16(data[4:]))
		data = data[6:]
		n = min(n, len(data))
		if off < size {
			copy(img[off:], data[:n])
		}
		data = data[n:]
	}
	return img
}

// WriteCorpusFile writes data as a seed of a fuzz test's corpus (the go
// test fuzz v1 format of one []byte argument) at dir/name.
func WriteCorpusFile(dir, name string, data []byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	body := "go test fuzz v1\n[]byte(" + strconv.Quote(string(data)) + ")\n"
	return os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644)
}

// ReadCorpusFile reads the []byte argument of a corpus file written by
// WriteCorpusFile (or by the fuzzer).
func ReadCorpusFile(p string) ([]byte, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	s, ok := strings.CutPrefix(string(b), "go test fuzz v1\n[]byte(")
	if !ok {
		return nil, fmt.Errorf("%s is not a fuzz corpus file of one []byte", p)
	}
	s, ok = strings.CutSuffix(strings.TrimSpace(s), ")")
	if !ok {
		return nil, fmt.Errorf("%s is not a fuzz corpus file of one []byte", p)
	}
	v, err := strconv.Unquote(s)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", p, err)
	}
	return []byte(v), nil
}
