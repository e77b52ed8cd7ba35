package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/client"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/httpapi/apitest"
	"github.com/cairn-backup/cairn/internal/testenv"
)

var cairnBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cairn-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cairnBin = os.Getenv("CAIRN_BIN")
	if cairnBin == "" {
		cairnBin = filepath.Join(dir, "cairn")
		cmd := exec.Command("go", "build", "-o", cairnBin, "github.com/cairn-backup/cairn/cmd/cairn")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building cairn:", err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// serverProc is a `cairn server` process.
type serverProc struct {
	t      testing.TB
	Data   string
	Listen string
	URL    string
	Token  string
	cmd    *exec.Cmd
	done   chan error
	log    *strings.Builder
}

type serverOpts struct {
	data      string
	listen    string
	env       []string
	extraArgs []string
	// expectExit: do not wait for readiness; the process is expected to die.
	expectExit bool
}

func requireQEMU(t testing.TB) {
	testenv.RequireTool(t, "qemu-img", "qemu-io", "qemu-nbd", "qemu-storage-daemon")
}

// startServer runs `cairn server` and waits until its API answers.
func startServer(t testing.TB, o serverOpts) *serverProc {
	t.Helper()
	requireQEMU(t)
	if o.data == "" {
		o.data = t.TempDir()
	}
	if o.listen == "" {
		o.listen = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	}
	args := append([]string{"server", "--data", o.data, "--listen", o.listen, "--log-level", "debug"}, o.extraArgs...)
	started := time.Now() // the server stores heartbeat times to the nanosecond
	cmd := exec.Command(cairnBin, args...)
	cmd.Env = append(os.Environ(), o.env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	logb := &strings.Builder{}
	pr, pw, _ := os.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatalf("start cairn server: %v", err)
	}
	pw.Close()
	s := &serverProc{t: t, Data: o.data, Listen: o.listen, URL: "http://" + o.listen, cmd: cmd, done: make(chan error, 1), log: logb}
	lines := make(chan string, 1000)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		close(lines)
	}()
	go func() {
		for l := range lines {
			logMu.Lock()
			logb.WriteString(l + "\n")
			logMu.Unlock()
		}
	}()
	go func() { s.done <- cmd.Wait() }()
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("server log:\n%s", s.Log())
		}
	})
	if o.expectExit {
		return s
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(s.URL + "/v1/openapi.json")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		select {
		case err := <-s.done:
			t.Fatalf("cairn server exited during start: %v\n%s", err, s.Log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("cairn server did not answer within 30s\n%s", s.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, err := os.ReadFile(filepath.Join(o.data, "admin.token"))
	if err != nil {
		t.Fatalf("admin token: %v", err)
	}
	s.Token = strings.TrimSpace(string(b))
	// The in-process node reconciles the data directory before it registers:
	// wait for its registration from this start.
	for _, a := range o.extraArgs {
		if a == "--no-node" {
			return s
		}
	}
	c := client.New(s.URL, s.Token)
	for {
		n, err := c.GetNode(context.Background(), "local")
		if err == nil && n.HeartbeatAt != nil && !n.HeartbeatAt.Before(started) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server's node did not register within 30s\n%s", s.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var logMu sync.Mutex

// Log returns what the server printed so far.
func (s *serverProc) Log() string {
	logMu.Lock()
	defer logMu.Unlock()
	return s.log.String()
}

// Stop sends SIGTERM and waits; it is safe to call twice.
func (s *serverProc) Stop() {
	if s.cmd.ProcessState != nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
		s.t.Errorf("cairn server did not stop within 30s of SIGTERM")
	}
}

// Kill sends SIGKILL to the server alone (its helpers must die with it).
func (s *serverProc) Kill() {
	_ = s.cmd.Process.Kill()
	<-s.done
}

// WaitExit waits for the process to end by itself.
func (s *serverProc) WaitExit(d time.Duration) error {
	select {
	case err := <-s.done:
		return err
	case <-time.After(d):
		s.t.Fatalf("cairn server still running after %v", d)
		return nil
	}
}

// Client returns an API client whose every request and response is validated
// against the OpenAPI document.
func (s *serverProc) Client(t testing.TB, opts ...client.Option) *client.Client {
	return client.New(s.URL, s.Token, append([]client.Option{client.WithHTTPClient(validatingHTTP(t))}, opts...)...)
}

// validatingHTTP is an HTTP client that checks every request and response
// against the OpenAPI document.
func validatingHTTP(t testing.TB) *http.Client {
	v := apitest.NewValidator(t)
	return &http.Client{Transport: v.Transport(http.DefaultTransport), Timeout: 2 * time.Minute}
}

// ctx returns a context bounded by the test's deadline.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// mustTask waits for a task and fails the test unless it succeeded.
func mustTask(t testing.TB, c *client.Client, task apitypes.Task, err error) apitypes.Task {
	t.Helper()
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	done, err := c.WaitTask(testCtx(t), task.ID, nil)
	if err != nil && core.KindOf(err) != core.KindTaskFailed {
		t.Fatalf("wait task %s: %v", task.ID, err)
	}
	if done.State != apitypes.TaskSucceeded {
		t.Fatalf("task %s (%s) ended %s: %s", done.ID, done.Kind, done.State, done.Error)
	}
	return done
}

// waitOK returns a function that waits for a submitted task and fails the
// test unless it succeeded: waitOK(t, c)(c.CreateVolume(ctx, req)).
func waitOK(t testing.TB, c *client.Client) func(apitypes.Task, error) apitypes.Task {
	return func(task apitypes.Task, err error) apitypes.Task {
		t.Helper()
		return mustTask(t, c, task, err)
	}
}

// waitFail is waitOK for a task that must fail.
func waitFail(t testing.TB, c *client.Client) func(apitypes.Task, error) apitypes.Task {
	return func(task apitypes.Task, err error) apitypes.Task {
		t.Helper()
		return failTask(t, c, task, err)
	}
}

// failTask waits for a task and fails the test unless it failed.
func failTask(t testing.TB, c *client.Client, task apitypes.Task, err error) apitypes.Task {
	t.Helper()
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	done, err := c.WaitTask(testCtx(t), task.ID, nil)
	if err != nil && core.KindOf(err) != core.KindTaskFailed {
		t.Fatalf("wait task %s: %v", task.ID, err)
	}
	if done.State != apitypes.TaskFailed {
		t.Fatalf("task %s (%s) ended %s, want failed", done.ID, done.Kind, done.State)
	}
	return done
}

// runTool runs a command and returns its combined output, failing on a non-zero exit.
func runTool(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
