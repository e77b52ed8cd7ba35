package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/testenv"
)

// TestReapLeftoversKillsOrphanedHelper starts qemu-nbd the way a crashed node
// leaves it: detached (--fork, parent gone, no parent death signal), known
// only by its pidfile.
func TestReapLeftoversKillsOrphanedHelper(t *testing.T) {
	requireQEMU(t)
	ctx := testCtx(t)
	dir := shortTempDir(t)
	img := newImage(t, ctx, dir, 8*mib)
	runDir := filepath.Join(dir, "run")
	if err := os.MkdirAll(runDir, 0o700); err != nil {
		t.Fatal(err)
	}
	pidfile := filepath.Join(runDir, "snap-left.pid")
	port := testenv.FreePort(t)
	out, err := exec.Command("sh", "-c", fmt.Sprintf("qemu-nbd --fork -t -r -x e -b 127.0.0.1 -p %d --pid-file %s -f qcow2 %s", port, pidfile, img)).CombinedOutput()
	if err != nil {
		t.Fatalf("starting an orphan qemu-nbd: %v\n%s", err, out)
	}
	orphan, ok := readPid(pidfile)
	if !ok || processGone(orphan) {
		t.Fatal("the orphan qemu-nbd is not running")
	}
	t.Cleanup(func() { _ = syscall.Kill(orphan, syscall.SIGKILL) })

	// Not ours: a process that is not a helper, behind a pidfile.
	sleeper := exec.Command("sleep", "30")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() })
	if err := writePidfile(filepath.Join(runDir, "other.pid"), sleeper.Process.Pid); err != nil {
		t.Fatal(err)
	}
	// Garbage and a stale socket.
	if err := os.WriteFile(filepath.Join(runDir, "junk.pid"), []byte("nope"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", filepath.Join(runDir, "stale.qmp"))
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	_ = l.Close()

	killed, err := ReapLeftovers(runDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(killed) != 1 || killed[0] != orphan {
		t.Fatalf("killed %v, want [%d]", killed, orphan)
	}
	if !processGone(orphan) {
		t.Fatal("the orphan survived")
	}
	if processGone(sleeper.Process.Pid) {
		t.Fatal("ReapLeftovers killed a process that is not a helper")
	}
	if entries, _ := os.ReadDir(runDir); len(entries) != 0 {
		t.Fatalf("run directory not cleared: %v", entries)
	}
	if err := dialTCP(ctx, "127.0.0.1:"+strconv.Itoa(port)); err == nil {
		out, _ := exec.Command("sh", "-c", fmt.Sprintf("ss -tanp | grep :%d; cat /proc/%d/stat", port, orphan)).CombinedOutput()
		t.Fatalf("the orphan's port is still served:\n%s", out)
	}
	if killed, err := ReapLeftovers(filepath.Join(dir, "absent")); err != nil || len(killed) != 0 {
		t.Fatalf("missing run dir: %v %v", killed, err)
	}
}

func dialTCP(ctx context.Context, addr string) error {
	d := net.Dialer{Timeout: time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return conn.Close()
}

// helperChildEnv makes the test binary act as a node that starts helpers and
// then waits to be killed (see TestHelpersDieWithTheirParent).
const helperChildEnv = "CAIRN_QEMU_TEST_HELPER_CHILD"

func TestHelperChild(t *testing.T) {
	dir := os.Getenv(helperChildEnv)
	if dir == "" {
		return // only meaningful as the child of TestHelpersDieWithTheirParent
	}
	ctx := context.Background()
	runDir := filepath.Join(dir, "run")
	sd, err := StartStorageDaemon(ctx, DaemonConfig{Image: filepath.Join(dir, "a.qcow2"), RunDir: runDir, ID: "vol", ExportName: "a"})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	ss, err := StartSnapshotServer(ctx, SnapshotServerConfig{Image: filepath.Join(dir, "b.qcow2"), Tag: tagA, RunDir: runDir, ID: "snap", ExportName: "b"})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	// Start them from a goroutine that ends, on a thread that may then be
	// reused: the helpers must survive that.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Leave a locked thread behind: the runtime ends it when this
		// goroutine exits. Had the helpers been forked from it, they would
		// die now.
		runtime.LockOSThread()
	}()
	wg.Wait()
	time.Sleep(200 * time.Millisecond)
	fmt.Printf("pids %d %d\n", sd.Pid(), ss.Pid())
	select {}
}

// TestHelpersDieWithTheirParent kills a process that started helpers and
// checks they die with it (parent death signal), then that ReapLeftovers
// clears what they left.
func TestHelpersDieWithTheirParent(t *testing.T) {
	requireQEMU(t)
	ctx := testCtx(t)
	dir := shortTempDir(t)
	if err := Create(ctx, filepath.Join(dir, "a.qcow2"), 8*mib); err != nil {
		t.Fatal(err)
	}
	b := filepath.Join(dir, "b.qcow2")
	if err := Create(ctx, b, 8*mib); err != nil {
		t.Fatal(err)
	}
	if err := SnapshotCreate(ctx, b, tagA); err != nil {
		t.Fatal(err)
	}

	child := exec.Command(os.Args[0], "-test.run=^TestHelperChild$", "-test.v")
	child.Env = append(os.Environ(), helperChildEnv+"="+dir)
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	var sdPid, ssPid int
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "error:") {
			t.Fatal(line)
		}
		if _, err := fmt.Sscanf(line, "pids %d %d", &sdPid, &ssPid); err == nil {
			break
		}
	}
	if sdPid == 0 {
		_ = child.Process.Kill()
		t.Fatal("the child did not report its helpers")
	}
	t.Cleanup(func() {
		_ = syscall.Kill(sdPid, syscall.SIGKILL)
		_ = syscall.Kill(ssPid, syscall.SIGKILL)
	})
	if processGone(sdPid) || processGone(ssPid) {
		t.Fatal("a helper died before its parent: the parent death signal fired early")
	}
	_ = child.Process.Kill()
	_ = child.Wait()
	for _, pid := range []int{sdPid, ssPid} {
		if err := waitGone(pid, 5*time.Second); err != nil {
			t.Fatalf("helper outlived its parent: %v", err)
		}
	}
	// The image lock is released: qemu-img can write again.
	if err := SnapshotCreate(ctx, filepath.Join(dir, "a.qcow2"), tagB); err != nil {
		t.Fatal(err)
	}
	killed, err := ReapLeftovers(filepath.Join(dir, "run"))
	if err != nil || len(killed) != 0 {
		t.Fatalf("reap after the helpers died: %v %v", killed, err)
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "run")); len(entries) != 0 {
		t.Fatalf("run directory not cleared: %v", entries)
	}
}

func TestQMPSkipsEventsAndReturnsErrors(t *testing.T) {
	dir := shortTempDir(t)
	sock := filepath.Join(dir, "q.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		fmt.Fprintln(conn, `{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}}, "capabilities": []}}`)
		rd := bufio.NewReader(conn)
		for {
			line, err := rd.ReadBytes('\n')
			if err != nil {
				return
			}
			var req struct {
				Execute   string          `json:"execute"`
				ID        json.RawMessage `json:"id"`
				Arguments map[string]any  `json:"arguments"`
			}
			_ = json.Unmarshal(line, &req)
			fmt.Fprintln(conn, `{"event": "SOMETHING", "data": {}, "timestamp": {"seconds": 1, "microseconds": 2}}`)
			switch req.Execute {
			case "fail":
				fmt.Fprintf(conn, `{"error": {"class": "GenericError", "desc": "it went wrong"}, "id": %s}`+"\n", req.ID)
			case "echo":
				out, _ := json.Marshal(map[string]any{"return": req.Arguments, "id": req.ID})
				fmt.Fprintf(conn, "%s\n", out)
			case "hang":
			default:
				fmt.Fprintf(conn, `{"return": {}, "id": %s}`+"\n", req.ID)
			}
		}
	}()
	ctx := testCtx(t)
	q, err := DialQMP(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if q.Version != "7.2.22" {
		t.Fatalf("version %q", q.Version)
	}
	err = q.Execute(ctx, "fail", nil, nil)
	var qerr *QMPError
	if !errors.As(err, &qerr) || qerr.Desc != "it went wrong" || err.Error() != "qmp fail: it went wrong" {
		t.Fatalf("got %v", err)
	}
	// Concurrent callers each get their own answer.
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var got struct{ N int }
			if err := q.Execute(ctx, "echo", map[string]int{"n": i}, &got); err != nil || got.N != i {
				t.Errorf("echo %d: got %d, %v", i, got.N, err)
			}
		}()
	}
	wg.Wait()
	// A command whose ctx ends breaks the client for good.
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if err := q.Execute(short, "hang", nil, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hang: %v", err)
	}
	if err := q.Execute(ctx, "echo", nil, nil); !errors.Is(err, ErrQMPClosed) {
		t.Fatalf("after a lost answer: %v", err)
	}
}
