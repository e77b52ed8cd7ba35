package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Child processes and their lifetime.
//
// Every child (short tools and long-lived helpers alike) is started with
// Pdeathsig=SIGKILL so that it dies when the node dies. Linux ties the parent
// death signal to the THREAD that forked the child, not to the process: the
// signal fires when that thread exits. The Go runtime normally keeps its
// threads, but it does end a thread when a goroutine that locked it exits
// without unlocking; if a child had been forked from such a thread, the child
// would be killed while the node is still alive. To make the signal mean
// "the node process died", every fork happens on one goroutine that locks its
// OS thread and never returns, so the forking thread lives exactly as long as
// the process. Os/exec forks on the calling thread (clone(CLONE_VFORK)), and
// the child re-checks its parent right after setting the signal, so a parent
// that dies during the fork is handled by the kernel and the runtime.
//
// Long-lived helpers additionally get their own process group (Setpgid), so a
// Ctrl-C in a terminal running the node reaches the node, which then stops
// them in order, instead of killing them in the middle of a write.

type startRequest struct {
	cmd  *exec.Cmd
	done chan error
}

var (
	forkerOnce     sync.Once
	forkerRequests chan startRequest
)

// startChild starts cmd from the dedicated forking thread with the parent
// death signal set. It may be called from any goroutine.
func startChild(cmd *exec.Cmd, ownGroup bool) error {
	forkerOnce.Do(func() {
		forkerRequests = make(chan startRequest)
		go func() {
			// Never unlocked and never returns: see the comment above.
			runtime.LockOSThread()
			for req := range forkerRequests {
				req.done <- req.cmd.Start()
			}
		}()
	})
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if ownGroup {
		cmd.SysProcAttr.Setpgid = true
	}
	done := make(chan error, 1)
	forkerRequests <- startRequest{cmd: cmd, done: done}
	return <-done
}

// ToolError is a failed run of a QEMU tool. Its text is the operation followed
// by the tool's own message (stderr, trimmed), so a full disk or a corrupt
// image reads as QEMU reported it.
type ToolError struct {
	Op       string // e.g. "qemu-img snapshot -c"
	Stderr   string // the tool's message, trimmed, without the "qemu-img: " prefixes
	ExitCode int    // -1 when the tool was killed by a signal or did not start
	Err      error  // the exec error
}

func (e *ToolError) Error() string {
	if e.Stderr != "" {
		return e.Op + ": " + e.Stderr
	}
	return e.Op + ": " + e.Err.Error()
}

func (e *ToolError) Unwrap() error { return e.Err }

// cleanStderr trims a tool's stderr and removes the "tool: " prefix QEMU puts
// on each line, which the operation name in ToolError already says.
func cleanStderr(tool string, stderr []byte) string {
	lines := strings.Split(strings.TrimSpace(string(stderr)), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(strings.TrimRight(l, "\r"), tool+": ")
	}
	return strings.TrimSpace(strings.Join(lines, "\n"))
}

// runTool runs a short-lived tool to completion and returns its stdout.
// Cancelling ctx kills the tool (SIGKILL) and runTool returns an error
// wrapping ctx.Err(). okExit lists non-zero exit codes that are not failures
// (qemu-img check uses 2 and 3 for findings); the exit code is returned.
func runTool(ctx context.Context, op string, okExit []int, name string, args ...string) ([]byte, int, error) {
	return runToolStderr(ctx, op, okExit, nil, name, args...)
}

// runToolStderr is runTool that also copies the tool's stderr to alsoStderr
// (when not nil), for tools whose stderr carries results.
func runToolStderr(ctx context.Context, op string, okExit []int, alsoStderr io.Writer, name string, args ...string) ([]byte, int, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if alsoStderr != nil {
		cmd.Stderr = io.MultiWriter(&stderr, alsoStderr)
	}
	cmd.WaitDelay = 5 * time.Second
	if err := startChild(cmd, false); err != nil {
		return nil, -1, &ToolError{Op: op, ExitCode: -1, Err: err}
	}
	err := cmd.Wait()
	if err == nil {
		return stdout.Bytes(), 0, nil
	}
	if ctx.Err() != nil {
		return nil, -1, fmt.Errorf("%s: %w", op, ctx.Err())
	}
	code := -1
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		code = exitErr.ExitCode()
		for _, ok := range okExit {
			if code == ok {
				return stdout.Bytes(), code, nil
			}
		}
	}
	return nil, code, classify(&ToolError{Op: op, Stderr: cleanStderr(name, stderr.Bytes()), ExitCode: code, Err: err})
}

// tailBuffer keeps the last max bytes written to it: the stderr of a helper
// that runs for days must not grow without bound, and its last lines are the
// ones that explain an exit.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// helperProcess is a long-lived child (qemu-storage-daemon, qemu-nbd) with its
// pidfile. The child is not tied to any context: it runs until stop or kill.
type helperProcess struct {
	tool    string
	cmd     *exec.Cmd
	pidfile string
	stderr  *tailBuffer
	done    chan struct{} // closed once the process has exited and been reaped
	waitErr error         // valid after done is closed
}

// startHelper starts a helper and records its pid in pidfile (written by us
// right after the fork, so that a node killed during the helper's start-up
// still leaves a pidfile for ReapLeftovers).
func startHelper(tool string, args []string, pidfile string) (*helperProcess, error) {
	h := &helperProcess{
		tool:    tool,
		cmd:     exec.Command(tool, args...),
		pidfile: pidfile,
		stderr:  &tailBuffer{max: 16 << 10},
		done:    make(chan struct{}),
	}
	h.cmd.Stderr = h.stderr
	if err := startChild(h.cmd, true); err != nil {
		return nil, &ToolError{Op: tool, ExitCode: -1, Err: err}
	}
	go func() {
		h.waitErr = h.cmd.Wait()
		close(h.done)
	}()
	if err := writePidfile(pidfile, h.cmd.Process.Pid); err != nil {
		h.kill()
		return nil, err
	}
	return h, nil
}

func (h *helperProcess) pid() int { return h.cmd.Process.Pid }

func (h *helperProcess) exited() bool {
	select {
	case <-h.done:
		return true
	default:
		return false
	}
}

// exitError describes why the helper exited, with its stderr.
func (h *helperProcess) exitError() error {
	code := -1
	if h.cmd.ProcessState != nil {
		code = h.cmd.ProcessState.ExitCode()
	}
	err := h.waitErr
	if err == nil {
		err = errors.New("exited")
	}
	return classify(&ToolError{Op: h.tool, Stderr: cleanStderr(h.tool, []byte(h.stderr.String())), ExitCode: code, Err: err})
}

// kill sends SIGKILL and waits until the process is reaped.
func (h *helperProcess) kill() {
	_ = h.cmd.Process.Signal(syscall.SIGKILL)
	<-h.done
	_ = os.Remove(h.pidfile)
}

// waitReady polls ready until it succeeds, the helper exits (its stderr is
// returned) or ctx ends.
func (h *helperProcess) waitReady(ctx context.Context, ready func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	var lastErr error
	for {
		if h.exited() {
			return h.exitError()
		}
		if lastErr = ready(ctx); lastErr == nil {
			return nil
		}
		select {
		case <-h.done:
			return h.exitError()
		case <-ctx.Done():
			return fmt.Errorf("%s did not become ready: %w (last probe: %v)", h.tool, ctx.Err(), lastErr)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// startTimeout bounds how long a helper may take to accept connections.
const startTimeout = 30 * time.Second

// isAddrInUse reports whether a helper failed because its port was taken.
func isAddrInUse(err error) bool {
	var te *ToolError
	return errors.As(err, &te) && strings.Contains(te.Stderr, "Address already in use")
}

// startOnPort runs start with the requested port, handling bind failures: a
// fixed port (requested != 0) is retried for bindRetry, because the previous
// holder of that exact port (a helper being restarted) may not have released
// it yet; a chosen port (requested == 0) is replaced by another free port.
func startOnPort(ctx context.Context, address string, requested int, start func(port int) error) (int, error) {
	deadline := time.Now().Add(bindRetry)
	for attempt := 0; ; attempt++ {
		port := requested
		if port == 0 {
			p, err := freePort(address)
			if err != nil {
				return 0, err
			}
			port = p
		}
		err := start(port)
		if err == nil {
			return port, nil
		}
		if !isAddrInUse(err) || ctx.Err() != nil {
			return 0, err
		}
		if requested == 0 && attempt >= 5 {
			return 0, err
		}
		if requested != 0 && time.Now().After(deadline) {
			return 0, err
		}
		select {
		case <-ctx.Done():
			return 0, err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// bindRetry is how long a helper retries binding a port it was told to use.
// A variable for tests.
var bindRetry = 10 * time.Second

// writePidfile replaces path with a file holding pid.
func writePidfile(path string, pid int) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(pid)+"\n"), 0o600); err != nil {
		return fmt.Errorf("writing pidfile: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("writing pidfile: %w", err)
	}
	return nil
}

// helperTools are the programs ReapLeftovers is allowed to kill.
var helperTools = map[string]bool{"qemu-storage-daemon": true, "qemu-nbd": true}

// ReapLeftovers kills the helpers a previous run of the node left behind in
// runDir and clears their files. For every *.pid file it SIGKILLs the recorded
// process if, and only if, /proc shows it is a qemu-storage-daemon or qemu-nbd
// whose command line names that pidfile (so a recycled pid of an unrelated
// process is never touched), and waits until the process is gone. It then
// removes every pidfile and every unix socket in runDir.
//
// Call it only when no helper of the current process uses runDir (at node
// start). A missing runDir is not an error. It returns the pids it killed.
func ReapLeftovers(runDir string) (killed []int, err error) {
	entries, err := os.ReadDir(runDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reaping helpers: %w", err)
	}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		path := filepath.Join(runDir, name)
		switch {
		case strings.HasSuffix(name, ".pid"):
			pid, ok := readPid(path)
			if ok && isOurHelper(pid, name) {
				if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
					errs = append(errs, fmt.Errorf("killing leftover helper %d: %w", pid, err))
					continue
				}
				if err := waitGone(pid, 10*time.Second); err != nil {
					errs = append(errs, err)
					continue
				}
				killed = append(killed, pid)
			}
			if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		case strings.HasSuffix(name, ".pid.tmp"):
			_ = os.Remove(path)
		}
	}
	// Sockets last: their owners are gone now.
	for _, e := range entries {
		if e.Type()&os.ModeSocket != 0 {
			if err := os.Remove(filepath.Join(runDir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return killed, errors.Join(errs...)
}

func readPid(path string) (int, bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	return pid, err == nil && pid > 1
}

// isOurHelper reports whether pid runs a helper tool whose arguments mention
// the pidfile named pidfileName (helpers are always given their pidfile path).
func isOurHelper(pid int, pidfileName string) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(data) == 0 {
		return false
	}
	args := strings.Split(strings.TrimRight(string(data), "\x00"), "\x00")
	if !helperTools[filepath.Base(args[0])] {
		return false
	}
	for _, a := range args[1:] {
		if a == pidfileName || strings.HasSuffix(a, "/"+pidfileName) {
			return true
		}
	}
	return false
}

// waitGone waits until pid no longer exists or is a zombie whose threads
// have all exited (its parent has yet to reap it, and in a container whose
// init does not reap, may never; it holds no port, lock or file any more).
// The main thread of a multi-threaded process turns zombie before its other
// threads finish exiting and close the shared files, hence the thread check.
func waitGone(pid int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return nil
		}
		// The state follows the command name in parentheses, which may itself
		// contain ") ".
		if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) && (stat[i+2] == 'Z' || stat[i+2] == 'X') {
			threads, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
			if err != nil || len(threads) <= 1 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("leftover helper %d still alive %v after SIGKILL", pid, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
