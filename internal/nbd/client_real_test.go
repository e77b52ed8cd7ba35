package nbd

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/testenv"
)

// Tests of Client: against this package's Server (TCP, unix socket, TLS),
// against qemu-nbd serving qcow2 images, and against scripted servers that
// break the protocol.

var writeClientSeeds = flag.Bool("nbd.write-client-seeds", false, "rewrite testdata/fuzz/FuzzClientReplies/seed-* from clientReplySeeds")

// dialT dials an export and closes the client when the test ends.
func dialT(t testing.TB, network, addr, name string) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := Dial(ctx, network, addr, name, nil)
	if err != nil {
		t.Fatalf("Dial %s %s %q: %v", network, addr, name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// startUnix serves srv on a unix socket until the test ends and returns
// its path.
func startUnix(t testing.TB, srv *Server) string {
	t.Helper()
	// Socket paths are short (108 bytes): not under t.TempDir().
	dir, err := os.MkdirTemp("", "cairn-nbd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "nbd.sock")
	l, err := net.Listen("unix", path)
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
	return path
}

// readRandom reads random ranges of the export from several goroutines at
// once and compares them with want.
func readRandom(t *testing.T, c *Client, want []byte, workers, reads int, seed int64) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewSource(seed + int64(w)))
			for range reads {
				off := rnd.Int63n(int64(len(want)))
				limit := 4096
				if rnd.Intn(3) == 0 {
					limit = 3 * MiB
				}
				n := 1 + rnd.Intn(min(len(want)-int(off), limit))
				buf := make([]byte, n)
				got, err := c.ReadAt(buf, off)
				if err != nil || got != n {
					errs <- fmt.Errorf("ReadAt(%d bytes at %d) = %d, %v", n, off, got, err)
					return
				}
				if !bytes.Equal(buf, want[off:off+int64(n)]) {
					errs <- fmt.Errorf("ReadAt(%d bytes at %d): bytes differ from the export", n, off)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// readWhole reads the export with one ReadAt.
func readWhole(t *testing.T, c *Client) []byte {
	t.Helper()
	buf := make([]byte, c.Size())
	if n, err := c.ReadAt(buf, 0); err != nil || n != len(buf) {
		t.Fatalf("ReadAt of the whole export (%d bytes) = %d, %v", len(buf), n, err)
	}
	return buf
}

func checkExtents(t *testing.T, c *Client, want []Range) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got, err := c.Extents(ctx)
	if err != nil {
		t.Fatalf("Extents: %v", err)
	}
	if !slices.Equal(got, want) {
		t.Errorf("Extents = %v, want %v", got, want)
	}
}

// checkPastEnd reads across the end of the export: the bytes up to it and
// io.EOF.
func checkPastEnd(t *testing.T, c *Client, want []byte) {
	t.Helper()
	size := c.Size()
	buf := make([]byte, 10000)
	n, err := c.ReadAt(buf, size-100)
	if n != 100 || err != io.EOF || !bytes.Equal(buf[:100], want[size-100:]) {
		t.Errorf("ReadAt across the end = %d, %v; want 100, io.EOF and the last bytes", n, err)
	}
	if n, err := c.ReadAt(buf, size); n != 0 || err != io.EOF {
		t.Errorf("ReadAt at the end = %d, %v; want 0, io.EOF", n, err)
	}
	if _, err := c.ReadAt(buf, -1); err == nil {
		t.Errorf("ReadAt at a negative offset succeeded")
	}
}

// testDiskData is what base:allocation reports as data for testDisk:
// everything but holes (allocated zeros count).
var testDiskData = []Range{{0, 1 * MiB}, {2 * MiB, 1*MiB + 256<<10}, {5 * MiB, 64 << 10}, {6 * MiB, 128 << 10}}

func TestClientOwnServer(t *testing.T) {
	x := newTestExports()
	big := newMemExport(70 * MiB)
	rand.New(rand.NewSource(7)).Read(big.data)
	big.setState(0, big.Size(), blockData)
	srv := x.server(t)
	srv.Lookup = func(name string) (Export, bool) {
		if name == "big" {
			return readOnlyExport{big}, true
		}
		return x.lookup(name)
	}
	tcpAddr := "127.0.0.1:" + strconv.Itoa(startTCP(t, srv))
	sock := startUnix(t, srv)
	disk := x.disk.snapshot()

	for _, tt := range []struct{ network, addr string }{{"tcp", tcpAddr}, {"unix", sock}} {
		t.Run(tt.network, func(t *testing.T) {
			c := dialT(t, tt.network, tt.addr, "disk")
			if c.Size() != testDiskSize || !c.ReadOnly() {
				t.Errorf("size %d, read-only %v", c.Size(), c.ReadOnly())
			}
			if !bytes.Equal(readWhole(t, c), disk) {
				t.Errorf("whole export: bytes differ")
			}
			readRandom(t, c, disk, 8, 150, 1)
			checkPastEnd(t, c, disk)
			checkExtents(t, c, testDiskData)

			// Without extents the server reports all data.
			plain := dialT(t, tt.network, tt.addr, "plain")
			checkExtents(t, plain, []Range{{0, testDiskSize}})
			readRandom(t, plain, disk, 4, 50, 2)

			// Over 32 MiB: one ReadAt becomes three requests.
			b := dialT(t, tt.network, tt.addr, "big")
			if !bytes.Equal(readWhole(t, b), big.data) {
				t.Errorf("big export: bytes differ")
			}
			readRandom(t, b, big.data, 8, 40, 3)

			if rw := dialT(t, tt.network, tt.addr, "rw"); rw.ReadOnly() {
				t.Errorf("writable export reported read-only")
			}

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := Dial(ctx, tt.network, tt.addr, "nope", nil)
			if err == nil || !strings.Contains(err.Error(), `"nope"`) || !strings.Contains(err.Error(), "no such export") {
				t.Errorf("Dial of an unknown export: %v, want an error naming it", err)
			}
		})
	}
}

func TestClientTLS(t *testing.T) {
	pki := newTestPKI(t)
	x := newTestExports()
	srv := x.server(t)
	srv.TLSConfig = pki.server
	addr := "127.0.0.1:" + strconv.Itoa(startTCP(t, srv))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	c, err := Dial(ctx, "tcp", addr, "disk", pki.client)
	if err != nil {
		t.Fatalf("Dial with TLS: %v", err)
	}
	defer c.Close()
	readRandom(t, c, x.disk.snapshot(), 4, 50, 4)
	checkExtents(t, c, testDiskData)

	if _, err := Dial(ctx, "tcp", addr, "disk", nil); err == nil || !strings.Contains(err.Error(), "requires TLS") {
		t.Errorf("Dial without TLS to a server that requires it: %v", err)
	}
	plainAddr := "127.0.0.1:" + strconv.Itoa(startTCP(t, x.server(t)))
	if _, err := Dial(ctx, "tcp", plainAddr, "disk", pki.client); err == nil || !strings.Contains(err.Error(), "refused TLS") {
		t.Errorf("Dial with TLS to a server without it: %v", err)
	}
}

// TestClientServerDies: a connection that breaks with reads in flight
// fails them all, promptly, and every read after them.
func TestClientServerDies(t *testing.T) {
	t.Run("qemu-nbd killed", func(t *testing.T) {
		testenv.RequireTool(t, "qemu-img", "qemu-io", "qemu-nbd")
		img := makeQcow2(t, 64*MiB, "write -P 0x77 0 64M")
		q := startQemuNBD(t, img, "X", false)
		c := dialT(t, q.network, q.addr, "X")
		const workers = 4
		var reads atomic.Int64
		errc := make(chan error, workers)
		for w := range workers {
			go func() {
				buf := make([]byte, 1*MiB)
				for i := 0; ; i++ {
					off := int64((w*16+i)%64) * MiB
					if _, err := c.ReadAt(buf, off); err != nil {
						errc <- err
						return
					}
					reads.Add(1)
				}
			}()
		}
		waitFor(t, func() bool { return reads.Load() >= 8 }, "reads through qemu-nbd")
		q.kill()
		deadline := time.After(10 * time.Second)
		for range workers {
			select {
			case err := <-errc:
				t.Logf("read failed as it should: %v", err)
			case <-deadline:
				t.Fatalf("reads still hang 10s after qemu-nbd was killed")
			}
		}
		if _, err := c.ReadAt(make([]byte, 10), 0); err == nil {
			t.Errorf("read after the connection broke succeeded")
		}
		closeWithin(t, c)
	})

	t.Run("own server connection dropped", func(t *testing.T) {
		gx, c, serverConn := gatedClient(t)
		errc := readsInFlight(t, c, gx, 4)
		serverConn.Close()
		for range 4 {
			select {
			case err := <-errc:
				if err == nil {
					t.Errorf("read succeeded on a dropped connection")
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("reads still hang 10s after the connection was dropped")
			}
		}
		closeWithin(t, c)
	})

	t.Run("Close with reads in flight", func(t *testing.T) {
		gx, c, _ := gatedClient(t)
		errc := readsInFlight(t, c, gx, 4)
		closeWithin(t, c)
		for range 4 {
			select {
			case err := <-errc:
				if !errors.Is(err, net.ErrClosed) {
					t.Errorf("read in flight at Close: %v, want net.ErrClosed", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("reads still hang 10s after Close")
			}
		}
		if _, err := c.ReadAt(make([]byte, 10), 0); !errors.Is(err, net.ErrClosed) {
			t.Errorf("read after Close: %v, want net.ErrClosed", err)
		}
	})
}

// gatedClient connects to a server whose reads wait for a gate (opened
// when the test ends) and returns the server's side of the connection.
func gatedClient(t *testing.T) (*gateExport, *Client, net.Conn) {
	t.Helper()
	x := newTestExports()
	gx := &gateExport{Export: readOnlyExport{x.disk}, gate: make(chan struct{})}
	srv := &Server{Lookup: func(string) (Export, bool) { return gx, true }}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	served := make(chan struct{})
	go func() {
		defer close(served)
		sc, err := l.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- sc
		srv.ServeConn(context.Background(), sc)
	}()
	c := dialT(t, "tcp", l.Addr().String(), "disk")
	sc := <-accepted
	if sc == nil {
		t.Fatal("no connection accepted")
	}
	t.Cleanup(func() {
		close(gx.gate)
		sc.Close()
		<-served
	})
	return gx, c, sc
}

// readsInFlight starts n reads and waits until the export holds them all.
func readsInFlight(t *testing.T, c *Client, gx *gateExport, n int) <-chan error {
	t.Helper()
	errc := make(chan error, n)
	for i := range n {
		go func() {
			_, err := c.ReadAt(make([]byte, 64<<10), int64(i)*MiB)
			errc <- err
		}()
	}
	waitFor(t, func() bool { return gx.waiting.Load() == int64(n) }, "reads to reach the export")
	return errc
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func closeWithin(t *testing.T, c *Client) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		c.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("Close did not return within 10s")
	}
}

// makeQcow2 creates a qcow2 image of size bytes (64 KiB clusters) and runs
// the qemu-io commands on it.
func makeQcow2(t testing.TB, size int64, cmds ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", path, strconv.FormatInt(size, 10)).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
	}
	if len(cmds) > 0 {
		args := []string{"-f", "qcow2"}
		for _, c := range cmds {
			args = append(args, "-c", c)
		}
		testenv.QemuIO(t, append(args, path)...)
	}
	return path
}

// rawOf converts an image to raw with qemu-img and returns the bytes.
func rawOf(t testing.TB, img string) []byte {
	t.Helper()
	raw := filepath.Join(t.TempDir(), "ref.raw")
	if out, err := exec.Command("qemu-img", "convert", "-f", "qcow2", "-O", "raw", img, raw).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v\n%s", err, out)
	}
	b, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// qemuNBD is a qemu-nbd process serving one qcow2 image read-only, to any
// number of clients, until the test ends.
type qemuNBD struct {
	cmd           *exec.Cmd
	network, addr string
	exited        chan struct{}
	out           bytes.Buffer // read only after exited
}

func startQemuNBD(t testing.TB, img, export string, unix bool) *qemuNBD {
	t.Helper()
	testenv.RequireTool(t, "qemu-nbd")
	var last string
	for range 3 { // the free port may be taken before qemu-nbd binds it
		q := &qemuNBD{exited: make(chan struct{})}
		args := []string{"--read-only", "--persistent", "--shared", "0", "--export-name", export, "--format", "qcow2"}
		if unix {
			dir, err := os.MkdirTemp("", "cairn-qnbd")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			q.network, q.addr = "unix", filepath.Join(dir, "nbd.sock")
			args = append(args, "--socket", q.addr)
		} else {
			port := testenv.FreePort(t)
			q.network, q.addr = "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
			args = append(args, "--bind", "127.0.0.1", "--port", strconv.Itoa(port))
		}
		q.cmd = exec.Command("qemu-nbd", append(args, img)...)
		q.cmd.Stdout, q.cmd.Stderr = &q.out, &q.out
		q.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // dies with the test binary
		if err := q.cmd.Start(); err != nil {
			t.Fatalf("starting qemu-nbd: %v", err)
		}
		go func() {
			q.cmd.Wait()
			close(q.exited)
		}()
		if q.ready() {
			t.Cleanup(q.kill)
			return q
		}
		q.kill()
		last = q.out.String()
	}
	t.Fatalf("qemu-nbd did not start:\n%s", last)
	return nil
}

// ready waits until qemu-nbd accepts connections; false if it exited or
// took over 10 s.
func (q *qemuNBD) ready() bool {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-q.exited:
			return false
		default:
		}
		if c, err := net.Dial(q.network, q.addr); err == nil {
			c.Close()
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// kill stops qemu-nbd with SIGKILL and waits for it.
func (q *qemuNBD) kill() {
	select {
	case <-q.exited:
		return
	default:
	}
	q.cmd.Process.Kill()
	<-q.exited
}

func TestClientQemuNBD(t *testing.T) {
	testenv.RequireTool(t, "qemu-img", "qemu-io", "qemu-nbd")
	img := makeQcow2(t, 40*MiB,
		"write -P 0xab 1M 2M",
		"write -P 0xcd 5000000 1000", // unaligned: allocates the cluster around it
		"write -z 8M 1M",             // zero clusters read as holes
		"write -P 0x11 31M 3M",       // across the 32 MiB request boundary
		"write -P 0x5e 39M 1M",       // up to the end
	)
	want := rawOf(t, img)
	if len(want) != 40*MiB {
		t.Fatalf("raw image of %d bytes", len(want))
	}
	const cluster = 64 << 10
	wantExtents := []Range{
		{1 * MiB, 2 * MiB},
		{5000000 / cluster * cluster, cluster},
		{31 * MiB, 3 * MiB},
		{39 * MiB, 1 * MiB},
	}
	for _, unix := range []bool{false, true} {
		name := "tcp"
		if unix {
			name = "unix"
		}
		t.Run(name, func(t *testing.T) {
			q := startQemuNBD(t, img, "X", unix)
			c := dialT(t, q.network, q.addr, "X")
			if c.Size() != int64(len(want)) || !c.ReadOnly() {
				t.Errorf("size %d, read-only %v", c.Size(), c.ReadOnly())
			}
			if !bytes.Equal(readWhole(t, c), want) {
				t.Errorf("whole export: bytes differ from qemu-img convert")
			}
			readRandom(t, c, want, 8, 100, 5)
			checkPastEnd(t, c, want)
			checkExtents(t, c, wantExtents)

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := Dial(ctx, q.network, q.addr, "nope", nil)
			if err == nil || !strings.Contains(err.Error(), `"nope"`) || !strings.Contains(err.Error(), "no such export") {
				t.Errorf("Dial of an unknown export: %v, want an error naming it", err)
			}
		})
	}
}

// BenchmarkClientReadQemuNBD reads a 256 MiB qcow2 of random bytes through
// qemu-nbd with four goroutines sharing one Client, in 1 MiB requests.
func BenchmarkClientReadQemuNBD(b *testing.B) {
	testenv.RequireTool(b, "qemu-img", "qemu-nbd")
	const (
		size    = 256 * MiB
		chunk   = 1 * MiB
		readers = 4
	)
	dir := b.TempDir()
	raw := filepath.Join(dir, "bench.raw")
	f, err := os.Create(raw)
	if err != nil {
		b.Fatal(err)
	}
	rnd := rand.New(rand.NewSource(1))
	block := make([]byte, 4*MiB)
	for written := 0; written < size; written += len(block) {
		rnd.Read(block)
		if _, err := f.Write(block); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	img := filepath.Join(dir, "bench.qcow2")
	if out, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, img).CombinedOutput(); err != nil {
		b.Fatalf("qemu-img convert: %v\n%s", err, out)
	}
	for _, unix := range []bool{false, true} {
		name := "tcp"
		if unix {
			name = "unix"
		}
		b.Run(name, func(b *testing.B) {
			q := startQemuNBD(b, img, "bench", unix)
			c := dialT(b, q.network, q.addr, "bench")
			b.SetBytes(size)
			b.ResetTimer()
			for range b.N {
				var next atomic.Int64
				var wg sync.WaitGroup
				errs := make(chan error, readers)
				for range readers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						buf := make([]byte, chunk)
						for {
							off := next.Add(chunk) - chunk
							if off >= size {
								return
							}
							if _, err := c.ReadAt(buf, off); err != nil {
								errs <- err
								return
							}
						}
					}()
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					b.Fatal(err)
				}
			}
		})
	}
}

// fakeServer is a scripted NBD server for what real servers do not do: it
// negotiates as configured, answers the first request with first (when
// set) and the others correctly, from data.
type fakeServer struct {
	size       uint64
	flags      uint16   // transmission flags; 0: HAS_FLAGS|READ_ONLY
	noFixed    bool     // plain newstyle, NBD_OPT_EXPORT_NAME only
	zeroPad    bool     // do not offer NBD_FLAG_NO_ZEROES
	structured bool     // accept NBD_OPT_STRUCTURED_REPLY
	metaID     uint32   // base:allocation's ID; 0: not offered
	goUnsup    bool     // answer NBD_OPT_GO with NBD_REP_ERR_UNSUP
	blockSizes []uint32 // minimum, preferred, maximum; nil: not sent
	data       []byte   // what reads return; nil: zeros

	first  func(req request) []byte
	hangUp bool                    // close the connection after first's reply
	check  func(req request) error // violations are answered EINVAL and recorded
	bad    atomic.Int64
}

// handshake runs the server's side of the handshake on the export "disk".
func (f *fakeServer) handshake(r *bufio.Reader, w io.Writer) error {
	var hf uint16
	if !f.noFixed {
		hf |= flagFixedNewstyle
	}
	if !f.zeroPad {
		hf |= flagNoZeroes
	}
	g := be.AppendUint64(nil, magicInit)
	g = be.AppendUint64(g, magicOption)
	if _, err := w.Write(be.AppendUint16(g, hf)); err != nil {
		return err
	}
	var cf [4]byte
	if _, err := io.ReadFull(r, cf[:]); err != nil {
		return err
	}
	flags := f.flags
	if flags == 0 {
		flags = tfHasFlags | tfReadOnly
	}
	reply := func(opt, typ uint32, data []byte) error {
		b := be.AppendUint64(nil, magicOptReply)
		b = be.AppendUint32(b, opt)
		b = be.AppendUint32(b, typ)
		b = be.AppendUint32(b, uint32(len(data)))
		_, err := w.Write(append(b, data...))
		return err
	}
	for {
		var h [16]byte
		if _, err := io.ReadFull(r, h[:]); err != nil {
			return err
		}
		if be.Uint64(h[:]) != magicOption {
			return errors.New("bad option magic")
		}
		opt := be.Uint32(h[8:])
		data := make([]byte, be.Uint32(h[12:]))
		if _, err := io.ReadFull(r, data); err != nil {
			return err
		}
		var err error
		switch {
		case opt == optExportName:
			if string(data) != "disk" {
				return errors.New("unknown export")
			}
			b := be.AppendUint16(be.AppendUint64(nil, f.size), flags)
			if be.Uint32(cf[:])&clientNoZeroes == 0 {
				b = append(b, make([]byte, exportNameZeroPad)...)
			}
			_, err := w.Write(b)
			return err
		case f.noFixed:
			return errors.New("option in plain newstyle")
		case opt == optStructuredReply && f.structured:
			err = reply(opt, repAck, nil)
		case opt == optSetMetaContext:
			if f.metaID != 0 {
				err = reply(opt, repMetaContext, append(be.AppendUint32(nil, f.metaID), contextAllocation...))
			}
			if err == nil {
				err = reply(opt, repAck, nil)
			}
		case opt == optGo && !f.goUnsup:
			if len(data) < 4 || string(data[4:min(len(data), 4+int(be.Uint32(data)))]) != "disk" {
				err = reply(opt, repErrUnknown, []byte("no such export here"))
				break
			}
			info := be.AppendUint16(nil, infoExport)
			info = be.AppendUint16(be.AppendUint64(info, f.size), flags)
			err = reply(opt, repInfo, info)
			if err == nil && f.blockSizes != nil {
				bs := be.AppendUint16(nil, infoBlockSize)
				for _, v := range f.blockSizes {
					bs = be.AppendUint32(bs, v)
				}
				err = reply(opt, repInfo, bs)
			}
			if err == nil {
				err = reply(opt, repAck, nil)
			}
			if err == nil {
				return nil
			}
		default:
			err = reply(opt, repErrUnsup, nil)
		}
		if err != nil {
			return err
		}
	}
}

// serve runs the handshake and answers requests until NBD_CMD_DISC.
func (f *fakeServer) serve(r *bufio.Reader, w io.Writer) error {
	if err := f.handshake(r, w); err != nil {
		return err
	}
	for n := 0; ; n++ {
		var h [28]byte
		if _, err := io.ReadFull(r, h[:]); err != nil {
			return err
		}
		req := request{flags: be.Uint16(h[4:]), typ: be.Uint16(h[6:]), handle: be.Uint64(h[8:]), offset: be.Uint64(h[16:]), length: be.Uint32(h[24:])}
		if req.typ == cmdDisc {
			return nil
		}
		out := f.answer(req)
		if n == 0 && f.first != nil {
			out = f.first(req)
		}
		if _, err := w.Write(out); err != nil {
			return err
		}
		if n == 0 && f.first != nil && f.hangUp {
			return nil
		}
	}
}

func (f *fakeServer) answer(req request) []byte {
	refuse := func(msg string) []byte {
		f.bad.Add(1)
		if f.structured {
			return wireError(replyFlagDone, replyTypeError, req.handle, errInval, msg, 0)
		}
		return wireSimple(req.handle, errInval, nil)
	}
	if req.offset > f.size || uint64(req.length) > f.size-req.offset {
		return refuse("past the end")
	}
	if f.check != nil {
		if err := f.check(req); err != nil {
			return refuse(err.Error())
		}
	}
	switch req.typ {
	case cmdRead:
		p := make([]byte, req.length)
		if f.data != nil {
			p = f.data[req.offset : req.offset+uint64(req.length)]
		}
		if f.structured {
			return wireData(replyFlagDone, req.handle, req.offset, p)
		}
		return wireSimple(req.handle, 0, p)
	case cmdBlockStatus:
		return wireStatus(replyFlagDone, req.handle, f.metaID, req.length, stateHole|stateZero)
	}
	return refuse("unexpected command")
}

// startFake connects a client to f over a pipe.
func startFake(t testing.TB, f *fakeServer) *Client {
	t.Helper()
	c, err := dialFake(t, f, "disk")
	if err != nil {
		t.Fatalf("handshake with the fake server: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func dialFake(t testing.TB, f *fakeServer, name string) (*Client, error) {
	t.Helper()
	cc, sc := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer sc.Close()
		f.serve(bufio.NewReader(sc), sc)
	}()
	t.Cleanup(func() {
		cc.Close()
		<-done
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return clientOn(ctx, cc, name, nil)
}

// Encoders of server messages.

func wireSimple(handle uint64, errno uint32, data []byte) []byte {
	b := be.AppendUint32(nil, magicSimple)
	b = be.AppendUint32(b, errno)
	b = be.AppendUint64(b, handle)
	return append(b, data...)
}

func wireChunk(flags, typ uint16, handle uint64, payload []byte) []byte {
	return append(wireChunkHeader(flags, typ, handle, uint32(len(payload))), payload...)
}

// wireChunkHeader is a chunk header claiming any length.
func wireChunkHeader(flags, typ uint16, handle uint64, length uint32) []byte {
	b := be.AppendUint32(nil, magicStructured)
	b = be.AppendUint16(b, flags)
	b = be.AppendUint16(b, typ)
	b = be.AppendUint64(b, handle)
	return be.AppendUint32(b, length)
}

func wireData(flags uint16, handle, off uint64, data []byte) []byte {
	return wireChunk(flags, replyTypeOffsetData, handle, append(be.AppendUint64(nil, off), data...))
}

func wireHole(flags uint16, handle, off uint64, n uint32) []byte {
	return wireChunk(flags, replyTypeOffsetHole, handle, be.AppendUint32(be.AppendUint64(nil, off), n))
}

// wireError is an error chunk; off is sent with NBD_REPLY_TYPE_ERROR_OFFSET.
func wireError(flags, typ uint16, handle uint64, errno uint32, msg string, off uint64) []byte {
	p := be.AppendUint32(nil, errno)
	p = be.AppendUint16(p, uint16(len(msg)))
	p = append(p, msg...)
	if typ == replyTypeErrorOffset {
		p = be.AppendUint64(p, off)
	}
	return wireChunk(flags, typ, handle, p)
}

// wireStatus is a block status chunk; descs are length, status pairs.
func wireStatus(flags uint16, handle uint64, id uint32, descs ...uint32) []byte {
	p := be.AppendUint32(nil, id)
	for _, d := range descs {
		p = be.AppendUint32(p, d)
	}
	return wireChunk(flags, replyTypeBlockStatus, handle, p)
}

// TestClientNegotiation: the paths qemu-nbd and our server do not take.
func TestClientNegotiation(t *testing.T) {
	data := make([]byte, 1*MiB+300)
	rand.New(rand.NewSource(8)).Read(data)
	for _, tt := range []struct {
		name       string
		f          *fakeServer
		structured bool
	}{
		{"plain newstyle", &fakeServer{noFixed: true, zeroPad: true}, false},
		{"plain newstyle without zeroes", &fakeServer{noFixed: true}, false},
		{"no NBD_OPT_GO", &fakeServer{goUnsup: true, zeroPad: true, structured: true, metaID: 9}, true},
		{"no structured replies", &fakeServer{}, false},
		{"structured without base:allocation", &fakeServer{structured: true}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := tt.f
			f.size, f.data = uint64(len(data)), data
			c := startFake(t, f)
			if c.structured != tt.structured || c.Size() != int64(len(data)) || !c.ReadOnly() {
				t.Errorf("structured %v, size %d, read-only %v", c.structured, c.Size(), c.ReadOnly())
			}
			readRandom(t, c, data, 4, 40, 9)
			checkPastEnd(t, c, data)
			if f.metaID != 0 {
				checkExtents(t, c, nil) // the fake reports all holes
			} else {
				checkExtents(t, c, []Range{{0, int64(len(data))}})
			}
		})
	}
	t.Run("unknown export", func(t *testing.T) {
		_, err := dialFake(t, &fakeServer{size: 4096}, "other")
		if err == nil || !strings.Contains(err.Error(), "no such export") || !strings.Contains(err.Error(), "no such export here") {
			t.Errorf("unknown export: %v", err)
		}
	})
	t.Run("unknown export, plain newstyle", func(t *testing.T) {
		_, err := dialFake(t, &fakeServer{size: 4096, noFixed: true}, "other")
		if err == nil || !strings.Contains(err.Error(), "no such export") {
			t.Errorf("unknown export: %v", err)
		}
	})
}

// TestClientBlockSizes: with a minimum block size every request is
// aligned (except at the unaligned end of the export) and none is over
// the maximum, whatever ReadAt asks for.
func TestClientBlockSizes(t *testing.T) {
	data := make([]byte, 1*MiB+300)
	rand.New(rand.NewSource(10)).Read(data)
	for _, structured := range []bool{false, true} {
		t.Run(fmt.Sprintf("structured=%v", structured), func(t *testing.T) {
			f := &fakeServer{size: uint64(len(data)), data: data, structured: structured, blockSizes: []uint32{512, 4096, 64 << 10}}
			f.check = func(req request) error {
				end := req.offset + uint64(req.length)
				if req.offset%512 != 0 || (end%512 != 0 && end != f.size) || req.length > 64<<10 || req.length == 0 {
					return fmt.Errorf("request [%d, +%d) breaks the block sizes", req.offset, req.length)
				}
				return nil
			}
			c := startFake(t, f)
			readRandom(t, c, data, 4, 100, 11)
			checkPastEnd(t, c, data)
			for _, r := range [][2]int64{{1, 1}, {511, 2}, {100, 1000}, {512, 512}, {1000, 200000}, {int64(len(data)) - 1, 1}} {
				buf := make([]byte, r[1])
				if n, err := c.ReadAt(buf, r[0]); n != len(buf) || err != nil || !bytes.Equal(buf, data[r[0]:r[0]+r[1]]) {
					t.Errorf("ReadAt(%d at %d) = %d, %v or wrong bytes", r[1], r[0], n, err)
				}
			}
			if n := f.bad.Load(); n != 0 {
				t.Errorf("%d requests broke the block size constraints", n)
			}
		})
	}
	t.Run("invalid", func(t *testing.T) {
		for _, bs := range [][]uint32{{0, 4096, 1 << 20}, {3, 4096, 1 << 20}, {128 << 10, 128 << 10, 1 << 20}, {4096, 4096, 512}} {
			if _, err := dialFake(t, &fakeServer{size: 1 << 20, blockSizes: bs}, "disk"); err == nil {
				t.Errorf("block sizes %v accepted", bs)
			}
		}
	})
}

// TestClientBadReplies: a server that breaks the protocol makes requests
// fail, never panics the client, never hangs it, and never makes it
// allocate what the server claims. Replies that are merely errors leave
// the connection usable.
func TestClientBadReplies(t *testing.T) {
	const id = 7
	pattern := bytes.Repeat([]byte{0x42}, 4096)
	for _, tt := range []struct {
		name   string
		status bool // the request is Extents' block status, else a 4 KiB read at 8192
		reply  func(h uint64) []byte
		want   string // in the error
		usable bool   // the next request succeeds
	}{
		{"data before the request", false, func(h uint64) []byte { return wireData(replyFlagDone, h, 4096, pattern) }, "outside the read", false},
		{"data past the request", false, func(h uint64) []byte { return wireData(replyFlagDone, h, 8192+4000, pattern[:200]) }, "outside the read", false},
		{"data at a huge offset", false, func(h uint64) []byte { return wireData(replyFlagDone, h, 1<<63, pattern[:16]) }, "outside the read", false},
		{"data chunk of 4 GiB", false, func(h uint64) []byte { return wireChunkHeader(replyFlagDone, replyTypeOffsetData, h, 0xfffffff0) }, "for a read of 4096", false},
		{"data chunk without data", false, func(h uint64) []byte {
			return wireChunk(replyFlagDone, replyTypeOffsetData, h, be.AppendUint64(nil, 8192))
		}, "chunk of 8 bytes", false},
		{"hole past the request", false, func(h uint64) []byte { return wireHole(replyFlagDone, h, 8192, 8192) }, "outside the read", false},
		{"empty hole", false, func(h uint64) []byte { return wireHole(replyFlagDone, h, 8192, 0) }, "empty hole", false},
		{"hole chunk of 13 bytes", false, func(h uint64) []byte {
			return wireChunk(replyFlagDone, replyTypeOffsetHole, h, make([]byte, 13))
		}, "want 12", false},
		{"overlapping chunks", false, func(h uint64) []byte {
			return append(wireData(0, h, 8192, pattern[:2048]), wireData(replyFlagDone, h, 9000, pattern[:2048])...)
		}, "overlaps", false},
		{"chunks that leave a gap", false, func(h uint64) []byte {
			return append(wireData(0, h, 8192, pattern[:1024]), wireHole(replyFlagDone, h, 8192+2048, 2048)...)
		}, "covers only 3072", true},
		{"reply to an unknown handle", false, func(h uint64) []byte { return wireData(replyFlagDone, h+100, 8192, pattern) }, "no request in flight", false},
		{"bad magic", false, func(h uint64) []byte { return bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, 8) }, "bad reply magic", false},
		{"simple reply to a structured read", false, func(h uint64) []byte { return wireSimple(h, 0, pattern) }, "simple reply", false},
		{"none chunk without done", false, func(h uint64) []byte { return wireChunk(0, replyTypeNone, h, nil) }, "without NBD_REPLY_FLAG_DONE", false},
		{"none chunk with payload", false, func(h uint64) []byte { return wireChunk(replyFlagDone, replyTypeNone, h, []byte{1}) }, "1 bytes of payload", false},
		{"unknown chunk type", false, func(h uint64) []byte { return wireChunk(replyFlagDone, 77, h, nil) }, "unknown reply chunk type", false},
		{"status chunk to a read", false, func(h uint64) []byte { return wireStatus(replyFlagDone, h, id, 4096, 0) }, "block status chunk in the reply", false},
		{"server error", false, func(h uint64) []byte {
			return wireError(replyFlagDone, replyTypeError, h, errIO, "disk on fire", 0)
		}, `EIO: "disk on fire"`, true},
		{"server error at an offset", false, func(h uint64) []byte {
			return append(wireData(0, h, 8192, pattern), wireError(replyFlagDone, replyTypeErrorOffset, h, errIO, "", 8200)...)
		}, "EIO", true},
		{"server shutting down", false, func(h uint64) []byte {
			return wireError(replyFlagDone, replyTypeError, h, errShutdown, "bye", 0)
		}, "ESHUTDOWN", false},
		{"simple error reply", false, func(h uint64) []byte { return wireSimple(h, errPerm, nil) }, "EPERM", true},
		{"unknown error chunk type", false, func(h uint64) []byte {
			return wireChunk(replyFlagDone, 1<<15+50, h, append(be.AppendUint32(nil, 1000), 0, 2, 'h', 'i', 9, 9))
		}, `server error 1000: "hi"`, true},
		{"error offset outside the request", false, func(h uint64) []byte {
			return wireError(replyFlagDone, replyTypeErrorOffset, h, errIO, "", 0)
		}, "error offset 0 lies outside", false},
		{"error message past the chunk", false, func(h uint64) []byte {
			return wireChunk(replyFlagDone, replyTypeError, h, append(be.AppendUint32(nil, errIO), 0, 100, 'x'))
		}, "for a 100-byte message", false},
		{"error value 0", false, func(h uint64) []byte { return wireError(replyFlagDone, replyTypeError, h, 0, "", 0) }, "error value 0", false},
		{"error chunk of 1 MiB", false, func(h uint64) []byte { return wireChunkHeader(replyFlagDone, replyTypeError, h, 1<<20) }, "error chunk", false},

		{"status for another context", true, func(h uint64) []byte { return wireStatus(replyFlagDone, h, id+1, 4096, 0) }, "metadata context 8", false},
		{"status descriptor of length 0", true, func(h uint64) []byte { return wireStatus(replyFlagDone, h, id, 0, 0) }, "length 0", false},
		{"status past the request", true, func(h uint64) []byte { return wireStatus(replyFlagDone, h, id, 1<<20, 0, 4096, 0) }, "past the end", false},
		{"status chunk of 8 bytes", true, func(h uint64) []byte { return wireChunk(replyFlagDone, replyTypeBlockStatus, h, make([]byte, 8)) }, "chunk of 8 bytes", false},
		{"two status chunks", true, func(h uint64) []byte {
			return append(wireStatus(0, h, id, 4096, 0), wireStatus(replyFlagDone, h, id, 4096, 0)...)
		}, "two base:allocation", false},
		{"no status", true, func(h uint64) []byte { return wireChunk(replyFlagDone, replyTypeNone, h, nil) }, "no base:allocation status", true},
		{"simple reply to block status", true, func(h uint64) []byte { return wireSimple(h, 0, nil) }, "simple reply", true},
		{"content chunk to block status", true, func(h uint64) []byte { return wireData(replyFlagDone, h, 0, pattern) }, "content chunk", false},
		{"status error", true, func(h uint64) []byte { return wireError(replyFlagDone, replyTypeError, h, errInval, "nope", 0) }, "EINVAL", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeServer{size: 1 << 20, structured: true, metaID: id, data: bytes.Repeat([]byte{0x42}, 1<<20)}
			f.first = func(req request) []byte { return tt.reply(req.handle) }
			c := startFake(t, f)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			run := func() error {
				errc := make(chan error, 1)
				go func() {
					if tt.status {
						_, err := c.Extents(ctx)
						errc <- err
						return
					}
					buf := make([]byte, 4096)
					_, err := c.ReadAt(buf, 8192)
					if err == nil && !bytes.Equal(buf, pattern) {
						err = errors.New("wrong bytes")
					}
					errc <- err
				}()
				select {
				case err := <-errc:
					return err
				case <-time.After(10 * time.Second):
					t.Fatalf("request still waits after 10s")
				}
				return nil
			}
			err := run()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
			t.Logf("%v", err)
			err = run()
			if tt.usable && err != nil {
				t.Errorf("next request on the connection: %v", err)
			}
			if !tt.usable && err == nil {
				t.Errorf("next request succeeded on a connection that broke the protocol")
			}
		})
	}
	t.Run("connection closed mid-chunk", func(t *testing.T) {
		f := &fakeServer{size: 1 << 20, structured: true, metaID: id, hangUp: true}
		f.first = func(req request) []byte { return wireData(replyFlagDone, req.handle, 8192, pattern)[:100] }
		c := startFake(t, f)
		if _, err := c.ReadAt(make([]byte, 4096), 8192); err == nil || !strings.Contains(err.Error(), "unexpected EOF") {
			t.Errorf("read cut short by the server: %v", err)
		}
	})
	t.Run("status past the request's end is cut", func(t *testing.T) {
		f := &fakeServer{size: 1 << 20, structured: true, metaID: id}
		f.first = func(req request) []byte { return wireStatus(replyFlagDone, req.handle, id, 512<<10, 0, 1<<30, 0) }
		checkExtents(t, startFake(t, f), []Range{{0, 1 << 20}})
	})
	t.Run("status in several replies", func(t *testing.T) {
		f := &fakeServer{size: 1 << 20, structured: true, metaID: id}
		f.first = func(req request) []byte { return wireStatus(replyFlagDone, req.handle, id, 4096, 0, 4096, 3, 4096, 2) }
		checkExtents(t, startFake(t, f), []Range{{0, 4096}, {8192, 4096}})
	})
}

// clientReplySeeds are the seed inputs of FuzzClientReplies (see there for
// the requests in flight).
func clientReplySeeds() map[string][]byte {
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	d := func(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }
	return map[string][]byte{
		"all-good": cat(
			wireData(replyFlagDone, 1, 0, d(512, 0x11)),
			wireHole(0, 2, 8192, 1024),
			wireData(0, 2, 9216, d(3072, 0x22)),
			wireStatus(replyFlagDone, 3, 1, 65536, 0, 65536, 3, 1<<20, 2),
			wireChunk(replyFlagDone, replyTypeNone, 2, nil),
		),
		"errors": cat(
			wireError(replyFlagDone, replyTypeError, 1, errIO, "boom", 0),
			wireError(0, replyTypeErrorOffset, 2, errIO, "here", 9000),
			wireChunk(replyFlagDone, replyTypeNone, 2, nil),
			wireSimple(3, errInval, nil),
		),
		"out-of-range": cat(
			wireData(replyFlagDone, 1, 1<<20, d(16, 0x33)),
		),
		"oversized": cat(
			wireChunkHeader(replyFlagDone, replyTypeOffsetData, 2, 0xfffffff0),
			d(64, 0),
		),
		"simple-in-structured": cat(
			wireSimple(3, 0, nil),
			wireSimple(1, 0, d(512, 0x44)),
		),
		"overlap-and-gap": cat(
			wireData(0, 2, 8192, d(2048, 0x55)),
			wireHole(replyFlagDone, 2, 9000, 100),
			wireData(0, 1, 0, d(100, 0x66)),
			wireChunk(replyFlagDone, replyTypeNone, 1, nil),
		),
	}
}

func TestClientReplySeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzClientReplies")
	for name, b := range clientReplySeeds() {
		path := filepath.Join(dir, "seed-"+name)
		want := corpusFile(b)
		if *writeClientSeeds {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("%v (run go test -run TestClientReplySeeds -nbd.write-client-seeds ./internal/nbd/)", err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is out of date (run go test -run TestClientReplySeeds -nbd.write-client-seeds ./internal/nbd/)", path)
		}
	}
}

// FuzzClientReplies feeds arbitrary bytes, as the server's replies, to a
// client that completed a valid handshake (structured replies,
// base:allocation with ID 1, a 1 MiB export) and has three requests in
// flight: handle 1 reads [0, 512), handle 2 reads [8192, +4096), handle 3
// asks block status of the whole export. Whatever arrives, every request
// completes (no hang, no panic), and a success is a sound one.
func FuzzClientReplies(f *testing.F) {
	f.Fuzz(func(t *testing.T, replies []byte) {
		cc, sc := net.Pipe()
		fs := &fakeServer{size: 1 << 20, structured: true, metaID: 1}
		release := make(chan struct{})
		served := make(chan struct{})
		go func() {
			defer close(served)
			defer sc.Close()
			r := bufio.NewReader(sc)
			if err := fs.handshake(r, sc); err != nil {
				return
			}
			go io.Copy(io.Discard, r) // the requests
			<-release
			sc.Write(replies)
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := clientOn(ctx, cc, "disk", nil)
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		calls := []*call{
			{typ: cmdRead, off: 0, length: 512, buf: make([]byte, 512)},
			{typ: cmdRead, off: 8192, length: 4096, buf: make([]byte, 4096)},
			{typ: cmdBlockStatus, off: 0, length: 1 << 20},
		}
		for _, cl := range calls {
			cl.done = make(chan struct{})
			if err := c.start(cl); err != nil {
				t.Fatalf("start: %v", err)
			}
		}
		close(release)
		timeout := time.After(10 * time.Second)
		for i, cl := range calls {
			select {
			case <-cl.done:
			case <-timeout:
				t.Fatalf("request %d never completed", i+1)
			}
		}
		for i, cl := range calls[:2] {
			if cl.err == nil && cl.cover.total != uint64(cl.length) {
				t.Errorf("read %d succeeded with %d of %d bytes", i+1, cl.cover.total, cl.length)
			}
		}
		if st := calls[2]; st.err == nil {
			if st.covered == 0 || st.covered > 1<<20 {
				t.Errorf("block status describes %d bytes", st.covered)
			}
			var end int64
			for _, r := range st.data {
				if r.Length <= 0 || r.Offset < end || r.Offset+r.Length > int64(st.covered) || (end > 0 && r.Offset == end) {
					t.Errorf("block status ranges %v are not sorted, merged and inside [0, %d)", st.data, st.covered)
					break
				}
				end = r.Offset + r.Length
			}
		}
		c.Close()
		<-served
	})
}
