// Package nbd is a Network Block Device server, written from the protocol
// description (NetworkBlockDevice/nbd, doc/proto.md). `cairn backup export`
// uses it to serve a backup straight out of the repository, read-only, to
// qemu-img, qemu-io, nbdinfo, nbdcopy or QEMU itself.
//
// A Server maps export names to Exports (a size and ReadAt; optional
// interfaces add extents, writes, trim and zeroing) and serves them with
// Serve (a listener) or ServeConn (one connection).
//
// The package also has a read-only Client (Dial, ReadAt, Extents): backups
// read volume files that cairn's qcow2 reader refuses through qemu-nbd
// with it.
//
// # What it speaks
//
// Handshake: fixed newstyle only (never oldstyle); the client flags
// NBD_FLAG_C_FIXED_NEWSTYLE and NBD_FLAG_C_NO_ZEROES, anything else closes
// the connection. A client that does not set the fixed newstyle flag is
// still answered as fixed newstyle (the protocol allows it), except when TLS
// is required, which needs fixed newstyle.
//
// Options: EXPORT_NAME, ABORT, LIST, STARTTLS, INFO and GO (INFO_EXPORT and
// INFO_BLOCK_SIZE always, minimum 1, preferred 4096, maximum 32 MiB;
// INFO_NAME and INFO_DESCRIPTION when asked), STRUCTURED_REPLY,
// LIST_META_CONTEXT and SET_META_CONTEXT with the one context
// "base:allocation" ("base:" lists it; an empty list lists everything).
// Others answer NBD_REP_ERR_UNSUP, so clients that try extended headers fall
// back. With Server.TLSConfig set every option but STARTTLS and ABORT
// answers NBD_REP_ERR_TLS_REQD until TLS runs. Option data over 64 KiB gets
// NBD_REP_ERR_TOO_BIG (or NBD_REP_ERR_TLS_REQD before a required STARTTLS)
// and the connection closes: no option buffer is sized by a client beyond
// that.
//
// Commands: READ (simple replies, or structured ones with OFFSET_HOLE chunks
// for ranges the export reports as holes or zeros, one OFFSET_DATA chunk
// with NBD_CMD_FLAG_DF), WRITE, FLUSH, TRIM, WRITE_ZEROES (NO_HOLE is passed
// on as mayTrim=false), CACHE (accepted, does nothing), BLOCK_STATUS
// (base:allocation, REQ_ONE) and DISC. The transmission flags advertise
// what the export implements: READ_ONLY and CAN_MULTI_CONN unless writable;
// FLUSH, FUA and WRITE_ZEROES when writable, TRIM with a Trimmer; DF with
// structured replies; CACHE always.
//
// Errors: writes, trims and zeroing of a read-only export get EPERM; a range
// past the end gets EINVAL, or ENOSPC for writes and zeroing; a read or
// write over 32 MiB gets EINVAL (EOVERFLOW for a read with DF); unknown
// commands and flags get EINVAL; an export's error gets EIO (ENOSPC, EDQUOT
// and EFBIG become ENOSPC, permission errors EPERM) and goes to Logf, not to
// the client. A request with a bad magic closes the connection. With
// structured replies, errors are error chunks with a message.
//
// # Concurrency and limits
//
// Each connection reads requests in one goroutine and handles each in its
// own, up to 16 at once and 64 MiB of buffers; the reader waits when either
// is used up, which holds the client back through TCP. Write payloads are
// read in 1 MiB pieces, so memory follows the bytes that arrived, not the
// length a request claims; refused writes are skipped without buffering.
// MaxConns bounds the connections, and so the total. Each reply is
// written whole, under a mutex, so replies to different requests never mix
// bytes; a read is done before its reply starts, so an export error never
// cuts a reply short. Replies go out in the order requests finish, which
// NBD allows.
package nbd
