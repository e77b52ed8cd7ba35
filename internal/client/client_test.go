package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/core"
)

// nodeAPI is the interface the node package declares; *Client must meet it.
type nodeAPI interface {
	Register(context.Context, apitypes.NodeRegister) (apitypes.Node, error)
	Heartbeat(context.Context, apitypes.NodeHeartbeat) error
	Claim(context.Context, apitypes.NodeClaim) (*apitypes.NodeTask, error)
	Progress(ctx context.Context, taskID string, p apitypes.NodeProgress) (apitypes.NodeCancelCheck, error)
	Complete(ctx context.Context, taskID string, c apitypes.NodeComplete) error
	Inventory(context.Context, apitypes.NodeInventory) (apitypes.NodeVolumes, error)
}

var _ nodeAPI = (*Client)(nil)

func serve(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func TestErrors(t *testing.T) {
	tests := []struct {
		status  int
		body    string
		kind    core.Kind
		code    string
		message string
	}{
		{400, `{"code":"invalid","message":"bad size"}`, core.KindInvalid, "invalid", "bad size"},
		{401, `{"code":"unauthorized","message":"bad token"}`, core.KindUnauthorized, "unauthorized", "bad token"},
		{403, `{"code":"forbidden","message":"admin only"}`, core.KindForbidden, "forbidden", "admin only"},
		{404, `{"code":"not_found","message":"volume \"x\" not found"}`, core.KindNotFound, "not_found", `volume "x" not found`},
		{409, `{"code":"nothing_to_revert","message":"no snapshot to revert to"}`, core.KindConflict, "nothing_to_revert", "no snapshot to revert to"},
		{422, `{"code":"corrupt","message":"checksum"}`, core.KindCorrupt, "corrupt", "checksum"},
		{500, `{"code":"internal","message":"boom"}`, core.KindInternal, "internal", "boom"},
		{503, `{"code":"unavailable","message":"shutting down"}`, core.KindInternal, "unavailable", "shutting down"},
		// No usable body: the status text.
		{404, `not json`, core.KindNotFound, "not_found", "Not Found"},
		{409, ``, core.KindConflict, "conflict", "Conflict"},
		{502, `<html>bad gateway</html>`, core.KindInternal, "internal", "Bad Gateway"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d %s", tt.status, tt.body), func(t *testing.T) {
			srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.status)
				fmt.Fprint(w, tt.body)
			})
			_, err := New(srv.URL, "tok").GetVolume(context.Background(), "x")
			var ce *core.Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %v (%T), want a *core.Error", err, err)
			}
			if ce.Kind != tt.kind || ce.Code != tt.code || ce.Message != tt.message {
				t.Errorf("got kind %d code %q message %q, want %d %q %q", ce.Kind, ce.Code, ce.Message, tt.kind, tt.code, tt.message)
			}
		})
	}
}

func TestTransportErrorIsInternal(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	_, err := New(url, "tok").GetVolume(context.Background(), "x")
	if err == nil || core.KindOf(err) != core.KindInternal {
		t.Fatalf("error %v, want a KindInternal error", err)
	}
}

func TestHeadersAndPaths(t *testing.T) {
	var got *http.Request
	var body []byte
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		got = r.Clone(context.Background())
		body, _ = io.ReadAll(r.Body)
		writeJSON(w, 202, apitypes.Task{ID: "t1", State: apitypes.TaskQueued})
	})
	c := New(srv.URL+"/", "secret", WithProject("alpha"))
	task, err := c.ApplySnapshot(context.Background(), "vol 1", "s/2", apitypes.SnapshotApply{SaveCurrent: true})
	if err != nil {
		t.Fatal(err)
	}
	if task.ID != "t1" {
		t.Errorf("task %+v", task)
	}
	if h := got.Header.Get("Authorization"); h != "Bearer secret" {
		t.Errorf("Authorization %q", h)
	}
	if h := got.Header.Get("Cairn-Project"); h != "alpha" {
		t.Errorf("Cairn-Project %q", h)
	}
	if got.Method != http.MethodPost || got.URL.EscapedPath() != "/v1/volumes/vol%201/snapshots/s%2F2/apply" {
		t.Errorf("request %s %s", got.Method, got.URL.EscapedPath())
	}
	if string(body) != `{"save_current":true}` {
		t.Errorf("body %s", body)
	}

	// Without a project, no header.
	if _, err := New(srv.URL, "secret").CreateVolume(context.Background(), apitypes.VolumeCreate{Name: "v", Size: 1 << 30}); err != nil {
		t.Fatal(err)
	}
	if _, ok := got.Header["Cairn-Project"]; ok {
		t.Errorf("Cairn-Project sent without a project")
	}
}

func TestQueries(t *testing.T) {
	var queries []string
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		queries = append(queries, r.Method+" "+r.URL.Path+"?"+r.URL.RawQuery)
		switch r.Method {
		case http.MethodDelete:
			writeJSON(w, 202, apitypes.Task{ID: "t"})
		default:
			writeJSON(w, 200, apitypes.List[apitypes.Task]{})
		}
	})
	c := New(srv.URL, "tok")
	ctx := context.Background()
	_, _ = c.DeleteVolume(ctx, "v", true)
	_, _ = c.DeleteVolume(ctx, "v", false)
	_, _ = c.DeleteSnapshot(ctx, "v", "s", true)
	_, _ = c.ListTasks(ctx, TaskFilter{State: "running", Volume: "v"}, ListOptions{Limit: 5, Cursor: "c1"})
	_, _ = c.ListTasks(ctx, TaskFilter{}, ListOptions{})
	want := []string{
		"DELETE /v1/volumes/v?purge=true",
		"DELETE /v1/volumes/v?",
		"DELETE /v1/volumes/v/snapshots/s?subtree=true",
		"GET /v1/tasks?cursor=c1&limit=5&state=running&volume=v",
		"GET /v1/tasks?",
	}
	if strings.Join(queries, "\n") != strings.Join(want, "\n") {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(queries, "\n"), strings.Join(want, "\n"))
	}
}

func TestAllFollowsCursors(t *testing.T) {
	pages := map[string]apitypes.List[apitypes.Volume]{
		"":   {Items: []apitypes.Volume{{Name: "a"}, {Name: "b"}}, NextCursor: "p2"},
		"p2": {Items: []apitypes.Volume{{Name: "c"}}, NextCursor: "p3"},
		"p3": {Items: []apitypes.Volume{{Name: "d"}}},
	}
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, pages[r.URL.Query().Get("cursor")])
	})
	vols, err := New(srv.URL, "tok").AllVolumes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, v := range vols {
		names = append(names, v.Name)
	}
	if strings.Join(names, ",") != "a,b,c,d" {
		t.Errorf("got %v", names)
	}
}

func TestAllEmptyIsNotNil(t *testing.T) {
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"items":null}`)
	})
	nodes, err := New(srv.URL, "tok").AllNodes(context.Background())
	if err != nil || nodes == nil || len(nodes) != 0 {
		t.Fatalf("got %#v, %v; want an empty non-nil slice", nodes, err)
	}
}

func TestAllStopsOnCursorLoop(t *testing.T) {
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, apitypes.List[apitypes.Project]{Items: []apitypes.Project{{Name: "p"}}, NextCursor: "same"})
	})
	if _, err := New(srv.URL, "tok").AllProjects(context.Background()); !errors.Is(err, errCursorLoop) {
		t.Fatalf("error %v, want errCursorLoop", err)
	}
}

func TestWaitTask(t *testing.T) {
	for _, final := range []apitypes.Task{
		{ID: "t1", State: apitypes.TaskSucceeded, BytesDone: 100, BytesTotal: 100},
		{ID: "t1", State: apitypes.TaskFailed, Error: "no space left", ErrorCode: "no_space"},
		{ID: "t1", State: apitypes.TaskCanceled},
	} {
		t.Run(final.State, func(t *testing.T) {
			var calls atomic.Int32
			srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/v1/tasks/t1" || r.URL.Query().Get("wait") != "2s" {
					t.Errorf("request %s", r.URL)
				}
				switch calls.Add(1) {
				case 1:
					writeJSON(w, 200, apitypes.Task{ID: "t1", State: apitypes.TaskQueued})
				case 2:
					writeJSON(w, 200, apitypes.Task{ID: "t1", State: apitypes.TaskRunning, BytesDone: 50, BytesTotal: 100})
				default:
					writeJSON(w, 200, final)
				}
			})
			var seen []string
			got, err := New(srv.URL, "tok").WaitTask(context.Background(), "t1", func(t apitypes.Task) {
				seen = append(seen, t.State)
			})
			if got.State != final.State {
				t.Errorf("final state %q, want %q", got.State, final.State)
			}
			if want := "queued,running," + final.State; strings.Join(seen, ",") != want {
				t.Errorf("progress saw %v, want %s", seen, want)
			}
			switch final.State {
			case apitypes.TaskSucceeded:
				if err != nil {
					t.Errorf("error %v", err)
				}
			case apitypes.TaskFailed:
				if core.KindOf(err) != core.KindTaskFailed || core.CodeOf(err) != "no_space" ||
					err.Error() != "task t1 failed: no space left" {
					t.Errorf("error %v (kind %d, code %s)", err, core.KindOf(err), core.CodeOf(err))
				}
			case apitypes.TaskCanceled:
				if core.KindOf(err) != core.KindTaskFailed {
					t.Errorf("error %v, want KindTaskFailed", err)
				}
			}
		})
	}
}

func TestWaitTaskAPIError(t *testing.T) {
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 404, apitypes.Error{Code: "not_found", Message: "no task t9"})
	})
	_, err := New(srv.URL, "tok").WaitTask(context.Background(), "t9", nil)
	if !core.IsNotFound(err) {
		t.Fatalf("error %v, want not found", err)
	}
}

func TestNodeAPI(t *testing.T) {
	var claims atomic.Int32
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer node-token" || r.Method != http.MethodPost {
			t.Errorf("request %s %s %v", r.Method, r.URL, r.Header)
		}
		switch r.URL.Path {
		case "/v1/node/register":
			var in apitypes.NodeRegister
			_ = json.NewDecoder(r.Body).Decode(&in)
			writeJSON(w, 200, apitypes.Node{Name: "n1", Address: in.Address})
		case "/v1/node/heartbeat":
			w.WriteHeader(204)
		case "/v1/node/claim":
			if claims.Add(1) == 1 {
				w.WriteHeader(204)
				return
			}
			writeJSON(w, 200, apitypes.NodeTask{Task: apitypes.Task{ID: "t1"}, Plan: apitypes.Plan{Op: apitypes.OpVolumeCreate, Size: 4096}})
		case "/v1/node/tasks/t1/progress":
			writeJSON(w, 200, apitypes.NodeCancelCheck{Cancel: true})
		case "/v1/node/tasks/t1/complete":
			w.WriteHeader(204)
		case "/v1/node/inventory":
			writeJSON(w, 200, apitypes.NodeVolumes{Volumes: []apitypes.NodeVolume{{ID: "v1"}}})
		default:
			w.WriteHeader(404)
		}
	})
	var c nodeAPI = New(srv.URL, "node-token")
	ctx := context.Background()
	n, err := c.Register(ctx, apitypes.NodeRegister{Address: "10.0.0.1"})
	if err != nil || n.Address != "10.0.0.1" {
		t.Fatalf("register: %+v %v", n, err)
	}
	if err := c.Heartbeat(ctx, apitypes.NodeHeartbeat{}); err != nil {
		t.Fatal(err)
	}
	nt, err := c.Claim(ctx, apitypes.NodeClaim{WaitMS: 10})
	if nt != nil || err != nil {
		t.Fatalf("claim on 204: %+v %v, want nil, nil", nt, err)
	}
	nt, err = c.Claim(ctx, apitypes.NodeClaim{WaitMS: 10})
	if err != nil || nt == nil || nt.Task.ID != "t1" || nt.Plan.Size != 4096 {
		t.Fatalf("claim: %+v %v", nt, err)
	}
	cc, err := c.Progress(ctx, "t1", apitypes.NodeProgress{BytesDone: 1})
	if err != nil || !cc.Cancel {
		t.Fatalf("progress: %+v %v", cc, err)
	}
	if err := c.Complete(ctx, "t1", apitypes.NodeComplete{}); err != nil {
		t.Fatal(err)
	}
	inv, err := c.Inventory(ctx, apitypes.NodeInventory{})
	if err != nil || len(inv.Volumes) != 1 {
		t.Fatalf("inventory: %+v %v", inv, err)
	}
}
