package qemu

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"

	"github.com/cairn-backup/cairn/internal/core"
)

// ConvertRequest describes one qemu-img convert.
type ConvertRequest struct {
	Source       string
	SourceFormat string // "" lets qemu-img probe the format
	// SourceSnapshot, when set, reads that internal snapshot (by tag) of the
	// source instead of its active layer.
	SourceSnapshot string
	// SourceShared reads an image another QEMU process holds (for example a
	// qemu-storage-daemon serving the volume): the source is opened with force
	// share (-U). Reading a snapshot this way is exact, because a snapshot's
	// tables and data are on disk and final once it exists; the active layer
	// may be stale (the holder caches metadata), so avoid it.
	SourceShared bool
	Dest         string
	DestFormat   string // "qcow2" (64 KiB clusters; the default) or "raw"
	// Existing writes into Dest's active layer, which exists and is at least
	// as large as the source (qemu-img convert -n): its snapshots stay.
	Existing bool
}

// Convert copies an image with qemu-img convert. The output is sparse (zero
// ranges are not written). progress, when not nil, is called from another
// goroutine with the bytes of the virtual size done so far and the total; it
// must not block for long.
//
// Dest must not exist (core.Conflict "exists"): Convert owns it, and on any
// failure, including a cancelled ctx (which kills qemu-img), it removes the
// partial destination. With Existing, Dest is an image to write into, which
// is never removed. Success means qemu-img finished and flushed the file.
func Convert(ctx context.Context, req ConvertRequest, progress func(done, total int64)) (err error) {
	destFormat := req.DestFormat
	if destFormat == "" {
		destFormat = "qcow2"
	}
	if destFormat != "qcow2" && destFormat != "raw" {
		return core.Invalid("convert: destination format %q is not qcow2 or raw", destFormat)
	}
	if req.SourceSnapshot != "" {
		if err := checkTag(req.SourceSnapshot); err != nil {
			return err
		}
	}
	if req.Existing {
		if req.SourceSnapshot != "" {
			return core.Invalid("convert: writing into an existing image takes a whole source, not a snapshot")
		}
		if _, err := os.Stat(req.Dest); err != nil {
			return fmt.Errorf("convert: %w", err)
		}
	} else {
		// Claim the destination atomically, as Create does; a failed
		// conversion removes it again (never an existing image).
		var f *os.File
		f, err = os.OpenFile(req.Dest, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600) // err: the result, which the cleanup checks
		if errors.Is(err, os.ErrExist) {
			return core.Conflict("exists", "convert: destination %s already exists", req.Dest)
		}
		if err != nil {
			return fmt.Errorf("convert: %w", err)
		}
		_ = f.Close()
		defer func() {
			if err != nil {
				_ = os.Remove(req.Dest)
			}
		}()
	}

	// The total for progress is the virtual size of what is read. A snapshot
	// may have another size than the image now has, and QEMU 7.2 reads a
	// snapshot (-l) as if it had the image's CURRENT size: zeros past the
	// snapshot's end when the image grew since, and a cut-off tail when the
	// image is now smaller (after applying an older, smaller snapshot). The
	// first is fixed below by shrinking the output; the second cannot be read
	// correctly with qemu-img and is refused.
	var total, snapshotSize int64
	if progress != nil || req.SourceSnapshot != "" {
		info, err := Info(ctx, req.Source, req.SourceShared)
		if err != nil {
			return err
		}
		total = info.VirtualSize
		if req.SourceSnapshot != "" {
			s := info.Snapshot(req.SourceSnapshot)
			if s == nil {
				return core.NotFound("convert: %s has no snapshot %q", req.Source, req.SourceSnapshot)
			}
			if s.VirtualSize > info.VirtualSize {
				return core.Conflict("snapshot_larger_than_image",
					"convert: snapshot %s of %s is %d bytes, larger than the image's current %d bytes, and QEMU reads a snapshot only up to the current size; grow the volume to at least the snapshot's size first",
					req.SourceSnapshot, req.Source, s.VirtualSize, info.VirtualSize)
			}
			if s.VirtualSize > 0 {
				snapshotSize, total = s.VirtualSize, s.VirtualSize
			}
		}
	}

	// -t writeback: qemu-img flushes the destination to disk when it closes it
	// (the "unsafe" mode would skip that).
	args := []string{"convert", "-p", "-t", "writeback"}
	if req.Existing {
		args = append(args, "-n")
	}
	if req.SourceShared {
		args = append(args, "-U")
	}
	if req.SourceFormat != "" {
		args = append(args, "-f", req.SourceFormat)
	}
	if req.SourceSnapshot != "" {
		// snapshot.name= selects by name only, never by id.
		args = append(args, "-l", "snapshot.name="+req.SourceSnapshot)
	}
	args = append(args, "-O", destFormat)
	if destFormat == "qcow2" && !req.Existing {
		args = append(args, "-o", "cluster_size="+strconv.Itoa(ClusterSize))
	}
	args = append(args, "--", req.Source, req.Dest)

	const op = "qemu-img convert"
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "qemu-img", args...)
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if err := startChild(cmd, false); err != nil {
		return &ToolError{Op: op, ExitCode: -1, Err: err}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		readProgress(stdout, func(pct float64) {
			if progress != nil {
				progress(int64(pct/100*float64(total)), total)
			}
		})
	}()
	wg.Wait() // the pipe must be drained before Wait closes it
	werr := cmd.Wait()
	if werr == nil {
		return fitSize(ctx, req.Dest, destFormat, snapshotSize)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%s: %w", op, ctx.Err())
	}
	code := -1
	var exitErr *exec.ExitError
	if errors.As(werr, &exitErr) {
		code = exitErr.ExitCode()
	}
	return classify(&ToolError{Op: op, Stderr: cleanStderr("qemu-img", stderr.Bytes()), ExitCode: code, Err: werr})
}

// readProgress parses qemu-img -p output: "    (12.34/100%)" records ended by
// carriage returns (or newlines), and calls report with each percentage.
func readProgress(r io.Reader, report func(pct float64)) {
	sc := bufio.NewScanner(r)
	sc.Split(func(data []byte, atEOF bool) (int, []byte, error) {
		if i := bytes.IndexAny(data, "\r\n"); i >= 0 {
			return i + 1, data[:i], nil
		}
		if atEOF && len(data) > 0 {
			return len(data), data, nil
		}
		return 0, nil, nil
	})
	for sc.Scan() {
		s := strings.TrimSpace(sc.Text())
		s = strings.TrimPrefix(s, "(")
		pct, _, ok := strings.Cut(s, "/100%)")
		if !ok {
			continue
		}
		if v, err := strconv.ParseFloat(pct, 64); err == nil {
			report(v)
		}
	}
	_, _ = io.Copy(io.Discard, r)
}

// fitSize shrinks a converted snapshot to the size the snapshot recorded
// (see Convert); size 0 means nothing to do. The bytes cut off read as zeros.
func fitSize(ctx context.Context, path, format string, size int64) error {
	if size == 0 {
		return nil
	}
	if format == "raw" {
		st, err := os.Stat(path)
		if err != nil {
			return fmt.Errorf("convert: %w", err)
		}
		if st.Size() > size {
			if err := os.Truncate(path, size); err != nil {
				return fmt.Errorf("convert: %w", err)
			}
		}
		return nil
	}
	info, err := Info(ctx, path, false)
	if err != nil {
		return err
	}
	if info.VirtualSize <= size {
		return nil
	}
	_, _, err = runTool(ctx, "qemu-img resize", nil, "qemu-img", "resize", "-q", "--shrink", "-f", format, "--", path, strconv.FormatInt(size, 10))
	return err
}
