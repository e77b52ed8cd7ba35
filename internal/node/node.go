// Package node is the host worker ("cairn node"): it owns the volumes of one
// host, as qcow2 files in its data directory, and the helper processes that
// export them, and it carries out the tasks the server hands it.
//
// Data directory layout:
//
//	DATA/volumes/<volume-id>.qcow2   the volume
//	DATA/volumes/<volume-id>.json    its sidecar (apitypes.Sidecar), replaced atomically
//	DATA/run/                        pidfiles and QMP sockets of helper processes
//	DATA/run/tls/<export-id>/        TLS credentials of a running TLS export
//
// The worker talks to the server only through the Server interface. The server
// decides; the node executes the plan it is given (apitypes.Plan) and reports
// facts it measured. Tasks on one volume run one at a time on the node (a
// per-volume lock), tasks on different volumes run in parallel.
//
// Crash safety: every step is written so that the server can re-dispatch a
// task whose completion it never heard of: creating a snapshot whose tag
// exists, deleting one that is gone, stopping an export that is not running are
// successes, and a partial import is replaced. Sidecars are written after the
// disk change and before Complete; at start the node reports what its files
// really hold (Inventory) and takes the sidecars the server returns.
package node

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/qemu"
	"github.com/cairn-backup/cairn/internal/repo"
)

// Server is what the node needs from the cairn server; internal/client
// implements it over HTTPS.
//
// The node calls it from several goroutines at once. Retries: the node
// retries Claim (after a pause) and Complete (a lost completion would leave a
// task running forever), so implementations need not; Complete for a task
// already completed must be harmless. Progress and Heartbeat failures are
// logged and not retried (the next one follows shortly).
type Server interface {
	Register(ctx context.Context, reg apitypes.NodeRegister) (apitypes.Node, error)
	Heartbeat(ctx context.Context, hb apitypes.NodeHeartbeat) error
	// Claim waits up to claim.WaitMS for a task of this node; nil, nil when
	// none came.
	Claim(ctx context.Context, claim apitypes.NodeClaim) (*apitypes.NodeTask, error)
	// Progress reports a running task's progress and says whether the server
	// asked to cancel it.
	Progress(ctx context.Context, taskID string, p apitypes.NodeProgress) (apitypes.NodeCancelCheck, error)
	Complete(ctx context.Context, taskID string, c apitypes.NodeComplete) error
	// Inventory reports what the node's files hold and answers with the
	// volumes (sidecars) and exports the node must hold.
	Inventory(ctx context.Context, inv apitypes.NodeInventory) (apitypes.NodeVolumes, error)
}

// Worker runs the node. Set the exported fields, then call Run once.
type Worker struct {
	Server  Server
	DataDir string
	// Parallel is how many tasks run at once (default 4).
	Parallel int
	Logger   *slog.Logger // default slog.Default()
	// ExportAddress is the address NBD exports bind to (default 127.0.0.1).
	ExportAddress string

	locks volumeLocks

	mu      sync.Mutex               // guards live, snaps and backups
	live    map[string]*liveExport   // by volume id: the daemon holding the volume
	snaps   map[string]*snapExport   // by export id
	backups map[string]*backupServer // by export id

	uncleanStart bool // the previous run did not stop cleanly

	keys     repo.KeyCache     // repository keys, derived from their passwords once
	segments repo.SegmentCache // decoded image segments, read once
	indexes  repo.IndexCache   // repository indexes, each index object read once
}

// Intervals of the worker's loops (variables for tests).
var (
	heartbeatInterval = 10 * time.Second
	claimWait         = 20 * time.Second
	progressInterval  = 500 * time.Millisecond
)

func (w *Worker) volumesDir() string { return filepath.Join(w.DataDir, "volumes") }
func (w *Worker) runDir() string     { return filepath.Join(w.DataDir, "run") }

func (w *Worker) volumePath(id string) string {
	return filepath.Join(w.volumesDir(), id+".qcow2")
}

func (w *Worker) sidecarPath(id string) string {
	return filepath.Join(w.volumesDir(), id+".json")
}

func (w *Worker) log() *slog.Logger {
	if w.Logger != nil {
		return w.Logger
	}
	return slog.Default()
}

// Run starts the node and serves tasks until ctx ends: it reaps helpers a
// previous run left, reports the inventory and restores exports, registers,
// heartbeats, and runs Parallel task loops. When ctx ends it cancels long
// work (imports, conversions), lets short operations finish, completes their
// tasks, stops every helper it started, and returns nil. It returns an error
// only when the node cannot start.
func (w *Worker) Run(ctx context.Context) error {
	if w.Server == nil || w.DataDir == "" {
		return errors.New("node: Server and DataDir are required")
	}
	if w.Parallel <= 0 {
		w.Parallel = 4
	}
	if w.ExportAddress == "" {
		w.ExportAddress = "127.0.0.1"
	}
	w.live = map[string]*liveExport{}
	w.snaps = map[string]*snapExport{}
	w.backups = map[string]*backupServer{}
	for _, dir := range []string{w.volumesDir(), w.runDir()} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
	}
	// A marker written at a clean stop tells the next start whether it must
	// repair what a killed writer may have leaked.
	marker := filepath.Join(w.runDir(), "clean-stop")
	_, statErr := os.Stat(marker)
	w.uncleanStart = statErr != nil
	_ = os.Remove(marker)
	defer func() {
		w.stopAllExports()
		_ = os.WriteFile(marker, nil, 0o600)
	}()

	killed, err := qemu.ReapLeftovers(w.runDir())
	if len(killed) > 0 {
		w.log().Warn("killed helper processes left by a previous run", "pids", killed)
	}
	if err != nil {
		return err
	}
	// Credentials of exports a killed run served: the exports that come back
	// bring theirs again.
	if err := os.RemoveAll(filepath.Join(w.runDir(), "tls")); err != nil {
		return err
	}
	if err := w.reconcile(ctx); err != nil {
		return err
	}
	capacity, available := diskSpace(w.DataDir)
	reg := apitypes.NodeRegister{Address: w.ExportAddress, Capacity: capacity, Available: available}
	if _, err := w.Server.Register(ctx, reg); err != nil {
		return err
	}
	w.log().Info("node registered", "data", w.DataDir, "parallel", w.Parallel)

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		w.heartbeat(ctx)
	}()
	for i := 0; i < w.Parallel; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.claimLoop(ctx)
		}()
	}
	wg.Wait()
	return nil
}

func (w *Worker) heartbeat(ctx context.Context) {
	t := time.NewTicker(heartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		capacity, available := diskSpace(w.DataDir)
		err := w.Server.Heartbeat(ctx, apitypes.NodeHeartbeat{Address: w.ExportAddress, Capacity: capacity, Available: available})
		if err != nil && ctx.Err() == nil {
			w.log().Warn("heartbeat failed", "err", err)
		}
	}
}

// claimLoop claims and runs tasks one after the other until ctx ends.
func (w *Worker) claimLoop(ctx context.Context) {
	backoff := time.Second
	for ctx.Err() == nil {
		nt, err := w.Server.Claim(ctx, apitypes.NodeClaim{WaitMS: int(claimWait / time.Millisecond)})
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			w.log().Warn("claiming a task failed", "err", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 30*time.Second)
			continue
		}
		backoff = time.Second
		if nt != nil {
			w.runTask(ctx, nt)
		}
	}
}

// diskSpace reports the capacity and free space of the file system holding
// dir (0, 0 when unknown).
func diskSpace(dir string) (capacity, available int64) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0
	}
	return int64(st.Blocks) * st.Bsize, int64(st.Bavail) * st.Bsize
}

// volumeLocks serialises tasks per volume.
type volumeLocks struct {
	mu    sync.Mutex
	held  map[string]chan struct{}
	users map[string]int
}

// lock takes the locks of the given volumes (in a fixed order, so two tasks
// that share volumes cannot deadlock) and returns the function that releases
// them.
func (l *volumeLocks) lock(ids ...string) func() {
	ids = sortedUnique(ids)
	chans := make([]chan struct{}, len(ids))
	l.mu.Lock()
	if l.held == nil {
		l.held, l.users = map[string]chan struct{}{}, map[string]int{}
	}
	for i, id := range ids {
		ch, ok := l.held[id]
		if !ok {
			ch = make(chan struct{}, 1)
			l.held[id] = ch
		}
		l.users[id]++
		chans[i] = ch
	}
	l.mu.Unlock()
	for _, ch := range chans {
		ch <- struct{}{}
	}
	return func() {
		for _, ch := range chans {
			<-ch
		}
		l.mu.Lock()
		for _, id := range ids {
			if l.users[id]--; l.users[id] == 0 {
				delete(l.users, id)
				delete(l.held, id)
			}
		}
		l.mu.Unlock()
	}
}

func sortedUnique(ids []string) []string {
	out := slices.DeleteFunc(slices.Clone(ids), func(id string) bool { return id == "" })
	slices.Sort(out)
	return slices.Compact(out)
}
