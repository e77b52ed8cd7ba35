package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"
)

// QMP is a client of one QEMU Machine Protocol monitor (a unix socket of
// qemu-storage-daemon or qemu-system).
//
// It is safe for concurrent use: commands run one at a time under a mutex, in
// the order callers obtain it. Asynchronous events that arrive while a command
// waits for its answer are skipped. When a command's ctx ends before the
// answer arrives, or the connection fails, the client becomes unusable (the
// answer may still arrive and the stream can no longer be trusted): every
// later call returns ErrQMPClosed wrapped, and the owner dials again. QMP has
// no transactions across commands and the client never retries: a command
// whose answer was lost may or may not have taken effect.
type QMP struct {
	mu     sync.Mutex
	conn   net.Conn
	rd     *bufio.Reader
	nextID int
	broken error

	// Version is QEMU's version from the greeting, e.g. "7.2.22".
	Version string
}

// ErrQMPClosed is returned by a client that was closed or broke.
var ErrQMPClosed = errors.New("qmp connection closed")

// QMPError is an error answered by QEMU to a command.
type QMPError struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *QMPError) Error() string { return e.Desc }

// DialQMP connects to the monitor socket, reads the greeting and negotiates
// capabilities (qmp_capabilities). ctx bounds the whole handshake.
func DialQMP(ctx context.Context, socketPath string) (*QMP, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socketPath)
	if err != nil {
		return nil, fmt.Errorf("qmp: %w", err)
	}
	q := &QMP{conn: conn, rd: bufio.NewReaderSize(conn, 64<<10)}
	stop := q.watch(ctx)
	var greeting struct {
		QMP *struct {
			Version struct {
				QEMU struct {
					Major int `json:"major"`
					Minor int `json:"minor"`
					Micro int `json:"micro"`
				} `json:"qemu"`
			} `json:"version"`
		} `json:"QMP"`
	}
	line, err := q.rd.ReadBytes('\n')
	if err == nil {
		err = json.Unmarshal(line, &greeting)
	}
	stop()
	if err == nil && greeting.QMP == nil {
		err = fmt.Errorf("unexpected greeting %q", line)
	}
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("qmp greeting: %w", ctxError(ctx, err))
	}
	v := greeting.QMP.Version.QEMU
	q.Version = fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Micro)
	if err := q.Execute(ctx, "qmp_capabilities", nil, nil); err != nil {
		_ = q.Close()
		return nil, err
	}
	return q, nil
}

// watch makes blocked reads and writes fail when ctx ends; the returned
// function stops watching and clears the deadline.
func (q *QMP) watch(ctx context.Context) func() {
	if dl, ok := ctx.Deadline(); ok {
		_ = q.conn.SetDeadline(dl)
	}
	stopAfter := context.AfterFunc(ctx, func() { _ = q.conn.SetDeadline(time.Unix(1, 0)) })
	return func() {
		stopAfter()
		_ = q.conn.SetDeadline(time.Time{})
	}
}

// Execute runs one command. args (may be nil) is marshalled as the command's
// arguments; the "return" value is unmarshalled into result when result is not
// nil. A QEMU error comes back as a *QMPError wrapped with the command name.
func (q *QMP) Execute(ctx context.Context, command string, args any, result any) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.broken != nil {
		return fmt.Errorf("qmp %s: %w", command, q.broken)
	}
	q.nextID++
	id := "cairn-" + strconv.Itoa(q.nextID)
	msg := map[string]any{"execute": command, "id": id}
	if args != nil {
		msg["arguments"] = args
	}
	data, err := json.Marshal(msg)
	if err != nil {
		return fmt.Errorf("qmp %s: encoding arguments: %w", command, err)
	}
	stop := q.watch(ctx)
	defer stop()
	fail := func(err error) error {
		err = ctxError(ctx, err)
		q.broken = fmt.Errorf("%w (after %v)", ErrQMPClosed, err)
		_ = q.conn.Close()
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	if _, err := q.conn.Write(append(data, '\n')); err != nil {
		return fail(err)
	}
	for {
		line, err := q.rd.ReadBytes('\n')
		if err != nil {
			return fail(err)
		}
		var resp struct {
			Event  string          `json:"event"`
			ID     json.RawMessage `json:"id"`
			Return json.RawMessage `json:"return"`
			Error  *QMPError       `json:"error"`
		}
		if err := json.Unmarshal(line, &resp); err != nil {
			return fail(fmt.Errorf("decoding %q: %w", line, err))
		}
		if resp.Event != "" {
			continue
		}
		var gotID string
		if json.Unmarshal(resp.ID, &gotID) != nil || gotID != id {
			continue // not ours (cannot happen while the stream is trusted)
		}
		if resp.Error != nil {
			return fmt.Errorf("qmp %s: %w", command, resp.Error)
		}
		if result != nil && len(resp.Return) > 0 {
			if err := json.Unmarshal(resp.Return, result); err != nil {
				return fmt.Errorf("qmp %s: decoding the answer: %w", command, err)
			}
		}
		return nil
	}
}

// Close closes the connection. It does not wait for a running command, which
// fails.
func (q *QMP) Close() error {
	err := q.conn.Close()
	q.mu.Lock()
	if q.broken == nil {
		q.broken = ErrQMPClosed
	}
	q.mu.Unlock()
	return err
}

// ctxError turns an I/O error caused by ctx's deadline into ctx's error. The
// connection deadline is only ever set from ctx, so a timeout means ctx has
// ended or is about to (its timer may fire a moment after the socket's).
func ctxError(ctx context.Context, err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		<-ctx.Done()
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}
