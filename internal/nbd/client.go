package nbd

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// The client side: Dial connects to an export of any NBD server (qemu-nbd,
// nbdkit, this package's Server) and reads it. It negotiates fixed
// newstyle, optionally TLS, structured replies and base:allocation, enters
// transmission with NBD_OPT_GO (NBD_OPT_EXPORT_NAME only when the server
// does not know GO), and pipelines requests: any number of goroutines may
// read at once over the one connection. It never writes to the export.
//
// Everything the server sends is checked before it is used: reply magics,
// handles, chunk types and lengths, offsets against the request. A reply
// that breaks the protocol ends the connection and fails every request in
// flight; no buffer is sized by a length the server chose beyond what the
// client asked for (option replies and error chunks are capped at 64 KiB).

// Wire values proto.go does not name.
const (
	repErrPlatform      = 1<<31 + 4
	repErrShutdown      = 1<<31 + 7
	repErrBlockSizeReqd = 1<<31 + 8

	magicOldstyle = 0x00420281861253 // oldstyle negotiation, unsupported

	errNoMem     = 12
	errNotSup    = 95
	errShutdown  = 108
	noBlockLimit = 0xffffffff // NBD_INFO_BLOCK_SIZE: no maximum
)

const (
	// clientMaxRequest is the largest read the client sends, whatever the
	// server allows: the protocol's portable limit.
	clientMaxRequest = 32 << 20
	// statusStep is the range one NBD_CMD_BLOCK_STATUS asks about.
	statusStep = 1 << 30
	// maxStatusDescriptors bounds the descriptors taken from one block
	// status reply; the rest are skipped and asked for again.
	maxStatusDescriptors = 1 << 16
	// maxReadSpans bounds the disjoint pieces in which one structured read
	// may arrive before they join up. In-order servers use one.
	maxReadSpans = 1 << 12
	// maxErrorChunk bounds the payload of an error chunk: error value,
	// a message of up to 64 KiB and an offset.
	maxErrorChunk = 6 + 1<<16 + 8
	// maxOptReplies bounds the replies to one option.
	maxOptReplies = 1024
	// closeTimeout bounds how long Close tries to send NBD_CMD_DISC.
	closeTimeout = 5 * time.Second
	// clientReadBuffer is the read buffer of a connection in transmission;
	// larger payloads bypass it.
	clientReadBuffer = 128 << 10
)

// Client is a read-only connection to one NBD export. Its methods are safe
// for concurrent use; reads from several goroutines are pipelined over the
// connection, and replies are matched to requests by handle.
type Client struct {
	name string
	raw  net.Conn // the dialled connection: deadlines and hard closes
	nc   net.Conn // raw, or the TLS connection over it
	br   *bufio.Reader

	size       int64
	flags      uint16
	noZeroes   bool
	structured bool
	hasMeta    bool // base:allocation selected: block status works
	metaID     uint32
	minBlock   int64
	maxRequest int64

	wmu      sync.Mutex // serialises requests on nc
	discSent bool       // under wmu: nothing may follow NBD_CMD_DISC

	mu       sync.Mutex
	pending  map[uint64]*call
	next     uint64
	err      error // why the connection ended; set once
	closing  bool
	shutdown bool // the server answered ESHUTDOWN: no new requests

	readerDone chan struct{}
	closeOnce  sync.Once
	closeErr   error
}

// Range is a run of bytes of an export.
type Range struct {
	Offset, Length int64
}

// ServerError is an error the server reported for one request.
type ServerError struct {
	Errno   uint32 // the NBD error value (NBD_EIO, ...)
	Message string // the server's text, if it sent one
}

func (e *ServerError) Error() string {
	s := fmt.Sprintf("server error %s", errnoName(e.Errno))
	if e.Message != "" {
		s += ": " + strconv.Quote(e.Message)
	}
	return s
}

// Unwrap maps the NBD error value to its errno, so that errors.Is(err,
// syscall.EIO) works; unknown values are EINVAL, as the protocol says.
func (e *ServerError) Unwrap() error {
	switch e.Errno {
	case errPerm:
		return syscall.EPERM
	case errIO:
		return syscall.EIO
	case errNoMem:
		return syscall.ENOMEM
	case errNoSpace:
		return syscall.ENOSPC
	case errOverflow:
		return syscall.EOVERFLOW
	case errNotSup:
		return syscall.ENOTSUP
	case errShutdown:
		return syscall.ESHUTDOWN
	default:
		return syscall.EINVAL
	}
}

func errnoName(errno uint32) string {
	switch errno {
	case errPerm:
		return "EPERM"
	case errIO:
		return "EIO"
	case errNoMem:
		return "ENOMEM"
	case errInval:
		return "EINVAL"
	case errNoSpace:
		return "ENOSPC"
	case errOverflow:
		return "EOVERFLOW"
	case errNotSup:
		return "ENOTSUP"
	case errShutdown:
		return "ESHUTDOWN"
	}
	return fmt.Sprintf("%d", errno)
}

// call is one request in flight. The reader goroutine fills it in and
// closes done; the requester reads it only after that.
type call struct {
	typ    uint16
	off    uint64
	length uint32
	buf    []byte // reads: length bytes for the data
	done   chan struct{}
	err    error

	cover coverage // structured reads: the bytes that arrived

	gotStatus bool    // block status: the base:allocation chunk came
	covered   uint64  // block status: bytes its descriptors describe
	data      []Range // block status: allocated runs, merged
}

// coverage is the part of a read that chunks have covered: disjoint,
// non-adjacent ranges of export offsets, sorted.
type coverage struct {
	spans []span
	total uint64
}

type span struct{ lo, hi uint64 }

// add records [lo, hi); overlap with what is there is an error, as are
// more than maxReadSpans separate pieces.
func (cv *coverage) add(lo, hi uint64) error {
	s := cv.spans
	// The first span that ends at or after lo.
	i, _ := slices.BinarySearchFunc(s, lo, func(sp span, v uint64) int {
		if sp.hi < v {
			return -1
		}
		return 1
	})
	if i < len(s) && s[i].lo < hi && s[i].hi > lo {
		return fmt.Errorf("chunk [%d, %d) overlaps [%d, %d) of the same reply", lo, hi, s[i].lo, s[i].hi)
	}
	left := i < len(s) && s[i].hi == lo
	j := i
	if left {
		j = i + 1
	}
	right := j < len(s) && s[j].lo == hi
	switch {
	case left && right:
		s[i].hi = s[j].hi
		s = slices.Delete(s, j, j+1)
	case left:
		s[i].hi = hi
	case right:
		s[j].lo = lo
	default:
		if len(s) >= maxReadSpans {
			return fmt.Errorf("reply arrives in more than %d separate pieces", maxReadSpans)
		}
		s = slices.Insert(s, i, span{lo, hi})
	}
	cv.spans = s
	cv.total += hi - lo
	return nil
}

// Dial connects to the export exportName of the NBD server at addr
// (network "tcp" or "unix") and negotiates the session. With tlsConf set
// the connection must upgrade to TLS (NBD_OPT_STARTTLS) before anything
// else; for "tcp" an empty ServerName is taken from addr. ctx bounds the
// connection and the handshake (at most a minute without a deadline), not
// the Client's later life.
func Dial(ctx context.Context, network, addr, exportName string, tlsConf *tls.Config) (*Client, error) {
	switch network {
	case "tcp", "tcp4", "tcp6", "unix":
	default:
		return nil, fmt.Errorf("nbd: network %q is not supported (use tcp or unix)", network)
	}
	if len(exportName) > maxString {
		return nil, fmt.Errorf("nbd: export name of %d bytes is over the protocol's limit of %d", len(exportName), maxString)
	}
	if tlsConf != nil && tlsConf.ServerName == "" && network != "unix" {
		if host, _, err := net.SplitHostPort(addr); err == nil {
			tlsConf = tlsConf.Clone()
			tlsConf.ServerName = host
		}
	}
	var d net.Dialer
	raw, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("nbd: %w", err)
	}
	c, err := clientOn(ctx, raw, exportName, tlsConf)
	if err != nil {
		return nil, fmt.Errorf("nbd: export %s on %s: %w", quoteName(exportName), addr, err)
	}
	return c, nil
}

// clientOn runs the handshake on raw and starts the reply reader. On
// failure raw is closed.
func clientOn(ctx context.Context, raw net.Conn, name string, tlsConf *tls.Config) (*Client, error) {
	c := &Client{
		name:       name,
		raw:        raw,
		nc:         raw,
		minBlock:   1,
		maxRequest: clientMaxRequest,
		pending:    map[uint64]*call{},
		readerDone: make(chan struct{}),
	}
	deadline := time.Now().Add(handshakeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	raw.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Unix(1, 0)) })
	err := c.handshake(ctx, tlsConf)
	if !stop() && err == nil {
		err = ctx.Err()
	}
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (during the handshake: %v)", ctx.Err(), err)
		}
		c.nc.Close()
		raw.Close()
		return nil, err
	}
	raw.SetDeadline(time.Time{})
	go c.readLoop()
	return c, nil
}

// Size is the export's size in bytes.
func (c *Client) Size() int64 { return c.size }

// ReadOnly reports whether the server marked the export read-only.
func (c *Client) ReadOnly() bool { return c.flags&tfReadOnly != 0 }

// handshake negotiates the session; it leaves c ready for transmission.
func (c *Client) handshake(ctx context.Context, tlsConf *tls.Config) error {
	c.br = bufio.NewReaderSize(c.raw, 4<<10)
	var g [18]byte
	if _, err := io.ReadFull(c.br, g[:16]); err != nil {
		return fmt.Errorf("reading the server's greeting: %w", err)
	}
	if m := be.Uint64(g[0:]); m != magicInit {
		return fmt.Errorf("not an NBD server: greeting starts %#x", m)
	}
	switch m := be.Uint64(g[8:]); m {
	case magicOption:
	case magicOldstyle:
		return errors.New("the server speaks oldstyle negotiation, which this client does not support")
	default:
		return fmt.Errorf("not an NBD server: second greeting word %#x", m)
	}
	if _, err := io.ReadFull(c.br, g[16:18]); err != nil {
		return fmt.Errorf("reading the handshake flags: %w", err)
	}
	hf := be.Uint16(g[16:])
	fixed := hf&flagFixedNewstyle != 0
	var cf uint32
	if fixed {
		cf |= clientFixedNewstyle
	}
	if hf&flagNoZeroes != 0 {
		cf |= clientNoZeroes
		c.noZeroes = true
	}
	if _, err := c.nc.Write(be.AppendUint32(nil, cf)); err != nil {
		return fmt.Errorf("sending the client flags: %w", err)
	}
	if !fixed {
		if tlsConf != nil {
			return errors.New("the server does not speak fixed newstyle negotiation, so TLS cannot start")
		}
		if err := c.exportName(); err != nil {
			return err
		}
		return c.enterTransmission()
	}
	if tlsConf != nil {
		if err := c.startTLS(ctx, tlsConf); err != nil {
			return err
		}
	}
	if err := c.negotiateStructured(); err != nil {
		return err
	}
	if c.structured {
		if err := c.selectAllocation(); err != nil {
			return err
		}
	}
	if err := c.goExport(); err != nil {
		return err
	}
	return c.enterTransmission()
}

// enterTransmission swaps the handshake's reader for a larger one. The
// server sends nothing between the end of the handshake and a reply.
func (c *Client) enterTransmission() error {
	if c.br.Buffered() > 0 {
		return fmt.Errorf("the server sent %d unexpected bytes at the end of the handshake", c.br.Buffered())
	}
	c.br = bufio.NewReaderSize(c.nc, clientReadBuffer)
	return nil
}

// sendOption sends one option request.
func (c *Client) sendOption(opt uint32, data []byte) error {
	b := make([]byte, 0, 16+len(data))
	b = be.AppendUint64(b, magicOption)
	b = be.AppendUint32(b, opt)
	b = be.AppendUint32(b, uint32(len(data)))
	b = append(b, data...)
	if _, err := c.nc.Write(b); err != nil {
		return fmt.Errorf("sending option %s: %w", optName(opt), err)
	}
	return nil
}

// optReply reads one reply to opt: its type and data.
func (c *Client) optReply(opt uint32) (uint32, []byte, error) {
	var h [20]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, nil, fmt.Errorf("the server closed the connection while answering %s", optName(opt))
		}
		return 0, nil, fmt.Errorf("reading the reply to %s: %w", optName(opt), err)
	}
	if m := be.Uint64(h[0:]); m != magicOptReply {
		return 0, nil, fmt.Errorf("bad option reply magic %#x in the reply to %s", m, optName(opt))
	}
	if o := be.Uint32(h[8:]); o != opt {
		return 0, nil, fmt.Errorf("reply to option %d while waiting for the reply to %s", o, optName(opt))
	}
	typ := be.Uint32(h[12:])
	n := be.Uint32(h[16:])
	if n > maxOptionLength {
		return 0, nil, fmt.Errorf("reply of %d bytes to %s, over the limit of %d", n, optName(opt), maxOptionLength)
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(c.br, data); err != nil {
		return 0, nil, fmt.Errorf("reading the reply to %s: %w", optName(opt), err)
	}
	return typ, data, nil
}

// startTLS upgrades the connection; any refusal is an error, since the
// caller asked for TLS.
func (c *Client) startTLS(ctx context.Context, conf *tls.Config) error {
	if err := c.sendOption(optStartTLS, nil); err != nil {
		return err
	}
	typ, data, err := c.optReply(optStartTLS)
	if err != nil {
		return err
	}
	if typ != repAck {
		if typ&(1<<31) != 0 {
			return fmt.Errorf("the server refused TLS: %s", repErrorText(typ, data))
		}
		return fmt.Errorf("unexpected reply type %d to NBD_OPT_STARTTLS", typ)
	}
	if c.br.Buffered() > 0 {
		return errors.New("the server sent data after accepting NBD_OPT_STARTTLS, before the TLS handshake")
	}
	tc := tls.Client(c.raw, conf)
	if err := tc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("TLS handshake: %w", err)
	}
	c.nc = tc
	c.br = bufio.NewReaderSize(tc, 4<<10)
	return nil
}

// errTLSRequired is the answer to a server that wants TLS from a client
// without a TLS config.
var errTLSRequired = errors.New("the server requires TLS (NBD_REP_ERR_TLS_REQD); dial with a TLS config")

// negotiateStructured asks for structured replies; a refusal leaves simple
// replies.
func (c *Client) negotiateStructured() error {
	if err := c.sendOption(optStructuredReply, nil); err != nil {
		return err
	}
	typ, _, err := c.optReply(optStructuredReply)
	if err != nil {
		return err
	}
	switch {
	case typ == repAck:
		c.structured = true
	case typ == repErrTLSReqd:
		return errTLSRequired
	case typ&(1<<31) != 0:
	default:
		return fmt.Errorf("unexpected reply type %d to NBD_OPT_STRUCTURED_REPLY", typ)
	}
	return nil
}

// selectAllocation selects base:allocation for the export; a refusal
// leaves block status off.
func (c *Client) selectAllocation() error {
	d := be.AppendUint32(nil, uint32(len(c.name)))
	d = append(d, c.name...)
	d = be.AppendUint32(d, 1)
	d = be.AppendUint32(d, uint32(len(contextAllocation)))
	d = append(d, contextAllocation...)
	if err := c.sendOption(optSetMetaContext, d); err != nil {
		return err
	}
	var (
		id    uint32
		found bool
	)
	for range maxOptReplies {
		typ, data, err := c.optReply(optSetMetaContext)
		if err != nil {
			return err
		}
		switch {
		case typ == repMetaContext:
			if len(data) < 4 {
				return fmt.Errorf("NBD_REP_META_CONTEXT of %d bytes", len(data))
			}
			if string(data[4:]) == contextAllocation {
				id, found = be.Uint32(data), true
			}
		case typ == repAck:
			c.hasMeta, c.metaID = found, id
			return nil
		case typ&(1<<31) != 0:
			// Refused: the contexts sent do not count.
			return nil
		default:
			return fmt.Errorf("unexpected reply type %d to NBD_OPT_SET_META_CONTEXT", typ)
		}
	}
	return fmt.Errorf("more than %d replies to NBD_OPT_SET_META_CONTEXT", maxOptReplies)
}

// goExport enters transmission with NBD_OPT_GO, asking for block sizes,
// or with NBD_OPT_EXPORT_NAME when the server does not know GO.
func (c *Client) goExport() error {
	d := be.AppendUint32(nil, uint32(len(c.name)))
	d = append(d, c.name...)
	d = be.AppendUint16(d, 1)
	d = be.AppendUint16(d, infoBlockSize)
	if err := c.sendOption(optGo, d); err != nil {
		return err
	}
	var (
		gotExport, gotSizes bool
		minB, maxB          uint32
	)
	for range maxOptReplies {
		typ, data, err := c.optReply(optGo)
		if err != nil {
			return err
		}
		switch {
		case typ == repInfo:
			if len(data) < 2 {
				return fmt.Errorf("NBD_REP_INFO of %d bytes", len(data))
			}
			switch be.Uint16(data) {
			case infoExport:
				if len(data) != 12 {
					return fmt.Errorf("NBD_INFO_EXPORT of %d bytes, want 12", len(data))
				}
				if err := c.setExport(be.Uint64(data[2:]), be.Uint16(data[10:])); err != nil {
					return err
				}
				gotExport = true
			case infoBlockSize:
				if len(data) != 14 {
					return fmt.Errorf("NBD_INFO_BLOCK_SIZE of %d bytes, want 14", len(data))
				}
				minB, maxB = be.Uint32(data[2:]), be.Uint32(data[10:])
				gotSizes = true
			}
		case typ == repAck:
			if !gotExport {
				return errors.New("the server accepted NBD_OPT_GO without sending NBD_INFO_EXPORT")
			}
			if gotSizes {
				return c.setBlockSizes(minB, maxB)
			}
			return nil
		case typ == repErrUnsup:
			return c.exportName()
		case typ&(1<<31) != 0:
			return goError(typ, data)
		default:
			return fmt.Errorf("unexpected reply type %d to NBD_OPT_GO", typ)
		}
	}
	return fmt.Errorf("more than %d replies to NBD_OPT_GO", maxOptReplies)
}

// goError explains a refused NBD_OPT_GO.
func goError(typ uint32, data []byte) error {
	switch typ {
	case repErrUnknown:
		return fmt.Errorf("the server has no such export: %s", repErrorText(typ, data))
	case repErrTLSReqd:
		return fmt.Errorf("%w; the export does not exist or needs TLS (%s)", errTLSRequired, repErrorText(typ, data))
	case repErrPolicy:
		return fmt.Errorf("the server refuses access to the export: %s", repErrorText(typ, data))
	case repErrShutdown:
		return fmt.Errorf("the server is shutting down: %s", repErrorText(typ, data))
	}
	return fmt.Errorf("the server refused the export: %s", repErrorText(typ, data))
}

// exportName enters transmission with NBD_OPT_EXPORT_NAME, which cannot
// report errors: a server without the export closes the connection.
func (c *Client) exportName() error {
	if err := c.sendOption(optExportName, []byte(c.name)); err != nil {
		return err
	}
	b := make([]byte, 10, 10+exportNameZeroPad)
	if !c.noZeroes {
		b = b[:10+exportNameZeroPad]
	}
	if _, err := io.ReadFull(c.br, b); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return errors.New("the server closed the connection after NBD_OPT_EXPORT_NAME: it has no such export, or refused it")
		}
		return fmt.Errorf("reading the reply to NBD_OPT_EXPORT_NAME: %w", err)
	}
	return c.setExport(be.Uint64(b), be.Uint16(b[8:]))
}

func (c *Client) setExport(size uint64, flags uint16) error {
	if size > math.MaxInt64 {
		return fmt.Errorf("export size %d is too large", size)
	}
	c.size, c.flags = int64(size), flags
	return nil
}

// setBlockSizes applies NBD_INFO_BLOCK_SIZE: requests align to the minimum
// and stay within the maximum (and clientMaxRequest).
func (c *Client) setBlockSizes(minB, maxB uint32) error {
	if minB == 0 || minB > 64<<10 || minB&(minB-1) != 0 {
		return fmt.Errorf("minimum block size %d is not a power of two up to 64 KiB", minB)
	}
	if maxB < minB {
		return fmt.Errorf("maximum block size %d is below the minimum %d", maxB, minB)
	}
	m := int64(clientMaxRequest)
	if maxB != noBlockLimit {
		m = min(m, int64(maxB))
	}
	c.minBlock = int64(minB)
	c.maxRequest = m - m%int64(minB)
	return nil
}

func optName(opt uint32) string {
	switch opt {
	case optExportName:
		return "NBD_OPT_EXPORT_NAME"
	case optStartTLS:
		return "NBD_OPT_STARTTLS"
	case optGo:
		return "NBD_OPT_GO"
	case optStructuredReply:
		return "NBD_OPT_STRUCTURED_REPLY"
	case optSetMetaContext:
		return "NBD_OPT_SET_META_CONTEXT"
	}
	return fmt.Sprintf("option %d", opt)
}

// repErrorText names an error reply and quotes the server's message.
func repErrorText(typ uint32, data []byte) string {
	var name string
	switch typ {
	case repErrUnsup:
		name = "NBD_REP_ERR_UNSUP"
	case repErrPolicy:
		name = "NBD_REP_ERR_POLICY"
	case repErrInvalid:
		name = "NBD_REP_ERR_INVALID"
	case repErrPlatform:
		name = "NBD_REP_ERR_PLATFORM"
	case repErrTLSReqd:
		name = "NBD_REP_ERR_TLS_REQD"
	case repErrUnknown:
		name = "NBD_REP_ERR_UNKNOWN"
	case repErrShutdown:
		name = "NBD_REP_ERR_SHUTDOWN"
	case repErrBlockSizeReqd:
		name = "NBD_REP_ERR_BLOCK_SIZE_REQD"
	case repErrTooBig:
		name = "NBD_REP_ERR_TOO_BIG"
	default:
		name = fmt.Sprintf("error reply %#x", typ)
	}
	if len(data) == 0 {
		return name
	}
	return name + " " + quoteMessage(data)
}

// quoteMessage quotes a message from the server, cut to a readable length.
func quoteMessage(b []byte) string {
	if len(b) > 200 {
		return strconv.Quote(string(b[:200])) + "..."
	}
	return strconv.Quote(string(b))
}

// ReadAt reads len(p) bytes at off, following io.ReaderAt: past the end of
// the export it reads what there is and returns io.EOF. Reads longer than
// the server's maximum request (at most 32 MiB) go out as several requests
// at once; with a minimum block size above 1, unaligned edges are read
// whole into a scratch block. Any number of ReadAt calls may run at once.
// A request the server fails returns a *ServerError; a broken connection
// fails every read in flight and every later one.
func (c *Client) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("nbd: read at negative offset %d", off)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if off >= c.size {
		return 0, io.EOF
	}
	var eof error
	if int64(len(p)) > c.size-off {
		p = p[:c.size-off]
		eof = io.EOF
	}
	pieces := c.split(p, off)
	var startErr error
	for i := range pieces {
		if err := c.start(pieces[i].cl); err != nil {
			startErr = err
			pieces = pieces[:i]
			break
		}
	}
	// Every piece sent is waited for: the reader writes into p until then.
	n := 0
	var err error
	for _, pc := range pieces {
		<-pc.cl.done
		if err != nil {
			continue
		}
		if pc.cl.err != nil {
			err = fmt.Errorf("nbd: reading export %s at [%d, +%d): %w", quoteName(c.name), pc.cl.off, pc.cl.length, pc.cl.err)
			continue
		}
		if pc.bounce {
			copy(pc.dst, pc.cl.buf[pc.skip:])
		}
		n += len(pc.dst)
	}
	if err == nil && startErr != nil {
		err = fmt.Errorf("nbd: reading export %s at %d: %w", quoteName(c.name), off+int64(n), startErr)
	}
	if err != nil {
		return n, err
	}
	return n, eof
}

// piece is one read request of a ReadAt and where its bytes go.
type piece struct {
	cl     *call
	dst    []byte
	bounce bool // cl.buf is scratch: dst gets cl.buf[skip:]
	skip   int
}

// split cuts [off, off+len(p)) into requests of at most maxRequest bytes
// aligned to minBlock (the export's end may be unaligned). Requests that
// cover exactly their part of p read straight into it.
func (c *Client) split(p []byte, off int64) []piece {
	end := off + int64(len(p))
	mb := c.minBlock
	var out []piece
	add := func(start, length int64) {
		lo, hi := max(start, off), min(start+length, end)
		cl := &call{typ: cmdRead, off: uint64(start), length: uint32(length), done: make(chan struct{})}
		pc := piece{cl: cl, dst: p[lo-off : hi-off]}
		if lo == start && hi == start+length {
			cl.buf = pc.dst
		} else {
			cl.buf = make([]byte, length)
			pc.bounce, pc.skip = true, int(lo-start)
		}
		out = append(out, pc)
	}
	pos := off
	if mb > 1 {
		a := off - off%mb
		if bEnd := min(a+mb, c.size); a != off || end < bEnd {
			add(a, bEnd-a)
			pos = bEnd
		}
	}
	mid := end
	if mb > 1 && end != c.size {
		mid = end - end%mb
	}
	for pos < mid {
		l := min(c.maxRequest, mid-pos)
		add(pos, l)
		pos += l
	}
	if pos < end {
		add(pos, min(pos+mb, c.size)-pos)
	}
	return out
}

// Extents returns the parts of the export that hold data according to
// base:allocation (everything not reported as a hole; allocated zeros
// count as data), sorted and merged. Without base:allocation (the server
// did not offer it) the whole export is one range. The export is asked
// about in steps of 1 GiB, one request at a time; ctx ends the walk.
func (c *Client) Extents(ctx context.Context) ([]Range, error) {
	if !c.hasMeta {
		if c.size == 0 {
			return nil, nil
		}
		return []Range{{0, c.size}}, nil
	}
	var out []Range
	for pos := int64(0); pos < c.size; {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		length := min(c.size-pos, statusStep)
		cl := &call{typ: cmdBlockStatus, off: uint64(pos), length: uint32(length), done: make(chan struct{})}
		if err := c.start(cl); err != nil {
			return nil, fmt.Errorf("nbd: block status of export %s at %d: %w", quoteName(c.name), pos, err)
		}
		select {
		case <-cl.done:
		case <-ctx.Done():
			// The reply lands in cl, which nobody reads.
			return nil, ctx.Err()
		}
		if cl.err != nil {
			return nil, fmt.Errorf("nbd: block status of export %s at [%d, +%d): %w", quoteName(c.name), pos, length, cl.err)
		}
		next := pos + int64(cl.covered)
		if c.minBlock > 1 && next%c.minBlock != 0 && next != c.size {
			return nil, fmt.Errorf("nbd: block status of export %s at [%d, +%d): descriptors end at %d, not a multiple of the minimum block size %d",
				quoteName(c.name), pos, length, next, c.minBlock)
		}
		for _, r := range cl.data {
			out = appendRange(out, r)
		}
		pos = next
	}
	return out, nil
}

// appendRange appends r to sorted ranges, merging it with the last one
// when they touch.
func appendRange(rs []Range, r Range) []Range {
	if n := len(rs); n > 0 && rs[n-1].Offset+rs[n-1].Length == r.Offset {
		rs[n-1].Length += r.Length
		return rs
	}
	return append(rs, r)
}

// errClosed fails requests once Close has run.
var errClosed = fmt.Errorf("client closed: %w", net.ErrClosed)

// start registers cl under a new handle and sends its request. Once start
// returns nil the reader completes cl, with an error if the connection
// fails.
func (c *Client) start(cl *call) error {
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return err
	}
	if c.closing {
		c.mu.Unlock()
		return errClosed
	}
	if c.shutdown {
		c.mu.Unlock()
		return &ServerError{Errno: errShutdown, Message: "the server is shutting down; close the client"}
	}
	c.next++
	handle := c.next
	c.pending[handle] = cl
	c.mu.Unlock()

	var req [28]byte
	be.PutUint32(req[0:], magicRequest)
	be.PutUint16(req[6:], cl.typ)
	be.PutUint64(req[8:], handle)
	be.PutUint64(req[16:], cl.off)
	be.PutUint32(req[24:], cl.length)
	c.wmu.Lock()
	if c.discSent {
		// Close won the race: the reader fails cl when the connection
		// closes.
		c.wmu.Unlock()
		return nil
	}
	_, err := c.nc.Write(req[:])
	c.wmu.Unlock()
	if err != nil {
		c.breakConn(fmt.Errorf("sending a request: %w", err))
	}
	return nil
}

// breakConn ends the connection with err; the reader then fails every
// request in flight with it.
func (c *Client) breakConn(err error) {
	c.mu.Lock()
	if c.err == nil && !c.closing {
		c.err = fmt.Errorf("connection failed: %w", err)
	}
	c.mu.Unlock()
	c.raw.Close()
}

// Close sends NBD_CMD_DISC and closes the connection. Reads still in
// flight fail; Close waits for the reply reader to stop, so no ReadAt
// touches its buffer afterwards. Closing twice returns the first result.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closing = true
		healthy := c.err == nil
		c.mu.Unlock()
		if healthy {
			// A writer stuck on a full socket gives up after the timeout.
			c.raw.SetWriteDeadline(time.Now().Add(closeTimeout))
			var req [28]byte
			be.PutUint32(req[0:], magicRequest)
			be.PutUint16(req[6:], cmdDisc)
			c.wmu.Lock()
			c.discSent = true
			_, err := c.nc.Write(req[:])
			c.wmu.Unlock()
			if err != nil {
				c.closeErr = fmt.Errorf("nbd: sending NBD_CMD_DISC: %w", err)
			}
		}
		c.nc.Close()
		c.raw.Close()
		<-c.readerDone
	})
	return c.closeErr
}

// readLoop reads replies until the connection ends, then fails whatever
// is still pending.
func (c *Client) readLoop() {
	defer close(c.readerDone)
	err := c.readReplies()
	if errors.Is(err, io.EOF) {
		err = errors.New("the server closed the connection")
	}
	c.mu.Lock()
	switch {
	case c.err != nil:
	case c.closing:
		c.err = errClosed
	default:
		c.err = fmt.Errorf("connection failed: %w", err)
	}
	err = c.err
	pending := c.pending
	c.pending = nil
	c.mu.Unlock()
	c.raw.Close()
	for _, cl := range pending {
		cl.err = err
		close(cl.done)
	}
}

// readReplies dispatches replies to their calls until an error.
func (c *Client) readReplies() error {
	var h [20]byte
	for {
		if _, err := io.ReadFull(c.br, h[:4]); err != nil {
			return err
		}
		switch m := be.Uint32(h[:4]); m {
		case magicSimple:
			if _, err := io.ReadFull(c.br, h[4:16]); err != nil {
				return unexpectedEOF(err)
			}
			if err := c.simpleReply(be.Uint32(h[4:]), be.Uint64(h[8:])); err != nil {
				return err
			}
		case magicStructured:
			if !c.structured {
				return errors.New("structured reply chunk, but structured replies were not negotiated")
			}
			if _, err := io.ReadFull(c.br, h[4:20]); err != nil {
				return unexpectedEOF(err)
			}
			if err := c.chunk(be.Uint16(h[4:]), be.Uint16(h[6:]), be.Uint64(h[8:]), be.Uint32(h[16:])); err != nil {
				return err
			}
		default:
			return fmt.Errorf("bad reply magic %#x", m)
		}
	}
}

// unexpectedEOF turns EOF inside a message into io.ErrUnexpectedEOF.
func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func (c *Client) lookup(handle uint64) (*call, error) {
	c.mu.Lock()
	cl := c.pending[handle]
	c.mu.Unlock()
	if cl == nil {
		return nil, fmt.Errorf("reply to handle %#x, which has no request in flight", handle)
	}
	return cl, nil
}

// serverError makes the error of a request the server failed. After
// ESHUTDOWN the protocol wants the client gone: later requests fail.
func (c *Client) serverError(errno uint32, msg string) error {
	if errno == errShutdown {
		c.mu.Lock()
		c.shutdown = true
		c.mu.Unlock()
	}
	return &ServerError{Errno: errno, Message: msg}
}

// finish completes cl.
func (c *Client) finish(handle uint64, cl *call) {
	c.mu.Lock()
	delete(c.pending, handle)
	c.mu.Unlock()
	close(cl.done)
}

// simpleReply handles a simple reply; its payload (successful reads only)
// follows on c.br.
func (c *Client) simpleReply(errno uint32, handle uint64) error {
	cl, err := c.lookup(handle)
	if err != nil {
		return err
	}
	switch {
	case errno != 0:
		cl.err = c.serverError(errno, "")
	case cl.typ == cmdRead && c.structured:
		// Whether data follows is unknowable: the stream is lost.
		return fmt.Errorf("simple reply without an error to a read (handle %#x), though structured replies were negotiated", handle)
	case cl.typ == cmdRead:
		if _, err := io.ReadFull(c.br, cl.buf); err != nil {
			return unexpectedEOF(err)
		}
	case cl.typ == cmdBlockStatus:
		cl.err = errors.New("the server answered block status with a simple reply and no status")
	}
	c.finish(handle, cl)
	return nil
}

// chunk handles one structured reply chunk; its payload of length bytes
// follows on c.br.
func (c *Client) chunk(flags, typ uint16, handle uint64, length uint32) error {
	cl, err := c.lookup(handle)
	if err != nil {
		return err
	}
	switch typ {
	case replyTypeNone:
		if length != 0 {
			return fmt.Errorf("NBD_REPLY_TYPE_NONE chunk with %d bytes of payload", length)
		}
		if flags&replyFlagDone == 0 {
			return errors.New("NBD_REPLY_TYPE_NONE chunk without NBD_REPLY_FLAG_DONE")
		}
	case replyTypeOffsetData, replyTypeOffsetHole:
		if cl.typ != cmdRead {
			return fmt.Errorf("content chunk (type %d) in the reply to command %d", typ, cl.typ)
		}
		err = c.content(cl, typ, length)
	case replyTypeBlockStatus:
		if cl.typ != cmdBlockStatus {
			return fmt.Errorf("block status chunk in the reply to command %d", cl.typ)
		}
		err = c.statusChunk(cl, length)
	default:
		if typ&(1<<15) == 0 {
			return fmt.Errorf("unknown reply chunk type %d", typ)
		}
		err = c.errorChunk(cl, typ, length)
	}
	if err != nil {
		return err
	}
	if flags&replyFlagDone == 0 {
		return nil
	}
	if cl.err == nil {
		switch {
		case cl.typ == cmdRead && cl.cover.total != uint64(cl.length):
			cl.err = fmt.Errorf("the server's reply to a read of %d bytes covers only %d", cl.length, cl.cover.total)
		case cl.typ == cmdBlockStatus && !cl.gotStatus:
			cl.err = errors.New("the server's reply to block status has no base:allocation status")
		}
	}
	c.finish(handle, cl)
	return nil
}

// content handles OFFSET_DATA and OFFSET_HOLE: the range must lie inside
// the request and not overlap earlier chunks.
func (c *Client) content(cl *call, typ uint16, length uint32) error {
	var (
		hdr [12]byte
		n   uint64
	)
	if typ == replyTypeOffsetData {
		if length < 9 {
			return fmt.Errorf("NBD_REPLY_TYPE_OFFSET_DATA chunk of %d bytes", length)
		}
		n = uint64(length) - 8
		if n > uint64(cl.length) {
			return fmt.Errorf("NBD_REPLY_TYPE_OFFSET_DATA chunk of %d bytes for a read of %d", n, cl.length)
		}
		if _, err := io.ReadFull(c.br, hdr[:8]); err != nil {
			return unexpectedEOF(err)
		}
	} else {
		if length != 12 {
			return fmt.Errorf("NBD_REPLY_TYPE_OFFSET_HOLE chunk of %d bytes, want 12", length)
		}
		if _, err := io.ReadFull(c.br, hdr[:12]); err != nil {
			return unexpectedEOF(err)
		}
		n = uint64(be.Uint32(hdr[8:]))
		if n == 0 {
			return errors.New("NBD_REPLY_TYPE_OFFSET_HOLE chunk of an empty hole")
		}
	}
	off := be.Uint64(hdr[:])
	if off < cl.off || off-cl.off > uint64(cl.length) || n > uint64(cl.length)-(off-cl.off) {
		return fmt.Errorf("chunk [%d, +%d) lies outside the read [%d, +%d)", off, n, cl.off, cl.length)
	}
	rel := off - cl.off
	if err := cl.cover.add(off, off+n); err != nil {
		return err
	}
	dst := cl.buf[rel : rel+n]
	if typ == replyTypeOffsetHole {
		clear(dst)
		return nil
	}
	_, err := io.ReadFull(c.br, dst)
	return unexpectedEOF(err)
}

// statusChunk handles NBD_REPLY_TYPE_BLOCK_STATUS: consecutive
// descriptors from the request's offset, the last of which may reach past
// the request's end (it is cut there).
func (c *Client) statusChunk(cl *call, length uint32) error {
	if length < 12 || (length-4)%8 != 0 {
		return fmt.Errorf("NBD_REPLY_TYPE_BLOCK_STATUS chunk of %d bytes", length)
	}
	var b [8]byte
	if _, err := io.ReadFull(c.br, b[:4]); err != nil {
		return unexpectedEOF(err)
	}
	if id := be.Uint32(b[:4]); !c.hasMeta || id != c.metaID {
		return fmt.Errorf("block status for metadata context %d, which was not selected", id)
	}
	if cl.gotStatus {
		return errors.New("two base:allocation status chunks in one reply")
	}
	cl.gotStatus = true
	count := int64(length-4) / 8
	for i := int64(0); i < count; i++ {
		if i == maxStatusDescriptors {
			// Enough for one reply; Extents asks again from here.
			if _, err := io.CopyN(io.Discard, c.br, (count-i)*8); err != nil {
				return unexpectedEOF(err)
			}
			break
		}
		if _, err := io.ReadFull(c.br, b[:]); err != nil {
			return unexpectedEOF(err)
		}
		l, status := uint64(be.Uint32(b[:])), be.Uint32(b[4:])
		if l == 0 {
			return errors.New("block status descriptor of length 0")
		}
		if cl.covered >= uint64(cl.length) {
			return fmt.Errorf("block status descriptors past the end of the request [%d, +%d)", cl.off, cl.length)
		}
		l = min(l, uint64(cl.length)-cl.covered)
		if status&stateHole == 0 {
			cl.data = appendRange(cl.data, Range{Offset: int64(cl.off + cl.covered), Length: int64(l)})
		}
		cl.covered += l
	}
	return nil
}

// errorChunk handles error chunks, known or not: the first error of a
// reply is the request's.
func (c *Client) errorChunk(cl *call, typ uint16, length uint32) error {
	if length < 6 || length > maxErrorChunk {
		return fmt.Errorf("error chunk (type %#x) of %d bytes", typ, length)
	}
	p := make([]byte, length)
	if _, err := io.ReadFull(c.br, p); err != nil {
		return unexpectedEOF(err)
	}
	errno := be.Uint32(p)
	ml := uint32(be.Uint16(p[4:]))
	if errno == 0 {
		return fmt.Errorf("error chunk (type %#x) with error value 0", typ)
	}
	switch typ {
	case replyTypeError:
		if length != 6+ml {
			return fmt.Errorf("NBD_REPLY_TYPE_ERROR chunk of %d bytes for a %d-byte message", length, ml)
		}
	case replyTypeErrorOffset:
		if length != 14+ml {
			return fmt.Errorf("NBD_REPLY_TYPE_ERROR_OFFSET chunk of %d bytes for a %d-byte message", length, ml)
		}
		off := be.Uint64(p[6+ml:])
		if off < cl.off || off-cl.off >= uint64(cl.length) {
			return fmt.Errorf("error offset %d lies outside the request [%d, +%d)", off, cl.off, cl.length)
		}
	default:
		if 6+ml > length {
			return fmt.Errorf("error chunk (type %#x) of %d bytes for a %d-byte message", typ, length, ml)
		}
	}
	if cl.err == nil {
		msg := p[6 : 6+ml]
		if len(msg) > maxString {
			msg = msg[:maxString]
		}
		cl.err = c.serverError(errno, string(msg))
	}
	return nil
}
