package nbd

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// testClient is a minimal NBD client for protocol tests: it writes what it
// is told and decodes what comes back, checking the server as it goes.
type testClient struct {
	t          testing.TB
	c          net.Conn
	r          *bufio.Reader
	structured bool
	size       int64
	flags      uint16

	mu      sync.Mutex
	pending map[uint64]request // simple reads need their length
}

// pipeServer runs srv.ServeConn on one end of a net.Pipe; the channel gets
// its result.
func pipeServer(t testing.TB, srv *Server) (net.Conn, <-chan error) {
	t.Helper()
	client, server := net.Pipe()
	done := make(chan error, 1)
	go func() { done <- srv.ServeConn(context.Background(), server) }()
	t.Cleanup(func() { client.Close() })
	return client, done
}

// newClient connects over a pipe and reads the greeting, without sending
// the client flags.
func newClient(t testing.TB, srv *Server) (*testClient, <-chan error) {
	t.Helper()
	c, done := pipeServer(t, srv)
	return greet(t, c), done
}

// greet reads the greeting on c.
func greet(t testing.TB, c net.Conn) *testClient {
	t.Helper()
	tc := &testClient{t: t, c: c, r: bufio.NewReader(c), pending: map[uint64]request{}}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	var g [18]byte
	tc.readFull(g[:])
	if be.Uint64(g[0:]) != magicInit || be.Uint64(g[8:]) != magicOption {
		t.Fatalf("greeting %x: want NBDMAGIC IHAVEOPT", g[:16])
	}
	if f := be.Uint16(g[16:]); f != flagFixedNewstyle|flagNoZeroes {
		t.Fatalf("handshake flags %#x, want fixed newstyle and no zeroes", f)
	}
	return tc
}

// dial connects, sends fixed newstyle + no zeroes, and negotiates
// structured replies and base:allocation when structured is set.
func dial(t testing.TB, srv *Server, structured bool) (*testClient, <-chan error) {
	t.Helper()
	tc, done := newClient(t, srv)
	tc.clientFlags(clientFixedNewstyle | clientNoZeroes)
	if structured {
		tc.mustAck(optStructuredReply, nil)
		tc.structured = true
	}
	return tc, done
}

func (tc *testClient) readFull(b []byte) {
	tc.t.Helper()
	if _, err := io.ReadFull(tc.r, b); err != nil {
		tc.t.Fatalf("reading from the server: %v", err)
	}
}

func (tc *testClient) write(b []byte) {
	tc.t.Helper()
	if _, err := tc.c.Write(b); err != nil {
		tc.t.Fatalf("writing to the server: %v", err)
	}
}

func (tc *testClient) clientFlags(f uint32) {
	tc.t.Helper()
	tc.write(be.AppendUint32(nil, f))
}

func (tc *testClient) sendOption(opt uint32, data []byte) {
	tc.t.Helper()
	b := be.AppendUint64(nil, magicOption)
	b = be.AppendUint32(b, opt)
	b = be.AppendUint32(b, uint32(len(data)))
	tc.write(append(b, data...))
}

type optReply struct {
	opt, typ uint32
	data     []byte
}

func (r optReply) String() string {
	return fmt.Sprintf("reply %#x to option %d (%q)", r.typ, r.opt, r.data)
}

func (tc *testClient) readOptReply() optReply {
	tc.t.Helper()
	var h [20]byte
	tc.readFull(h[:])
	if m := be.Uint64(h[0:]); m != magicOptReply {
		tc.t.Fatalf("option reply magic %#x", m)
	}
	r := optReply{opt: be.Uint32(h[8:]), typ: be.Uint32(h[12:])}
	n := be.Uint32(h[16:])
	if n > 1<<20 {
		tc.t.Fatalf("option reply of %d bytes", n)
	}
	r.data = make([]byte, n)
	tc.readFull(r.data)
	return r
}

// option sends an option and reads replies up to the final one (ACK or an
// error); it returns them all, the final one last.
func (tc *testClient) option(opt uint32, data []byte) []optReply {
	tc.t.Helper()
	tc.sendOption(opt, data)
	var out []optReply
	for {
		r := tc.readOptReply()
		if r.opt != opt {
			tc.t.Fatalf("%v: answers option %d", r, opt)
		}
		out = append(out, r)
		if r.typ == repAck || r.typ&(1<<31) != 0 {
			return out
		}
	}
}

// mustAck sends an option that must succeed.
func (tc *testClient) mustAck(opt uint32, data []byte) []optReply {
	tc.t.Helper()
	rs := tc.option(opt, data)
	if last := rs[len(rs)-1]; last.typ != repAck {
		tc.t.Fatalf("option %d: %v, want ACK", opt, last)
	}
	return rs
}

// wantOptError sends an option that must fail with typ.
func (tc *testClient) wantOptError(opt uint32, data []byte, typ uint32) {
	tc.t.Helper()
	rs := tc.option(opt, data)
	if last := rs[len(rs)-1]; last.typ != typ {
		tc.t.Fatalf("option %d: %v, want error %#x", opt, last, typ)
	}
}

// goData encodes the data of NBD_OPT_INFO and NBD_OPT_GO.
func goData(name string, infos ...uint16) []byte {
	b := be.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = be.AppendUint16(b, uint16(len(infos)))
	for _, i := range infos {
		b = be.AppendUint16(b, i)
	}
	return b
}

// metaData encodes the data of the meta context options.
func metaData(name string, queries ...string) []byte {
	b := be.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = be.AppendUint32(b, uint32(len(queries)))
	for _, q := range queries {
		b = be.AppendUint32(b, uint32(len(q)))
		b = append(b, q...)
	}
	return b
}

// infos decodes the NBD_REP_INFO replies of INFO or GO by type.
func (tc *testClient) infos(rs []optReply) map[uint16][]byte {
	tc.t.Helper()
	m := map[uint16][]byte{}
	for _, r := range rs {
		if r.typ != repInfo {
			continue
		}
		if len(r.data) < 2 {
			tc.t.Fatalf("short info reply %v", r)
		}
		typ := be.Uint16(r.data)
		if _, dup := m[typ]; dup {
			tc.t.Fatalf("info %d sent twice", typ)
		}
		m[typ] = r.data[2:]
	}
	return m
}

// goExport enters transmission with NBD_OPT_GO, selecting base:allocation
// first when structured replies are on.
func (tc *testClient) goExport(name string) {
	tc.t.Helper()
	if tc.structured {
		tc.mustAck(optSetMetaContext, metaData(name, contextAllocation))
	}
	rs := tc.mustAck(optGo, goData(name, infoBlockSize))
	info := tc.infos(rs)[infoExport]
	if len(info) != 10 {
		tc.t.Fatalf("NBD_INFO_EXPORT of %d bytes", len(info))
	}
	tc.size = int64(be.Uint64(info))
	tc.flags = be.Uint16(info[8:])
}

// send writes a request.
func (tc *testClient) send(req request, payload []byte) {
	tc.t.Helper()
	tc.mu.Lock()
	tc.pending[req.handle] = req
	tc.mu.Unlock()
	b := be.AppendUint32(nil, magicRequest)
	b = be.AppendUint16(b, req.flags)
	b = be.AppendUint16(b, req.typ)
	b = be.AppendUint64(b, req.handle)
	b = be.AppendUint64(b, req.offset)
	b = be.AppendUint32(b, req.length)
	tc.write(append(b, payload...))
}

// reply is a whole reply as the test client assembled it.
type reply struct {
	handle uint64
	errno  uint32
	msg    string
	data   []byte  // reads: the bytes, holes filled with zeros
	chunks []chunk // structured replies, in order
}

// message is one simple reply or one chunk.
type message struct {
	handle  uint64
	simple  bool
	errno   uint32
	flags   uint16
	typ     uint16
	payload []byte
}

func (tc *testClient) readMessage() (message, error) {
	var h [4]byte
	if _, err := io.ReadFull(tc.r, h[:]); err != nil {
		return message{}, err
	}
	switch m := be.Uint32(h[:]); m {
	case magicSimple:
		var b [12]byte
		if _, err := io.ReadFull(tc.r, b[:]); err != nil {
			return message{}, err
		}
		msg := message{simple: true, errno: be.Uint32(b[0:]), handle: be.Uint64(b[4:])}
		tc.mu.Lock()
		req, ok := tc.pending[msg.handle]
		tc.mu.Unlock()
		if !ok {
			return msg, fmt.Errorf("simple reply to unknown handle %d", msg.handle)
		}
		if tc.structured && req.typ == cmdRead {
			return msg, fmt.Errorf("simple reply to a read after structured replies were negotiated")
		}
		if req.typ == cmdRead && msg.errno == 0 {
			msg.payload = make([]byte, req.length)
			if _, err := io.ReadFull(tc.r, msg.payload); err != nil {
				return msg, err
			}
		}
		return msg, nil
	case magicStructured:
		if !tc.structured {
			return message{}, errors.New("structured reply that was not negotiated")
		}
		var b [16]byte
		if _, err := io.ReadFull(tc.r, b[:]); err != nil {
			return message{}, err
		}
		msg := message{flags: be.Uint16(b[0:]), typ: be.Uint16(b[2:]), handle: be.Uint64(b[4:])}
		n := be.Uint32(b[12:])
		if n > maxRequest+8 {
			return msg, fmt.Errorf("chunk payload of %d bytes", n)
		}
		msg.payload = make([]byte, n)
		_, err := io.ReadFull(tc.r, msg.payload)
		return msg, err
	default:
		return message{}, fmt.Errorf("reply magic %#x", m)
	}
}

// collect folds a message into the reply of its handle; it reports whether
// the reply is complete, checking chunks against the protocol's rules.
func (tc *testClient) collect(rep *reply, m message) (bool, error) {
	tc.mu.Lock()
	req := tc.pending[m.handle]
	tc.mu.Unlock()
	rep.handle = m.handle
	if m.simple {
		rep.errno = m.errno
		rep.data = m.payload
		return true, nil
	}
	// The read's buffer is made for its first content chunk, never for a
	// read the server refused: those may ask for 4 GiB.
	content := func() error {
		if req.typ != cmdRead || req.length > maxRequest {
			return fmt.Errorf("content chunk in the reply to command %d of %d bytes", req.typ, req.length)
		}
		if rep.data == nil {
			rep.data = make([]byte, req.length)
		}
		return nil
	}
	c := chunk{typ: m.typ}
	p := m.payload
	within := func(off, n uint64) error {
		if off < req.offset || n > uint64(req.length) || off-req.offset > uint64(req.length)-n {
			return fmt.Errorf("chunk [%d, +%d) outside the request [%d, +%d)", off, n, req.offset, req.length)
		}
		return nil
	}
	switch m.typ {
	case replyTypeNone:
		if len(p) != 0 || m.flags&replyFlagDone == 0 {
			return false, fmt.Errorf("bad NONE chunk: %d bytes, flags %#x", len(p), m.flags)
		}
	case replyTypeOffsetData:
		if len(p) < 9 {
			return false, fmt.Errorf("OFFSET_DATA chunk of %d bytes", len(p))
		}
		off := be.Uint64(p)
		if err := within(off, uint64(len(p)-8)); err != nil {
			return false, err
		}
		if err := content(); err != nil {
			return false, err
		}
		c.off, c.data = int64(off), p[8:]
		copy(rep.data[off-req.offset:], p[8:])
	case replyTypeOffsetHole:
		if len(p) != 12 {
			return false, fmt.Errorf("OFFSET_HOLE chunk of %d bytes", len(p))
		}
		off, n := be.Uint64(p), be.Uint32(p[8:])
		if n == 0 {
			return false, errors.New("empty hole chunk")
		}
		if err := within(off, uint64(n)); err != nil {
			return false, err
		}
		if err := content(); err != nil {
			return false, err
		}
		c.off, c.hole = int64(off), n
		clear(rep.data[off-req.offset : off-req.offset+uint64(n)])
	case replyTypeBlockStatus:
		if len(p) < 12 || (len(p)-4)%8 != 0 || req.typ != cmdBlockStatus {
			return false, fmt.Errorf("bad BLOCK_STATUS chunk of %d bytes to command %d", len(p), req.typ)
		}
		c.data = p
	case replyTypeError, replyTypeErrorOffset:
		if len(p) < 6 {
			return false, fmt.Errorf("error chunk of %d bytes", len(p))
		}
		c.errno = be.Uint32(p)
		ml := int(be.Uint16(p[4:]))
		want := 6 + ml
		if m.typ == replyTypeErrorOffset {
			want += 8
		}
		if c.errno == 0 || len(p) != want {
			return false, fmt.Errorf("bad error chunk: errno %d, %d bytes for a %d-byte message", c.errno, len(p), ml)
		}
		c.msg = string(p[6 : 6+ml])
		if m.typ == replyTypeErrorOffset {
			c.off = int64(be.Uint64(p[6+ml:]))
			if err := within(uint64(c.off), 1); err != nil {
				return false, err
			}
		}
		if rep.errno == 0 {
			rep.errno, rep.msg = c.errno, c.msg
		}
	default:
		return false, fmt.Errorf("unknown chunk type %d", m.typ)
	}
	rep.chunks = append(rep.chunks, c)
	return m.flags&replyFlagDone != 0, nil
}

// do sends one request and waits for its whole reply.
func (tc *testClient) do(req request, payload []byte) reply {
	tc.t.Helper()
	tc.send(req, payload)
	var rep reply
	for {
		m, err := tc.readMessage()
		if err != nil {
			tc.t.Fatalf("reading the reply to command %d: %v", req.typ, err)
		}
		if m.handle != req.handle {
			tc.t.Fatalf("reply to handle %d while waiting for %d", m.handle, req.handle)
		}
		done, err := tc.collect(&rep, m)
		if err != nil {
			tc.t.Fatalf("reply to command %d at [%d, +%d): %v", req.typ, req.offset, req.length, err)
		}
		if done {
			break
		}
	}
	if req.typ == cmdRead && rep.errno == 0 {
		checkCoverage(tc.t, req, rep)
	}
	return rep
}

// checkCoverage checks that a successful structured read covered its
// range exactly once.
func checkCoverage(t testing.TB, req request, rep reply) {
	t.Helper()
	if len(rep.chunks) == 0 {
		return // simple reply
	}
	covered := make([]bool, req.length)
	for _, c := range rep.chunks {
		n := len(c.data)
		if c.typ == replyTypeOffsetHole {
			n = int(c.hole)
		}
		for i := c.off - int64(req.offset); i < c.off-int64(req.offset)+int64(n); i++ {
			if covered[i] {
				t.Fatalf("byte %d of the read covered twice", int64(req.offset)+i)
			}
			covered[i] = true
		}
	}
	for i, ok := range covered {
		if !ok {
			t.Fatalf("byte %d of the read not covered by any chunk", int64(req.offset)+int64(i))
		}
	}
}

// disconnect sends NBD_CMD_DISC and checks that ServeConn returns nil.
func (tc *testClient) disconnect(done <-chan error) {
	tc.t.Helper()
	tc.send(request{typ: cmdDisc, handle: 1 << 62}, nil)
	// Take whatever comes (a TLS close_notify) so that the server's close
	// does not wait on a pipe nobody reads.
	go io.Copy(io.Discard, tc.r)
	waitServe(tc.t, done, false)
}

// waitServe waits for ServeConn; wantErr says whether it must fail.
func waitServe(t testing.TB, done <-chan error, wantErr bool) error {
	t.Helper()
	select {
	case err := <-done:
		if (err != nil) != wantErr {
			t.Fatalf("ServeConn returned %v, want error: %v", err, wantErr)
		}
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("ServeConn did not return")
	}
	return nil
}

// wantClosed checks that the server closed the connection: reading gets
// EOF (after any bytes it sent first).
func (tc *testClient) wantClosed(done <-chan error) error {
	tc.t.Helper()
	if _, err := io.Copy(io.Discard, tc.r); err != nil && !errors.Is(err, io.ErrClosedPipe) {
		tc.t.Fatalf("reading until the server closes: %v", err)
	}
	return waitServe(tc.t, done, true)
}

// startTLS upgrades the client to TLS after an ACK to NBD_OPT_STARTTLS.
func (tc *testClient) startTLS(cfg *tls.Config) {
	tc.t.Helper()
	tc.mustAck(optStartTLS, nil)
	if tc.r.Buffered() > 0 {
		tc.t.Fatalf("server sent %d bytes after the STARTTLS ACK", tc.r.Buffered())
	}
	tlsc := tls.Client(tc.c, cfg)
	if err := tlsc.Handshake(); err != nil {
		tc.t.Fatalf("TLS handshake: %v", err)
	}
	tc.c = tlsc
	tc.r = bufio.NewReader(tlsc)
	tc.structured = false
}
