package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/client"
	"github.com/cairn-backup/cairn/internal/core"
)

// rawCall sends a request with the validator in the loop and returns status and body.
func rawCall(t *testing.T, srv *serverProc, token, method, path, body string, hdr ...string) (int, apitypes.Error) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, srv.URL+path, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := validatingHTTP(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e apitypes.Error
	if resp.StatusCode >= 400 {
		if err := json.Unmarshal(b, &e); err != nil || e.Code == "" || e.Message == "" {
			t.Fatalf("%s %s: error body %q is not {code, message}", method, path, b)
		}
	}
	return resp.StatusCode, e
}

func TestAPIAuthRolesAndProjects(t *testing.T) {
	srv := startServer(t, serverOpts{})
	ctx := testCtx(t)
	admin := srv.Client(t)

	// No token, a wrong token, a malformed header.
	if st, e := rawCall(t, srv, "", "GET", "/v1/volumes", ""); st != 401 || e.Code != "unauthorized" {
		t.Fatalf("no token: %d %+v", st, e)
	}
	if st, _ := rawCall(t, srv, "cairn_wrong", "GET", "/v1/volumes", ""); st != 401 {
		t.Fatalf("wrong token: %d", st)
	}

	// Two projects, an operator and a viewer in each.
	for _, p := range []string{"alpha", "beta"} {
		if _, err := admin.CreateProject(ctx, apitypes.ProjectCreate{Name: p}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := admin.CreateProject(ctx, apitypes.ProjectCreate{Name: "alpha"}); core.KindOf(err) != core.KindConflict {
		t.Fatalf("duplicate project: %v", err)
	}
	if _, err := admin.CreateProject(ctx, apitypes.ProjectCreate{Name: "Bad Name"}); core.KindOf(err) != core.KindInvalid {
		t.Fatalf("bad project name: %v", err)
	}
	tok := func(project, role string) *client.Client {
		k, err := admin.CreateToken(ctx, apitypes.TokenCreate{Name: role + "-" + project, Project: project, Role: role})
		if err != nil {
			t.Fatal(err)
		}
		if k.Secret == "" {
			t.Fatal("token create did not return the secret")
		}
		return client.New(srv.URL, k.Secret, client.WithHTTPClient(validatingHTTP(t)))
	}
	opA, viewA, opB := tok("alpha", "operator"), tok("alpha", "viewer"), tok("beta", "operator")

	// The operator of alpha makes a volume; beta cannot see or touch it: 404.
	task := waitOK(t, opA)(opA.CreateVolume(ctx, apitypes.VolumeCreate{Name: "data1", Size: 1 << 20}))
	volID := task.ResourceID
	if _, err := opB.GetVolume(ctx, volID); core.KindOf(err) != core.KindNotFound {
		t.Fatalf("beta reads alpha's volume by id: %v, want 404", err)
	}
	if _, err := opB.GetVolume(ctx, "data1"); core.KindOf(err) != core.KindNotFound {
		t.Fatalf("beta reads alpha's volume by name: %v, want 404", err)
	}
	if _, err := opB.CreateSnapshot(ctx, volID, apitypes.SnapshotCreate{}); core.KindOf(err) != core.KindNotFound {
		t.Fatalf("beta snapshots alpha's volume: %v, want 404", err)
	}
	if _, err := opB.GetTask(ctx, task.ID); core.KindOf(err) != core.KindNotFound {
		t.Fatalf("beta reads alpha's task: %v, want 404", err)
	}
	if vs, err := opB.AllVolumes(ctx); err != nil || len(vs) != 0 {
		t.Fatalf("beta lists volumes: %v %v, want none", vs, err)
	}
	// The viewer reads but changes nothing: 403.
	if _, err := viewA.GetVolume(ctx, "data1"); err != nil {
		t.Fatalf("viewer read: %v", err)
	}
	if _, err := viewA.CreateSnapshot(ctx, "data1", apitypes.SnapshotCreate{}); core.KindOf(err) != core.KindForbidden {
		t.Fatalf("viewer snapshot: %v, want 403", err)
	}
	if _, err := viewA.DeleteVolume(ctx, "data1", false); core.KindOf(err) != core.KindForbidden {
		t.Fatalf("viewer delete: %v, want 403", err)
	}
	// Operators cannot manage projects or tokens, nor use another project.
	if _, err := opA.CreateProject(ctx, apitypes.ProjectCreate{Name: "gamma"}); core.KindOf(err) != core.KindForbidden {
		t.Fatalf("operator creates project: %v, want 403", err)
	}
	if st, _ := rawCall(t, srv, "", "GET", "/v1/volumes", "", apitypes.HeaderProject, "beta"); st != 401 {
		t.Fatalf("project header without token: %d", st)
	}
	// The admin acts in alpha with the project header.
	inAlpha := srv.Client(t, client.WithProject("alpha"))
	if v, err := inAlpha.GetVolume(ctx, "data1"); err != nil || v.ID != volID {
		t.Fatalf("admin in alpha: %v %v", v.ID, err)
	}
	if _, err := srv.Client(t, client.WithProject("nope")).AllVolumes(ctx); core.KindOf(err) != core.KindNotFound {
		t.Fatalf("admin in unknown project: %v, want 404", err)
	}
	// A project with volumes cannot be deleted.
	if err := admin.DeleteProject(ctx, "alpha"); core.KindOf(err) != core.KindConflict {
		t.Fatalf("delete non-empty project: %v, want 409", err)
	}
	// Node endpoints refuse user tokens.
	if _, err := opA.Claim(ctx, apitypes.NodeClaim{}); core.KindOf(err) != core.KindForbidden {
		t.Fatalf("user token on node API: %v, want 403", err)
	}
}

func TestAPIBadInput(t *testing.T) {
	srv := startServer(t, serverOpts{})
	ctx := testCtx(t)
	c := srv.Client(t)
	waitOK(t, c)(c.CreateVolume(ctx, apitypes.VolumeCreate{Name: "v1", Size: 1 << 20}))

	cases := []struct {
		method, path, body string
		status             int
		code               string
	}{
		{"POST", "/v1/volumes", `{"name":"UPPER","size":1048576}`, 400, "invalid"},
		{"POST", "/v1/volumes", `{"name":"ok","size":1000}`, 400, "invalid"},
		{"POST", "/v1/volumes", `{"name":"ok","size":-512}`, 400, "invalid"},
		{"POST", "/v1/volumes", `{"name":"ok","size":1048576,"kind":"swap"}`, 400, "invalid"},
		{"POST", "/v1/volumes", `{"name":"0b0f5d8e-1c2d-4e5f-8a9b-0c1d2e3f4a5b","size":1048576}`, 400, "invalid"},
		{"POST", "/v1/volumes", `{"name":"v1","size":1048576}`, 409, "name_taken"},
		{"POST", "/v1/volumes", `{"name":"x","size":1048576,"bogus":1}`, 400, "invalid"},
		{"POST", "/v1/volumes", `not json`, 400, "invalid"},
		{"POST", "/v1/volumes/import", `{"name":"imp","path":"relative.img"}`, 400, "invalid"},
		{"GET", "/v1/volumes/nope", ``, 404, "not_found"},
		{"GET", "/v1/volumes/0b0f5d8e-1c2d-4e5f-8a9b-0c1d2e3f4a5b", ``, 404, "not_found"},
		{"GET", "/v1/volumes/v1/snapshots/nope", ``, 404, "not_found"},
		{"POST", "/v1/volumes/v1/grow", `{"size":524288}`, 400, "invalid"},
		{"POST", "/v1/volumes/v1/revert", ``, 409, "nothing_to_revert"},
		{"GET", "/v1/volumes?limit=0", ``, 400, "invalid"},
		{"GET", "/v1/volumes?limit=5000", ``, 400, "invalid"},
		{"GET", "/v1/volumes?cursor=!!!", ``, 400, "invalid"},
		{"GET", "/v1/tasks/0b0f5d8e-1c2d-4e5f-8a9b-0c1d2e3f4a5b", ``, 404, "not_found"},
		{"GET", "/v1/tasks?state=sleeping", ``, 400, "invalid"},
		{"DELETE", "/v1/volumes/v1?purge=maybe", ``, 400, "invalid"},
		{"POST", "/v1/volumes/v1/snapshots", `{"name":"bad name"}`, 400, "invalid"},
		{"POST", "/v1/volumes/v1/exports", `{"snapshot":"nope"}`, 404, "not_found"},
		{"GET", "/v1/nowhere", ``, 404, "not_found"},
	}
	for _, tc := range cases {
		st, e := rawCall(t, srv, srv.Token, tc.method, tc.path, tc.body)
		if st != tc.status || e.Code != tc.code {
			t.Errorf("%s %s %s: got %d %q (%s), want %d %q", tc.method, tc.path, tc.body, st, e.Code, e.Message, tc.status, tc.code)
		}
	}
	// Nothing of the refused requests was kept.
	vs, err := c.AllVolumes(ctx)
	if err != nil || len(vs) != 1 {
		t.Fatalf("volumes after bad input: %d %v, want only v1", len(vs), err)
	}
}

func TestAPIPagination(t *testing.T) {
	srv := startServer(t, serverOpts{})
	ctx := testCtx(t)
	c := srv.Client(t)
	waitOK(t, c)(c.CreateVolume(ctx, apitypes.VolumeCreate{Name: "pages", Size: 1 << 20}))
	var want []string
	for i := 0; i < 7; i++ {
		name := fmt.Sprintf("s%02d", i)
		waitOK(t, c)(c.CreateSnapshot(ctx, "pages", apitypes.SnapshotCreate{Name: name}))
		want = append(want, name)
	}
	var got []string
	cursor := ""
	pages := 0
	for {
		l, err := c.ListSnapshots(ctx, "pages", client.ListOptions{Limit: 3, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if len(l.Items) > 3 {
			t.Fatalf("page of %d items with limit 3", len(l.Items))
		}
		for _, s := range l.Items {
			got = append(got, s.Name)
		}
		if l.NextCursor == "" {
			break
		}
		cursor = l.NextCursor
	}
	if pages != 3 || strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("pages %d, items %v; want 3 pages of %v in creation order", pages, got, want)
	}
	// Tasks page newest first without repeats.
	all, err := c.AllTasks(ctx, client.TaskFilter{})
	if err != nil || len(all) != 8 {
		t.Fatalf("tasks: %d %v, want 8", len(all), err)
	}
	seen := map[string]bool{}
	for _, tk := range all {
		if seen[tk.ID] {
			t.Fatalf("task %s listed twice", tk.ID)
		}
		seen[tk.ID] = true
	}
	if all[0].Kind != apitypes.OpSnapshotCreate || all[len(all)-1].Kind != apitypes.OpVolumeCreate {
		t.Fatalf("tasks not newest first: first %s, last %s", all[0].Kind, all[len(all)-1].Kind)
	}
}

func TestOpenAPIServed(t *testing.T) {
	srv := startServer(t, serverOpts{})
	resp, err := http.Get(srv.URL + "/v1/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	paths, _ := doc["paths"].(map[string]any)
	for _, p := range []string{"/v1/volumes", "/v1/volumes/{volume}/snapshots/{snapshot}/apply", "/v1/tasks/{task}", "/v1/node/claim"} {
		if _, ok := paths[p]; !ok {
			t.Errorf("openapi.json lacks %s", p)
		}
	}
	// /metrics answers in the Prometheus format.
	mresp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	if !bytes.Contains(b, []byte("cairn_task_duration_seconds")) && !bytes.Contains(b, []byte("go_goroutines")) {
		t.Fatalf("metrics: %s", b[:min(len(b), 300)])
	}
}
