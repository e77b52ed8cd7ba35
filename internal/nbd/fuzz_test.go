package nbd

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var writeSeeds = flag.Bool("nbd.write-seeds", false, "rewrite testdata/fuzz/Fuzz{Handshake,Requests}/seed-* from the scripts in fuzz_test.go")

// fuzzConn is the server's end of a net.Pipe that reports EOF once the
// fuzz input has been read: every input ends as a client that stopped
// sending (a half-close), so a run ends by itself, deterministically,
// after the server has answered everything it received.
type fuzzConn struct {
	net.Conn
	left int
}

func (c *fuzzConn) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, io.EOF
	}
	if len(p) > c.left {
		p = p[:c.left]
	}
	n, err := c.Conn.Read(p)
	c.left -= n
	return n, err
}

// fuzzTarget is the server a fuzz target runs against, built once: small
// exports, so that a 28-byte request cannot ask for more than 1 MiB.
// "disk" is read-only with extents, "rw" writable (reset before every
// run), "plain" without extents, "faulty" fails everything.
type fuzzTarget struct {
	srv       *Server
	disk      []byte // the bytes of "disk", which never change
	rw        *memExport
	rwInitial *memExport
}

func newFuzzTarget(tlsConfig *tls.Config) *fuzzTarget {
	disk := newMemExport(1 * MiB)
	disk.fill(0, 64<<10, 0x11, nil)
	disk.zeroAlloc(64<<10, 64<<10)
	disk.fill(256<<10, 128<<10, 0, rand.New(rand.NewSource(5)))
	initial := newMemExport(1 * MiB)
	initial.fill(4096, 8192, 0x22, nil)
	ft := &fuzzTarget{disk: disk.snapshot(), rwInitial: initial, rw: newMemExport(1 * MiB)}
	ft.reset()
	ft.srv = &Server{
		Lookup: func(name string) (Export, bool) {
			switch name {
			case "", "disk":
				return readOnlyExport{disk}, true
			case "rw":
				return ft.rw, true
			case "plain":
				return plainExport{disk}, true
			case "faulty":
				return faultyExport{size: 1 * MiB}, true
			}
			return nil, false
		},
		List:      func() []string { return []string{"disk", "rw", "plain", "faulty"} },
		TLSConfig: tlsConfig,
	}
	return ft
}

// reset restores "rw" to its first contents.
func (ft *fuzzTarget) reset() {
	ft.rw.mu.Lock()
	defer ft.rw.mu.Unlock()
	copy(ft.rw.data, ft.rwInitial.data)
	copy(ft.rw.state, ft.rwInitial.state)
}

// fuzzServe feeds input to ServeConn over a net.Pipe and returns what the
// server sent. The server must finish within a few seconds of the input
// ending.
func fuzzServe(t *testing.T, srv *Server, input []byte) []byte {
	client, server := net.Pipe()
	done := make(chan error, 1)
	go func() { done <- srv.ServeConn(context.Background(), &fuzzConn{Conn: server, left: len(input)}) }()
	go client.Write(input) // ends when the server read it all or closed
	var out bytes.Buffer
	drained := make(chan struct{})
	go func() {
		// Cap what is kept: the checks need the start of the stream only.
		io.Copy(&capWriter{w: &out, left: 64 << 20}, client)
		close(drained)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("ServeConn did not return within 10s after the input ended")
	}
	<-drained
	client.Close()
	return out.Bytes()
}

type capWriter struct {
	w    io.Writer
	left int
}

func (c *capWriter) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) > c.left {
		p = p[:c.left]
	}
	c.left -= len(p)
	c.w.Write(p)
	return n, nil
}

// script builds the client's side of a session.
type script struct{ b []byte }

func (s *script) u32(v uint32) *script { s.b = be.AppendUint32(s.b, v); return s }

func (s *script) opt(opt uint32, data []byte) *script {
	s.b = be.AppendUint64(s.b, magicOption)
	s.b = be.AppendUint32(s.b, opt)
	s.b = be.AppendUint32(s.b, uint32(len(data)))
	s.b = append(s.b, data...)
	return s
}

func (s *script) req(typ, flags uint16, handle, off uint64, length uint32, payload []byte) *script {
	s.b = be.AppendUint32(s.b, magicRequest)
	s.b = be.AppendUint16(s.b, flags)
	s.b = be.AppendUint16(s.b, typ)
	s.b = be.AppendUint64(s.b, handle)
	s.b = be.AppendUint64(s.b, off)
	s.b = be.AppendUint32(s.b, length)
	s.b = append(s.b, payload...)
	return s
}

// Fuzz request modes: bits of the first argument of FuzzRequests.
const (
	fuzzStructured = 1 << 0 // negotiate structured replies and base:allocation
	fuzzWritable   = 1 << 1 // the writable export
	fuzzPlain      = 1 << 2 // the export without extents (when not writable)
)

// requestPrefix is the handshake FuzzRequests runs before its input.
func requestPrefix(mode uint8) (prefix []byte, export string) {
	export = "disk"
	switch {
	case mode&fuzzWritable != 0:
		export = "rw"
	case mode&fuzzPlain != 0:
		export = "plain"
	}
	s := (&script{}).u32(clientFixedNewstyle | clientNoZeroes)
	if mode&fuzzStructured != 0 {
		s.opt(optStructuredReply, nil).opt(optSetMetaContext, metaData(export, contextAllocation))
	}
	s.opt(optGo, goData(export))
	return s.b, export
}

func FuzzHandshake(f *testing.F) {
	pki := newTestPKI(f)
	plain, withTLS := newFuzzTarget(nil), newFuzzTarget(pki.server)
	f.Fuzz(func(t *testing.T, requireTLS bool, data []byte) {
		ft := plain
		if requireTLS {
			ft = withTLS
		}
		ft.reset()
		out := fuzzServe(t, ft.srv, data)
		checkHaggling(t, requireTLS, data, out)
	})
}

// checkHaggling checks the server's side of a FuzzHandshake session: the
// greeting, then for every option the client sent whole, replies to that
// option ending in one final reply (ACK or an error), until the session
// leaves option haggling. Before TLS, when TLS is required, options other
// than STARTTLS and ABORT must fail with NBD_REP_ERR_TLS_REQD.
func checkHaggling(t *testing.T, requireTLS bool, input, out []byte) {
	t.Helper()
	if len(out) < 18 || !bytes.Equal(out[:16], []byte("NBDMAGICIHAVEOPT")) {
		t.Fatalf("server output does not start with the greeting: %x", out[:min(len(out), 18)])
	}
	out = out[18:]
	if len(input) < 4 {
		if len(out) != 0 {
			t.Fatalf("%d bytes sent before the client flags arrived", len(out))
		}
		return
	}
	cf := be.Uint32(input)
	in := input[4:]
	if cf&^clientKnownFlags != 0 || (requireTLS && cf&clientFixedNewstyle == 0) {
		if len(out) != 0 {
			t.Fatalf("%d bytes sent after client flags %#x", len(out), cf)
		}
		return
	}
	for len(in) >= 16 && be.Uint64(in) == magicOption {
		opt, n := be.Uint32(in[8:]), be.Uint32(in[12:])
		in = in[16:]
		if n > maxOptionLength {
			if opt != optExportName {
				checkReplies(t, &out, opt, func(typ uint32) bool {
					if requireTLS && opt != optStartTLS && opt != optAbort {
						return typ == repErrTLSReqd
					}
					return typ == repErrTooBig
				})
			}
			break
		}
		if uint64(len(in)) < uint64(n) {
			break // the option never arrived whole: no reply
		}
		in = in[n:]
		if opt == optExportName {
			return // transmission, or closed: no option reply either way
		}
		typ := checkReplies(t, &out, opt, func(typ uint32) bool {
			if requireTLS && opt != optStartTLS && opt != optAbort {
				return typ == repErrTLSReqd
			}
			return true
		})
		if typ == repAck && (opt == optGo || opt == optStartTLS || opt == optAbort) {
			return // transmission, TLS or the end: no more option replies
		}
	}
	if len(out) != 0 {
		t.Fatalf("%d bytes sent that answer no option: %x", len(out), out[:min(len(out), 64)])
	}
}

// checkReplies consumes the replies to one option from *out and returns
// the type of the final one, which ok must accept.
func checkReplies(t *testing.T, out *[]byte, opt uint32, ok func(uint32) bool) uint32 {
	t.Helper()
	for {
		p := *out
		if len(p) < 20 {
			t.Fatalf("reply to option %d: %d bytes, want a 20-byte header", opt, len(p))
		}
		n := be.Uint32(p[16:])
		if be.Uint64(p) != magicOptReply || be.Uint32(p[8:]) != opt || uint64(len(p)-20) < uint64(n) {
			t.Fatalf("reply to option %d: bad header %x", opt, p[:20])
		}
		typ := be.Uint32(p[12:])
		*out = p[20+n:]
		if typ == repAck || typ&(1<<31) != 0 {
			if !ok(typ) {
				t.Fatalf("option %d: final reply %#x not allowed here", opt, typ)
			}
			if typ == repAck && n != 0 {
				t.Fatalf("option %d: ACK with %d bytes of data", opt, n)
			}
			return typ
		}
		if typ != repServer && typ != repInfo && typ != repMetaContext {
			t.Fatalf("option %d: reply type %#x", opt, typ)
		}
	}
}

func FuzzRequests(f *testing.F) {
	ft := newFuzzTarget(nil)
	f.Fuzz(func(t *testing.T, mode uint8, data []byte) {
		mode &= fuzzStructured | fuzzWritable | fuzzPlain
		ft.reset()
		prefix, _ := requestPrefix(mode)
		out := fuzzServe(t, ft.srv, append(prefix, data...))
		checkTranscript(t, mode, data, out, ft.disk)
	})
}

// checkTranscript checks the server's side of a FuzzRequests session: the
// handshake reached transmission, every request the server received whole
// got exactly one well-formed reply, and reads of the read-only exports
// returned its bytes. It gives up (without failing) where the client's
// requests make replies ambiguous: repeated handles.
func checkTranscript(t *testing.T, mode uint8, input, out, disk []byte) {
	t.Helper()
	r := bufio.NewReader(bytes.NewReader(out))
	if _, err := r.Discard(18); err != nil {
		t.Fatalf("no greeting")
	}
	tc := &testClient{t: t, r: r, structured: mode&fuzzStructured != 0, pending: map[uint64]request{}}
	for { // option replies up to the ACK of NBD_OPT_GO
		var h [20]byte
		if _, err := io.ReadFull(r, h[:]); err != nil {
			t.Fatalf("handshake replies cut short: %v", err)
		}
		n := be.Uint32(h[16:])
		if be.Uint64(h[:]) != magicOptReply || n > 1<<16 {
			t.Fatalf("bad option reply %x", h)
		}
		if _, err := r.Discard(int(n)); err != nil {
			t.Fatalf("option reply cut short")
		}
		opt, typ := be.Uint32(h[8:]), be.Uint32(h[12:])
		if typ&(1<<31) != 0 {
			t.Fatalf("option %d failed with %#x", opt, typ)
		}
		if opt == optGo && typ == repAck {
			break
		}
	}

	// The requests the server must answer: every whole one up to a bad
	// magic, NBD_CMD_DISC or the end of the input.
	var order []uint64
	for p := input; len(p) >= 28; {
		if be.Uint32(p) != magicRequest {
			break
		}
		req := request{flags: be.Uint16(p[4:]), typ: be.Uint16(p[6:]), handle: be.Uint64(p[8:]), offset: be.Uint64(p[16:]), length: be.Uint32(p[24:])}
		if req.typ == cmdDisc {
			break
		}
		p = p[28:]
		if req.typ == cmdWrite {
			if uint64(len(p)) < uint64(req.length) {
				break // the payload never arrived: no reply
			}
			p = p[req.length:]
		}
		if _, dup := tc.pending[req.handle]; dup {
			return
		}
		tc.pending[req.handle] = req
		order = append(order, req.handle)
	}

	replies := map[uint64]*reply{}
	complete := map[uint64]bool{}
	for len(complete) < len(order) {
		m, err := tc.readMessage()
		if err != nil {
			t.Fatalf("after %d of %d replies: %v", len(complete), len(order), err)
		}
		if _, ok := tc.pending[m.handle]; !ok || complete[m.handle] {
			t.Fatalf("reply to handle %d, which is not waiting for one", m.handle)
		}
		rep := replies[m.handle]
		if rep == nil {
			rep = &reply{}
			replies[m.handle] = rep
		}
		done, err := tc.collect(rep, m)
		if err != nil {
			t.Fatalf("handle %d: %v", m.handle, err)
		}
		if !done {
			continue
		}
		complete[m.handle] = true
		req := tc.pending[m.handle]
		if req.typ == cmdRead && rep.errno == 0 {
			checkCoverage(t, req, *rep)
			if mode&fuzzWritable == 0 && !bytes.Equal(rep.data, disk[req.offset:req.offset+uint64(req.length)]) {
				t.Fatalf("read [%d, +%d): wrong bytes", req.offset, req.length)
			}
		}
	}
	if rest, _ := io.ReadAll(r); len(rest) != 0 {
		t.Fatalf("%d bytes after the last reply", len(rest))
	}
}

// handshakeSeeds are sessions for FuzzHandshake: valid ones that reach
// transmission, and the edges.
func handshakeSeeds() map[string][]any {
	flags := func() *script { return (&script{}).u32(clientFixedNewstyle | clientNoZeroes) }
	read := func(s *script) []byte {
		return s.req(cmdRead, 0, 1, 0, 4096, nil).req(cmdDisc, 0, 2, 0, 0, nil).b
	}
	return map[string][]any{
		"go-structured": {false, read(flags().opt(optStructuredReply, nil).opt(optListMetaContext, metaData("disk")).
			opt(optSetMetaContext, metaData("disk", contextAllocation)).opt(optInfo, goData("disk", infoName, infoDescription, infoBlockSize)).
			opt(optGo, goData("disk", infoBlockSize)).req(cmdBlockStatus, cmdFlagReqOne, 3, 0, 65536, nil))},
		"export-name":     {false, read(flags().opt(optExportName, []byte("disk")))},
		"export-name-pad": {false, read((&script{}).u32(clientFixedNewstyle).opt(optExportName, []byte("")))},
		"list-abort":      {false, flags().opt(optList, nil).opt(optAbort, nil).b},
		"unknown-options": {false, read(flags().opt(999, []byte("xyz")).opt(optStartTLS, nil).opt(optGo, goData("nope")).
			opt(optListMetaContext, metaData("disk", "base:")).opt(optGo, goData("")))},
		"meta-queries": {false, flags().opt(optStructuredReply, nil).opt(optListMetaContext, metaData("rw", "base:", "qemu:x", "base:allocation")).
			opt(optSetMetaContext, metaData("rw", "base:")).opt(optAbort, nil).b},
		"bad-magic":       {false, append(flags().b, []byte("IHAVEOPX\x00\x00\x00\x07\x00\x00\x00\x00")...)},
		"too-long":        {false, append(flags().b, []byte("IHAVEOPT\x00\x00\x00\x07\x7f\xff\xff\xff")...)},
		"tls-required":    {true, flags().opt(optList, nil).opt(optGo, goData("disk")).opt(optStartTLS, nil).b},
		"tls-export-name": {true, flags().opt(optExportName, []byte("disk")).b},
		"unknown-flags":   {false, (&script{}).u32(0xff).b},
	}
}

// requestSeeds are transmission sessions for FuzzRequests, by mode.
func requestSeeds() map[string][]any {
	all := func(s *script) *script {
		return s.req(cmdRead, 0, 1, 0, 4096, nil).
			req(cmdRead, cmdFlagDF, 2, 60<<10, 8192, nil).
			req(cmdRead, 0, 3, 0, 1*MiB, nil).
			req(cmdBlockStatus, 0, 4, 0, 1*MiB, nil).
			req(cmdBlockStatus, cmdFlagReqOne, 5, 4096, 4096, nil).
			req(cmdCache, 0, 6, 0, 65536, nil).
			req(cmdWrite, cmdFlagFUA, 7, 8192, 16, bytes.Repeat([]byte{0x5a}, 16)).
			req(cmdWriteZeroes, cmdFlagNoHole, 8, 0, 4096, nil).
			req(cmdTrim, 0, 9, 65536, 65536, nil).
			req(cmdFlush, 0, 10, 0, 0, nil).
			req(cmdRead, 0, 11, 1*MiB-10, 20, nil).
			req(42, 0, 12, 0, 0, nil)
	}
	seeds := map[string][]any{}
	for _, mode := range []uint8{0, fuzzStructured, fuzzWritable, fuzzStructured | fuzzWritable, fuzzPlain | fuzzStructured} {
		seeds[fmt.Sprintf("mode%d-all", mode)] = []any{mode, all(&script{}).req(cmdDisc, 0, 99, 0, 0, nil).b}
	}
	seeds["bad-magic"] = []any{uint8(fuzzStructured), (&script{}).req(cmdRead, 0, 1, 0, 512, nil).u32(0x25609514).b}
	seeds["write-cut"] = []any{uint8(fuzzWritable), (&script{}).req(cmdWrite, 0, 1, 0, 4096, make([]byte, 100)).b}
	seeds["write-refused"] = []any{uint8(fuzzStructured), (&script{}).req(cmdWrite, 0, 1, 0, 4096, make([]byte, 4096)).req(cmdRead, 0, 2, 0, 512, nil).b}
	seeds["past-end"] = []any{uint8(0), (&script{}).req(cmdRead, 0, 1, 1*MiB, 1, nil).req(cmdWrite, 0, 2, 1*MiB, 1, []byte{1}).b}
	return seeds
}

// TestFuzzSeeds checks that the committed seed corpora are the ones the
// scripts make (and rewrites them with -nbd.write-seeds), so that the
// valid sessions in them stay valid as the server changes.
func TestFuzzSeeds(t *testing.T) {
	for target, seeds := range map[string]map[string][]any{"FuzzHandshake": handshakeSeeds(), "FuzzRequests": requestSeeds()} {
		dir := filepath.Join("testdata", "fuzz", target)
		for name, args := range seeds {
			path := filepath.Join(dir, "seed-"+name)
			want := corpusFile(args...)
			if *writeSeeds {
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
				t.Errorf("%v (run go test -run TestFuzzSeeds -nbd.write-seeds ./internal/nbd/)", err)
				continue
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from its script (run go test -run TestFuzzSeeds -nbd.write-seeds ./internal/nbd/)", path)
			}
		}
	}
}

// TestValidSeedSessions runs the valid seed sessions and checks that they
// reach what they are meant to: otherwise the fuzzer starts from refusals.
func TestValidSeedSessions(t *testing.T) {
	ft := newFuzzTarget(nil)
	srv, want := ft.srv, ft.disk
	for name, args := range requestSeeds() {
		if !strings.HasPrefix(name, "mode") {
			continue
		}
		mode := args[0].(uint8)
		prefix, _ := requestPrefix(mode)
		data := args[1].([]byte)
		out := fuzzServe(t, srv, append(prefix, data...))
		checkTranscript(t, mode, data, out, want)
	}
	for _, name := range []string{"go-structured", "export-name", "export-name-pad"} {
		out := fuzzServe(t, srv, handshakeSeeds()[name][1].([]byte))
		if !bytes.Contains(out, want[:4096]) {
			t.Errorf("seed %s: the read's data is not in the server's output", name)
		}
	}
}

// corpusFile encodes fuzz arguments in the format of testdata/fuzz.
func corpusFile(args ...any) []byte {
	var b strings.Builder
	b.WriteString("go test fuzz v1\n")
	for _, a := range args {
		switch v := a.(type) {
		case bool:
			fmt.Fprintf(&b, "bool(%v)\n", v)
		case uint8:
			fmt.Fprintf(&b, "byte(%q)\n", rune(v))
		case []byte:
			fmt.Fprintf(&b, "[]byte(%q)\n", v)
		default:
			panic(fmt.Sprintf("corpusFile: %T", a))
		}
	}
	return []byte(b.String())
}
