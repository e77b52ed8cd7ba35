package repo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cairn-backup/cairn/internal/blob"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/repo/format"
)

// Lock is a held repository lock. Release it when done.
type Lock struct {
	r      *Repository
	name   string
	lock   format.Lock
	stop   chan struct{}
	done   sync.WaitGroup
	once   sync.Once
	relErr error
}

// lockSettle is how long a new lock object is left before the others are
// listed, so that two processes locking at once see each other's in a
// store that lists eventually. A store that lists consistently needs no
// wait: of two processes that each save their lock and then list, the one
// that lists second sees the other's.
var lockSettle = 50 * time.Millisecond

// Lock takes a shared (backup, forget) or exclusive (prune) lock. A
// conflicting live lock makes it wait up to Options.LockWait and then fail
// with a core.KindConflict error naming the holder. Stale locks (not
// refreshed for format.StaleLockAge, or of a dead process on this host) are
// ignored. The lock is refreshed in the background until Release.
func (r *Repository) Lock(ctx context.Context, exclusive bool, command string) (*Lock, error) {
	deadline := time.Now().Add(r.opts.LockWait)
	delay := 100 * time.Millisecond
	for {
		l, holder, err := r.tryLock(ctx, exclusive, command)
		if err != nil || l != nil {
			return l, err
		}
		if time.Now().After(deadline) {
			what := "shared"
			if holder.Exclusive {
				what = "exclusive"
			}
			return nil, core.Conflict("locked",
				"the repository is locked: %s lock of %q by pid %d on %s since %s (wait with --lock-wait, or remove a stale lock with `cairn repo unlock`)",
				what, holder.Command, holder.PID, holder.Host, holder.Time.Local().Format(time.RFC3339))
		}
		t := time.NewTimer(delay + rand.N(delay))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		delay = min(2*delay, 5*time.Second)
	}
}

func (r *Repository) tryLock(ctx context.Context, exclusive bool, command string) (*Lock, *format.Lock, error) {
	now := time.Now().UTC()
	l := &Lock{r: r, name: format.LockPrefix + randomHex(16), stop: make(chan struct{}),
		lock: format.Lock{Version: format.Version, Exclusive: exclusive, Host: hostname(), PID: os.Getpid(), Command: command, Time: now, Refreshed: now}}
	if err := r.writeLock(ctx, l.name, &l.lock); err != nil {
		return nil, nil, err
	}
	if !blob.ListsConsistently(r.store) {
		time.Sleep(lockSettle)
	}
	locks, err := r.Locks(ctx)
	if err != nil {
		_ = r.store.Remove(context.WithoutCancel(ctx), l.name)
		return nil, nil, err
	}
	for _, other := range locks {
		if other.Name == l.name || other.Stale {
			continue
		}
		if exclusive || other.Exclusive {
			_ = r.store.Remove(context.WithoutCancel(ctx), l.name)
			return nil, &other.Lock, nil
		}
	}
	l.done.Add(1)
	go l.refresh()
	return l, nil, nil
}

func (r *Repository) writeLock(ctx context.Context, name string, l *format.Lock) error {
	b, err := json.Marshal(l)
	if err != nil {
		return err
	}
	if err := r.saveObject(ctx, name, b, format.LockAD); err != nil {
		return fmt.Errorf("saving lock: %w", err)
	}
	return nil
}

func (l *Lock) refresh() {
	defer l.done.Done()
	t := time.NewTicker(format.StaleLockAge / 6)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.lock.Refreshed = time.Now().UTC()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			_ = l.r.writeLock(ctx, l.name, &l.lock)
			cancel()
		}
	}
}

// Release removes the lock object. It is idempotent.
func (l *Lock) Release() error {
	if l == nil {
		return nil
	}
	l.once.Do(func() {
		close(l.stop)
		l.done.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		l.relErr = l.r.store.Remove(ctx, l.name)
	})
	return l.relErr
}

// LockInfo is a lock object as found in the repository.
type LockInfo struct {
	Name string
	format.Lock
	Stale bool
}

// Locks lists the lock objects. One that cannot be read is reported as
// stale if it is older than format.StaleLockAge (it is then garbage) and
// otherwise makes Locks fail.
func (r *Repository) Locks(ctx context.Context) ([]LockInfo, error) {
	names, err := listNames(ctx, r.store, format.LockPrefix)
	if err != nil {
		return nil, fmt.Errorf("listing locks: %w", err)
	}
	var out []LockInfo
	for _, name := range names {
		b, err := r.loadObject(ctx, name, format.LockAD, 1<<16)
		if core.IsNotFound(err) {
			continue // released meanwhile
		}
		if err != nil {
			out = append(out, LockInfo{Name: name, Stale: true, Lock: format.Lock{Command: "unreadable: " + err.Error()}})
			continue
		}
		lk, err := format.DecodeLock(b)
		if err != nil {
			out = append(out, LockInfo{Name: name, Stale: true, Lock: format.Lock{Command: "unreadable: " + err.Error()}})
			continue
		}
		out = append(out, LockInfo{Name: name, Lock: *lk, Stale: lockStale(lk)})
	}
	return out, nil
}

func lockStale(l *format.Lock) bool {
	if time.Since(l.Refreshed) > format.StaleLockAge {
		return true
	}
	if l.Host == hostname() && l.PID > 0 {
		err := syscall.Kill(l.PID, 0)
		return errors.Is(err, syscall.ESRCH)
	}
	return false
}

// Unlock removes stale locks, or every lock with all.
func (r *Repository) Unlock(ctx context.Context, all bool) (removed []string, err error) {
	locks, err := r.Locks(ctx)
	if err != nil {
		return nil, err
	}
	for _, l := range locks {
		if l.Stale || all {
			if err := r.store.Remove(ctx, l.Name); err != nil {
				return removed, err
			}
			removed = append(removed, strings.TrimPrefix(l.Name, format.LockPrefix))
		}
	}
	return removed, nil
}
