package nbd

import (
	"bufio"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/testenv"
)

// BenchmarkSequentialRead reads an in-memory export front to back in
// 2 MiB requests, one at a time, over loopback TCP: the cost of the
// server's read path (request parsing, buffers, reply writing) per byte.
func BenchmarkSequentialRead(b *testing.B) {
	const (
		size  = 256 * MiB
		chunk = 2 * MiB
	)
	m := newMemExport(size)
	rand.New(rand.NewSource(1)).Read(m.data)
	m.setState(0, size, blockData)
	for _, structured := range []bool{false, true} {
		name := "simple"
		if structured {
			name = "structured"
		}
		b.Run(name, func(b *testing.B) {
			srv := &Server{Lookup: func(string) (Export, bool) { return readOnlyExport{m}, true }}
			port := startTCP(b, srv)
			c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			tc := greet(b, c)
			c.SetDeadline(time.Time{})
			tc.clientFlags(clientFixedNewstyle | clientNoZeroes)
			if structured {
				tc.mustAck(optStructuredReply, nil)
			}
			tc.mustAck(optGo, goData("disk"))
			r := bufio.NewReaderSize(c, 1<<20)
			buf := make([]byte, chunk)
			hdr := make([]byte, 32)
			req := make([]byte, 28)
			be.PutUint32(req, magicRequest)
			be.PutUint16(req[6:], cmdRead)
			be.PutUint32(req[24:], chunk)
			b.SetBytes(chunk)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				off := uint64(i) * chunk % size
				be.PutUint64(req[8:], uint64(i))
				be.PutUint64(req[16:], off)
				if _, err := c.Write(req); err != nil {
					b.Fatal(err)
				}
				if structured {
					// One OFFSET_DATA chunk: 20-byte header, 8-byte offset.
					if _, err := io.ReadFull(r, hdr[:28]); err != nil {
						b.Fatal(err)
					}
					if be.Uint32(hdr) != magicStructured || be.Uint16(hdr[6:]) != replyTypeOffsetData || be.Uint32(hdr[16:]) != chunk+8 {
						b.Fatalf("unexpected reply %x", hdr[:28])
					}
				} else {
					if _, err := io.ReadFull(r, hdr[:16]); err != nil {
						b.Fatal(err)
					}
					if be.Uint32(hdr) != magicSimple || be.Uint32(hdr[4:]) != 0 {
						b.Fatalf("unexpected reply %x", hdr[:16])
					}
				}
				if _, err := io.ReadFull(r, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// fileExport serves a file read-only.
type fileExport struct {
	f    *os.File
	size int64
}

func (e fileExport) Size() int64                             { return e.size }
func (e fileExport) ReadAt(p []byte, off int64) (int, error) { return e.f.ReadAt(p, off) }

// BenchmarkNbdcopy copies a raw file of random bytes to null: with nbdcopy
// (its defaults: multi-conn, many requests in flight), served once by
// qemu-nbd and once by this server, for the comparison the eventual
// requirement asks for (at least 0.8x qemu-nbd). CAIRN_NBD_BENCH_MIB sets
// the file size (default 256).
func BenchmarkNbdcopy(b *testing.B) {
	testenv.RequireTool(b, "nbdcopy", "qemu-nbd")
	mib := 256
	if v := os.Getenv("CAIRN_NBD_BENCH_MIB"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			b.Fatalf("CAIRN_NBD_BENCH_MIB=%q: want a positive number of MiB", v)
		}
		mib = n
	}
	size := int64(mib) * MiB
	path := filepath.Join(b.TempDir(), "bench.raw")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	rnd := rand.New(rand.NewSource(1))
	block := make([]byte, 4*MiB)
	for written := int64(0); written < size; written += int64(len(block)) {
		rnd.Read(block)
		if _, err := f.Write(block[:min(int64(len(block)), size-written)]); err != nil {
			b.Fatal(err)
		}
	}
	defer f.Close()
	// Written back before measuring: both servers read from the page cache.
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}

	copyFrom := func(b *testing.B, uri string) {
		b.SetBytes(size)
		for i := 0; i < b.N; i++ {
			if out, err := exec.Command("nbdcopy", uri, "null:").CombinedOutput(); err != nil {
				b.Fatalf("nbdcopy %s null: %v\n%s", uri, err, out)
			}
		}
	}
	b.Run("qemu-nbd", func(b *testing.B) {
		port := testenv.FreePort(b)
		cmd := exec.Command("qemu-nbd", "-r", "-f", "raw", "-x", "bench", "-b", "127.0.0.1", "-p", strconv.Itoa(port),
			"-t", "-e", "16", path)
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		defer func() {
			cmd.Process.Kill()
			cmd.Wait()
		}()
		waitPort(b, port)
		b.ResetTimer()
		copyFrom(b, fmt.Sprintf("nbd://127.0.0.1:%d/bench", port))
	})
	b.Run("cairn", func(b *testing.B) {
		srv := &Server{Lookup: func(string) (Export, bool) { return fileExport{f: f, size: size}, true }}
		port := startTCP(b, srv)
		b.ResetTimer()
		copyFrom(b, fmt.Sprintf("nbd://127.0.0.1:%d/bench", port))
	})
}

func waitPort(t testing.TB, port int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on port %d: %v", port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
