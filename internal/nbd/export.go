package nbd

// Export is what a Server serves under one name: a range of Size bytes.
//
// The server calls ReadAt from many goroutines at once (one per request in
// flight, on every connection that chose the export), so ReadAt must be safe
// for concurrent use. Size must not change while the export is served; the
// server reads it once per connection and refuses an export whose size is
// negative. ReadAt follows io.ReaderAt: it fills p completely or returns an
// error; holes read as zeros. The server never asks for bytes past Size.
type Export interface {
	Size() int64
	ReadAt(p []byte, off int64) (int, error)
}

// ExtentReporter is an optional interface of an Export: it describes which
// parts are allocated and which read as zeros. It answers
// NBD_CMD_BLOCK_STATUS for the "base:allocation" metadata context, and lets
// structured reads send ranges that read as zeros as holes instead of data.
// An Export without it is reported as allocated data everywhere, which is
// always correct, merely less efficient.
type ExtentReporter interface {
	// Extents describes [off, off+length): consecutive extents starting at
	// off, covering the range, except that the list may stop early (the
	// server asks again, or reports only what it got). Extents past the end
	// of the range are ignored, and so is everything from the first extent
	// whose Length is not positive. Called concurrently, like ReadAt.
	Extents(off, length int64) ([]Extent, error)
}

// Extent is one run of an export with a single allocation status.
type Extent struct {
	Length int64
	// Hole: the range is not allocated (NBD_STATE_HOLE). By ReadAt's
	// contract a hole reads as zeros, so a structured read sends it as an
	// NBD_REPLY_TYPE_OFFSET_HOLE chunk without reading it. Report Zero
	// with it so that clients know it too: block status reports the two
	// flags exactly as given.
	Hole bool
	// Zero: the range reads as zeros (NBD_STATE_ZERO), allocated or not.
	Zero bool
}

// Writer is an optional interface of an Export that makes it writable
// (unless Server.ReadOnly is set). WriteAt follows io.WriterAt: it must not
// retain or modify p, and it may be called concurrently, also for
// overlapping ranges (NBD leaves their order to the server; clients that
// care do not send them). Flush makes every write that has returned durable;
// it backs NBD_CMD_FLUSH and the FUA flag.
type Writer interface {
	WriteAt(p []byte, off int64) (int, error)
	Flush() error
}

// Trimmer is an optional interface of a writable Export: Trim discards
// [off, off+length), which may then read as anything until written again.
// Without it the server still accepts trim requests and ignores them, as
// NBD allows, but does not advertise NBD_FLAG_SEND_TRIM.
type Trimmer interface {
	Trim(off, length int64) error
}

// ZeroWriter is an optional interface of a writable Export: WriteZeroes
// makes [off, off+length) read as zeros; mayTrim reports that it may do so
// by deallocating (false when the client sent NBD_CMD_FLAG_NO_HOLE). Without
// it the server writes zeros through WriteAt, in pieces of at most 256 KiB.
type ZeroWriter interface {
	WriteZeroes(off, length int64, mayTrim bool) error
}

// Describer is an optional interface of an Export: a line for people,
// sent as NBD_INFO_DESCRIPTION when a client asks for it (nbdinfo shows it).
type Describer interface {
	Description() string
}
