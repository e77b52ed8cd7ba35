package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"time"
)

// RetryPolicy says how Retry waits between attempts: the n-th retry waits a
// random duration between half and all of min(Initial * 2^(n-1), Max)
// (exponential backoff with jitter, so that many clients slowed down by one
// server do not come back in step).
type RetryPolicy struct {
	Attempts int           // tries in all, the first included; 0 means 8
	Initial  time.Duration // wait before the first retry; 0 means 200 ms
	Max      time.Duration // longest wait; 0 means 15 s

	// Notify, when set, is called before each wait (for logs and progress
	// events). It must not block.
	Notify func(op Op, name string, err error, wait time.Duration)
}

// DefaultRetryPolicy suits object stores: 8 tries, waiting 13 to 25 s in all.
var DefaultRetryPolicy = RetryPolicy{Attempts: 8, Initial: 200 * time.Millisecond, Max: 15 * time.Second}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.Attempts <= 0 {
		p.Attempts = DefaultRetryPolicy.Attempts
	}
	if p.Initial <= 0 {
		p.Initial = DefaultRetryPolicy.Initial
	}
	if p.Max <= 0 {
		p.Max = DefaultRetryPolicy.Max
	}
	if p.Max < p.Initial {
		p.Max = p.Initial
	}
	return p
}

// wait returns the pause before retry number n (1 for the first retry).
func (p RetryPolicy) wait(n int) time.Duration {
	d := p.Initial
	for i := 1; i < n && d < p.Max; i++ {
		d *= 2
	}
	d = min(d, p.Max)
	half := d / 2
	return half + rand.N(d-half+1)
}

// Retry wraps s so that calls failing with a transient error (IsTransient)
// are tried again with backoff, up to the policy's attempts; other errors
// (a missing object, refused credentials, bad names, a full disk) and
// cancellation return at once. Every Store operation is idempotent, so a
// retry after a failure that did take effect is harmless.
//
// Special cases:
//   - Save can only re-send its data when r is an io.Seeker (bytes.Reader,
//     *os.File, ...): it seeks back to where r was. A non-seekable reader
//     gets one attempt, or more while none of its bytes were consumed.
//   - A reader from Load that fails transiently in the middle is resumed:
//     Retry loads the rest of the range from where it stopped.
//   - List retried after a failure in the middle skips the objects it
//     already reported, so fn still sees each object once. An error that fn
//     returns is never retried.
//
// The wrapper adds no locking: it is as concurrent as s.
func Retry(s Store, p RetryPolicy) Store {
	return &retryStore{s: s, p: p.withDefaults()}
}

type retryStore struct {
	s Store
	p RetryPolicy
}

// do runs f until it succeeds, fails with an error that retryable refuses
// (IsTransient when nil), or attempts run out.
func (r *retryStore) do(ctx context.Context, op Op, name string, f func() error, retryable func(error) bool) error {
	if retryable == nil {
		retryable = IsTransient
	}
	for attempt := 1; ; attempt++ {
		err := f()
		if err == nil {
			return nil
		}
		if cerr := ctx.Err(); cerr != nil {
			return withCause(op, name, cerr, err)
		}
		if !retryable(err) {
			return err
		}
		if attempt >= r.p.Attempts {
			return fmt.Errorf("%s %s: giving up after %d attempts: %w", op, name, attempt, err)
		}
		if err := r.sleep(ctx, op, name, err, attempt); err != nil {
			return err
		}
	}
}

func (r *retryStore) sleep(ctx context.Context, op Op, name string, cause error, retry int) error {
	d := r.p.wait(retry)
	if r.p.Notify != nil {
		r.p.Notify(op, name, cause, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return withCause(op, name, ctx.Err(), cause)
	case <-t.C:
		return nil
	}
}

// withCause returns err when it already says the context ended, and
// otherwise an error wrapping both the context's error and err, so that
// errors.Is(result, context.Canceled) holds whatever the last failure was.
func withCause(op Op, name string, ctxErr, err error) error {
	if errors.Is(err, ctxErr) {
		return err
	}
	return fmt.Errorf("%s %s: %w (after: %w)", op, name, ctxErr, err)
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (r *retryStore) Save(ctx context.Context, name string, rd io.Reader, size int64) error {
	seeker, _ := rd.(io.Seeker)
	var start int64
	if seeker != nil {
		pos, err := seeker.Seek(0, io.SeekCurrent)
		if err != nil {
			seeker = nil // not really seekable (a pipe behind an *os.File)
		} else {
			start = pos
		}
	}
	var consumed int64 // by the last attempt
	first := true
	err := r.do(ctx, OpSave, name, func() error {
		if !first && seeker != nil {
			if _, err := seeker.Seek(start, io.SeekStart); err != nil {
				return fmt.Errorf("saving blob %s: rewinding its data for a retry: %w", name, err)
			}
		}
		first = false
		cr := &countingReader{r: rd}
		err := r.s.Save(ctx, name, cr, size)
		consumed = cr.n
		return err
	}, func(err error) bool {
		return IsTransient(err) && (seeker != nil || consumed == 0)
	})
	if err != nil && seeker == nil && consumed > 0 && IsTransient(err) {
		return fmt.Errorf("%w (not retried: the data's reader cannot rewind)", err)
	}
	return err
}

func (r *retryStore) Load(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	var rc io.ReadCloser
	err := r.do(ctx, OpLoad, name, func() error {
		var err error
		rc, err = r.s.Load(ctx, name, offset, length)
		return err
	}, nil)
	if err != nil {
		return nil, err
	}
	return &resumingReader{r: r, ctx: ctx, name: name, offset: offset, length: length, rc: rc}, nil
}

// resumingReader reopens the range where it stopped after a transient read
// error.
type resumingReader struct {
	r      *retryStore
	ctx    context.Context
	name   string
	offset int64 // of the next byte to deliver
	length int64 // bytes left to deliver; 0 means "to the end"
	rc     io.ReadCloser
	fails  int // consecutive failures without progress
}

func (rr *resumingReader) Read(p []byte) (int, error) {
	for {
		if rr.rc == nil {
			// Reopen where we stopped. With length 0 ("to the end") the
			// end may be exactly here: Load then gives an empty reader.
			rc, err := rr.r.s.Load(rr.ctx, rr.name, rr.offset, rr.length)
			if err != nil {
				if e := rr.failed(err); e != nil {
					return 0, e
				}
				continue
			}
			rr.rc = rc
		}
		n, err := rr.rc.Read(p)
		if n > 0 {
			rr.fails = 0
			rr.offset += int64(n)
			if rr.length > 0 {
				rr.length -= int64(n)
				if rr.length == 0 && err == nil {
					err = io.EOF // the range is complete
				}
			}
		}
		if err == nil || err == io.EOF {
			return n, err
		}
		if cerr := rr.ctx.Err(); cerr != nil {
			return n, withCause(OpLoad, rr.name, cerr, err)
		}
		if !IsTransient(err) {
			return n, err
		}
		// A transient failure mid-stream: drop this reader and resume.
		_ = rr.rc.Close()
		rr.rc = nil
		if n > 0 {
			return n, nil // deliver what arrived; the next Read resumes
		}
		if e := rr.failed(err); e != nil {
			return 0, e
		}
	}
}

// failed counts a failure without progress and waits, or gives up.
func (rr *resumingReader) failed(err error) error {
	if cerr := rr.ctx.Err(); cerr != nil {
		return withCause(OpLoad, rr.name, cerr, err)
	}
	if !IsTransient(err) {
		return err
	}
	rr.fails++
	if rr.fails >= rr.r.p.Attempts {
		return fmt.Errorf("%s %s: giving up after %d attempts: %w", OpLoad, rr.name, rr.fails, err)
	}
	return rr.r.sleep(rr.ctx, OpLoad, rr.name, err, rr.fails)
}

func (rr *resumingReader) Close() error {
	if rr.rc == nil {
		return nil
	}
	err := rr.rc.Close()
	rr.rc = nil
	return err
}

func (r *retryStore) Stat(ctx context.Context, name string) (Info, error) {
	var info Info
	err := r.do(ctx, OpStat, name, func() error {
		var err error
		info, err = r.s.Stat(ctx, name)
		return err
	}, nil)
	return info, err
}

func (r *retryStore) Remove(ctx context.Context, name string) error {
	return r.do(ctx, OpRemove, name, func() error { return r.s.Remove(ctx, name) }, nil)
}

// fnError carries an error returned by List's callback through the backend,
// so that it is told apart from the backend's own failures.
type fnError struct{ err error }

func (e *fnError) Error() string { return e.err.Error() }

// List remembers the names it reported (the memory of one listing's names)
// so that a retry after a failure in the middle reports each object once.
func (r *retryStore) List(ctx context.Context, prefix string, fn func(Info) error) error {
	seen := map[string]struct{}{}
	err := r.do(ctx, OpList, prefix, func() error {
		return r.s.List(ctx, prefix, func(info Info) error {
			if _, dup := seen[info.Name]; dup {
				return nil
			}
			seen[info.Name] = struct{}{}
			if err := fn(info); err != nil {
				return &fnError{err: err}
			}
			return nil
		})
	}, nil)
	var fe *fnError
	if errors.As(err, &fe) {
		return fe.err
	}
	return err
}

func (r *retryStore) Close() error { return r.s.Close() }
