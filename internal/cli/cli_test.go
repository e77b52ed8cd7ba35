package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/internal/apitypes"
)

// fakeAPI is an httptest server answering from handlers registered per test,
// recording every request it gets.
type fakeAPI struct {
	*httptest.Server
	mux *http.ServeMux

	mu       sync.Mutex
	requests []string // "METHOD /path?query"
	auth     []string // Authorization headers
	projects []string // Cairn-Project headers
}

func newFakeAPI(t *testing.T) *fakeAPI {
	t.Helper()
	f := &fakeAPI{mux: http.NewServeMux()}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		line := r.Method + " " + r.URL.Path
		if r.URL.RawQuery != "" {
			line += "?" + r.URL.RawQuery
		}
		f.requests = append(f.requests, line)
		f.auth = append(f.auth, r.Header.Get("Authorization"))
		f.projects = append(f.projects, r.Header.Get(apitypes.HeaderProject))
		f.mu.Unlock()
		f.mux.ServeHTTP(w, r)
	}))
	t.Cleanup(f.Close)
	return f
}

// on answers pattern with status and v as JSON (no body when v is nil).
func (f *fakeAPI) on(pattern string, status int, v any) {
	f.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		reply(w, status, v)
	})
}

func reply(w http.ResponseWriter, status int, v any) {
	if v == nil {
		w.WriteHeader(status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func apiError(code, msg string) apitypes.Error { return apitypes.Error{Code: code, Message: msg} }

func (f *fakeAPI) got() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.requests...)
}

// isolate keeps the user's config and environment out of a test.
func isolate(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	t.Setenv(EnvServer, "")
	t.Setenv(EnvToken, "")
	t.Setenv(EnvProject, "")
	return dir
}

// cairn runs the CLI with args and returns its stdout, stderr and exit code.
func cairn(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	root := NewRoot()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	code := Main(root)
	return out.String(), errOut.String(), code
}

// cairnAt runs the CLI against f with a token.
func cairnAt(t *testing.T, f *fakeAPI, args ...string) (string, string, int) {
	t.Helper()
	isolate(t)
	return cairn(t, append([]string{"--server", f.URL, "--token", "tok"}, args...)...)
}

var (
	vol1 = apitypes.Volume{ID: "11111111-1111-4111-8111-111111111111", Name: "web", Project: "default", Kind: "data",
		Node: "n1", Size: 10 << 30, Format: "qcow2", State: apitypes.VolumeReady, Exports: []apitypes.Export{}, Labels: map[string]string{}}
	snapA = apitypes.Snapshot{ID: "aaaaaaaa-1111-4111-8111-111111111111", Name: "a", VolumeID: vol1.ID, State: "ready", Kind: "disk", CreatedAt: t0}
	snapB = apitypes.Snapshot{ID: "bbbbbbbb-1111-4111-8111-111111111111", Name: "b", VolumeID: vol1.ID, ParentID: &snapA.ID, State: "ready", Kind: "disk", CreatedAt: t0.Add(1e9)}
)

func queued(id, kind, resType, resID, volID string) apitypes.Task {
	return apitypes.Task{ID: id, Kind: kind, State: apitypes.TaskQueued, Project: "default", ResourceType: resType, ResourceID: resID, VolumeID: volID, Log: []string{}, CreatedAt: t0}
}

func done(t apitypes.Task) apitypes.Task {
	t.State = apitypes.TaskSucceeded
	return t
}

func TestExitCodes(t *testing.T) {
	task := queued("t1", apitypes.OpVolumeCreate, "volume", vol1.ID, "")
	failed := task
	failed.State, failed.Error, failed.ErrorCode = apitypes.TaskFailed, "no space left on device", "no_space"

	tests := []struct {
		name      string
		setup     func(f *fakeAPI)
		args      []string
		code      int
		stderr    string // a substring of stderr
		noRequest bool   // the CLI must fail before asking the server
	}{
		{name: "ok", setup: func(f *fakeAPI) { f.on("GET /v1/volumes/web", 200, vol1) },
			args: []string{"volume", "show", "web"}, code: 0},
		{name: "not found", setup: func(f *fakeAPI) {
			f.on("GET /v1/volumes/nope", 404, apiError("not_found", `volume "nope" not found`))
		}, args: []string{"volume", "show", "nope"}, code: 3, stderr: "cairn: volume \"nope\" not found\n"},
		{name: "snapshot not found", setup: func(f *fakeAPI) {
			f.on("GET /v1/volumes/web/snapshots/zz", 404, apiError("not_found", `snapshot "zz" not found`))
		}, args: []string{"snapshot", "show", "web@zz"}, code: 3, stderr: `snapshot "zz" not found`},
		{name: "conflict", setup: func(f *fakeAPI) {
			f.on("POST /v1/volumes/web/revert", 409, apiError("nothing_to_revert", "volume web has no snapshot to revert to"))
		}, args: []string{"snapshot", "revert", "web"}, code: 4,
			stderr: "cairn: volume web has no snapshot to revert to [nothing_to_revert]\n"},
		{name: "conflict exported", setup: func(f *fakeAPI) {
			f.on("DELETE /v1/volumes/web", 409, apiError("exported", "volume web is exported"))
		}, args: []string{"volume", "delete", "web"}, code: 4, stderr: "[exported]"},
		{name: "task failed", setup: func(f *fakeAPI) {
			f.on("POST /v1/volumes", 202, task)
			f.on("GET /v1/tasks/t1", 200, failed)
		}, args: []string{"volume", "create", "web", "--size", "10G"}, code: 5,
			stderr: "task t1 failed: no space left on device"},
		{name: "task canceled", setup: func(f *fakeAPI) {
			c := task
			c.State = apitypes.TaskCanceled
			f.on("POST /v1/volumes", 202, task)
			f.on("GET /v1/tasks/t1", 200, c)
		}, args: []string{"volume", "create", "web", "--size", "10G"}, code: 5, stderr: "task t1 was canceled"},
		{name: "task wait failed", setup: func(f *fakeAPI) { f.on("GET /v1/tasks/t1", 200, failed) },
			args: []string{"task", "wait", "t1"}, code: 5, stderr: "task t1 failed"},
		{name: "unauthorized", setup: func(f *fakeAPI) {
			f.on("GET /v1/volumes", 401, apiError("unauthorized", "invalid token"))
		}, args: []string{"volume", "list"}, code: 6, stderr: "cairn: invalid token"},
		{name: "forbidden", setup: func(f *fakeAPI) {
			f.on("POST /v1/projects", 403, apiError("forbidden", "admin only"))
		}, args: []string{"project", "create", "p"}, code: 6, stderr: "admin only"},
		{name: "corrupt", setup: func(f *fakeAPI) {
			f.on("GET /v1/volumes/web", 422, apiError("corrupt", "qcow2 header checksum"))
		}, args: []string{"volume", "show", "web"}, code: 7},
		{name: "internal", setup: func(f *fakeAPI) { f.on("GET /v1/volumes/web", 500, nil) },
			args: []string{"volume", "show", "web"}, code: 1, stderr: "cairn: Internal Server Error"},
		{name: "invalid from the server", setup: func(f *fakeAPI) {
			f.on("POST /v1/volumes", 400, apiError("invalid", "invalid volume name"))
		}, args: []string{"volume", "create", "Bad", "--size", "1G"}, code: 2},

		{name: "bad size", args: []string{"volume", "create", "web", "--size", "10X"}, code: 2, noRequest: true,
			stderr: `invalid size "10X"`},
		{name: "size not a multiple of 512", args: []string{"volume", "create", "web", "--size", "1000"}, code: 2, noRequest: true},
		{name: "bad grow size", args: []string{"volume", "grow", "web", "--size", "-1G"}, code: 2, noRequest: true},
		{name: "no size", args: []string{"volume", "create", "web"}, code: 2, noRequest: true, stderr: `"size" not set`},
		{name: "bad kind", args: []string{"volume", "create", "web", "--size", "1G", "--kind", "boot"}, code: 2, noRequest: true},
		{name: "VOL without @SNAP", args: []string{"snapshot", "show", "web"}, code: 2, noRequest: true,
			stderr: `invalid snapshot address "web"`},
		{name: "empty VOL", args: []string{"snapshot", "apply", "@a"}, code: 2, noRequest: true},
		{name: "empty SNAP", args: []string{"snapshot", "delete", "web@"}, code: 2, noRequest: true},
		{name: "to-volume needs a name", args: []string{"snapshot", "to-volume", "web@a"}, code: 2, noRequest: true},
		{name: "bad export address", args: []string{"volume", "export", "web@"}, code: 2, noRequest: true},
		{name: "missing argument", args: []string{"volume", "show"}, code: 2, noRequest: true, stderr: "Run 'cairn volume show --help'"},
		{name: "extra argument", args: []string{"task", "show", "a", "b"}, code: 2, noRequest: true},
		{name: "unknown flag", args: []string{"volume", "list", "--bogus"}, code: 2, noRequest: true},
		{name: "unknown command", args: []string{"frobnicate"}, code: 2, noRequest: true},
		{name: "unknown subcommand", args: []string{"volume", "frobnicate"}, code: 2, noRequest: true},
		{name: "bad output", args: []string{"volume", "list", "-o", "yaml"}, code: 2, noRequest: true},
		{name: "bad role", args: []string{"token", "create", "ci", "--role", "root"}, code: 2, noRequest: true},
		{name: "group alone prints help", args: []string{"volume"}, code: 0, noRequest: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeAPI(t)
			if tt.setup != nil {
				tt.setup(f)
			}
			_, stderr, code := cairnAt(t, f, tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tt.code, stderr)
			}
			if !strings.Contains(stderr, tt.stderr) {
				t.Errorf("stderr %q, want it to contain %q", stderr, tt.stderr)
			}
			if tt.code != 0 && !strings.HasPrefix(stderr, "cairn: ") {
				t.Errorf("stderr %q, want it to start with \"cairn: \"", stderr)
			}
			if tt.noRequest && len(f.got()) > 0 {
				t.Errorf("requests %v, want none", f.got())
			}
		})
	}
}

func TestUnreachableServer(t *testing.T) {
	f := newFakeAPI(t)
	url := f.URL
	f.Close()
	isolate(t)
	_, stderr, code := cairn(t, "--server", url, "--token", "tok", "volume", "list")
	if code != 1 || !strings.Contains(stderr, "Cannot reach the server") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}

func TestNoToken(t *testing.T) {
	f := newFakeAPI(t)
	isolate(t)
	_, stderr, code := cairn(t, "--server", f.URL, "volume", "list")
	if code != 6 || !strings.Contains(stderr, "no token") || len(f.got()) != 0 {
		t.Errorf("exit %d, stderr %q, requests %v", code, stderr, f.got())
	}
}

// pages registers a two-page list at path: the first page without a cursor,
// the second at cursor "next".
func pages[T any](f *fakeAPI, path string, first, second []T) {
	f.mux.HandleFunc("GET "+path, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Query().Get("cursor") {
		case "":
			reply(w, 200, apitypes.List[T]{Items: first, NextCursor: "next"})
		case "next":
			reply(w, 200, apitypes.List[T]{Items: second})
		default:
			reply(w, 400, apiError("invalid", "bad cursor"))
		}
	})
}

// sameJSON compares two JSON documents by value.
func sameJSON(t *testing.T, got string, want any) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		t.Fatalf("output is not one JSON document: %v\n%s", err, got)
	}
	b, _ := json.Marshal(want)
	_ = json.Unmarshal(b, &w)
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	if string(gb) != string(wb) {
		t.Errorf("JSON output:\n%s\nwant:\n%s", gb, wb)
	}
}

func TestJSONListsAllPages(t *testing.T) {
	vol2 := vol1
	vol2.ID, vol2.Name = "22222222-1111-4111-8111-111111111111", "db"
	vol3 := vol1
	vol3.ID, vol3.Name = "33333333-1111-4111-8111-111111111111", "logs"
	snapC := snapB
	snapC.ID, snapC.Name = "cccccccc-1111-4111-8111-111111111111", "c"
	t1, t2 := done(queued("t1", "volume.create", "volume", vol1.ID, "")), queued("t2", "snapshot.create", "snapshot", snapA.ID, vol1.ID)

	tests := []struct {
		name  string
		setup func(f *fakeAPI)
		args  []string
		want  any
	}{
		{"volumes", func(f *fakeAPI) {
			pages(f, "/v1/volumes", []apitypes.Volume{vol1, vol2}, []apitypes.Volume{vol3})
		}, []string{"volume", "list"}, []apitypes.Volume{vol1, vol2, vol3}},
		{"snapshots", func(f *fakeAPI) {
			f.on("GET /v1/volumes/web", 200, vol1)
			pages(f, "/v1/volumes/"+vol1.ID+"/snapshots", []apitypes.Snapshot{snapA}, []apitypes.Snapshot{snapB, snapC})
		}, []string{"snapshot", "list", "web"}, []apitypes.Snapshot{snapA, snapB, snapC}},
		{"snapshot tree", func(f *fakeAPI) {
			f.on("GET /v1/volumes/web", 200, vol1)
			pages(f, "/v1/volumes/"+vol1.ID+"/snapshots", []apitypes.Snapshot{snapA}, []apitypes.Snapshot{snapB})
		}, []string{"snapshot", "list", "web", "--tree"}, []apitypes.Snapshot{snapA, snapB}},
		{"tasks", func(f *fakeAPI) {
			pages(f, "/v1/tasks", []apitypes.Task{t2}, []apitypes.Task{t1})
		}, []string{"task", "list"}, []apitypes.Task{t2, t1}},
		{"projects", func(f *fakeAPI) {
			pages(f, "/v1/projects", []apitypes.Project{{Name: "default"}}, []apitypes.Project{{Name: "p2"}})
		}, []string{"project", "list"}, []apitypes.Project{{Name: "default"}, {Name: "p2"}}},
		{"tokens", func(f *fakeAPI) {
			pages(f, "/v1/tokens", []apitypes.Token{{Name: "admin"}}, []apitypes.Token{{Name: "ci"}})
		}, []string{"token", "list"}, []apitypes.Token{{Name: "admin"}, {Name: "ci"}}},
		{"nodes", func(f *fakeAPI) {
			pages(f, "/v1/nodes", []apitypes.Node{{Name: "n1"}}, []apitypes.Node{{Name: "n2"}})
		}, []string{"node", "list"}, []apitypes.Node{{Name: "n1"}, {Name: "n2"}}},
		{"empty list is []", func(f *fakeAPI) {
			f.on("GET /v1/volumes", 200, apitypes.List[apitypes.Volume]{})
		}, []string{"volume", "list"}, []apitypes.Volume{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeAPI(t)
			tt.setup(f)
			out, stderr, code := cairnAt(t, f, append(tt.args, "-o", "json")...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			if !strings.HasPrefix(strings.TrimSpace(out), "[") {
				t.Errorf("output is not an array: %s", out)
			}
			sameJSON(t, out, tt.want)
		})
	}
}

func TestTaskListFilters(t *testing.T) {
	f := newFakeAPI(t)
	f.on("GET /v1/tasks", 200, apitypes.List[apitypes.Task]{Items: []apitypes.Task{queued("t1", "volume.grow", "volume", vol1.ID, "")}})
	out, _, code := cairnAt(t, f, "task", "list", "--state", "queued", "--volume", "web")
	if code != 0 || f.got()[0] != "GET /v1/tasks?limit=1000&state=queued&volume=web" {
		t.Fatalf("exit %d, requests %v", code, f.got())
	}
	if !strings.Contains(out, "ID") || !strings.Contains(out, "volume.grow") {
		t.Errorf("table:\n%s", out)
	}
}

// action sets up a fake for an action: the POST answers a queued task, the
// task's first wait answers it running and the second succeeded.
func action(f *fakeAPI, pattern string, task apitypes.Task) {
	f.on(pattern, 202, task)
	var mu sync.Mutex
	n := 0
	f.mux.HandleFunc("GET /v1/tasks/"+task.ID, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("wait") == "" {
			reply(w, 400, apiError("invalid", "the CLI should let the server wait"))
			return
		}
		mu.Lock()
		n++
		running := n == 1
		mu.Unlock()
		t := task
		if running {
			t.State, t.BytesDone, t.BytesTotal = apitypes.TaskRunning, 5, 10
		} else {
			t = done(t)
		}
		reply(w, 200, t)
	})
}

func TestActionOutputs(t *testing.T) {
	export := apitypes.Export{ID: "eeeeeeee-1111-4111-8111-111111111111", VolumeID: vol1.ID, SnapshotID: &snapA.ID,
		URI: "nbd://127.0.0.1:10809/x7f3k2", State: "ready", CreatedAt: t0}
	createVol := queued("t1", apitypes.OpVolumeCreate, "volume", vol1.ID, "")
	createSnap := queued("t2", apitypes.OpSnapshotCreate, "snapshot", snapB.ID, vol1.ID)
	exportTask := queued("t3", apitypes.OpExportCreate, "export", export.ID, vol1.ID)
	deleteVol := queued("t4", apitypes.OpVolumeDelete, "volume", vol1.ID, "")
	apply := queued("t5", apitypes.OpSnapshotApply, "volume", vol1.ID, "")
	apply.Result = map[string]string{"saved_snapshot_id": snapB.ID}
	toVol := queued("t6", apitypes.OpSnapshotToVol, "volume", "99999999-1111-4111-8111-111111111111", vol1.ID)
	newVol := vol1
	newVol.ID, newVol.Name = toVol.ResourceID, "copy"

	common := func(f *fakeAPI) {
		f.on("GET /v1/volumes/"+vol1.ID, 200, vol1)
		f.on("GET /v1/volumes/"+newVol.ID, 200, newVol)
		f.on("GET /v1/volumes/"+vol1.ID+"/snapshots/"+snapB.ID, 200, snapB)
		f.on("GET /v1/volumes/"+vol1.ID+"/exports/"+export.ID, 200, export)
		action(f, "POST /v1/volumes", createVol)
		action(f, "POST /v1/volumes/web/snapshots", createSnap)
		action(f, "POST /v1/volumes/web/exports", exportTask)
		action(f, "DELETE /v1/volumes/web", deleteVol)
		action(f, "POST /v1/volumes/web/snapshots/a/apply", apply)
		action(f, "POST /v1/volumes/web/snapshots/a/to-volume", toVol)
	}
	tests := []struct {
		name     string
		args     []string
		json     any    // want with -o json
		plain    string // want in plain output (substring)
		requests []string
	}{
		{name: "volume create", args: []string{"volume", "create", "web", "--size", "10G"}, json: vol1,
			plain: "created volume web (" + vol1.ID + "): 10 GiB, data, node n1, ready"},
		{name: "snapshot create", args: []string{"snapshot", "create", "web", "--name", "b"}, json: snapB,
			plain: "created snapshot web@b (" + snapB.ID + ")"},
		{name: "export snapshot", args: []string{"volume", "export", "web@a"}, json: export, plain: export.URI + "\n"},
		{name: "volume delete", args: []string{"volume", "delete", "web"}, json: done(deleteVol), plain: "deleted volume web"},
		{name: "apply saving current", args: []string{"snapshot", "apply", "web@a", "--save-current"}, json: vol1,
			plain: "the former state is saved as snapshot b (" + snapB.ID + ")"},
		{name: "to-volume", args: []string{"snapshot", "to-volume", "web@a", "--name", "copy"}, json: newVol,
			plain: "created volume copy (" + newVol.ID + ")"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeAPI(t)
			common(f)
			out, stderr, code := cairnAt(t, f, append(tt.args, "-o", "json")...)
			if code != 0 {
				t.Fatalf("json: exit %d: %s", code, stderr)
			}
			sameJSON(t, out, tt.json)

			f = newFakeAPI(t)
			common(f)
			out, stderr, code = cairnAt(t, f, tt.args...)
			if code != 0 {
				t.Fatalf("plain: exit %d: %s", code, stderr)
			}
			if !strings.Contains(out, tt.plain) {
				t.Errorf("plain output %q, want it to contain %q", out, tt.plain)
			}
			if stderr != "" {
				t.Errorf("stderr %q, want nothing (no bar off a terminal)", stderr)
			}
		})
	}

	t.Run("no-wait prints the queued task", func(t *testing.T) {
		f := newFakeAPI(t)
		common(f)
		out, _, code := cairnAt(t, f, "volume", "create", "web", "--size", "10G", "--no-wait", "-o", "json")
		if code != 0 {
			t.Fatalf("exit %d", code)
		}
		sameJSON(t, out, createVol)
		for _, r := range f.got() {
			if strings.HasPrefix(r, "GET /v1/tasks/") {
				t.Errorf("--no-wait waited: %v", f.got())
			}
		}
	})
	t.Run("request body", func(t *testing.T) {
		f := newFakeAPI(t)
		var body apitypes.VolumeImport
		f.mux.HandleFunc("POST /v1/volumes/import", func(w http.ResponseWriter, r *http.Request) {
			_ = json.NewDecoder(r.Body).Decode(&body)
			reply(w, 202, createVol)
		})
		_, _, code := cairnAt(t, f, "volume", "import", "web", "disk.img", "--format", "raw", "--kind", "root", "--no-wait")
		wd, _ := os.Getwd()
		want := apitypes.VolumeImport{Name: "web", Path: filepath.Join(wd, "disk.img"), Format: "raw", Kind: "root"}
		if code != 0 || body != want {
			t.Errorf("exit %d, body %+v, want %+v", code, body, want)
		}
	})
}

func TestSnapshotTreeOutput(t *testing.T) {
	f := newFakeAPI(t)
	v := vol1
	v.HeadParentID = &snapB.ID
	f.on("GET /v1/volumes/web", 200, v)
	f.on("GET /v1/volumes/"+vol1.ID+"/snapshots", 200, apitypes.List[apitypes.Snapshot]{Items: []apitypes.Snapshot{snapA, snapB}})
	out, _, code := cairnAt(t, f, "snapshot", "list", "web", "--tree")
	want := "" +
		"a  aaaaaaaa  2025-03-01 10:00:00\n" +
		"└── b  bbbbbbbb  2025-03-01 10:00:01\n" +
		"    └── ● now (head)\n"
	if code != 0 || out != want {
		t.Errorf("exit %d, output:\n%s\nwant:\n%s", code, out, want)
	}
}

func TestUnexport(t *testing.T) {
	live := apitypes.Export{ID: "e-live", VolumeID: vol1.ID, URI: "nbd://h/live", Writable: true}
	ofA := apitypes.Export{ID: "e-a", VolumeID: vol1.ID, SnapshotID: &snapA.ID, URI: "nbd://h/a"}
	ofB := apitypes.Export{ID: "e-b", VolumeID: vol1.ID, SnapshotID: &snapB.ID, URI: "nbd://h/b"}
	setup := func(f *fakeAPI) {
		f.on("GET /v1/volumes/web", 200, vol1)
		f.on("GET /v1/volumes/"+vol1.ID+"/snapshots/a", 200, snapA)
		f.on("GET /v1/volumes/"+vol1.ID+"/exports", 200, apitypes.List[apitypes.Export]{Items: []apitypes.Export{live, ofA, ofB}})
		for _, e := range []apitypes.Export{live, ofA, ofB} {
			action(f, "DELETE /v1/volumes/"+vol1.ID+"/exports/"+e.ID, queued("t-"+e.ID, apitypes.OpExportDelete, "export", e.ID, vol1.ID))
		}
	}
	for _, tt := range []struct{ arg, deleted string }{{"web@a", "e-a"}, {"web", "e-live"}} {
		f := newFakeAPI(t)
		setup(f)
		out, stderr, code := cairnAt(t, f, "volume", "unexport", tt.arg, "-o", "json")
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", tt.arg, code, stderr)
		}
		var deletes []string
		for _, r := range f.got() {
			if strings.HasPrefix(r, "DELETE") {
				deletes = append(deletes, r)
			}
		}
		if len(deletes) != 1 || !strings.HasSuffix(deletes[0], "/exports/"+tt.deleted) {
			t.Errorf("%s: deletes %v, want the export %s", tt.arg, deletes, tt.deleted)
		}
		var task apitypes.Task
		if err := json.Unmarshal([]byte(out), &task); err != nil || task.State != apitypes.TaskSucceeded {
			t.Errorf("%s: output %s", tt.arg, out)
		}
	}
	f := newFakeAPI(t)
	f.on("GET /v1/volumes/web", 200, vol1)
	f.on("GET /v1/volumes/"+vol1.ID+"/exports", 200, apitypes.List[apitypes.Export]{})
	if _, _, code := cairnAt(t, f, "volume", "unexport", "web"); code != 3 {
		t.Errorf("unexport of a volume without exports: exit %d, want 3", code)
	}
}

func TestLoginAndPrecedence(t *testing.T) {
	who := map[string]any{
		"token":   apitypes.Token{Name: "admin", Role: "admin", Project: "system"},
		"project": apitypes.Project{Name: "default"},
	}
	fa, fb := newFakeAPI(t), newFakeAPI(t)
	for _, f := range []*fakeAPI{fa, fb} {
		f.on("GET /v1/whoami", 200, who)
		f.on("GET /v1/volumes", 200, apitypes.List[apitypes.Volume]{Items: []apitypes.Volume{vol1}})
	}
	cfgDir := isolate(t)

	out, stderr, code := cairn(t, "login", "--server", fa.URL, "--token", "tok-a", "--project", "p1")
	if code != 0 || !strings.Contains(out, "logged in") {
		t.Fatalf("login: exit %d: %s %s", code, out, stderr)
	}
	path := filepath.Join(cfgDir, "cairn", "config.json")
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("config file: %v, mode %v", err, st.Mode())
	}
	if fa.auth[0] != "Bearer tok-a" || fa.projects[0] != "p1" {
		t.Errorf("login checked with %q %q", fa.auth[0], fa.projects[0])
	}

	// The config file alone.
	if _, stderr, code := cairn(t, "volume", "list"); code != 0 {
		t.Fatalf("after login: exit %d: %s", code, stderr)
	}
	if n := len(fa.auth); fa.auth[n-1] != "Bearer tok-a" || fa.projects[n-1] != "p1" {
		t.Errorf("config not used: %q %q", fa.auth[n-1], fa.projects[n-1])
	}
	// The environment beats the config file.
	t.Setenv(EnvServer, fb.URL)
	t.Setenv(EnvToken, "tok-env")
	t.Setenv(EnvProject, "p-env")
	cairn(t, "volume", "list")
	if n := len(fb.auth); n != 1 || fb.auth[0] != "Bearer tok-env" || fb.projects[0] != "p-env" {
		t.Errorf("env not used: %v %v", fb.auth, fb.projects)
	}
	// Flags beat the environment.
	cairn(t, "volume", "list", "--token", "tok-flag", "--project", "p-flag")
	if n := len(fb.auth); fb.auth[n-1] != "Bearer tok-flag" || fb.projects[n-1] != "p-flag" {
		t.Errorf("flags not used: %v %v", fb.auth, fb.projects)
	}

	// A token the server refuses is not saved.
	t.Setenv(EnvServer, "")
	t.Setenv(EnvToken, "")
	t.Setenv(EnvProject, "")
	fc := newFakeAPI(t)
	fc.on("GET /v1/whoami", 401, apiError("unauthorized", "invalid token"))
	if _, _, code := cairn(t, "login", "--server", fc.URL, "--token", "bad"); code != 6 {
		t.Errorf("login with a bad token: exit %d, want 6", code)
	}
	b, _ := os.ReadFile(path)
	if !strings.Contains(string(b), "tok-a") {
		t.Errorf("config changed by a failed login: %s", b)
	}

	if out, _, code := cairn(t, "logout"); code != 0 || !strings.Contains(out, "logged out") {
		t.Errorf("logout: exit %d: %s", code, out)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("config file still there after logout: %v", err)
	}
}

func TestAdminTokenFileFallback(t *testing.T) {
	f := newFakeAPI(t)
	f.on("GET /v1/volumes", 200, apitypes.List[apitypes.Volume]{})
	isolate(t)
	wd, _ := os.Getwd()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "cairn-data"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, DefaultAdminTokenFile), []byte("admin-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chdir(dir); err != nil {
		t.Fatal(err)
	}
	defer os.Chdir(wd)
	if _, stderr, code := cairn(t, "--server", f.URL, "volume", "list"); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if f.auth[0] != "Bearer admin-secret" {
		t.Errorf("Authorization %q, want the admin token file's", f.auth[0])
	}
}

func TestExtraNodeCommand(t *testing.T) {
	ran := false
	worker := &cobra.Command{Use: "node", Short: "Run the host worker", RunE: func(*cobra.Command, []string) error {
		ran = true
		return nil
	}}
	server := &cobra.Command{Use: "server", RunE: func(*cobra.Command, []string) error { return fmt.Errorf("boom") }}
	f := newFakeAPI(t)
	f.on("GET /v1/nodes", 200, apitypes.List[apitypes.Node]{Items: []apitypes.Node{{Name: "n1", State: "online"}}})
	isolate(t)

	run := func(args ...string) (string, int) {
		root := NewRoot(worker, server)
		var out, errOut bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&errOut)
		root.SetArgs(args)
		code := Main(root)
		return out.String() + errOut.String(), code
	}
	if _, code := run("node"); code != 0 || !ran {
		t.Errorf("`cairn node` did not run the worker: exit %d", code)
	}
	worker.ResetCommands()
	if out, code := run("--server", f.URL, "--token", "t", "node", "list"); code != 0 || !strings.Contains(out, "n1") {
		t.Errorf("`cairn node list`: exit %d: %s", code, out)
	}
	if _, code := run("server"); code != 1 {
		t.Errorf("an extra command's error: exit %d, want 1", code)
	}
}

// `cairn repo` works without a server: its help leaves out the server
// flags, and giving one is an error (exit 2), not silently ignored.
func TestRepoRefusesServerFlags(t *testing.T) {
	isolate(t)
	out, _, code := cairn(t, "repo", "backup", "--help")
	if code != 0 {
		t.Fatalf("repo backup --help: exit %d", code)
	}
	for _, flag := range []string{"--server", "--token", "--project", "--no-wait"} {
		if strings.Contains(out, flag) {
			t.Errorf("repo backup --help shows %s:\n%s", flag, out)
		}
	}
	for _, flag := range []string{"--repo", "--password-file", "--output", "--exclude"} {
		if !strings.Contains(out, flag) {
			t.Errorf("repo backup --help misses %s:\n%s", flag, out)
		}
	}
	// Hiding them there leaves them shown everywhere else.
	out, _, _ = cairn(t, "volume", "list", "--help")
	if !strings.Contains(out, "--server") || !strings.Contains(out, "--no-wait") {
		t.Errorf("volume list --help lost the server flags:\n%s", out)
	}
	for _, args := range [][]string{
		{"repo", "backups", "--server", "http://127.0.0.1:1", "--repo", t.TempDir()},
		{"--token", "tok", "repo", "init", "--repo", t.TempDir()},
		{"repo", "verify", "--no-wait"},
		{"repo", "stats", "--project", "p"},
	} {
		_, errOut, code := cairn(t, args...)
		if code != 2 || !strings.Contains(errOut, "has no effect on `cairn repo`") {
			t.Errorf("cairn %v: exit %d, stderr %q; want 2 and the flag refused", args, code, errOut)
		}
	}
}

// The password hint follows only a wrong repository password, not refused
// or missing S3 credentials, which carry their own advice.
func TestRepoPasswordHint(t *testing.T) {
	isolate(t)
	dir := filepath.Join(t.TempDir(), "repo")
	t.Setenv(EnvPassword, "right")
	if _, errOut, code := cairn(t, "repo", "init", "--repo", dir); code != 0 {
		t.Fatalf("init: exit %d: %s", code, errOut)
	}
	t.Setenv(EnvPassword, "wrong")
	_, errOut, code := cairn(t, "repo", "backups", "--repo", dir)
	if code != 6 || !strings.Contains(errOut, "wrong password") || !strings.Contains(errOut, "Check the password") {
		t.Errorf("wrong password: exit %d, stderr %q", code, errOut)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	_, errOut, code = cairn(t, "repo", "backups", "--repo", "s3:http://127.0.0.1:1/bucket")
	if code != 6 || !strings.Contains(errOut, "no S3 credentials") || strings.Contains(errOut, "Check the password") {
		t.Errorf("no S3 credentials: exit %d, stderr %q", code, errOut)
	}
}

// A command stopped by a signal says so and exits 128 + the signal's number.
func TestInterrupted(t *testing.T) {
	root := &cobra.Command{Use: "cairn", SilenceErrors: true, SilenceUsage: true}
	started := make(chan struct{})
	root.AddCommand(&cobra.Command{Use: "wait", RunE: func(cmd *cobra.Command, _ []string) error {
		close(started)
		<-cmd.Context().Done()
		return fmt.Errorf("waiting: %w", cmd.Context().Err())
	}})
	var errOut bytes.Buffer
	root.SetErr(&errOut)
	root.SetArgs([]string{"wait"})
	go func() {
		<-started
		syscall.Kill(os.Getpid(), syscall.SIGINT)
	}()
	if code := Main(root); code != 130 || errOut.String() != "cairn: interrupted by SIGINT\n" {
		t.Fatalf("exit %d, stderr %q; want 130 and the interruption", code, errOut.String())
	}
}

// Ctrl-C while waiting for a task stops the wait, not the task, and says so.
func TestInterruptedWait(t *testing.T) {
	f := newFakeAPI(t)
	task := queued("t1", apitypes.OpVolumeCreate, "volume", vol1.ID, "")
	f.on("POST /v1/volumes", 202, task)
	polled := make(chan struct{}, 1)
	f.mux.HandleFunc("GET /v1/tasks/t1", func(w http.ResponseWriter, r *http.Request) {
		select {
		case polled <- struct{}{}:
		default:
		}
		<-r.Context().Done() // a long poll that the client ends
	})
	go func() {
		<-polled
		syscall.Kill(os.Getpid(), syscall.SIGINT)
	}()
	_, errOut, code := cairnAt(t, f, "volume", "create", "web", "--size", "10G")
	if code != 130 || errOut != "cairn: interrupted by SIGINT\ncairn: stopped waiting; task t1 goes on (follow it with: cairn task wait t1)\n" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	for _, req := range f.got() {
		if strings.Contains(req, "cancel") || strings.HasPrefix(req, "DELETE") {
			t.Errorf("the interrupted wait touched the task: %s", req)
		}
	}
}
