package node

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/cairn-backup/cairn/internal/blob/location"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/repo"
)

// repoLockWait is how long a repository task waits for a conflicting lock
// (a prune waits for running backups, a backup for a running prune).
const repoLockWait = 30 * time.Minute

// openRepository opens the plan's repository with its password.
func (t *task) openRepository(ctx context.Context) (*repo.Repository, error) {
	nr := t.plan.Repository
	if nr == nil {
		return nil, core.Invalid("no repository in the plan")
	}
	store, err := location.Open(ctx, nr.URL, location.Options{AccessKey: nr.S3AccessKey, SecretKey: nr.S3SecretKey, Region: nr.S3Region})
	if err != nil {
		return nil, fmt.Errorf("opening repository %s: %w", nr.URL, err)
	}
	r, err := repo.Open(ctx, store, []byte(nr.Password), repo.Options{LockWait: repoLockWait, Keys: &t.w.keys, Segments: &t.w.segments, Indexes: &t.w.indexes})
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("repository %s: %w", nr.URL, err)
	}
	return r, nil
}

// lockedRepository opens the plan's repository under a lock (shared, or
// exclusive for a prune), with its index loaded when index is set; done
// releases the lock and closes the repository.
func (t *task) lockedRepository(ctx context.Context, exclusive bool, command string, index bool) (*repo.Repository, func(), error) {
	r, err := t.openRepository(ctx)
	if err != nil {
		return nil, nil, err
	}
	lock, err := r.Lock(ctx, exclusive, command)
	if err != nil {
		r.Close()
		return nil, nil, err
	}
	done := func() {
		lock.Release()
		r.Close()
	}
	if index {
		if err := r.LoadIndex(ctx); err != nil {
			done()
			return nil, nil, err
		}
	}
	return r, done, nil
}

// repositoryInit creates the repository (or checks the password of one
// being adopted) and reports whether a local one shares the volumes' disk.
func (t *task) repositoryInit(ctx context.Context) error {
	nr := t.plan.Repository
	if nr == nil {
		return core.Invalid("no repository in the plan")
	}
	kind, dir, err := location.Parse(nr.URL)
	if err != nil {
		return err
	}
	if nr.Adopt {
		r, err := t.openRepository(ctx)
		if err != nil {
			return err
		}
		r.Close()
	} else {
		store, err := location.Open(ctx, nr.URL, location.Options{AccessKey: nr.S3AccessKey, SecretKey: nr.S3SecretKey,
			Region: nr.S3Region, Create: true})
		if err != nil {
			return fmt.Errorf("creating repository %s: %w", nr.URL, err)
		}
		r, err := repo.Init(ctx, store, []byte(nr.Password), repo.InitOptions{}, repo.Options{})
		if err != nil {
			store.Close()
			if core.CodeOf(err) != "exists" {
				return fmt.Errorf("creating repository %s: %w", nr.URL, err)
			}
			// A retried task finds the repository it made: fine if the
			// password opens it.
			if r, err = t.openRepository(ctx); err != nil {
				return core.Conflict("exists", "a repository already exists at %s: adopt it with its password (--password-file)", nr.URL)
			}
		}
		r.Close()
	}
	if kind == location.Local {
		if same, err := sameFileSystem(dir, t.w.volumesDir()); err == nil && same {
			t.result("same_disk", "true")
		}
	}
	return nil
}

func (t *task) result(k, v string) {
	if t.res.Result == nil {
		t.res.Result = map[string]string{}
	}
	t.res.Result[k] = v
}

// sameFileSystem reports whether two paths are on one file system.
func sameFileSystem(a, b string) (bool, error) {
	var sa, sb syscall.Stat_t
	if err := syscall.Stat(a, &sa); err != nil {
		return false, err
	}
	if err := os.MkdirAll(b, 0o700); err != nil {
		return false, err
	}
	if err := syscall.Stat(b, &sb); err != nil {
		return false, err
	}
	return sa.Dev == sb.Dev, nil
}

// repositoryVerify checks the repository; damage fails the task with the
// code "corrupt" (exit code 7 in the CLI), naming what is damaged.
func (t *task) repositoryVerify(ctx context.Context) error {
	r, done, err := t.lockedRepository(ctx, false, "verify", false)
	if err != nil {
		return err
	}
	defer done()
	res, err := r.Verify(ctx, repo.VerifyOptions{ReadDataPercent: t.plan.Repository.ReadData, Progress: func(p repo.Progress) {
		t.progress(p.Done, p.Total)
	}})
	if err != nil {
		return err
	}
	return t.verifyOutcome(res)
}

// verifyOutcome reports a verify: counts, and the backups that need
// damaged data; damage is a core.KindCorrupt error naming it.
func (t *task) verifyOutcome(res *repo.VerifyResult) error {
	t.result("backups", fmt.Sprint(res.Backups))
	t.result("packs", fmt.Sprint(res.Packs))
	t.result("packs_read", fmt.Sprint(res.PacksRead))
	t.result("bytes_read", fmt.Sprint(res.BytesRead))
	t.result("problems", fmt.Sprint(len(res.Problems)))
	if res.OK() {
		return nil
	}
	bad := map[string]bool{}
	var ids []string
	msg := fmt.Sprintf("verify found %d problems", len(res.Problems))
	for i, p := range res.Problems {
		for _, id := range p.Backups {
			if !bad[id] {
				bad[id] = true
				ids = append(ids, id)
			}
		}
		if i == 5 {
			msg += fmt.Sprintf("; and %d more (run `cairn repo verify` for all)", len(res.Problems)-5)
			continue
		} else if i > 5 {
			continue
		}
		msg += fmt.Sprintf("; %s", p.Object)
		if p.Blob != "" {
			msg += " blob " + p.Blob
		}
		msg += ": " + p.Message
		if len(p.Backups) > 0 {
			msg += fmt.Sprintf(" (needed by backups %v)", p.Backups)
		}
	}
	sort.Strings(ids)
	t.result("corrupt_backups", strings.Join(ids, " "))
	return core.Corrupt("%s", msg)
}

// backupVerify re-reads every blob the plan's backups need and checks it.
func (t *task) backupVerify(ctx context.Context) error {
	r, done, err := t.lockedRepository(ctx, false, "verify", true)
	if err != nil {
		return err
	}
	opts := repo.VerifyOptions{Progress: func(p repo.Progress) { t.progress(p.Done, p.Total) }}
	for _, id := range t.plan.Forget {
		m, err := r.LoadManifest(ctx, id)
		if err != nil {
			done()
			return err
		}
		opts.Backups = append(opts.Backups, m)
	}
	res, err := r.Verify(ctx, opts)
	if err != nil || res.OK() || !t.plan.Repair {
		done()
		if err != nil {
			return err
		}
		return t.verifyOutcome(res)
	}
	good, missing, err := t.findGoodCopies(ctx, r, res)
	done() // the repair takes the exclusive lock
	if err != nil {
		return fmt.Errorf("looking for good copies of the damaged data: %w", err)
	}
	res, none, err := t.repairBackups(ctx, res, good, missing, opts)
	if err != nil {
		return err
	}
	if err := t.verifyOutcome(res); err != nil {
		if len(none) > 0 {
			return fmt.Errorf("%w; not repaired, no good copy: %s", err, strings.Join(none, "; "))
		}
		return err
	}
	return nil
}

// repositoryPrune removes what no backup needs, under the exclusive lock.
func (t *task) repositoryPrune(ctx context.Context) error {
	r, done, err := t.lockedRepository(ctx, true, "prune", false)
	if err != nil {
		return err
	}
	defer done()
	res, err := r.Prune(ctx, repo.PruneOptions{Progress: func(p repo.Progress) { t.progress(p.Done, p.Total) }})
	if err != nil {
		return err
	}
	t.result("packs_deleted", fmt.Sprint(res.PacksDeleted))
	t.result("packs_repacked", fmt.Sprint(res.PacksRepacked))
	t.result("bytes_freed", fmt.Sprint(res.BytesFreed))
	return nil
}
