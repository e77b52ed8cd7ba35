package nbd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// memBlock is the allocation granularity of memExport.
const memBlock = 4096

type blockState uint8

const (
	blockData blockState = iota // allocated, any contents
	blockHole                   // not allocated, reads as zeros
	blockZero                   // allocated, reads as zeros
)

// memExport is the test Export: a byte slice and a per-block allocation
// map. Holes and zero blocks always hold zeros in data. It implements every
// optional interface; the wrappers below hide some of them.
type memExport struct {
	mu      sync.RWMutex
	data    []byte
	state   []blockState
	flushes atomic.Int64
	desc    string
}

// newMemExport returns an export of size bytes that is all hole.
func newMemExport(size int64) *memExport {
	m := &memExport{data: make([]byte, size), state: make([]blockState, (size+memBlock-1)/memBlock)}
	for i := range m.state {
		m.state[i] = blockHole
	}
	return m
}

func (m *memExport) Size() int64         { return int64(len(m.data)) }
func (m *memExport) Description() string { return m.desc }

func (m *memExport) ReadAt(p []byte, off int64) (int, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if off < 0 || off > int64(len(m.data)) {
		return 0, fmt.Errorf("memExport: read at %d outside [0, %d]", off, len(m.data))
	}
	n := copy(p, m.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// fill makes [off, off+n) allocated data of byte b (or random bytes from
// rnd when rnd is set); the range must be block-aligned.
func (m *memExport) fill(off, n int64, b byte, rnd *rand.Rand) *memExport {
	p := m.data[off : off+n]
	if rnd != nil {
		rnd.Read(p)
	} else {
		for i := range p {
			p[i] = b
		}
	}
	m.setState(off, n, blockData)
	return m
}

// zeroAlloc makes [off, off+n) allocated zeros; block-aligned.
func (m *memExport) zeroAlloc(off, n int64) *memExport {
	clear(m.data[off : off+n])
	m.setState(off, n, blockZero)
	return m
}

// setState sets the state of every block that [off, off+n) touches.
func (m *memExport) setState(off, n int64, s blockState) {
	for b := off / memBlock; b*memBlock < off+n; b++ {
		m.state[b] = s
	}
}

func (m *memExport) Extents(off, length int64) ([]Extent, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	end := min(off+length, int64(len(m.data)))
	var exts []Extent
	for pos := off; pos < end; {
		s := m.state[pos/memBlock]
		next := (pos/memBlock + 1) * memBlock
		for next < end && m.state[next/memBlock] == s {
			next += memBlock
		}
		next = min(next, end)
		e := Extent{Length: next - pos, Hole: s == blockHole, Zero: s != blockData}
		exts = append(exts, e)
		pos = next
	}
	return exts, nil
}

func (m *memExport) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off < 0 || off+int64(len(p)) > int64(len(m.data)) {
		return 0, fmt.Errorf("memExport: write at [%d, +%d) outside [0, %d)", off, len(p), len(m.data))
	}
	copy(m.data[off:], p)
	if len(p) > 0 {
		m.setState(off, int64(len(p)), blockData)
	}
	return len(p), nil
}

func (m *memExport) Flush() error {
	m.flushes.Add(1)
	return nil
}

// Trim deallocates the whole blocks inside the range and leaves the rest.
func (m *memExport) Trim(off, length int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.zeroRange(off, length, blockHole)
	return nil
}

func (m *memExport) WriteZeroes(off, length int64, mayTrim bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.data[off : off+length])
	s := blockZero
	if mayTrim {
		s = blockHole
	}
	m.zeroRange(off, length, s)
	return nil
}

// zeroRange gives the whole blocks inside the range state s, with zeros;
// blocks it only touches keep theirs.
func (m *memExport) zeroRange(off, length int64, s blockState) {
	end := off + length
	for b := off / memBlock; b*memBlock < end; b++ {
		lo, hi := b*memBlock, min((b+1)*memBlock, int64(len(m.data)))
		if lo >= off && hi <= end {
			clear(m.data[lo:hi])
			m.state[b] = s
		}
	}
}

// snapshot copies the bytes.
func (m *memExport) snapshot() []byte {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return bytes.Clone(m.data)
}

// readOnlyExport offers ReadAt and Extents only.
type readOnlyExport struct{ m *memExport }

func (e readOnlyExport) Size() int64                                 { return e.m.Size() }
func (e readOnlyExport) ReadAt(p []byte, off int64) (int, error)     { return e.m.ReadAt(p, off) }
func (e readOnlyExport) Extents(off, length int64) ([]Extent, error) { return e.m.Extents(off, length) }

// plainExport offers ReadAt only.
type plainExport struct{ m *memExport }

func (e plainExport) Size() int64                             { return e.m.Size() }
func (e plainExport) ReadAt(p []byte, off int64) (int, error) { return e.m.ReadAt(p, off) }

// writeOnlyExport is writable, without Trim and WriteZeroes.
type writeOnlyExport struct{ m *memExport }

func (e writeOnlyExport) Size() int64                              { return e.m.Size() }
func (e writeOnlyExport) ReadAt(p []byte, off int64) (int, error)  { return e.m.ReadAt(p, off) }
func (e writeOnlyExport) WriteAt(p []byte, off int64) (int, error) { return e.m.WriteAt(p, off) }
func (e writeOnlyExport) Flush() error                             { return e.m.Flush() }

// faultyExport fails every read, extent query, write and flush.
type faultyExport struct{ size int64 }

var errFaulty = errors.New("faulty export: /secret/path/to/pack failed")

func (e faultyExport) Size() int64                              { return e.size }
func (e faultyExport) ReadAt(p []byte, off int64) (int, error)  { return len(p) / 2, errFaulty }
func (e faultyExport) Extents(int64, int64) ([]Extent, error)   { return nil, errFaulty }
func (e faultyExport) WriteAt(p []byte, off int64) (int, error) { return 0, errFaulty }
func (e faultyExport) Flush() error                             { return errFaulty }

// Layout of the standard test disk (testDisk): 8 MiB of data, holes,
// allocated zeros and random bytes.
const (
	MiB          = 1 << 20
	testDiskSize = 8 * MiB
)

// testDiskMap is the layout nbdinfo --map and block status must show:
// offset, length, state.
var testDiskMap = []struct {
	off, length int64
	state       blockState
}{
	{0, 1 * MiB, blockData}, // 0x11
	{1 * MiB, 1 * MiB, blockHole},
	{2 * MiB, 1 * MiB, blockData}, // 0x22
	{3 * MiB, 256 << 10, blockZero},
	{3*MiB + 256<<10, 2*MiB - 256<<10, blockHole},
	{5 * MiB, 64 << 10, blockData}, // 0x33
	{5*MiB + 64<<10, 1*MiB - 64<<10, blockHole},
	{6 * MiB, 128 << 10, blockData}, // random
	{6*MiB + 128<<10, 2*MiB - 128<<10, blockHole},
}

func testDisk() *memExport {
	m := newMemExport(testDiskSize)
	m.fill(0, 1*MiB, 0x11, nil)
	m.fill(2*MiB, 1*MiB, 0x22, nil)
	m.zeroAlloc(3*MiB, 256<<10)
	m.fill(5*MiB, 64<<10, 0x33, nil)
	m.fill(6*MiB, 128<<10, 0, rand.New(rand.NewSource(1)))
	m.desc = "cairn test disk"
	return m
}

// testExports is the set of exports the tests serve:
//
//	"" and "disk": testDisk, read-only with extents
//	"plain":       testDisk without extents
//	"rw":          a writable testDisk
//	"wo":          a writable testDisk without Trim and WriteZeroes
//	"faulty":      every operation fails
type testExports struct {
	disk, rw, wo *memExport
}

func newTestExports() *testExports {
	return &testExports{disk: testDisk(), rw: testDisk(), wo: testDisk()}
}

func (x *testExports) lookup(name string) (Export, bool) {
	switch name {
	case "", "disk":
		return readOnlyExport{x.disk}, true
	case "plain":
		return plainExport{x.disk}, true
	case "rw":
		return x.rw, true
	case "wo":
		return writeOnlyExport{x.wo}, true
	case "faulty":
		return faultyExport{size: 1 * MiB}, true
	}
	return nil, false
}

func (x *testExports) server(t testing.TB) *Server {
	return &Server{
		Lookup: x.lookup,
		List:   func() []string { return []string{"disk", "plain", "rw", "wo", "faulty"} },
		Logf:   func(format string, args ...any) { t.Logf(format, args...) },
	}
}

// startTCP serves srv on a free loopback port until the test ends, and
// returns the port.
func startTCP(t testing.TB, srv *Server) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return within 10s of its context ending")
		}
	})
	return l.Addr().(*net.TCPAddr).Port
}
