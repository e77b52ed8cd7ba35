package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/testenv"
)

func TestMain(m *testing.M) {
	// Fast loops for tests; set before any worker runs.
	progressInterval = 20 * time.Millisecond
	claimWait = 200 * time.Millisecond
	heartbeatInterval = 100 * time.Millisecond
	os.Exit(m.Run())
}

// fakeServer hands out the plans a test queues and records what the node
// reports. Inventory answers with whatever the test put in volumes.
type fakeServer struct {
	tasks chan *apitypes.NodeTask
	done  chan completion

	mu          sync.Mutex
	registered  int
	heartbeats  int
	inventories []apitypes.NodeInventory
	volumes     apitypes.NodeVolumes
	progress    map[string][]apitypes.NodeProgress
	cancel      map[string]bool // answer Cancel to these tasks' progress
	registeredC chan struct{}
}

type completion struct {
	taskID string
	res    apitypes.NodeComplete
}

func newFakeServer() *fakeServer {
	return &fakeServer{
		tasks:       make(chan *apitypes.NodeTask, 16),
		done:        make(chan completion, 16),
		progress:    map[string][]apitypes.NodeProgress{},
		cancel:      map[string]bool{},
		registeredC: make(chan struct{}, 16),
	}
}

func (f *fakeServer) Register(ctx context.Context, reg apitypes.NodeRegister) (apitypes.Node, error) {
	f.mu.Lock()
	f.registered++
	f.mu.Unlock()
	f.registeredC <- struct{}{}
	return apitypes.Node{ID: "node-1", Address: reg.Address, Capacity: reg.Capacity, Available: reg.Available}, nil
}

func (f *fakeServer) Heartbeat(ctx context.Context, hb apitypes.NodeHeartbeat) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if hb.Capacity <= 0 || hb.Available <= 0 {
		return fmt.Errorf("heartbeat without capacity: %+v", hb)
	}
	f.heartbeats++
	return nil
}

func (f *fakeServer) Claim(ctx context.Context, c apitypes.NodeClaim) (*apitypes.NodeTask, error) {
	select {
	case t := <-f.tasks:
		return t, nil
	case <-time.After(time.Duration(c.WaitMS) * time.Millisecond):
		return nil, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (f *fakeServer) Progress(ctx context.Context, taskID string, p apitypes.NodeProgress) (apitypes.NodeCancelCheck, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.progress[taskID] = append(f.progress[taskID], p)
	return apitypes.NodeCancelCheck{Cancel: f.cancel[taskID]}, nil
}

func (f *fakeServer) Complete(ctx context.Context, taskID string, c apitypes.NodeComplete) error {
	f.done <- completion{taskID, c}
	return nil
}

func (f *fakeServer) Inventory(ctx context.Context, inv apitypes.NodeInventory) (apitypes.NodeVolumes, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.inventories = append(f.inventories, inv)
	return f.volumes, nil
}

// newID returns a random UUID-shaped id.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// testNode is a running Worker with its fake server.
type testNode struct {
	t      *testing.T
	srv    *fakeServer
	w      *Worker
	data   string
	cancel context.CancelFunc
	ended  chan error

	stopOnce sync.Once
}

// shortTempDir keeps unix socket paths (DATA/run/vol-<uuid>.qmp) short.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "cn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func requireQEMU(t *testing.T) {
	t.Helper()
	testenv.RequireTool(t, "qemu-img", "qemu-io", "qemu-nbd", "qemu-storage-daemon", "nbdinfo")
}

// startNode runs a Worker on data until the test ends or stop is called.
func startNode(t *testing.T, srv *fakeServer, data string) *testNode {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	n := &testNode{t: t, srv: srv, data: data, cancel: cancel, ended: make(chan error, 1)}
	n.w = &Worker{
		Server:   srv,
		DataDir:  data,
		Parallel: 2,
		Logger:   slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	go func() { n.ended <- n.w.Run(ctx) }()
	select {
	case <-srv.registeredC:
	case err := <-n.ended:
		t.Fatalf("worker ended at start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("worker did not register")
	}
	t.Cleanup(n.stop)
	return n
}

// stop ends Run and waits for it (idempotent).
func (n *testNode) stop() {
	n.stopOnce.Do(func() {
		n.cancel()
		select {
		case err := <-n.ended:
			if err != nil {
				n.t.Errorf("Run: %v", err)
			}
		case <-time.After(60 * time.Second):
			n.t.Error("Run did not return after cancel")
		}
	})
}

// do queues a plan and waits for its completion.
func (n *testNode) do(plan apitypes.Plan) apitypes.NodeComplete {
	n.t.Helper()
	return n.wait(n.start(plan))
}

func (n *testNode) start(plan apitypes.Plan) string {
	id := "task-" + newID()
	n.srv.tasks <- &apitypes.NodeTask{Task: apitypes.Task{ID: id, Kind: plan.Op}, Plan: plan}
	return id
}

func (n *testNode) wait(id string) apitypes.NodeComplete {
	n.t.Helper()
	select {
	case c := <-n.srv.done:
		if c.taskID != id {
			n.t.Fatalf("completion of %s while waiting for %s", c.taskID, id)
		}
		return c.res
	case <-time.After(60 * time.Second):
		n.t.Fatalf("task %s did not complete", id)
	}
	return apitypes.NodeComplete{}
}

// mustDo runs a plan that must succeed.
func (n *testNode) mustDo(plan apitypes.Plan) apitypes.NodeComplete {
	n.t.Helper()
	res := n.do(plan)
	if res.Error != "" {
		n.t.Fatalf("%s failed: %s (%s)", plan.Op, res.Error, res.ErrorCode)
	}
	return res
}

func (n *testNode) volume(id string) string { return filepath.Join(n.data, "volumes", id+".qcow2") }

func (n *testNode) sidecar(id string) apitypes.Sidecar {
	n.t.Helper()
	data, err := os.ReadFile(filepath.Join(n.data, "volumes", id+".json"))
	if err != nil {
		n.t.Fatal(err)
	}
	var sc apitypes.Sidecar
	if err := json.Unmarshal(data, &sc); err != nil {
		n.t.Fatalf("sidecar: %v\n%s", err, data)
	}
	return sc
}

func sidecarFor(id, name string, tags ...string) *apitypes.Sidecar {
	sc := &apitypes.Sidecar{Version: 1, ID: id, Project: "default", Name: name, Kind: "data", State: "ready",
		CreatedAt: "2026-01-01T00:00:00Z", Snapshots: []apitypes.SidecarSnapshot{}}
	for _, tag := range tags {
		sc.Snapshots = append(sc.Snapshots, apitypes.SidecarSnapshot{ID: newID(), Tag: tag, Name: "s-" + tag[:8], Kind: "user"})
	}
	return sc
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// qemu-io helpers: read -P checks a pattern; some qemu-io versions exit 0
// after "Pattern verification failed", so the text is what counts.

func qemuIO(t *testing.T, args ...string) string { return testenv.QemuIO(t, args...) }

func patternMatches(t *testing.T, args ...string) bool { return testenv.PatternMatches(t, args...) }

func nbdURI(port int, name string) string {
	return "nbd://127.0.0.1:" + strconv.Itoa(port) + "/" + name
}

func nbdSize(t *testing.T, uri string) int64 { return testenv.NBDSize(t, uri) }
