package nbd

import (
	"encoding/binary"
	"errors"
	"io/fs"
	"syscall"
)

// Wire values of the NBD protocol (NetworkBlockDevice/nbd doc/proto.md).
// Every number on the wire is big-endian.

const (
	magicInit       = 0x4e42444d41474943 // "NBDMAGIC", the server's first word
	magicOption     = 0x49484156454f5054 // "IHAVEOPT", newstyle greeting and every option
	magicOptReply   = 0x0003e889045565a9 // option replies
	magicRequest    = 0x25609513         // transmission requests
	magicSimple     = 0x67446698         // simple replies
	magicStructured = 0x668e33ef         // structured reply chunks
)

// Handshake flags (server) and client flags.
const (
	flagFixedNewstyle = 1 << 0
	flagNoZeroes      = 1 << 1

	clientFixedNewstyle = 1 << 0
	clientNoZeroes      = 1 << 1
	clientKnownFlags    = clientFixedNewstyle | clientNoZeroes
)

// Options.
const (
	optExportName      = 1
	optAbort           = 2
	optList            = 3
	optStartTLS        = 5
	optInfo            = 6
	optGo              = 7
	optStructuredReply = 8
	optListMetaContext = 9
	optSetMetaContext  = 10
)

// Option reply types; errors have bit 31 set.
const (
	repAck         = 1
	repServer      = 2
	repInfo        = 3
	repMetaContext = 4

	repErrUnsup   = 1<<31 + 1
	repErrPolicy  = 1<<31 + 2
	repErrInvalid = 1<<31 + 3
	repErrTLSReqd = 1<<31 + 5
	repErrUnknown = 1<<31 + 6
	repErrTooBig  = 1<<31 + 9
)

// Information types of NBD_OPT_INFO and NBD_OPT_GO.
const (
	infoExport      = 0
	infoName        = 1
	infoDescription = 2
	infoBlockSize   = 3
)

// Transmission flags.
const (
	tfHasFlags        = 1 << 0
	tfReadOnly        = 1 << 1
	tfSendFlush       = 1 << 2
	tfSendFUA         = 1 << 3
	tfSendTrim        = 1 << 5
	tfSendWriteZeroes = 1 << 6
	tfSendDF          = 1 << 7
	tfCanMultiConn    = 1 << 8
	tfSendCache       = 1 << 10
)

// Commands.
const (
	cmdRead        = 0
	cmdWrite       = 1
	cmdDisc        = 2
	cmdFlush       = 3
	cmdTrim        = 4
	cmdCache       = 5
	cmdWriteZeroes = 6
	cmdBlockStatus = 7
)

// Command flags.
const (
	cmdFlagFUA    = 1 << 0
	cmdFlagNoHole = 1 << 1
	cmdFlagDF     = 1 << 2
	cmdFlagReqOne = 1 << 3
)

// Structured reply flags and chunk types.
const (
	replyFlagDone = 1 << 0

	replyTypeNone        = 0
	replyTypeOffsetData  = 1
	replyTypeOffsetHole  = 2
	replyTypeBlockStatus = 5
	replyTypeError       = 1<<15 + 1
	replyTypeErrorOffset = 1<<15 + 2
)

// Error values of replies.
const (
	errPerm     = 1
	errIO       = 5
	errInval    = 22
	errNoSpace  = 28
	errOverflow = 75
)

// base:allocation status flags.
const (
	stateHole = 1 << 0
	stateZero = 1 << 1
)

const (
	contextAllocation   = "base:allocation"
	contextAllocationID = 1 // the ID NBD_OPT_SET_META_CONTEXT assigns it

	// maxOptionLength bounds the data of one option. The largest legitimate
	// option (NBD_OPT_GO or a meta context query, with 4096-byte strings) is
	// far smaller.
	maxOptionLength = 64 << 10
	// maxString is the protocol's limit for names and messages.
	maxString = 4096
	// maxRequest is the advertised maximum block size: the largest read or
	// write payload one request may carry.
	maxRequest        = 32 << 20
	preferredBlock    = 4096
	minimumBlock      = 1
	exportNameZeroPad = 124
)

var be = binary.BigEndian

// errnoFor maps an error from an Export to an NBD error value: the ones the
// protocol asks servers to pass on keep their meaning, everything else is
// EIO.
func errnoFor(err error) uint32 {
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT), errors.Is(err, syscall.EFBIG):
		return errNoSpace
	case errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.EROFS):
		return errPerm
	default:
		return errIO
	}
}
