package apitest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/httpapi"
	"github.com/cairn-backup/cairn/internal/httpapi/apitest"
)

func loadDocument(t *testing.T) *openapi3.T {
	t.Helper()
	data, err := httpapi.OpenAPIDocument()
	if err != nil {
		t.Fatalf("OpenAPIDocument: %v", err)
	}
	doc, err := openapi3.NewLoader().LoadFromData(data)
	if err != nil {
		t.Fatalf("load the JSON document: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("the document does not validate: %v", err)
	}
	return doc
}

func TestDocumentValidates(t *testing.T) {
	doc := loadDocument(t)
	if doc.OpenAPI != "3.0.3" {
		t.Errorf("openapi = %q, want 3.0.3", doc.OpenAPI)
	}
	if doc.Paths.Find("/v1/volumes/{volume}/snapshots/{snapshot}/apply") == nil {
		t.Errorf("the document lacks the apply operation")
	}
}

// TestDocumentConventions checks rules every operation follows, so that a new
// operation cannot quietly break them.
func TestDocumentConventions(t *testing.T) {
	doc := loadDocument(t)
	errorSchema := doc.Components.Schemas["Error"].Value
	// notTask lists the 202 answers that are not one Task: running a
	// schedule starts a task per volume and answers the runs it started.
	notTask := map[string]string{"POST /v1/schedules/{schedule}/run": "ScheduleRunList"}
	for path, item := range doc.Paths.Map() {
		if !strings.HasPrefix(path, "/v1/") {
			t.Errorf("%s: every path is under /v1", path)
		}
		for method, op := range item.Operations() {
			name := method + " " + path
			if op.Responses.Status(500) == nil {
				t.Errorf("%s: no 500 response", name)
			}
			public := op.Security != nil && len(*op.Security) == 0
			if !public && op.Responses.Status(401) == nil {
				t.Errorf("%s: no 401 response", name)
			}
			for code, ref := range op.Responses.Map() {
				if code[0] == '2' {
					continue
				}
				mt := ref.Value.Content.Get("application/json")
				if mt == nil || mt.Schema == nil || mt.Schema.Value != errorSchema {
					t.Errorf("%s: response %s does not carry the Error body", name, code)
				}
			}
			if ref := op.Responses.Status(202); ref != nil {
				want := "Task"
				if s, ok := notTask[name]; ok {
					want = s
				}
				mt := ref.Value.Content.Get("application/json")
				if mt == nil || mt.Schema == nil || mt.Schema.Value != doc.Components.Schemas[want].Value {
					t.Errorf("%s: a 202 answer carries a %s", name, want)
				}
			}
		}
	}
}

// TestDocumentMatchesAPITypes compares each component schema with the Go type
// of package apitypes that the server encodes and the client decodes: the same
// JSON fields, compatible types, pointers nullable, and in responses every
// field without omitempty required.
func TestDocumentMatchesAPITypes(t *testing.T) {
	doc := loadDocument(t)
	responses := map[string]any{
		"Error":             apitypes.Error{},
		"Project":           apitypes.Project{},
		"Whoami":            apitypes.Whoami{},
		"Token":             apitypes.Token{},
		"Volume":            apitypes.Volume{},
		"Snapshot":          apitypes.Snapshot{},
		"Export":            apitypes.Export{},
		"ExportCredentials": apitypes.ExportCredentials{},
		"Task":              apitypes.Task{},
		"Node":              apitypes.Node{},
		"ProjectList":       apitypes.List[apitypes.Project]{},
		"TokenList":         apitypes.List[apitypes.Token]{},
		"VolumeList":        apitypes.List[apitypes.Volume]{},
		"SnapshotList":      apitypes.List[apitypes.Snapshot]{},
		"ExportList":        apitypes.List[apitypes.Export]{},
		"TaskList":          apitypes.List[apitypes.Task]{},
		"NodeList":          apitypes.List[apitypes.Node]{},
		"NodeTask":          apitypes.NodeTask{},
		"Plan":              apitypes.Plan{},
		"NodeExport":        apitypes.NodeExport{},
		"NodeExportTLS":     apitypes.NodeExportTLS{},
		"NodeCancelCheck":   apitypes.NodeCancelCheck{},
		"Sidecar":           apitypes.Sidecar{},
		"SidecarSnapshot":   apitypes.SidecarSnapshot{},
		"NodeVolumes":       apitypes.NodeVolumes{},
		"NodeVolume":        apitypes.NodeVolume{},
		"NodeInventory":     apitypes.NodeInventory{},
		"InventoryVolume":   apitypes.InventoryVolume{},
		"InventorySnapshot": apitypes.InventorySnapshot{},
		"NodeRegister":      apitypes.NodeRegister{},
		"NodeClaim":         apitypes.NodeClaim{},
		"NodeProgress":      apitypes.NodeProgress{},
		"Repository":        apitypes.Repository{},
		"RepositoryList":    apitypes.List[apitypes.Repository]{},
		"NodeRepository":    apitypes.NodeRepository{},
		"NodeBackup":        apitypes.NodeBackup{},
		"Backup":            apitypes.Backup{},
		"BackupList":        apitypes.List[apitypes.Backup]{},
		"BackupExport":      apitypes.BackupExport{},
		"BackupExportList":  apitypes.List[apitypes.BackupExport]{},
		"Schedule":          apitypes.Schedule{},
		"ScheduleList":      apitypes.List[apitypes.Schedule]{},
		"ScheduleRun":       apitypes.ScheduleRun{},
		"ScheduleRunList":   apitypes.List[apitypes.ScheduleRun]{},
		"RetentionPreview":  apitypes.RetentionPreview{},
		"RetentionItem":     apitypes.RetentionItem{},
		"ScheduleNext":      apitypes.ScheduleNext{},
		// Frequency and Retention are parts of requests too; checked as
		// responses, every field the server always sends must be required.
		"Frequency": apitypes.Frequency{},
		"Retention": apitypes.Retention{},
	}
	// Request bodies: required lists what the server insists on, which may
	// be less than the fields the Go client always sends.
	requests := map[string]any{
		"ProjectCreate":      apitypes.ProjectCreate{},
		"TokenCreate":        apitypes.TokenCreate{},
		"VolumeCreate":       apitypes.VolumeCreate{},
		"VolumeImport":       apitypes.VolumeImport{},
		"VolumeGrow":         apitypes.VolumeGrow{},
		"SnapshotCreate":     apitypes.SnapshotCreate{},
		"SnapshotApply":      apitypes.SnapshotApply{},
		"SnapshotToVolume":   apitypes.SnapshotToVolume{},
		"ExportCreate":       apitypes.ExportCreate{},
		"NodeCreate":         apitypes.NodeCreate{},
		"NodeComplete":       apitypes.NodeComplete{},
		"RepositoryCreate":   apitypes.RepositoryCreate{},
		"RepositoryVerify":   apitypes.RepositoryVerify{},
		"BackupCreate":       apitypes.BackupCreate{},
		"BackupRestore":      apitypes.BackupRestore{},
		"BackupForget":       apitypes.BackupForget{},
		"BackupVerify":       apitypes.BackupVerify{},
		"BackupFiles":        apitypes.BackupFiles{},
		"BackupExportCreate": apitypes.BackupExportCreate{},
		"ScheduleCreate":     apitypes.ScheduleCreate{},
		"ScheduleUpdate":     apitypes.ScheduleUpdate{},
		"VolumeLabels":       apitypes.VolumeLabels{},
	}
	for name, v := range responses {
		checkSchema(t, doc, name, reflect.TypeOf(v), true)
	}
	for name, v := range requests {
		checkSchema(t, doc, name, reflect.TypeOf(v), false)
	}
	// Schemas made for the API only, without a Go type of their own.
	known := map[string]bool{"NextCursor": true, "NodeHeartbeat": true, "Role": true,
		"VolumeKind": true, "VolumeState": true, "SnapshotState": true, "TaskState": true, "TaskKind": true}
	for name := range doc.Components.Schemas {
		if _, ok := responses[name]; !ok && requests[name] == nil && !known[name] {
			t.Errorf("schema %s is compared with no apitypes type", name)
		}
	}
}

func checkSchema(t *testing.T, doc *openapi3.T, name string, typ reflect.Type, response bool) {
	t.Helper()
	ref := doc.Components.Schemas[name]
	if ref == nil {
		t.Errorf("no schema %s", name)
		return
	}
	s := ref.Value
	if s.AdditionalProperties.Has == nil || *s.AdditionalProperties.Has {
		t.Errorf("%s: additionalProperties must be false", name)
	}
	fields := map[string]bool{}
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i)
		tag := f.Tag.Get("json")
		jsonName, opts, _ := strings.Cut(tag, ",")
		if jsonName == "" || jsonName == "-" {
			t.Errorf("%s.%s: field without a JSON name", typ.Name(), f.Name)
			continue
		}
		fields[jsonName] = true
		omitempty := strings.Contains(opts, "omitempty")
		p := s.Properties[jsonName]
		if p == nil {
			t.Errorf("%s: no property %q for %s.%s", name, jsonName, typ.Name(), f.Name)
			continue
		}
		where := name + "." + jsonName
		required := slices.Contains(s.Required, jsonName)
		if response && !omitempty && !required {
			t.Errorf("%s: always present (no omitempty) but not required", where)
		}
		if omitempty && required {
			t.Errorf("%s: required but omitted when empty", where)
		}
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
			// A pointer with omitempty is absent rather than null.
			if !omitempty && !p.Value.Nullable {
				t.Errorf("%s: a pointer field must be nullable", where)
			}
		} else if p.Value.Nullable && ft.Kind() != reflect.Slice {
			t.Errorf("%s: nullable but not a pointer", where)
		}
		checkType(t, where, ft, p.Value)
	}
	for prop := range s.Properties {
		if !fields[prop] {
			t.Errorf("%s: property %q is not in %s", name, prop, typ.Name())
		}
	}
}

func checkType(t *testing.T, where string, typ reflect.Type, s *openapi3.Schema) {
	t.Helper()
	want := ""
	switch {
	case typ.Kind() == reflect.Pointer:
		// A pointer inside a slice or map (VolumeLabels' values) is null when unset.
		if !s.Nullable {
			t.Errorf("%s: a pointer must be nullable", where)
		}
		checkType(t, where, typ.Elem(), s)
		return
	case typ == reflect.TypeOf(time.Time{}):
		want = "string"
		if s.Format != "date-time" {
			t.Errorf("%s: a time needs format date-time, has %q", where, s.Format)
		}
	case typ.Kind() == reflect.String:
		want = "string"
	case typ.Kind() == reflect.Bool:
		want = "boolean"
	case typ.Kind() == reflect.Int || typ.Kind() == reflect.Int64:
		want = "integer"
	case typ.Kind() == reflect.Float64:
		want = "number"
	case typ.Kind() == reflect.Slice:
		want = "array"
		if s.Items != nil {
			checkType(t, where+"[]", typ.Elem(), s.Items.Value)
		}
	case typ.Kind() == reflect.Map:
		want = "object"
		if s.AdditionalProperties.Schema != nil {
			checkType(t, where+"{}", typ.Elem(), s.AdditionalProperties.Schema.Value)
		} else {
			t.Errorf("%s: a map needs an additionalProperties schema", where)
		}
	case typ.Kind() == reflect.Struct:
		want = "object"
	default:
		t.Errorf("%s: no rule for Go type %s", where, typ)
		return
	}
	if !s.Type.Is(want) {
		t.Errorf("%s: type %v, want %s for Go %s", where, s.Type, want, typ)
	}
}

// recorder is a testing.TB that keeps what Errorf reports instead of failing.
type recorder struct {
	testing.TB
	mu     sync.Mutex
	errors []string
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.errors
	r.errors = nil
	return e
}

const (
	volumeID   = "3f1c2a4e-8b7d-4c1a-9e2f-0a1b2c3d4e5f"
	snapshotID = "7d2e9c10-4b3a-4f5e-8a6b-1c2d3e4f5a6b"
	taskID     = "9a8b7c6d-5e4f-4a3b-9c2d-1e0f1a2b3c4d"
)

func validVolume() apitypes.Volume {
	at := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	head := snapshotID
	return apitypes.Volume{
		ID: volumeID, Name: "db", Project: "default", Kind: apitypes.KindData, Node: "host1",
		Size: 10 << 30, Allocated: 1 << 20, Format: "qcow2", State: apitypes.VolumeReady,
		HeadParentID: &head, SnapshotCount: 1, Exports: []apitypes.Export{},
		Labels: map[string]string{"app": "postgres"}, CreatedAt: at, UpdatedAt: at,
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// server answers a few fixed exchanges, good and bad.
func server(t *testing.T) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/volumes/good", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, validVolume())
	})
	mux.HandleFunc("GET /v1/volumes/bad", func(w http.ResponseWriter, r *http.Request) {
		// No state, and a field the document does not know.
		var m map[string]any
		b, _ := json.Marshal(validVolume())
		_ = json.Unmarshal(b, &m)
		delete(m, "state")
		m["colour"] = "blue"
		writeJSON(w, http.StatusOK, m)
	})
	mux.HandleFunc("GET /v1/volumes/import", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, validVolume()) // a volume named "import"
	})
	mux.HandleFunc("GET /v1/volumes/bad-id", func(w http.ResponseWriter, r *http.Request) {
		v := validVolume()
		v.ID = "vol-1"
		writeJSON(w, http.StatusOK, v)
	})
	mux.HandleFunc("GET /v1/volumes/nil-labels", func(w http.ResponseWriter, r *http.Request) {
		v := validVolume()
		v.Labels, v.Exports = nil, nil
		writeJSON(w, http.StatusOK, v)
	})
	mux.HandleFunc("GET /v1/volumes/teapot", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusTeapot, apitypes.Error{Code: "teapot", Message: "no"})
	})
	mux.HandleFunc("GET /v1/volumes/plain", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "ok")
	})
	accept := func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusAccepted, apitypes.Task{
			ID: taskID, Kind: apitypes.OpVolumeCreate, State: apitypes.TaskQueued, Project: "default",
			Node: "host1", VolumeID: volumeID, ResourceType: "volume", ResourceID: volumeID,
			Log: []string{}, CreatedAt: time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC),
		})
	}
	mux.HandleFunc("POST /v1/volumes", func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body["name"] == "strict" && body["size"] == nil {
			writeJSON(w, http.StatusBadRequest, apitypes.Error{Code: "invalid", Message: "size is required"})
			return
		}
		accept(w, r)
	})
	mux.HandleFunc("DELETE /v1/nodes/host1", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /v1/volumes", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, apitypes.List[apitypes.Volume]{Items: []apitypes.Volume{validVolume()}})
	})
	mux.HandleFunc("GET /v1/unknown", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{})
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "cairn_up 1\n")
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestValidator(t *testing.T) {
	srv := server(t)
	rec := &recorder{TB: t}
	client := &http.Client{Transport: apitest.NewValidator(rec).Transport(srv.Client().Transport)}

	cases := []struct {
		name, method, path, body string
		noContentType            bool
		wantStatus               int
		wantErrors               []string // substrings, one per expected report
	}{
		{name: "valid volume", method: "GET", path: "/v1/volumes/good", wantStatus: 200},
		{name: "volume without state, with an extra field", method: "GET", path: "/v1/volumes/bad", wantStatus: 200,
			wantErrors: []string{`"state"`}},
		{name: "volume named import", method: "GET", path: "/v1/volumes/import", wantStatus: 200},
		{name: "id not a UUID", method: "GET", path: "/v1/volumes/bad-id", wantStatus: 200,
			wantErrors: []string{`"/id"`}},
		{name: "null labels and exports", method: "GET", path: "/v1/volumes/nil-labels", wantStatus: 200,
			wantErrors: []string{"labels"}},
		{name: "undeclared status", method: "GET", path: "/v1/volumes/teapot", wantStatus: 418,
			wantErrors: []string{"status is not supported"}},
		{name: "wrong content type", method: "GET", path: "/v1/volumes/plain", wantStatus: 200,
			wantErrors: []string{"text/plain"}},
		{name: "valid create answered 202", method: "POST", path: "/v1/volumes",
			body: `{"name": "db", "size": 1073741824}`, wantStatus: 202},
		{name: "create without a content type", method: "POST", path: "/v1/volumes",
			body: `{"name": "db", "size": 1073741824}`, noContentType: true, wantStatus: 202},
		{name: "invalid create rejected with 400", method: "POST", path: "/v1/volumes",
			body: `{"name": "strict"}`, wantStatus: 400},
		{name: "invalid create accepted", method: "POST", path: "/v1/volumes",
			body: `{"name": "Not A Name", "size": 1073741824}`, wantStatus: 202,
			wantErrors: []string{"request accepted"}},
		{name: "list page", method: "GET", path: "/v1/volumes?limit=10&cursor=abc", wantStatus: 200},
		{name: "bad limit accepted", method: "GET", path: "/v1/volumes?limit=0", wantStatus: 200,
			wantErrors: []string{`"limit"`}},
		{name: "204", method: "DELETE", path: "/v1/nodes/host1", wantStatus: 204},
		{name: "path not in the document", method: "GET", path: "/v1/unknown", wantStatus: 200,
			wantErrors: []string{"no such operation"}},
		{name: "outside /v1", method: "GET", path: "/metrics", wantStatus: 200},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var body io.Reader
			if c.body != "" {
				body = strings.NewReader(c.body)
			}
			req, err := http.NewRequest(c.method, srv.URL+c.path, body)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer test")
			if c.body != "" && !c.noContentType {
				req.Header.Set("Content-Type", "application/json")
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != c.wantStatus {
				t.Fatalf("status %d, want %d (body %s)", resp.StatusCode, c.wantStatus, got)
			}
			if c.path == "/v1/volumes/good" && !json.Valid(got) {
				t.Errorf("the body did not reach the caller intact: %q", got)
			}
			errs := rec.take()
			for _, e := range errs {
				t.Logf("reported: %s", e)
			}
			if len(errs) != len(c.wantErrors) {
				t.Fatalf("got %d reports, want %d: %q", len(errs), len(c.wantErrors), errs)
			}
			for i, want := range c.wantErrors {
				if !strings.Contains(errs[i], want) {
					t.Errorf("report %q does not mention %q", errs[i], want)
				}
			}
		})
	}
}

// TestValidatorReportsBothProblems checks that one report names every
// problem of a body, not only the first.
func TestValidatorReportsBothProblems(t *testing.T) {
	srv := server(t)
	rec := &recorder{TB: t}
	client := &http.Client{Transport: apitest.NewValidator(rec).Transport(srv.Client().Transport)}
	resp, err := client.Get(srv.URL + "/v1/volumes/bad")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	errs := rec.take()
	if len(errs) != 1 {
		t.Fatalf("got %d reports, want 1: %q", len(errs), errs)
	}
	for _, want := range []string{"GET /v1/volumes/bad", "200", `"state"`, "colour"} {
		if !strings.Contains(errs[0], want) {
			t.Errorf("report %q does not mention %q", errs[0], want)
		}
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestValidatorBodyWhereNoneDeclared uses a fake transport, since net/http
// servers drop the body of a 204 themselves.
func TestValidatorBodyWhereNoneDeclared(t *testing.T) {
	rec := &recorder{TB: t}
	base := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		return &http.Response{
			StatusCode: http.StatusNoContent,
			Header:     http.Header{"Content-Type": {"application/json"}},
			Body:       io.NopCloser(strings.NewReader(`{"id": "x"}`)),
			Request:    r,
		}, nil
	})
	client := &http.Client{Transport: apitest.NewValidator(rec).Transport(base)}
	req, _ := http.NewRequest("DELETE", "http://cairn.test/v1/nodes/host1", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(got) != `{"id": "x"}` {
		t.Errorf("body %q did not reach the caller", got)
	}
	errs := rec.take()
	if len(errs) != 1 || !strings.Contains(errs[0], "declares no body") {
		t.Errorf("reports %q, want one about the body", errs)
	}
}
