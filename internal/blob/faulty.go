package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
)

// Op names a Store operation (for fault selection and retry notices). Ops
// combine with | into a set.
type Op int

// The operations.
const (
	OpSave Op = 1 << iota
	OpLoad
	OpStat
	OpRemove
	OpList
)

func (o Op) String() string {
	var parts []string
	for _, x := range []struct {
		op   Op
		name string
	}{{OpSave, "save"}, {OpLoad, "load"}, {OpStat, "stat"}, {OpRemove, "remove"}, {OpList, "list"}} {
		if o&x.op != 0 {
			parts = append(parts, x.name)
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, "|")
}

// ErrInjected is in the chain of the errors Faulty injects by default (they
// are also marked Transient).
var ErrInjected = errors.New("injected fault")

// Faulty wraps a Store and makes chosen calls fail, before the operation
// (nothing happened) or after it (it took effect, yet the caller sees an
// error: the case a retry or a crash-safe protocol must survive). Tests use it
// to prove that Retry hides transient faults and that the repository never
// trusts a call that reported failure.
//
// A call is selected when its operation is in Ops (all when 0) and Match (when
// set) accepts its name (List: its prefix); every FailEvery-th selected call
// fails (1: all of them; 0: none, leaving the hooks alone). A failure "after"
// means: Save and Remove took effect; a Load reader delivers the first half
// of its bytes (rounded up), then fails; List reports its first object, then
// fails; Stat is performed, then fails.
//
// Before and After hooks, when set, see every call: an error from Before
// fails the call without performing it; an error from After fails it after it
// took effect (as above). Use them for "the third save of index/...", or to
// kill a process at a chosen point.
//
// The fields must be set before the first call; the methods may then be
// called concurrently.
type Faulty struct {
	Store     Store
	Ops       Op
	Match     func(name string) bool
	FailEvery int
	FailAfter bool  // selected failures happen after the operation
	Err       error // the error injected; nil means a transient ErrInjected

	Before func(op Op, name string) error
	After  func(op Op, name string) error

	mu       sync.Mutex
	selected int
	injected int
}

var _ Store = (*Faulty)(nil)

// Injected returns how many faults were injected so far (hooks included).
func (f *Faulty) Injected() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.injected
}

// plan decides the fate of one call: an error before, an error after, or none.
func (f *Faulty) plan(op Op, name string) (before, after error) {
	if f.Before != nil {
		if err := f.Before(op, name); err != nil {
			f.count()
			return err, nil
		}
	}
	if f.FailEvery > 0 && (f.Ops == 0 || f.Ops&op != 0) && (f.Match == nil || f.Match(name)) {
		f.mu.Lock()
		f.selected++
		fail := f.selected%f.FailEvery == 0
		f.mu.Unlock()
		if fail {
			err := f.Err
			if err == nil {
				when := "before"
				if f.FailAfter {
					when = "after"
				}
				err = Transient(fmt.Errorf("%s %s: %w (%s the operation)", op, name, ErrInjected, when))
			}
			f.count()
			if f.FailAfter {
				return nil, err
			}
			return err, nil
		}
	}
	return nil, nil
}

func (f *Faulty) count() {
	f.mu.Lock()
	f.injected++
	f.mu.Unlock()
}

// afterHook runs the After hook for a call that went through.
func (f *Faulty) afterHook(op Op, name string, planned error) error {
	if planned != nil {
		return planned
	}
	if f.After != nil {
		if err := f.After(op, name); err != nil {
			f.count()
			return err
		}
	}
	return nil
}

// Save implements Store.
func (f *Faulty) Save(ctx context.Context, name string, r io.Reader, size int64) error {
	before, after := f.plan(OpSave, name)
	if before != nil {
		return before
	}
	if err := f.Store.Save(ctx, name, r, size); err != nil {
		return err
	}
	return f.afterHook(OpSave, name, after)
}

// Load implements Store.
func (f *Faulty) Load(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	before, after := f.plan(OpLoad, name)
	if before != nil {
		return nil, before
	}
	rc, err := f.Store.Load(ctx, name, offset, length)
	if err != nil {
		return nil, err
	}
	if err := f.afterHook(OpLoad, name, after); err != nil {
		// Deliver half the range, then fail: a connection lost mid-stream.
		n := length
		if n == 0 {
			info, serr := f.Store.Stat(ctx, name)
			if serr != nil {
				_ = rc.Close()
				return nil, serr
			}
			n = info.Size - offset
		}
		return &failingReader{rc: rc, left: (n + 1) / 2, err: err}, nil
	}
	return rc, nil
}

type failingReader struct {
	rc   io.ReadCloser
	left int64
	err  error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, r.err
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.rc.Read(p)
	r.left -= int64(n)
	if err == io.EOF {
		err = r.err // an empty range fails too
	}
	return n, err
}

func (r *failingReader) Close() error { return r.rc.Close() }

// Stat implements Store.
func (f *Faulty) Stat(ctx context.Context, name string) (Info, error) {
	before, after := f.plan(OpStat, name)
	if before != nil {
		return Info{}, before
	}
	info, err := f.Store.Stat(ctx, name)
	if err != nil {
		return Info{}, err
	}
	if err := f.afterHook(OpStat, name, after); err != nil {
		return Info{}, err
	}
	return info, nil
}

// Remove implements Store.
func (f *Faulty) Remove(ctx context.Context, name string) error {
	before, after := f.plan(OpRemove, name)
	if before != nil {
		return before
	}
	if err := f.Store.Remove(ctx, name); err != nil {
		return err
	}
	return f.afterHook(OpRemove, name, after)
}

// List implements Store.
func (f *Faulty) List(ctx context.Context, prefix string, fn func(Info) error) error {
	before, after := f.plan(OpList, prefix)
	if before != nil {
		return before
	}
	if after == nil && f.After == nil {
		return f.Store.List(ctx, prefix, fn)
	}
	var afterErr error
	reported := 0
	err := f.Store.List(ctx, prefix, func(info Info) error {
		if err := fn(info); err != nil {
			return err
		}
		reported++
		if reported == 1 {
			if afterErr = f.afterHook(OpList, prefix, after); afterErr != nil {
				return afterErr
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if reported == 0 {
		return f.afterHook(OpList, prefix, after)
	}
	return nil
}

// Close implements Store.
func (f *Faulty) Close() error { return f.Store.Close() }
