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
	"sync/atomic"
	"syscall"
	"time"
)

// Server serves Exports over NBD. Its fields are read when a connection
// starts; do not change them while it serves. One Server may run any number
// of Serve and ServeConn calls at once.
type Server struct {
	// Lookup finds the export a client names ("" is the default export).
	// It is called during option haggling, concurrently for different
	// connections; false answers NBD_REP_ERR_UNKNOWN (or closes the
	// connection after NBD_OPT_EXPORT_NAME, which cannot report errors).
	Lookup func(name string) (Export, bool)
	// List names the exports for NBD_OPT_LIST; nil refuses listing with
	// NBD_REP_ERR_POLICY.
	List func() []string
	// ReadOnly refuses writes even to exports that implement Writer.
	ReadOnly bool
	// TLSConfig, when set, makes TLS mandatory: the server offers
	// NBD_OPT_STARTTLS and answers every other option before it with
	// NBD_REP_ERR_TLS_REQD ("FORCEDTLS" in the protocol). Client
	// certificates are checked as the config says (ClientAuth, ClientCAs).
	TLSConfig *tls.Config
	// Logf, when set, receives one line per notable event: refused and
	// failed connections, and errors of exports (which clients see only as
	// EIO). Called concurrently.
	Logf func(format string, args ...any)
	// MaxConns limits the connections Serve keeps open at once; 0 is
	// unlimited. A connection over the limit is closed at once (clients
	// report a handshake failure), rather than left waiting.
	MaxConns int
}

const (
	// handshakeTimeout bounds the whole handshake phase, TLS included: a
	// client that connects and says nothing does not hold a connection
	// slot for long.
	handshakeTimeout = time.Minute
	// shutdownGrace is how long replies in flight may take to reach the
	// client once the context of ServeConn ends.
	shutdownGrace = 5 * time.Second
)

// Serve accepts connections on l and serves each in its own goroutine until
// ctx ends or l fails. On return l is closed, and so is every connection
// Serve accepted: each stops reading requests, lets the requests in flight
// answer (for at most a few seconds) and closes. Serve returns nil when ctx
// ended, the listener's error otherwise. Errors of single connections go to
// Logf.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	var (
		wg     sync.WaitGroup
		active atomic.Int64
		retry  time.Duration
		result error
	)
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			if temporaryAcceptError(err) {
				retry = min(max(2*retry, 5*time.Millisecond), time.Second)
				s.logf("nbd: accept: %v; retrying in %v", err, retry)
				select {
				case <-time.After(retry):
					continue
				case <-ctx.Done():
				}
				break
			}
			result = err
			break
		}
		retry = 0
		if s.MaxConns > 0 && active.Load() >= int64(s.MaxConns) {
			s.logf("nbd: refusing connection from %v: already serving %d connections (the limit)", c.RemoteAddr(), s.MaxConns)
			c.Close()
			continue
		}
		active.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer active.Add(-1)
			remote := c.RemoteAddr()
			if err := s.ServeConn(ctx, c); err != nil && ctx.Err() == nil {
				s.logf("nbd: connection from %v: %v", remote, err)
			}
		}()
	}
	cancel()
	l.Close()
	wg.Wait()
	return result
}

// temporaryAcceptError reports whether Accept may succeed if tried again:
// the process ran out of descriptors, or a client gave up while queued.
func temporaryAcceptError(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}

// ServeConn serves one client on c for its whole life: the handshake, then
// requests until the client disconnects. It closes c before returning. It
// returns nil when the client ended the session properly (NBD_OPT_ABORT or
// NBD_CMD_DISC), ctx.Err() when ctx ended first (after the requests in
// flight were answered), and otherwise an error that says what went wrong
// (a protocol violation, a network error).
func (s *Server) ServeConn(ctx context.Context, c net.Conn) error {
	cn := &conn{
		srv: s,
		raw: c,
		nc:  c,
		r:   bufio.NewReaderSize(c, 64<<10),
		w:   bufio.NewWriterSize(c, 4<<10),
	}
	defer func() { cn.nc.Close() }() // the TLS conn once upgraded: sends close_notify
	stop := context.AfterFunc(ctx, cn.shutdown)
	defer stop()

	cn.setDeadline(time.Now().Add(handshakeTimeout))
	sess, err := cn.handshake(ctx)
	if err != nil || sess == nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	if !cn.setDeadline(time.Time{}) {
		return ctx.Err()
	}
	err = cn.transmit(sess)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

func (s *Server) logf(format string, args ...any) {
	if s.Logf != nil {
		s.Logf(format, args...)
	}
}

// conn is the state of one connection.
type conn struct {
	srv *Server
	raw net.Conn // the accepted connection: deadlines are set here
	nc  net.Conn // raw, or the TLS connection over it
	r   *bufio.Reader
	w   *bufio.Writer // option replies; transmission replies go to nc directly

	dlMu    sync.Mutex
	closing bool // ctx ended: deadlines stay in the past

	clientFlags uint32
	tls         bool
	structured  bool
	metaExport  string // the export named by the last NBD_OPT_SET_META_CONTEXT
	metaAlloc   bool   // ... and whether it selected base:allocation
	optBuf      []byte

	wmu  sync.Mutex // serialises replies in the transmission phase
	werr error      // the first failed reply write; later replies are dropped
}

// shutdown runs when the context of ServeConn ends: reads stop at once,
// writes get a short grace period for the replies in flight.
func (cn *conn) shutdown() {
	cn.dlMu.Lock()
	defer cn.dlMu.Unlock()
	cn.closing = true
	cn.raw.SetReadDeadline(time.Now())
	cn.raw.SetWriteDeadline(time.Now().Add(shutdownGrace))
}

// setDeadline sets the connection's deadline unless shutdown ran; it
// reports whether it did.
func (cn *conn) setDeadline(t time.Time) bool {
	cn.dlMu.Lock()
	defer cn.dlMu.Unlock()
	if cn.closing {
		return false
	}
	cn.raw.SetDeadline(t)
	return true
}

// session is what the handshake settled: the export and how to talk about it.
type session struct {
	name       string
	exp        Export
	size       int64
	flags      uint16
	writable   bool
	writer     Writer
	trimmer    Trimmer
	zeroer     ZeroWriter
	extents    ExtentReporter
	structured bool
	metaAlloc  bool
}

// errSessionEnded is a private marker: the client aborted the handshake.
var errSessionEnded = errors.New("client aborted the handshake")

// handshake runs the fixed newstyle handshake and option haggling. It
// returns the session to serve, or (nil, nil) when the client ended the
// session with NBD_OPT_ABORT, or an error that closes the connection.
func (cn *conn) handshake(ctx context.Context) (*session, error) {
	var greet [18]byte
	be.PutUint64(greet[0:], magicInit)
	be.PutUint64(greet[8:], magicOption)
	be.PutUint16(greet[16:], flagFixedNewstyle|flagNoZeroes)
	if _, err := cn.w.Write(greet[:]); err != nil {
		return nil, err
	}
	if err := cn.w.Flush(); err != nil {
		return nil, fmt.Errorf("sending the greeting: %w", err)
	}
	var cf [4]byte
	if _, err := io.ReadFull(cn.r, cf[:]); err != nil {
		return nil, fmt.Errorf("reading the client flags: %w", err)
	}
	cn.clientFlags = be.Uint32(cf[:])
	if cn.clientFlags&^clientKnownFlags != 0 {
		return nil, fmt.Errorf("client sent unknown handshake flags %#x", cn.clientFlags)
	}
	if cn.srv.TLSConfig != nil && cn.clientFlags&clientFixedNewstyle == 0 {
		// TLS needs fixed newstyle; a client without it cannot reach an
		// export here.
		return nil, errors.New("TLS is required but the client does not speak fixed newstyle negotiation")
	}

	for {
		var hdr [16]byte
		if _, err := io.ReadFull(cn.r, hdr[:]); err != nil {
			return nil, fmt.Errorf("reading an option: %w", err)
		}
		if m := be.Uint64(hdr[0:]); m != magicOption {
			return nil, fmt.Errorf("bad option magic %#x", m)
		}
		opt := be.Uint32(hdr[8:])
		length := be.Uint32(hdr[12:])
		if length > maxOptionLength {
			// Not worth reading: answer and hang up. Before TLS, a server
			// that requires it has one answer to every such option.
			switch {
			case opt == optExportName:
			case cn.srv.TLSConfig != nil && !cn.tls && opt != optStartTLS && opt != optAbort:
				cn.optReply(opt, repErrTLSReqd, "this server requires TLS: send NBD_OPT_STARTTLS first")
			default:
				cn.optReply(opt, repErrTooBig, fmt.Sprintf("option data of %d bytes exceeds this server's limit of %d", length, maxOptionLength))
			}
			cn.w.Flush()
			return nil, fmt.Errorf("option %d carries %d bytes of data, over the limit of %d", opt, length, maxOptionLength)
		}
		data, err := cn.readOption(int(length))
		if err != nil {
			return nil, fmt.Errorf("reading the data of option %d: %w", opt, err)
		}
		sess, err := cn.option(ctx, opt, data)
		if err != nil {
			if errors.Is(err, errSessionEnded) {
				return nil, nil
			}
			return nil, err
		}
		if err := cn.w.Flush(); err != nil {
			return nil, fmt.Errorf("replying to option %d: %w", opt, err)
		}
		if sess != nil {
			return sess, nil
		}
	}
}

// readOption reads n (at most maxOptionLength) bytes of option data into a
// buffer reused across options.
func (cn *conn) readOption(n int) ([]byte, error) {
	if cap(cn.optBuf) < n {
		cn.optBuf = make([]byte, n)
	}
	b := cn.optBuf[:n]
	_, err := io.ReadFull(cn.r, b)
	return b, err
}

// option handles one option. It returns a session when the client entered
// the transmission phase, errSessionEnded after NBD_OPT_ABORT, and another
// error when the connection must close.
func (cn *conn) option(ctx context.Context, opt uint32, data []byte) (*session, error) {
	if cn.srv.TLSConfig != nil && !cn.tls {
		switch opt {
		case optStartTLS, optAbort:
		case optExportName:
			return nil, errors.New("client chose an export with NBD_OPT_EXPORT_NAME before starting TLS, which this server requires")
		default:
			return nil, cn.optReply(opt, repErrTLSReqd, "this server requires TLS: send NBD_OPT_STARTTLS first")
		}
	}
	switch opt {
	case optExportName:
		return cn.exportName(string(data))
	case optAbort:
		cn.optReply(opt, repAck, "")
		cn.w.Flush()
		return nil, errSessionEnded
	case optList:
		return nil, cn.list(data)
	case optStartTLS:
		return nil, cn.startTLS(ctx, data)
	case optInfo, optGo:
		return cn.infoGo(opt, data)
	case optStructuredReply:
		if len(data) != 0 {
			return nil, cn.optReply(opt, repErrInvalid, "NBD_OPT_STRUCTURED_REPLY carries no data")
		}
		cn.structured = true
		return nil, cn.optReply(opt, repAck, "")
	case optListMetaContext, optSetMetaContext:
		return nil, cn.metaContext(opt, data)
	default:
		return nil, cn.optReply(opt, repErrUnsup, fmt.Sprintf("option %d is not supported by this server", opt))
	}
}

// optReply queues one option reply. Error replies carry msg as their text;
// other replies carry msg as their data.
func (cn *conn) optReply(opt, typ uint32, msg string, data ...[]byte) error {
	if len(msg) > maxString {
		msg = msg[:maxString]
	}
	n := len(msg)
	for _, d := range data {
		n += len(d)
	}
	var hdr [20]byte
	be.PutUint64(hdr[0:], magicOptReply)
	be.PutUint32(hdr[8:], opt)
	be.PutUint32(hdr[12:], typ)
	be.PutUint32(hdr[16:], uint32(n))
	cn.w.Write(hdr[:])
	for _, d := range data {
		cn.w.Write(d)
	}
	_, err := cn.w.WriteString(msg)
	return err
}

// lookup finds an export and checks its size.
func (cn *conn) lookup(name string) (Export, int64, error) {
	if cn.srv.Lookup == nil {
		return nil, 0, fmt.Errorf("no export named %s", quoteName(name))
	}
	exp, ok := cn.srv.Lookup(name)
	if !ok || exp == nil {
		return nil, 0, fmt.Errorf("no export named %s", quoteName(name))
	}
	size := exp.Size()
	if size < 0 {
		cn.srv.logf("nbd: export %s reports a negative size (%d); refusing it", quoteName(name), size)
		return nil, 0, fmt.Errorf("export %s is unavailable", quoteName(name))
	}
	return exp, size, nil
}

// quoteName quotes an export name for a message, cut to a readable length.
func quoteName(name string) string {
	if len(name) > 80 {
		return fmt.Sprintf("%q...", name[:80])
	}
	return fmt.Sprintf("%q", name)
}

// newSession settles the transmission parameters of exp for this
// connection. It is deterministic, so NBD_OPT_INFO and a following
// NBD_OPT_GO report the same flags.
func (cn *conn) newSession(name string, exp Export, size int64) *session {
	s := &session{name: name, exp: exp, size: size, structured: cn.structured}
	s.metaAlloc = cn.structured && cn.metaAlloc && cn.metaExport == name
	s.extents, _ = exp.(ExtentReporter)
	flags := uint16(tfHasFlags | tfSendCache)
	if w, ok := exp.(Writer); ok && !cn.srv.ReadOnly {
		s.writable = true
		s.writer = w
		s.trimmer, _ = exp.(Trimmer)
		s.zeroer, _ = exp.(ZeroWriter)
		flags |= tfSendFlush | tfSendFUA | tfSendWriteZeroes
		if s.trimmer != nil {
			flags |= tfSendTrim
		}
	} else {
		// Nothing is cached and nothing changes: any number of connections
		// see the same bytes.
		flags |= tfReadOnly | tfCanMultiConn
	}
	if cn.structured {
		flags |= tfSendDF
	}
	s.flags = flags
	return s
}

// exportName handles NBD_OPT_EXPORT_NAME, which cannot report errors: an
// unknown export closes the connection.
func (cn *conn) exportName(name string) (*session, error) {
	exp, size, err := cn.lookup(name)
	if err != nil {
		return nil, fmt.Errorf("NBD_OPT_EXPORT_NAME: %w", err)
	}
	sess := cn.newSession(name, exp, size)
	var b [10 + exportNameZeroPad]byte
	be.PutUint64(b[0:], uint64(size))
	be.PutUint16(b[8:], sess.flags)
	n := len(b)
	if cn.clientFlags&clientNoZeroes != 0 {
		n = 10
	}
	cn.w.Write(b[:n])
	return sess, nil
}

// list handles NBD_OPT_LIST.
func (cn *conn) list(data []byte) error {
	if len(data) != 0 {
		return cn.optReply(optList, repErrInvalid, "NBD_OPT_LIST carries no data")
	}
	if cn.srv.List == nil {
		return cn.optReply(optList, repErrPolicy, "this server does not list its exports")
	}
	for _, name := range cn.srv.List() {
		if len(name) > maxString {
			continue
		}
		var n [4]byte
		be.PutUint32(n[:], uint32(len(name)))
		if err := cn.optReply(optList, repServer, name, n[:]); err != nil {
			return err
		}
		// Long lists go out as they are written, not all at once.
		if cn.w.Buffered() > 2<<10 {
			if err := cn.w.Flush(); err != nil {
				return err
			}
		}
	}
	return cn.optReply(optList, repAck, "")
}

// startTLS handles NBD_OPT_STARTTLS: after the ACK the connection speaks
// TLS, and the options negotiated before it are forgotten, as the protocol
// requires.
func (cn *conn) startTLS(ctx context.Context, data []byte) error {
	switch {
	case cn.srv.TLSConfig == nil:
		return cn.optReply(optStartTLS, repErrPolicy, "TLS is not configured on this server")
	case len(data) != 0:
		return cn.optReply(optStartTLS, repErrInvalid, "NBD_OPT_STARTTLS carries no data")
	case cn.tls:
		return cn.optReply(optStartTLS, repErrInvalid, "TLS is already running")
	}
	cn.optReply(optStartTLS, repAck, "")
	if err := cn.w.Flush(); err != nil {
		return err
	}
	var under net.Conn = cn.raw
	if cn.r.Buffered() > 0 {
		// The client sent its TLS hello without waiting for the ACK:
		// those bytes are in our buffer already.
		under = &bufferedConn{Conn: cn.raw, r: cn.r}
	}
	tc := tls.Server(under, cn.srv.TLSConfig)
	if err := tc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("TLS handshake: %w", err)
	}
	cn.nc = tc
	cn.r = bufio.NewReaderSize(tc, 64<<10)
	cn.w = bufio.NewWriterSize(tc, 4<<10)
	cn.tls = true
	cn.structured = false
	cn.metaAlloc = false
	cn.metaExport = ""
	return nil
}

// bufferedConn reads through a bufio.Reader that already holds some of the
// connection's bytes.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// infoGo handles NBD_OPT_INFO and NBD_OPT_GO.
func (cn *conn) infoGo(opt uint32, data []byte) (*session, error) {
	// 32-bit name length, name, 16-bit request count, 16-bit requests.
	if len(data) < 6 {
		return nil, cn.optReply(opt, repErrInvalid, "option data too short")
	}
	nameLen := uint64(be.Uint32(data))
	if nameLen > uint64(len(data)-6) {
		return nil, cn.optReply(opt, repErrInvalid, "export name longer than the option data")
	}
	name := string(data[4 : 4+nameLen])
	rest := data[4+nameLen:]
	nreq := int(be.Uint16(rest))
	if len(rest) != 2+2*nreq {
		return nil, cn.optReply(opt, repErrInvalid, "information request count does not match the option length")
	}
	if len(name) > maxString {
		return nil, cn.optReply(opt, repErrInvalid, "export name longer than 4096 bytes")
	}
	exp, size, err := cn.lookup(name)
	if err != nil {
		return nil, cn.optReply(opt, repErrUnknown, err.Error())
	}
	sess := cn.newSession(name, exp, size)

	var info [14]byte
	be.PutUint16(info[0:], infoExport)
	be.PutUint64(info[2:], uint64(size))
	be.PutUint16(info[10:], sess.flags)
	cn.optReply(opt, repInfo, "", info[:12])
	// Block sizes go out whether asked for or not: they are the defaults
	// the protocol recommends, plus the 32 MiB payload limit.
	be.PutUint16(info[0:], infoBlockSize)
	be.PutUint32(info[2:], minimumBlock)
	be.PutUint32(info[6:], preferredBlock)
	be.PutUint32(info[10:], maxRequest)
	cn.optReply(opt, repInfo, "", info[:14])
	var sentName, sentDesc bool
	for i := 0; i < nreq; i++ {
		var typ [2]byte
		switch be.Uint16(rest[2+2*i:]) {
		case infoName:
			if !sentName {
				sentName = true
				be.PutUint16(typ[:], infoName)
				cn.optReply(opt, repInfo, name, typ[:])
			}
		case infoDescription:
			if d, ok := exp.(Describer); ok && !sentDesc {
				sentDesc = true
				desc := d.Description()
				if len(desc) > maxString-2 {
					desc = desc[:maxString-2]
				}
				be.PutUint16(typ[:], infoDescription)
				cn.optReply(opt, repInfo, desc, typ[:])
			}
		}
	}
	if err := cn.optReply(opt, repAck, ""); err != nil {
		return nil, err
	}
	if opt == optGo {
		return sess, nil
	}
	return nil, nil
}

// metaContext handles NBD_OPT_LIST_META_CONTEXT and
// NBD_OPT_SET_META_CONTEXT. The only context is base:allocation; "base:"
// lists it, and selects nothing.
func (cn *conn) metaContext(opt uint32, data []byte) error {
	set := opt == optSetMetaContext
	if set {
		// The selection is replaced even when the option fails.
		cn.metaAlloc = false
		cn.metaExport = ""
	}
	if !cn.structured {
		return cn.optReply(opt, repErrInvalid, "negotiate structured replies (NBD_OPT_STRUCTURED_REPLY) before metadata contexts")
	}
	// 32-bit name length, name, 32-bit query count, queries (32-bit
	// length, string).
	if len(data) < 8 {
		return cn.optReply(opt, repErrInvalid, "option data too short")
	}
	nameLen := uint64(be.Uint32(data))
	if nameLen > uint64(len(data)-8) {
		return cn.optReply(opt, repErrInvalid, "export name longer than the option data")
	}
	name := string(data[4 : 4+nameLen])
	rest := data[4+nameLen:]
	nq := uint64(be.Uint32(rest))
	rest = rest[4:]
	if nq > uint64(len(rest)/4) {
		return cn.optReply(opt, repErrInvalid, "more queries than the option data can hold")
	}
	var matchAlloc bool
	for i := uint64(0); i < nq; i++ {
		if len(rest) < 4 {
			return cn.optReply(opt, repErrInvalid, "query length past the end of the option data")
		}
		ql := uint64(be.Uint32(rest))
		rest = rest[4:]
		if ql > uint64(len(rest)) {
			return cn.optReply(opt, repErrInvalid, "query longer than the option data")
		}
		if ql > maxString {
			return cn.optReply(opt, repErrInvalid, "query longer than 4096 bytes")
		}
		q := string(rest[:ql])
		rest = rest[ql:]
		switch {
		case q == contextAllocation:
			matchAlloc = true
		case q == "base:" && !set:
			matchAlloc = true
		}
	}
	if len(rest) != 0 {
		return cn.optReply(opt, repErrInvalid, "trailing bytes after the last query")
	}
	if len(name) > maxString {
		return cn.optReply(opt, repErrInvalid, "export name longer than 4096 bytes")
	}
	if _, _, err := cn.lookup(name); err != nil {
		return cn.optReply(opt, repErrUnknown, err.Error())
	}
	if nq == 0 && !set {
		matchAlloc = true // an empty list asks for every context
	}
	if matchAlloc {
		var id [4]byte
		if set {
			be.PutUint32(id[:], contextAllocationID)
			cn.metaAlloc = true
			cn.metaExport = name
		}
		cn.optReply(opt, repMetaContext, contextAllocation, id[:])
	}
	return cn.optReply(opt, repAck, "")
}
