package nbd

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

const (
	// maxInFlight bounds the requests of one connection being handled at
	// once; the next request is read when one finishes.
	maxInFlight = 16
	// inFlightBytes bounds the read and write buffers those requests hold.
	// It is at least two maximal requests.
	inFlightBytes = 64 << 20
	// maxReadChunks bounds the chunks of one structured read: a read whose
	// extents alternate more often is sent as data in one chunk.
	maxReadChunks = 256
	// maxExtentCalls bounds the Extents calls one read makes to cover its
	// range when the export answers in pieces.
	maxExtentCalls = 8
	// maxStatusExtents bounds the descriptors of one block status reply.
	maxStatusExtents = 1 << 14
)

// request is one transmission request.
type request struct {
	flags  uint16
	typ    uint16
	handle uint64
	offset uint64
	length uint32
}

// transmit reads requests until the client disconnects and hands each to
// its own goroutine; it returns when every reply has been sent.
func (cn *conn) transmit(sess *session) error {
	var (
		wg     sync.WaitGroup
		slots  = make(chan struct{}, maxInFlight)
		budget = newByteBudget(inFlightBytes)
		hdr    [28]byte
	)
	defer wg.Wait()
	for {
		if _, err := io.ReadFull(cn.r, hdr[:]); err != nil {
			wg.Wait()
			if werr := cn.writeErr(); werr != nil {
				return fmt.Errorf("sending a reply: %w", werr)
			}
			if errors.Is(err, io.EOF) {
				return errors.New("client closed the connection without NBD_CMD_DISC")
			}
			return fmt.Errorf("reading a request: %w", err)
		}
		if m := be.Uint32(hdr[0:]); m != magicRequest {
			return fmt.Errorf("bad request magic %#x", m)
		}
		req := request{
			flags:  be.Uint16(hdr[4:]),
			typ:    be.Uint16(hdr[6:]),
			handle: be.Uint64(hdr[8:]),
			offset: be.Uint64(hdr[16:]),
			length: be.Uint32(hdr[24:]),
		}
		if req.typ == cmdDisc {
			wg.Wait()
			return nil
		}
		errno, msg := sess.check(req)
		if req.typ == cmdWrite && errno != 0 {
			// The payload follows whatever we think of the request; skip
			// it without holding it.
			if _, err := io.CopyN(io.Discard, cn.r, int64(req.length)); err != nil {
				return fmt.Errorf("reading the payload of a refused write: %w", err)
			}
		}
		if errno != 0 {
			cn.replyError(sess, req, errno, msg)
			continue
		}

		slots <- struct{}{}
		var hold int64
		if req.typ == cmdRead || req.typ == cmdWrite {
			hold = int64(req.length)
		}
		budget.acquire(hold)
		var payload [][]byte
		if req.typ == cmdWrite {
			var err error
			if payload, err = readPayload(cn.r, int(req.length)); err != nil {
				budget.release(hold)
				<-slots
				return fmt.Errorf("reading the payload of a write: %w", err)
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cn.handle(sess, req, payload)
			for _, p := range payload {
				putBuffer(p)
			}
			budget.release(hold)
			<-slots
		}()
	}
}

// payloadPiece is the unit in which write payloads are read: memory
// follows the bytes that arrived, not the length a request claims.
const payloadPiece = 1 << 20

// readPayload reads n bytes in pieces of at most payloadPiece.
func readPayload(r io.Reader, n int) ([][]byte, error) {
	pieces := make([][]byte, 0, (n+payloadPiece-1)/payloadPiece)
	for n > 0 {
		p := getBuffer(min(n, payloadPiece))
		if _, err := io.ReadFull(r, p); err != nil {
			putBuffer(p)
			for _, p := range pieces {
				putBuffer(p)
			}
			return nil, err
		}
		pieces = append(pieces, p)
		n -= len(p)
	}
	return pieces, nil
}

// check validates a request against the export and the negotiated
// features; a nonzero error value refuses it with msg.
func (sess *session) check(req request) (uint32, string) {
	allowed := uint16(cmdFlagFUA) // valid on every command, ignored where nothing is written
	switch req.typ {
	case cmdRead:
		if sess.structured {
			allowed |= cmdFlagDF
		}
	case cmdWriteZeroes:
		allowed |= cmdFlagNoHole
	case cmdBlockStatus:
		allowed |= cmdFlagReqOne
	case cmdWrite, cmdFlush, cmdTrim, cmdCache:
	default:
		return errInval, fmt.Sprintf("unknown command %d", req.typ)
	}
	if req.flags&^allowed != 0 {
		return errInval, fmt.Sprintf("command flags %#x are not valid for command %d", req.flags&^allowed, req.typ)
	}
	size := uint64(sess.size)
	inside := req.offset <= size && uint64(req.length) <= size-req.offset
	outside := fmt.Sprintf("range [%d, +%d) is past the end of the export (size %d)", req.offset, req.length, size)
	switch req.typ {
	case cmdRead:
		if req.length > maxRequest {
			if req.flags&cmdFlagDF != 0 {
				return errOverflow, fmt.Sprintf("read of %d bytes is over the %d-byte limit", req.length, maxRequest)
			}
			return errInval, fmt.Sprintf("read of %d bytes is over the %d-byte limit", req.length, maxRequest)
		}
		if !inside {
			return errInval, outside
		}
	case cmdWrite, cmdWriteZeroes, cmdTrim:
		if !sess.writable {
			return errPerm, "the export is read-only"
		}
		if req.typ == cmdWrite && req.length > maxRequest {
			return errInval, fmt.Sprintf("write of %d bytes is over the %d-byte limit", req.length, maxRequest)
		}
		if !inside {
			if req.typ == cmdTrim {
				return errInval, outside
			}
			return errNoSpace, outside
		}
	case cmdFlush:
		if req.offset != 0 || req.length != 0 {
			return errInval, "flush requests have offset and length zero"
		}
	case cmdCache:
		if !inside {
			return errInval, outside
		}
	case cmdBlockStatus:
		if !sess.metaAlloc {
			return errInval, "no metadata context was selected (NBD_OPT_SET_META_CONTEXT base:allocation)"
		}
		if req.length == 0 {
			return errInval, "block status of an empty range"
		}
		if !inside {
			return errInval, outside
		}
	}
	return 0, ""
}

// handle carries out a valid request and sends its reply.
func (cn *conn) handle(sess *session, req request, payload [][]byte) {
	off := int64(req.offset)
	length := int64(req.length)
	var err error
	switch req.typ {
	case cmdRead:
		cn.read(sess, req)
		return
	case cmdBlockStatus:
		cn.blockStatus(sess, req)
		return
	case cmdCache:
		// Nothing to warm up: the export is read on demand.
	case cmdFlush:
		if sess.writable {
			err = sess.writer.Flush()
		}
	case cmdWrite:
		// NBD promises nothing about a failed write's range, so the
		// pieces need not land atomically.
		pos := off
		for _, p := range payload {
			var n int
			n, err = sess.writer.WriteAt(p, pos)
			if err == nil && n < len(p) {
				err = io.ErrShortWrite
			}
			if err != nil {
				break
			}
			pos += int64(len(p))
		}
	case cmdTrim:
		if sess.trimmer != nil && length > 0 {
			err = sess.trimmer.Trim(off, length)
		}
	case cmdWriteZeroes:
		if length > 0 {
			err = writeZeroes(sess, off, length, req.flags&cmdFlagNoHole == 0)
		}
	}
	if err == nil && req.flags&cmdFlagFUA != 0 && sess.writable && req.typ != cmdFlush && req.typ != cmdCache {
		err = sess.writer.Flush()
	}
	if err != nil {
		cn.srv.logf("nbd: export %s: command %d at [%d, +%d): %v", quoteName(sess.name), req.typ, off, length, err)
		cn.replyError(sess, req, errnoFor(err), "the export failed: "+errnoText(errnoFor(err)))
		return
	}
	cn.replySimple(req.handle, 0)
}

// zeros is what writeZeroes writes when the export cannot zero by itself.
// WriteAt must not modify its argument, so one buffer serves everyone.
var zeros [256 << 10]byte

func writeZeroes(sess *session, off, length int64, mayTrim bool) error {
	if sess.zeroer != nil {
		return sess.zeroer.WriteZeroes(off, length, mayTrim)
	}
	for length > 0 {
		n := min(length, int64(len(zeros)))
		w, err := sess.writer.WriteAt(zeros[:n], off)
		if err == nil && int64(w) < n {
			err = io.ErrShortWrite
		}
		if err != nil {
			return err
		}
		off += n
		length -= n
	}
	return nil
}

func errnoText(errno uint32) string {
	switch errno {
	case errPerm:
		return "operation not permitted"
	case errNoSpace:
		return "no space left"
	default:
		return "input/output error"
	}
}

// segment is a piece of a structured read: data, or a range that reads as
// zeros.
type segment struct {
	off, length int64
	zero        bool
}

// read answers NBD_CMD_READ. The whole range is read before anything is
// sent, so an error never strikes in the middle of a reply: it becomes a
// simple reply with an error, or one error chunk.
func (cn *conn) read(sess *session, req request) {
	off := int64(req.offset)
	length := int64(req.length)
	if length == 0 {
		if sess.structured {
			cn.sendChunks(req.handle, chunk{typ: replyTypeNone})
		} else {
			cn.replySimple(req.handle, 0)
		}
		return
	}
	buf := getBuffer(int(length))
	defer putBuffer(buf)
	if !sess.structured {
		if err := readFull(sess.exp, buf, off); err != nil {
			cn.srv.logf("nbd: export %s: read at [%d, +%d): %v", quoteName(sess.name), off, length, err)
			cn.replySimple(req.handle, errnoFor(err))
			return
		}
		cn.replySimple(req.handle, 0, buf)
		return
	}

	segs := []segment{{off: off, length: length}}
	if sess.extents != nil && req.flags&cmdFlagDF == 0 {
		segs = cn.readSegments(sess, off, length)
	}
	chunks := make([]chunk, 0, len(segs))
	for _, s := range segs {
		if s.zero {
			chunks = append(chunks, chunk{typ: replyTypeOffsetHole, off: s.off, hole: uint32(s.length)})
			continue
		}
		p := buf[s.off-off : s.off-off+s.length]
		if err := readFull(sess.exp, p, s.off); err != nil {
			var re *readError
			at := s.off
			if errors.As(err, &re) {
				at += int64(re.n)
			}
			cn.srv.logf("nbd: export %s: read at [%d, +%d): %v", quoteName(sess.name), s.off, s.length, err)
			cn.sendChunks(req.handle, chunk{typ: replyTypeErrorOffset, errno: errnoFor(err), msg: "the export failed: " + errnoText(errnoFor(err)), off: at})
			return
		}
		chunks = append(chunks, chunk{typ: replyTypeOffsetData, off: s.off, data: p})
	}
	cn.sendChunks(req.handle, chunks...)
}

// readError is a short read: n bytes arrived before err.
type readError struct {
	n   int
	err error
}

func (e *readError) Error() string { return fmt.Sprintf("read %d bytes: %v", e.n, e.err) }
func (e *readError) Unwrap() error { return e.err }

// readFull fills p from the export at off. io.ReaderAt may return io.EOF
// with a full buffer; a short read is an error whatever it says.
func readFull(exp Export, p []byte, off int64) error {
	n, err := exp.ReadAt(p, off)
	if n >= len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return &readError{n: max(n, 0), err: err}
}

// readSegments splits [off, off+length) into data and ranges that read as
// zeros, from the export's extents. Whatever the extents do not cover is
// data; too many pieces make one piece of data.
func (cn *conn) readSegments(sess *session, off, length int64) []segment {
	end := off + length
	pos := off
	var segs []segment
	add := func(l int64, zero bool) bool {
		if n := len(segs); n > 0 && segs[n-1].zero == zero {
			segs[n-1].length += l
		} else {
			segs = append(segs, segment{off: pos, length: l, zero: zero})
		}
		pos += l
		return len(segs) <= maxReadChunks
	}
	whole := []segment{{off: off, length: length}}
	for calls := 0; pos < end && calls < maxExtentCalls; calls++ {
		exts, err := sess.extents.Extents(pos, end-pos)
		if err != nil {
			cn.srv.logf("nbd: export %s: extents at [%d, +%d): %v", quoteName(sess.name), pos, end-pos, err)
			break
		}
		progress := false
		for _, e := range exts {
			if e.Length <= 0 || pos >= end {
				break
			}
			if !add(min(e.Length, end-pos), e.Hole || e.Zero) {
				return whole
			}
			progress = true
		}
		if !progress {
			break
		}
	}
	if pos < end && !add(end-pos, false) {
		return whole
	}
	return segs
}

// blockStatus answers NBD_CMD_BLOCK_STATUS for base:allocation.
func (cn *conn) blockStatus(sess *session, req request) {
	off := int64(req.offset)
	length := int64(req.length)
	var descs []byte
	if sess.extents != nil {
		exts, err := sess.extents.Extents(off, length)
		if err != nil {
			cn.srv.logf("nbd: export %s: extents at [%d, +%d): %v", quoteName(sess.name), off, length, err)
			cn.replyError(sess, req, errnoFor(err), "the export failed: "+errnoText(errnoFor(err)))
			return
		}
		descs = statusDescriptors(exts, length, req.flags&cmdFlagReqOne != 0)
	}
	if len(descs) == 0 {
		// Unknown: allocated, contents not known to be zero.
		descs = be.AppendUint32(be.AppendUint32(nil, uint32(length)), 0)
	}
	payload := make([]byte, 4, 4+len(descs))
	be.PutUint32(payload, contextAllocationID)
	payload = append(payload, descs...)
	cn.sendChunks(req.handle, chunk{typ: replyTypeBlockStatus, data: payload})
}

// statusDescriptors turns extents into base:allocation descriptors covering
// at most length bytes, merging neighbours of equal status.
func statusDescriptors(exts []Extent, length int64, one bool) []byte {
	var (
		descs   []byte
		pos     int64
		lastLen int64
		last    = uint32(1 << 31) // no status yet
		count   int
	)
	for _, e := range exts {
		if e.Length <= 0 || pos >= length {
			break
		}
		l := min(e.Length, length-pos)
		var status uint32
		if e.Hole {
			status |= stateHole
		}
		if e.Zero {
			status |= stateZero
		}
		pos += l
		if status == last {
			lastLen += l
			be.PutUint32(descs[len(descs)-8:], uint32(lastLen))
			continue
		}
		if one && count == 1 {
			break
		}
		if count == maxStatusExtents {
			break
		}
		descs = be.AppendUint32(be.AppendUint32(descs, uint32(l)), status)
		last, lastLen = status, l
		count++
	}
	return descs
}

// chunk is one structured reply chunk, before encoding.
type chunk struct {
	typ   uint16
	off   int64
	data  []byte // OFFSET_DATA data, BLOCK_STATUS payload
	hole  uint32 // OFFSET_HOLE size
	errno uint32
	msg   string
}

// sendChunks sends the chunks of one reply, the last one flagged done, in
// one write: they are never interleaved with other replies.
func (cn *conn) sendChunks(handle uint64, chunks ...chunk) {
	bufs := make(net.Buffers, 0, 2*len(chunks))
	hdrs := make([]byte, 0, 36*len(chunks))
	for i, c := range chunks {
		start := len(hdrs)
		hdrs = be.AppendUint32(hdrs, magicStructured)
		var flags uint16
		if i == len(chunks)-1 {
			flags = replyFlagDone
		}
		hdrs = be.AppendUint16(hdrs, flags)
		hdrs = be.AppendUint16(hdrs, c.typ)
		hdrs = be.AppendUint64(hdrs, handle)
		var data []byte
		switch c.typ {
		case replyTypeNone:
			hdrs = be.AppendUint32(hdrs, 0)
		case replyTypeOffsetData:
			hdrs = be.AppendUint32(hdrs, uint32(8+len(c.data)))
			hdrs = be.AppendUint64(hdrs, uint64(c.off))
			data = c.data
		case replyTypeOffsetHole:
			hdrs = be.AppendUint32(hdrs, 12)
			hdrs = be.AppendUint64(hdrs, uint64(c.off))
			hdrs = be.AppendUint32(hdrs, c.hole)
		case replyTypeBlockStatus:
			hdrs = be.AppendUint32(hdrs, uint32(len(c.data)))
			data = c.data
		case replyTypeError, replyTypeErrorOffset:
			msg := c.msg
			if len(msg) > maxString {
				msg = msg[:maxString]
			}
			n := 6 + len(msg)
			if c.typ == replyTypeErrorOffset {
				n += 8
			}
			hdrs = be.AppendUint32(hdrs, uint32(n))
			hdrs = be.AppendUint32(hdrs, c.errno)
			hdrs = be.AppendUint16(hdrs, uint16(len(msg)))
			hdrs = append(hdrs, msg...)
			if c.typ == replyTypeErrorOffset {
				hdrs = be.AppendUint64(hdrs, uint64(c.off))
			}
		}
		bufs = append(bufs, hdrs[start:len(hdrs):len(hdrs)])
		if len(data) > 0 {
			bufs = append(bufs, data)
		}
	}
	cn.send(bufs)
}

// replySimple sends a simple reply, with data for a successful read.
func (cn *conn) replySimple(handle uint64, errno uint32, data ...[]byte) {
	var hdr [16]byte
	be.PutUint32(hdr[0:], magicSimple)
	be.PutUint32(hdr[4:], errno)
	be.PutUint64(hdr[8:], handle)
	cn.send(append(net.Buffers{hdr[:]}, data...))
}

// replyError refuses a request: with an error chunk and a message when
// structured replies are on, a simple reply otherwise.
func (cn *conn) replyError(sess *session, req request, errno uint32, msg string) {
	if sess.structured {
		cn.sendChunks(req.handle, chunk{typ: replyTypeError, errno: errno, msg: msg})
		return
	}
	cn.replySimple(req.handle, errno)
}

// send writes one whole reply. After a failed write the connection is
// finished: later replies are dropped and the request reader is woken up
// to end the session.
func (cn *conn) send(bufs net.Buffers) {
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	if cn.werr != nil {
		return
	}
	if _, err := bufs.WriteTo(cn.nc); err != nil {
		cn.werr = err
		cn.raw.SetReadDeadline(time.Now())
	}
}

func (cn *conn) writeErr() error {
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	return cn.werr
}

// byteBudget is a counting semaphore of bytes.
type byteBudget struct {
	mu    sync.Mutex
	cond  sync.Cond
	avail int64
}

func newByteBudget(n int64) *byteBudget {
	b := &byteBudget{avail: n}
	b.cond.L = &b.mu
	return b
}

// acquire waits until n bytes are available and takes them; n must not
// exceed the budget.
func (b *byteBudget) acquire(n int64) {
	b.mu.Lock()
	for b.avail < n {
		b.cond.Wait()
	}
	b.avail -= n
	b.mu.Unlock()
}

func (b *byteBudget) release(n int64) {
	b.mu.Lock()
	b.avail += n
	b.mu.Unlock()
	b.cond.Broadcast()
}

// Buffers come from pools by power-of-two size class, from 4 KiB to the
// 32 MiB request limit: sequential reads of one size reuse theirs.
const (
	minBufferShift = 12
	maxBufferShift = 25
)

var bufferPools [maxBufferShift - minBufferShift + 1]sync.Pool

func bufferClass(n int) int {
	c := 0
	for (1 << (minBufferShift + c)) < n {
		c++
	}
	return c
}

func getBuffer(n int) []byte {
	c := bufferClass(n)
	if p, ok := bufferPools[c].Get().(*[]byte); ok {
		return (*p)[:n]
	}
	return make([]byte, n, 1<<(minBufferShift+c))
}

func putBuffer(b []byte) {
	c := bufferClass(cap(b))
	if cap(b) != 1<<(minBufferShift+c) {
		return
	}
	b = b[:cap(b)]
	bufferPools[c].Put(&b)
}
