package e2e

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/internal/apitypes"
)

// cli runs the built cairn binary against srv and returns stdout, stderr and the exit code.
func cli(t *testing.T, srv *serverProc, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(cairnBin, args...)
	cmd.Env = append(os.Environ(), "CAIRN_SERVER="+srv.URL, "CAIRN_TOKEN="+srv.Token, "HOME="+t.TempDir(), "XDG_CONFIG_HOME=")
	cmd.Dir = t.TempDir()
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run cairn %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

func cliOK(t *testing.T, srv *serverProc, args ...string) string {
	t.Helper()
	out, errs, code := cli(t, srv, args...)
	if code != 0 {
		t.Fatalf("cairn %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

func cliJSON(t *testing.T, srv *serverProc, v any, args ...string) {
	t.Helper()
	out := cliOK(t, srv, append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("cairn %s -o json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func TestCLIEndToEnd(t *testing.T) {
	srv := startServer(t, serverOpts{})

	var vol apitypes.Volume
	cliJSON(t, srv, &vol, "volume", "create", "db", "--size", "4M")
	if vol.Name != "db" || vol.Size != 4<<20 || vol.State != apitypes.VolumeReady || vol.Kind != apitypes.KindData {
		t.Fatalf("volume create json: %+v", vol)
	}
	var snap apitypes.Snapshot
	cliJSON(t, srv, &snap, "snapshot", "create", "db", "--name", "before-upgrade", "--description", "safe point")
	if snap.Name != "before-upgrade" || snap.ParentID != nil || snap.State != apitypes.SnapshotReady || snap.VolumeID != vol.ID {
		t.Fatalf("snapshot create json: %+v", snap)
	}
	// Auto-named snapshot, then a tree drawn with the head.
	cliOK(t, srv, "snapshot", "create", "db")
	cliOK(t, srv, "snapshot", "apply", "db@before-upgrade")
	cliOK(t, srv, "snapshot", "create", "db", "--name", "second-try")
	tree := cliOK(t, srv, "snapshot", "list", "db", "--tree")
	for _, want := range []string{"before-upgrade", "second-try", "now (head)", "└── "} {
		if !strings.Contains(tree, want) {
			t.Fatalf("tree lacks %q:\n%s", want, tree)
		}
	}
	// The head line sits under second-try, which is under before-upgrade.
	lines := strings.Split(strings.TrimSpace(tree), "\n")
	idx := func(s string) int {
		for i, l := range lines {
			if strings.Contains(l, s) {
				return i
			}
		}
		return -1
	}
	if !(idx("before-upgrade") < idx("second-try") && idx("second-try") < idx("now (head)")) {
		t.Fatalf("tree order wrong:\n%s", tree)
	}
	// Apply with --save-current names the saved snapshot.
	out := cliOK(t, srv, "snapshot", "apply", "db@before-upgrade", "--save-current")
	if !strings.Contains(out, "saved-") {
		t.Fatalf("apply --save-current output does not name the saved snapshot: %s", out)
	}
	var snaps []apitypes.Snapshot
	cliJSON(t, srv, &snaps, "snapshot", "list", "db")
	if len(snaps) != 4 {
		t.Fatalf("snapshot list json: %d items, want 4", len(snaps))
	}
	// Export prints the URI alone.
	uri := strings.TrimSpace(cliOK(t, srv, "volume", "export", "db@before-upgrade"))
	if !strings.HasPrefix(uri, "nbd://127.0.0.1:") || strings.Contains(uri, "\n") {
		t.Fatalf("export output %q: want one nbd:// URI", uri)
	}
	runTool(t, "qemu-io", "-r", "-f", "raw", "-c", "read -P 0 0 64k", uri)
	// Deleting an exported snapshot is a conflict: exit 4.
	if _, errs, code := cli(t, srv, "snapshot", "delete", "db@before-upgrade"); code != 4 || !strings.Contains(errs, "exported") {
		t.Fatalf("delete exported snapshot: exit %d, stderr %q; want 4 and 'exported'", code, errs)
	}
	cliOK(t, srv, "volume", "unexport", "db@before-upgrade")
	cliOK(t, srv, "snapshot", "delete", "db@second-try", "--subtree")
	cliOK(t, srv, "snapshot", "revert", "db")

	// Exit codes for bad input.
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"volume", "show", "nope"}, 3},
		{[]string{"volume", "create", "db", "--size", "1M"}, 4},
		{[]string{"volume", "create", "x", "--size", "12Q"}, 2},
		{[]string{"volume", "create", "Bad", "--size", "1M"}, 2},
		{[]string{"snapshot", "show", "db"}, 2},
		{[]string{"snapshot", "show", "db@nope"}, 3},
		{[]string{"volume", "import", "imp", "/does/not/exist.qcow2"}, 5},
		{[]string{"--token", "wrong", "volume", "list"}, 6},
		{[]string{"volume", "frobnicate"}, 2},
	} {
		_, errs, code := cli(t, srv, tc.args...)
		if code != tc.code {
			t.Errorf("cairn %s: exit %d, want %d (stderr %q)", strings.Join(tc.args, " "), code, tc.code, errs)
		}
		if code != 0 && !strings.HasPrefix(errs, "cairn: ") && !strings.Contains(errs, "Error") && !strings.Contains(errs, "cairn:") {
			t.Errorf("cairn %s: stderr %q does not say what failed", strings.Join(tc.args, " "), errs)
		}
	}
	// Nothing was left by the failed import.
	var vols []apitypes.Volume
	cliJSON(t, srv, &vols, "volume", "list")
	if len(vols) != 1 {
		t.Fatalf("volumes after bad input: %d, want 1", len(vols))
	}
	// --no-wait prints the task.
	var task apitypes.Task
	cliJSON(t, srv, &task, "snapshot", "create", "db", "--no-wait")
	if task.ID == "" || task.Kind != apitypes.OpSnapshotCreate {
		t.Fatalf("--no-wait json: %+v", task)
	}
	cliOK(t, srv, "task", "wait", task.ID)
	if _, err := os.Stat(filepath.Join(srv.Data, "volumes", vol.ID+".json")); err != nil {
		t.Fatalf("sidecar: %v", err)
	}
}
